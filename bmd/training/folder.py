"""A training run's folder: config, checkpoint and resume, history, metrics and the finished marker.

Both training loops write their folder through :class:`RunFolder`: the BMD models' entry point
(:mod:`bmd.model.train`: ``config.json``, ``checkpoint.pt``, ``log.csv``, ``metrics.json``) and the landmark
detector (:mod:`bmd.landmarks.fit`: ``.train_state.pt``, finished when the detector's ``config.json`` is
written). Every file is replaced atomically (:mod:`bmd.infra.atomic`), so a killed run never leaves a
half-written checkpoint that a resumed one would load, and the finished marker is written last.

Locking a folder against a second run is the caller's business (:func:`bmd.model.train.run_lock`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bmd.infra.atomic import atomic_path, write_bytes
from bmd.infra.digests import sha256_json


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read; the message is one line naming the file."""


def signature(**fields: Any) -> str:
    """A short digest of what a run was started with: a checkpoint resumes only under the same one."""
    return sha256_json(fields)[:16]


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically, on disk before the rename (a power cut cannot leave an empty checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint written by :func:`save_checkpoint`; an unreadable one raises :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)  # our own file
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc.__class__.__name__}); delete it to start "
                              f"afresh") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(state).__name__}); delete it to start afresh")
    return state


@dataclass(frozen=True)
class RunFolder:
    """The files of one training run.

    ``checkpoint``: the resumable state's file name; ``marker``: the file whose presence says the run
    finished (written last).
    """

    path: Path
    checkpoint: str = "checkpoint.pt"
    marker: str = "metrics.json"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def checkpoint_path(self) -> Path:
        """Where the resumable state lives."""
        return self.path / self.checkpoint

    def prepare(self) -> Path:
        """Create the folder and remove the temporary files a killed writer left (hold the folder first)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        return self.path

    def write_config(self, config: dict, name: str = "config.json") -> Path:
        """The run's config as JSON, atomically."""
        return write_bytes(self.path / name, json.dumps(config, indent=1).encode())

    def save_checkpoint(self, state: dict) -> Path:
        """Replace the resumable state (atomically)."""
        return save_checkpoint(state, self.checkpoint_path)

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict:
        """The resumable state (:class:`CheckpointError` when unreadable)."""
        return load_checkpoint(self.checkpoint_path, map_location)

    def resume(self, run_signature: str | None = None,
               map_location: str | torch.device = "cpu") -> dict | None:
        """The state to continue from: None when there is none, or when it was saved under another
        ``run_signature`` (a checkpoint carries its signature under ``"signature"``)."""
        if not self.checkpoint_path.is_file():
            return None
        state = self.load_checkpoint(map_location)
        if run_signature is not None and state.get("signature") != run_signature:
            return None
        return state

    def discard_checkpoint(self) -> None:
        """Remove the resumable state (the run's result is complete without it)."""
        self.checkpoint_path.unlink(missing_ok=True)

    def write_history(self, rows: Sequence[dict], name: str = "log.csv") -> Path:
        """One CSV line per finished epoch, atomically."""
        return write_bytes(self.path / name, pd.DataFrame(list(rows)).to_csv(index=False).encode())

    def write_metrics(self, metrics: dict, name: str = "metrics.json") -> Path:
        """The run's metrics as JSON, atomically (numpy numbers written as floats)."""
        return write_bytes(self.path / name, json.dumps(metrics, indent=1, default=float).encode())

    def finished(self) -> bool:
        """Whether the run's finished marker is there."""
        return (self.path / self.marker).is_file()
