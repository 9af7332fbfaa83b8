"""Speed of ``bmd predict`` on CPU: per-image latency (decode, landmarks, crops, network) and throughput.

Usage: ``.venv/bin/python benchmarks/bench_predict.py [--sizes 512 2048] [--files 32] [--threads 2]
[--encoding plain|jpeg2000] [--overlay] [--images FILE...]``.

An *untrained* bundle of the quick profile's size stands in for a trained one (speed does not depend on
the weights): a VGG-16 at width 0.125 with batch norm, chest 128², ROIs 64² (``bmd/profiles/quick.yaml``),
and a landmark detector at its quick input side (256²) with a plausibility model fitted on random
images. Radiographs are synthetic 16-bit DICOMs (smooth structure plus noise) of the given sides: 512²
is the quick twin's size, 2048² a typical computed-radiography chest. The noise makes them nearly
incompressible, so their JPEG 2000 decoding is slower than a real radiograph's; ``--images`` times
real files too, each predicted alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_quick_bundle(folder: Path) -> Path:
    """An untrained quick-size bundle (through :func:`bmd.deploy.bundle.export_bundle`, from a stand-in run)."""
    from bmd.deploy.bundle import export_bundle
    from bmd.landmarks.detector import LandmarkModel, default_input_size, network_outputs, save_landmark_model
    from bmd.landmarks.model import LandmarkNet, ModelConfig
    from bmd.landmarks.plausibility import PlausibilityModel
    from bmd.model.dataset import TargetScaler
    from bmd.model.train import TrainConfig, build_model
    from bmd.study.config import load_profile

    quick = load_profile("quick")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    # landmark detector: a chest-like mean shape (normalised coordinates), random weights
    mean_shape = np.array([[0.08, -0.55], [0.25, -0.58], [0.42, -0.62], [-0.08, -0.55], [-0.25, -0.58],
                           [-0.42, -0.62], [0.55, -0.35], [0.62, -0.1], [0.64, 0.15], [0.6, 0.4],
                           [-0.55, -0.35], [-0.62, -0.1], [-0.64, 0.15], [-0.6, 0.4], [0.0, -0.7], [0.0, 0.3]])
    cfg = ModelConfig(input_size=default_input_size(quick.twin_image_size))
    net = LandmarkNet(cfg, torch.from_numpy(mean_shape).float()).eval()
    imgs = rng.integers(0, 256, (48, cfg.input_size, cfg.input_size), dtype=np.uint8)
    f = network_outputs(net, imgs, 16)
    plaus = PlausibilityModel(mean_shape)
    feats = [plaus.features(f["pooled"][s], f["local"][s], f["stages"][s, -1]) for s in (slice(0, 32), slice(32, 48))]
    plaus.fit(*feats)
    detector = save_landmark_model(LandmarkModel(net=net, plausibility=plaus, info={}), folder / "detector")

    # a stand-in training run: config, a bare ROI cache with the quick crop sides, best weights, scaler
    cache = folder / "cache"
    cache.mkdir()
    np.save(cache / "chest.npy", np.zeros((1, quick.chest_size, quick.chest_size), np.uint8))
    np.save(cache / "local.npy", np.zeros((1, 6, quick.roi_size, quick.roi_size), np.uint8))
    (cache / "case_ids.txt").write_text("X\n")
    run = folder / "run"
    run_cfg = TrainConfig(run_dir=str(run), cache=str(cache), manifest="unused.csv", model="multi_roi",
                          backbone="vgg16", width=quick.train_width, batch_norm=quick.train_batch_norm)
    run.mkdir()
    run_cfg.save(run / "config.json")
    torch.save({"model": build_model(run_cfg).state_dict(), "epoch": 0}, run / "best.pt")
    scaler = TargetScaler(np.array([0.85, 0.92, 0.97, 0.98]), np.array([0.15, 0.16, 0.16, 0.17]))
    torch.save({"scaler": scaler.to_dict()}, run / "checkpoint.pt")
    return export_bundle(run, detector, folder / "bundle")


def write_images(folder: Path, side: int, n: int, encoding: str) -> list[Path]:
    """``n`` synthetic 16-bit DICOM radiographs of ``side``² pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    rng = np.random.default_rng(side)
    y, x = np.mgrid[:side, :side] / side
    paths = []
    for i in range(n):
        body = np.exp(-((x - 0.5) ** 2 / 0.08 + (y - 0.5) ** 2 / 0.15)) + 0.3 * np.sin(40 * y + i) * (x > 0.3)
        img = body + 0.05 * rng.standard_normal((side, side))
        u16 = np.round((img - img.min()) / np.ptp(img) * 4095).astype(np.uint16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.ViewPosition, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CR", "PA", side, side, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = u16.tobytes()
        if encoding == "jpeg2000":
            ds.compress(JPEG2000Lossless)
        path = folder / f"img{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def stage_times(bundle, path: Path, repeats: int) -> dict[str, float]:
    """Median seconds of each stage for one image, run alone (batch of one)."""
    from bmd.deploy.predict import _as_trained
    from bmd.io import read_image
    from bmd.landmarks.detector import predict_landmarks
    from bmd.rois.crop import crop_rois_batch

    times: dict[str, list[float]] = {k: [] for k in ("decode", "landmarks", "crops", "network")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        image, _ = read_image(path)
        t1 = time.perf_counter()
        marks = predict_landmarks(bundle.landmarks, [image], batch_size=1)
        t2 = time.perf_counter()
        crops = crop_rois_batch([image], marks.points, bundle.roi_size, bundle.chest_size, bundle.geometry)
        chest, local = _as_trained(crops.chest, bundle.storage)[:, None], _as_trained(crops.local, bundle.storage)
        t3 = time.perf_counter()
        with torch.inference_mode():
            bundle.model(chest, local[:, :, None])
        t4 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[key].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], help="image sides (pixels)")
    parser.add_argument("--files", type=int, default=32, help="files for the throughput run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="single-image repeats (median)")
    parser.add_argument("--encoding", choices=("plain", "jpeg2000"), default="plain")
    parser.add_argument("--overlay", action="store_true", help="also write overlays in the throughput run")
    parser.add_argument("--images", type=Path, nargs="*", default=[], help="real files to time one by one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from bmd.deploy.bundle import load_bundle
    from bmd.deploy.predict import predict_images

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        bundle = load_bundle(build_quick_bundle(root))
        print(f"quick-size bundle: vgg16 w{bundle.info['model']['width']} bn, chest {bundle.chest_size}², "
              f"ROI {bundle.roi_size}², detector {bundle.landmarks.input_size}² (built in "
              f"{time.perf_counter() - t0:.1f} s); {args.threads} thread(s), {args.encoding} DICOM")
        for side in args.sizes:
            folder = root / f"img{side}"
            folder.mkdir()
            paths = write_images(folder, side, args.files, args.encoding)
            predict_images(paths[:2], bundle)  # warm-up
            st = stage_times(bundle, paths[0], args.repeats)
            lat, cpu = [], []
            for i in range(args.repeats):
                t, c = time.perf_counter(), time.process_time()
                predict_images([paths[i % len(paths)]], bundle, batch_size=1)
                lat.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            out = root / f"ov{side}" if args.overlay else None
            frame = predict_images(paths, bundle, batch_size=args.batch_size, overlay_dir=out)
            total, total_cpu = time.perf_counter() - t, time.process_time() - c
            assert (frame["status"] != "failed").all()
            parts = ", ".join(f"{k} {v * 1000:.0f}" for k, v in st.items())
            # CPU seconds (all threads) next to wall seconds: on a shared machine the wall clock also
            # counts other people's work, the CPU time does not
            print(f"{side}²: one image {statistics.median(lat):.3f} s wall, {statistics.median(cpu):.3f} s CPU "
                  f"(median of {args.repeats}; wall ms: {parts}); {args.files} files at batch {args.batch_size}"
                  f"{' with overlays' if out else ''}: {total:.1f} s = {args.files / total:.2f} images/s "
                  f"({total / args.files:.3f} s wall, {total_cpu / args.files:.3f} s CPU per image)")
        for path in args.images:
            predict_images([path], bundle)  # warm-up (file cache)
            t, c = time.perf_counter(), time.process_time()
            row = predict_images([path], bundle, batch_size=1).iloc[0]
            print(f"{path.name}: {time.perf_counter() - t:.3f} s wall, {time.process_time() - c:.3f} s CPU "
                  f"({row['status']})")


if __name__ == "__main__":
    main()
