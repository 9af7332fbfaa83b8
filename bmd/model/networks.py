"""Backbones, the ROI model and the multi-ROI model of the paper.

A backbone is a torchvision feature extractor followed by global average pooling; it turns a batch of
grey crops (N, 1, H, W) into features (N, D). Grey is repeated to three channels, as in the paper.
``width`` scales every layer's channels (1.0 = the paper's full width; the CPU profiles use less).
Weights are random unless a local weights file is given; nothing is ever downloaded.

* :class:`ROIModel` — one backbone on one ROI family → BMD of L1–L4. Paired families (clavicles,
  rib cages) pass both crops through the backbone; the two predictions are averaged.
* :class:`MultiROIModel` — the 7 ROIs through the same backbone, a shared FC on each ROI's feature
  (7 predictions), an FC on the concatenated features (the joint prediction, the model's output);
  training loss = mean of the 8 MSEs (:func:`multi_roi_loss`).
* :class:`AttentionROIModel` — beyond the paper: the follow-up's anatomy-aware attention over the ROIs
  (Wang et al., arXiv:2201.01838) in place of the concatenation and joint FC; same inputs, same output
  type, same loss.

**Batch norm and the two kinds of input.** When the whole chest and the local crops differ in size
(the CPU profiles) they go through the shared backbone in two passes. A plain batch-norm layer would
normalise each pass with its own batch statistics in training but keep *one* running average of
both at evaluation, a mixture neither pass ever saw: every prediction then shifts (measured: +0.09
g/cm² mean bias of the multi-ROI model). The multi-ROI model therefore gives each batch-norm layer
one set of running statistics per input stream (chest, local crops), sharing the learned scale and
shift (:class:`StreamBatchNorm2d`); the convolutions stay shared, as in the paper. Backbones without
batch norm (the paper's VGG) are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

from bmd.model.pretrained import load_backbone_weights

BACKBONES: tuple[str, ...] = ("vgg11", "vgg16", "resnet18", "resnet34", "resnet50")
N_VERTEBRAE = 4

_VGG_CFG = {"vgg11": "A", "vgg16": "D"}
_RESNET = {"resnet18": (tv_resnet.BasicBlock, [2, 2, 2, 2]), "resnet34": (tv_resnet.BasicBlock, [3, 4, 6, 3]),
           "resnet50": (tv_resnet.Bottleneck, [3, 4, 6, 3])}


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width)))


class Backbone(nn.Module):
    """A feature extractor with global average pooling: (N, 1, H, W) → (N, ``out_features``)."""

    def __init__(self, name: str, width: float = 1.0, batch_norm: bool = False, zero_init_residual: bool = False):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}: expected one of {', '.join(BACKBONES)}")
        self.name, self.width = name, width
        if name.startswith("vgg"):
            cfg = [v if v == "M" else _scaled(int(v), width) for v in tv_vgg.cfgs[_VGG_CFG[name]]]
            self.features = tv_vgg.make_layers(cfg, batch_norm=batch_norm)
            self.out_features = cfg[-2]
        else:
            self.features, self.out_features = _resnet_trunk(name, width, zero_init_residual)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor, stream: int = 0) -> Tensor:
        """Features (N, D); ``stream`` picks the batch-norm statistics of :class:`StreamBatchNorm2d` layers."""
        for m in self.modules():
            if isinstance(m, StreamBatchNorm2d):
                m.stream = stream
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grey → 3 channels, as in the paper
        return self.pool(self.features(x)).flatten(1)

    @property
    def has_batch_norm(self) -> bool:
        """Whether any layer is a batch norm (whose statistics depend on what passes through it)."""
        return any(isinstance(m, nn.BatchNorm2d) for m in self.modules())

    def split_batch_norm(self, streams: int) -> None:
        """Give every batch-norm layer ``streams`` sets of running statistics (see the module docstring)."""
        _replace_batch_norm(self, streams)


class StreamBatchNorm2d(nn.BatchNorm2d):
    """Batch norm with one set of running statistics per input stream and one shared affine transform.

    Stream 0 uses the ordinary buffers (so its state-dict keys are those of ``BatchNorm2d``); stream
    ``s`` ≥ 1 uses ``running_mean_s``/``running_var_s``. The module's ``stream`` attribute, set by
    :meth:`Backbone.forward`, selects them. A state dict without the extra buffers (a model saved
    before the split) loads with stream 0's statistics copied into the others.
    """

    def __init__(self, num_features: int, streams: int = 2, **kwargs):
        super().__init__(num_features, **kwargs)
        self.streams, self.stream = streams, 0
        for s in range(1, streams):
            self.register_buffer(f"running_mean_{s}", torch.zeros(num_features))
            self.register_buffer(f"running_var_{s}", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if self.stream == 0:
            return super().forward(x)
        mean, var = getattr(self, f"running_mean_{self.stream}"), getattr(self, f"running_var_{self.stream}")
        return nn.functional.batch_norm(x, mean, var, self.weight, self.bias, self.training, self.momentum,
                                        self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for s in range(1, self.streams):
            for name in ("running_mean", "running_var"):
                if f"{prefix}{name}_{s}" not in state_dict and f"{prefix}{name}" in state_dict:
                    state_dict[f"{prefix}{name}_{s}"] = state_dict[f"{prefix}{name}"].clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def _replace_batch_norm(module: nn.Module, streams: int) -> None:
    """Swap every ``BatchNorm2d`` below ``module`` for a :class:`StreamBatchNorm2d` with the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, StreamBatchNorm2d):
            new = StreamBatchNorm2d(child.num_features, streams, eps=child.eps, momentum=child.momentum,
                                    affine=child.affine, track_running_stats=child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            _replace_batch_norm(child, streams)


def _resnet_trunk(name: str, width: float, zero_init_residual: bool = False) -> tuple[nn.Module, int]:
    """A torchvision ResNet trunk (everything before pooling) with every stage's width scaled."""
    block, layers = _RESNET[name]
    inplanes = _scaled(64, width)
    stem = [nn.Conv2d(3, inplanes, 7, 2, 3, bias=False), nn.BatchNorm2d(inplanes), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1)]
    stages = []
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        planes = _scaled(planes, width)
        stride = 1 if i == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        stage = [block(inplanes, planes, stride, downsample)]
        inplanes = planes * block.expansion
        stage += [block(inplanes, planes) for _ in range(1, blocks)]
        stages.append(nn.Sequential(*stage))
    trunk = nn.Sequential(*stem, *stages)
    for m in trunk.modules():  # torchvision's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if zero_init_residual:
        # each residual branch starts as zero, so every block starts as the identity (Goyal et al. 2017):
        # deep, narrow ResNets then train from the first step instead of drifting (measured: ResNet-50 at
        # 1/8 width, R 0.08 without)
        for m in trunk.modules():
            if isinstance(m, tv_resnet.Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, tv_resnet.BasicBlock):
                nn.init.zeros_(m.bn2.weight)
    return trunk, inplanes


def build_backbone(name: str, width: float = 1.0, batch_norm: bool = False,
                   weights: str | Path | None = None, zero_init_residual: bool = False) -> Backbone:
    """A backbone by name; ``weights`` is an optional local state-dict file (never a download).

    ``zero_init_residual``: ResNets start every residual branch at zero (no effect on VGGs).
    """
    backbone = Backbone(name, width, batch_norm, zero_init_residual)
    if weights is not None:

        load_backbone_weights(backbone, weights)
    return backbone


class ROIModel(nn.Module):
    """One backbone on one ROI family: crops (B, K, 1, H, W) → BMD (B, 4); K crops averaged."""

    def __init__(self, backbone: Backbone, n_outputs: int = N_VERTEBRAE):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, n_outputs)

    def forward(self, crops: Tensor) -> Tensor:
        b, k = crops.shape[:2]
        pred = self.head(self.backbone(crops.flatten(0, 1)))
        return pred.view(b, k, -1).mean(dim=1)


@dataclass
class MultiROIOutput:
    """Per-ROI predictions (B, 7, 4) and the joint prediction (B, 4), the model's output."""

    per_roi: Tensor
    joint: Tensor


class _SharedBackboneROIs(nn.Module):
    """The part every multi-ROI model shares: the 7 ROIs through one backbone (per-stream batch norm)."""

    def __init__(self, backbone: Backbone, n_rois: int = 7):
        super().__init__()
        self.backbone = backbone
        self.n_rois = n_rois
        # chest and local crops keep their own batch-norm statistics (decided once, not per forward)
        self.two_streams = backbone.has_batch_norm
        if self.two_streams:
            backbone.split_batch_norm(2)

    def features(self, chest: Tensor, local: Tensor) -> Tensor:
        """ROI features (B, 7, D): chest first, then the local ROIs in their fixed order."""
        b = chest.shape[0]
        if chest.shape[-2:] == local.shape[-2:] and not self.two_streams:
            # all 7 ROIs through the backbone as one batch (nothing in it depends on the batch)
            rois = torch.cat([chest.unsqueeze(1), local], dim=1)
            return self.backbone(rois.flatten(0, 1)).view(b, self.n_rois, -1)
        # two passes through the same backbone, each with its own batch-norm statistics
        f_chest = self.backbone(chest, stream=0).unsqueeze(1)
        f_local = self.backbone(local.flatten(0, 1), stream=1).view(b, self.n_rois - 1, -1)
        return torch.cat([f_chest, f_local], dim=1)

    def joint_from_features(self, feats: Tensor) -> Tensor:
        """The model's output (B, 4) from ROI features (B, 7, D) (what ROI ablation swaps blocks of)."""
        raise NotImplementedError

    def forward(self, chest: Tensor, local: Tensor) -> MultiROIOutput:
        feats = self.features(chest, local)
        return MultiROIOutput(per_roi=self.roi_head(feats), joint=self.joint_from_features(feats))


class MultiROIModel(_SharedBackboneROIs):
    """The paper's multi-ROI model: shared backbone, shared per-ROI FC, joint FC on concatenated features."""

    def __init__(self, backbone: Backbone, n_rois: int = 7, n_outputs: int = N_VERTEBRAE):
        super().__init__(backbone, n_rois)
        self.roi_head = nn.Linear(backbone.out_features, n_outputs)  # shared by the 7 ROIs
        self.joint_head = nn.Linear(n_rois * backbone.out_features, n_outputs)

    def joint_from_features(self, feats: Tensor) -> Tensor:
        """The joint FC on the concatenated ROI features."""
        return self.joint_head(feats.flatten(1))


#: The anatomical identity of each ROI token, in ``bmd.columns.ROI_NAMES`` order (one learned embedding each).
ROI_IDENTITIES: tuple[str, ...] = ("chest", "cervical spine", "clavicle left", "clavicle right", "rib cage left",
                                   "rib cage right", "T12")


def attention_width(backbone_features: int, heads: int = 4) -> int:
    """d_model of the ROI attention: the backbone width clipped to [32, 256], a multiple of ``heads``."""
    d = min(max(int(backbone_features), 32), 256)
    return d - d % heads


class _ReadoutLayer(nn.Module):
    """A pre-norm transformer encoder layer whose keys and values are the ROI tokens only.

    Tokens are ``[readouts..., ROI tokens...]``. The ROI tokens attend to each other (an ordinary
    encoder over the 7 regions); each readout token attends to the ROI tokens but no token attends to
    a readout, so a readout's attention is a distribution over the 7 regions (it sums to 1) and the
    readouts cannot pass information between vertebrae behind the regions' backs.
    ``nn.TransformerEncoderLayer`` cannot return its attention weights, hence this small layer.
    """

    def __init__(self, d_model: int, heads: int, dropout: float, ff_mult: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, n_keys: int, n_queries: int | None = None, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        """Update the first ``n_queries`` tokens (all when None) from the last ``n_keys`` (the ROI tokens).

        Returns the updated queries and, when ``need_weights``, their attention (B, queries, n_keys)
        averaged over heads (computed only when asked: the fused kernel is used otherwise).
        """
        h = self.norm1(x)
        kv = h[:, -n_keys:]
        q_in = x if n_queries is None else x[:, :n_queries]
        q = h if n_queries is None else h[:, :n_queries]
        out, weights = self.attn(q, kv, kv, need_weights=need_weights, average_attn_weights=True)
        y = q_in + self.drop(out)
        return y + self.drop(self.ff(self.norm2(y))), weights


class AttentionROIModel(_SharedBackboneROIs):
    """Anatomy-aware attention over the 7 ROI features (after Wang et al., arXiv:2201.01838).

    The 7 crops go through one shared backbone exactly as in :class:`MultiROIModel` (same
    ``features``, per-stream batch norm included). Each ROI feature is projected to ``d_model`` and
    added to a learned embedding of its anatomical identity (:data:`ROI_IDENTITIES`): a token. One
    learned readout (query) token per vertebra L1–L4 joins them and a small pre-norm transformer
    (``layers`` × :class:`_ReadoutLayer`, ``heads`` heads, dropout) runs over the tokens; each readout
    token is read out by one shared linear head to its vertebra's (standardised) BMD, the joint output.

    The paper's auxiliary per-ROI losses are **kept**: the shared per-ROI FC on each ROI's backbone
    feature gives the 7 per-ROI predictions, so :func:`multi_roi_loss` (mean of 8 MSEs) trains this
    model unchanged. They make every region's feature carry BMD by itself, which the attention then
    weighs, and keep the comparison with the multi-ROI model about the fusion alone.

    ``d_model`` defaults to :func:`attention_width` of the backbone width.
    """

    def __init__(self, backbone: Backbone, n_rois: int = 7, n_outputs: int = N_VERTEBRAE,
                 d_model: int | None = None, layers: int = 2, heads: int = 4, dropout: float = 0.1):
        super().__init__(backbone, n_rois)
        d = d_model or attention_width(backbone.out_features, heads)
        self.d_model, self.n_outputs = d, n_outputs
        self.roi_head = nn.Linear(backbone.out_features, n_outputs)  # the paper's shared per-ROI FC (aux losses)
        self.project = nn.Linear(backbone.out_features, d)
        self.roi_embedding = nn.Parameter(torch.empty(n_rois, d))  # anatomical identity of each ROI token
        self.readout = nn.Parameter(torch.empty(n_outputs, d))  # one query token per vertebra
        # ViT's initialisation of learned tokens: small, so the projected features dominate at the start
        nn.init.trunc_normal_(self.roi_embedding, std=0.02)
        nn.init.trunc_normal_(self.readout, std=0.02)
        self.layers = nn.ModuleList(_ReadoutLayer(d, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)  # shared by the readout tokens: vertebra k's BMD from token k

    def _run(self, feats: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        b = feats.shape[0]
        tokens = self.project(feats) + self.roi_embedding
        x = torch.cat([self.readout.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        weights = []
        for i, layer in enumerate(self.layers):
            # the last layer's ROI tokens feed nothing: only the readouts are updated there
            last = i == len(self.layers) - 1
            x, w = layer(x, self.n_rois, self.n_outputs if last else None, need_weights)
            if need_weights:
                weights.append(w)
        return self.head(self.norm(x[:, :self.n_outputs])).squeeze(-1), weights

    def joint_from_features(self, feats: Tensor) -> Tensor:
        """BMD (B, 4, standardised) from the readout tokens after the ROI attention."""
        return self._run(feats)[0]

    @torch.no_grad()
    def attention(self, chest: Tensor, local: Tensor, rollout: bool = False) -> Tensor:
        """Each vertebra's readout attention over the 7 ROI tokens, (B, 4, 7), averaged over heads.

        Default: the last layer's weights (what the readout reads at the end; rows sum to 1). With
        ``rollout``: attention rollout over the layers (Abnar & Zuidema 2020, residual counted as one
        half), which also follows what the ROI tokens took from each other in earlier layers; rows are
        renormalised to sum to 1. Call in eval mode (dropout off).
        """
        return self.attention_from_features(self.features(chest, local), rollout)

    @torch.no_grad()
    def attention_from_features(self, feats: Tensor, rollout: bool = False) -> Tensor:
        """:meth:`attention` from ROI features (B, 7, D) already computed."""
        _, weights = self._run(feats, need_weights=True)
        q = self.n_outputs
        if not rollout:
            return weights[-1][:, :q].float()
        b = feats.shape[0]
        eye = torch.eye(self.n_rois, device=feats.device).expand(b, -1, -1)
        roi_mix = eye  # how much of each original ROI every ROI token holds
        read = torch.zeros(b, q, self.n_rois, device=feats.device)
        for w in weights:
            w = w.float()
            read = 0.5 * read + 0.5 * w[:, :q] @ roi_mix
            if w.shape[1] > q:  # not the last layer: the ROI tokens mixed too
                roi_mix = 0.5 * roi_mix + 0.5 * w[:, q:] @ roi_mix
        return read / read.sum(dim=-1, keepdim=True)


#: Model kinds whose forward takes (chest, local) and returns :class:`MultiROIOutput`.
MULTI_ROI_KINDS: tuple[str, ...] = ("multi_roi", "attention")


def build_multi_roi(kind: str, backbone: Backbone) -> _SharedBackboneROIs:
    """The multi-ROI model of a kind (``multi_roi`` or ``attention``) on a backbone."""
    if kind == "attention":
        return AttentionROIModel(backbone)
    if kind == "multi_roi":
        return MultiROIModel(backbone)
    raise ValueError(f"unknown multi-ROI model kind {kind!r}: expected one of {', '.join(MULTI_ROI_KINDS)}")


def masked_mse(pred: Tensor, target: Tensor) -> Tensor:
    """MSE over finite targets only (NaN = excluded vertebra); 0 when nothing is valid."""
    valid = torch.isfinite(target)
    if not valid.any():
        return pred.sum() * 0.0
    diff = (pred - torch.nan_to_num(target)) * valid
    return (diff**2).sum() / valid.sum()


def multi_roi_loss(out: MultiROIOutput, target: Tensor, loss: Callable[[Tensor, Tensor], Tensor] = masked_mse
                   ) -> Tensor:
    """The paper's loss: the mean of the 7 per-ROI MSEs and the joint MSE (8 terms)."""
    terms = [loss(out.per_roi[:, i], target) for i in range(out.per_roi.shape[1])]
    terms.append(loss(out.joint, target))
    return torch.stack(terms).mean()
