import pytest

from bmd.atomic import atomic_path, write_text


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
