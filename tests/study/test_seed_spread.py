"""The seed-spread summary (the builds themselves run in benchmarks/seeds.py, not in tests)."""

from __future__ import annotations

import pytest

from bmd.study import seed_spread


def _res(r: float, bias: float) -> dict:
    return {"multi_roi": {"r": r, "auc": 0.9, "bias": bias, "mae": 0.05, "converged": True},
            "radiomics": {"r": 0.7, "auc": 0.8, "bias": 0.0, "mae": 0.07, "converged": None}}


def test_spread_is_mean_and_sample_sd_over_seeds():
    table = seed_spread.spread({0: _res(0.80, 0.01), 1: _res(0.76, -0.01), 2: _res(0.78, 0.0)})
    assert list(table.index) == ["multi_roi", "radiomics"]
    assert table.loc["multi_roi", "r_mean"] == pytest.approx(0.78)
    assert table.loc["multi_roi", "r_sd"] == pytest.approx(0.02)
    assert table.loc["radiomics", "r_sd"] == pytest.approx(0.0)
    assert table.loc["multi_roi", "seeds"] == 3


def test_one_seed_has_no_sd_and_the_saved_result_round_trips(tmp_path):
    result = seed_spread.result_of("quick", {5: _res(0.8, 0.02)})
    assert result["spread"][0]["r_sd"] is None  # JSON null, not NaN
    path = seed_spread.save(result, "quick", tmp_path)
    assert path == tmp_path / "runs" / "quick" / "seed_spread.json"
    loaded = seed_spread.load("quick", tmp_path)
    assert loaded["seeds"] == [5]
    shown = seed_spread.spread_table(loaded)
    assert shown.loc["multi_roi", "R"] == "0.800"
    assert seed_spread.load("quick", tmp_path / "elsewhere") is None


def test_the_profile_seed_reuses_the_book_folder(tmp_path):
    assert seed_spread.seed_root(tmp_path, 0, 0) == tmp_path.resolve()
    assert seed_spread.seed_root(tmp_path, 0, 7) == tmp_path.resolve() / "seeds" / "seed-7"


def test_a_seed_with_a_built_book_reuses_that_folder(tmp_path, monkeypatch):
    """``books``: a seed already built with ``bmd book --seed N --out DIR`` is studied in DIR; other seeds
    in their own folder under the root."""
    from types import SimpleNamespace

    used = []
    monkeypatch.setattr(seed_spread, "study_cohort", lambda cfg, out: used.append((cfg.seed, out)))
    rows = {m: {"r": 0.8, "auc": 0.9, "bias": 0.0, "mae": 0.07, "converged": True} for m in seed_spread.MODELS}
    monkeypatch.setattr(seed_spread.stages, "table_results",
                        lambda cfg, cohort, table, out, baselines=False: SimpleNamespace(avg=lambda: rows))
    result = seed_spread.run_seeds("quick", [7, 8], tmp_path, log=None, books={8: tmp_path / "built"})
    assert used == [(7, tmp_path.resolve() / "seeds" / "seed-7"), (8, tmp_path / "built")]
    assert result["seeds"] == [7, 8]
