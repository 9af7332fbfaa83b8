"""The graph landmark detector: model, loss, letterbox, left/right flips, augmentation, plausibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from bmd.columns import LANDMARK_NAMES, N_LANDMARKS
from bmd.landmarks.data import (
    FLIP_PERMUTATION,
    AugmentConfig,
    LandmarkAugment,
    RandomHorizontalFlipLR,
    flip_points,
    letterbox_image,
)
from bmd.landmarks.model import LandmarkNet, ModelConfig, landmark_loss, shape_features
from bmd.landmarks.plausibility import (
    LAYOUT_GRID,
    PATCH_GRID,
    PlausibilityDescriptorError,
    PlausibilityModel,
    image_descriptors,
    procrustes_residual,
)

torch.set_num_threads(2)

TINY = ModelConfig(input_size=64, width=8, channels=16, hidden=32, gcn_layers=2)


def _mean_shape() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(N_LANDMARKS, 2, generator=g) * 1.2 - 0.6


def _net(config: ModelConfig = TINY) -> LandmarkNet:
    torch.manual_seed(0)
    return LandmarkNet(config, _mean_shape())


# ------------------------------------------------------------------------------------------------- model


def test_forward_shapes_and_stages_start_at_mean_shape():
    net = _net().eval()
    out = net(torch.rand(3, 1, 64, 64))
    assert len(out.stages) == TINY.n_local + 1  # global + local stages
    for s in out.stages:
        assert s.shape == (3, N_LANDMARKS, 2)
        # zero-initialised heads: an untrained detector returns the mean training shape (DAG's start)
        torch.testing.assert_close(s, _mean_shape()[None].expand(3, -1, -1))
    assert out.affine.shape == (3, 2, 3)
    assert out.pooled.shape == (3, net.backbone.pooled_dim)


def test_bfloat16_autocast_reaches_the_backbone_only():
    net = _net().train()
    x = torch.rand(2, 1, 64, 64)
    seen = {}
    net.backbone.stem.register_forward_hook(lambda _m, _i, out: seen.update(stem=out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert seen["stem"] == torch.bfloat16  # the convolutions ran in bfloat16
    # every stage's points, the descriptor and the sampled features are float32 (coordinates unrounded)
    assert {s.dtype for s in out.stages} | {out.pooled.dtype, out.affine.dtype} == {torch.float32}
    landmark_loss(out.stages, torch.zeros(2, N_LANDMARKS, 2)).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert net.backbone.stem[0][0].weight.grad is not None and {g.dtype for g in grads} == {torch.float32}


def test_shape_features_are_displacements_to_all_nodes():
    p = torch.rand(2, N_LANDMARKS, 2)
    f = shape_features(p)
    assert f.shape == (2, N_LANDMARKS, 2 * N_LANDMARKS)
    torch.testing.assert_close(f[1, 3].view(N_LANDMARKS, 2), p[1] - p[1, 3])


def test_l1_loss_supervises_every_stage():
    target = torch.zeros(2, N_LANDMARKS, 2)
    stages = [torch.full_like(target, v) for v in (0.4, 0.2, 0.1, 0.1)]
    assert float(landmark_loss(stages, target)) == pytest.approx(0.2)

    net = _net().train()
    x, y = torch.rand(2, 1, 64, 64), torch.rand(2, N_LANDMARKS, 2) - 0.5
    landmark_loss(net(x).stages, y).backward()
    heads = [net.global_head[-1], *net.local_heads]
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in heads)
    # after one step the heads are no longer zero and the loss reaches every layer
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.step()
    opt.zero_grad()
    landmark_loss(net(x).stages, y).backward()
    # the adjacency is learned: a parameter with rows normalised to one
    for gcn in (net.global_gcn, *net.local_gcns):
        assert isinstance(gcn.adjacency, torch.nn.Parameter)
        torch.testing.assert_close(gcn.adjacency_matrix().sum(dim=1), torch.ones(N_LANDMARKS))
    assert all(
        g.adjacency.grad is not None and g.adjacency.grad.abs().sum() > 0
        for g in (net.global_gcn, *net.local_gcns)
    )
    assert net.backbone.stem[0][0].weight.grad.abs().sum() > 0


def test_model_config_round_trip_and_checks():
    assert ModelConfig.from_dict(TINY.as_dict()) == TINY
    with pytest.raises(ValueError, match="radii"):
        ModelConfig(n_local=2)
    with pytest.raises(ValueError, match="multiple of 32"):
        ModelConfig(input_size=100)


# ------------------------------------------------------------------------------------------ letterbox


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (256, 256), (899, 786)])
def test_letterbox_maps_points_with_the_image(shape):
    h, w = shape
    image = np.zeros(shape, np.float32)
    x, y = int(w * 0.3), int(h * 0.7)
    image[y - 3 : y + 4, x - 3 : x + 4] = 1.0  # a 7×7 blob centred on pixel (x, y)
    boxed, box = letterbox_image(image, 128)
    assert boxed.shape == (128, 128)
    yy, xx = np.mgrid[:128, :128]
    cx, cy = (boxed * xx).sum() / boxed.sum() + 0.5, (boxed * yy).sum() / boxed.sum() + 0.5  # continuous
    np.testing.assert_allclose(box.to_input(np.array([x, y])), [cx, cy], atol=0.3)
    p = np.array([[10.0, 20.0], [w - 1.0, h - 1.0]])
    np.testing.assert_allclose(box.from_normalised(box.to_normalised(p)), p, atol=1e-9)
    assert np.abs(box.to_normalised(np.array([[-0.5, -0.5], [w - 0.5, h - 0.5]]))).max() <= 1 + 1e-9


# ---------------------------------------------------------------------------------------- flip and augment


def test_flip_permutation_swaps_left_and_right_names():
    perm = np.array(FLIP_PERMUTATION)
    assert sorted(perm) == list(range(N_LANDMARKS))
    np.testing.assert_array_equal(perm[perm], np.arange(N_LANDMARKS))  # an involution
    name = dict(zip(LANDMARK_NAMES, (LANDMARK_NAMES[i] for i in perm), strict=True))
    assert name["clav_l_medial"] == "clav_r_medial" and name["rib_r_3"] == "rib_l_3"
    assert name["cervical"] == "cervical" and name["t12"] == "t12"


def test_flip_transform_moves_and_renames_points_and_is_an_involution():
    img = torch.rand(1, 40, 50)
    pts = torch.rand(N_LANDMARKS, 2) * torch.tensor([50.0, 40.0])
    flip = RandomHorizontalFlipLR(p=1.0)
    img1, kp1 = flip(tv_tensors.Image(img), tv_tensors.KeyPoints(pts, canvas_size=(40, 50)))
    torch.testing.assert_close(img1.as_subclass(torch.Tensor), img.flip(-1))
    left = LANDMARK_NAMES.index("clav_l_lateral")
    right = LANDMARK_NAMES.index("clav_r_lateral")
    # the flipped left clavicle point is now the right one, mirrored in x
    torch.testing.assert_close(kp1[right], torch.stack([50.0 - pts[left, 0], pts[left, 1]]))
    np.testing.assert_allclose(kp1.numpy(), flip_points(pts.numpy(), 50.0), atol=1e-5)
    img2, kp2 = flip(img1, kp1)
    torch.testing.assert_close(img2.as_subclass(torch.Tensor), img)
    torch.testing.assert_close(kp2.as_subclass(torch.Tensor), pts)


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_augmentation_moves_points_with_the_image(flip_p):
    """A dot drawn at a landmark stays under that landmark (renamed after a flip) through augmentation."""
    size = 96
    cfg = AugmentConfig(
        degrees=15,
        translate=0.08,
        scale=(0.85, 1.15),
        flip_p=flip_p,
        gamma=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
        noise_sigma=0.0,
        blur_p=0.0,
    )
    aug = LandmarkAugment(cfg)
    rng = np.random.default_rng(1)
    src = LANDMARK_NAMES.index("clav_l_medial")
    dst = LANDMARK_NAMES.index("clav_r_medial") if flip_p else src
    for seed in range(4):
        pts = torch.from_numpy(rng.uniform(30, 66, (N_LANDMARKS, 2))).float()
        yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        img = torch.exp(-((xx - pts[src, 0]) ** 2 + (yy - pts[src, 1]) ** 2) / (2 * 1.5**2))[None]
        torch.manual_seed(seed)
        out, moved = aug(img, pts)
        w = out[0] ** 4  # sharpen to the peak
        centroid = torch.stack([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
        assert torch.linalg.norm(centroid - moved[dst]) < 0.6, (seed, centroid, moved[dst])
        if flip_p == 0.0:
            assert torch.linalg.norm(moved - pts, dim=1).max() > 0.5  # it did move


def test_intensity_jitter_keeps_range_and_points():
    aug = LandmarkAugment(AugmentConfig(degrees=0, translate=0.0, scale=(1.0, 1.0), flip_p=0.0))
    pts = torch.rand(N_LANDMARKS, 2) * 64
    torch.manual_seed(0)
    out, moved = aug(torch.rand(1, 64, 64), pts)
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(moved, pts, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------ plausibility


def _films(rng: np.random.Generator, n: int, size: int = 64, odd: bool = False) -> np.ndarray:
    """(n, size, size) float images: two dark "lung fields" beside a bright middle, with a varying
    exposure, framing and noise; ``odd``: one dark field on top of a bright lower half instead."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        dx, dy, r = rng.normal(0, 0.04, 2).tolist() + [rng.uniform(0.3, 0.4)]
        if odd:
            dark = ((xx - dx) / 0.7) ** 2 + ((yy + 0.4 - dy) / r) ** 2 < 1
        else:
            dark = ((np.abs(xx - dx) - 0.45) / 0.28) ** 2 + ((yy - dy) / (1.5 * r)) ** 2 < 1
        img = np.where(dark, 0.25, 0.8) + rng.normal(0, 0.05, (size, size))
        out[i] = np.clip(rng.uniform(0.7, 1.0) * img + rng.uniform(-0.05, 0.1), 0, 1)
    return out


def test_image_descriptors_see_layout_not_windowing():
    rng = np.random.default_rng(0)
    images = _films(rng, 3)
    points = rng.uniform(-0.6, 0.6, (3, N_LANDMARKS, 2))
    layout, local, contrast = image_descriptors(images, points)
    assert layout.shape == (3, LAYOUT_GRID**2) and local.shape == (3, N_LANDMARKS * PATCH_GRID**2)
    assert np.allclose(contrast, images.reshape(3, -1).std(axis=1), atol=1e-6)  # the SD of the grey levels
    # a display window or gain (a·x + b, a > 0) does not change what the descriptors see
    layout2, local2, _ = image_descriptors(0.5 * images + 0.2, points)
    assert np.allclose(layout, layout2, atol=2e-3) and np.allclose(local, local2, atol=2e-3)
    # uint8 network inputs read like the same float images
    layout8, _, _ = image_descriptors(np.round(images * 255).astype(np.uint8), points)
    assert np.allclose(layout, layout8, atol=0.05)
    # moving one point changes its own samples only
    moved = points.copy()
    moved[:, 3] += 0.3
    _, local3, _ = image_descriptors(images, moved)
    per_point = np.abs(local3 - local).reshape(3, N_LANDMARKS, -1).max(axis=(0, 2))
    assert per_point[3] > 0.1 and np.delete(per_point, 3).max() == 0
    with pytest.raises(ValueError, match="2 images but 3"):
        image_descriptors(images[:2], points)


def test_plausibility_calibration_and_state_round_trip():
    rng = np.random.default_rng(0)
    mean_shape = rng.uniform(-0.6, 0.6, (N_LANDMARKS, 2))

    def batch(n, odd=False):
        return _films(rng, n, odd=odd), mean_shape + rng.normal(0, 0.01, (n, N_LANDMARKS, 2))

    model = PlausibilityModel(mean_shape)
    model.fit(*[model.features(*batch(n)) for n in (300, 300)])
    verdicts = model.score(model.features(*batch(600)))
    assert 0.95 < np.mean([v.status == "ok" for v in verdicts]) <= 1.0
    odd = model.features(*batch(20, odd=True))
    odd_verdicts = model.score(odd)
    assert all(
        v.status == "flagged" and "image content" in v.reason and v.plausibility < 0.01 for v in odd_verdicts
    )
    # a blank input (a black or uniform image) has no layout to compare: flagged outright, whatever the
    # points; standardised it would be all zeros, close enough to the average layout to pass
    flat = np.stack([np.zeros((64, 64)), np.full((64, 64), 0.6)]).astype(np.float32)
    blank = model.score(model.features(flat, np.repeat(mean_shape[None], 2, axis=0)))
    assert all(v.status == "flagged" and v.reason.startswith("blank image") and v.score > 1 for v in blank)
    state = model.state()
    again = PlausibilityModel.from_state(state)
    assert [v.score for v in again.score(odd)] == pytest.approx([v.score for v in odd_verdicts])
    # a model saved by an earlier version (other descriptors) is refused, never used on these
    with pytest.raises(PlausibilityDescriptorError, match="retrain the detector"):
        PlausibilityModel.from_state({k: v for k, v in state.items() if k != "descriptors"})


def test_procrustes_residual_ignores_pose():
    rng = np.random.default_rng(0)
    shape = rng.uniform(-0.5, 0.5, (N_LANDMARKS, 2))
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    posed = 0.8 * shape @ rot.T + np.array([0.1, -0.2])
    assert np.abs(procrustes_residual(posed[None], shape)).max() < 1e-9
