"""Training data helpers: the per-crop augmentation."""

from __future__ import annotations

import torch

from bmd.data import Augment


def _crops() -> torch.Tensor:
    return torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(1))


def test_zero_draws_leave_crops_unchanged():
    crops = _crops()
    torch.testing.assert_close(Augment().apply(crops, torch.zeros(3, 5)), crops, atol=1e-5, rtol=0)


def test_a_positive_flip_draw_mirrors_left_to_right():
    crops = _crops()
    u = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]]).repeat(3, 1)
    torch.testing.assert_close(Augment().apply(crops, u), crops.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(Augment(flip=False).apply(crops, u), crops, atol=1e-5, rtol=0)


def test_draws_stay_within_the_configured_ranges():
    u = Augment().draw(1000, torch.Generator().manual_seed(0))
    assert u.shape == (1000, 5) and u.min() >= -1 and u.max() < 1
    assert u.std(dim=0).min() > 0.5  # uniform on [-1, 1): SD 0.577 per column
