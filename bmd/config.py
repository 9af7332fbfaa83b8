"""Profiles: one YAML parameter file per size of the study, read into a typed object.

Configuration flows one way: ``bmd/profiles/<name>.yaml`` → papermill parameters → :class:`Profile`
→ the code. The same YAML file is what papermill passes to every notebook (``-f``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bmd import paths

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
    # training recipe (the paper profile follows the paper; the CPU profiles use a faster recipe)
    train_width: float = 1.0  # backbone width multiplier
    train_batch_norm: bool = False  # batch-norm backbone variants
    train_optimizer: str = "sgd"  # sgd | adamw
    train_lr: float = 1e-4
    train_weight_decay: float = 4e-4
    train_epochs: int = 100
    train_batch_size: int = 64
    train_schedule: str = "none"  # none | onecycle
    train_nproc: int = 1  # DDP processes per training run

    @property
    def twin_n_cases(self) -> int:
        """Total number of cases in the twin cohort."""
        return self.twin_n_train + self.twin_n_val + self.twin_n_test

    def as_dict(self) -> dict[str, Any]:
        """The profile as papermill parameters."""
        return dataclasses.asdict(self)


def load_profile(name_or_path: str | Path, **overrides: Any) -> Profile:
    """Read a profile by name (``smoke``, ``quick``, ``paper``) or YAML path; ``overrides`` win.

    Unknown keys are refused so that a typo in a parameter file is an error, not a silent default.
    """
    path = Path(name_or_path)
    if not path.suffix:
        if str(name_or_path) not in PROFILES:
            raise ProfileError(f"unknown profile {name_or_path!r}: expected one of {', '.join(PROFILES)}")
        path = paths.profile_file(str(name_or_path))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile must be a mapping of parameter names to values")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ProfileError(f"{path}: unknown parameter(s): {', '.join(unknown)}")
    if "profile" not in raw:
        raise ProfileError(f"{path}: missing 'profile' name")
    return Profile(**raw)
