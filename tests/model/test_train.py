"""The DDP training entry point on a tiny synthetic ROI cache: 1 vs 2 processes, resume, determinism."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from bmd.model.train import ALL_ROIS, TrainConfig, launch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """32 cases whose crops' brightness carries their BMD, split 16/8/8 by patient."""
    root = tmp_path_factory.mktemp("tiny_cache")
    rng = np.random.default_rng(0)
    n = 32
    bmd = rng.normal(0.85, 0.15, (n, 4))
    level = np.clip((bmd.mean(axis=1) - 0.4) / 0.9, 0, 1)
    noise = rng.normal(0, 0.05, (n, 7, 32, 32))
    crops = np.clip(level[:, None, None, None] + noise, 0, 1)
    np.save(root / "chest.npy", (crops[:, 0] * 255).astype(np.uint8))
    np.save(root / "local.npy", (crops[:, 1:] * 255).astype(np.uint8))
    ids = [f"C{i:03d}" for i in range(n)]
    (root / "case_ids.txt").write_text("\n".join(ids))
    manifest = pd.DataFrame({"case_id": ids, "patient_id": [f"P{i:03d}" for i in range(n)],
                             "image": "x.dcm", **{f"bmd_l{k + 1}": bmd[:, k] for k in range(4)},
                             "sex": "F", "age": 70, "reference": "hologic",
                             "split": ["train"] * 16 + ["val"] * 8 + ["test"] * 8})
    manifest.to_csv(root / "manifest.csv", index=False)
    return root


def _cfg(tiny, run_dir, **kw) -> TrainConfig:
    base = dict(run_dir=str(run_dir), cache=str(tiny), manifest=str(tiny / "manifest.csv"), model="multi_roi",
                backbone="vgg11", width=0.125, batch_norm=False, epochs=2, batch_size=8, optimizer="sgd",
                lr=0.01, schedule="none", threads=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run_dir) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tiny, tmp_path):
    # in float32: bfloat16 products round differently when the batch is split
    one = launch(_cfg(tiny, tmp_path / "one", precision="fp32"), nproc=1)
    two = launch(_cfg(tiny, tmp_path / "two", precision="fp32"), nproc=2)
    w1, w2 = _weights(one), _weights(two)
    for key in w1:
        assert torch.allclose(w1[key], w2[key], atol=1e-5), key


@pytest.mark.slow
def test_ddp_run_writes_predictions_metrics_and_is_deterministic(tiny, tmp_path):
    a = launch(_cfg(tiny, tmp_path / "a"), nproc=1)
    b = launch(_cfg(tiny, tmp_path / "b"), nproc=1)
    pa, pb = pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
    pd.testing.assert_frame_equal(pa, pb)
    assert set(pa["split"]) == {"val", "test"} and {"pred_l1", "bmd_l4", "patient_id"} <= set(pa.columns)
    log = pd.read_csv(a / "log.csv")
    assert len(log) == 2 and {"train_loss", "val_r"} <= set(log.columns)
    import json

    metrics = json.loads((a / "metrics.json").read_text())
    assert {"val", "test"} == set(metrics["splits"]) and metrics["splits"]["test"][-1]["vertebra"] == "avg"


@pytest.mark.slow
def test_threads_given_at_launch_reach_the_run_and_stay_out_of_its_config(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path / "threads", threads=0, epochs=1)
    run = launch(cfg, nproc=1, threads=1)
    assert json.loads((run / "metrics.json").read_text())["threads"] == 1
    assert TrainConfig.load(run / "config.json") == cfg  # the run is keyed by what it computes, not how


@pytest.mark.slow
def test_ddp_resumed_run_ends_with_the_same_weights(tiny, tmp_path):
    straight = launch(_cfg(tiny, tmp_path / "straight", epochs=3), nproc=1)
    cfg = _cfg(tiny, tmp_path / "resumed", epochs=1)
    launch(cfg, nproc=1)  # stops after epoch 1, as if killed there
    launch(dataclasses.replace(cfg, epochs=3), nproc=1, resume=True)
    w1, w2 = _weights(straight), _weights(tmp_path / "resumed")
    for key in w1:
        assert torch.allclose(w1[key], w2[key], atol=1e-6), key


@pytest.mark.slow
def test_ddp_roi_model_trains_on_a_paired_family(tiny, tmp_path):
    run = launch(_cfg(tiny, tmp_path / "roi", model="roi", family="clavi", epochs=1), nproc=1)
    assert (run / "predictions.csv").is_file()


@pytest.mark.slow
def test_ddp_finished_run_is_reused_and_a_changed_config_retrains(tiny, tmp_path, monkeypatch):
    from bmd.study import experiments
    from bmd.study.experiments import is_finished, run_artifact, train_model

    cfg = _cfg(tiny, tmp_path / "run", epochs=1)
    train_model(cfg)
    assert is_finished(cfg)

    def no_launch(*args, **kwargs):
        raise AssertionError("retrained")

    monkeypatch.setattr(experiments, "launch", no_launch)
    train_model(cfg)  # identical config: nothing to do
    run_artifact(cfg).stamp.unlink()  # a run finished before stamps existed: adopted, not retrained
    train_model(cfg)
    assert run_artifact(cfg).stamp.is_file()
    # an unstamped run folder written when the multi-ROI family was called "chest" is still this config's
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["family"] == "all"
    run_artifact(cfg).stamp.unlink()
    (tmp_path / "run" / "config.json").write_text(json.dumps({**saved, "family": "chest"}))
    assert is_finished(cfg)
    # ... but a config file missing a field is not
    (tmp_path / "run" / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "seed"}))
    assert not is_finished(cfg)
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    train_model(cfg)
    with pytest.raises(AssertionError, match="retrained"):
        train_model(dataclasses.replace(cfg, lr=0.02))


def test_batched_augmentation_equals_one_crop_at_a_time():
    """The batch is warped in one call, with each case's own seeded draws: the same crops as per crop."""
    from bmd.model.dataset import Augment
    from bmd.model.train import _augment_batch

    gen = torch.Generator().manual_seed(0)
    chest, local = torch.rand(5, 1, 24, 24, generator=gen), torch.rand(5, 6, 16, 16, generator=gen)
    rows = torch.tensor([7, 2, 11, 3, 5])
    aug = Augment()
    out = _augment_batch([chest, local], rows, seed=4, epoch=2, aug=aug)
    for i, r in enumerate(rows.tolist()):
        g = torch.Generator().manual_seed(4 * 1_000_003 + 2 * 100_003 + r)
        torch.testing.assert_close(out[0][i], aug(chest[i].unsqueeze(1), g).squeeze(1), atol=1e-6, rtol=0)
        torch.testing.assert_close(out[1][i], aug(local[i].unsqueeze(1), g).squeeze(1), atol=1e-6, rtol=0)
    # a case's crops do not depend on which batch it is in (ranks and batch sizes see the same crops)
    alone = _augment_batch([chest[3:4], local[3:4]], rows[3:4], seed=4, epoch=2, aug=aug)
    torch.testing.assert_close(alone[1][0], out[1][3], atol=1e-6, rtol=0)
    assert not torch.allclose(out[1][3], local[3])  # and it was augmented


def test_convergence_verdict():
    from bmd.model.train import MIN_VAL_R, convergence

    assert convergence(0.8) == {"converged": True, "val_r": 0.8, "reason": ""}
    low = convergence(MIN_VAL_R - 0.01)
    assert not low["converged"] and "did not learn" in low["reason"]
    assert not convergence(float("nan"))["converged"]
    stopped = convergence(0.9, "non-finite training loss in epoch 2")
    assert not stopped["converged"] and "non-finite" in stopped["reason"]


@pytest.mark.slow
def test_ddp_run_that_does_not_learn_is_marked(tiny, tmp_path):
    """A run with a zero learning rate keeps its random head: metrics.json says it did not converge."""
    import json

    run = launch(_cfg(tiny, tmp_path / "frozen", lr=0.0, epochs=1), nproc=1)
    metrics = json.loads((run / "metrics.json").read_text())
    # a random head's outputs differ by less than bfloat16 resolves: then they are constant, R undefined
    assert metrics["converged"] is False
    assert "did not learn" in metrics["reason"] or "constant predictions" in metrics["reason"]


@pytest.mark.slow
def test_ddp_non_finite_loss_stops_training_and_is_marked(tiny, tmp_path):
    import json

    run = launch(_cfg(tiny, tmp_path / "exploding", lr=1e30, epochs=3), nproc=1)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["converged"] is False and "non-finite training loss in epoch 1" in metrics["reason"]
    log = pd.read_csv(run / "log.csv")
    assert len(log) == 1  # stopped after the first epoch instead of training on NaN weights


@pytest.mark.slow
def test_ddp_run_of_the_attention_model_trains_and_predicts(tiny, tmp_path):
    """model="attention" through the same entry point: a finished run with predictions and the model's weights."""
    import json

    run = launch(_cfg(tiny, tmp_path / "attention", model="attention", batch_norm=True), nproc=1)
    weights = _weights(run)
    assert {"readout", "roi_embedding", "head.weight", "roi_head.weight"} <= set(weights)
    pred = pd.read_csv(run / "predictions.csv")
    assert set(pred["split"]) == {"val", "test"} and np.isfinite(pred[[f"pred_l{k}" for k in range(1, 5)]]).all().all()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["splits"]["test"][-1]["vertebra"] == "avg"


def test_recomputed_batch_norm_statistics_depend_only_on_the_weights_and_the_cases():
    """Precise BN: whatever the running averages held before, recomputing gives the same statistics
    (the mean of the per-batch ones over the given cases, each stream its own); weights are untouched."""
    from bmd.model.dataset import RoiDataset
    from bmd.model.train import build_model, recompute_batch_norm

    gen = np.random.default_rng(0)
    chest = gen.integers(0, 255, (10, 64, 64), dtype=np.uint8)
    local = gen.integers(0, 255, (10, 6, 32, 32), dtype=np.uint8)
    data = RoiDataset(chest, local, np.zeros((10, 4), np.float32), np.arange(10))
    cfg = TrainConfig(run_dir="unused", cache="unused", manifest="unused", model="multi_roi", backbone="vgg11",
                      width=0.125, batch_norm=True)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    results = []
    for garbage in (0.0, 5.0):
        for name, buf in model.named_buffers():
            if "running_mean" in name:
                buf.fill_(garbage)
        recompute_batch_norm(model, data, cfg, torch.device("cpu"), batch_size=5)
        results.append({k: v.clone() for k, v in model.named_buffers() if "running" in k})
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k])
    first = model.backbone.features[1]
    assert not torch.allclose(first.running_mean, first.running_mean_1)  # chest and local statistics apart
    for k, v in weights.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert first.momentum == 0.1 and not model.training


def test_one_name_for_the_multi_roi_family(tmp_path):
    """The multi-ROI models' family is "all" (an old config's "chest" is read as "all"); a roi model keeps its own."""
    assert TrainConfig(run_dir="r", cache="c", manifest="m").family == ALL_ROIS == "all"
    assert TrainConfig(run_dir="r", cache="c", manifest="m", model="attention", family="chest").family == "all"
    assert TrainConfig(run_dir="r", cache="c", manifest="m", model="roi").family == "chest"
    assert TrainConfig(run_dir="r", cache="c", manifest="m", model="roi", family="clavi").family == "clavi"
    old = TrainConfig(run_dir="r", cache="c", manifest="m")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**dataclasses.asdict(old), "family": "chest"}))
    assert TrainConfig.load(path) == old and old.matches_saved(path)
    path.write_text(json.dumps({**dataclasses.asdict(old), "family": "clavi"}))
    assert not old.matches_saved(path)


def test_the_target_scaler_is_read_from_the_run(tmp_path):
    """run_scaler: best.pt's scaler, else the checkpoint's; neither: one line naming the folder."""
    from bmd.model.dataset import TargetScaler
    from bmd.model.train import RunScalerError, run_scaler

    scaler = TargetScaler(np.array([0.8, 0.9, 1.0, 1.1]), np.array([0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(RunScalerError, match="no target scaler") as exc:
        run_scaler(tmp_path)
    assert str(tmp_path) in str(exc.value) and "\n" not in str(exc.value)
    torch.save({"model": {}, "scaler": scaler.to_dict()}, tmp_path / "checkpoint.pt")
    torch.save({"model": {}, "epoch": 0}, tmp_path / "best.pt")  # written before best.pt held the scaler
    np.testing.assert_array_equal(run_scaler(tmp_path).std, scaler.std)
    (tmp_path / "checkpoint.pt").unlink()
    torch.save({"model": {}, "epoch": 0, "scaler": scaler.to_dict()}, tmp_path / "best.pt")
    np.testing.assert_array_equal(run_scaler(tmp_path).mean, scaler.mean)


@pytest.mark.slow
def test_ddp_final_batch_norm_statistics_come_from_the_whole_training_split(tiny, tmp_path):
    """The selected epoch's statistics are recomputed over every training case (not the per-epoch sample)."""
    from bmd.model.dataset import RoiDataset
    from bmd.model.train import build_model, load_arrays, recompute_batch_norm

    cfg = _cfg(tiny, tmp_path / "bn", batch_norm=True, precise_bn_cases=4)
    final = dataclasses.replace(cfg, precision="fp32")  # the final statistics are float32 (what is exported)
    run = launch(cfg, nproc=1)
    saved = torch.load(run / "best.pt", weights_only=False)["model"]
    chest, local, _ = load_arrays(tiny)
    model = build_model(cfg)
    model.load_state_dict(saved)
    train = np.arange(16)  # the tiny manifest's training cases
    recompute_batch_norm(model, RoiDataset(chest, local, np.zeros((32, 4), np.float32), train), final,
                         torch.device("cpu"))
    recompute_sample = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    for k, v in recompute_sample.items():
        torch.testing.assert_close(saved[k], v)
    recompute_batch_norm(model, RoiDataset(chest, local, np.zeros((32, 4), np.float32), train[:4]), final,
                         torch.device("cpu"))
    assert any(not torch.allclose(saved[k], v) for k, v in model.state_dict().items() if "running_mean" in k)


def test_warm_start_copies_the_shared_parts_and_checks_the_source(tmp_path):
    """An attention model started from a multi-ROI checkpoint: backbone and per-ROI head copied, the rest
    its own; a changed, missing or unfitting source is one line naming the file."""
    from bmd.infra.digests import sha256_file
    from bmd.model.train import WarmStartError, build_model, save_checkpoint, warm_start

    base = dict(run_dir="r", cache="c", manifest="m", backbone="vgg11", width=0.125, batch_norm=True)
    torch.manual_seed(0)
    source = build_model(TrainConfig(**base, model="multi_roi"))
    path = save_checkpoint({"model": source.state_dict()}, tmp_path / "best.pt")
    torch.manual_seed(1)
    target = build_model(TrainConfig(**base, model="attention"))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    copied = warm_start(target, path, sha256_file(path))
    assert copied and all(k.startswith(("backbone.", "roi_head.")) for k in copied)
    state = target.state_dict()
    for k in copied:
        torch.testing.assert_close(state[k], source.state_dict()[k])
    torch.testing.assert_close(state["readout"], before["readout"])
    with pytest.raises(WarmStartError, match="changed since"):
        warm_start(target, path, "0" * 64)
    with pytest.raises(WarmStartError, match="not found"):
        warm_start(target, tmp_path / "missing.pt")
    other = build_model(TrainConfig(**{**base, "backbone": "vgg16"}, model="attention"))
    with pytest.raises(WarmStartError, match="do not fit") as err:
        warm_start(other, path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_ddp_select_last_keeps_the_schedules_final_epoch(tiny, tmp_path):
    """select="last": the final epoch is the model whatever the validation error did; a bad value is refused
    in one line naming the file. With val_every=2 only the 2nd and the last epoch are scored."""
    from bmd.model.train import TrainConfigError

    # float32: this tiny model's outputs differ by less than bfloat16 resolves, and R would be undefined
    run = launch(_cfg(tiny, tmp_path / "last", epochs=3, select="last", schedule="onecycle", optimizer="adamw",
                      val_every=2, precision="fp32"), nproc=1)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == 2
    log = pd.read_csv(run / "log.csv")
    assert log["val_r"].isna().tolist() == [True, False, False]
    assert metrics["val_r"] == pytest.approx(log["val_r"].iloc[-1])
    best = torch.load(run / "best.pt", weights_only=False)["model"]
    for key, value in _weights(run).items():
        torch.testing.assert_close(best[key], value)
    with pytest.raises(ValueError, match="select 'best'"):
        _cfg(tiny, tmp_path / "bad", select="best")
    with pytest.raises(ValueError, match="val_every 0"):
        _cfg(tiny, tmp_path / "bad", val_every=0)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**dataclasses.asdict(_cfg(tiny, tmp_path / "x")), "select": "best"}))
    with pytest.raises(TrainConfigError, match="config.json: select 'best'"):
        TrainConfig.load(path)


@pytest.mark.slow
def test_bf16_run_records_its_precision_and_predicts_finite_values(tiny, tmp_path):
    run = launch(_cfg(tiny, tmp_path / "bf16", precision="bf16", batch_norm=True), nproc=1)
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    pred = pd.read_csv(run / "predictions.csv")
    assert np.isfinite(pred[["pred_l1", "pred_l2", "pred_l3", "pred_l4"]].to_numpy()).all()


def test_auto_precision_is_resolved_when_the_config_is_made(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path / "auto")
    assert cfg.precision in ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision 'half'"):
        _cfg(tiny, tmp_path / "bad", precision="half")
