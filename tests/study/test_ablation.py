"""ROI ablation and joint-head weight norms on a hand-built multi-ROI run."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from bmd.columns import ROI_NAMES
from bmd.model.dataset import TargetScaler
from bmd.model.train import RunScalerError, TrainConfig, build_model
from bmd.study.ablation import joint_weight_norms, roi_ablation

ONLY = 3  # the one ROI (clavi_r) the joint head is allowed to read


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A random multi-ROI model whose joint head reads only ROI ``ONLY``, and crops whose BMD is in that ROI."""
    root = tmp_path_factory.mktemp("ablation")
    n = 40
    rng = np.random.default_rng(0)
    bmd = rng.normal(0.85, 0.15, (n, 4))
    crops = rng.integers(0, 255, (n, 7, 32, 32)).astype(np.uint8)
    crops[:, ONLY] = np.clip((bmd.mean(axis=1)[:, None, None] - 0.4) / 0.9 * 255, 0, 255).astype(np.uint8)
    ids = [f"C{i:03d}" for i in range(n)]
    manifest = pd.DataFrame({"case_id": ids, "patient_id": ids, **{f"bmd_l{k + 1}": bmd[:, k] for k in range(4)},
                             "split": ["train"] * 20 + ["test"] * 20})
    config = TrainConfig(run_dir=str(root), cache="unused", manifest="unused", model="multi_roi", backbone="vgg11",
                         width=0.125, seed=0)
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        blocks = model.joint_head.weight.view(4, 7, -1)
        keep = blocks[:, ONLY].clone()
        blocks.zero_()
        blocks[:, ONLY] = keep
    # training stores the target scaler it fitted on the train rows with the best weights
    scaler = TargetScaler.fit(bmd[:20])
    torch.save({"model": model.state_dict(), "epoch": 0, "scaler": scaler.to_dict()}, root / "best.pt")
    (root / "config.json").write_text(__import__("json").dumps(dataclasses.asdict(config)))
    cache = SimpleNamespace(chest=crops[:, 0], local=crops[:, 1:], case_ids=ids)
    return root, cache, manifest


def test_only_the_roi_the_head_reads_matters(run):
    root, cache, manifest = run
    table = roi_ablation(root, cache, manifest).set_index("roi")
    assert list(table.index) == ["none", *ROI_NAMES]
    assert table.loc["none", "delta_r"] == 0.0
    others = [name for k, name in enumerate(ROI_NAMES) if k != ONLY]
    assert np.allclose(table.loc[others, "delta_r"], 0.0, atol=1e-6)  # the head never reads them
    assert abs(table.loc[ROI_NAMES[ONLY], "delta_r"]) > 1e-3  # replacing the read ROI changes the output


def test_weight_shares_sum_to_one_and_follow_the_head(run):
    root, _, _ = run
    weights = joint_weight_norms(root).set_index("roi")
    assert weights["share"].sum() == pytest.approx(1.0)
    assert weights.loc[ROI_NAMES[ONLY], "share"] == pytest.approx(1.0)


def test_a_single_roi_run_is_refused(run, tmp_path):
    root, cache, manifest = run
    config = TrainConfig.load(root / "config.json")
    config = dataclasses.replace(config, model="roi", family="clavi", run_dir=str(tmp_path))
    torch.save({"model": build_model(config).state_dict()}, tmp_path / "best.pt")
    config.save(tmp_path / "config.json")
    with pytest.raises(ValueError, match="multi-ROI"):
        roi_ablation(tmp_path, cache, manifest)


def test_swapped_features_equal_a_forward_pass_on_ablated_crops(run):
    """The feature-swap shortcut gives the R of actually feeding the mean crop through the model."""
    from bmd.evaluation.metrics import pearson_r
    from bmd.study.ablation import _as_unit, load_run_model

    root, cache, manifest = run
    table = roi_ablation(root, cache, manifest).set_index("roi")
    model, _ = load_run_model(root)
    split = manifest["split"].to_numpy()
    test, train = split == "test", split == "train"
    chest, local = _as_unit(cache.chest), _as_unit(cache.local)
    bmd = manifest[[f"bmd_l{k + 1}" for k in range(4)]].to_numpy(float)
    scaler = TargetScaler.fit(bmd[train])
    for k in (0, ONLY):
        c, loc = chest[test].copy(), local[test].copy()
        if k == 0:
            c[:] = chest[train].mean(axis=0)
        else:
            loc[:, k - 1] = local[train][:, k - 1].mean(axis=0)
        with torch.no_grad():
            joint = model(torch.as_tensor(c)[:, None], torch.as_tensor(loc)[:, :, None]).joint.numpy()
        pred = scaler.inverse(joint)
        rs = [pearson_r(pred[:, j], bmd[test][:, j]) for j in range(4)]
        expected = float(np.mean([0.0 if not np.isfinite(r) else r for r in rs]))
        assert table.loc[ROI_NAMES[k], "r"] == pytest.approx(expected, abs=1e-5)


def test_attention_run_gives_attention_and_ablation_from_one_pass(run, tmp_path):
    """An attention run: weights per test case (rows sum to 1 over the 7 ROIs) beside its ROI ablation;
    a multi-ROI run is refused for attention."""
    from bmd.study.ablation import attention_study

    root, cache, manifest = run
    config = TrainConfig.load(root / "config.json")
    config = dataclasses.replace(config, model="attention", run_dir=str(tmp_path))
    torch.manual_seed(0)
    scaler = torch.load(root / "best.pt", weights_only=False)["scaler"]
    torch.save({"model": build_model(config).state_dict(), "scaler": scaler}, tmp_path / "best.pt")
    config.save(tmp_path / "config.json")
    study = attention_study(tmp_path, cache, manifest)
    assert study.weights.shape == (20, 4, 7) and len(study.case_ids) == 20
    assert np.allclose(study.weights.sum(axis=-1), 1.0, atol=1e-5)
    assert list(study.mean().columns) == list(ROI_NAMES) and list(study.ablation["roi"]) == ["none", *ROI_NAMES]
    pd.testing.assert_frame_equal(study.ablation, roi_ablation(tmp_path, cache, manifest))
    with pytest.raises(ValueError, match="attention"):
        attention_study(root, cache, manifest)


def test_the_scaler_is_the_runs_not_refitted(run, tmp_path):
    """The ablation reads the target scaler training stored; a run without one is refused in one line."""
    root, cache, manifest = run
    state = torch.load(root / "best.pt", weights_only=False)
    del state["scaler"]
    torch.save(state, tmp_path / "best.pt")
    (tmp_path / "config.json").write_bytes((root / "config.json").read_bytes())
    with pytest.raises(RunScalerError, match="no target scaler") as exc:
        roi_ablation(tmp_path, cache, manifest)
    assert "\n" not in str(exc.value)
