"""Ground-truth import: project CSV, Labelme JSON and CVAT XML, with their error messages; the Labelme
writer (detected points for a site to correct) and its exact round trip through the importer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bmd.columns import COORD_COLUMNS, LANDMARK_NAMES
from bmd.landmarks.annotations import (
    LABELME_DETECTION_KEY,
    AnnotationError,
    import_annotations,
    labelme_paths,
    labelme_stem,
    read_labelme,
    read_landmark_csv,
    write_labelme,
    write_landmark_csv,
)

POINTS = np.column_stack([np.arange(16) * 10.0 + 5.25, np.arange(16) * 7.0 + 3.5])


def _labelme(path, names=LANDMARK_NAMES, points=POINTS, extra_shapes=()):
    shapes = [
        {"label": n, "points": [[float(x), float(y)]], "shape_type": "point"}
        for n, (x, y) in zip(names, points, strict=False)
    ]
    doc = {
        "version": "5.4.1",
        "shapes": [*shapes, *extra_shapes],
        "imagePath": f"{path.stem}.png",
        "imageHeight": 512,
        "imageWidth": 512,
    }
    path.write_text(json.dumps(doc))
    return path


def _cvat(path, images):
    body = []
    for name, names, points in images:
        pts = "".join(
            f'<points label="{n}" occluded="0" source="manual" points="{x:.2f},{y:.2f}" z_order="0"/>'
            for n, (x, y) in zip(names, points, strict=False)
        )
        body.append(f'<image id="0" name="{name}" width="512" height="512">{pts}</image>')
    path.write_text(
        f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>{"".join(body)}'
        "</annotations>"
    )
    return path


def test_project_csv_round_trip(tmp_path):
    df = pd.DataFrame([POINTS.reshape(-1)], columns=list(COORD_COLUMNS))
    df.insert(0, "case_id", ["C1"])
    path = write_landmark_csv(df, tmp_path / "marks.csv")
    back = import_annotations(path)
    assert list(back.columns) == ["case_id", *COORD_COLUMNS]
    np.testing.assert_allclose(back[list(COORD_COLUMNS)].to_numpy().reshape(16, 2), POINTS)


def test_project_csv_errors_name_the_file_and_the_points(tmp_path):
    df = pd.DataFrame([POINTS.reshape(-1)], columns=list(COORD_COLUMNS))
    df.insert(0, "image", ["a.png"])
    missing = df.drop(columns=["x_t12", "y_t12", "x_cervical"])
    missing.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(AnnotationError, match=r"m\.csv: missing point\(s\): cervical, t12$"):
        read_landmark_csv(tmp_path / "m.csv")
    df.assign(x_sternum=1.0, y_sternum=2.0).to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(AnnotationError, match=r"u\.csv: unknown point name\(s\): sternum"):
        read_landmark_csv(tmp_path / "u.csv")
    df.assign(x_t12="").to_csv(tmp_path / "e.csv", index=False)
    with pytest.raises(AnnotationError, match=r"e\.csv: row 2, column x_t12"):
        read_landmark_csv(tmp_path / "e.csv")
    df.drop(columns=["image"]).to_csv(tmp_path / "n.csv", index=False)
    with pytest.raises(AnnotationError, match="case_id or image"):
        read_landmark_csv(tmp_path / "n.csv")


def test_labelme_file_and_folder(tmp_path):
    polygon = {"label": "lung", "points": [[0, 0], [1, 0], [1, 1]], "shape_type": "polygon"}  # ignored
    one = _labelme(tmp_path / "case7.json", extra_shapes=[polygon])
    df = import_annotations(one)
    assert df.loc[0, "case_id"] == "case7" and df.loc[0, "image"] == "case7.png"
    # Labelme's canvas puts pixel corners at integers; the project puts pixel centres there
    np.testing.assert_allclose(df[list(COORD_COLUMNS)].to_numpy().reshape(16, 2), POINTS - 0.5)
    raw = import_annotations(one, corner_origin=False)
    np.testing.assert_allclose(raw[list(COORD_COLUMNS)].to_numpy().reshape(16, 2), POINTS)
    _labelme(tmp_path / "case8.json", points=POINTS + 1)
    both = import_annotations(tmp_path)
    assert both["case_id"].tolist() == ["case7", "case8"]


def test_labelme_errors(tmp_path):
    with pytest.raises(AnnotationError, match=r"short\.json: missing point\(s\): rib_r_4, cervical, t12$"):
        import_annotations(_labelme(tmp_path / "short.json", names=LANDMARK_NAMES[:13]))
    names = ["clavicle_left", *LANDMARK_NAMES[1:-1], "T12"]
    with pytest.raises(
        AnnotationError,
        match=r"bad\.json: unknown point name\(s\): T12, clavicle_left; "
        r"missing point\(s\): clav_l_medial, t12$",
    ):
        import_annotations(_labelme(tmp_path / "bad.json", names=names))
    twice = [*LANDMARK_NAMES, "t12"]
    with pytest.raises(AnnotationError, match=r"twice\.json: point\(s\) given more than once: t12"):
        import_annotations(
            _labelme(tmp_path / "twice.json", names=twice, points=np.vstack([POINTS, POINTS[:1]]))
        )
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AnnotationError, match=r"broken\.json: not a readable Labelme JSON file"):
        import_annotations(tmp_path / "broken.json")


def test_cvat_xml(tmp_path):
    path = _cvat(
        tmp_path / "task.xml",
        [("img/a1.png", LANDMARK_NAMES, POINTS), ("b2.png", LANDMARK_NAMES, POINTS * 2)],
    )
    df = import_annotations(path)
    assert df["case_id"].tolist() == ["a1", "b2"] and df["image"].tolist() == ["img/a1.png", "b2.png"]
    np.testing.assert_allclose(
        df.loc[1, list(COORD_COLUMNS)].to_numpy(float).reshape(16, 2), POINTS * 2 - 0.5
    )


def test_cvat_errors(tmp_path):
    path = _cvat(tmp_path / "miss.xml", [("a.png", LANDMARK_NAMES[1:], POINTS[1:])])
    with pytest.raises(AnnotationError, match=r"miss\.xml: image a\.png: missing point\(s\): clav_l_medial$"):
        import_annotations(path)
    path = _cvat(
        tmp_path / "unk.xml", [("a.png", [*LANDMARK_NAMES, "sternum"], np.vstack([POINTS, POINTS[:1]]))]
    )
    with pytest.raises(AnnotationError, match=r"unk\.xml: image a\.png: unknown point name\(s\): sternum"):
        import_annotations(path)
    (tmp_path / "x.xml").write_text("<annotations></annotations>")
    with pytest.raises(AnnotationError, match=r"x\.xml: no <image> elements"):
        import_annotations(tmp_path / "x.xml")


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        import_annotations(tmp_path / "a.txt")
    with pytest.raises(AnnotationError, match="file not found"):
        import_annotations(tmp_path / "none.csv")


# ------------------------------------------------------------------------------------------ Labelme writer


def test_written_labelme_files_import_back_to_the_same_points(tmp_path):
    rng = np.random.default_rng(3)
    detected = {"chest_01": rng.uniform(-3, 900, (16, 2)), "1.2.840.10008.7": rng.uniform(0, 700, (16, 2))}
    images = ["site/a/chest_01.dcm", "site/b/1.2.840.10008.7"]
    paths = labelme_paths(images, tmp_path / "json")
    for image, path in zip(images, paths, strict=True):
        write_labelme(detected[labelme_stem(image)], LANDMARK_NAMES, (1024, 896), path,
                      image_path=Path(image).name)
    back = import_annotations(tmp_path / "json")
    assert sorted(back["case_id"]) == sorted(detected)  # the images' stems
    for _, row in back.iterrows():
        got = row[list(COORD_COLUMNS)].to_numpy(float).reshape(16, 2)
        np.testing.assert_allclose(got, detected[row["case_id"]], rtol=0, atol=1e-6)
    assert set(back["image"]) == {"chest_01.dcm", "1.2.840.10008.7"}
    # the same file read as Labelme draws it: pixel corners at integers, so the points sit 0.5 further
    raw = read_labelme(paths[0], corner_origin=False)
    raw_points = raw[list(COORD_COLUMNS)].to_numpy(float).reshape(16, 2)
    np.testing.assert_allclose(raw_points, detected["chest_01"] + 0.5)


def test_written_labelme_file_is_what_labelme_opens(tmp_path):
    names = list(reversed(LANDMARK_NAMES))  # any order in, the project's order out
    path = write_labelme(POINTS[::-1], names, (512, 384), tmp_path / "c7.json", image_path="c7.png")
    doc = json.loads(path.read_text())
    assert doc["version"].split(".")[0] == "5" and doc["flags"] == {} and doc["imageData"] is None
    assert (doc["imagePath"], doc["imageHeight"], doc["imageWidth"]) == ("c7.png", 512, 384)
    assert [s["label"] for s in doc["shapes"]] == list(LANDMARK_NAMES)
    assert {s["shape_type"] for s in doc["shapes"]} == {"point"}
    assert all(set(s) >= {"label", "points", "group_id", "shape_type", "flags"} for s in doc["shapes"])
    assert doc["shapes"][0]["points"] == [[POINTS[0, 0] + 0.5, POINTS[0, 1] + 0.5]]
    assert LABELME_DETECTION_KEY not in doc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c7.json"]  # no temporary file left beside it


def test_the_detector_verdict_goes_into_flags_and_its_own_key(tmp_path):
    flagged = write_labelme(POINTS, LANDMARK_NAMES, (512, 512), tmp_path / "f.json", image_path="f.dcm",
                            status="flagged", reason="unlike the training images", plausibility=0.003,
                            score=2.5)
    doc = json.loads(flagged.read_text())
    assert doc["flags"] == {"flagged": True}
    assert doc[LABELME_DETECTION_KEY] == {"status": "flagged", "reason": "unlike the training images",
                                          "plausibility": 0.003, "score": 2.5}
    # a detector without a plausibility model has no scores
    ok = write_labelme(POINTS, LANDMARK_NAMES, (512, 512), tmp_path / "o.json", image_path="o.dcm",
                       status="ok", plausibility=float("nan"), score=float("nan"))
    doc = json.loads(ok.read_text())
    assert doc["flags"] == {"flagged": False}
    assert doc[LABELME_DETECTION_KEY] == {"status": "ok", "reason": "", "plausibility": None, "score": None}
    assert import_annotations(tmp_path)["case_id"].tolist() == ["f", "o"]  # the importer ignores the extras


def test_labelme_writer_errors_name_the_file_and_write_nothing(tmp_path):
    def write(points=POINTS, names=LANDMARK_NAMES, size=(512, 512), image_path="x.png"):
        return write_labelme(points, names, size, tmp_path / "x.json", image_path=image_path)

    with pytest.raises(AnnotationError, match=r"x\.json: expected 16 points .* got shape \(15, 2\)"):
        write(points=POINTS[:15])
    with pytest.raises(AnnotationError, match=r"x\.json: unknown point name\(s\): T12; missing point\(s\): t"):
        write(names=[*LANDMARK_NAMES[:-1], "T12"])
    with pytest.raises(AnnotationError, match=r"x\.json: point\(s\) given more than once: cervical"):
        write(points=np.vstack([POINTS, POINTS[:1]]), names=[*LANDMARK_NAMES, "cervical"])
    with pytest.raises(AnnotationError, match=r"x\.json: non-finite coordinates for rib_l_2$"):
        write(points=np.where(np.arange(16)[:, None] == 7, np.nan, POINTS))
    with pytest.raises(AnnotationError, match=r"x\.json: image size must be positive, got 0x512"):
        write(size=(0, 512))
    with pytest.raises(AnnotationError, match=r"x\.json: imagePath must be a bare file name, got 'site/x"):
        write(image_path="site/x.png")
    assert list(tmp_path.iterdir()) == []


def test_labelme_file_names_follow_the_image_and_never_collide(tmp_path):
    assert labelme_stem("a/chest_01.DCM") == "chest_01" and labelme_stem("b/scan.jpeg") == "scan"
    assert labelme_stem("1.2.840.113619.2.1.7") == "1.2.840.113619.2.1.7"  # a UID name keeps its last part
    assert labelme_paths(["a/x.png", "b/y.dcm"], tmp_path) == [tmp_path / "x.json", tmp_path / "y.json"]
    with pytest.raises(AnnotationError, match=r"^a/x\.png and b/X\.dcm: both would be written to .*/x\.json"):
        labelme_paths(["a/x.png", "a/z.png", "b/X.dcm"], tmp_path)  # one file on case-insensitive disks
