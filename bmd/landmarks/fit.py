"""Train the graph landmark detector (:func:`train_landmark_model`).

Training uses the manifest's **train** split only, selects the epoch with the lowest validation error, fits
the plausibility model (train features, calibrated on val) and writes the detector folder
(:mod:`bmd.landmarks.detector`). The resumable state lives in the folder as ``.train_state.pt``
(:class:`bmd.training.folder.RunFolder`, the run-folder machinery the BMD models' training shares) and is removed
once the detector's ``config.json``, written last, says the detector is complete.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bmd.columns import LANDMARK_NAMES
from bmd.landmarks.acquisition import AcquisitionVariation, acquisition_draws
from bmd.landmarks.data import AugmentConfig, LandmarkAugment, LandmarkDataset, load_landmark_cohort
from bmd.landmarks.detector import (
    CONFIG_FILE,
    DETECTOR_FORMAT,
    PLAUSIBILITY_FILE,
    WEIGHTS_FILE,
    LandmarkModel,
    error_summary,
    network_outputs,
    radial_errors_pct,
    save_landmark_model,
    to_original,
)
from bmd.landmarks.model import LandmarkNet, ModelConfig, landmark_loss
from bmd.landmarks.plausibility import DESCRIPTORS, PlausibilityModel
from bmd.training.folder import RunFolder, signature
from bmd.training.precision import autocast, resolve_precision

STATE_FILE = ".train_state.pt"  # resumable training state, removed when the detector is complete


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def train_landmark_model(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    input_size: int = 256,
    epochs: int = 12,
    batch_size: int = 16,
    seed: int = 0,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    model_config: ModelConfig | dict | None = None,
    augment: AugmentConfig | dict | None = None,
    threads: int = 2,
    precision: str = "auto",
    plausibility_draws: int = 2,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train the detector on the train split of a manifest and write the detector folder ``out_dir``.

    The validation split selects the epoch (lowest mean radial error) and calibrates the plausibility
    score. Optimiser: AdamW with a one-cycle learning-rate schedule (a recipe that converges in a few
    CPU minutes). A killed run resumes from ``out_dir/.train_state.pt`` when called again with the same
    arguments; the same seed gives the same detector on the same machine. ``precision`` (``auto``, ``fp32``,
    ``bf16``; :mod:`bmd.training.precision`) is the backbone's arithmetic in training steps and in the
    per-epoch validation that selects the epoch; the graph stages, the selected detector's evaluation, the
    plausibility features and the saved detector are float32. ``plausibility_draws``: how many varied copies
    of each training and validation image (:mod:`bmd.landmarks.acquisition`) the plausibility model is
    fitted and calibrated on besides the image itself.
    """
    t_start = time.perf_counter()
    precision = resolve_precision(precision, cuda=False)  # the detector trains on the CPU
    out = Path(out_dir)
    torch.set_num_threads(max(1, int(threads)))
    say = log or (lambda _msg: None)

    if isinstance(model_config, dict):
        model_config = ModelConfig.from_dict({**model_config, "input_size": input_size})
    cfg = model_config or ModelConfig(input_size=input_size)
    if cfg.input_size != input_size:
        cfg = dataclasses.replace(cfg, input_size=input_size)
    aug_cfg = AugmentConfig(**augment) if isinstance(augment, dict) else (augment or AugmentConfig())

    t0 = time.perf_counter()
    train = load_landmark_cohort(manifest_path, ["train"], input_size, progress=progress)
    val = load_landmark_cohort(manifest_path, ["val"], input_size, progress=progress)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"{manifest_path}: the detector needs train and val cases (got {len(train)} and {len(val)})"
        )
    t_read = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)  # only once the manifest has been read
    say(f"landmarks: {len(train)} train / {len(val)} val images at {input_size}² (read in {t_read:.1f} s)")

    train_targets = train.normalised_points()
    mean_shape = train_targets.mean(axis=0)
    _seed_everything(seed)
    net = LandmarkNet(cfg, torch.from_numpy(mean_shape).float())
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.15
    )
    dataset = LandmarkDataset(train.images, train_targets, LandmarkAugment(aug_cfg))

    folder = RunFolder(out, checkpoint=STATE_FILE, marker=CONFIG_FILE)
    run_signature = signature(
        manifest=str(Path(manifest_path).resolve()),
        cfg=cfg.as_dict(),
        aug=dataclasses.asdict(aug_cfg),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        wd=weight_decay,
        n=len(train),
        precision=precision,
    )
    history: list[dict] = []
    best = {"epoch": -1, "val_mean_error_pct": math.inf, "state": None}
    start_epoch = 0
    state = folder.resume(run_signature)  # None: nothing saved, or saved by a run with other arguments
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        say(f"landmarks: resuming after epoch {start_epoch}")

    t_train, images_seen = 0.0, 0
    for epoch in range(start_epoch, epochs):
        t_ep = time.perf_counter()
        net.train()
        # per-epoch seeds (not one running stream) so a resumed run replays exactly what it would have done
        torch.manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        loader = DataLoader(
            torch.utils.data.Subset(dataset, order.tolist()),
            batch_size=batch_size,
            shuffle=False,
            num_workers=0,
            drop_last=len(dataset) > batch_size,
        )
        total, count = 0.0, 0
        batches = loader
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc=f"landmarks epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for x, y in batches:
            with autocast(precision, x.device):
                out_ = net(x)
            loss = landmark_loss(out_.stages, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
        with autocast(precision, torch.device("cpu")):  # selection only: half the time of float32
            fwd = network_outputs(net, val.images, 32)
        err = radial_errors_pct(to_original(val.boxes, fwd["stages"][:, -1]), val.points, val.widths)
        val_err = float(err.mean())
        dt = time.perf_counter() - t_ep
        t_train += dt
        images_seen += count
        history.append(
            {
                "epoch": epoch + 1,
                "loss": round(total / max(count, 1), 6),
                "val_mean_error_pct": round(val_err, 4),
                "seconds": round(dt, 2),
            }
        )
        if val_err < best["val_mean_error_pct"]:
            best = {
                "epoch": epoch + 1,
                "val_mean_error_pct": val_err,
                "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
            }
        folder.save_checkpoint(
            {
                "signature": run_signature,
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "history": history,
                "best": best,
                "epoch": epoch,
            }
        )
        say(
            f"landmarks epoch {epoch + 1}/{epochs}: loss {total / max(count, 1):.4f}  "
            f"val error {val_err:.3f}% width  ({dt:.0f} s, {count / dt:.0f} img/s)"
        )

    net.load_state_dict(best["state"])
    # plausibility: Gaussians on the training images, each as it is and under a few draws of another
    # acquisition, calibrated on the validation images likewise (bmd.landmarks.acquisition)
    variation = AcquisitionVariation()
    train_images = acquisition_draws(train.images, train.boxes, plausibility_draws, seed, variation)
    calib_images = acquisition_draws(val.images, val.boxes, plausibility_draws, seed + 1, variation)
    f_train, f_calib = network_outputs(net, train_images, 32), network_outputs(net, calib_images, 32)
    plaus = PlausibilityModel(mean_shape)
    feats = {"train": plaus.features(train_images, f_train["stages"][:, -1]),
             "calibration": plaus.features(calib_images, f_calib["stages"][:, -1])}
    # the validation images as they are come first in the calibration set
    feats["val"] = {k: v[: len(val)] for k, v in feats["calibration"].items()}
    plaus.fit(feats["train"], feats["calibration"])
    val_verdicts = plaus.score(feats["val"])

    val_pred = to_original(val.boxes, f_calib["stages"][: len(val)])
    val_errors = {
        "model": error_summary(radial_errors_pct(val_pred[:, -1], val.points, val.widths)),
        "global_only": error_summary(radial_errors_pct(val_pred[:, 0], val.points, val.widths)),
        "mean_shape": error_summary(
            radial_errors_pct(
                to_original(val.boxes, np.broadcast_to(mean_shape, val_pred[:, 0].shape)),
                val.points,
                val.widths,
            )
        ),
    }
    info = {
        "format": DETECTOR_FORMAT,
        "landmark_names": list(LANDMARK_NAMES),
        "coordinates": "original image pixels, x right, y down, pixel centres at integers",
        "letterbox": "aspect-preserving resize (bilinear, antialiased) of the longer side to input_size, "
        "centred on a black square; network coordinates are normalised to [-1, 1]",
        "model": cfg.as_dict(),
        "mean_shape": np.round(mean_shape, 6).tolist(),
        "augment": dataclasses.asdict(aug_cfg),
        "training": {
            "manifest": str(Path(manifest_path).resolve()),
            "n_train": len(train),
            "n_val": len(val),
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "optimizer": "AdamW",
            "lr": lr,
            "weight_decay": weight_decay,
            "schedule": "one-cycle (15% warm-up)",
            "threads": torch.get_num_threads(),
            "precision": precision,
            "best_epoch": best["epoch"],
            "history": history,
            "read_seconds": round(t_read, 2),
            "train_seconds": round(t_train, 2),
            "total_seconds": round(time.perf_counter() - t_start, 2),
            "train_images_per_second": round(images_seen / max(t_train, 1e-9), 1),
        },
        "val_errors": {
            k: {"mean_error_pct": v["mean_error_pct"], "p95_error_pct": v["p95_error_pct"]}
            for k, v in val_errors.items()
        },
        "shape_stats": {
            "mean_shape_normalised": np.round(mean_shape, 6).tolist(),
            "sd_normalised": np.round(train_targets.std(axis=0), 6).tolist(),
        },
        "plausibility": {
            "components": list(plaus.calibration),
            "descriptors": DESCRIPTORS,
            "calibration_split": "val",
            "fit_split": "train",
            "acquisition_draws": plausibility_draws,
            "acquisition": dataclasses.asdict(variation),
            "pass_quantile": 0.99,
            "calibration": {k: [round(a, 5) for a in v] for k, v in plaus.calibration.items()},
            "val_pass_rate": float(np.mean([v.status == "ok" for v in val_verdicts])),
        },
        "files": {"weights": WEIGHTS_FILE, "plausibility": PLAUSIBILITY_FILE},
    }
    save_landmark_model(LandmarkModel(net=net, plausibility=plaus, info=info), out)  # config.json: finished
    folder.discard_checkpoint()
    err_model, err_mean = (val_errors[k]["mean_error_pct"] for k in ("model", "mean_shape"))
    say(
        f"landmarks: best epoch {best['epoch']}, val error {err_model:.3f}% width "
        f"(mean shape {err_mean:.3f}%), {t_train:.0f} s training → {out}"
    )
    return out
