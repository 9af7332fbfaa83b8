"""The one training entry point, run by torchrun (DistributedDataParallel).

    torchrun --nproc_per_node=2 -m bmd.train --config RUN/config.json     # or: bmd train --config ...
    python -m bmd.train --config RUN/config.json                          # one process, still DDP

gloo on CPU, NCCL on GPU, multi-node through torchrun's rendezvous flags. Without torchrun's
environment a one-process group is created, so every run is a DDP run. The global batch is split
evenly over the ranks; augmentation draws are seeded by (seed, epoch, case), so 1 and N processes
see the same global batches and the same crops. BatchNorm statistics are per rank on CPU (SyncBatchNorm
needs CUDA), so exact 1-vs-N equivalence holds for backbones without batch norm.

A run folder holds ``config.json``, ``checkpoint.pt`` (every epoch, atomic; ``--resume`` continues
from it), ``best.pt`` (best validation epoch), ``log.csv`` (one line per epoch), ``predictions.csv``
(val and test: case and patient id, truth and prediction per vertebra, g/cm²) and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from bmd.atomic import atomic_path, write_bytes
from bmd.data import BMD_COLUMNS, Augment, RoiDataset, TargetScaler, select_family
from bmd.models import MultiROIModel, ROIModel, build_backbone, masked_mse, multi_roi_loss


@dataclass
class TrainConfig:
    """Everything a training run needs; written to ``run_dir/config.json``."""

    run_dir: str
    cache: str  # ROI cache folder (bmd.roi_cache): chest.npy (N,Hc,Wc), local.npy (N,6,H,W), case_ids.txt
    manifest: str  # the study manifest (targets, splits, patient ids)
    model: str = "multi_roi"  # multi_roi | roi
    family: str = "chest"  # ROI family of a roi model: chest, cervi, clavi, ribcage, lumbar
    backbone: str = "vgg16"
    width: float = 1.0
    batch_norm: bool = False
    pretrained: str | None = None  # a local backbone weights file
    epochs: int = 100
    batch_size: int = 64  # global, over all ranks
    optimizer: str = "sgd"  # sgd (the paper's) | adamw
    lr: float = 1e-4
    weight_decay: float = 4e-4
    momentum: float = 0.9  # not stated in the paper; 0.9 is the usual choice
    schedule: str = "none"  # none | onecycle
    augment: bool = True
    seed: int = 0
    threads: int = 0  # CPU threads per rank (0: cores / ranks)
    compile: bool = False  # torch.compile (GPU only)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config JSON (unknown keys are an error)."""
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        """Write the config JSON atomically."""
        write_bytes(Path(path), json.dumps(dataclasses.asdict(self), indent=1).encode())


def _atomic_torch_save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# ------------------------------------------------------------------------------------------ set-up


def setup_distributed() -> tuple[int, int, torch.device]:
    """Join torchrun's process group (or make a one-process one); returns (rank, world, device)."""
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    if not dist.is_initialized():
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return rank, world, device


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_arrays(cache: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The ROI arrays of a cache folder, memory-mapped: chest (N,Hc,Wc), local (N,6,H,W), case ids.

    A folder written by :func:`bmd.roi_cache.build_roi_cache` is verified (checksums) first.
    """
    from bmd.roi_cache import load_cache

    cache = Path(cache)
    if (cache / "meta.json").is_file():
        verified = load_cache(cache)
        if verified is None:
            raise ValueError(f"{cache}: the ROI cache is incomplete or corrupt; rebuild it")
        return verified.chest, verified.local, verified.case_ids
    chest = np.load(cache / "chest.npy", mmap_mode="r")
    local = np.load(cache / "local.npy", mmap_mode="r")
    case_ids = (cache / "case_ids.txt").read_text().split()
    if not (len(chest) == len(local) == len(case_ids)):
        raise ValueError(f"{cache}: chest, local and case_ids disagree in length")
    return chest, local, case_ids


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model a config asks for."""
    backbone = build_backbone(cfg.backbone, cfg.width, cfg.batch_norm, cfg.pretrained)
    return MultiROIModel(backbone) if cfg.model == "multi_roi" else ROIModel(backbone)


# --------------------------------------------------------------------------------------- the loop


def _augment_batch(crops: list[torch.Tensor], rows: torch.Tensor, seed: int, epoch: int,
                   aug: Augment) -> list[torch.Tensor]:
    """Augment every crop with draws seeded by (seed, epoch, case): independent of ranks and batching.

    ``crops`` are batches shaped (B, K, H, W) with K crops per case (K = 1 for the chest).
    """
    out = [torch.empty_like(c) for c in crops]
    for i, r in enumerate(rows.tolist()):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch * 100_003 + int(r))
        for c, o in zip(crops, out, strict=True):
            o[i] = aug(c[i].unsqueeze(1), g).squeeze(1)
    return out


def train_one_epoch(model, loader, optimizer, scheduler, cfg: TrainConfig, epoch: int, device, aug) -> float:
    """One pass over the training split; returns the mean training loss on this rank."""
    model.train()
    loader.sampler.set_epoch(epoch)
    total, count = 0.0, 0
    for chest, local, target, rows in loader:
        # only the crops the model reads are augmented (and moved to the device)
        if cfg.model == "multi_roi":
            crops = [chest, local[:, :, 0]]
        else:
            crops = [select_family(chest, local, cfg.family)[:, :, 0]]
        if cfg.augment:
            crops = _augment_batch(crops, rows, cfg.seed, epoch, aug)
        crops = [c.to(device, non_blocking=True) for c in crops]
        target = target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if cfg.model == "multi_roi":
                out = model(crops[0], crops[1].unsqueeze(2))
                loss = multi_roi_loss(out, target)
            else:
                loss = masked_mse(model(crops[0].unsqueeze(2)), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss) * len(target)
        count += len(target)
    return total / max(count, 1)


@torch.no_grad()
def predict(model, dataset: RoiDataset, cfg: TrainConfig, device, batch_size: int = 64) -> np.ndarray:
    """Standardised predictions (N, 4) for every case of a dataset, in dataset order."""
    model.eval()
    net = model.module if isinstance(model, DistributedDataParallel) else model
    outs = []
    for chest, local, _, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        chest, local = chest.to(device), local.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if cfg.model == "multi_roi":
                pred = net(chest, local).joint
            else:
                pred = net(select_family(chest, local, cfg.family))
        outs.append(pred.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 4))


def _val_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over vertebrae of Pearson R on the validation split (the model-selection criterion)."""
    from bmd.metrics import pearson_r

    return float(np.nanmean([pearson_r(pred[:, j], target[:, j]) for j in range(pred.shape[1])]))


# --------------------------------------------------------------------------------------------- main


def run(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train, select the best validation epoch, write predictions and metrics; returns the run folder."""
    rank, world, device = setup_distributed()
    run_dir = Path(cfg.run_dir)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by the {world} processes")

    chest, local, case_ids = load_arrays(cfg.cache)
    manifest = pd.read_csv(cfg.manifest, dtype={"case_id": str, "patient_id": str})
    manifest = manifest.set_index("case_id").loc[case_ids].reset_index()
    bmd = manifest[list(BMD_COLUMNS)].to_numpy(dtype=float)
    split = manifest["split"].to_numpy()
    scaler = TargetScaler.fit(bmd[split == "train"])
    targets = scaler.transform(bmd).astype(np.float32)
    datasets = {s: RoiDataset(chest, local, targets, np.flatnonzero(split == s)) for s in ("train", "val", "test")}

    model = build_model(cfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net = torch.compile(ddp) if cfg.compile and device.type == "cuda" else ddp
    sampler = DistributedSampler(datasets["train"], num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(datasets["train"], batch_size=cfg.batch_size // world, sampler=sampler,
                        pin_memory=device.type == "cuda", drop_last=False)
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(ddp.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
    scheduler = None
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, epochs=cfg.epochs,
                                                        steps_per_epoch=max(len(loader), 1))

    start_epoch, best_score, best_epoch, log_rows = 0, -np.inf, -1, []
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        ddp.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        log_rows = state["log"]
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.json")

    aug = Augment()
    val_target = targets[datasets["val"].rows]
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train_loss = train_one_epoch(net, loader, optimizer, scheduler, cfg, epoch, device, aug)
        loss_sum = torch.tensor([train_loss], device=device)
        dist.all_reduce(loss_sum)
        val_pred = predict(ddp, datasets["val"], cfg, device)
        score = _val_score(val_pred, val_target)
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch
        log_rows.append({"epoch": epoch, "train_loss": float(loss_sum) / world, "val_r": score,
                         "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
        if rank == 0:
            row = log_rows[-1]
            print(f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} val R {score:.3f} "
                  f"lr {row['lr']:.2e} {row['seconds']:.1f}s" + (" *" if improved else ""), flush=True)
            if improved:
                _atomic_torch_save({"model": ddp.module.state_dict(), "epoch": epoch}, run_dir / "best.pt")
            _atomic_torch_save({"model": ddp.module.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                                "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch,
                                "log": log_rows, "scaler": scaler.to_dict()}, ckpt_path)
            write_bytes(run_dir / "log.csv", pd.DataFrame(log_rows).to_csv(index=False).encode())
        dist.barrier()

    best = torch.load(run_dir / "best.pt", map_location=device, weights_only=False)
    ddp.module.load_state_dict(best["model"])
    if rank == 0:
        _write_results(ddp, datasets, manifest, scaler, cfg, device, run_dir, best_epoch)
    dist.barrier()
    dist.destroy_process_group()
    return run_dir


def _write_results(model, datasets, manifest, scaler, cfg, device, run_dir: Path, best_epoch: int) -> None:
    from bmd.evaluation import ID_COLUMNS, PRED_COLUMNS, evaluate_predictions

    frames = []
    for split in ("val", "test"):
        ds = datasets[split]
        part = manifest.iloc[ds.rows].reset_index(drop=True)
        frame = part[[c for c in (*ID_COLUMNS, *BMD_COLUMNS, "t_l1", "t_l2", "t_l3", "t_l4") if c in part]].copy()
        frame[PRED_COLUMNS] = scaler.inverse(predict(model, ds, cfg, device))
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    metrics = {"best_epoch": best_epoch,
               "splits": {s: evaluate_predictions(predictions, s, seed=cfg.seed).to_dict(orient="records")
                          for s in ("val", "test")}}
    write_bytes(run_dir / "predictions.csv", predictions.to_csv(index=False, float_format="%.5f").encode())
    write_bytes(run_dir / "metrics.json", json.dumps(metrics, indent=1, default=float).encode())


def launch(cfg: TrainConfig, nproc: int = 1, resume: bool = False) -> Path:
    """Run the entry point under torch.distributed.run with ``nproc`` processes (what notebooks call)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "bmd.train", "--config", str(run_dir / "config.json")] + (["--resume"] if resume else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"training in {run_dir} failed: " + " | ".join(tail))
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """``bmd train`` / ``python -m bmd.train``: train from a config JSON."""
    parser = argparse.ArgumentParser(prog="bmd train", description="Train a model (run it with torchrun).")
    parser.add_argument("--config", required=True, type=Path, help="config JSON (see bmd.train.TrainConfig)")
    parser.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoint.pt")
    args = parser.parse_args(argv)
    run(TrainConfig.load(args.config), resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
