"""Profiles: one YAML parameter file per size of the study, read into a typed object.

Configuration flows one way: ``bmd/profiles/<name>.yaml`` → papermill parameters → :class:`Profile`
→ the code. The same YAML file is what papermill passes to every notebook (``-f``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bmd.infra import paths

PROFILES: tuple[str, ...] = ("smoke", "quick", "paper")


class ProfileError(ValueError):
    """A profile file that cannot be used."""


@dataclass(frozen=True)
class Profile:
    """The parameters of one profile; field names are the papermill parameter names."""

    profile: str
    seed: int = 0
    # twin cohort sizes: cases per split (the paper's 1087/265/329 for quick and paper)
    twin_n_train: int = 1087
    twin_n_val: int = 265
    twin_n_test: int = 329
    twin_image_size: int = 512
    # model inputs: the whole-chest input side and the local ROI side, in pixels
    chest_size: int = 128
    roi_size: int = 64
    # landmarks: None trains the detector on the training split; a detector folder is used as it is
    landmark_model: str | None = None
    # training recipe (the paper profile follows the paper; the CPU profiles use a faster recipe)
    train_width: float = 1.0  # backbone width multiplier
    train_batch_norm: bool = False  # batch-norm backbone variants
    train_pretrained: str | None = None  # None (random) | "imagenet" (torchvision's, local) | a weights file
    train_optimizer: str = "sgd"  # sgd | adamw
    train_lr: float = 1e-4
    train_weight_decay: float = 4e-4
    train_epochs: int = 100
    train_batch_size: int = 64
    train_schedule: str = "none"  # none | onecycle
    train_select: str = "val_mse"  # which epoch is the model: val_mse (the paper's) | last
    train_val_every: int = 1  # validate every this many epochs and at the last (val_mse: 1)
    train_nproc: int = 1  # DDP processes per training run
    train_parallel: int = 1  # training runs at once, each on its share of the cores
    train_precision: str = "auto"  # auto | fp32 | bf16 (autocast; auto: where the hardware has it natively)

    @property
    def twin_n_cases(self) -> int:
        """Total number of cases in the twin cohort."""
        return self.twin_n_train + self.twin_n_val + self.twin_n_test

    def as_dict(self) -> dict[str, Any]:
        """The profile as papermill parameters."""
        return dataclasses.asdict(self)


def load_profile(name_or_path: str | Path, **overrides: Any) -> Profile:
    """Read a profile by name (``smoke``, ``quick``, ``paper``) or YAML path; ``overrides`` win.

    Unknown keys are refused so that a typo in a parameter file is an error, not a silent default, and
    every value is checked against the field's type (:func:`check_types`). An override of None is
    ignored (None means "the profile's value").
    """
    path = _profile_path(name_or_path)
    raw = _read_yaml(path)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return _build(raw, str(path))


def _profile_path(name_or_path: str | Path) -> Path:
    """A packaged profile's file for a bare name, else the path itself (a YAML file)."""
    path = Path(name_or_path)
    if path.suffix:
        return path
    if str(name_or_path) not in PROFILES:
        raise ProfileError(f"unknown profile {str(name_or_path)!r}: expected one of {', '.join(PROFILES)} "
                           "or the path of a profile YAML")
    return paths.profile_file(str(name_or_path))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile must be a mapping of parameter names to values")
    return raw


def _build(raw: dict[str, Any], where: str) -> Profile:
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ProfileError(f"{where}: unknown parameter(s): {', '.join(unknown)}")
    if "profile" not in raw:
        raise ProfileError(f"{where}: missing 'profile' name")
    try:
        return Profile(**check_types(raw))
    except ProfileError as exc:
        raise ProfileError(f"{where}: {exc}") from None


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` as field ``key`` of type ``hint`` holds it (an int becomes a float), or ProfileError."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    wanted = " or ".join("null" if o is type(None) else _TYPE_WORDS.get(o, getattr(o, "__name__", str(o)))
                         for o in options)
    message = f"{key}: expected {wanted}, got {value!r}"
    if isinstance(value, str) and (int in options or float in options):
        try:
            float(value)
        except ValueError:
            pass
        else:  # YAML 1.1 reads 1e-4 (no dot in the mantissa) as text
            mantissa, _, exponent = value.strip().lower().partition("e")
            number = f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else repr(float(value))
            message += f" (YAML reads this as text: write {number}, unquoted)"
    raise ProfileError(message)


def check_types(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``values`` (profile field → value) against :class:`Profile`'s annotations.

    Returns the values with integers given for float fields turned into floats. A wrong type is refused
    with one line naming the key, e.g. ``train_lr: expected a number, got '1e-4'``: a value is never
    converted from text, since a string where a number belongs is a typo more often than not (YAML reads
    ``1e-4`` as text; ``1.0e-4`` is a number).
    """
    hints = typing.get_type_hints(Profile)
    return {key: _check_value(key, value, hints[key]) if key in hints else value for key, value in values.items()}


def from_parameters(namespace: Mapping[str, Any]) -> Profile:
    """The profile a chapter runs with, built from its papermill parameters (pass ``globals()``).

    ``profile`` (a packaged name or a YAML path) gives the starting values; every :class:`Profile`
    field that papermill injected (``-f profile.yaml`` injects them all, ``-p train_lr 0.01`` one)
    replaces the starting value, so an edited copy of a profile runs as edited. ``seed`` None keeps the
    profile's seed. A ``profile`` name that is not packaged (an edited copy's own name) needs the fields
    injected with it, which is what ``bmd book --profile mine.yaml`` and ``papermill -f mine.yaml`` do.
    """
    fields = [f.name for f in dataclasses.fields(Profile)]
    injected = {k: namespace[k] for k in fields if k in namespace and k not in ("profile", "seed")}
    name = namespace.get("profile")
    if name is None:
        raise ProfileError("no 'profile' parameter: give a profile name or the path of a profile YAML")
    if namespace.get("seed") is not None:
        injected["seed"] = namespace["seed"]
    if Path(str(name)).suffix or str(name) in PROFILES or not injected:
        path = _profile_path(name)
        raw = _read_yaml(path)
        raw.update(injected)
        return _build(raw, str(path))
    return _build({"profile": name, **injected}, "parameters")


#: Profile fields that name a folder of the site's: a page shows only its last part (where a site keeps
#: its files is no business of a published book; summary.json names it by content digest instead).
FOLDER_FIELDS: tuple[str, ...] = ("landmark_model",)


def resolved_table(cfg: Profile):
    """The profile a chapter ran with as a one-column table (parameter → value) for the page
    (a :data:`FOLDER_FIELDS` value by its last part only)."""
    import pandas as pd

    values = cfg.as_dict()
    shown = [f".../{Path(v).name}" if k in FOLDER_FIELDS and v else _yaml_text(v) for k, v in values.items()]
    return pd.DataFrame({"value": shown}, index=pd.Index(list(values), name="parameter"))


#: What each :class:`Profile` field does (the parameters appendix of the book is generated from this).
PARAMETER_DESCRIPTIONS: dict[str, str] = {
    "profile": "Name of the profile; also names the run folder `runs/<profile>/` and is recorded in summary.json.",
    "seed": "The study seed: the twin cohort, the patient-level split of a manifest without one, the landmark "
            "detector, every training run, the augmentation draws and the bootstrap intervals derive from it.",
    "twin_n_train": "Cases in the twin cohort's training split (the paper: 1087). For a site manifest without a "
                    "`split` column, the three sizes only set the split proportions.",
    "twin_n_val": "Cases in the twin cohort's validation split, used to choose each model's best epoch "
                  "(the paper: 265).",
    "twin_n_test": "Cases in the twin cohort's test split, on which every table is computed (the paper: 329).",
    "twin_image_size": "Side in pixels of the twin's square radiographs; the landmark detector's input is half "
                       "of it, at most 256.",
    "chest_size": "Side in pixels of the whole-chest input (the 7th, global ROI) of every model.",
    "roi_size": "Side in pixels of each of the six local ROI crops (clavicles, cervical spine, rib cages, T12).",
    "landmark_model": ("A landmark detector folder to use instead of training one (`bmd book --landmark-model DIR`; "
                       "with papermill an absolute path): the twin-trained `runs/<profile>/landmark_model` a previous "
                       "build left, or one trained elsewhere with `bmd landmarks train`. Every case's regions, training "
                       "cases included, then come from its points. Needed when the manifest has no `landmarks` column; "
                       "with ground truth as well, the given detector is still used and its error is measured against "
                       "the ground truth. Named in keys and in summary.json by the SHA-256 of its files, never by path."),
    "train_width": "Width multiplier of the backbones' channels (1.0: the published VGG/ResNet widths).",
    "train_batch_norm": "Use the batch-norm variants of the backbones (VGG-BN); the paper's VGG has none.",
    "train_pretrained": ("Backbone initialisation: none (random), `imagenet` (torchvision's ImageNet weights for "
                         "each backbone, read from the local torch hub cache `<torch hub dir>/checkpoints/`, never "
                         "downloaded: a missing file stops training with the exact path to put it at) or the path "
                         "of a weights file. Set it to null in a copy of the profile to train from random weights."),
    "train_optimizer": "`sgd` (the paper's, momentum 0.9, which the paper does not state) or `adamw`.",
    "train_lr": "Learning rate (peak rate of the one-cycle schedule when that is used).",
    "train_weight_decay": "Weight decay of the optimiser.",
    "train_epochs": "Training epochs of every model (the attention model: a quarter of them, from the trained multi-ROI model).",
    "train_batch_size": "Global batch size, split evenly over the DDP processes.",
    "train_schedule": "Learning-rate schedule: `none` (constant, the paper's) or `onecycle`.",
    "train_select": ("Which epoch is the model: `val_mse`, the epoch with the lowest validation MSE (the paper's "
                     "protocol, for a constant learning rate), or `last`, the schedule's final epoch (a one-cycle "
                     "schedule's annealed weights; an earlier epoch of it can carry an offset of 0.02 g/cm²)."),
    "train_val_every": ("Validate every this many epochs and at the last. With `last` the scores only log the run, "
                        "so the CPU profiles validate every 5th epoch; `val_mse` selects among validated epochs, "
                        "so the paper profile validates every epoch."),
    "train_precision": ("Arithmetic of training and prediction: `fp32`, `bf16` (bfloat16 autocast: convolutions in "
                        "bfloat16, weights and losses in float32) or `auto`, bfloat16 on a CUDA GPU or on a CPU that "
                        "multiplies bfloat16 natively (AMX), float32 elsewhere (emulated bfloat16 is slower). The "
                        "landmark detector's training follows it in its convolutional backbone only (its points stay "
                        "float32). Each run's `config.json` records the resolved choice."),
    "train_parallel": ("Training runs at once, each on a fixed share of the CPU cores (cores / runs), the longest "
                       "first; a run that another starts from (the multi-ROI model, for the attention model) trains "
                       "alone with every core. The CPU profiles' narrow networks keep two cores only partly busy, so "
                       "two runs side by side with a core each finish sooner than one after the other (measured on "
                       "a 2-core Xeon: 1.2x the training throughput). A run's thread count is fixed by this plan, "
                       "never by timing, so a rebuild gives the same numbers. Keep 1 on a GPU."),
    "train_nproc": ("DDP processes per training run (`torchrun --nproc_per_node`); each sees the same global batches "
                    "and crops, so without batch norm, in float32, the result does not depend on it."),
}

#: The parameters cell every chapter notebook starts with (papermill parameters), and what each does.
NOTEBOOK_PARAMETERS: dict[str, str] = {
    "profile": "`smoke`, `quick` or `paper`, or the path of a profile YAML; every profile field is read from "
               "it, and any profile field given as a parameter of its own (`-f profile.yaml` gives them all) wins.",
    "seed": "Overrides the profile's seed; None keeps it.",
    "manifest": "A site's manifest CSV; None runs on the twin cohort of the profile and seed.",
    "out": "Folder for data, run folders and the built book; None is the repository root.",
    "show_images": "Show radiographs and case ids in the pages; None shows them for the twin cohort only.",
}

#: What ``bmd book`` passes to every notebook for each notebook parameter.
BOOK_PASSES: dict[str, str] = {
    "profile": "the profile's `profile` field (`--profile` is a name or a YAML path), and every field of the "
               "profile as a parameter of its own (`landmark_model`: the absolute path of `--landmark-model` when "
               "given)",
    "seed": "the resolved seed (`--seed`, else the profile's)",
    "manifest": "the absolute path of `--manifest`, or None",
    "out": "the absolute path of `--out` (default: the repository root)",
    "show_images": "not passed: the notebook's default None",
}


def parameter_table() -> list[dict[str, Any]]:
    """Every profile field with its value in each bundled profile YAML and what it does.

    One row per :class:`Profile` field, in declaration order: ``parameter``, one column per name in
    :data:`PROFILES` (the value that profile's YAML gives, or the field's default when the YAML leaves
    it out), ``default`` (the dataclass default; None for a required field) and ``description``.
    """
    profiles = {name: load_profile(name) for name in PROFILES}
    rows = []
    for field in dataclasses.fields(Profile):
        default = None if field.default is dataclasses.MISSING else field.default
        row: dict[str, Any] = {"parameter": field.name}
        row.update({name: getattr(p, field.name) for name, p in profiles.items()})
        row["default"] = default
        row["description"] = PARAMETER_DESCRIPTIONS.get(field.name, "")
        rows.append(row)
    return rows


def notebook_parameter_table() -> list[dict[str, str]]:
    """The notebooks' papermill parameters: name, what it does and what ``bmd book`` passes."""
    return [{"parameter": name, "description": text, "bmd book passes": BOOK_PASSES[name]}
            for name, text in NOTEBOOK_PARAMETERS.items()]


def _yaml_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return "—" if value is None else str(value)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def parameter_markdown() -> dict[str, str]:
    """The parameters appendix's two tables as Markdown (GFM): ``notebook`` and ``profiles``.

    Profile values are written as the YAML files spell them (``true``, ``0.0001``); "—" marks a field
    without a default.
    """
    notebook = _markdown_table(["parameter", "what it does", "`bmd book` passes"],
                               [[f"`{r['parameter']}`", r["description"], r["bmd book passes"]]
                                for r in notebook_parameter_table()])
    profiles = _markdown_table(["parameter", *PROFILES, "default", "what it does"],
                               [[f"`{r['parameter']}`", *(_yaml_text(r[p]) for p in PROFILES),
                                 _yaml_text(r["default"]), r["description"]] for r in parameter_table()])
    return {"notebook": notebook, "profiles": profiles}
