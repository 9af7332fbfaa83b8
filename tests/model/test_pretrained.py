"""Pretrained backbone weights: torchvision's layout mapped onto our backbones, the ImageNet file in the
local torch hub cache (never downloaded), one-line refusals, and one training step of every model of
the ``paper`` profile at full width."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from bmd.model.networks import build_backbone
from bmd.model.pretrained import (
    PretrainedWeightsError,
    imagenet_weights_file,
    imagenet_weights_path,
    torchvision_to_backbone,
)

TORCHVISION = {("vgg11", False): torchvision.models.vgg11, ("vgg11", True): torchvision.models.vgg11_bn,
               ("vgg16", False): torchvision.models.vgg16, ("vgg16", True): torchvision.models.vgg16_bn,
               ("resnet18", False): torchvision.models.resnet18, ("resnet34", False): torchvision.models.resnet34,
               ("resnet50", False): torchvision.models.resnet50}


def _torchvision_model(name: str, batch_norm: bool = False) -> nn.Module:
    """A torchvision model with random weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    model = TORCHVISION[(name, batch_norm)](weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # so that a batch norm loaded into the wrong place shows
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _torchvision_features(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """torchvision's pooled features: VGG ``features`` + global average pooling; ResNet up to ``avgpool``."""
    if name.startswith("vgg"):
        return model.features(x).mean(dim=(2, 3))
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


@pytest.mark.slow
@pytest.mark.parametrize("name, batch_norm", [("vgg11", False), ("vgg16", False), ("vgg11", True),
                                              ("resnet18", False), ("resnet34", False), ("resnet50", False)])
def test_a_torchvision_state_dict_gives_our_backbone_torchvisions_features(name, batch_norm, tmp_path):
    tv = _torchvision_model(name, batch_norm)
    path = tmp_path / "weights.pth"
    torch.save(tv.state_dict(), path)  # the whole model, classifier / fc included, as torchvision saves it
    ours = build_backbone(name, 1.0, batch_norm, weights=path).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = _torchvision_features(tv, name, x)
        got = ours(x)
    assert got.shape == expected.shape == (2, ours.out_features)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # grey input is the same image repeated to three channels
        torch.testing.assert_close(ours(x[:, :1]), _torchvision_features(tv, name, x[:, :1].expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-5)


def test_resnet_names_map_to_our_numbered_trunk():
    state = {"conv1.weight": torch.zeros(1), "bn1.running_mean": torch.zeros(1), "layer1.0.conv1.weight":
             torch.zeros(1), "layer4.1.downsample.0.weight": torch.zeros(1), "fc.weight": torch.zeros(1),
             "module.layer2.0.bn2.bias": torch.zeros(1)}
    assert set(torchvision_to_backbone(state, "resnet18")) == {
        "features.0.weight", "features.1.running_mean", "features.4.0.conv1.weight",
        "features.7.1.downsample.0.weight", "features.5.0.bn2.bias"}
    vgg = {"features.0.weight": torch.zeros(1), "classifier.0.weight": torch.zeros(1),
           "backbone.features.2.bias": torch.zeros(1), "head.weight": torch.zeros(1)}
    assert set(torchvision_to_backbone(vgg, "vgg16")) == {"features.0.weight", "features.2.bias"}


def test_imagenet_file_names_come_from_torchvisions_weights_enums():
    assert imagenet_weights_file("vgg16") == "vgg16-397923af.pth"
    assert imagenet_weights_file("vgg16", batch_norm=True) == "vgg16_bn-6c64b313.pth"
    assert imagenet_weights_file("resnet50") == "resnet50-0676ba61.pth"
    assert imagenet_weights_file("resnet50", batch_norm=True) == "resnet50-0676ba61.pth"  # ResNets have one kind
    assert imagenet_weights_path("vgg11") == Path(torch.hub.get_dir()) / "checkpoints" / "vgg11-8a719046.pth"


def test_imagenet_weights_are_read_from_the_hub_cache_and_a_missing_file_names_its_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(PretrainedWeightsError) as err:
        build_backbone("resnet18", weights="imagenet")
    message = str(err.value)
    assert "\n" not in message and str(expected) in message and "nothing is downloaded" in message
    assert not expected.exists()  # nothing was fetched
    expected.parent.mkdir(parents=True)
    tv = _torchvision_model("resnet18")
    torch.save(tv.state_dict(), expected)
    ours = build_backbone("resnet18", weights="imagenet").eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), _torchvision_features(tv, "resnet18", x), rtol=1e-4, atol=1e-5)


def test_foreign_weights_are_refused_in_one_line(tmp_path):
    torch.save(build_backbone("resnet18", width=1.0).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(PretrainedWeightsError, match=r"do not fit resnet18 at width 0.5: features.0.weight") as e:
        build_backbone("resnet18", width=0.5, weights=tmp_path / "r18.pt")
    assert "\n" not in str(e.value)
    torch.save(build_backbone("vgg16", width=0.125).state_dict(), tmp_path / "v16.pt")
    with pytest.raises(PretrainedWeightsError, match=r"not vgg11 weights \(\d+ tensor\(s\) missing") as e:
        build_backbone("vgg11", width=0.125, weights=tmp_path / "v16.pt")
    assert "\n" not in str(e.value)
    with pytest.raises(PretrainedWeightsError, match="not vgg16_bn weights"):
        build_backbone("vgg16", width=0.125, batch_norm=True, weights=tmp_path / "v16.pt")
    with pytest.raises(PretrainedWeightsError, match="no such weights file"):
        build_backbone("vgg16", weights=tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="unreadable weights file") as e:
        build_backbone("vgg16", weights=tmp_path / "junk.pth")
    assert "\n" not in str(e.value)


def test_the_paper_profile_asks_for_imagenet_weights_and_the_cpu_profiles_do_not(tmp_path):
    from bmd.study.config import load_profile
    from bmd.study.experiments import ModelSpec, train_config

    for name, expected in (("paper", "imagenet"), ("quick", None), ("smoke", None)):
        cfg = train_config(ModelSpec("multi_roi"), load_profile(name), tmp_path / "c", tmp_path / "m.csv", tmp_path)
        assert cfg.pretrained == expected, name


def test_training_refuses_to_start_without_the_imagenet_file(tmp_path, monkeypatch):
    from bmd.study.config import load_profile
    from bmd.study.experiments import ModelSpec, train_config, train_model

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = train_config(ModelSpec("roi", "resnet50", "chest"), load_profile("paper"), tmp_path / "cache",
                       tmp_path / "m.csv", tmp_path / "runs")
    with pytest.raises(PretrainedWeightsError, match=r"put torchvision's resnet50-0676ba61.pth at .*checkpoints"):
        train_model(cfg)
    assert not (tmp_path / "runs").exists()  # nothing started


@pytest.mark.slow
def test_one_training_step_of_every_paper_model_at_full_width(tmp_path):
    """Forward, the model's loss, backward and an optimiser step of each model the paper profile trains
    (Table 1's five backbones, Table 2's ROI models and the multi-ROI VGG-16) at full width, on tiny
    inputs: a shape error shows here, not on the GPU. Random initialisation: the ImageNet files are not
    on test machines (their loading is checked above)."""
    from bmd.model.dataset import select_family
    from bmd.model.networks import MULTI_ROI_KINDS, masked_mse, multi_roi_loss
    from bmd.model.train import build_model
    from bmd.study.config import load_profile
    from bmd.study.experiments import BACKBONES_TABLE1, all_models, train_config

    profile = load_profile("paper")
    assert profile.train_width == 1.0
    specs = all_models()
    assert {s.backbone for s in specs if s.model == "roi" and s.family == "chest"} == set(BACKBONES_TABLE1)
    assert any(s.model == "multi_roi" and s.backbone == "vgg16" for s in specs)
    torch.manual_seed(0)
    chest, local = torch.rand(2, 1, 32, 32), torch.rand(2, 6, 1, 32, 32)
    target = torch.randn(2, 4)
    target[1, 3] = float("nan")  # an excluded vertebra, as in real manifests
    for spec in specs:
        cfg = dataclasses.replace(train_config(spec, profile, tmp_path / "cache", tmp_path / "m.csv", tmp_path),
                                  pretrained=None)
        assert cfg.width == 1.0
        model = build_model(cfg).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
        before = [p.detach().clone() for p in model.parameters()]
        if cfg.model in MULTI_ROI_KINDS:
            out = model(chest, local)
            assert out.joint.shape == (2, 4)
            loss = multi_roi_loss(out, target)
        else:
            pred = model(select_family(chest, local, cfg.family))
            assert pred.shape == (2, 4)
            loss = masked_mse(pred, target)
        assert torch.isfinite(loss), spec.name
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()), spec.name
        optimizer.step()
        assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
