"""The paper's tables as model specs: every model once, shared chest model, profile recipes."""

import dataclasses

from bmd.study.config import load_profile
from bmd.study.experiments import (
    ENSEMBLES,
    all_models,
    attention_epochs,
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
    # the attention model: the multi-ROI model's recipe, started from its weights for its own epochs
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


def test_every_model_trains_the_profiles_epochs_and_the_attention_model_a_quarter(tmp_path):
    """One recipe for every model trained from scratch, whatever its backbone or input (the chest, each
    region, the multi-ROI model): Table 2 compares inputs, not training lengths. ResNets only start their
    residual branches at zero. The attention model, started from the trained multi-ROI model, trains a
    quarter of the epochs, but at least 7 (its warm-up has to settle) and at most the profile's."""
    quick, paper, smoke = load_profile("quick"), load_profile("paper"), load_profile("smoke")
    assert [attention_epochs(c) for c in (smoke, quick, paper)] == [3, 7, 25]
    assert attention_epochs(dataclasses.replace(paper, train_epochs=40)) == 10
    assert backbone_recipe("resnet34", quick) == backbone_recipe("resnet34", paper) == {"zero_init_residual": True}
    assert backbone_recipe("vgg16", quick) == {} and recipe_text("vgg16", quick) == ""
    assert recipe_text("resnet18", quick) == "zero-initialised residual branches"
    for cfg in (quick, paper):
        for table in table_models().values():
            for spec in table.values():
                epochs = train_config(spec, cfg, tmp_path / "c", tmp_path / "m.csv", tmp_path / "runs").epochs
                expected = attention_epochs(cfg) if spec.model == "attention" else cfg.train_epochs
                assert epochs == expected, (spec.name, cfg.profile)
                assert (model_recipe_text(spec, cfg) == "") == (spec.model != "attention")

