"""A profile's study stages at its full sizes on this machine (the GPU when there is one): seconds per stage
and per training epoch, each model's test figures, and the projected training time of the whole profile.

    python benchmarks/bench_profile.py [--profile paper] [--seed 0] [--set train_epochs=14 ...]
        [--models multi_roi-vgg16 roi-chest-vgg16 ...] [--out DIR] [--budget-s 420] [--json FILE]

It runs what the book's chapters run, without the notebooks: the twin cohort, the landmark detector (or
the one given by ``--set landmark_model=DIR``), the ROI cache and one training run per model through the
DDP entry point, in the order given, and starts no new run once ``--budget-s`` seconds have passed. ``--set``
overrides any profile field (a YAML value: ``--set train_pretrained=null`` trains from random weights where
the ImageNet weights are not at hand). The projection multiplies each trained model's seconds per epoch by the
epochs its recipe has under the unmodified profile, and counts a model not trained here at the mean rate of
the trained models of its input kind (whole chest, one ROI family, all ROIs). Twin-cohort figures verify the
pipeline, not the clinical claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from bmd.study import experiments, stages
from bmd.study.cohort import load_cohort
from bmd.study.config import load_profile


def _profile(name: str, seed: int | None, sets: list[str]) -> tuple:
    """The profile with ``--set`` overrides applied, and the unmodified one. A null value (``--set
    train_pretrained=null``) is set after loading, since :func:`load_profile` reads None as "the profile's"."""
    values = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: expected KEY=VALUE")
        values[key] = yaml.safe_load(value)
    unmodified = load_profile(name, seed=seed)
    cfg = load_profile(name, seed=seed, **values)
    return dataclasses.replace(cfg, **{k: None for k, v in values.items() if v is None}), unmodified


def _kind(spec) -> str:
    """The input a model reads: the whole chest, one ROI family, or all ROIs (multi-ROI and attention)."""
    if spec.model != "roi":
        return "all_rois"
    return "chest" if spec.family == "chest" else "one_roi"


def _run_figures(run: Path) -> dict:
    """Seconds per epoch (mean over epochs after the first), epochs, and val R / test R / bias / MAE (the
    ``avg`` rows of ``metrics.json``: means over L1–L4)."""
    log = pd.read_csv(run / "log.csv")
    splits = json.loads((run / "metrics.json").read_text())["splits"]
    val, test = ({row["vertebra"]: row for row in splits[s]}["avg"] for s in ("val", "test"))
    per_epoch = log["seconds"].iloc[1:] if len(log) > 1 else log["seconds"]
    return {
        "epochs": int(len(log)),
        "first_epoch_s": round(float(log["seconds"].iloc[0]), 2),
        "epoch_s": round(float(per_epoch.mean()), 2),
        "converged": stages.run_converged(run),
        "val_r": round(val["r"], 4),
        "test_r": round(test["r"], 4),
        "test_bias": round(test["bias"], 4),
        "test_mae": round(test["mae"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--models", nargs="*", default=None, help="run names (default: every model of Tables 1-2)")
    parser.add_argument("--out", type=Path, default=None, help="data and runs (default: a temp folder)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no training run after this")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch

    start = time.perf_counter()
    cfg, unmodified = _profile(args.profile, args.seed, args.set)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_profile_"))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result: dict = {"profile": cfg.profile, "seed": cfg.seed, "sets": args.set, "device": device,
                    "torch": torch.__version__, "stages_s": {}, "models": {}}

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1))

    def stage(name: str, fn):
        t0 = time.perf_counter()
        value = fn()
        result["stages_s"][name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {result['stages_s'][name]} s", flush=True)
        save()
        return value

    print(f"profile {cfg.profile} (seed {cfg.seed}) on {device}; overrides {args.set or 'none'}", flush=True)
    cohort = stage("twin", lambda: load_cohort(cfg, out=out))
    if cohort.oracle:  # the twin's ceilings (mean over L1-L4) put each model's R in context
        result["oracle_r"] = {c["roi"]: c["r"] for c in cohort.oracle["ceilings"] if c["vertebra"] == "avg"}
        print("oracle R: " + ", ".join(f"{k} {v}" for k, v in result["oracle_r"].items()), flush=True)
    cache = stage("landmarks_and_rois", lambda: stages.prepare_rois(cfg, cohort, out))
    specs = {spec.name: spec for spec in experiments.all_models()}
    names = args.models or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)} (known: {', '.join(specs)})")
    runs = stages.paths.run_dir(cfg.profile, out) / "models"
    for name in names:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            print(f"{name}: not started (budget of {args.budget_s:.0f} s spent)", flush=True)
            continue
        config = experiments.train_config(specs[name], cfg, cache.path, cohort.manifest_path, runs)
        t0 = time.perf_counter()
        run = experiments.train_model(config, nproc=cfg.train_nproc)
        figures = {"wall_s": round(time.perf_counter() - t0, 1), **_run_figures(run)}
        result["models"][name] = figures
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
        save()

    # the whole profile's training at the measured rates, each model at its unmodified recipe's epochs
    rates: dict[str, list[float]] = {}
    for name, fig in result["models"].items():
        rates.setdefault(_kind(specs[name]), []).append(fig["epoch_s"])
    projected, missing = 0.0, []
    for name, spec in specs.items():
        epochs = experiments.train_config(spec, unmodified, cache.path, cohort.manifest_path, runs).epochs
        if name in result["models"]:
            projected += epochs * result["models"][name]["epoch_s"]
        elif rates.get(_kind(spec)):
            projected += epochs * sum(rates[_kind(spec)]) / len(rates[_kind(spec)])
        else:
            missing.append(name)
    result["projected_training_s"] = round(projected)
    result["projection_misses"] = missing
    result["total_s"] = round(time.perf_counter() - start, 1)
    save()
    print(f"projected training of every model at the {unmodified.profile} profile's epochs: {projected / 3600:.2f} h"
          + (f" (without {', '.join(missing)}: no rate of their input kind measured)" if missing else ""))
    print(f"total: {result['total_s']} s")


if __name__ == "__main__":
    main()
