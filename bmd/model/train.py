"""The one training entry point, run by torchrun (DistributedDataParallel).

    torchrun --nproc_per_node=2 -m bmd.model.train --config RUN/config.json     # or: bmd train --config ...
    python -m bmd.model.train --config RUN/config.json                          # one process, still DDP

gloo on CPU, NCCL on GPU, multi-node through torchrun's rendezvous flags. Without torchrun's
environment a one-process group is created, so every run is a DDP run. The global batch is split
evenly over the ranks; augmentation draws are seeded by (seed, epoch, case), so 1 and N processes
see the same global batches and the same crops. BatchNorm statistics are per rank on CPU (SyncBatchNorm
needs CUDA), so exact 1-vs-N equivalence holds for backbones without batch norm.

A run folder (written through :class:`bmd.training.folder.RunFolder`, which the landmark detector's training
shares) holds ``config.json``, ``checkpoint.pt`` (every epoch, atomic; ``--resume`` continues from it),
``best.pt`` (best validation epoch, with the target scaler fitted on the training split: :func:`run_scaler`
reads it back), ``log.csv`` (one line per epoch), ``predictions.csv`` (val and test: case and patient id,
truth and prediction per vertebra, g/cm²) and ``metrics.json`` (written last: the run finished).

**Interruptions.** A killed run (SIGKILL, a lost node) resumes with ``--resume`` from the last finished
epoch and ends with the weights and predictions an uninterrupted run gives: everything random in an
epoch (data order, augmentation, the global torch generator) is drawn from (seed, epoch) alone, and the
optimiser and schedule states are in the checkpoint. Files are replaced by renaming a complete
temporary file (a half-written checkpoint is never loaded; leftover temporary files are removed on the
next start). torchrun starts its workers in their own session; here they are tied to their launcher
(``PR_SET_PDEATHSIG`` on Linux), so killing the launcher's process group ends the training too.

**One run per folder.** Rank 0 holds an exclusive lock on ``run_dir/.run.lock`` (``flock``, with
the holder's pid in it) for the whole run; :func:`launch` takes it before it starts torchrun. A second
run on the same folder stops at once with "run folder X is in use by pid N" (exit status 1). The
kernel releases the lock when its holder dies, so a killed run's lock is simply taken over.

**Progress.** Rank 0 shows a tqdm bar over the batches of each epoch when stderr is a terminal (not in
batch jobs, notebooks' training subprocesses or CI), besides one log line per epoch on stdout. The
environment variable ``BMD_PROGRESS=1`` forces the bar on, ``BMD_PROGRESS=0`` off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from bmd.columns import BMD_COLUMNS, ID_COLUMNS, PRED_COLUMNS
from bmd.evaluation.metrics import pearson_r
from bmd.evaluation.predictions import evaluate_predictions
from bmd.infra import progress
from bmd.infra.atomic import write_bytes
from bmd.infra.digests import sha256_file
from bmd.infra.errors import OneLineParser as _Parser
from bmd.infra.errors import describe_error
from bmd.infra.jsonvalues import finite_or_null
from bmd.infra.locks import LockBusy, hold_lock
from bmd.model.dataset import Augment, RoiDataset, TargetScaler, select_family
from bmd.model.networks import (
    MULTI_ROI_KINDS,
    ROIModel,
    build_backbone,
    build_multi_roi,
    masked_mse,
    multi_roi_loss,
)
from bmd.rois.cache import load_cache
from bmd.training.folder import CheckpointError, RunFolder, load_checkpoint, save_checkpoint
from bmd.training.precision import autocast, resolve_precision

BEST_FILE = "best.pt"  # the selected epoch's weights and the target scaler they predict in


#: The ROI family of the multi-ROI models (every crop), as in the experiment specs and model bundles.
ALL_ROIS = "all"


#: How a run's model is chosen among its epochs (:attr:`TrainConfig.select`).
SELECTIONS: tuple[str, ...] = ("val_mse", "last")


@dataclass
class TrainConfig:
    """Everything a training run needs; written to ``run_dir/config.json``."""

    run_dir: str
    cache: str  # ROI cache folder (bmd.rois.cache): chest.npy (N,Hc,Wc), local.npy (N,6,H,W), case_ids.txt
    manifest: str  # the study manifest (targets, splits, patient ids)
    model: str = "multi_roi"  # multi_roi | attention (multi-ROI with attention over the ROIs) | roi
    family: str | None = None  # a roi model's ROI family (chest, cervi, clavi, ribcage, lumbar; None: chest);
    # "all" for the multi-ROI models
    backbone: str = "vgg16"
    width: float = 1.0
    batch_norm: bool = False
    pretrained: str | None = None  # "imagenet" (torchvision's, from the local hub cache) or a weights file
    epochs: int = 100
    batch_size: int = 64  # global, over all ranks
    optimizer: str = "sgd"  # sgd (the paper's) | adamw
    lr: float = 1e-4
    weight_decay: float = 4e-4
    momentum: float = 0.9  # not stated in the paper; 0.9 is the usual choice
    schedule: str = "none"  # none | onecycle
    zero_init_residual: bool = False  # ResNets: every residual branch starts at zero
    augment: bool = True
    augment_geometry: str = "exact"  # exact: flips + whole-pixel shifts | affine: + bilinear scale/rotation
    seed: int = 0
    threads: int = 0  # CPU threads per rank (0: cores / ranks)
    compile: bool = False  # torch.compile (GPU only)
    precise_bn_cases: int = 256  # batch-norm statistics recomputed on this many training cases each epoch (0: off)
    # ... and, for the selected epoch, once more over the whole training split before anything is predicted:
    # statistics from 256 cases carry their sample's mean BMD into every prediction (measured below)
    precise_bn_final: bool = True
    # which epoch is the model: "val_mse", the one with the lowest validation MSE (the paper's protocol,
    # for a constant learning rate), or "last", the schedule's end (a one-cycle schedule's annealed weights:
    # measured, a multi-ROI model whose lowest-MSE epoch, 11 of 14, was off by +0.022 g/cm² on every split,
    # its own training split included, while the last epoch was off by -0.004 to -0.008 at equal R)
    select: str = "val_mse"
    # validate (and recompute the sampled batch-norm statistics) every this many epochs and at the last; the
    # epochs between are unscored and cannot be selected. With select="last" the scores only log the run
    # (about an eighth of an epoch's time each on CPU); "val_mse" needs 1, the paper's every epoch
    val_every: int = 1
    # a finished run's best.pt whose shared parts (backbone, per-ROI head) start this model, and that
    # file's SHA-256 (checked before training: a retrained source is never mixed up with the one keyed)
    init_from: str | None = None
    init_sha256: str | None = None
    # fp32 | bf16 (autocast) | auto: bf16 on a CUDA GPU or an AMX CPU, fp32 elsewhere (bmd.training.precision);
    # resolved when the config is made, so config.json says what the run computed in
    precision: str = "auto"

    def __post_init__(self) -> None:
        self.precision = resolve_precision(self.precision)
        if self.select not in SELECTIONS:
            raise ValueError(f"select {self.select!r}: expected one of {', '.join(SELECTIONS)}")
        if self.val_every < 1:
            raise ValueError(f"val_every {self.val_every}: expected a whole number of epochs, at least 1")
        # configs written before the multi-ROI family was called "all" said "chest" (unused by those models):
        # read them as "all", so that old run folders still match the configs that made them
        if self.model in MULTI_ROI_KINDS:
            if self.family in (None, "chest"):
                self.family = ALL_ROIS
        elif self.family is None:
            self.family = "chest"

    def matches_saved(self, path: str | Path) -> bool:
        """Whether the config file at ``path`` is this config: every field written, the same values (an old
        file's multi-ROI family read as :meth:`load` reads it)."""
        try:
            saved = TrainConfig.load(path)
            written = set(json.loads(Path(path).read_text(encoding="utf-8", errors="replace")))
        except (OSError, TrainConfigError, TypeError):
            return False
        return saved == self and written == {f.name for f in dataclasses.fields(self)}

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config JSON; bad JSON, unknown or missing keys raise :class:`TrainConfigError`.

        A file that cannot be read raises the ``OSError`` (its ``filename`` names it).
        """
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrainConfigError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
                                   ) from None
        if not isinstance(raw, dict):
            raise TrainConfigError(f"{path}: a config must be a JSON object of TrainConfig fields")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise TrainConfigError(f"{path}: unknown key(s): {', '.join(unknown)}")
        missing = sorted(name for name, f in fields.items()
                         if name not in raw and f.default is dataclasses.MISSING)
        if missing:
            raise TrainConfigError(f"{path}: missing key(s): {', '.join(missing)}")
        try:
            return cls(**raw)
        except ValueError as exc:
            raise TrainConfigError(f"{path}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write the config JSON atomically."""
        write_bytes(Path(path), json.dumps(dataclasses.asdict(self), indent=1).encode())


def run_scaler(run_dir: str | Path) -> TargetScaler:
    """The target scaler a run trained with, as training stored it (``best.pt``, else ``checkpoint.pt``).

    Training fits it once, on the training split; everyone else reads it from here. Raises
    :class:`RunScalerError` (one line naming the folder) when neither file holds it.
    """
    run = Path(run_dir)
    for name in (BEST_FILE, "checkpoint.pt"):
        path = run / name
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            continue
        if state.get("scaler") is not None:
            return TargetScaler.from_dict(state["scaler"])
    raise RunScalerError(f"{run}: no target scaler in {BEST_FILE} or checkpoint.pt (retrain the run)")


class RunScalerError(ValueError):
    """A run folder without the target scaler its training stored."""


# ------------------------------------------------------------------------------- the run folder lock

LOCK_FILE = ".run.lock"
_LOCK_ENV = "BMD_RUN_LOCK"  # "<pid>:<run folder>": a launcher holding the folder's lock for its workers


class TrainConfigError(ValueError):
    """A training config JSON that cannot be used; the message is one line naming the file."""


class RunFolderBusy(LockBusy):
    """Another live process is training in the same run folder."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path, wait: bool = False, timeout: float | None = None) -> Iterator[int]:
    """Hold the exclusive lock of a run folder (created if needed); yields the lock file's descriptor.

    Raises :class:`RunFolderBusy` ("run folder X is in use by pid N") when another live process holds
    it: at once, or with ``wait`` after waiting up to ``timeout`` seconds for it (:func:`bmd.infra.locks.hold_lock`).
    Re-entrant within a process; a worker whose launcher holds the lock for it (``BMD_RUN_LOCK``)
    goes ahead. The lock is released on exit, and by the kernel when the holder dies.
    """
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with hold_lock(folder / LOCK_FILE, f"the training run in {folder}", wait=wait, timeout=timeout, error=RunFolderBusy,
                   busy=lambda pid: f"run folder {folder} is in use by pid {pid or '?'}",
                   handover=_LOCK_ENV, handover_key=str(folder.resolve())) as fd:
        yield fd


def _hold_run_folder(stack: contextlib.ExitStack, run_dir: Path, rank: int, device: torch.device) -> None:
    """Rank 0 takes the run folder's lock; every rank stops when it cannot (no rank waits on a dead peer)."""
    busy = ""
    if rank == 0:
        try:
            stack.enter_context(run_lock(run_dir))
        except RunFolderBusy as exc:
            busy = str(exc)
    flag = torch.tensor([1 if busy else 0], device=device)
    dist.all_reduce(flag)
    if int(flag.item()):
        dist.destroy_process_group()
        raise RunFolderBusy(busy or f"run folder {run_dir} is in use")


def _die_with_launcher() -> None:
    """End this torchrun worker when its launcher dies.

    torchrun starts workers in a session of their own, so killing the launcher's process group would
    leave them training and writing into the run folder while a resumed run starts there.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the line above
        os._exit(1)


def _show_progress() -> bool:
    """Progress bars: ``BMD_PROGRESS`` (1/0) if set, else only when stderr is a terminal."""
    flag = os.environ.get("BMD_PROGRESS", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return sys.stderr.isatty()


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

    A folder written by :func:`bmd.rois.cache.build_roi_cache` is verified (checksums) first.
    """

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
    backbone = build_backbone(cfg.backbone, cfg.width, cfg.batch_norm, cfg.pretrained,
                              zero_init_residual=cfg.zero_init_residual)
    return build_multi_roi(cfg.model, backbone) if cfg.model in MULTI_ROI_KINDS else ROIModel(backbone)


#: The parts a warm start copies: what every multi-ROI kind shares (:class:`bmd.model.networks._SharedBackboneROIs`).
SHARED_PREFIXES: tuple[str, ...] = ("backbone.", "roi_head.")


class WarmStartError(ValueError):
    """A warm-start checkpoint that is missing, changed since it was keyed, or does not fit the model."""


def warm_start(model: nn.Module, path: str | Path, sha256: str | None = None) -> list[str]:
    """Copy the shared parts (:data:`SHARED_PREFIXES`) of a finished run's checkpoint into ``model``.

    Returns the copied keys. Raises :class:`WarmStartError` (one line naming the file) when the file is
    missing or unreadable, its SHA-256 is not ``sha256``, or its shared parts do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise WarmStartError(f"{path}: warm-start checkpoint not found (train the run it comes from first)")
    if sha256 is not None and sha256_file(path) != sha256:
        raise WarmStartError(f"{path}: warm-start checkpoint changed since this run was configured "
                             "(its source was retrained; configure the run again)")
    try:
        source = load_checkpoint(path)["model"]
    except (CheckpointError, KeyError) as exc:
        raise WarmStartError(f"{path}: not a training checkpoint ({describe_error(exc)})") from None
    target = model.state_dict()
    shared = {k: v for k, v in source.items() if k.startswith(SHARED_PREFIXES)}
    unfit = sorted(k for k, v in shared.items() if k not in target or target[k].shape != v.shape)
    if not shared or unfit:
        raise WarmStartError(f"{path}: its shared parts do not fit this model"
                             + (f" ({unfit[0]} and {len(unfit) - 1} more)" if unfit else " (none found)"))
    model.load_state_dict(shared, strict=False)
    return sorted(shared)


# --------------------------------------------------------------------------------------- the loop


def _augment_batch(crops: list[torch.Tensor], rows: torch.Tensor, seed: int, epoch: int,
                   aug: Augment) -> list[torch.Tensor]:
    """Augment every crop with draws seeded by (seed, epoch, case): independent of ranks and batching.

    ``crops`` are batches shaped (B, K, H, W) with K crops per case (K = 1 for the chest).
    """
    draws: list[list[torch.Tensor]] = [[] for _ in crops]
    for r in rows.tolist():
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch * 100_003 + int(r))
        for c, d in zip(crops, draws, strict=True):
            d.append(aug.draw(c.shape[1], g))
    # the draws are per case; the warp runs once over the whole batch (far fewer small ops)
    return [aug.apply(c.reshape(-1, 1, *c.shape[2:]), torch.cat(d)).view(c.shape)
            for c, d in zip(crops, draws, strict=True)]


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def train_one_epoch(model, loader, optimizer, scheduler, cfg: TrainConfig, epoch: int, device, aug,
                    progress: bool = False) -> float:
    """One pass over the training split; returns the mean training loss on this rank.

    Every random draw of the epoch comes from (seed, epoch), so a run resumed at this epoch repeats
    it exactly. ``progress``: a tqdm bar over the batches (on stderr).
    """
    model.train()
    loader.sampler.set_epoch(epoch)
    # the global generator (dropout, the loader's base seed) restarts each epoch: a resumed run needs
    # no saved generator state to continue the same sequence
    torch.manual_seed(_epoch_seed(cfg.seed, epoch))
    total, count = 0.0, 0
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                       dynamic_ncols=True, file=sys.stderr)
    for chest, local, target, rows in batches:
        # only the crops the model reads are augmented (and moved to the device)
        if cfg.model in MULTI_ROI_KINDS:
            crops = [chest, local[:, :, 0]]
        else:
            crops = [select_family(chest, local, cfg.family)[:, :, 0]]
        if cfg.augment:
            crops = _augment_batch(crops, rows, cfg.seed, epoch, aug)
        crops = [c.to(device, non_blocking=True) for c in crops]
        target = target.to(device, non_blocking=True)
        with autocast(cfg.precision, device):
            if cfg.model in MULTI_ROI_KINDS:
                out = model(crops[0], crops[1].unsqueeze(2))
                loss = multi_roi_loss(out, target)
            else:
                loss = masked_mse(model(crops[0].unsqueeze(2)), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach()) * len(target)
        count += len(target)
    if progress:
        batches.close()
    return total / max(count, 1)


@torch.no_grad()
def predict(model, dataset: RoiDataset, cfg: TrainConfig, device, batch_size: int = 64) -> np.ndarray:
    """Standardised predictions (N, 4) for every case of a dataset, in dataset order."""
    model.eval()
    net = model.module if isinstance(model, DistributedDataParallel) else model
    outs = []
    for chest, local, _, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        chest, local = chest.to(device), local.to(device)
        with autocast(cfg.precision, device):
            if cfg.model in MULTI_ROI_KINDS:
                pred = net(chest, local).joint
            else:
                pred = net(select_family(chest, local, cfg.family))
        outs.append(pred.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 4))


def recompute_batch_norm(model, dataset: RoiDataset, cfg: TrainConfig, device, batch_size: int = 64) -> None:
    """Set every batch-norm layer's running statistics to their average over ``dataset`` (no augmentation).

    Evaluation normalises with running statistics, an exponential average over the last few training
    batches, each computed with slightly older weights. In a short run whose weights still move, that
    lag turns into a shift and a scale error of every prediction (measured: a ResNet-18 whose last epoch
    reached validation R 0.64 but MSE 1.14 and bias −0.11 g/cm²; with recomputed statistics MSE 0.64, bias
    −0.01). Recomputing them with the current weights ("precise BN", Wu & Johnson 2021) removes the lag.
    Every rank uses the same cases, so the statistics agree across ranks. Weights are untouched.
    """
    net = model.module if isinstance(model, DistributedDataParallel) else model
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or len(dataset) == 0:
        return
    names = {m: [n for n, _ in m.named_buffers() if n.startswith(("running_mean", "running_var"))] for m in norms}
    sums = {m: {n: torch.zeros_like(getattr(m, n)) for n in names[m]} for m in norms}
    momenta = {m: m.momentum for m in norms}
    was_training = net.training
    net.train()
    batches = 0
    try:
        for m in norms:
            m.momentum = 1.0  # each forward leaves exactly that batch's statistics in the buffers
        # in the arithmetic of training and prediction, whose activations these statistics normalise
        with torch.no_grad(), autocast(cfg.precision, device):
            for chest, local, _, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                chest, local = chest.to(device), local.to(device)
                if cfg.model in MULTI_ROI_KINDS:
                    net(chest, local)
                else:
                    net(select_family(chest, local, cfg.family))
                for m in norms:
                    for n in names[m]:
                        sums[m][n] += getattr(m, n)
                batches += 1
        for m in norms:
            for n in names[m]:
                getattr(m, n).copy_(sums[m][n] / batches)
    finally:
        for m in norms:
            m.momentum = momenta[m]
        net.train(was_training)


def _val_scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Validation (MSE, R): the masked mean squared error in standardised units and the mean over
    vertebrae of Pearson R. The MSE selects the epoch: R ignores an offset, and an epoch picked by R
    alone can carry one (measured: a whole-chest VGG-16 whose best-R epoch, one before the end of its
    one-cycle schedule, predicted 0.05 g/cm² low on every split, the last epoch 0.00)."""

    valid = np.isfinite(target)
    mse = float(np.mean((pred[valid] - target[valid]) ** 2)) if valid.any() else float("nan")
    rs = np.array([pearson_r(pred[:, j], target[:, j]) for j in range(pred.shape[1])], dtype=float)
    return mse, float(np.nanmean(rs)) if np.isfinite(rs).any() else float("nan")


# --------------------------------------------------------------------------------------------- main


def run(cfg: TrainConfig, resume: bool = False, threads: int | None = None) -> Path:
    """Train, select the best validation epoch, write predictions and metrics; returns the run folder.

    ``resume``: continue from ``run_dir/checkpoint.pt`` when it exists. ``threads``: CPU threads of this
    process, which wins over ``cfg.threads`` (how a run is computed on this machine, not what it
    computes: it is not part of the config). Raises :class:`RunFolderBusy` when another process is
    training in the same folder.
    """
    _die_with_launcher()
    rank, world, device = setup_distributed()
    run_dir = Path(cfg.run_dir)
    with contextlib.ExitStack() as stack:
        _hold_run_folder(stack, run_dir, rank, device)
        _train(cfg, resume, rank, world, device, threads)
    return run_dir


def _restore_best(run_dir: Path, state: dict) -> None:
    """Make ``best.pt`` hold the checkpoint's best epoch after a kill between the two writes.

    The checkpoint is written before ``best.pt``; a run killed in between has a checkpoint whose best
    epoch is its own epoch, so its weights are the best weights.
    """
    best_path = run_dir / BEST_FILE
    if state["best_epoch"] != state["epoch"]:
        return
    try:
        best_epoch = torch.load(best_path, map_location="cpu", weights_only=False)["epoch"]
    except Exception:  # noqa: BLE001 - missing or unreadable: rewritten below
        best_epoch = None
    if best_epoch != state["epoch"]:
        save_checkpoint({"model": state["model"], "epoch": state["epoch"], "scaler": state.get("scaler")}, best_path)


def _train(cfg: TrainConfig, resume: bool, rank: int, world: int, device: torch.device,
           threads: int | None = None) -> None:
    """The run itself, with the run folder held by rank 0."""
    run_dir = Path(cfg.run_dir)
    torch.set_num_threads(threads or cfg.threads or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by the {world} processes")

    chest, local, case_ids = load_arrays(cfg.cache)
    manifest = pd.read_csv(cfg.manifest, dtype={"case_id": str, "patient_id": str})
    manifest = manifest.set_index("case_id").loc[case_ids].reset_index()
    bmd = manifest[list(BMD_COLUMNS)].to_numpy(dtype=float)
    split = manifest["split"].to_numpy()
    scaler = TargetScaler.fit(bmd[split == "train"])  # the one place it is fitted; run_scaler reads it back
    targets = scaler.transform(bmd).astype(np.float32)
    datasets = {s: RoiDataset(chest, local, targets, np.flatnonzero(split == s)) for s in ("train", "val", "test")}

    model = build_model(cfg)
    if cfg.init_from is not None:
        warm_start(model, cfg.init_from, cfg.init_sha256)
    model = model.to(device)
    # channels-last only on GPUs: on CPU (torch 2.14.1, oneDNN) it is ~15% faster but the backward pass of
    # a width-1/8 ResNet-18 on a batch of 63 corrupts the heap (SIGSEGV / "double free"), so not here
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

    start_epoch, best_score, best_epoch, log_rows, stopped = 0, -np.inf, -1, [], ""
    folder = RunFolder(run_dir)
    if rank == 0:
        folder.prepare()  # rank 0 holds the folder's lock
        cfg.save(run_dir / "config.json")
    state = folder.resume(map_location=device) if resume else None
    if state is not None:
        ddp.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        log_rows, stopped = state["log"], state.get("stopped", "")
        if rank == 0:
            _restore_best(run_dir, state)
        del state
    dist.barrier()

    aug = Augment(geometry=cfg.augment_geometry)
    val_target = targets[datasets["val"].rows]
    # the same fixed training cases on every rank, so that the recomputed statistics agree
    bn_cases = RoiDataset(chest, local, targets, datasets["train"].rows[:cfg.precise_bn_cases])
    progress = rank == 0 and _show_progress()
    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        train_loss = train_one_epoch(net, loader, optimizer, scheduler, cfg, epoch, device, aug, progress)
        loss_sum = torch.tensor([train_loss], device=device)
        dist.all_reduce(loss_sum)
        if not bool(torch.isfinite(loss_sum).all()):
            # the weights are no longer usable: keep the best finished epoch and say why training ended
            stopped = f"non-finite training loss in epoch {epoch + 1}"
            if rank == 0:
                print(f"epoch {epoch + 1}/{cfg.epochs} {stopped}: training stopped", flush=True)
            if best_epoch >= 0:
                break
        validated = (epoch + 1) % cfg.val_every == 0 or epoch == cfg.epochs - 1 or bool(stopped)
        val_mse, val_r, score = float("nan"), float("nan"), -np.inf
        if validated:
            if cfg.precise_bn_cases > 0:
                recompute_batch_norm(ddp, bn_cases, cfg, device)
            val_pred = predict(ddp, datasets["val"], cfg, device)
            val_mse, val_r = _val_scores(val_pred, val_target)
            score = -val_mse if np.isfinite(val_mse) else -np.inf  # higher is better
        # the first epoch is always kept, so best.pt exists even when the loss is not finite (an unscored
        # epoch's score is -inf, so it never beats a scored one)
        improved = best_epoch < 0 or score > best_score or cfg.select == "last"
        if improved:
            best_score, best_epoch = score, epoch
        log_rows.append({"epoch": epoch, "train_loss": float(loss_sum) / world, "val_mse": val_mse, "val_r": val_r,
                         "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
        if rank == 0:
            row = log_rows[-1]
            scores = f" val MSE {val_mse:.4f} R {val_r:.3f}" if validated else ""
            print(f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f}{scores} "
                  f"lr {row['lr']:.2e} {row['seconds']:.1f}s" + (" *" if improved else ""), flush=True)
            # the checkpoint first: a kill before best.pt is written is repaired on resume (_restore_best)
            folder.save_checkpoint({"model": ddp.module.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                                    "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch,
                                    "log": log_rows, "scaler": scaler.to_dict(), "stopped": stopped})
            if improved:
                save_checkpoint({"model": ddp.module.state_dict(), "epoch": epoch, "scaler": scaler.to_dict()},
                                run_dir / BEST_FILE)
            folder.write_history(log_rows)
        dist.barrier()

    best = load_checkpoint(run_dir / BEST_FILE, device)
    ddp.module.load_state_dict(best["model"])
    # the saved model is used in float32 (bmd.deploy loads the weights alone), so its final statistics and
    # the predictions scored here are float32 too: predictions.csv is what the exported model gives
    final = dataclasses.replace(cfg, precision="fp32")
    if cfg.precise_bn_cases > 0 and cfg.precise_bn_final:
        # The per-epoch statistics come from a fixed sample of training cases, and a sample's mean BMD
        # shows in every eval-mode prediction (measured, a clavicle VGG-16: the first 256 training cases
        # gave a mean offset of -0.016 g/cm² on its own training split; other samples of 256, -0.007 to
        # +0.013; the whole split, +0.001). The weights are the selected epoch's; only the statistics
        # change, recomputed from the weights alone, so a resumed run repeats this exactly.
        recompute_batch_norm(ddp, datasets["train"], final, device)
        if rank == 0:
            save_checkpoint({**best, "model": ddp.module.state_dict()}, run_dir / BEST_FILE)
    if rank == 0:
        best_r = next((row["val_r"] for row in log_rows if row["epoch"] == best_epoch), float("nan"))
        verdict = convergence(best_r, stopped)
        _write_results(ddp, datasets, manifest, scaler, final, device, run_dir, best_epoch, verdict)
    dist.barrier()
    dist.destroy_process_group()


#: A run whose selected epoch reaches less than this validation R (mean over L1–L4) did not learn.
MIN_VAL_R = 0.3


def convergence(val_r: float, stopped: str = "") -> dict:
    """Whether a run learned: ``{"converged", "val_r", "reason"}`` for ``metrics.json``.

    Not converged when training stopped on a non-finite loss (``stopped`` says why) or when the
    selected epoch's validation R is undefined or below :data:`MIN_VAL_R`.
    """
    if stopped:
        return {"converged": False, "val_r": finite_or_null(float(val_r)), "reason": stopped}
    if not np.isfinite(val_r):
        return {"converged": False, "val_r": None, "reason": "validation R undefined (constant predictions)"}
    if val_r < MIN_VAL_R:
        return {"converged": False, "val_r": float(val_r),
                "reason": f"validation R {val_r:.3f} below {MIN_VAL_R} (the model did not learn)"}
    return {"converged": True, "val_r": float(val_r), "reason": ""}


def _write_results(model, datasets, manifest, scaler, cfg, device, run_dir: Path, best_epoch: int,
                   verdict: dict) -> None:

    frames = []
    for split in ("val", "test"):
        ds = datasets[split]
        part = manifest.iloc[ds.rows].reset_index(drop=True)
        frame = part[[c for c in (*ID_COLUMNS, *BMD_COLUMNS, "t_l1", "t_l2", "t_l3", "t_l4") if c in part]].copy()
        frame[PRED_COLUMNS] = scaler.inverse(predict(model, ds, cfg, device))
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    if np.isfinite(predictions[PRED_COLUMNS].to_numpy(float)).all():
        splits = {s: evaluate_predictions(predictions, s, seed=cfg.seed).to_dict(orient="records")
                  for s in ("val", "test")}
    else:  # weights ruined before any usable epoch: nothing to score (the verdict says why)
        splits = {}
    # the CPU threads of this process: how the run was computed here (not part of its config)
    metrics = {"best_epoch": best_epoch, **verdict, "threads": torch.get_num_threads(), "splits": splits}
    folder = RunFolder(run_dir)
    write_bytes(run_dir / "predictions.csv", predictions.to_csv(index=False, float_format="%.5f").encode())
    folder.write_metrics(metrics)  # the finished marker, written last


_EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) .*?\bR (-?[\d.]+|nan)")


def epoch_progress(line: str) -> str | None:
    """``epoch 4/7, val R 0.71`` from an epoch line of the entry point, or None for any other line."""
    match = _EPOCH_LINE.match(line.strip())
    if match is None:
        return None
    done, total, r = match.groups()
    return f"epoch {done}/{total}, val R {float(r):.2f}"


def launch(cfg: TrainConfig, nproc: int = 1, resume: bool = False, threads: int | None = None) -> Path:
    """Run the entry point under torch.distributed.run with ``nproc`` processes (what notebooks call).

    ``threads``: CPU threads of each process (default: ``cfg.threads``, else the cores shared among them).

    The run folder's lock is taken here, before torchrun starts (a busy folder raises
    :class:`RunFolderBusy` at once), and held for the workers. torchrun's output is read line by line
    as it comes: each epoch line becomes a progress line (:func:`bmd.infra.progress.note`, e.g. ``training
    vgg11 (epoch 4/7, val R 0.71)``); a failed run raises ``RuntimeError`` with the tail of its output.
    """
    import collections
    import subprocess


    run_dir = Path(cfg.run_dir)
    name = run_dir.name
    tail: collections.deque[str] = collections.deque(maxlen=5)
    with run_lock(run_dir) as fd:
        cfg.save(run_dir / "config.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "bmd.model.train", "--config", str(run_dir / "config.json")] + (["--resume"] if resume else [])
        if threads:
            cmd += ["--threads", str(int(threads))]
        # torchrun inherits the locked file (the lock lives as long as any holder), and rank 0 knows that
        # the pid in it is its own launcher's
        env = {**os.environ, _LOCK_ENV: f"{os.getpid()}:{run_dir.resolve()}"}
        progress.note(f"training {name}")
        # stdout and stderr in one stream, read as it comes: the epoch lines, then the error if any
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              pass_fds=(fd,), bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip():
                    tail.append(line.rstrip())
                epoch = epoch_progress(line)
                if epoch is not None:
                    progress.note(f"training {name} ({epoch})")
            returncode = proc.wait()
    if returncode != 0:
        raise RuntimeError(f"training in {run_dir} failed: " + " | ".join(tail))
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """``bmd train`` / ``python -m bmd.model.train``: train from a config JSON.

    Exit status 1 with one line on stderr (rank 0) when the config cannot be read or used or the run
    folder is in use; 2 for a usage error.
    """

    parser = _Parser(prog="bmd train", description="Train a model from a config JSON (run it with torchrun).")
    parser.add_argument("--config", required=True, type=Path, help="config JSON (see bmd.model.train.TrainConfig)")
    parser.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoint.pt")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per process (default: the config's, else cores / processes)")
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig.load(args.config)
    except (OSError, TrainConfigError) as exc:
        if int(os.environ.get("RANK", "0")) == 0:

            print(f"bmd train: {describe_error(exc)}", file=sys.stderr, flush=True)
        return 1
    try:
        run(cfg, resume=args.resume, threads=args.threads)
    except RunFolderBusy as exc:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"bmd train: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
