"""Provenance: versions, hardware, seeds and where a build's outputs are, recorded in summary.json."""

import json

from bmd.study import provenance, summary
from bmd.study.config import load_profile


def test_environment_reports_python_torch_and_the_papers_toolchain():
    env = provenance.environment()
    assert env["python"].count(".") == 2
    packages = env["packages"]
    assert list(packages) == list(provenance.PACKAGES)
    for name in ("torch", "torchvision", "numpy", "pandas", "pydicom", "jupyter-book", "papermill"):
        assert packages[name], name
    assert env["torch"]["version"].startswith(packages["torch"].split("+")[0])
    assert env["torch"]["threads"] >= 1


def test_package_versions_gives_none_for_a_missing_distribution():
    assert provenance.package_versions(("numpy", "no-such-distribution-xyz")) == {
        "numpy": provenance.package_versions(("numpy",))["numpy"], "no-such-distribution-xyz": None}


def test_hardware_reports_cpu_cores_memory_and_gpus():
    hw = provenance.hardware()
    assert hw["cpu"] and hw["machine"]
    assert hw["cpu_count"] >= hw["cpu_usable"] >= 1
    assert hw["ram_gib"] is None or hw["ram_gib"] > 0
    assert isinstance(hw["gpus"], list)
    for gpu in hw["gpus"]:
        assert gpu["name"] and gpu["memory_gib"] > 0


def test_record_writes_a_provenance_block_without_paths_or_dates(tmp_path):
    manifest = tmp_path / "site" / "my_manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("case_id,patient_id\n")
    cfg = load_profile("smoke", seed=3)
    data = provenance.record(cfg, manifest=manifest, out=tmp_path, show_images=False)
    block = data["provenance"]
    assert json.loads(summary.summary_path("smoke", tmp_path).read_text())["provenance"] == block
    assert block["parameters"]["profile"] == "smoke" and block["parameters"]["seed"] == 3
    assert block["parameters"]["manifest"]["name"] == "my_manifest.csv"
    assert len(block["parameters"]["manifest"]["sha256"]) == 64
    assert block["parameters"]["profile_fields"]["train_epochs"] == cfg.train_epochs
    assert block["seeds"]["study"] == 3 and block["seeds"]["training"] == 3
    assert block["commit"]
    assert str(manifest.parent) not in json.dumps(block)  # the manifest's folder is not recorded


def test_a_given_landmark_detector_is_recorded_by_name_and_digest_never_by_path(tmp_path):
    import dataclasses

    from detectors import tiny_detector

    from bmd.landmarks.folder import detector_digest

    detector = tiny_detector(tmp_path / "site storage" / "detector")
    cfg = dataclasses.replace(load_profile("smoke"), landmark_model=str(detector))
    fields = provenance.record(cfg, out=tmp_path / "out")["provenance"]["parameters"]["profile_fields"]
    assert fields["landmark_model"] == {"name": "detector", "sha256": detector_digest(detector)}
    assert "site storage" not in json.dumps(fields)
    assert provenance.parameters(load_profile("smoke"))["profile_fields"]["landmark_model"] is None


def test_twin_run_records_no_manifest_and_same_inputs_give_the_same_block(tmp_path):
    cfg = load_profile("smoke")
    first = provenance.record(cfg, out=tmp_path)["provenance"]
    second = provenance.record(cfg, out=tmp_path)["provenance"]
    assert first["parameters"]["manifest"] is None and first == second


def test_timing_rows_show_only_stages_known_while_pages_run():
    data = {"timings_s": {"twin": 1.5, "rois": 2.0, "book": 9.0, "total": 30.0}}
    rows = {r["stage"]: r["seconds"] for r in provenance.timing_rows(data)}
    assert list(rows) == list(summary.TIMING_STAGES)
    assert rows == {"twin": 1.5, "landmarks": None, "rois": 2.0, "training": None, "book": None, "total": None}


def test_artifact_rows_are_relative_to_the_out_folder(tmp_path):
    cfg = load_profile("smoke")
    (tmp_path / "runs" / "smoke" / "landmark_model").mkdir(parents=True)
    data = provenance.record(cfg, out=tmp_path)
    data = summary.update(summary.summary_path("smoke", tmp_path), profile="smoke",
                          artifacts={"landmark_model": "runs/smoke/landmark_model"})
    rows = {r["what"]: r for r in provenance.artifact_rows(data, tmp_path)}
    assert rows["run folder (caches, checkpoints, predictions)"]["path"] == "runs/smoke"
    assert rows["results for scripts"] == {"what": "results for scripts", "path": "runs/smoke/summary.json",
                                           "exists": True}
    assert rows["landmark model bundle"]["exists"] and rows["twin cohort"]["path"] == "data/twin/smoke-seed0"
    assert not rows["HTML book"]["exists"]
    assert all(not r["path"].startswith("/") for r in rows.values())


def test_own_data_page_names_exactly_the_readers_metadata_whitelist():
    import dataclasses
    import re

    from bmd.infra import paths
    from bmd.io import ImageMeta

    text = (paths.book_source_dir() / "appendix" / "own_data.md").read_text()
    sentence = text[text.index("exactly the whitelist"):].split(". ")[0]
    named = re.findall(r"`([a-z_]+)`", sentence)
    assert named == [f.name for f in dataclasses.fields(ImageMeta)]
