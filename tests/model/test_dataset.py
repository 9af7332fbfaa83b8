"""Training data helpers: the per-crop augmentation."""

from __future__ import annotations

import torch

from bmd.model.dataset import Augment


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


def test_exact_geometry_moves_whole_pixels_and_never_interpolates():
    """Training crops keep the sharpness of evaluation crops: every output pixel is an input pixel."""
    crops = _crops()
    u = Augment().draw(3, torch.Generator().manual_seed(5))
    u[:, 2:4] = torch.tensor([[0.4, -0.7], [0.9, 0.2], [-0.3, 0.6]])  # shifts of several pixels
    out = Augment().apply(crops, u)
    for c, o in zip(crops, out, strict=True):
        nearest = (o.flatten()[:, None] - c.flatten()[None]).abs().min(dim=1).values
        assert float(nearest.max()) < 1e-5  # nothing blended


def test_affine_geometry_blurs_fine_texture_and_exact_does_not():
    """Why 'exact' is the default: a bilinear warp lowers a pixel-scale texture's energy; exact keeps it."""
    gen = torch.Generator().manual_seed(0)
    texture = torch.rand(64, 1, 32, 32, generator=gen)
    u = Augment().draw(64, gen)

    def energy(x: torch.Tensor) -> float:
        return float((x - x.mean(dim=(-2, -1), keepdim=True)).pow(2).mean())

    exact = Augment(geometry="exact").apply(texture, u)
    affine = Augment(geometry="affine").apply(texture, u)
    assert abs(energy(exact) / energy(texture) - 1) < 0.02
    assert energy(affine) / energy(texture) < 0.8


def test_unknown_geometry_is_refused():
    import pytest

    with pytest.raises(ValueError, match="geometry"):
        Augment(geometry="warp")
