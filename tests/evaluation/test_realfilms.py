"""Real radiographs as the twin's yardstick: the film table, spectra and slopes, lung squares, the rib-margin
distance, plausibility counts and the ``realdata`` summary block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from images import chest_points  # tests/ is on sys.path under pytest

from bmd.columns import LANDMARK_NAMES
from bmd.evaluation import realfilms as rf
from bmd.io import read_image

INDEX = {n: i for i, n in enumerate(LANDMARK_NAMES)}


def power_law_noise(n: int, beta: float, seed: int = 0) -> np.ndarray:
    """An n × n image whose power spectrum falls as f^(−β) (white noise shaped in the Fourier domain)."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    f = np.hypot(fx, fy)
    f[0, 0] = np.inf  # no DC term
    return np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * f ** (-beta / 2)))


@pytest.mark.parametrize("beta", [1.5, 2.5, 3.5])
def test_the_slope_of_power_law_noise_is_minus_beta(beta):
    spacing = 0.5  # mm: the slope band 0.03–0.25 cycles/mm lies well inside 256 px (Nyquist 1 cycle/mm)
    slopes = [rf.spectral_slope(rf.radial_power_spectrum(power_law_noise(256, beta, seed), spacing))
              for seed in range(3)]
    assert np.mean(slopes) == pytest.approx(-beta, abs=0.15)


def test_the_radial_spectrum_puts_a_sinusoid_at_its_frequency_in_cycles_per_mm():
    n, spacing, cycles = 128, 0.25, 16  # 16 cycles across 32 mm: 0.5 cycles/mm
    x = np.arange(n)
    image = np.tile(np.sin(2 * np.pi * cycles * x / n), (n, 1))
    spec = rf.radial_power_spectrum(image, spacing)
    assert spec.frequency[0] == pytest.approx(1 / (n * spacing)) and spec.nyquist == pytest.approx(2.0)
    assert len(spec.frequency) == n // 2 and spec.frequency[-1] == pytest.approx(spec.nyquist)
    assert spec.frequency[np.argmax(spec.power)] == pytest.approx(cycles / (n * spacing))


def test_the_spectrum_ignores_a_plane_and_averages_patches_of_one_side():
    noise = power_law_noise(64, 2.0)
    yy, xx = np.mgrid[0:64, 0:64]
    plain = rf.radial_power_spectrum(noise, 1.0)
    tilted = rf.radial_power_spectrum(noise + 0.05 * xx - 0.02 * yy, 1.0)
    np.testing.assert_allclose(tilted.power, plain.power, rtol=1e-9)
    other = rf.radial_power_spectrum(2 * noise, 1.0)
    mean = rf.radial_power_spectrum([noise, 2 * noise], 1.0)
    np.testing.assert_allclose(mean.power, (plain.power + other.power) / 2)
    with pytest.raises(ValueError, match="one side"):
        rf.radial_power_spectrum([noise, noise[:32, :32]], 1.0)


def test_the_slope_band_narrows_to_what_the_square_and_its_pixels_allow():
    coarse = rf.radial_power_spectrum(power_law_noise(32, 2.0), 2.0)  # Nyquist 0.25, 64 mm across
    lo, hi = rf.slope_band(coarse)
    assert lo == pytest.approx(2 / 64) and hi == pytest.approx(0.8 * 0.25)
    assert rf.slope_band(rf.radial_power_spectrum(power_law_noise(256, 2.0), 0.5)) == rf.SLOPE_BAND_CYCLES_PER_MM
    tiny = rf.radial_power_spectrum(power_law_noise(8, 2.0), 1.5)
    assert np.isnan(rf.spectral_slope(tiny))  # fewer than MIN_SLOPE_BINS bins in the band


def test_images_are_normalised_by_their_own_percentiles_and_histograms_integrate_to_one():
    image = np.linspace(-3, 7, 10_000).reshape(100, 100)
    norm = rf.normalise_percentiles(image)
    assert norm.min() == 0 and norm.max() == 1 and np.mean(norm == 0) == pytest.approx(0.005, abs=0.001)
    assert not rf.normalise_percentiles(np.full((5, 5), 0.3)).any()
    centres, density = rf.intensity_histogram(norm)
    assert len(centres) == rf.HISTOGRAM_BINS and np.sum(density) / rf.HISTOGRAM_BINS == pytest.approx(1.0)


def test_a_spacing_is_the_headers_or_assumed_from_a_350_mm_field():
    assert rf.pixel_spacing_mm((0.2, 0.15), 1000) == (0.15, "header")
    assert rf.pixel_spacing_mm(None, 500) == (pytest.approx(0.7), "assumed")


def test_lung_squares_sit_between_spine_and_rib_margin_on_each_side():
    pts = chest_points((200, 240))
    squares = rf.lung_squares(pts, (200, 240))
    assert [s.side_name for s in squares] == ["left", "right"] and squares[0].side == squares[1].side >= 16
    left, right = squares
    spine = (pts[INDEX["cervical"], 0] + pts[INDEX["t12"], 0]) / 2
    assert right.x0 + right.side <= spine <= left.x0  # the patient's left lung is on the image's right
    assert left.x0 + left.side <= pts[INDEX["rib_l_2"], 0] and right.x0 >= pts[INDEX["rib_r_2"], 0]
    for sq in squares:
        assert pts[INDEX["clav_l_mid"], 1] <= sq.y0 and sq.y0 + sq.side <= pts[INDEX["rib_l_3"], 1] + 1
        assert sq.cut(np.zeros((200, 240))).shape == (sq.side, sq.side)
    assert rf.lung_squares(np.full((16, 2), np.nan), (200, 240)) == []
    assert rf.lung_squares(pts * 0.05, (200, 240)) == []  # a shape too small for a square


def test_the_distance_to_a_closed_polyline_counts_segments_and_the_closing_one():
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    points = np.array([[5.0, -2.0], [13.0, 5.0], [-1.0, 5.0], [5.0, 5.0], [12.0, 13.0]])
    dist, nearest = rf.nearest_on_polyline(points, square)
    np.testing.assert_allclose(dist, [2.0, 3.0, 1.0, 5.0, np.hypot(2, 3)])
    np.testing.assert_allclose(nearest[2], [0.0, 5.0])  # on the closing segment
    # without the closing segment the nearest point is the open end (0, 0)
    assert rf.polyline_distances(points[2:3], square, closed=False)[0] == pytest.approx(np.hypot(1, 5))


def test_rib_margin_distances_pair_each_side_with_its_own_lung_in_percent_of_width():
    pts = np.zeros((16, 2))
    right = np.array([[10.0, 10.0], [40.0, 10.0], [40.0, 90.0], [10.0, 90.0]])  # image left
    left = right + [50.0, 0.0]  # image right
    for k, y in enumerate((20, 40, 60, 80), start=1):
        pts[INDEX[f"rib_r_{k}"]] = (10.0 - k, y)  # k px outside the right lung's lateral edge
        pts[INDEX[f"rib_l_{k}"]] = (90.0 + 2 * k, y)  # 2k px outside the left lung's lateral edge
    table = rf.rib_margin_distances(pts, {"left": left, "right": right}, width=200)
    got = table.set_index("landmark")["distance_pct"]
    assert list(table["landmark"]) == [*rf.RIB_POINTS["left"], *rf.RIB_POINTS["right"]]
    assert got["rib_r_3"] == pytest.approx(1.5) and got["rib_l_4"] == pytest.approx(4.0)
    assert table["distance_pct"].mean() == pytest.approx((10 + 20) / 8 / 2)
    np.testing.assert_allclose(table[["nearest_x", "nearest_y"]].iloc[0], [90.0, 20.0])


def test_the_fraction_of_a_square_inside_its_lung():
    contour = {"left": np.array([[0.0, 0.0], [19.5, 0.0], [19.5, 40.0], [0.0, 40.0]])}
    assert rf.fraction_inside([rf.Square("left", 10, 10, 20)], contour) == pytest.approx(0.5)  # columns 10–19
    assert np.isnan(rf.fraction_inside([], contour))
    triangle = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    assert list(rf.inside_polygon([[1, 1], [6, 6], [4, 4], [-1, 2], [2, 11]], triangle)) == [True, False, True,
                                                                                              False, False]


def test_no_folder_lists_no_films(tmp_path):
    for folder in (None, tmp_path / "absent"):
        table = rf.film_table(folder)
        assert table.empty and list(table.columns) == ["file", "role", "what", "path"]
        assert rf.unlisted_files(folder) == [] and rf.read_chexmask_contours(folder) is None


def test_missing_files_are_left_out_and_unlisted_ones_found(tmp_path):
    (tmp_path / "torchxrayvision").mkdir()
    (tmp_path / "torchxrayvision" / "00000001_000.png").write_bytes(b"x")
    (tmp_path / "own.dcm").write_bytes(b"x")
    (tmp_path / "LICENSE").write_text("x")
    (tmp_path / "SOURCES.md").write_text("x")
    table = rf.film_table(tmp_path, roles=("chest",))
    assert list(table["file"]) == ["torchxrayvision/00000001_000.png"] and list(table["role"]) == ["chest"]
    assert rf.unlisted_files(tmp_path) == [tmp_path / "own.dcm"]


def test_swapped_chexmask_sides_are_refused(tmp_path):
    folder = tmp_path / "CheXmask-Database" / "Example"
    folder.mkdir(parents=True)
    np.savetxt(folder / "RL_landmarks.txt", [[600, 100], [700, 500], [650, 800]])
    np.savetxt(folder / "LL_landmarks.txt", [[100, 100], [200, 500], [150, 800]])
    with pytest.raises(ValueError, match="swapped"):
        rf.read_chexmask_contours(tmp_path)


def test_the_real_data_folder_holds_the_listed_films(realdata):
    table = rf.film_table(realdata)
    roles = table.groupby("role")["file"].apply(list).to_dict()
    assert len(roles["chest"]) == 5 and "pydicom-data/vlut_04.dcm" in roles["pattern"]
    assert {"pydicom-data/RG3_J2KR.dcm", "fo-dicom/GH133.dcm"} <= set(roles["non_chest"])
    assert all(p.is_file() for p in table["path"])
    assert rf.unlisted_files(realdata) == []  # everything there is listed (or documentation)
    contours = rf.read_chexmask_contours(realdata)
    image, _ = read_image(realdata / rf.CHEXMASK_IMAGE)
    for c in contours.values():  # contours are (x, y) pixels of that film
        assert c.shape[1] == 2 and (c[:, 0] < image.shape[1]).all() and (c[:, 1] < image.shape[0]).all()
    assert contours["right"][:, 0].mean() < image.shape[1] / 2 < contours["left"][:, 0].mean()


def _verdicts() -> pd.DataFrame:
    films = pd.DataFrame({"file": ["a.png", "b.png", "tibia.dcm", "pattern.dcm", "own.dcm"],
                          "role": ["chest", "chest", "non_chest", "pattern", rf.UNLISTED]})
    components = [{"appearance": 0.0, "local": -0.2, "shape": -0.5}, {"appearance": 0.4, "local": 0.1, "shape": 1.5},
                  {"appearance": 1.3, "local": 0.2, "shape": 0.3}, None, {"appearance": 0.1, "local": 0, "shape": 0}]
    return rf.plausibility_table(films, ["ok", "flagged", "flagged", "ok", "ok"], [0.5, 0.001, 0.002, 0.3, 0.4],
                                [0.0, 1.5, 1.3, 0.2, 0.1], components=components)


def test_the_components_of_each_verdict_and_the_worst_one():
    table = _verdicts()
    assert list(table["worst"]) == ["appearance", "shape", "appearance", "", "appearance"]
    assert np.isnan(table.loc[3, "shape"]) and table.loc[1, "shape"] == 1.5
    assert rf.worst_component_counts(table) == {"appearance": 1, "local": 0, "shape": 1}
    assert rf.worst_component_counts(table, "pattern") == {"appearance": 0, "local": 0, "shape": 0}


def test_the_components_are_the_detectors():
    plausibility = pytest.importorskip("bmd.landmarks.plausibility")
    assert rf.PLAUSIBILITY_COMPONENTS == plausibility.COMPONENTS


def test_thorax_aspect_is_height_over_width_and_free_of_position_and_scale():
    p = chest_points((400, 300))
    a = float(rf.thorax_aspect(p))
    top = (p[INDEX["clav_l_medial"], 1] + p[INDEX["clav_r_medial"], 1]) / 2
    width = abs(p[INDEX["rib_l_3"], 0] - p[INDEX["rib_r_3"], 0])
    assert a == pytest.approx((p[INDEX["t12"], 1] - top) / width)
    assert rf.thorax_aspect(2.5 * p + 40) == pytest.approx(a)
    taller = p.copy()
    taller[:, 1] *= 1.2
    assert rf.thorax_aspect(np.stack([p, taller])) == pytest.approx([a, 1.2 * a])
    flat = p.copy()
    flat[:, 0] = 0.0  # no width: no aspect, not an infinity
    assert np.isnan(rf.thorax_aspect(flat))


def test_spine_offset_is_the_cervical_point_off_the_clavicles_midline_over_the_cage_width():
    p = chest_points((400, 300))
    base = float(rf.spine_offset(p))
    mid = (p[INDEX["clav_l_medial"], 0] + p[INDEX["clav_r_medial"], 0]) / 2
    width = abs(p[INDEX["rib_l_3"], 0] - p[INDEX["rib_r_3"], 0])
    assert base == pytest.approx((p[INDEX["cervical"], 0] - mid) / width)
    rotated = p.copy()
    rotated[INDEX["cervical"], 0] = mid + 0.05 * width  # the spine projected to the image right
    assert float(rf.spine_offset(rotated)) == pytest.approx(0.05)
    assert rf.spine_offset(2.5 * rotated + 40) == pytest.approx(0.05)  # free of position and scale
    flat = p.copy()
    flat[:, 0] = 0.0
    assert np.isnan(rf.spine_offset(flat))
    c = rf.spine_offset_comparison(np.linspace(-0.03, 0.03, 101), {"a.png": -0.06, "b.png": 0.0})
    assert c["below_twin_p05"] == {"n": 1, "of": 2} and c["above_twin_p95"] == {"n": 0, "of": 2}
    assert c["real"]["b.png"] == {"offset": 0.0, "twin_percentile": pytest.approx(50.0, abs=1)}
    sentence = rf.shape_sentence(None, None, c)
    assert "spine offset" in sentence and "1 of 2 lie outside" in sentence


def test_aspect_comparison_places_real_films_in_the_twins_distribution():
    twin = np.linspace(0.5, 0.9, 101)
    c = rf.aspect_comparison([*twin, np.nan], {"a.png": 0.95, "b.png": 0.7, "c.png": np.nan})
    assert c["twin"]["n"] == 101 and c["twin"]["median"] == pytest.approx(0.7)
    assert c["twin"]["p95"] == pytest.approx(0.88) and c["twin"]["p05"] == pytest.approx(0.52)
    assert c["real"] == {"a.png": {"aspect": 0.95, "twin_percentile": 100.0},
                         "b.png": {"aspect": 0.7, "twin_percentile": pytest.approx(50.0, abs=1)}}
    assert c["above_twin_p95"] == {"n": 1, "of": 2} and c["below_twin_p05"] == {"n": 0, "of": 2}
    assert rf.aspect_comparison([], {"a.png": 0.9}) is None
    text = rf.shape_sentence(_verdicts(), c)
    assert "For 1 of 2 real chest films the largest part" in text
    assert "1 of 2 lie above the twin's 95th percentile" in text and "taller for their width" in text
    inside = rf.aspect_comparison(twin, {"b.png": 0.7})
    assert "all lie within" in rf.shape_sentence(None, inside)
    assert rf.shape_sentence(None, None) == ""


def test_plausibility_counts_and_sentence():
    table = _verdicts()
    assert list(table["expected"]) == ["ok", "ok", "flagged", "flagged", ""]
    assert list(table["as_expected"]) == [True, False, True, False, False]
    assert rf.plausibility_counts(table) == {"chest_pass": {"n": 1, "of": 2},
                                             "non_chest_flagged": {"n": 1, "of": 2}}
    text = rf.plausibility_sentence(table)
    assert text.startswith("The twin-trained detector passed 1 of 2 real chest films and flagged 1 of 2")
    assert "b.png (chest: flagged)" in text and "pattern.dcm (pattern: ok)" in text and "own.dcm" not in text
    with pytest.raises(ValueError, match="one verdict"):
        rf.plausibility_table(table[["file", "role"]], ["ok"], [0.5], [0.0])


def test_slope_summary_and_sentence():
    s = rf.slope_summary([-3.0, -3.2, np.nan, -3.4], [-2.5, -3.1, np.nan])
    assert s == {"twin": pytest.approx(-3.2), "real_min": -3.1, "real_max": -2.5, "twin_within_real": False}
    assert "outside the range" in rf.slope_sentence(s) and "steeper" in rf.slope_sentence(s)
    inside = rf.slope_summary([-2.8], [-2.5, -3.1])
    assert inside["twin_within_real"] is True and "within the range" in rf.slope_sentence(inside)
    assert rf.slope_summary([], []) == dict.fromkeys(("twin", "real_min", "real_max", "twin_within_real"))


BLOCK_KEYS = {"present", "chest_pass", "non_chest_flagged", "plausibility_score", "plausibility_components",
              "chest_worst_component", "chexmask_rib_margin_pct", "spectral_slope", "thorax_aspect",
              "spine_offset"}


def test_the_summary_block_is_null_without_real_films():
    block = rf.realdata_block(False, slopes=rf.slope_summary([-3.0], []))
    assert set(block) == BLOCK_KEYS and block["present"] is False
    assert all(block[k] is None for k in BLOCK_KEYS - {"present", "spectral_slope"})
    assert block["spectral_slope"] == {"twin": -3.0, "real_min": None, "real_max": None, "twin_within_real": None}
    assert rf.realdata_block(False)["spectral_slope"]["twin"] is None


def test_the_summary_block_with_real_films():
    rib = pd.DataFrame({"distance_pct": [1.0, 2.0, 6.0]})
    table = _verdicts()
    table.loc[4, "score"] = np.nan  # a film that failed to read has no score
    block = rf.realdata_block(True, table, rib, rf.slope_summary([-2.8], [-2.5, -3.1]))
    assert set(block) == BLOCK_KEYS and block["present"] is True
    assert block["chest_pass"] == {"n": 1, "of": 2} and block["non_chest_flagged"] == {"n": 1, "of": 2}
    assert block["plausibility_score"] == {"a.png": 0.0, "b.png": 1.5, "tibia.dcm": 1.3, "pattern.dcm": 0.2,
                                           "own.dcm": None}
    assert block["chexmask_rib_margin_pct"] == {"mean": 3.0, "max": 6.0}
    assert block["spectral_slope"]["twin_within_real"] is True
    assert block["plausibility_components"]["pattern.dcm"] is None
    assert block["plausibility_components"]["b.png"] == {"appearance": 0.4, "local": 0.1, "shape": 1.5}
    assert block["chest_worst_component"] == {"appearance": 1, "local": 0, "shape": 1}
    assert block["thorax_aspect"] is None and block["spine_offset"] is None
    spine = rf.spine_offset_comparison([-0.01, 0.0, 0.01], {"a.png": 0.05})
    assert rf.realdata_block(True, table, spine=spine)["spine_offset"]["real"] == {
        "a.png": {"offset": 0.05, "twin_percentile": 100.0}}
    aspect = rf.aspect_comparison([0.6, 0.7], {"a.png": 0.9})
    assert rf.realdata_block(True, table, aspect=aspect)["thorax_aspect"]["real"] == aspect["real"]
    assert rf.realdata_block(False, aspect=aspect)["thorax_aspect"] == {**aspect, "real": None,
                                                                         "above_twin_p95": None, "below_twin_p05": None}
