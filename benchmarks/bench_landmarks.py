"""Speed of the landmark detector on CPU: training images/s (augmentation included), inference ms/image.

Usage: ``.venv/bin/python benchmarks/bench_landmarks.py [--input-size 256 128] [--threads 2] [--steps 8]``.
Random images stand in for radiographs: speed does not depend on content.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from bmd.columns import N_LANDMARKS
from bmd.landmarks.data import LandmarkAugment, LandmarkDataset
from bmd.landmarks.model import LandmarkNet, ModelConfig, landmark_loss


def bench(input_size: int, steps: int, batch_size: int) -> dict[str, float]:
    """Measure one input size; returns training img/s and inference ms/image (batched and single)."""
    rng = np.random.default_rng(0)
    n = steps * batch_size
    images = rng.integers(0, 256, (n, input_size, input_size), dtype=np.uint8)
    targets = rng.uniform(-0.6, 0.6, (n, N_LANDMARKS, 2))
    torch.manual_seed(0)
    net = LandmarkNet(ModelConfig(input_size=input_size), torch.from_numpy(targets.mean(axis=0)).float())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loader = DataLoader(LandmarkDataset(images, targets, LandmarkAugment()), batch_size=batch_size)
    net.train()
    for i, (x, y) in enumerate(loader):  # the first batch warms up the kernels and is not timed
        if i == 1:
            start = time.perf_counter()
        loss = landmark_loss(net(x).stages, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_ips = (n - batch_size) / (time.perf_counter() - start)

    net.eval()
    x = torch.from_numpy(images[:batch_size]).float()[:, None] / 255.0
    with torch.no_grad():
        net(x)
        start = time.perf_counter()
        for _ in range(3):
            net(x)
        batched = (time.perf_counter() - start) / (3 * batch_size) * 1000
        start = time.perf_counter()
        for i in range(8):
            net(x[i : i + 1])
        single = (time.perf_counter() - start) / 8 * 1000
    return {
        "train_images_per_s": train_ips,
        "infer_ms_per_image_batched": batched,
        "infer_ms_single": single,
        "parameters": sum(p.numel() for p in net.parameters()),
    }


def main() -> None:
    """Print one line per input size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="training batches per size (first one untimed)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"landmark detector, CPU, {torch.get_num_threads()} threads, batch {args.batch_size}")
    for size in args.input_size:
        r = bench(size, args.steps, args.batch_size)
        print(
            f"input {size}²: training {r['train_images_per_s']:.1f} images/s; inference "
            f"{r['infer_ms_per_image_batched']:.1f} ms/image (batch {args.batch_size}), "
            f"{r['infer_ms_single']:.1f} ms single; {r['parameters'] / 1e6:.2f} M parameters"
        )


if __name__ == "__main__":
    main()
