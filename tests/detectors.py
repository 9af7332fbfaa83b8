"""Small landmark detectors for tests: untrained networks saved as detector folders, in milliseconds.

An untrained detector puts its points near its mean shape, which is enough to test everything that only
moves points around (folders, digests, the study's stages, Labelme files) without training anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bmd.columns import N_LANDMARKS
from bmd.landmarks.detector import LandmarkModel, network_outputs, save_landmark_model
from bmd.landmarks.model import LandmarkNet, ModelConfig
from bmd.landmarks.plausibility import PlausibilityModel

#: The architecture of the test detectors: a 64² input and narrow layers.
TINY = ModelConfig(input_size=64, width=8, channels=16, hidden=32, gcn_layers=2)


def tiny_detector(folder: Path, seed: int = 0, mean_shape: np.ndarray | None = None,
                  calibrate_on: np.ndarray | None = None) -> Path:
    """An untrained detector saved in ``folder`` (returned).

    ``mean_shape``: (16, 2) in normalised coordinates ([-1, 1] across the letterboxed input); default a
    random one drawn from ``seed``. ``calibrate_on``: (N, 64, 64) images in [0, 1] (N ≥ 4): its plausibility
    model is fitted on the first half and calibrated on the second, as training does with its train and val
    splits; without them the detector has none (every readable image is ``ok``, with no score).
    """
    if mean_shape is None:
        mean = torch.rand(N_LANDMARKS, 2, generator=torch.Generator().manual_seed(seed)) * 1.2 - 0.6
    else:
        mean = torch.as_tensor(np.asarray(mean_shape), dtype=torch.float32)
    torch.manual_seed(seed)
    net = LandmarkNet(TINY, mean)
    plausibility = None
    if calibrate_on is not None:
        images = np.asarray(calibrate_on, dtype=np.float32)
        out = network_outputs(net, images, batch_size=16)
        plausibility = PlausibilityModel(mean.double().numpy())
        feats = plausibility.features(images, out["stages"][:, -1])
        half = len(calibrate_on) // 2
        plausibility.fit({k: v[:half] for k, v in feats.items()}, {k: v[half:] for k, v in feats.items()})
    return save_landmark_model(LandmarkModel(net=net, plausibility=plausibility), folder)
