"""The paper's tables as model specs: every model once, shared chest model, profile recipes."""

import dataclasses

from bmd.study.config import load_profile
from bmd.study.experiments import (
    ENSEMBLES,
    LOCAL_ROI_EPOCH_FACTOR,
    RESNET_EPOCH_FACTOR,
    all_models,
    backbone_recipe,
    model_recipe_text,
    recipe_text,
    run_key,
    table_models,
    train_config,
)


def test_tables_name_the_papers_rows_and_share_the_chest_model():
    tables = table_models()
    assert list(tables["table1"]) == ["vgg11", "resnet18", "resnet34", "resnet50", "vgg16"]
    assert list(tables["table2"]) == ["cervi", "clavi", "lumbar", "ribcage", "chest", "multi_roi", "attention"]
    assert tables["table1"]["vgg16"] == tables["table2"]["chest"]
    assert tables["table2"]["attention"].name == "attention-vgg16"
    names = [m.name for m in all_models()]
    assert len(names) == len(set(names)) == 11
    for members in ENSEMBLES.values():
        assert set(members) <= set(names)
        assert "attention-vgg16" not in members  # the ensembles stay the paper's
    assert len(ENSEMBLES["ensm_all"]) == len(ENSEMBLES["ensm_roi"]) + 1


def test_configs_follow_the_profile_recipe(tmp_path):
    paper, quick = load_profile("paper"), load_profile("quick")
    spec = table_models()["table2"]["multi_roi"]
    a = train_config(spec, paper, tmp_path / "c", tmp_path / "m.csv", tmp_path / "runs")
    assert (a.optimizer, a.lr, a.weight_decay, a.batch_size, a.epochs, a.width) == ("sgd", 1e-4, 4e-4, 64, 100, 1.0)
    b = train_config(spec, quick, tmp_path / "c", tmp_path / "m.csv", tmp_path / "runs")
    assert b.batch_norm and b.optimizer == "adamw" and b.schedule == "onecycle" and b.width < 1
    assert (a.select, b.select) == ("val_mse", "last")  # the paper's selection; the one-cycle schedule's end
    assert b.run_dir.endswith("multi_roi-vgg16") and b.model == "multi_roi"
    # the attention model: the multi-ROI model's recipe, started from its weights for half the epochs
    c = train_config(table_models()["table2"]["attention"], quick, tmp_path / "c", tmp_path / "m.csv", tmp_path / "runs")
    assert c.model == "attention" and c.run_dir.endswith("attention-vgg16")
    assert c.epochs == 7 and c.init_from == str(tmp_path / "runs" / "multi_roi-vgg16" / "best.pt")
    assert c.init_sha256 is None  # the multi-ROI model is not trained yet
    assert dataclasses.replace(c, model="multi_roi", run_dir=b.run_dir, epochs=b.epochs, init_from=None) == b
    assert "7 epochs" in model_recipe_text(table_models()["table2"]["attention"], quick)


def test_the_attention_run_is_keyed_by_the_multi_roi_weights_it_starts_from(tmp_path):
    """A retrained multi-ROI model changes the attention model's config (so its run is retrained)."""
    quick, spec = load_profile("quick"), table_models()["table2"]["attention"]
    source = tmp_path / "runs" / "multi_roi-vgg16" / "best.pt"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"first")
    first = train_config(spec, quick, tmp_path / "c", tmp_path / "m.csv", tmp_path / "runs")
    source.write_bytes(b"second")
    second = train_config(spec, quick, tmp_path / "c", tmp_path / "m.csv", tmp_path / "runs")
    assert first.init_sha256 and second.init_sha256 and first.init_sha256 != second.init_sha256
    assert run_key(first) != run_key(second)


def test_resnets_trained_from_scratch_get_more_epochs():
    """The per-backbone recipe: ResNets from scratch train RESNET_EPOCH_FACTOR × longer; pretrained ones
    (the paper profile) and VGGs keep the profile's epochs."""
    quick, paper = load_profile("quick"), load_profile("paper")
    assert backbone_recipe("resnet34", quick) == {"zero_init_residual": True,
                                                  "epochs": RESNET_EPOCH_FACTOR * quick.train_epochs}
    assert backbone_recipe("resnet34", paper) == {"zero_init_residual": True}
    assert backbone_recipe("vgg16", quick) == {}
    assert f"epochs {RESNET_EPOCH_FACTOR * quick.train_epochs}" in recipe_text("resnet18", quick)


def test_one_region_models_trained_from_scratch_get_more_epochs(tmp_path):
    """The four one-region models train LOCAL_ROI_EPOCH_FACTOR × the profile's epochs from scratch (their
    epochs are short and their results hung on the training seed); the chest, the multi-ROI model and
    pretrained runs (the paper profile) keep the profile's."""
    quick, paper = load_profile("quick"), load_profile("paper")
    rows = table_models()["table2"]

    def epochs(row, cfg):
        return train_config(rows[row], cfg, tmp_path / "c", tmp_path / "m.csv", tmp_path / "runs").epochs

    for row in ("cervi", "clavi", "lumbar", "ribcage"):
        assert epochs(row, quick) == LOCAL_ROI_EPOCH_FACTOR * quick.train_epochs
        assert epochs(row, paper) == paper.train_epochs
        assert f"{LOCAL_ROI_EPOCH_FACTOR * quick.train_epochs} epochs" in model_recipe_text(rows[row], quick)
        assert model_recipe_text(rows[row], paper) == ""
    for row in ("chest", "multi_roi"):
        assert epochs(row, quick) == quick.train_epochs
        assert model_recipe_text(rows[row], quick) == ""
