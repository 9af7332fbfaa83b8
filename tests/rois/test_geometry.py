"""ROI geometry and crops: conventions, rotation, placement, mirroring, letter-boxing, anti-aliasing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from images import chest_points, texture  # tests/ is on sys.path under pytest

from bmd.columns import LANDMARK_NAMES, LOCAL_NAMES, ROI_NAMES
from bmd.rois.crop import crop_boxes, crop_rois, crop_rois_batch
from bmd.rois.draw import draw_roi_gallery, draw_rois
from bmd.rois.geometry import (
    MIRRORED,
    ROI_FAMILIES,
    RoiGeometry,
    body_scale,
    chest_box,
    local_boxes,
    roi_boxes,
)


def rotate(points: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    """Rotate pixel points by ``angle`` (radians, the usual matrix in pixel coordinates) about ``centre``."""
    c, s = np.cos(angle), np.sin(angle)
    return (points - centre) @ np.array([[c, -s], [s, c]]).T + centre


def test_names_families_and_order():
    assert ROI_NAMES == ("chest", "cervi", "clavi_l", "clavi_r", "ribcage_l", "ribcage_r", "lumbar")
    assert ROI_NAMES[1:] == LOCAL_NAMES
    assert sorted(n for names in ROI_FAMILIES.values() for n in names) == sorted(ROI_NAMES)
    assert list(ROI_FAMILIES) == ["chest", "cervi", "clavi", "ribcage", "lumbar"]
    assert tuple(roi_boxes(chest_points(), (128, 128))) == ROI_NAMES


def test_one_orientation_convention_and_one_aspect_ratio():
    pts = chest_points()
    boxes = local_boxes(pts)
    s = body_scale(pts)
    for name, box in boxes.items():
        assert np.isclose(np.linalg.norm(box.u), 1) and np.isclose(np.linalg.norm(box.v), 1)
        assert abs(box.u @ box.v) < 1e-12
        assert box.width == pytest.approx(box.height)  # all square
        assert box.v @ [0, 1] > 0.8, name  # crop "down" = caudal
        lateral = -1 if name.endswith("_r") else 1  # crop "right" = lateral (image left for the right side)
        assert lateral * box.u[0] > 0.8, name
        assert box.mirrored == (name in MIRRORED)
        assert box.width == pytest.approx({"cervi": 0.30, "lumbar": 0.30, "clavi": 0.50, "ribcage": 0.60}[
            name.split("_")[0]] * s)
    # clavicle box along the medial→lateral chord; rib-cage box moved medially of the margin points
    chord = pts[LANDMARK_NAMES.index("clav_l_lateral")] - pts[LANDMARK_NAMES.index("clav_l_medial")]
    assert np.allclose(boxes["clavi_l"].u, chord / np.linalg.norm(chord))
    ribs = pts[[LANDMARK_NAMES.index(f"rib_l_{k}") for k in range(1, 5)]]
    assert boxes["ribcage_l"].centre[0] < ribs[:, 0].mean()
    assert boxes["ribcage_r"].centre[0] > pts[[LANDMARK_NAMES.index(f"rib_r_{k}") for k in range(1, 5)], 0].mean()


def test_boxes_scale_with_the_body_and_geometry_is_a_parameter():
    pts = chest_points()
    small, big = local_boxes(pts), local_boxes(pts * 2)
    for name in LOCAL_NAMES:
        assert big[name].width == pytest.approx(2 * small[name].width)
        assert np.allclose(big[name].centre, 2 * small[name].centre)
    wide = local_boxes(pts, RoiGeometry(lumbar=0.5))
    assert wide["lumbar"].width == pytest.approx(0.5 * body_scale(pts))
    with pytest.raises(ValueError, match="positive"):
        RoiGeometry(clavi=0)


@pytest.mark.parametrize("degrees", [-25.0, 8.0, 90.0, 180.0])
def test_rotating_the_landmarks_rotates_the_boxes(degrees):
    shape = (96, 128)
    pts = chest_points(shape)
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    theta = np.deg2rad(degrees)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    before, after = local_boxes(pts), local_boxes(rotate(pts, theta, centre))
    for name in LOCAL_NAMES:
        a, b = before[name], after[name]
        assert np.allclose(b.centre, rotate(a.centre[None], theta, centre)[0], atol=1e-9), name
        assert np.allclose(b.u, rot @ a.u, atol=1e-9) and np.allclose(b.v, rot @ a.v, atol=1e-9), name
        assert b.width == pytest.approx(a.width) and b.mirrored == a.mirrored
        assert (b.angle - a.angle - degrees + 180) % 360 == pytest.approx(180), name


@pytest.mark.parametrize("shape", [(128, 128), (96, 128), (128, 90)])
def test_crops_of_an_exactly_rotated_image_are_unchanged(shape):
    # np.rot90 is exact: pixel (x, y) moves to (y, W − 1 − x); the boxes follow the landmarks
    image = texture(shape)
    pts = chest_points(shape)
    turned = np.rot90(image).copy()
    turned_pts = np.stack([pts[:, 1], shape[1] - 1 - pts[:, 0]], axis=1)
    a = crop_rois(image, pts, 24, 32)
    b = crop_rois(turned, turned_pts, 24, 32)
    assert np.allclose(a.local, b.local, atol=1e-5)


@pytest.mark.parametrize("shape", [(128, 128), (96, 128), (128, 96)])
@pytest.mark.parametrize("name", LOCAL_NAMES)
def test_a_marker_lands_at_the_expected_crop_pixel(shape, name):
    size = 32
    box = local_boxes(chest_points(shape))[name]
    ab = np.array([0.5, -0.25])  # right of centre (lateral for paired bones), above it (cranial)
    target = box.to_image(ab)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.exp(-((xx - target[0]) ** 2 + (yy - target[1]) ** 2) / (2 * 1.5**2)).astype(np.float32)
    crop = crop_boxes(image, [box], size)[0]
    rows, cols = np.mgrid[:size, :size]
    found = np.array([(crop * cols).sum(), (crop * rows).sum()]) / crop.sum()
    expected = (ab + 1) * size / 2 - 0.5  # (column, row) with pixel centres at integers
    assert np.allclose(found, expected, atol=0.3), (found, expected)
    assert np.allclose(box.to_crop_pixels(target, size), expected)


@pytest.mark.parametrize("shape", [(128, 128), (96, 128), (96, 127)])
def test_right_crops_are_mirrored_into_the_left_orientation(shape):
    image = texture(shape, seed=3)
    image = (image + image[:, ::-1]) / 2  # left/right symmetric about x = (W − 1) / 2
    crops = crop_rois(image, chest_points(shape), 24, 32)
    for family in ("clavi", "ribcage"):
        left, right = crops[f"{family}_l"], crops[f"{family}_r"]
        assert np.abs(left - right).max() < 1e-5, family
    # and on an asymmetric image they differ (the test above is not vacuous)
    crops = crop_rois(texture(shape, seed=3), chest_points(shape), 24, 32)
    assert np.abs(crops["clavi_l"] - crops["clavi_r"]).max() > 0.05


@pytest.mark.parametrize("shape", [(96, 128), (128, 96)])
def test_chest_is_letterboxed_keeping_its_aspect(shape):
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    image = (np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2) < 40).astype(np.float32) * 0.5 + 0.5
    chest = crop_rois(image, chest_points(shape), 16, 64).chest
    inside = chest > 0.75  # the disc
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 1  # a circle, not an ellipse
    band = round((max(shape) - min(shape)) / 2 * 64 / max(shape))  # black padding, in chest pixels
    edge = chest[:band - 1] if h < w else chest[:, :band - 1]
    assert edge.max() < 1e-6
    body = chest[band + 1 : 64 - band - 1] if h < w else chest[:, band + 1 : 64 - band - 1]
    assert body.min() > 0.45
    box = chest_box(shape)
    assert box.width == max(shape) and np.allclose(box.corners()[0], [-0.5 - (max(shape) - w) // 2,
                                                                        -0.5 - (max(shape) - h) // 2])


def test_large_boxes_are_area_averaged_not_aliased():
    shape = (128, 128)
    stripes = np.tile(np.array([0.0, 1.0], np.float32), (shape[0], shape[1] // 2))  # period 2 px
    box = local_boxes(chest_points(shape))["ribcage_l"]
    assert box.width / 8 > 4  # each output pixel covers > 4 image pixels
    smooth = crop_boxes(stripes, [box], 8)[0]
    aliased = crop_boxes(stripes, [box], 8, max_supersample=1)[0]
    inside = np.s_[2:-2, 2:-2]
    assert abs(smooth[inside].mean() - 0.5) < 0.05 and smooth[inside].std() < 0.05
    assert aliased[inside].std() > 3 * smooth[inside].std()


def test_batched_crops_equal_single_crops_for_mixed_sizes():
    shapes = [(96, 128), (128, 128), (96, 128)]
    images = [texture(s, seed=i) for i, s in enumerate(shapes)]
    pts = np.stack([rotate(chest_points(s), 0.1 * i, np.array([40.0, 50.0])) for i, s in enumerate(shapes)])
    batch = crop_rois_batch(images, pts, 16, 24)
    assert batch.local.shape == (3, 6, 16, 16) and batch.chest.shape == (3, 24, 24)
    for i in range(3):
        one = crop_rois(images[i], pts[i], 16, 24)
        assert np.array_equal(one.local, batch.local[i]) and np.array_equal(one.chest, batch.chest[i])
    stacked = crop_rois_batch(np.stack([images[0], images[2]]), pts[[0, 2]], 16, 24)
    assert np.array_equal(stacked.local, batch.local[[0, 2]])


def test_torch_in_torch_out_and_named_access():
    image = texture((96, 128))
    pts = chest_points((96, 128))
    a = crop_rois(image, pts, 16, 24)
    b = crop_rois(torch.from_numpy(image), torch.from_numpy(pts), 16, 24)
    assert isinstance(a.local, np.ndarray) and a.local.dtype == np.float32
    assert isinstance(b.local, torch.Tensor) and np.allclose(b.local.numpy(), a.local)
    chest, local = a
    assert chest is a.chest and np.array_equal(a["ribcage_r"], local[LOCAL_NAMES.index("ribcage_r")])
    assert list(a.as_dict()) == list(ROI_NAMES)


def test_bad_landmarks_are_refused():
    pts = chest_points()
    with pytest.raises(ValueError, match="finite"):
        local_boxes(np.where(np.arange(16)[:, None] == 3, np.nan, pts))
    with pytest.raises(ValueError, match="shape"):
        local_boxes(pts[:15])
    same = pts.copy()
    same[LANDMARK_NAMES.index("t12")] = same[LANDMARK_NAMES.index("cervical")]
    with pytest.raises(ValueError, match="degenerate"):
        local_boxes(same)
    same = pts.copy()
    for k in range(2, 5):
        same[LANDMARK_NAMES.index(f"rib_r_{k}")] = same[LANDMARK_NAMES.index("rib_r_1")]
    with pytest.raises(ValueError, match="rib-cage"):
        local_boxes(same)


def test_drawing_helpers():
    image = texture((96, 128))
    pts = chest_points((96, 128))
    ax = draw_rois(image, pts)
    assert len(ax.lines) >= 7 * 1 + 6 * 2
    crops = crop_rois(image, pts, 16, 24)
    for arg in (crops, crops.as_dict()):
        fig = draw_roi_gallery(arg, title="case")
        assert [a.get_title().split(" ")[0] for a in fig.axes] == list(ROI_NAMES)
    assert len(draw_roi_gallery(crops.chest, crops.local).axes) == 7
    import matplotlib.pyplot as plt

    plt.close("all")
