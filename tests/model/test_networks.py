"""Backbones, ROI and multi-ROI models: shapes, widths, the 8-term loss and masking."""

import pytest
import torch

from bmd.model.networks import BACKBONES, MultiROIModel, ROIModel, build_backbone, masked_mse, multi_roi_loss


@pytest.mark.parametrize("name", BACKBONES)
def test_backbones_scale_with_width_and_pool_to_a_vector(name):
    torch.manual_seed(0)
    bb = build_backbone(name, width=0.125, batch_norm=True)
    full = {"vgg11": 512, "vgg16": 512, "resnet18": 512, "resnet34": 512, "resnet50": 2048}[name]
    assert bb.out_features == full // 8
    assert bb(torch.rand(2, 1, 64, 64)).shape == (2, bb.out_features)


def test_roi_model_averages_paired_crops():
    torch.manual_seed(0)
    model = ROIModel(build_backbone("vgg11", width=0.125)).eval()
    a, b = torch.rand(3, 1, 1, 32, 32), torch.rand(3, 1, 1, 32, 32)
    with torch.no_grad():
        pair = model(torch.cat([a, b], dim=1))
        assert pair.shape == (3, 4)
        assert torch.allclose(pair, (model(a) + model(b)) / 2, atol=1e-6)


def test_multi_roi_one_batch_equals_two_passes():
    torch.manual_seed(0)
    model = MultiROIModel(build_backbone("vgg11", width=0.125), n_rois=7).eval()
    chest, local = torch.rand(2, 1, 32, 32), torch.rand(2, 6, 1, 32, 32)
    with torch.no_grad():
        out = model(chest, local)
        assert out.per_roi.shape == (2, 7, 4) and out.joint.shape == (2, 4)
        f_chest = model.backbone(chest)
        assert torch.allclose(out.per_roi[:, 0], model.roi_head(f_chest), atol=1e-5)
        small = model(torch.rand(2, 1, 48, 48), local)  # chest of another size: still works
        assert small.joint.shape == (2, 4)


def test_loss_is_the_mean_of_eight_masked_mses():
    torch.manual_seed(0)
    model = MultiROIModel(build_backbone("vgg11", width=0.125))
    out = model(torch.rand(4, 1, 32, 32), torch.rand(4, 6, 1, 32, 32))
    target = torch.randn(4, 4)
    target[1, 2] = float("nan")  # excluded vertebra
    valid = torch.isfinite(target)
    by_hand = [((out.per_roi[:, i] - target.nan_to_num())[valid] ** 2).mean() for i in range(7)]
    by_hand.append(((out.joint - target.nan_to_num())[valid] ** 2).mean())
    assert torch.allclose(multi_roi_loss(out, target), torch.stack(by_hand).mean())
    assert masked_mse(torch.ones(2, 4), torch.full((2, 4), float("nan"))).item() == 0.0
    multi_roi_loss(out, target).backward()
    assert model.backbone.features[0].weight.grad is not None


def test_local_weights_file_loads_and_a_wrong_one_is_refused(tmp_path):
    torch.manual_seed(0)
    src = build_backbone("resnet18", width=0.125)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = build_backbone("resnet18", width=0.125, weights=tmp_path / "w.pt")
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(src.eval()(x), dst.eval()(x))
    torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no matching backbone weights"):
        build_backbone("resnet18", width=0.125, weights=tmp_path / "bad.pt")


def test_multi_roi_keeps_chest_and_local_batch_norm_statistics_apart():
    """Chest and local crops differ in size and content: each pass keeps its own running statistics,
    so evaluation normalises each input the way training did."""
    from bmd.model.networks import StreamBatchNorm2d

    torch.manual_seed(0)
    model = MultiROIModel(build_backbone("vgg11", width=0.125, batch_norm=True))
    norms = [m for m in model.modules() if isinstance(m, StreamBatchNorm2d)]
    assert norms and not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    chest, local = torch.rand(4, 1, 48, 48) * 0.2, 0.5 + torch.rand(4, 6, 1, 32, 32) * 0.5
    model.train()
    model(chest, local)
    first = norms[0]
    assert not torch.allclose(first.running_mean, first.running_mean_1)  # two different inputs, two averages
    model.eval()
    with torch.no_grad():
        feats = model.features(chest, local)
        torch.testing.assert_close(feats[:, 0], model.backbone(chest, stream=0))
        torch.testing.assert_close(feats[:, 1:].flatten(0, 1), model.backbone(local.flatten(0, 1), stream=1))
        assert not torch.allclose(feats[:, 1], model.backbone(local[:, 0], stream=0))
    # a state dict saved before the split (one set of statistics) still loads
    old = {k: v for k, v in model.state_dict().items() if not k.endswith(("running_mean_1", "running_var_1"))}
    again = MultiROIModel(build_backbone("vgg11", width=0.125, batch_norm=True))
    again.load_state_dict(old)
    torch.testing.assert_close(again.backbone.features[1].running_mean_1, again.backbone.features[1].running_mean)


def test_zero_init_residual_starts_every_block_as_the_identity():
    from torchvision.models import resnet as tv_resnet

    bb = build_backbone("resnet50", width=0.125, zero_init_residual=True)
    blocks = [m for m in bb.modules() if isinstance(m, tv_resnet.Bottleneck)]
    assert blocks and all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in blocks)
    plain = build_backbone("resnet18", width=0.125)
    assert all(float(b.bn2.weight.detach().abs().sum()) > 0 for b in plain.modules() if isinstance(b, tv_resnet.BasicBlock))


def _attention_model(**kw):
    from bmd.model.networks import AttentionROIModel

    torch.manual_seed(0)
    return AttentionROIModel(build_backbone("vgg11", width=0.125, **kw))


def test_attention_model_shapes_and_attention_over_the_seven_rois():
    model = _attention_model(batch_norm=True).eval()
    chest, local = torch.rand(3, 1, 48, 48), torch.rand(3, 6, 1, 32, 32)  # two streams, as in the CPU profiles
    with torch.no_grad():
        out = model(chest, local)
    assert out.per_roi.shape == (3, 7, 4) and out.joint.shape == (3, 4)
    assert model.d_model == 64 and model.d_model % 4 == 0
    for rollout in (False, True):
        att = model.attention(chest, local, rollout=rollout)
        assert att.shape == (3, 4, 7)
        assert torch.allclose(att.sum(dim=-1), torch.ones(3, 4), atol=1e-5) and (att >= 0).all()
    # the readout with weights is the same computation as the fast path without them
    with torch.no_grad():
        assert torch.allclose(model.joint_from_features(model.features(chest, local)), out.joint, atol=1e-5)


def test_attention_model_shares_the_multi_roi_feature_path():
    from bmd.model.networks import AttentionROIModel, MultiROIModel

    torch.manual_seed(0)
    multi = MultiROIModel(build_backbone("vgg11", width=0.125, batch_norm=True)).eval()
    attn = AttentionROIModel(build_backbone("vgg11", width=0.125, batch_norm=True)).eval()
    attn.backbone.load_state_dict(multi.backbone.state_dict())  # per-stream statistics included
    chest, local = torch.rand(2, 1, 48, 48), torch.rand(2, 6, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(multi.features(chest, local), attn.features(chest, local))


def test_attention_model_trains_one_step_through_the_multi_roi_loss():
    model = _attention_model(batch_norm=True).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    chest, local, target = torch.rand(4, 1, 32, 32), torch.rand(4, 6, 1, 32, 32), torch.randn(4, 4)
    target[0, 1] = float("nan")
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss = multi_roi_loss(model(chest, local), target)
    assert torch.isfinite(loss)
    loss.backward()
    # every parameter gets a gradient: no unused parameter (DDP would need find_unused_parameters)
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
    for name in ("readout", "roi_embedding", "project.weight", "head.weight", "roi_head.weight"):
        assert not torch.equal(before[name], dict(model.named_parameters())[name]), name


def test_attention_model_knows_which_region_is_which():
    """Without the identity embeddings the attention is blind to order: permuting the local ROIs'
    features leaves the output unchanged; with them, it changes it. (Features, not crops: an untrained
    narrow VGG maps every crop to nearly the same feature.)"""
    model = _attention_model().eval()
    feats = torch.randn(2, 7, model.backbone.out_features)
    perm = torch.tensor([0, 2, 1, 4, 3, 6, 5])  # chest stays; left/right and neighbours swap
    with torch.no_grad():
        assert not torch.allclose(model.joint_from_features(feats), model.joint_from_features(feats[:, perm]),
                                  atol=1e-4)
        model.roi_embedding.zero_()
        assert torch.allclose(model.joint_from_features(feats), model.joint_from_features(feats[:, perm]),
                              atol=1e-5)


def test_build_multi_roi_refuses_unknown_kinds():
    from bmd.model.networks import AttentionROIModel, MultiROIModel, build_multi_roi

    bb = build_backbone("vgg11", width=0.125)
    assert isinstance(build_multi_roi("attention", bb), AttentionROIModel)
    assert isinstance(build_multi_roi("multi_roi", build_backbone("vgg11", width=0.125)), MultiROIModel)
    with pytest.raises(ValueError, match="unknown multi-ROI model kind"):
        build_multi_roi("roi", bb)
