"""The run folder both training loops share: atomic checkpoints, resume by signature, history, metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bmd.training.folder import CheckpointError, RunFolder, load_checkpoint, save_checkpoint, signature


def test_a_checkpoint_resumes_only_under_its_own_signature(tmp_path):
    folder = RunFolder(tmp_path / "run", checkpoint=".state.pt")
    assert folder.resume("abc") is None  # nothing saved yet
    folder.prepare()
    folder.save_checkpoint({"signature": "abc", "epoch": 3, "w": torch.arange(4.0)})
    state = folder.resume("abc")
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    assert folder.resume("other") is None
    assert folder.resume()["epoch"] == 3  # no signature asked: any checkpoint
    folder.discard_checkpoint()
    assert folder.resume("abc") is None and not (tmp_path / "run" / ".state.pt").exists()


def test_signature_is_stable_and_order_free():
    assert signature(a=1, b=[1, 2]) == signature(b=[1, 2], a=1)
    assert signature(a=1) != signature(a=2) and len(signature(a=1)) == 16


def test_an_unreadable_checkpoint_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        RunFolder(tmp_path).resume()


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "checkpoint.pt")

    def broken(obj, f, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary left


def test_prepare_removes_a_killed_writers_temporaries_and_the_marker_says_finished(tmp_path):
    folder = RunFolder(tmp_path)
    (tmp_path / ".checkpoint.pt.x1.tmp").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("mine")
    folder.prepare()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    folder.write_config({"lr": 0.1})
    folder.write_history([{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 1.25}])
    assert not folder.finished()
    folder.write_metrics({"best_epoch": 1, "val_r": np.float32(0.5)})
    assert folder.finished()
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 0.1}
    assert pd.read_csv(tmp_path / "log.csv")["loss"].tolist() == [1.5, 1.25]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"best_epoch": 1, "val_r": 0.5}
