import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bmd.infra import progress
from bmd.model.train import epoch_progress


def test_note_appends_one_line_only_when_the_variable_names_a_file(tmp_path, monkeypatch):
    target = tmp_path / "progress.log"
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.note("nowhere")
    assert not target.exists()
    monkeypatch.setenv(progress.ENV, str(target))
    progress.note("training vgg11\n(epoch 1/3)")
    progress.note("done")
    assert target.read_text() == "training vgg11 (epoch 1/3)\ndone\n"


def test_follower_hands_over_complete_lines_and_the_console_prefixes_them(tmp_path):
    out = io.StringIO()
    log = tmp_path / "book.log"
    console = progress.Console(2, log, stream=out)
    console.begin("table1")
    path = tmp_path / "progress.log"
    with progress.Follower(path, console.line, interval=0.01), open(path, "a") as fh:
        fh.write("training vgg11 (epoch 4/7, val R 0.71)\npartial")
    console.end()
    console.close("finished")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/2] table1: started"
    assert lines[1] == "[1/2] table1: training vgg11 (epoch 4/7, val R 0.71) 0s"
    assert lines[2].startswith("[1/2] table1: done in") and lines[-1].startswith("finished")
    assert not any("partial" in line for line in lines)  # an unfinished line waits for its newline
    assert log.read_text().splitlines() == lines


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (133, "2m13s"), (3720, "1h02m")])
def test_elapsed_reads_like_a_person_writes_it(seconds, text):
    assert progress.elapsed(seconds) == text


def test_epoch_lines_of_the_entry_point_become_progress():
    line = "epoch 4/7 loss 0.1234 val MSE 0.0100 R 0.712 lr 1.00e-03 2.1s *"
    assert epoch_progress(line) == "epoch 4/7, val R 0.71"
    assert epoch_progress("epoch 2/7 loss nan val MSE nan R nan lr 1e-3 1s") == "epoch 2/7, val R nan"
    assert epoch_progress("W0101 some torchrun warning") is None


def _probe_book(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: probe\n")
    cells = [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
         "source": "profile = 'smoke'"},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "from bmd.infra import progress\nprogress.note(f'stage one of {profile}')"},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 4}
    (source / "probe.ipynb").write_text(json.dumps(nb))
    return source


@pytest.mark.slow
def test_chapters_report_progress_and_their_kernels_stop_without_a_keyboardinterrupt(tmp_path):
    """One chapter in a real kernel: its progress line reaches the console, and the kernel's shutdown
    prints nothing (jupyter_client's interrupt made ipykernel log a KeyboardInterrupt after each)."""
    _probe_book(tmp_path)
    code = (
        "import sys\nfrom pathlib import Path\nfrom bmd.infra import progress\nfrom bmd.study import book\n"
        f"out = Path({str(tmp_path)!r})\n"
        "console = progress.Console(1, None, stream=sys.stdout)\n"
        "book.execute_chapters({'profile': 'quick'}, out / 'build' / 'src', source=out / 'src', console=console)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[1/1] probe: stage one of quick" in proc.stdout
    assert "KeyboardInterrupt" not in proc.stderr + proc.stdout, proc.stderr
