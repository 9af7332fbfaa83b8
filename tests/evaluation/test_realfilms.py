"""Real radiographs as the yardstick: roles, spectra and slopes, histograms, lung boxes, rib-margin distance."""

from __future__ import annotations

import numpy as np
import pytest

from bmd.columns import LANDMARK_NAMES
from bmd.evaluation import realfilms


def _power_law_noise(beta: float, n: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spectrum = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) * f ** (-beta / 2)
    return np.real(np.fft.ifft2(spectrum))


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_the_slope_of_power_law_noise_is_recovered(beta):
    spacing = 0.5  # mm: 1 cycle/mm Nyquist, the slope band well inside
    slopes = [realfilms.spectral_slope(*realfilms.radial_power_spectrum(_power_law_noise(beta, seed=s), spacing))
              for s in range(3)]
    assert abs(np.mean(slopes) + beta) < 0.3, slopes


def test_spectrum_frequencies_follow_the_spacing():
    noise = _power_law_noise(2.0)
    f1, _ = realfilms.radial_power_spectrum(noise, 1.0)
    f2, _ = realfilms.radial_power_spectrum(noise, 0.5)
    assert np.isclose(f2.max(), 2 * f1.max()) and f1.max() <= 0.5


def test_histogram_is_a_distribution_of_the_normalised_image():
    image = np.random.default_rng(1).uniform(10, 20, (64, 64))
    hist = realfilms.intensity_histogram(image, bins=16)
    assert hist.shape == (16,) and np.isclose(hist.sum(), 1) and (hist > 0.03).all()


def _points() -> np.ndarray:
    p = {"cervical": (100, 40), "t12": (100, 160)}
    for tag, side in (("l", 1), ("r", -1)):
        for k in range(1, 5):
            p[f"rib_{tag}_{k}"] = (100 + side * (40 + 5 * k), 50 + 25 * k)
        for j, name in enumerate(("medial", "mid", "lateral")):
            p[f"clav_{tag}_{name}"] = (100 + side * (10 + 20 * j), 45)
    return np.array([p[n] for n in LANDMARK_NAMES], dtype=float)


def test_lung_boxes_lie_between_the_spine_and_the_rib_margin_of_each_side():
    (rx0, ry0, rx1, ry1), (lx0, ly0, lx1, ly1) = realfilms.lung_boxes(_points())
    assert 50 < rx0 < rx1 < 100 - 10 and 100 + 10 < lx0 < lx1 < 150
    assert (ry0, ry1) == (75, 125) and (ly0, ly1) == (75, 125)


def test_rib_margin_distance_is_measured_to_the_contour_of_the_same_side():
    pts = _points()
    # each lung contour a vertical line 3 px lateral to its side's rib points' x at k = 2 (a closed thin box)
    right = np.array([[47, 0], [47, 300], [46, 300], [46, 0]], dtype=float)
    left = np.array([[153, 0], [153, 300], [154, 300], [154, 0]], dtype=float)
    out = realfilms.rib_margin_distance(pts, {"r": right, "l": left}, width_px=200)
    # rib x at k = 1..4: 55, 50, 45, 40 from the midline → distances 8, 3, 1, 6 (the box's far edge is 1 px away)
    assert np.isclose(out["max"], 100 * 8 / 200) and np.isclose(out["mean"], 100 * (8 + 3 + 1 + 6) / 4 / 200)
    swapped = realfilms.rib_margin_distance(pts, {"r": left, "l": right}, width_px=200)
    assert swapped["mean"] > 10 * out["mean"]


def test_every_listed_real_file_is_present_in_the_real_data_folder(realdata):
    found = realfilms.available_files(realdata)
    assert {f.relative for f in found} == set(realfilms.ROLES)
    assert sum(f.role == "chest" for f in found) == 5
    for contour in realfilms.CHEXMASK_CONTOURS.values():
        assert realfilms.read_contour(realdata / contour).shape[1] == 2


def test_no_files_without_the_folder(tmp_path):
    assert realfilms.available_files(None) == [] and realfilms.available_files(tmp_path / "absent") == []
