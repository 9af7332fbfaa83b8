import os
import stat

import pytest

from bmd.infra.atomic import atomic_path, current_umask, dir_mode, write_text


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # no temp file left behind
    write_text(target, "new")
    assert target.read_text() == "new"


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask, mask, mode):
    import pandas as pd

    from bmd.inputs.manifest import write_manifest

    umask(mask)
    assert current_umask() == mask and dir_mode() == 0o777 & ~mask
    text = write_text(tmp_path / "a.txt", "x")
    manifest = write_manifest(pd.DataFrame({"case_id": ["c1"], "age": [50.0]}), tmp_path / "m.csv")
    for path in (text, manifest):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = write_text(tmp_path / "a.txt", "old")
    target.chmod(0o640)
    write_text(target, "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() == "new"
