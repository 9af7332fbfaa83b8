"""The book builds from its sources with Jupyter Book, warnings as errors."""

from bmd.study.book import chapter_notebooks


def test_smoke_book_builds_html(smoke_book):
    html = smoke_book / "_build" / "html"
    assert (html / "index.html").is_file()
    text = " ".join((html / "intro.html").read_text().split())
    assert "Bone mineral density from a frontal chest X-ray" in text
    assert "verify the pipeline, not the clinical claim" in text
    assert (html / "appendix" / "data.html").is_file()


def test_every_notebook_in_the_toc_is_executed(smoke_book):
    for rel in chapter_notebooks():
        assert (smoke_book / "_build" / "src" / rel).is_file(), rel
        assert (smoke_book / "_build" / "html" / rel.with_suffix(".html")).is_file(), rel


def test_source_notebooks_carry_no_outputs():
    import nbformat

    for rel in chapter_notebooks():
        from bmd.infra import paths

        nb = nbformat.read(paths.book_source_dir() / rel, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, rel


def test_smoke_book_writes_summary_json(smoke_book):
    import json

    data = json.loads((smoke_book / "runs" / "smoke" / "summary.json").read_text())
    assert data["profile"] == "smoke" and data["commit"] and data["created"]
    assert {"twin", "book", "total"} <= set(data["timings_s"])
    assert {(r["roi"], r["vertebra"]) for r in data["oracle"]} >= {("all", "avg"), ("cervi", "L1")}
    assert data["cohort"]["cases"] == 48 and data["cohort"]["split_cases"] == {"train": 24, "val": 12, "test": 12}
    assert {"twin", "landmarks", "rois"} <= set(data["timings_s"])
    lm = data["landmarks"]
    assert lm["mean_error_pct"] > 0 and {"mean_shape", "global_only"} <= set(lm["baselines"])
    assert (smoke_book / data["artifacts"]["landmark_model"] / "config.json").is_file()


def test_smoke_book_table2_has_every_model_and_the_papers_values(smoke_book):
    import json

    data = json.loads((smoke_book / "runs" / "smoke" / "summary.json").read_text())
    rows = data["tables"]["table2"]
    models = {r["model"] for r in rows}
    assert models == {"cervi", "clavi", "lumbar", "ribcage", "chest", "multi_roi", "attention", "age_sex",
                      "roi_intensity", "radiomics"}
    multi = next(r for r in rows if r["model"] == "multi_roi" and r["vertebra"] == "avg")
    assert multi["paper_r"] == 0.840 and multi["ceiling_r"] is not None and len(multi["r_ci"]) == 2
    attention = next(r for r in rows if r["model"] == "attention" and r["vertebra"] == "avg")
    assert len(attention["delta_r_multi_roi_ci"]) == 2 and attention["delta_r_radiomics"] is not None
    assert data["exported_model"]["model"] in ("multi_roi", "attention")
    bundle = smoke_book / data["artifacts"]["multi_roi_model"]
    assert bundle.name == data["exported_model"]["model"] and (bundle / "bundle.json").is_file()
    assert set(data["attention"]["mean_weights"]) == {"L1", "L2", "L3", "L4"}
    html = " ".join((smoke_book / "_build" / "html" / "table2.html").read_text().split())
    assert "0.840" in html and "Multi-ROI" in html  # the paper's value beside ours


def test_book_refuses_a_bad_manifest_before_writing_anything(tmp_path, capsys):
    from bmd.cli import main

    bad = tmp_path / "site" / "manifest.csv"
    bad.parent.mkdir()
    bad.write_text("case_id,patient_id,image\nC1,P1,a.dcm\n")  # most required columns missing
    out = tmp_path / "out"
    assert main(["book", "--profile", "smoke", "--manifest", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "bmd book:" in err and "bmd_l1" in err and "Traceback" not in err
    assert not out.exists()


_HOLD_BOOK = """
import sys
from pathlib import Path
from bmd.study.book import book_lock
with book_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()  # until the test says so
"""


def test_a_second_book_build_on_the_same_folder_refuses_in_one_line_before_touching_it(tmp_path, capsys):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from bmd.cli import main

    out = tmp_path / "out"
    work = out / "_build" / "src"
    work.mkdir(parents=True)
    (work / "chapter.ipynb").write_text("{}")  # the running build's working folder
    summary = out / "runs" / "smoke" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text("{}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_BOOK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"  # a build is running in `out`
        assert main(["book", "--profile", "smoke", "--out", str(out)]) == 1
    finally:
        holder.communicate("\n", timeout=60)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bmd book: another book build (pid {holder.pid}) is running in {out}"]
    assert (work / "chapter.ipynb").is_file() and summary.is_file()  # nothing of the running build touched


def test_binder_and_repository_buttons_only_where_the_repository_is_known(monkeypatch):
    from bmd.study.book import book_config

    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    local = book_config()
    assert "launch_buttons" not in local and local["execute"]["execute_notebooks"] == "off"
    monkeypatch.setenv("GITHUB_REPOSITORY", "site/bmd-cxr")
    published = book_config()
    assert published["repository"]["url"] == "https://github.com/site/bmd-cxr"
    assert published["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert published["html"]["use_repository_button"] is True
