"""Interrupted work: SIGKILL mid-epoch and resume, killed cache builds and cohort generations, busy folders.

Every kill is a real SIGKILL of a real subprocess; what is left behind must never be taken as complete,
and the next run must finish with exactly what an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bmd.model.train import (
    LOCK_FILE,
    RunFolderBusy,
    TrainConfig,
    _restore_best,
    _show_progress,
    launch,
    run_lock,
)

# ------------------------------------------------------------------------------------------ helpers


def _alive(pid: int) -> bool:
    """True while any thread of ``pid`` runs (a zombie, dead but not yet reaped, counts as gone).

    A killed process's main thread can be a zombie while its other threads still exit, holding its
    open files (and locks): so every thread is looked at.
    """
    if not Path("/proc/self/task").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (OSError, IndexError):
            continue
    return False


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [c for c, p in parents.items() if p in frontier]
        found += children
        frontier = children
    return found


def _wait_gone(pids: list[int], seconds: float = 20) -> list[int]:
    """The pids still running after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _until(condition, proc: subprocess.Popen, what: str, seconds: float = 300, step: float = 0.02):
    """Poll ``condition()`` until it returns something truthy (returned); fails if ``proc`` ends first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the subprocess ended (status {proc.returncode}) before {what}")
        time.sleep(step)
    pytest.fail(f"timed out waiting for {what}")


def _popen(args: list[str], stderr=subprocess.PIPE, **env) -> subprocess.Popen:
    """A subprocess in its own process group (so the whole group can be killed)."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
                            env={**os.environ, **env})


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (whatever of it is left) and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """144 cases (128 train: 16 batches an epoch) whose crops' brightness carries their BMD."""
    root = tmp_path_factory.mktemp("interrupt_cache")
    rng = np.random.default_rng(1)
    n_train, n_val, n_test = 128, 8, 8
    n = n_train + n_val + n_test
    bmd = rng.normal(0.85, 0.15, (n, 4))
    level = np.clip((bmd.mean(axis=1) - 0.4) / 0.9, 0, 1)
    crops = np.clip(level[:, None, None, None] + rng.normal(0, 0.05, (n, 7, 32, 32)), 0, 1)
    np.save(root / "chest.npy", (crops[:, 0] * 255).astype(np.uint8))
    np.save(root / "local.npy", (crops[:, 1:] * 255).astype(np.uint8))
    ids = [f"C{i:03d}" for i in range(n)]
    (root / "case_ids.txt").write_text("\n".join(ids))
    pd.DataFrame({"case_id": ids, "patient_id": [f"P{i:03d}" for i in range(n)], "image": "x.dcm",
                  **{f"bmd_l{k + 1}": bmd[:, k] for k in range(4)}, "sex": "F", "age": 70, "reference": "hologic",
                  "split": ["train"] * n_train + ["val"] * n_val + ["test"] * n_test}
                 ).to_csv(root / "manifest.csv", index=False)
    return root


def _cfg(cache, run_dir, **kw) -> TrainConfig:
    # the smoke recipe (batch norm, AdamW, one-cycle): optimiser and schedule state must survive a kill
    base = dict(run_dir=str(run_dir), cache=str(cache), manifest=str(cache / "manifest.csv"), model="multi_roi",
                backbone="vgg11", width=0.125, batch_norm=True, epochs=4, batch_size=8, optimizer="adamw",
                lr=0.003, weight_decay=1e-4, schedule="onecycle", augment=True, threads=1, seed=5)
    base.update(kw)
    return TrainConfig(**base)


_BAR = re.compile(r"epoch (\d+)/\d+:[^\r\n]*?\|\s*(\d+)/(\d+) \[")


def _last_bar(path: Path) -> tuple[int, int, int] | None:
    """(epoch 1-based, batches done, batches) of the last progress bar update on stderr."""
    hits = _BAR.findall(path.read_text(errors="replace"))
    return tuple(int(x) for x in hits[-1]) if hits else None


def _epochs_done(run: Path) -> int:
    try:
        return len(pd.read_csv(run / "log.csv"))
    except (OSError, ValueError):
        return 0


def _lock_pid(run: Path) -> int | None:
    try:
        text = (run / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@pytest.mark.slow
def test_ddp_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(cache, tmp_path):
    from bmd.study.experiments import train_model

    cfg = _cfg(cache, tmp_path / "killed")
    run = Path(cfg.run_dir)
    run.mkdir()
    cfg.save(run / "config.json")
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        proc = _popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                       "-m", "bmd.model.train", "--config", str(run / "config.json")], stderr=err, BMD_PROGRESS="1")
    try:
        # a second run on the busy folder is refused at once, naming rank 0's pid, and harms nothing
        holder = _until(lambda: _lock_pid(run), proc, "rank 0 took the run folder")
        assert holder != proc.pid and _alive(holder)
        with pytest.raises(RunFolderBusy, match=f"run folder .* is in use by pid {holder}$"):
            launch(cfg)
        with pytest.raises(RunFolderBusy, match=f"in use by pid {holder}"):
            train_model(cfg, wait=False)
        with pytest.raises(RunFolderBusy, match=f"in use by pid {holder} \\(gave up after waiting"):
            train_model(cfg, timeout=0.5)  # the study's owners wait for a live run, up to a timeout

        def mid_epoch():  # one epoch checkpointed, and some (not all) batches of a later one done
            done, bar = _epochs_done(run), _last_bar(stderr)
            if done >= 1 and bar and bar[0] == done + 1 and 0 < bar[1] < bar[2]:
                return bar
            return None

        bar = _until(mid_epoch, proc, "an epoch was half done")
        _kill_group(proc)
    finally:
        _kill_group(proc)  # and anything of its group left behind
    # torchrun puts its workers in a session of their own: they must die with their launcher anyway
    assert _wait_gone([holder]) == [], "the training worker outlived its killed launcher"
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == bar[0] - 2, "the kill did not land inside an epoch"
    assert not (run / "metrics.json").exists() and not (run / "predictions.csv").exists()

    train_model(cfg)  # same config: resumes from the checkpoint; the dead holder's lock is taken over
    straight = launch(_cfg(cache, tmp_path / "straight"))

    for name in ("checkpoint.pt", "best.pt"):
        a = torch.load(straight / name, weights_only=False)["model"]
        b = torch.load(run / name, weights_only=False)["model"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=0), (name, key)
    assert (straight / "predictions.csv").read_bytes() == (run / "predictions.csv").read_bytes()
    log_a, log_b = pd.read_csv(straight / "log.csv"), pd.read_csv(run / "log.csv")
    np.testing.assert_allclose(log_a[["train_loss", "val_r", "lr"]], log_b[["train_loss", "val_r", "lr"]],
                               rtol=0, atol=1e-6)
    assert not list(run.glob(".*.tmp")), "temporary files of the killed run were left behind"
    assert _lock_pid(run) is None  # released


@pytest.mark.slow
def test_ddp_cli_refuses_a_busy_run_folder_in_one_line(cache, tmp_path):
    cfg = _cfg(cache, tmp_path / "busy", epochs=1)
    run = Path(cfg.run_dir)
    run.mkdir()
    cfg.save(run / "config.json")
    with run_lock(run):  # held by this process, as a training run would hold it
        with run_lock(run):  # re-entrant within a process
            pass
        proc = subprocess.run([sys.executable, "-m", "bmd.model.train", "--config", str(run / "config.json")],
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"bmd train: run folder {run} is in use by pid {os.getpid()}"
    assert not (run / "checkpoint.pt").exists() and not (run / "log.csv").exists()


def test_progress_bar_only_on_a_terminal_unless_asked(monkeypatch):
    class Stream:
        def __init__(self, tty: bool):
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.delenv("BMD_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert _show_progress()
    monkeypatch.setattr(sys, "stderr", Stream(False))  # batch jobs, notebooks' subprocesses, CI
    assert not _show_progress()
    monkeypatch.setenv("BMD_PROGRESS", "1")
    assert _show_progress()
    monkeypatch.setenv("BMD_PROGRESS", "0")
    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert not _show_progress()


def test_a_kill_between_checkpoint_and_best_is_repaired_on_resume(tmp_path):
    old, new = {"w": torch.zeros(3)}, {"w": torch.ones(3)}
    torch.save({"model": old, "epoch": 1}, tmp_path / "best.pt")
    # killed after the checkpoint of epoch 2 (the new best) and before best.pt was rewritten
    _restore_best(tmp_path, {"model": new, "epoch": 2, "best_epoch": 2})
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 2 and torch.equal(best["model"]["w"], new["w"])
    # a checkpoint whose best is an earlier epoch leaves best.pt alone
    _restore_best(tmp_path, {"model": old, "epoch": 3, "best_epoch": 2})
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 2
    (tmp_path / "best.pt").unlink()  # killed before the first best.pt
    _restore_best(tmp_path, {"model": old, "epoch": 0, "best_epoch": 0})
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 0


# ------------------------------------------------------------------------- ROI cache and twin cohort


def _profile(**sizes):
    from bmd.study.config import load_profile

    # the smoke profile, smaller: a kill needs only a few cases to land in the middle
    return load_profile("smoke", **{"twin_n_train": 8, "twin_n_val": 4, "twin_n_test": 4, "twin_image_size": 128,
                                    **sizes})


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """A small smoke-profile twin cohort, generated without interruption."""
    from bmd.inputs.twin.cohort import generate_twin

    return generate_twin(tmp_path_factory.mktemp("twin_ref"), _profile(), workers=1, progress=False)


_BUILD = """
import sys, time
from pathlib import Path
from bmd.inputs.manifest import load_manifest
from bmd.rois.cache import build_roi_cache, landmark_array

twin, cache_dir, marker, pause = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
manifest = load_manifest(twin / "manifest.csv")
points = landmark_array(manifest, None)
row = {c: i for i, c in enumerate(manifest["case_id"].astype(str))}

def detector(images, ids):  # ground truth, slowly: a build long enough to be interrupted
    with open(marker, "a") as fh:
        fh.write("chunk\\n")
    time.sleep(pause)
    return points[[row[c] for c in ids]]

cache = build_roi_cache(manifest, detector, cache_dir, 32, 64, source="slow-gt", workers=1, chunk_size=2)
print("built" if cache.built else "reused", cache.path, flush=True)
"""


def _build_args(tmp_path: Path, twin: Path, cache_dir: Path, marker: Path, pause: float) -> list[str]:
    script = tmp_path / "build_cache.py"
    script.write_text(_BUILD)
    return [sys.executable, str(script), str(twin), str(cache_dir), str(marker), str(pause)]


def _chunks(marker: Path) -> int:
    try:
        return len(marker.read_text().split())
    except OSError:
        return 0


def _manifest(twin: Path) -> pd.DataFrame:
    from bmd.inputs.manifest import load_manifest

    return load_manifest(twin / "manifest.csv")


@pytest.mark.slow
def test_killed_roi_cache_build_is_never_used_and_the_next_build_is_correct(twin, tmp_path):
    from bmd.rois.cache import build_roi_cache, landmark_array, load_cache

    root, marker = tmp_path / "cache", tmp_path / "chunks.txt"
    proc = _popen(_build_args(tmp_path, twin, root, marker, 0.5))
    try:
        _until(lambda: _chunks(marker) >= 3, proc, "the build was under way")
        _kill_group(proc)
    finally:
        _kill_group(proc)  # and anything of its group left behind
    leftovers = list(root.glob(".tmp-rois-*"))
    assert leftovers, "the kill did not land inside the build"
    assert not list(root.glob("rois-*")), "a killed build left a cache folder"
    assert all(load_cache(p) is None for p in leftovers)

    manifest = _manifest(twin)
    points = landmark_array(manifest, None)
    row = {c: i for i, c in enumerate(manifest["case_id"].astype(str))}
    rebuilt = build_roi_cache(manifest, lambda images, ids: points[[row[c] for c in ids]], root, 32, 64,
                              source="slow-gt", workers=1, chunk_size=2)
    assert rebuilt.built and not any(p.exists() for p in leftovers), "the stale temporary folder is still there"
    assert load_cache(rebuilt.path, key=rebuilt.key) is not None  # checksums verified
    reference = build_roi_cache(manifest, points, tmp_path / "reference", 32, 64, workers=1)
    np.testing.assert_array_equal(rebuilt.chest, reference.chest)
    np.testing.assert_array_equal(rebuilt.local, reference.local)


@pytest.mark.slow
def test_two_concurrent_roi_cache_builds_build_once(twin, tmp_path):
    from bmd.rois.cache import load_cache

    root = tmp_path / "cache"
    first = _popen(_build_args(tmp_path, twin, root, tmp_path / "a.txt", 0.3))
    second = None
    try:
        _until(lambda: _chunks(tmp_path / "a.txt") >= 1, first, "the first build started")
        second = _popen(_build_args(tmp_path, twin, root, tmp_path / "b.txt", 0.3))
        out_a, err_a = first.communicate(timeout=300)
        out_b, err_b = second.communicate(timeout=300)
    finally:
        for proc in (first, second):
            if proc is not None:
                _kill_group(proc)
    assert first.returncode == 0, err_a
    assert second.returncode == 0, err_b
    assert sorted(line.split()[0] for line in (out_a, out_b)) == ["built", "reused"]
    assert out_a.split()[1] == out_b.split()[1] and load_cache(out_a.split()[1]) is not None
    assert _chunks(tmp_path / "b.txt") == 0, "the second caller computed crops too"


_GENERATE = """
import sys
from bmd.study.config import load_profile
from bmd.inputs.twin.cohort import generate_twin

if __name__ == "__main__":  # the render workers' fork server imports this file
    sizes = {"twin_n_train": 8, "twin_n_val": 4, "twin_n_test": 4, "twin_image_size": 128}
    generate_twin(sys.argv[1], load_profile("smoke", **sizes), workers=int(sys.argv[2]), progress=False)
    print("done", flush=True)
"""


def _generate_args(tmp_path: Path, out: Path, workers: int) -> list[str]:
    script = tmp_path / "generate.py"
    script.write_text(_GENERATE)
    return [sys.executable, str(script), str(out), str(workers)]


def _images(out: Path) -> int:
    return len(list((out / "images").glob("*.dcm"))) if (out / "images").is_dir() else 0


def _complete(out: Path) -> bool:
    from bmd.inputs.twin.cohort import _sizes, is_complete
    from bmd.inputs.twin.spec import TwinSpec, spec_hash

    profile = _profile()
    return is_complete(out, spec_hash(TwinSpec(), _sizes(profile)), profile.seed)


@pytest.mark.slow
def test_killed_twin_generation_is_not_complete_and_is_regenerated(twin, tmp_path):
    from bmd.inputs.twin.cohort import generate_twin
    from bmd.io import read_image

    out = tmp_path / "twin"
    proc = _popen(_generate_args(tmp_path, out, 2))
    try:
        _until(lambda: _images(out) >= 2, proc, "images were being written")
        workers = _descendants(proc.pid)
        # only the main process is killed: its render workers must not go on writing into the folder
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _wait_gone(workers) == [], "render workers outlived the killed generation"
    finally:
        _kill_group(proc)  # and anything of its group left behind
    assert _images(out) < 16 and not (out / "oracle.json").exists()
    assert not _complete(out)

    generate_twin(out, _profile(), workers=1, progress=False)  # the dead holder's lock is taken over
    assert _complete(out) and (out / ".twin.lock").read_text() == ""  # released: no pid left in it
    assert not list(out.glob("**/.*.tmp"))
    for name in ("manifest.csv", "landmarks.csv", "latents.csv"):
        assert (out / name).read_bytes() == (twin / name).read_bytes(), name
    for image in sorted((twin / "images").glob("*.dcm")):
        np.testing.assert_array_equal(read_image(out / "images" / image.name)[0], read_image(image)[0])


@pytest.mark.slow
def test_a_second_twin_generation_on_a_busy_folder_refuses_or_waits(tmp_path):
    from bmd.inputs.twin.cohort import TwinError, generate_twin

    out = tmp_path / "twin"
    proc = _popen(_generate_args(tmp_path, out, 1))
    try:
        _until(lambda: _images(out) >= 1, proc, "the first generation was writing")
        with pytest.raises(TwinError, match=rf"another twin generation \(pid {proc.pid}\) is writing here"):
            generate_twin(out, _profile(), workers=1, progress=False, wait=False)
        generate_twin(out, _profile(), workers=1, progress=False)  # waits for the first, then reuses its cohort
        assert _complete(out)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        _kill_group(proc)  # and anything of its group left behind
    assert proc.returncode == 0 and stdout.strip() == "done", stderr
    assert _complete(out)
    stamp = (out / "oracle.json").stat().st_mtime_ns
    generate_twin(out, _profile(), workers=1, progress=False)  # finished: reused, nothing rewritten
    assert (out / "oracle.json").stat().st_mtime_ns == stamp
