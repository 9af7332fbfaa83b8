"""Multi-ROI training throughput: the real data pipeline vs the bare model, batched vs looped ROIs, GFLOP/s.

    python benchmarks/bench_train.py [--width 0.25] [--chest 128] [--roi 64] [--batch 32] [--steps 5]

Prints samples/s of (a) training steps fed by the DataLoader over memory-mapped uint8 ROI arrays with
per-crop augmentation (what bmd.model.train does) and (b) the same steps on tensors already in memory; their
ratio says whether the pipeline is the bottleneck (target ≥ 0.9). Then the 7-ROI forward as one batch
vs a loop over ROIs, and the achieved GFLOP/s of a training step against a measured matmul GFLOP/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bmd.model.dataset import Augment, RoiDataset
from bmd.model.networks import MultiROIModel, build_backbone, multi_roi_loss
from bmd.model.train import _augment_batch


def _step(model, opt, chest, local, target) -> None:
    out = model(chest, local)
    loss = multi_roi_loss(out, target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _matmul_gflops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def _step_flops(model, chest, local, target) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        multi_roi_loss(model(chest, local), target).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--chest", type=int, default=128)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cases", type=int, default=256)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = args.cases
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "chest.npy", rng.integers(0, 255, (n, args.chest, args.chest), dtype=np.uint8))
        np.save(Path(tmp) / "local.npy", rng.integers(0, 255, (n, 6, args.roi, args.roi), dtype=np.uint8))
        chest_arr = np.load(Path(tmp) / "chest.npy", mmap_mode="r")
        local_arr = np.load(Path(tmp) / "local.npy", mmap_mode="r")
        targets = rng.normal(size=(n, 4)).astype(np.float32)
        dataset = RoiDataset(chest_arr, local_arr, targets, np.arange(n))
        model = MultiROIModel(build_backbone(args.backbone, args.width, batch_norm=True)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, pin_memory=device.type == "cuda")
        aug = Augment()

        # (a) the real pipeline: memmap → batch → per-crop augmentation → step
        it, done = iter(loader), 0
        start = time.perf_counter()
        for _ in range(args.steps):
            chest, local, target, rows = next(it)
            crops = _augment_batch([chest, local[:, :, 0]], rows, 0, 0, aug)
            _step(model, opt, crops[0].to(device), crops[1].unsqueeze(2).to(device), target.to(device))
            done += len(target)
        pipeline = done / (time.perf_counter() - start)

        # (b) the bare model on tensors already in memory
        chest = torch.rand(args.batch, 1, args.chest, args.chest, device=device)
        local = torch.rand(args.batch, 6, 1, args.roi, args.roi, device=device)
        target = torch.randn(args.batch, 4, device=device)
        start = time.perf_counter()
        for _ in range(args.steps):
            _step(model, opt, chest, local, target)
        bare = args.batch * args.steps / (time.perf_counter() - start)
        print(f"{args.backbone} width {args.width}, chest {args.chest}², ROIs {args.roi}², batch {args.batch}, "
              f"{device.type}, {torch.get_num_threads()} threads")
        print(f"training: pipeline {pipeline:.1f} samples/s, bare model {bare:.1f} samples/s, "
              f"ratio {pipeline / bare:.2f}")

        # 7-ROI forward: one batch through the backbone vs a loop over the ROIs
        model.eval()
        same = torch.rand(args.batch, 6, 1, args.roi, args.roi, device=device)
        chest_same = torch.rand(args.batch, 1, args.roi, args.roi, device=device)
        with torch.no_grad():
            start = time.perf_counter()
            for _ in range(args.steps):
                model(chest_same, same)
            batched = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.steps):
                feats = [model.backbone(chest_same)] + [model.backbone(same[:, i]) for i in range(6)]
                model.joint_head(torch.cat(feats, 1))
            looped = time.perf_counter() - start
        print(f"7-ROI forward: one batch {1000 * batched / args.steps:.0f} ms, loop over ROIs "
              f"{1000 * looped / args.steps:.0f} ms per step (speed-up {looped / batched:.2f}x)")

        model.train()
        flops = _step_flops(model, chest, local, target)
        achieved = flops * bare / args.batch / 1e9
        print(f"training step: {flops / 1e9:.1f} GFLOP per batch, {achieved:.1f} GFLOP/s achieved, "
              f"matmul peak measured {_matmul_gflops(device):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
