"""ROI geometry and crops: rotation, placement, mirroring, non-square images."""

from __future__ import annotations

import numpy as np
import pytest

from bmd.rois import LOCAL_NAMES, ROI_NAMES, crop_boxes, crop_rois, roi_boxes
from bmd.twin.render import canonical_landmarks


def _points(width: int = 200, height: int = 200) -> np.ndarray:
    """The twin's canonical landmarks scaled into an image (a plausible upright chest)."""
    p = canonical_landmarks(1.0)
    return p * np.array([width, height]) - 0.5


def _rotate(points: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return (points - centre) @ np.array([[c, s], [-s, c]]) + centre


def test_seven_boxes_in_fixed_order_all_square():
    boxes = roi_boxes(_points(), (200, 200))
    assert tuple(boxes) == ROI_NAMES
    for box in boxes.values():
        assert abs(np.hypot(*box.u) - 1) < 1e-9 and abs(np.hypot(*box.v) - 1) < 1e-9
        assert abs(box.u @ box.v) < 1e-9


def test_rotating_the_image_rotates_the_boxes():
    pts = _points()
    centre = np.array([99.5, 99.5])
    angle = np.deg2rad(12)
    a, b = roi_boxes(pts, (200, 200)), roi_boxes(_rotate(pts, angle, centre), (200, 200))
    for name in LOCAL_NAMES:
        assert np.allclose(_rotate(a[name].centre[None], angle, centre)[0], b[name].centre, atol=1e-6)
        assert b[name].half == pytest.approx(a[name].half)
        turned = np.arctan2(b[name].v[1], b[name].v[0]) - np.arctan2(a[name].v[1], a[name].v[0])
        assert np.isclose(np.angle(np.exp(1j * turned)), angle, atol=1e-6), name


@pytest.mark.parametrize("shape", [(200, 200), (160, 240), (260, 180)])
def test_a_marker_in_the_box_lands_at_the_expected_crop_pixel(shape):
    h, w = shape
    pts = _points(min(h, w), min(h, w)) + np.array([(w - min(h, w)) / 2, (h - min(h, w)) / 2])
    box = roi_boxes(pts, shape)["lumbar"]
    image = np.zeros(shape, np.float32)
    # a bright dot at crop coordinates (0.5, -0.5) in [-1, 1]²: right of centre, above it
    target = box.centre + box.half * (0.5 * box.u - 0.5 * box.v)
    x, y = np.round(target).astype(int)
    image[y - 1:y + 2, x - 1:x + 2] = 1.0
    crop = crop_boxes(image, [box], 32)[0].numpy()
    iy, ix = np.unravel_index(np.argmax(crop), crop.shape)
    assert abs(ix - 23.5) <= 2 and abs(iy - 7.5) <= 2


def test_right_crops_are_mirrored_into_the_left_orientation():
    pts = _points()
    yy, xx = np.mgrid[:200, :200]
    image = (np.sin(xx / 7.0) * np.cos(yy / 5.0) + 1 + 0.3 * (np.abs(xx - 99.5) < 60)).astype(np.float32) / 2.6
    image = (image + image[:, ::-1]) / 2  # left/right symmetric about the midline
    _, local = crop_rois(image, pts, 32, 64)
    names = list(LOCAL_NAMES)
    for a, b in (("clavi_l", "clavi_r"), ("ribcage_l", "ribcage_r")):
        assert np.allclose(local[names.index(a)], local[names.index(b)], atol=1e-4), a


def test_chest_is_letterboxed_not_distorted():
    image = np.ones((100, 200), np.float32)
    chest, _ = crop_rois(image, _points(100, 100) + np.array([50, 0]), 16, 64)
    rows = chest.mean(axis=1)
    assert rows[:14].max() < 0.05 and rows[-14:].max() < 0.05  # padding above and below
    assert rows[20:44].min() > 0.95  # the image, full width


def test_degenerate_landmarks_are_refused():
    pts = _points()
    pts[-1] = pts[-2]  # T12 on the cervical point
    with pytest.raises(ValueError, match="degenerate"):
        roi_boxes(pts, (200, 200))
    with pytest.raises(ValueError, match="16 finite"):
        roi_boxes(np.full((16, 2), np.nan), (200, 200))
