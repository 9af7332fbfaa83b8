"""One freshness mechanism: an artifact is reused while the key of its inputs is unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bmd.infra.artifacts import Artifact, file_stamp, inputs_key
from bmd.infra.digests import sha256_bytes, sha256_file, sha256_files, sha256_json


def test_digests_and_keys(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_bytes(b"x = 1\n")
    b.write_bytes(b"y = 2\n")
    assert sha256_file(a) == sha256_bytes(b"x = 1\n")
    assert sha256_files([a, b]) != sha256_files([b, a])  # order is part of it
    assert inputs_key({"a": 1, "b": [1, 2]}) == inputs_key({"b": [1, 2], "a": 1})  # key order is not
    assert inputs_key({"a": 1}) != inputs_key({"a": 2})
    assert inputs_key({"p": Path("x")}) == sha256_json({"p": "x"})  # other objects by their text
    stamp = file_stamp(a)
    assert stamp[0] == str(a) and stamp[1] == 6


def _counting(folder: Path, calls: list):
    def make():
        calls.append(1)
        folder.mkdir(exist_ok=True)
        (folder / "data.txt").write_text(str(len(calls)))
    return make


def test_a_folder_is_built_once_per_key_and_stamped_beside_it(tmp_path):
    folder = tmp_path / "thing"
    art = Artifact(folder, "the thing")
    calls: list = []
    assert art.build(inputs_key({"n": 1}), _counting(folder, calls), inputs={"n": 1}) is True
    assert art.build(inputs_key({"n": 1}), _counting(folder, calls)) is False  # current: reused
    assert len(calls) == 1
    assert art.stamp == tmp_path / ".thing.artifact.json" and not (folder / ".artifact.json").exists()
    assert art.read_stamp()["inputs"] == {"n": 1}
    assert art.build(inputs_key({"n": 2}), _counting(folder, calls)) is True  # other inputs: rebuilt
    assert len(calls) == 2 and art.is_current(inputs_key({"n": 2})) and not art.is_current(inputs_key({"n": 1}))
    assert art.build(inputs_key({"n": 2}), _counting(folder, calls), valid=lambda: False) is True  # unusable
    assert len(calls) == 3


def test_a_failed_build_leaves_no_stamp(tmp_path):
    art = Artifact(tmp_path / "thing", "the thing")
    art.build("k1", lambda: (tmp_path / "thing").mkdir())

    def dies():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        art.build("k2", dies)
    assert art.read_stamp() is None and not art.is_current("k1") and not art.is_current("k2")


def test_a_file_changed_after_its_stamp_is_not_current(tmp_path):
    path = tmp_path / "rows.json"
    art = Artifact(path, "the rows", folder=False)
    art.build("k", lambda: path.write_text("[1, 2]"))
    assert art.is_current("k")
    path.write_text("[1, 2, 3]")  # edited or damaged by hand
    assert not art.is_current("k")
    path.unlink()
    assert not art.is_current("k")


def test_an_artifact_made_before_stamps_is_adopted_when_the_old_rule_accepts_it(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    art = Artifact(folder, "an old thing")
    calls: list = []
    assert art.build("k", _counting(folder, calls), legacy=lambda: True) is False  # adopted, not rebuilt
    assert calls == [] and art.is_current("k")
    other = Artifact(tmp_path / "older", "an older thing")
    (tmp_path / "older").mkdir()
    assert other.build("k", _counting(tmp_path / "older", calls), legacy=lambda: False) is True
    assert calls == [1]
    broken = Artifact(tmp_path / "broken", "a broken thing")
    (tmp_path / "broken").mkdir()

    def unreadable() -> bool:
        raise ValueError("not JSON")

    assert broken.build("k", _counting(tmp_path / "broken", calls), legacy=unreadable) is True  # no crash
    # a stamped artifact is judged by its stamp alone, never adopted by the old rule
    assert art.build("k2", _counting(folder, calls), legacy=lambda: True) is True


_BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bmd.infra.artifacts import Artifact
    folder, log = Path(sys.argv[1]), Path(sys.argv[2])

    def make():
        with open(log, "a") as fh:
            fh.write("built\\n")
        time.sleep(0.5)
        folder.mkdir(exist_ok=True)

    built = Artifact(folder, "the shared thing").build("k", make)
    print("built" if built else "reused")
""")


def test_two_processes_building_the_same_artifact_build_it_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get(
        "PYTHONPATH", "")])}
    args = [sys.executable, "-c", _BUILDER, str(tmp_path / "shared"), str(tmp_path / "log.txt")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(out.strip() for out, _ in outs) == ["built", "reused"]
    assert (tmp_path / "log.txt").read_text() == "built\n"
