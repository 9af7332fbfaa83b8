"""Pretrained backbone weights from local files: torchvision's ImageNet weights or a saved backbone.

``pretrained`` (a training config's field, the profile's ``train_pretrained``) is one of:

* ``None`` — random initialisation;
* ``"imagenet"`` — torchvision's standard ImageNet weights for the architecture (``IMAGENET1K_V1``;
  the ``_BN`` variant for VGG with batch norm), read from the local torch hub cache, where
  ``torchvision`` itself keeps them: ``torch.hub.get_dir()/checkpoints/<file>``, e.g.
  ``vgg16-397923af.pth`` or ``resnet50-0676ba61.pth``. **Nothing is ever downloaded**: a missing file is
  one line that names the exact path to put it at (copy it from a machine with internet access, or
  run ``torchvision.models.vgg16(weights="IMAGENET1K_V1")`` there once);
* a file path — a state dict in torchvision's layout (a whole torchvision model: its classifier /
  ``fc`` is ignored), or one of :class:`bmd.model.networks.Backbone` (or of a ROI / multi-ROI model, whose
  ``backbone.`` prefix is dropped).

Our backbones are numbered ``nn.Sequential`` trunks, so torchvision's names are mapped
(:func:`torchvision_to_backbone`): a VGG's ``features.N`` is ours unchanged (same layer list, with or
without batch norm); a ResNet's stem ``conv1``/``bn1`` becomes ``features.0``/``features.1`` and its
stage ``layerK`` becomes ``features.(3+K)`` (``downsample`` and everything inside a block keep their
names). Loading is strict: every tensor of the backbone must be in the file with the same shape, so a
file for another architecture, width (``width`` ≠ 1.0 for ImageNet weights) or batch-norm variant
is refused in one line (:class:`PretrainedWeightsError`) instead of half-loading.

ImageNet weights expect RGB input normalised with ImageNet's mean and SD; the backbones are fed grey
crops in [0, 1] repeated to three channels, as before. Fine-tuning adapts the first layers to that.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

IMAGENET = "imagenet"

#: torchvision's weights enum (in ``torchvision.models``) per backbone name and batch-norm variant
_WEIGHTS_ENUMS: dict[tuple[str, bool], str] = {
    ("vgg11", False): "VGG11_Weights", ("vgg11", True): "VGG11_BN_Weights",
    ("vgg16", False): "VGG16_Weights", ("vgg16", True): "VGG16_BN_Weights",
    ("resnet18", False): "ResNet18_Weights", ("resnet34", False): "ResNet34_Weights",
    ("resnet50", False): "ResNet50_Weights",
}
_RESNET_STEM = {"conv1.": "features.0.", "bn1.": "features.1."}
_RESNET_STAGE_OFFSET = 3  # layerK → features.(3+K): the stem is conv, bn, relu, maxpool (features.0..3)


class PretrainedWeightsError(ValueError):
    """Pretrained weights that cannot be used: a missing or foreign file. The message is one line."""


def _label(name: str, batch_norm: bool) -> str:
    return f"{name}_bn" if batch_norm and name.startswith("vgg") else name


def imagenet_weights_file(name: str, batch_norm: bool = False) -> str:
    """torchvision's file name of the ImageNet weights of a backbone (e.g. ``vgg16-397923af.pth``).

    Read from the url of torchvision's weights enum (``IMAGENET1K_V1``); nothing is downloaded.
    ResNets have no batch-norm variant (they always have batch norm), so ``batch_norm`` only picks
    VGG-BN.
    """
    import torchvision.models as tvm

    key = (name, bool(batch_norm) and name.startswith("vgg"))
    if key not in _WEIGHTS_ENUMS:
        raise PretrainedWeightsError(f"no ImageNet weights known for backbone {name!r}")
    url = getattr(tvm, _WEIGHTS_ENUMS[key]).IMAGENET1K_V1.url
    return url.rsplit("/", 1)[-1]


def imagenet_weights_path(name: str, batch_norm: bool = False) -> Path:
    """Where torchvision keeps (and we read) the ImageNet weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / imagenet_weights_file(name, batch_norm)


def resolve_weights(pretrained: str | os.PathLike, name: str, batch_norm: bool = False) -> Path:
    """The weights file that ``pretrained`` (``"imagenet"`` or a path) names, checked to exist.

    Raises :class:`PretrainedWeightsError` with one line: for ImageNet weights, the exact path to put
    torchvision's file at.
    """
    if str(pretrained).strip().lower() == IMAGENET:
        path = imagenet_weights_path(name, batch_norm)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"ImageNet weights for {_label(name, batch_norm)} not found: put torchvision's {path.name} at "
                f"{path} (nothing is downloaded)")
        return path
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: no such weights file")
    return path


def torchvision_to_backbone(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's (or our models') names mapped to :class:`bmd.model.networks.Backbone`'s.

    Drops ``module.`` (DDP) and ``backbone.`` (our ROI / multi-ROI models) prefixes and every tensor
    outside the trunk (torchvision's ``classifier``/``fc``, our heads). See the module docstring.
    """
    out: dict[str, torch.Tensor] = {}
    resnet = name.startswith("resnet")
    for key, value in state.items():
        k = key.removeprefix("module.").removeprefix("backbone.")
        if resnet:
            for old, new in _RESNET_STEM.items():
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            else:
                if k.startswith("layer") and k[5:6].isdigit() and k[6:7] == ".":
                    k = f"features.{_RESNET_STAGE_OFFSET + int(k[5])}.{k[7:]}"
        if k.startswith("features."):
            out[k] = value
    return out


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or pickled-code file raises zip, pickle or runtime errors alike
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise PretrainedWeightsError(f"{path}: unreadable weights file ({first[:160]})") from None
    if isinstance(state, dict):
        for wrapper in ("state_dict", "model"):  # common checkpoint layouts
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict of tensors")
    return state


def load_backbone_weights(backbone: nn.Module, pretrained: str | os.PathLike) -> Path:
    """Load ``pretrained`` (``"imagenet"`` or a file) into a :class:`bmd.model.networks.Backbone`; returns the file.

    Strict: the file must hold every tensor of the backbone, with the same shapes, and nothing else
    of the trunk. Raises :class:`PretrainedWeightsError` (one line) otherwise.
    """
    name = backbone.name
    batch_norm = any(isinstance(m, nn.BatchNorm2d) for m in backbone.features.modules()) and name.startswith("vgg")
    path = resolve_weights(pretrained, name, batch_norm)
    mapped = torchvision_to_backbone(_read_state(path), name)
    expected = backbone.state_dict()
    if not set(mapped) & set(expected):
        raise PretrainedWeightsError(f"{path}: no matching backbone weights for {_label(name, batch_norm)} "
                                     f"(missing {len(expected)} tensors)")
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    if missing or unexpected:
        first = missing[0] if missing else unexpected[0]
        raise PretrainedWeightsError(
            f"{path}: not {_label(name, batch_norm)} weights ({len(missing)} tensor(s) missing, {len(unexpected)} "
            f"unexpected, e.g. {first})")
    for key, value in expected.items():
        if tuple(mapped[key].shape) != tuple(value.shape):
            width = getattr(backbone, "width", None)
            raise PretrainedWeightsError(
                f"{path}: weights do not fit {_label(name, batch_norm)} at width {width}: {key} is "
                f"{tuple(mapped[key].shape)} in the file, {tuple(value.shape)} in the model")
    backbone.load_state_dict({k: mapped[k].to(expected[k].dtype) for k in expected}, strict=True)
    return path
