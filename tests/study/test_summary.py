import json

import numpy as np

from bmd.study import summary


def test_update_merges_blocks_and_timings_add_up(tmp_path):
    path = tmp_path / "runs" / "smoke" / "summary.json"
    summary.update(path, oracle=[{"roi": "all", "vertebra": "avg", "r": np.float64(0.88), "auc": 0.93}])
    summary.update(path, tables={"table1": []})
    summary.update(path, tables={"table2": [{"model": "chest"}]})
    summary.record_timing(path, "twin", 1.5)
    summary.record_timing(path, "twin", 2.0)
    data = summary.stamp(path, "smoke", total_seconds=10.0, book_seconds=3.0)
    assert data["tables"] == {"table1": [], "table2": [{"model": "chest"}]}
    assert data["timings_s"] == {"twin": 3.5, "book": 3.0, "total": 10.0}
    assert data["oracle"][0]["r"] == 0.88 and data["profile"] == "smoke"
    assert len(data["commit"]) in (7, 40) or data["commit"] == "unknown"
    assert json.loads(path.read_text()) == data


def test_undefined_numbers_are_stored_as_null(tmp_path):
    import json
    import math

    from bmd.study import summary

    path = tmp_path / "summary.json"
    summary.update(path, tables={"table1": [{"r": math.nan, "r_ci": [math.inf, 0.5], "auc": 0.7}]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    row = json.loads(text)["tables"]["table1"][0]
    assert row == {"r": None, "r_ci": [None, 0.5], "auc": 0.7}
