"""The paper's tables as model specs: every model once, shared chest model, profile recipes."""

import dataclasses

from bmd.study.config import load_profile
from bmd.study.experiments import ENSEMBLES, all_models, table_models, train_config


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
    assert b.run_dir.endswith("multi_roi-vgg16") and b.model == "multi_roi"
    # the attention model: the multi-ROI model's recipe, only the model kind and the run folder differ
    c = train_config(table_models()["table2"]["attention"], quick, tmp_path / "c", tmp_path / "m.csv", tmp_path / "runs")
    assert c.model == "attention" and c.run_dir.endswith("attention-vgg16")
    assert dataclasses.replace(c, model="multi_roi", run_dir=b.run_dir) == b
