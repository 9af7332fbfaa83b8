import pytest

from bmd.config import PROFILES, ProfileError, load_profile


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

    from bmd.config import PARAMETER_DESCRIPTIONS, Profile, parameter_table

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

    from bmd import paths
    from bmd.book import chapter_notebooks
    from bmd.config import notebook_parameter_table

    names = [r["parameter"] for r in notebook_parameter_table()]
    assert names == ["profile", "seed", "manifest", "out", "show_images"]
    assert all(r["description"] and r["bmd book passes"] for r in notebook_parameter_table())
    for rel in chapter_notebooks():
        nb = nbformat.read(paths.book_source_dir() / rel, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
        assigned = [line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line]
        assert assigned[:5] == names, rel


def test_book_passes_describes_what_bmd_book_passes(tmp_path, monkeypatch):
    from bmd import book
    from bmd.config import BOOK_PASSES

    seen = {}
    monkeypatch.setattr(book, "execute_chapters", lambda parameters, build_src: seen.update(parameters))
    monkeypatch.setattr(book, "build_html", lambda build_src, out_root: out_root / "_build" / "html")
    book.build_book(profile="smoke", out=tmp_path)
    passed = {name for name, text in BOOK_PASSES.items() if not text.startswith("not passed")}
    assert set(seen) == passed
    assert seen["out"] == str(tmp_path.resolve()) and seen["manifest"] is None and seen["seed"] == 0


def test_parameter_markdown_renders_both_tables_with_every_parameter():
    from bmd.config import NOTEBOOK_PARAMETERS, PARAMETER_DESCRIPTIONS, parameter_markdown

    tables = parameter_markdown()
    notebook, profiles = tables["notebook"].splitlines(), tables["profiles"].splitlines()
    assert notebook[0].startswith("| parameter |") and set(notebook[1]) == {"|", "-"}
    assert len(notebook) == 2 + len(NOTEBOOK_PARAMETERS) and len(profiles) == 2 + len(PARAMETER_DESCRIPTIONS)
    assert profiles[0] == "| parameter | smoke | quick | paper | default | what it does |"
    assert all(line.count("|") == 7 for line in profiles)  # no stray pipe splits a row
    epochs = next(line for line in profiles if line.startswith("| `train_epochs` |"))
    assert epochs.startswith("| `train_epochs` | 3 | 7 | 100 | 100 |")
    batch_norm = next(line for line in profiles if line.startswith("| `train_batch_norm` |"))
    assert "| true | true | false | false |" in batch_norm  # spelled as in the YAML files
