"""The command line's edges: one line and the right exit status for every bad invocation, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bmd import __version__
from bmd.cli import EXIT_CODES, build_parser, main

VERBS = ["inspect", "validate-manifest", "twin", "landmarks", "landmarks train", "landmarks predict", "train",
         "book", "predict", "evaluate"]


def _files(tmp: Path) -> dict[str, str]:
    """Bad inputs of each kind, written under ``tmp``."""
    (tmp / "bad.json").write_text("{not json")
    (tmp / "unknown_key.json").write_text(json.dumps({"run_dir": "r", "cache": "c", "manifest": "m", "colour": 1}))
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "missing_key.json").write_text(json.dumps({"run_dir": "r"}))
    (tmp / "not_a_bundle").mkdir()
    (tmp / "bad_bundle").mkdir()
    (tmp / "bad_bundle" / "config.json").write_text("{")
    (tmp / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp / "profile.yaml").write_text("profile: smoke\nno_such_parameter: 1\n")
    (tmp / "empty.csv").write_text("")
    return {k: str(tmp / k) for k in ("bad.json", "unknown_key.json", "list.json", "missing_key.json",
                                      "not_a_bundle", "bad_bundle", "image.png", "profile.yaml", "empty.csv")}


# (argv with {name} placeholders, expected exit status, what the one stderr line must name)
BAD = {
    "landmarks predict, missing model": (["landmarks", "predict", "--model", "{tmp}/nonexistent", "{image.png}"], 1,
                                         "nonexistent"),
    "landmarks predict, model folder without config": (["landmarks", "predict", "--model", "{not_a_bundle}",
                                                        "{image.png}"], 1, "not_a_bundle"),
    "landmarks predict, model with broken config": (["landmarks", "predict", "--model", "{bad_bundle}",
                                                     "{image.png}"], 1, "config.json"),
    "landmarks train, missing manifest": (["landmarks", "train", "--manifest", "{tmp}/missing.csv", "--out",
                                           "{tmp}/lm"], 1, "missing.csv"),
    "landmarks train, empty manifest": (["landmarks", "train", "--manifest", "{empty.csv}", "--out", "{tmp}/lm"],
                                        1, "empty.csv"),
    "train, missing config": (["train", "--config", "{tmp}/missing.json"], 1, "missing.json"),
    "train, bad JSON": (["train", "--config", "{bad.json}"], 1, "bad.json"),
    "train, unknown key": (["train", "--config", "{unknown_key.json}"], 1, "colour"),
    "train, not an object": (["train", "--config", "{list.json}"], 1, "list.json"),
    "train, missing key": (["train", "--config", "{missing_key.json}"], 1, "cache"),
    "train, no --config": (["train"], 2, "--config"),
    "validate-manifest, missing": (["validate-manifest", "{tmp}/missing.csv"], 1, "missing.csv"),
    "validate-manifest, folder": (["validate-manifest", "{tmp}"], 1, "not a regular file"),
    "validate-manifest, empty": (["validate-manifest", "{empty.csv}"], 1, "empty.csv"),
    "twin, unknown profile": (["twin", "--profile", "nope", "--out", "{tmp}/twin"], 2, "nope"),
    "twin, profile with unknown parameter": (["twin", "--profile", "{profile.yaml}", "--out", "{tmp}/twin"], 1,
                                             "no_such_parameter"),
    "twin, no --out": (["twin"], 2, "--out"),
    "book, missing manifest": (["book", "--profile", "smoke", "--manifest", "{tmp}/missing.csv", "--out",
                                "{tmp}/book"], 1, "missing.csv"),
    "book, unknown profile": (["book", "--profile", "huge"], 2, "huge"),
    "book, landmark model that is not a detector": (["book", "--profile", "smoke", "--landmark-model",
                                                     "{not_a_bundle}", "--out", "{tmp}/book"], 1, "not_a_bundle"),
    "predict, missing bundle": (["predict", "{image.png}", "--model", "{tmp}/nonexistent"], 1, "nonexistent"),
    "predict, folder that is not a bundle": (["predict", "{image.png}", "--model", "{not_a_bundle}"], 1,
                                             "not_a_bundle"),
    "predict, no --model": (["predict", "{image.png}"], 2, "--model"),
    "evaluate, missing bundle": (["evaluate", "--model", "{tmp}/nonexistent", "--manifest", "{tmp}/m.csv",
                                  "--out", "{tmp}/ev"], 1, "nonexistent"),
    "evaluate, bad --n-boot": (["evaluate", "--model", "m", "--manifest", "m", "--n-boot", "many"], 2, "many"),
    "unknown verb": (["frobnicate"], 2, "frobnicate"),
    "unknown option": (["inspect", "--colour", "x.png"], 2, "--colour"),
    "no verb": ([], 2, "COMMAND"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_invocation_is_one_line_naming_it_with_its_exit_status(name, tmp_path, capsys):
    argv, status, named = BAD[name]
    files = {**_files(tmp_path), "tmp": str(tmp_path)}
    for key, value in files.items():
        argv = [a.replace("{" + key + "}", value) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert code == status, (argv, err)
    assert err.count("\n") == 1 and err.startswith("bmd"), err
    assert named in err and "Traceback" not in err + captured.out
    for output in ("lm", "twin", "book", "ev"):  # nothing was started
        assert not (tmp_path / output).exists()


def test_book_on_a_manifest_without_landmarks_names_both_ways_out_in_one_line_before_any_work(tmp_path, capsys):
    from manifests import image_folder, write_csv

    site = tmp_path / "site"
    site.mkdir()
    image_folder(site)
    manifest = write_csv(site, ["c1,p1,img/a.png,0.80,0.85,0.90,0.95,F,66,hologic,train",
                                "c2,p2,img/b.png,0.70,0.75,0.80,0.82,F,67,hologic,val",
                                "c3,p3,img/a.png,1.00,1.05,1.10,1.12,M,71,lunar,test"])
    out = tmp_path / "out"
    assert main(["book", "--profile", "smoke", "--manifest", str(manifest), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err + captured.out
    assert captured.err.startswith(f"bmd book: {manifest}: no ground-truth landmarks (no `landmarks` column)")
    assert "book/appendix/annotations.md" in captured.err and "--landmark-model DIR" in captured.err
    assert not out.exists()  # refused before the cohort, the detector or anything else


def test_book_passes_the_landmark_model_folder_on(tmp_path, monkeypatch, capsys):
    import bmd.study.book

    seen = {}

    def fake_build(**kwargs):
        seen.update(kwargs)
        return tmp_path / "html"

    monkeypatch.setattr(bmd.study.book, "build_book", fake_build)
    assert main(["book", "--profile", "smoke", "--landmark-model", str(tmp_path / "det"), "--out", str(tmp_path)]) == 0
    assert seen["landmark_model"] == tmp_path / "det"
    assert main(["book", "--profile", "smoke", "--out", str(tmp_path)]) == 0 and seen["landmark_model"] is None
    with pytest.raises(SystemExit):
        main(["book", "--help"])
    assert "--landmark-model DIR" in capsys.readouterr().out


@pytest.mark.slow
def test_bad_invocations_in_a_subprocess(tmp_path):
    cases = [(["train", "--config", str(tmp_path / "missing.json")], 1),
             (["landmarks", "predict", "--model", "/nonexistent", "x.png"], 1),
             (["twin", "--profile", "nope", "--out", str(tmp_path)], 2)]
    for argv, status in cases:
        done = subprocess.run([sys.executable, "-m", "bmd", *argv], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert done.returncode == status, done.stderr
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr


def test_unexpected_error_is_one_line_with_its_class_and_exit_1(monkeypatch, capsys):
    import bmd.cli

    def boom(args):
        raise RuntimeError("something\nunexpected")

    parser = build_parser()
    monkeypatch.setattr(bmd.cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["inspect"].set_defaults(func=boom)
    assert main(["inspect", "x.png"]) == 1
    assert capsys.readouterr().err == "bmd inspect: RuntimeError: something unexpected\n"


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    import bmd.cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = build_parser()
    monkeypatch.setattr(bmd.cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["inspect"].set_defaults(func=interrupted)
    assert main(["inspect", "x.png"]) == 130
    assert capsys.readouterr().err == "bmd inspect: interrupted\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("bmd ") and out.split()[1][0].isdigit()
    assert __version__ == out.split()[1]  # the package and its installed distribution agree


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_a_one_line_description(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*verb.split(), "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1].strip()
    assert description and not description.startswith(("positional", "options")), out


def test_readme_documents_every_exit_status():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in readme
