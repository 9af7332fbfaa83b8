"""Twin acquisition: exposure, vendor processing, collimation and burned-in marks."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from bmd.inputs.twin.acquisition import (
    blur,
    burn_in,
    draw_acquisition,
    expose,
    process,
    shutter_mask,
    upsample,
)
from bmd.inputs.twin.spec import TwinSpec


def _acq(**changes):
    return dataclasses.replace(draw_acquisition(np.random.default_rng(0), TwinSpec()), **changes)


def test_fast_blur_agrees_with_a_gaussian_filter():
    x = ndimage.gaussian_filter(np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32), 3)
    for sigma in (1.0, 6.0, 12.0):
        exact = ndimage.gaussian_filter(x, sigma, mode="nearest")
        inner = (slice(32, -32), slice(32, -32))
        assert np.abs(blur(x, sigma) - exact)[inner].max() < 0.1 * np.abs(exact[inner]).max() + 1e-3, sigma
    assert upsample(np.ones((4, 4), np.float32), 8).shape == (32, 32)


def test_exposure_shows_attenuation_as_brightness():
    A = np.zeros((128, 128), np.float32)
    A[40:80, 40:80] = 1.0
    log = expose(A, _acq(heel=0.0, scatter=0.2), np.random.default_rng(0))
    assert log[50:70, 50:70].mean() > log[5:25, 5:25].mean() + 0.3


def test_processing_is_a_plain_window_when_switched_off_and_bounded_always():
    log = np.linspace(0, 3, 128 * 128, dtype=np.float32).reshape(128, 128)
    field = np.ones_like(log, bool)
    plain = process(log, _acq(mce_power=1.0, unsharp=0.0, sigmoid=0.0, gamma=1.0), field)
    lo, hi = np.percentile(log.ravel()[::7], [0.5, 99.7])
    assert np.allclose(plain, np.clip((log - lo) / (hi - lo), 0, 1), atol=1e-3)
    rng = np.random.default_rng(3)
    noisy = log + 0.1 * rng.standard_normal(log.shape).astype(np.float32)
    for _ in range(5):
        out = process(noisy, draw_acquisition(rng, TwinSpec()), field)
        assert out.min() >= 0 and out.max() <= 1 and np.isfinite(out).all()


def test_equalisation_lifts_weak_detail_relative_to_strong_edges():
    rng = np.random.default_rng(4)
    image = 0.02 * rng.standard_normal((128, 128)).astype(np.float32)
    image[:, 64:] += 1.0  # one strong edge beside weak texture
    field = np.ones((128, 128), bool)

    def edge_over_texture(acq) -> float:
        out = process(image, acq, field)
        hp = out - ndimage.gaussian_filter(out, 1.0)
        return float(np.abs(hp[:, 62:66]).mean() / np.abs(hp[:, 10:50]).mean())

    off = edge_over_texture(_acq(mce_power=1.0, unsharp=0.0, sigmoid=0.0, gamma=1.0))
    on = edge_over_texture(_acq(mce_power=0.55, unsharp=0.0, sigmoid=0.0, gamma=1.0))
    assert on < 0.7 * off, (on, off)


def test_marks_are_burned_into_corners_and_shutters_cover_the_edges():
    x = np.full((256, 256), 0.3, np.float32)
    acq = _acq(marker_corner=0, text_corner=3, shutters=(0.05, 0.0, 0.0, 0.1))
    out = burn_in(x, acq, np.random.default_rng(0))
    changed = np.argwhere(out != x)
    assert len(changed) > 0
    centre = changed[(changed[:, 0] > 64) & (changed[:, 0] < 192) & (changed[:, 1] > 64) & (changed[:, 1] < 192)]
    assert len(centre) == 0  # marks stay in the corners, never over the anatomy
    mask = shutter_mask(256, acq)
    assert not mask[:, :12].any() and mask[:, 14:].any() and not mask[-25:].any() and mask[:230].any()
