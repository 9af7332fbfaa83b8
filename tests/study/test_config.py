import dataclasses

import pytest

from bmd.infra import paths
from bmd.study.config import PROFILES, Profile, ProfileError, load_profile


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_load_and_keep_image_four_times_chest(name):
    profile = load_profile(name)
    assert profile.profile == name
    assert profile.twin_image_size >= 4 * profile.chest_size


def test_quick_profile_uses_the_papers_split():
    p = load_profile("quick")
    assert (p.twin_n_train, p.twin_n_val, p.twin_n_test) == (1087, 265, 329)


def test_overrides_win_and_none_is_ignored():
    assert load_profile("smoke", seed=7).seed == 7
    assert load_profile("smoke", seed=None).seed == 0


def test_unknown_profile_and_unknown_key_are_refused(tmp_path):
    with pytest.raises(ProfileError, match="unknown profile"):
        load_profile("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: x\nchest_sise: 3\n")
    with pytest.raises(ProfileError, match="chest_sise"):
        load_profile(bad)


def test_parameter_table_lists_every_field_with_each_profiles_value_and_a_description():
    import dataclasses

    from bmd.study.config import PARAMETER_DESCRIPTIONS, Profile, parameter_table

    rows = parameter_table()
    fields = [f.name for f in dataclasses.fields(Profile)]
    assert [r["parameter"] for r in rows] == fields
    assert set(PARAMETER_DESCRIPTIONS) == set(fields)  # no field undocumented, no stale description
    for name in PROFILES:
        profile = load_profile(name)
        for row in rows:
            assert row[name] == getattr(profile, row["parameter"]), (name, row["parameter"])
    by_name = {r["parameter"]: r for r in rows}
    assert by_name["train_optimizer"]["paper"] == "sgd" and by_name["train_epochs"]["smoke"] == 3
    assert by_name["profile"]["default"] is None and by_name["seed"]["default"] == 0
    assert all(r["description"].strip() for r in rows)


def test_notebook_parameters_match_the_chapters_parameters_cell():
    import nbformat

    from bmd.infra import paths
    from bmd.study.book import chapter_notebooks
    from bmd.study.config import notebook_parameter_table

    names = [r["parameter"] for r in notebook_parameter_table()]
    assert names == ["profile", "seed", "manifest", "out", "show_images"]
    assert all(r["description"] and r["bmd book passes"] for r in notebook_parameter_table())
    for rel in chapter_notebooks():
        nb = nbformat.read(paths.book_source_dir() / rel, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
        assigned = [line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line]
        assert assigned[:5] == names, rel


def test_book_passes_describes_what_bmd_book_passes(tmp_path, monkeypatch):
    from bmd.study import book
    from bmd.study.config import BOOK_PASSES

    seen = {}
    monkeypatch.setattr(book, "execute_chapters", lambda parameters, build_src, console=None: seen.update(parameters))
    monkeypatch.setattr(book, "build_html", lambda build_src, out_root: out_root / "_build" / "html")
    book.build_book(profile="smoke", out=tmp_path, quiet=True)
    passed = {name for name, text in BOOK_PASSES.items() if not text.startswith("not passed")}
    assert set(seen) == passed | {f.name for f in dataclasses.fields(Profile)}  # every profile field as well
    assert seen["out"] == str(tmp_path.resolve()) and seen["manifest"] is None and seen["seed"] == 0
    assert seen == {**load_profile("smoke").as_dict(), "manifest": None, "out": str(tmp_path.resolve())}


def _fake_detector(folder):
    """A folder that passes the detector check (a config of this version and a weights file)."""
    import json

    from bmd.columns import LANDMARK_NAMES

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"format": "bmd-landmarks/1", "landmark_names": LANDMARK_NAMES}))
    (folder / "weights.pt").write_bytes(b"weights")
    return folder


def test_landmark_model_flows_from_bmd_book_to_every_chapter_as_an_absolute_path(tmp_path, monkeypatch):
    from bmd.study import book
    from bmd.study.config import from_parameters

    assert all(load_profile(name).landmark_model is None for name in PROFILES)  # trained unless given
    _fake_detector(tmp_path / "det")
    monkeypatch.chdir(tmp_path)
    seen = {}
    monkeypatch.setattr(book, "execute_chapters", lambda parameters, build_src, console=None: seen.update(parameters))
    monkeypatch.setattr(book, "build_html", lambda build_src, out_root: out_root / "_build" / "html")
    book.build_book(profile="smoke", out=tmp_path / "out", quiet=True, landmark_model="det")
    assert seen["landmark_model"] == str((tmp_path / "det").resolve())  # chapters run in another folder
    cfg = from_parameters(seen)  # what a chapter builds from its parameters
    assert cfg.landmark_model == seen["landmark_model"] and cfg == load_profile("smoke", landmark_model=seen[
        "landmark_model"])


def test_pages_show_a_given_detector_by_its_folder_name_only():
    from bmd.study.config import resolved_table

    table = resolved_table(load_profile("smoke", landmark_model="/data/site storage/detectors/site_a"))
    assert table.loc["landmark_model", "value"] == ".../site_a"
    assert resolved_table(load_profile("smoke")).loc["landmark_model", "value"] == "—"


def test_landmark_model_is_checked_and_typed_like_every_parameter(tmp_path):
    from bmd.study.book import BookError, build_book

    with pytest.raises(BookError) as info:
        build_book(profile="smoke", out=tmp_path / "out", landmark_model=tmp_path / "nothing")
    assert str(info.value) == f"{tmp_path / 'nothing'}: not a landmark detector (no config.json)"
    assert not (tmp_path / "out").exists()  # refused before anything is written
    path = tmp_path / "bad.yaml"
    path.write_text("profile: bad\nlandmark_model: 3\n")
    with pytest.raises(ProfileError, match="landmark_model: expected a string or null, got 3"):
        load_profile(path)


def _edited_smoke(tmp_path, name="mine", **changes):
    import yaml

    values = {**yaml.safe_load(paths.profile_file("smoke").read_text()), "profile": name, **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_yaml_path_is_a_profile_and_its_values_reach_the_config(tmp_path):
    path = _edited_smoke(tmp_path, train_lr=0.05, train_epochs=2)
    cfg = load_profile(path)
    assert (cfg.profile, cfg.train_lr, cfg.train_epochs, cfg.roi_size) == ("mine", 0.05, 2, 32)
    assert load_profile(str(path), seed=5).seed == 5


@pytest.mark.parametrize(("text", "message"), [
    ("train_lr: 1e-4", "train_lr: expected a number, got '1e-4'"),
    ("train_epochs: 2.5", "train_epochs: expected an integer, got 2.5"),
    ("train_batch_norm: 'yes'", "train_batch_norm: expected true or false, got 'yes'"),
    ("roi_size: true", "roi_size: expected an integer, got True"),
    ("train_optimizer: 3", "train_optimizer: expected a string, got 3"),
    ("train_pretrained: 1", "train_pretrained: expected a string or null, got 1"),
])
def test_values_of_the_wrong_type_are_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"profile: bad\n{text}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_exponent_without_a_dot_gets_the_hint_and_an_integer_float_is_accepted(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("profile: lr\ntrain_lr: 1e-4\n")
    with pytest.raises(ProfileError, match=r"write 1\.0e-4"):
        load_profile(path)
    path.write_text("profile: lr\ntrain_lr: 1.0e-4\ntrain_width: 1\n")
    cfg = load_profile(path)
    assert cfg.train_lr == 1e-4 and isinstance(cfg.train_width, float)


def test_from_parameters_builds_the_profile_from_what_papermill_injected(tmp_path):
    from bmd.study.config import from_parameters

    # -p profile smoke: the packaged profile; seed None keeps its seed
    assert from_parameters({"profile": "smoke", "seed": None}) == load_profile("smoke")
    assert from_parameters({"profile": "smoke", "seed": 3}).seed == 3
    # -f edited.yaml: every field injected, the edited one wins even under a packaged name
    injected = {**load_profile("smoke").as_dict(), "train_lr": 0.05, "seed": None}
    assert from_parameters(injected).train_lr == 0.05
    # an edited copy with its own name (what bmd book --profile mine.yaml passes)
    mine = load_profile(_edited_smoke(tmp_path, train_epochs=2))
    assert from_parameters({**mine.as_dict(), "manifest": None, "out": None}) == mine
    # a YAML path as the profile, one field overridden by -p; a null override is kept (paper: imagenet)
    cfg = from_parameters({"profile": str(_edited_smoke(tmp_path)), "seed": None, "roi_size": 16})
    assert (cfg.profile, cfg.roi_size) == ("mine", 16)
    assert from_parameters({"profile": "paper", "seed": None, "train_pretrained": None}).train_pretrained is None
    with pytest.raises(ProfileError, match="unknown profile 'mine'"):
        from_parameters({"profile": "mine", "seed": None})
    with pytest.raises(ProfileError, match="train_lr: expected a number, got '1e-4'"):
        from_parameters({"profile": "smoke", "seed": None, "train_lr": "1e-4"})


def test_bmd_book_names_the_run_folder_by_the_yaml_profile_field(tmp_path, monkeypatch):
    from bmd.study import book

    seen = {}
    monkeypatch.setattr(book, "execute_chapters", lambda parameters, build_src, console=None: seen.update(parameters))
    monkeypatch.setattr(book, "build_html", lambda build_src, out_root: out_root / "_build" / "html")
    book.build_book(profile=_edited_smoke(tmp_path, train_lr=0.05), out=tmp_path / "out", quiet=True)
    assert seen["profile"] == "mine" and seen["train_lr"] == 0.05
    assert (tmp_path / "out" / "runs" / "mine" / "summary.json").is_file()


def test_parameter_markdown_renders_both_tables_with_every_parameter():
    from bmd.study.config import NOTEBOOK_PARAMETERS, PARAMETER_DESCRIPTIONS, parameter_markdown

    tables = parameter_markdown()
    notebook, profiles = tables["notebook"].splitlines(), tables["profiles"].splitlines()
    assert notebook[0].startswith("| parameter |") and set(notebook[1]) == {"|", "-"}
    assert len(notebook) == 2 + len(NOTEBOOK_PARAMETERS) and len(profiles) == 2 + len(PARAMETER_DESCRIPTIONS)
    assert profiles[0] == "| parameter | smoke | quick | paper | default | what it does |"
    assert all(line.count("|") == 7 for line in profiles)  # no stray pipe splits a row
    epochs = next(line for line in profiles if line.startswith("| `train_epochs` |"))
    assert epochs.startswith("| `train_epochs` | 3 | 12 | 100 | 100 |")
    batch_norm = next(line for line in profiles if line.startswith("| `train_batch_norm` |"))
    assert "| true | true | false | false |" in batch_norm  # spelled as in the YAML files


@pytest.mark.slow
def test_a_chapter_run_with_an_edited_profile_yaml_uses_the_edited_values(tmp_path):
    """papermill -f edited.yaml: the chapter's typed config (and the page's resolved-parameters cell)
    holds the edited values, not the packaged profile's."""
    import nbformat
    import papermill as pm
    import yaml

    raw = yaml.safe_load(paths.profile_file("smoke").read_text())
    raw.update(profile="mine", train_lr=0.0042, train_epochs=5)
    edited = tmp_path / "mine.yaml"
    edited.write_text(yaml.safe_dump(raw))
    out = tmp_path / "parameters.ipynb"
    pm.execute_notebook(str(paths.book_source_dir() / "appendix" / "parameters.ipynb"), str(out),
                        parameters={**raw, "out": str(tmp_path)}, progress_bar=False, cwd=str(tmp_path))
    nb = nbformat.read(out, as_version=4)
    resolved = next(c for c in nb.cells if "resolved_table(cfg)" in c.source)
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in resolved.outputs)
    assert "0.0042" in shown and "mine" in shown
    assert "0.003" not in shown  # the packaged smoke learning rate did not come back
