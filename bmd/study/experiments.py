"""The paper's experiments as runnable specs: which model each table cell needs, trained once.

* Table 1 — five backbones on the whole chest;
* Table 2 — the five ROI models (one backbone on one ROI family) and the multi-ROI model;
  Table 2's ``chest`` *is* Table 1's VGG-16, so it is trained once; beyond the paper, the ``attention``
  row: the multi-ROI model with the follow-up's attention over the ROIs (arXiv:2201.01838), started
  from the trained multi-ROI model (:func:`model_recipe`);
* Table 3 — the ensembles "Ensm roi" (mean of the 5 ROI models) and "Ensm all" (+ the multi-ROI
  model), computed from saved predictions without retraining.

A :class:`ModelSpec` plus a profile gives a :class:`bmd.model.train.TrainConfig`; :func:`train_model`
launches the DDP entry point, or reuses a finished run whose config is identical (its key is stamped in the
run folder, :mod:`bmd.infra.artifacts`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from bmd.infra.artifacts import Artifact, inputs_key
from bmd.infra.digests import sha256_file
from bmd.model.dataset import FAMILY_LOCAL_INDEX, LOCAL_ROIS
from bmd.model.pretrained import resolve_weights
from bmd.model.train import ALL_ROIS, LOCK_FILE, TrainConfig, launch, run_lock
from bmd.study.config import Profile
from bmd.training.precision import DESCRIPTIONS as PRECISION_TEXT
from bmd.training.precision import resolve_precision

BACKBONES_TABLE1: tuple[str, ...] = ("vgg11", "resnet18", "resnet34", "resnet50", "vgg16")
ROI_FAMILIES_TABLE2: tuple[str, ...] = ("cervi", "clavi", "lumbar", "ribcage", "chest")
ENSEMBLES: dict[str, tuple[str, ...]] = {
    "ensm_roi": tuple(f"roi-{f}-vgg16" for f in ROI_FAMILIES_TABLE2),
    "ensm_all": (*(f"roi-{f}-vgg16" for f in ROI_FAMILIES_TABLE2), "multi_roi-vgg16"),
}


@dataclass(frozen=True)
class ModelSpec:
    """One trained model: a ROI model (family + backbone) or a multi-ROI model (backbone)."""

    model: str  # roi | multi_roi | attention
    backbone: str = "vgg16"
    family: str = "all"  # the ROI family of a roi model; "all" for the multi-ROI model

    @property
    def name(self) -> str:
        """A stable id, also the run folder's name (``roi-chest-vgg16``, ``multi_roi-vgg16``, ``attention-vgg16``)."""
        return f"roi-{self.family}-{self.backbone}" if self.model == "roi" else f"{self.model}-{self.backbone}"


def table_models() -> dict[str, dict[str, ModelSpec]]:
    """For each table, its row label → the model behind it (shared models appear once per row)."""
    table1 = {b: ModelSpec("roi", b, "chest") for b in BACKBONES_TABLE1}
    table2 = {f: ModelSpec("roi", "vgg16", f) for f in ROI_FAMILIES_TABLE2}
    table2["multi_roi"] = ModelSpec("multi_roi", "vgg16")
    table2["attention"] = ModelSpec("attention", "vgg16")  # beyond the paper (arXiv:2201.01838)
    return {"table1": table1, "table2": table2}


def all_models() -> list[ModelSpec]:
    """Every model the tables need, each once (Table 1's VGG-16 is Table 2's chest model)."""
    seen: dict[str, ModelSpec] = {}
    for rows in table_models().values():
        for spec in rows.values():
            seen.setdefault(spec.name, spec)
    return list(seen.values())


def backbone_recipe(backbone: str, cfg: Profile) -> dict:
    """What a backbone changes in the profile's recipe (the book states it beside Table 1).

    ResNets start every residual branch at zero (torchvision's ``zero_init_residual``): the narrow,
    deep ResNets of the CPU profiles otherwise barely learn in a few epochs (measured: ResNet-50 at
    1/8 width, test R 0.08); with pretrained weights the option is overwritten anyway. Every backbone
    trains the profile's epochs (the quick profile's, and what they cost and give: see its YAML).
    """
    return {"zero_init_residual": True} if backbone.startswith("resnet") else {}


#: The attention model's epochs: a quarter of the profile's (rounded up), but never fewer than
#: :data:`ATTENTION_MIN_EPOCHS` nor more than the profile's. It starts from the trained multi-ROI model, so
#: only the fusion has to be learnt, but its one-cycle schedule still warms up to the full learning rate,
#: which shakes the trained backbone before the fusion settles, however long the multi-ROI model trained.
#: Measured on the tuning seed (0, validation split only, quick profile at 14 epochs): the multi-ROI model
#: reaches R 0.837; the attention model started from it, 0.832 after 5 more epochs and 0.839 after 7. On
#: seed 4242 (quick profile at 20 epochs), 5 epochs ended before the shake was undone: validation R 0.807
#: against the multi-ROI model's 0.837, and a mean bias of -0.045 g/cm²; 7 (at 28) ended at R 0.836.
ATTENTION_EPOCH_FRACTION = 0.25
ATTENTION_MIN_EPOCHS = 7


def model_recipe(spec: ModelSpec, cfg: Profile, runs: str | Path) -> dict:
    """What a model kind changes in the recipe: the attention model starts from the trained multi-ROI model.

    Its backbone and per-ROI head start as the multi-ROI run's (``best.pt``, keyed by its SHA-256, so a
    retrained multi-ROI model retrains it); the fusion starts afresh and everything trains for
    :data:`ATTENTION_EPOCH_FRACTION` of the profile's epochs. The comparison with the multi-ROI model is
    then about the fusion alone. Empty for other kinds: every other model trains the profile's recipe.
    """
    if spec.model != "attention":
        return {}
    source = Path(runs) / ModelSpec("multi_roi", spec.backbone).name / "best.pt"
    return {"epochs": attention_epochs(cfg), "init_from": str(source),
            "init_sha256": sha256_file(source) if source.is_file() else None}


def attention_epochs(cfg: Profile) -> int:
    """The attention model's epochs under a profile (:data:`ATTENTION_EPOCH_FRACTION` of its epochs, rounded
    up, at least :data:`ATTENTION_MIN_EPOCHS`, at most the profile's epochs)."""
    return min(cfg.train_epochs, max(ATTENTION_MIN_EPOCHS, math.ceil(ATTENTION_EPOCH_FRACTION * cfg.train_epochs)))


def model_recipe_text(spec: ModelSpec, cfg: Profile) -> str:
    """One line naming a model kind's departures from the profile's recipe ('' when none)."""
    if spec.model != "attention":
        return ""
    return (f"backbone and per-region head started from the trained multi-ROI model, then {attention_epochs(cfg)} epochs "
            f"of the same recipe (the multi-ROI model's {cfg.train_epochs} from scratch)")


def recipe_text(backbone: str, cfg: Profile) -> str:
    """One line naming a backbone's departures from the profile's recipe ('' when none)."""
    return ", ".join("zero-initialised residual branches" if k == "zero_init_residual" else f"{k} {v}"
                     for k, v in backbone_recipe(backbone, cfg).items())


def recipe_summary(cfg: Profile) -> str:
    """The profile's training recipe in one line, as the book states it under each table."""

    geometry = TrainConfig.__dataclass_fields__["augment_geometry"].default
    augment = ("per-crop flips and whole-pixel shifts (no resampling, so training crops are exactly as sharp "
               "as test crops)" if geometry == "exact" else "per-crop flips, shifts, scaling and rotation")
    select = ("the last epoch kept" if cfg.train_select == "last"
              else "the epoch with the lowest validation MSE kept")
    return (f"{cfg.train_optimizer}, lr {cfg.train_lr:g}, {cfg.train_schedule} schedule, {cfg.train_epochs} epochs "
            f"({select}), "
            f"batch {cfg.train_batch_size}, width {cfg.train_width:g}"
            f"{', batch norm' if cfg.train_batch_norm else ''}, chest {cfg.chest_size}² and ROIs {cfg.roi_size}², "
            f"{PRECISION_TEXT[resolve_precision(cfg.train_precision)]}, "
            f"augmentation: {augment}")



def train_config(spec: ModelSpec, cfg: Profile, cache: str | Path, manifest: str | Path, runs: str | Path):
    """The training config of a spec under a profile's recipe, with its backbone's (:func:`backbone_recipe`)
    and its model kind's (:func:`model_recipe`) changes."""

    base = dict(
        run_dir=str(Path(runs) / spec.name), cache=str(cache), manifest=str(manifest), model=spec.model,
        family=spec.family if spec.model == "roi" else ALL_ROIS, backbone=spec.backbone,
        width=cfg.train_width, batch_norm=cfg.train_batch_norm, pretrained=cfg.train_pretrained,
        epochs=cfg.train_epochs,
        batch_size=cfg.train_batch_size, optimizer=cfg.train_optimizer, lr=cfg.train_lr,
        weight_decay=cfg.train_weight_decay, schedule=cfg.train_schedule, select=cfg.train_select,
        val_every=cfg.train_val_every, seed=cfg.seed, precision=cfg.train_precision,
    )
    return TrainConfig(**{**base, **backbone_recipe(spec.backbone, cfg), **model_recipe(spec, cfg, runs)})


#: Time of a training step relative to VGG-16's on the same input (one thread, bfloat16, batch 64, 128 px,
#: quick widths, a 2-core Xeon): only the order in which runs start depends on it.
RELATIVE_STEP_TIME = {"vgg11": 0.67, "vgg16": 1.0, "resnet18": 0.26, "resnet34": 0.34, "resnet50": 0.79}


def run_cost(config, cfg: Profile) -> float:
    """A training run's expected time in arbitrary units: epochs × input pixels × the backbone's step time."""
    if config.model != "roi":
        pixels = cfg.chest_size**2 + len(LOCAL_ROIS) * cfg.roi_size**2
    elif config.family == "chest":
        pixels = cfg.chest_size**2
    else:
        pixels = len(FAMILY_LOCAL_INDEX[config.family]) * cfg.roi_size**2
    return config.epochs * pixels * RELATIVE_STEP_TIME.get(config.backbone, 1.0)


def run_artifact(config) -> Artifact:
    """The training run of ``config`` as an artifact (:mod:`bmd.infra.artifacts`), locked by its run folder's lock."""
    run = Path(config.run_dir)
    return Artifact(run, f"training run {run.name}", lock=run / LOCK_FILE)


def run_key(config) -> str:
    """The key of a training run: its whole config (the ROI cache folder is itself named by its content key)."""
    return inputs_key(dataclasses.asdict(config))


def _has_results(run: Path) -> bool:
    return (run / "metrics.json").is_file() and (run / "predictions.csv").is_file()


def _same_config(config) -> bool:
    """Whether the run folder's ``config.json`` is ``config`` (a run of it, finished or killed; a config saved
    under the multi-ROI family's older name counts, see :meth:`TrainConfig.matches_saved`)."""
    return config.matches_saved(Path(config.run_dir) / "config.json")


def is_finished(config) -> bool:
    """True when the run folder holds the results of exactly this config (nothing to retrain).

    A run stamped by an earlier version (no stamp, the same ``config.json`` and its results) counts too.
    """
    run = Path(config.run_dir)
    artifact = run_artifact(config)
    if artifact.is_current(run_key(config)):
        return _has_results(run)
    return artifact.read_stamp() is None and _same_config(config) and _has_results(run)


def train_model(config, nproc: int = 1, wait: bool = True, timeout: float | None = None,
                threads: int | None = None) -> Path:
    """Train through the DDP entry point unless an identical finished run exists; returns the run folder.

    A killed run of the same config resumes from its checkpoint. A live process training in the folder
    is waited for (up to ``timeout`` seconds; its run is then reused when it is this config's); with
    ``wait=False``, or after the timeout, :class:`bmd.model.train.RunFolderBusy` is raised. Raises
    :class:`bmd.model.pretrained.PretrainedWeightsError` (one line, before anything starts) when the
    config's pretrained weights file is missing. ``threads``: CPU threads of each training process
    (default: the cores shared among them).
    """

    run = Path(config.run_dir)
    if config.pretrained is not None and not is_finished(config):
        resolve_weights(config.pretrained, config.backbone, config.batch_norm)

    def make() -> None:
        # a checkpoint is resumed only when it belongs to this very config (a killed run); else start afresh
        same = _same_config(config)
        if not same:
            for name in ("checkpoint.pt", "best.pt", "metrics.json", "predictions.csv", "log.csv"):
                (run / name).unlink(missing_ok=True)
        launch(config, nproc=nproc, resume=same and (run / "checkpoint.pt").is_file(), threads=threads)

    # the folder's lock before anything is deleted: a run training there is waited for (or refuses us)
    run_artifact(config).build(
        run_key(config), make, inputs=dataclasses.asdict(config), valid=lambda: _has_results(run),
        legacy=lambda: _same_config(config), lock=lambda: run_lock(run, wait=wait, timeout=timeout))
    return run
