"""Another acquisition of the same film: framing, processing and noise change, the content does not."""

from __future__ import annotations

import numpy as np

from bmd.landmarks.acquisition import AcquisitionVariation, acquisition_draws, vary_acquisition
from bmd.landmarks.data import letterbox_image, to_uint8


def _film(rows: int = 96, cols: int = 64, size: int = 64):
    """A tall film (letterboxed with black bars left and right): a bright vertical bar on a grey field."""
    image = np.full((rows, cols), 0.4, dtype=np.float32)
    image[:, cols // 2 - 4 : cols // 2 + 4] = 0.9
    boxed, box = letterbox_image(image, size)
    return to_uint8(boxed), box


def test_draws_are_the_images_then_varied_copies_and_repeat_per_seed():
    image, box = _film()
    images = np.stack([image, image[:, ::-1].copy()])
    out = acquisition_draws(images, [box, box], draws=2, seed=3)
    assert out.shape == (6, 64, 64) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:2], images)  # the images as they are come first
    assert not np.array_equal(out[2], images[0]) and not np.array_equal(out[2], out[4])
    np.testing.assert_array_equal(out, acquisition_draws(images, [box, box], draws=2, seed=3))
    assert not np.array_equal(out, acquisition_draws(images, [box, box], draws=2, seed=4))
    assert acquisition_draws(images, [box, box], draws=0, seed=3).shape == (2, 64, 64)


def test_a_varied_film_stays_inside_its_letterbox_and_keeps_its_content():
    image, box = _film()
    rng = np.random.default_rng(0)
    for _ in range(5):
        varied = vary_acquisition(image, box, rng).astype(float)
        columns = varied.mean(axis=0)
        assert columns[:4].max() == 0 and columns[-4:].max() == 0  # the tall film keeps its black bars
        inside = columns[columns > 0]
        # the bright bar is still the brightest thing, near the middle of the film
        assert abs(int(np.argmax(columns)) - 32) <= 8 and inside.max() > 1.3 * np.median(inside)


def test_without_variation_ranges_a_draw_only_crops_nothing_and_keeps_the_grey_levels_order():
    image, box = _film()
    still = AcquisitionVariation(crop=0.0, gamma=(1.0, 1.0), unsharp=(0.0, 0.0), blur_p=0.0, noise=0.0)
    varied = vary_acquisition(image, box, np.random.default_rng(0), still)
    film = varied[:, box.pad[0] : box.pad[0] + box.resized[1]]
    # the display window stretches the grey levels; the bar stays brighter than the field everywhere
    assert (film[:, 20:24] > film[:, 2:6]).all()
    assert (varied[:, : box.pad[0]] == 0).all()
