from bmd.inputs import paper


def test_paper_tables_have_five_rows_per_model():
    df = paper.results()
    assert set(df.table) == {"table1", "table2", "table3"}
    assert (df.groupby(["table", "model"]).size() == 5).all()


def test_paper_values_match_the_published_multi_roi_row():
    assert paper.value("table2", "multi_roi", "avg", "r") == 0.840
    assert paper.value("table2", "multi_roi", "avg", "auc") == 0.936
    assert paper.value("table2", "nonexistent", "avg", "r") is None


def test_chest_model_is_table1_vgg16():
    df = paper.results()
    chest = df[(df.table == "table2") & (df.model == "chest")].reset_index(drop=True)
    vgg = df[(df.table == "table1") & (df.model == "vgg16")].reset_index(drop=True)
    assert chest[["vertebra", "r", "auc"]].equals(vgg[["vertebra", "r", "auc"]])
