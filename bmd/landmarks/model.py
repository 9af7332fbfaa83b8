"""The graph landmark detector, after DAG (Li et al., ECCV 2020, "Structured Landmark Detection via
Topology-Adapting Deep Graph Learning").

Coordinates inside the network are *normalised letterbox coordinates*: the square network input spans
[-1, 1] in x and y (the ``grid_sample`` convention with ``align_corners=False``); see
:mod:`bmd.landmarks.data` for the map to original image pixels.

Architecture
------------
* **Backbone** (:class:`LandmarkBackbone`): four stride-2 stages of conv-BN-ReLU blocks (width ``w, 2w, 4w, 8w``)
  after a stride-2 stem, and a small top-down path (feature-pyramid style) that brings the deep, wide-context
  features back to stride ``feature_stride`` (4 by default) with ``channels`` channels. The input image is
  standardised per image first, so the detector does not depend on the window a file was stored with.
* **Graph** of the 16 landmarks, initialised at the mean training shape. The node feature of point *i* is
  the backbone feature bilinearly sampled (``grid_sample``) on a small ``patch``×``patch`` grid centred on the
  point (``patch=1`` samples the point alone, as in DAG; a 3×3 neighbourhood tells the node which way the
  structure lies at no extra backbone cost) concatenated with the *shape feature*: the displacements from the
  point to all 16 points.
* **Graph convolutions** (:class:`GCN`) mix node features over a *learnable* adjacency: a 16×16 parameter
  matrix, row-softmax-normalised, so the topology is learned rather than fixed.
* **Global stage**: a GCN on the mean shape (plus the image's pooled deepest features) predicts an affine
  transform of the whole shape about its centroid (coarse alignment; initialised to the identity).
* **Local stages**: ``n_local`` GCNs (separate weights), each re-sampling features at the current points,
  predict per-point offsets (fine alignment); the sampling neighbourhood shrinks stage by stage.
* Every stage's output is supervised with an L1 loss (:func:`landmark_loss`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bmd.columns import N_LANDMARKS

GLOBAL_SCALE = 0.1
LOCAL_SCALE = 0.05


@dataclass(frozen=True)
class ModelConfig:
    """Architecture parameters; stored in the detector folder's config so a detector describes itself."""

    input_size: int = 256
    width: int = 16
    channels: int = 48
    feature_stride: int = 4
    hidden: int = 128
    gcn_layers: int = 3
    n_local: int = 3
    patch: int = 3
    #: sampling-grid half-width (normalised units) for the global stage, then each local stage. The first
    #: local stage must see as far as the global stage errs: with (0.08, 0.04, 0.02, 0.01) its patch spanned
    #: ±2% of the width while the global stage missed the lateral clavicle ends by 3.7% on average, and the
    #: detector's error was 1.017% (twin-v2.4, seed 918273); doubled, 0.797% (0.824% with another training
    #: seed), every landmark better and the training time unchanged
    radii: tuple[float, ...] = (0.16, 0.08, 0.04, 0.02)

    def __post_init__(self) -> None:
        if self.feature_stride not in (2, 4, 8):
            raise ValueError(f"feature_stride must be 2, 4 or 8, not {self.feature_stride}")
        if self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, not {self.input_size}")
        if len(self.radii) != self.n_local + 1:
            raise ValueError(f"radii needs {self.n_local + 1} values (global + {self.n_local} local stages)")

    def as_dict(self) -> dict:
        """JSON-ready parameters."""
        d = dataclasses.asdict(self)
        d["radii"] = list(self.radii)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`as_dict` (unknown keys are an error: a detector from another version)."""
        d = dict(d)
        if "radii" in d:
            d["radii"] = tuple(float(r) for r in d["radii"])
        return cls(**d)


class LandmarkOutput(NamedTuple):
    """What one forward pass gives.

    ``stages``: the points after the global stage and after each local stage, each (B, 16, 2) in
    normalised letterbox coordinates; ``stages[-1]`` is the prediction. ``pooled``: (B, D) image-level
    descriptor the global stage reads (mean and standard deviation of the two deepest backbone stages).
    ``affine``: (B, 2, 3) the global stage's transform (pose of the shape).
    """

    stages: list[torch.Tensor]
    pooled: torch.Tensor
    affine: torch.Tensor


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class LandmarkBackbone(nn.Module):
    """Small CPU-friendly CNN with a top-down path; returns the fine feature map and the pooled descriptor."""

    def __init__(self, width: int, channels: int, feature_stride: int):
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv_bn(1, w, 2), _conv_bn(w, w))  # stride 2
        widths = (w, 2 * w, 4 * w, 8 * w, 8 * w)
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn(widths[i], widths[i + 1], 2), _conv_bn(widths[i + 1], widths[i + 1]))
            for i in range(4)
        )  # strides 4, 8, 16, 32
        self.levels = {2: 0, 4: 1, 8: 2}[feature_stride]  # index into (stem, s1, s2) of the output level
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in widths)
        self.smooth = _conv_bn(channels, channels)
        self.out_channels = channels
        self.pooled_dim = 2 * (widths[3] + widths[4])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        # top-down: deep context reaches the fine map so a node "sees" the whole chest
        top = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, self.levels - 1, -1):
            top = F.interpolate(top, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            top = top + self.lateral[i](feats[i])
        fmap = self.smooth(top)
        pooled = torch.cat(
            [torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3))], dim=1) for f in feats[-2:]], dim=1
        )
        return fmap, pooled


class GraphConv(nn.Module):
    """Graph convolution over a learnable adjacency: ``h' = h + ReLU(LN(A h W_n + h W_s))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.neigh = nn.Linear(dim, dim, bias=False)
        self.self_ = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return h + F.relu(self.norm(adj @ self.neigh(h) + self.self_(h)))


class GCN(nn.Module):
    """Node encoder + graph convolutions with a learnable, row-softmax-normalised 16×16 adjacency."""

    def __init__(self, in_dim: int, hidden: int, layers: int, n_nodes: int = N_LANDMARKS):
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True))
        # zeros → uniform attention to every node at the start; training learns which neighbours matter
        self.adjacency = nn.Parameter(torch.zeros(n_nodes, n_nodes))
        self.layers = nn.ModuleList(GraphConv(hidden) for _ in range(layers))

    def adjacency_matrix(self) -> torch.Tensor:
        """The normalised adjacency (rows sum to 1)."""
        return torch.softmax(self.adjacency, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        adj = self.adjacency_matrix()
        for layer in self.layers:
            h = layer(h, adj)
        return h


def _patch_offsets(patch: int) -> torch.Tensor:
    """(P, 2) unit offsets of a patch×patch sampling grid in [-1, 1]."""
    if patch == 1:
        return torch.zeros(1, 2)
    t = torch.linspace(-1.0, 1.0, patch)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def shape_features(points: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) points → (B, N, 2N): each node's displacements to every node (DAG's shape feature)."""
    disp = points[:, None, :, :] - points[:, :, None, :]  # [b, i, j] = p_j - p_i
    return disp.flatten(2)


class LandmarkNet(nn.Module):
    """DAG-style detector: backbone, a global (affine) GCN stage and ``n_local`` local (offset) GCN stages."""

    def __init__(self, config: ModelConfig, mean_shape: torch.Tensor):
        super().__init__()
        if tuple(mean_shape.shape) != (N_LANDMARKS, 2):
            raise ValueError(f"mean_shape must be ({N_LANDMARKS}, 2), got {tuple(mean_shape.shape)}")
        self.config = config
        self.register_buffer("mean_shape", mean_shape.detach().clone().float())
        self.register_buffer("offsets", _patch_offsets(config.patch))
        self.backbone = LandmarkBackbone(config.width, config.channels, config.feature_stride)
        c, p, n = config.channels, config.patch**2, N_LANDMARKS
        node_in = c * p + 2 * n
        self.global_gcn = GCN(node_in + self.backbone.pooled_dim, config.hidden, config.gcn_layers)
        self.global_head = nn.Sequential(
            nn.Linear(config.hidden * n, config.hidden), nn.ReLU(inplace=True), nn.Linear(config.hidden, 6)
        )
        self.local_gcns = nn.ModuleList(
            GCN(node_in, config.hidden, config.gcn_layers) for _ in range(config.n_local)
        )
        self.local_heads = nn.ModuleList(nn.Linear(config.hidden, 2) for _ in range(config.n_local))
        # zero last layers: the untrained network returns the mean shape (training starts from DAG's prior)
        for last in (self.global_head[-1], *self.local_heads):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def sample(self, fmap: torch.Tensor, points: torch.Tensor, radius: float) -> torch.Tensor:
        """Bilinear features (B, N, C·P) on a patch grid of half-width ``radius`` around each point."""
        b, n, _ = points.shape
        grid = points[:, :, None, :] + radius * self.offsets[None, None]  # (B, N, P, 2)
        out = F.grid_sample(
            fmap, grid, mode="bilinear", padding_mode="border", align_corners=False
        )  # (B, C, N, P)
        return out.permute(0, 2, 1, 3).reshape(b, n, -1)

    @staticmethod
    def standardise(x: torch.Tensor) -> torch.Tensor:
        """Per-image zero mean, unit variance (windowing of the source file must not matter)."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + 1e-4)

    def forward(self, x: torch.Tensor) -> LandmarkOutput:
        """``x``: (B, 1, S, S) letterboxed images in [0, 1].

        Under a bfloat16 autocast only the convolutional backbone computes in bfloat16: the graph stages and
        every coordinate stay float32, since bfloat16's 8-bit mantissa would round a point in [-1, 1] by up to
        ~0.2% of the width, a third of the detector's error.
        """
        fmap, pooled = self.backbone(self.standardise(x))
        with torch.autocast(x.device.type, enabled=False):
            return self._points(fmap.float(), pooled.float(), x.shape[0])

    def _points(self, fmap: torch.Tensor, pooled: torch.Tensor, b: int) -> LandmarkOutput:
        """The graph stages on the backbone's feature map and descriptor (float32)."""
        pts = self.mean_shape[None].expand(b, -1, -1)
        radii = self.config.radii

        node = torch.cat(
            [
                self.sample(fmap, pts, radii[0]),
                shape_features(pts),
                pooled[:, None, :].expand(-1, N_LANDMARKS, -1),
            ],
            dim=-1,
        )
        h = self.global_gcn(node)
        # output scales match the size of pose changes (~0.1) and local corrections (~0.02), so that one
        # Adam step (which moves every weight by ~lr) cannot throw the shape far off at the start
        theta = GLOBAL_SCALE * self.global_head(h.flatten(1)).view(b, 2, 3)
        eye = torch.eye(2, 3, device=fmap.device, dtype=fmap.dtype)
        affine = eye[None] + theta
        centre = self.mean_shape.mean(dim=0)
        pts = (pts - centre) @ affine[:, :, :2].transpose(1, 2) + centre + affine[:, None, :, 2]
        stages = [pts]
        for k, (gcn, head) in enumerate(zip(self.local_gcns, self.local_heads, strict=True)):
            node = torch.cat([self.sample(fmap, pts, radii[k + 1]), shape_features(pts)], dim=-1)
            pts = pts + LOCAL_SCALE * head(gcn(node))
            stages.append(pts)
        return LandmarkOutput(stages=stages, pooled=pooled, affine=affine)


def landmark_loss(stages: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Mean over stages of the L1 loss between each stage's points and the target (normalised coords)."""
    return torch.stack([F.l1_loss(s, target) for s in stages]).mean()
