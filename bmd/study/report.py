"""Tables and figures of the book: the cohort, the oracle ceilings and the results tables.

Every function takes plain data (a loaded manifest DataFrame, see ``data_manifest/README.md``, or
results rows in the ``summary.json`` layout) and returns a DataFrame or a matplotlib Figure; nothing
here reads files or prints.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmd.columns import BMD_COLUMNS, SPLITS, VERTEBRAE

# The book's chapters reach Figure 2, number formatting and the figure style through this module.
from bmd.evaluation.figures import plot_predicted_vs_dxa as plot_predicted_vs_dxa
from bmd.evaluation.predictions import delta_r_against, evaluate_predictions
from bmd.infra.formatting import fmt as _fmt
from bmd.infra.formatting import num as num
from bmd.infra.jsonvalues import finite_or_null
from bmd.infra.plotting import pyplot as pyplot
from bmd.inputs import paper
from bmd.inputs.tscores import osteoporotic, patient_level, t_scores_for_manifest, who_category

#: What readers see for each model id in tables and figures (``summary.json`` keeps the ids).
MODEL_NAMES: dict[str, str] = {
    "vgg11": "Chest (VGG-11)", "vgg16": "Chest (VGG-16)", "resnet18": "Chest (ResNet-18)",
    "resnet34": "Chest (ResNet-34)", "resnet50": "Chest (ResNet-50)",
    "chest": "Chest (VGG-16)", "cervi": "Cervical spine", "clavi": "Clavicles", "lumbar": "T12 (\"lumbar\")",
    "ribcage": "Rib cages", "multi_roi": "Multi-ROI", "attention": "Attention (multi-ROI)",
    "age_sex": "Age + sex", "roi_intensity": "ROI intensity", "radiomics": "Radiomics",
    "ensm_roi": "Ensemble (ROI)", "ensm_all": "Ensemble (all)",
    "multi_roi, recalibrated": "Multi-ROI, recalibrated",
}

def model_name(model: str) -> str:
    """A model id (``multi_roi``) as readers see it (``Multi-ROI``); unknown ids are shown as they are."""
    return MODEL_NAMES.get(model, model)


def split_table(df: pd.DataFrame) -> pd.DataFrame:
    """Cases and patients per split, beside the paper's case counts."""
    rows = []
    for split in SPLITS:
        part = df[df["split"] == split]
        rows.append({"split": split, "cases": len(part), "patients": part["patient_id"].nunique(),
                     "paper_cases": paper.SPLIT_SIZES[split]})
    rows.append({"split": "total", "cases": len(df), "patients": df["patient_id"].nunique(),
                 "paper_cases": sum(paper.SPLIT_SIZES.values())})
    return pd.DataFrame(rows).set_index("split")


def bmd_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per vertebra: measured and excluded counts, mean, SD, min and max BMD (g/cm²)."""
    rows = []
    for v, col in zip(VERTEBRAE, BMD_COLUMNS, strict=True):
        x = df[col].astype(float)
        rows.append({"vertebra": v, "n": int(x.notna().sum()), "excluded": int(x.isna().sum()),
                     "mean": x.mean(), "sd": x.std(), "min": x.min(), "max": x.max()})
    return pd.DataFrame(rows).set_index("vertebra")


def correlation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlations between vertebrae (pairwise complete), with the paper's where reported."""
    corr = df[list(BMD_COLUMNS)].astype(float).corr()
    rows = []
    for i, a in enumerate(VERTEBRAE):
        for b in VERTEBRAE[i + 1:]:
            rows.append({"pair": f"{a}–{b}", "r": corr.loc[f"bmd_{a.lower()}", f"bmd_{b.lower()}"],
                         "paper_r": paper.VERTEBRA_CORRELATIONS.get((a, b), np.nan)})
    return pd.DataFrame(rows).set_index("pair")


def category_table(df: pd.DataFrame, threshold: float = -2.5) -> pd.DataFrame:
    """WHO categories per vertebra and for the lowest valid vertebra (the patient-level endpoint).

    Columns: counts of normal / osteopenia / osteoporosis (WHO: T ≤ threshold) and the share with
    T < threshold (the paper's positive label).
    """

    t = t_scores_for_manifest(df)
    columns = {v: t[f"t_{v.lower()}"] for v in VERTEBRAE}
    columns["lowest (patient level)"] = patient_level(t)["t_min"]
    rows = []
    for name, values in columns.items():
        values = values.astype(float)
        valid = values.dropna()
        cats = pd.Series(who_category(valid.to_numpy(), threshold=threshold))
        rows.append({
            "vertebra": name, "n": len(valid),
            "normal": int((cats == "normal").sum()),
            "osteopenia": int((cats == "osteopenia").sum()),
            "osteoporosis": int((cats == "osteoporosis").sum()),
            "positive_pct": 100.0 * float(np.mean(osteoporotic(valid.to_numpy(), threshold=threshold))),
        })
    return pd.DataFrame(rows).set_index("vertebra")


def plot_bmd_distributions(df: pd.DataFrame):
    """Histograms of BMD per vertebra, by sex (seaborn); returns the Figure."""
    plt = pyplot()
    import seaborn as sns

    long = df.melt(id_vars=["sex"], value_vars=list(BMD_COLUMNS), var_name="vertebra", value_name="bmd")
    long["vertebra"] = long["vertebra"].str.replace("bmd_", "").str.upper()
    long = long.dropna(subset=["bmd"])
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8), sharex=True, sharey=True)
    for ax, v in zip(axes, VERTEBRAE, strict=True):
        sns.histplot(data=long[long.vertebra == v], x="bmd", hue="sex", bins=30, element="step",
                     stat="count", ax=ax, legend=(v == "L4"))
        ax.set_title(v)
        ax.set_xlabel("BMD (g/cm²)")
    fig.tight_layout()
    return fig


def plot_correlation_matrix(df: pd.DataFrame):
    """Heat map of the L1–L4 BMD correlation matrix; returns the Figure."""
    plt = pyplot()
    import seaborn as sns

    corr = df[list(BMD_COLUMNS)].astype(float).corr()
    corr.index = corr.columns = list(VERTEBRAE)
    fig, ax = plt.subplots(figsize=(3.6, 3.0))
    sns.heatmap(corr, annot=True, fmt=".3f", vmin=0.5, vmax=1.0, cmap="viridis", ax=ax, cbar=False)
    ax.set_title("DXA BMD correlations")
    fig.tight_layout()
    return fig


def oracle_table(oracle: dict) -> pd.DataFrame:
    """The twin's oracle ceilings (R and AUC per ROI family and vertebra), beside the paper's Table 2 R."""
    rows = pd.DataFrame(oracle["ceilings"])
    paper_model = {"all": "multi_roi"}
    rows["paper_r"] = [paper.value("table2", paper_model.get(roi, roi), v, "r")
                       for roi, v in zip(rows["roi"], rows["vertebra"], strict=True)]
    wide = rows.pivot(index="roi", columns="vertebra", values="r")
    wide = wide[[*VERTEBRAE, "avg"]]
    wide["paper_avg_r"] = rows[rows.vertebra == "avg"].set_index("roi")["paper_r"]
    wide["auc_avg"] = rows[rows.vertebra == "avg"].set_index("roi")["auc"]
    order = [r for r in ("cervi", "clavi", "lumbar", "ribcage", "chest", "all") if r in wide.index]
    return wide.loc[order]


#: ROI family / model row → the oracle ceiling that bounds it
CEILING_OF = {"chest": "chest", "cervi": "cervi", "clavi": "clavi", "lumbar": "lumbar", "ribcage": "ribcage",
              "multi_roi": "all", "attention": "all", "vgg11": "chest", "vgg16": "chest", "resnet18": "chest", "resnet34": "chest",
              "resnet50": "chest", "ensm_roi": "all", "ensm_all": "all"}


#: Rows that are baselines, not deep models: no ΔR against the reference, no convergence flag.
BASELINES: tuple[str, ...] = ("age_sex", "roi_intensity", "radiomics")
#: The hand-crafted baseline every deep model is compared with (ΔR, paired bootstrap).
REFERENCE = "radiomics"
#: Rows compared with a second model besides the reference: row → model (``delta_r_<model>`` keys).
PAIRED_WITH: dict[str, str] = {"attention": "multi_roi"}


def results_rows(table: str, frames: dict, oracle: dict | None, n_boot: int = 2000, seed: int = 0,
                 reference: pd.DataFrame | None = None, converged: dict[str, bool] | None = None) -> list[dict]:
    """``summary.json`` rows of a results table, JSON-clean (undefined numbers are ``None``).

    Per model and vertebra (L1..L4, avg), on the test split: R and AUC with patient-level bootstrap
    CIs, ``bias`` (mean of prediction − DXA) and ``mae`` (g/cm²; ``avg`` = mean of the four), the
    paper's values and, on the twin, the ceiling. Rows of deep models (not :data:`BASELINES`) add
    ``delta_r_radiomics`` and ``delta_r_radiomics_ci``: R(model) − R(``reference``) on the same test
    cases with a paired patient-level bootstrap (``avg`` = mean of the four differences), and
    ``converged`` from ``converged`` (row label → flag). Baseline rows hold ``None`` in those keys, as
    do deep rows when no reference (or no flag) is given. A row of :data:`PAIRED_WITH` (``attention``)
    adds ``delta_r_<other>`` and ``delta_r_<other>_ci``, the same paired difference against that
    other model of the same table (``multi_roi``); ``None`` when that model is not in ``frames``.
    """

    ceilings = {}
    if oracle:
        ceilings = {(r["roi"], r["vertebra"]): r["r"] for r in oracle["ceilings"]}
    rows = []
    for model, frame in frames.items():
        metrics = evaluate_predictions(frame, "test", n_boot=n_boot, seed=seed)
        deltas = {}
        if reference is not None and model not in BASELINES:
            deltas = delta_r_against(frame, reference, "test", n_boot=n_boot, seed=seed).set_index("vertebra")
        other = PAIRED_WITH.get(model)
        paired = (delta_r_against(frame, frames[other], "test", n_boot=n_boot, seed=seed).set_index("vertebra")
                  if other in frames else None)
        for rec in metrics.to_dict(orient="records"):
            v = rec["vertebra"]
            row = {"model": model, "vertebra": v, "r": rec["r"], "r_ci": [rec["r_lo"], rec["r_hi"]],
                   "auc": rec["auc"], "auc_ci": [rec["auc_lo"], rec["auc_hi"]],
                   "bias": rec["bias"], "mae": rec["mae"], "paper_r": paper.value(table, model, v, "r"),
                   "paper_auc": paper.value(table, model, v, "auc"),
                   "ceiling_r": ceilings.get((CEILING_OF.get(model, ""), v)),
                   "delta_r_radiomics": None, "delta_r_radiomics_ci": None,
                   "converged": None if model in BASELINES or converged is None else converged.get(model)}
            if len(deltas):
                d = deltas.loc[v]
                row["delta_r_radiomics"] = float(d["delta_r"])
                row["delta_r_radiomics_ci"] = [float(d["delta_r_lo"]), float(d["delta_r_hi"])]
            if other is not None:
                d = paired.loc[v] if paired is not None else None
                row[f"delta_r_{other}"] = None if d is None else float(d["delta_r"])
                row[f"delta_r_{other}_ci"] = None if d is None else [float(d["delta_r_lo"]), float(d["delta_r_hi"])]
            rows.append(row)
    return finite_or_null(rows)


def results_table(rows: list[dict], vertebra: str = "avg") -> pd.DataFrame:
    """One line per model for a vertebra: ours (with 95% CI) beside the paper's and the ceiling.

    Besides R and AUC: bias and MAE (g/cm², test split) and, for deep models, ΔR against the
    ``radiomics`` baseline with its paired-bootstrap 95% CI (``—`` where it does not apply).
    ``n/a`` marks a value that cannot be computed (e.g. an AUC on a split without positives).
    """
    out = []
    for r in rows:
        if r["vertebra"] != vertebra:
            continue
        delta = r.get("delta_r_radiomics")
        out.append({"model": model_name(r["model"]), "R": _fmt(r["r"], r["r_ci"]), "paper R": _fmt(r["paper_r"]).replace(
                    "n/a", "—"), "ceiling R": _fmt(r["ceiling_r"]).replace("n/a", "—"),
                    "ΔR vs radiomics": "—" if delta is None else _fmt(delta, r.get("delta_r_radiomics_ci"), True),
                    "AUC": _fmt(r["auc"], r["auc_ci"]), "paper AUC": _fmt(r["paper_auc"]).replace("n/a", "—"),
                    "bias (g/cm²)": _fmt(r.get("bias"), signed=True), "MAE (g/cm²)": _fmt(r["mae"])})
    return pd.DataFrame(out).set_index("model")


def beats_reference(row: dict) -> bool | None:
    """Whether a deep model's ``avg`` (or vertebra) row beats the ``radiomics`` baseline: the whole 95% CI
    of ΔR above 0. ``None`` when the row has no ΔR or its CI is undefined."""
    ci = row.get("delta_r_radiomics_ci")
    if row.get("delta_r_radiomics") is None or ci is None or any(c is None or not np.isfinite(c) for c in ci):
        return None
    return bool(ci[0] > 0)


def reference_comparison(rows: list[dict], vertebra: str = "avg") -> str:
    """A sentence per table: which deep models beat the hand-crafted ``radiomics`` baseline (ΔR CI above 0)
    and which do not, with ΔR and its paired-bootstrap 95% CI; built from the rows, never written by hand."""
    deep = [r for r in rows if r["vertebra"] == vertebra and r.get("delta_r_radiomics") is not None]
    if not deep:
        return "No deep model here has a ΔR against the radiomics baseline (it could not be computed)."

    def item(r: dict) -> str:
        return f"{model_name(r['model'])} (ΔR = {_fmt(r['delta_r_radiomics'], r['delta_r_radiomics_ci'], True)})"

    verdicts = {r["model"]: beats_reference(r) for r in deep}
    win = [item(r) for r in deep if verdicts[r["model"]]]
    lose = [item(r) for r in deep if verdicts[r["model"]] is False]
    unknown = [model_name(r["model"]) for r in deep if verdicts[r["model"]] is None]
    parts = []
    if win:
        parts.append(("Every deep model beats" if not lose and not unknown else "Beating")
                     + f" the hand-crafted radiomics baseline (95% CI of ΔR above 0): {', '.join(win)}.")
    if lose:
        parts.append(("No deep model beats" if not win and not unknown else "Not beating")
                     + f" the radiomics baseline (95% CI of ΔR reaching 0 or below): {', '.join(lose)}.")
    if unknown:
        parts.append(f"Undecided (ΔR interval undefined): {', '.join(unknown)}.")
    return " ".join(parts)


def paired_table(rows: list[dict], model: str = "attention", other: str = "multi_roi") -> pd.DataFrame:
    """Per vertebra and ``avg``: R of ``model`` and of ``other`` (95% CI) and ΔR = R(model) − R(other) with its
    paired patient-level bootstrap 95% CI (the ``delta_r_<other>`` keys of ``model``'s rows)."""
    mine = {r["vertebra"]: r for r in rows if r["model"] == model}
    theirs = {r["vertebra"]: r for r in rows if r["model"] == other}
    out = []
    for v, r in mine.items():
        o = theirs.get(v, {})
        out.append({"vertebra": v, model_name(model): _fmt(r["r"], r["r_ci"]),
                    model_name(other): _fmt(o.get("r"), o.get("r_ci")),
                    f"ΔR vs {model_name(other)}": _fmt(r.get(f"delta_r_{other}"), r.get(f"delta_r_{other}_ci"), True)})
    return pd.DataFrame(out).set_index("vertebra") if out else pd.DataFrame()


def paired_verdict(rows: list[dict], model: str = "attention", other: str = "multi_roi", vertebra: str = "avg") -> str:
    """One sentence: does ``model`` help, tie with (95% CI of ΔR covering 0) or hurt ``other``, on the test split;
    built from the rows, never written by hand."""
    row = next((r for r in rows if r["model"] == model and r["vertebra"] == vertebra), None)
    name, other_name = model_name(model), model_name(other)
    delta = None if row is None else row.get(f"delta_r_{other}")
    ci = None if row is None else row.get(f"delta_r_{other}_ci")
    if delta is None or ci is None or any(c is None or not np.isfinite(c) for c in ci):
        return f"The difference between {name} and {other_name} could not be computed here."
    text = _fmt(delta, ci, True)
    if ci[0] > 0:
        return f"{name} beats {other_name}: ΔR = {text} (mean over L1–L4), the whole 95% CI above 0."
    if ci[1] < 0:
        return f"{name} does worse than {other_name}: ΔR = {text} (mean over L1–L4), the whole 95% CI below 0."
    return (f"{name} ties with {other_name}: ΔR = {text} (mean over L1–L4); the 95% CI covers 0, so this test "
            "split cannot tell the two fusions apart.")


def convergence_sentence(failed: dict[str, str]) -> str:
    """The book's sentence on runs that did not learn (``stages.failed_runs``): which, why, and that their
    numbers are not comparable; a short all-clear when every model learned."""
    if not failed:
        return ("Every model here learned (validation R of its selected epoch at least 0.3, finite losses), "
                "so its row can be compared with the others.")
    items = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
    return (f"Did not learn — {items}. Their rows are shown for completeness but are not comparable: "
            "a model that did not learn measures a failed training run, not what its architecture or its "
            "region can read from the radiograph.")


def per_vertebra_table(rows: list[dict], order: list[str] | None = None) -> pd.DataFrame:
    """R (95% CI), the paper's R and AUC per model (rows) and vertebra (columns)."""
    per = pd.DataFrame([{"model": model_name(r["model"]), "vertebra": r["vertebra"], "R": _fmt(r["r"], r["r_ci"]),
                         "paper R": _fmt(r["paper_r"]).replace("n/a", "—"), "AUC": _fmt(r["auc"], r["auc_ci"])}
                        for r in rows if r["vertebra"] != "avg"])
    wide = per.pivot(index="model", columns="vertebra", values=["R", "paper R", "AUC"])
    order = [model_name(m) for m in order] if order else list(dict.fromkeys(per["model"]))
    return wide.loc[[m for m in order if m in wide.index]]


def plot_results(rows: list[dict], title: str, metric: str = "r"):
    """Our test-split R (or AUC) per model with its 95% CI (L1–L4 mean), the paper's value beside it."""
    plt = pyplot()

    avg = [r for r in rows if r["vertebra"] == "avg"]
    fig, ax = plt.subplots(figsize=(7.6, 0.45 * len(avg) + 1.2))
    labelled: set[str] = set()

    def label(name: str) -> str | None:  # each legend entry once
        if name in labelled:
            return None
        labelled.add(name)
        return name

    for i, r in enumerate(avg):
        value, (lo, hi) = r[metric], r[f"{metric}_ci"]
        if value is not None and np.isfinite(value):
            err = None if lo is None or hi is None else [[value - lo], [hi - value]]
            ax.errorbar(value, i, xerr=err, fmt="o", color="C0", capsize=3, label=label("ours (95% CI)"))
        if r.get(f"paper_{metric}") is not None:
            ax.plot(r[f"paper_{metric}"], i, "D", color="C3", label=label("paper (its own data)"))
        if metric == "r" and r.get("ceiling_r") is not None:
            ax.plot(r["ceiling_r"], i, "|", color="grey", ms=14, label=label("twin ceiling"))
    ax.set_yticks(range(len(avg)), [model_name(r["model"]) for r in avg])
    ax.invert_yaxis()
    ax.set_xlabel({"r": "Pearson R (mean over L1–L4)", "auc": "osteoporosis AUC (mean over L1–L4)"}[metric])
    ax.set_title(title)
    # beside the axes, never over a point
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def best_model(avg_rows: dict[str, dict], metric: str = "r", among: list[str] | None = None) -> str:
    """The model whose ``avg`` row has the highest finite ``metric`` (the first one when none is finite)."""
    names = among or list(avg_rows)
    finite = [m for m in names if avg_rows[m][metric] is not None and np.isfinite(avg_rows[m][metric])]
    return max(finite, key=lambda m: avg_rows[m][metric]) if finite else names[0]


# ------------------------------------------------------------------------------------ landmark detector

#: The verdicts of the detector's plausibility check (:mod:`bmd.landmarks.plausibility`), in table order.
PLAUSIBILITY_STATUSES: tuple[str, ...] = ("ok", "flagged", "failed")
#: The score above which an image is flagged (its calibration's 99th percentile).
FLAG_SCORE = 1.0


def _with_split(detected: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """The detected landmarks with each case's split (joined by case id)."""
    split_of = dict(zip(manifest["case_id"].astype(str), manifest["split"].astype(str), strict=True))
    return detected.assign(split=detected["case_id"].astype(str).map(split_of))


def plausibility_table(detected: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """How the detector's plausibility check judged each split's images: counts only, no case named.

    ``detected``: the detector's landmarks for every case (``case_id``, ``status``, ``score``; see
    ``bmd.study.stages.detected_landmarks``); ``manifest``: the cohort (``case_id``, ``split``). One row per
    split present (train, val, test) and ``all``: ``cases``, ``ok``, ``flagged``, ``failed`` (unreadable),
    ``flagged_pct`` (% of the split) and ``median_score`` (0 is the median of the detector's own calibration
    images, above :data:`FLAG_SCORE` is flagged; NaN for a detector without a plausibility model).
    """
    frame = _with_split(detected, manifest)
    scores = pd.to_numeric(frame["score"], errors="coerce") if "score" in frame else pd.Series(np.nan, frame.index)
    rows: dict[str, dict] = {}
    for name in [*(s for s in SPLITS if (frame["split"] == s).any()), "all"]:
        part = frame.index if name == "all" else frame.index[frame["split"] == name]
        status = frame.loc[part, "status"].astype(str)
        score = scores.loc[part].to_numpy(dtype=float)
        n = len(part)
        row = {"cases": n, **{s: int((status == s).sum()) for s in PLAUSIBILITY_STATUSES}}
        row["flagged_pct"] = 100.0 * row["flagged"] / n if n else float("nan")
        row["median_score"] = float(np.median(score[np.isfinite(score)])) if np.isfinite(score).any() else float("nan")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("split")


def plausibility_counts(detected: pd.DataFrame, manifest: pd.DataFrame) -> dict:
    """:func:`plausibility_table` as the ``landmarks.plausibility`` block of ``summary.json`` (split → counts)."""
    table = plausibility_table(detected, manifest).round({"flagged_pct": 2, "median_score": 4})
    return {split: finite_or_null(row) for split, row in table.to_dict(orient="index").items()}


def plot_plausibility(detected: pd.DataFrame, manifest: pd.DataFrame, clip: float = 10.0):
    """Distribution of the plausibility score per split, with the line above which images are flagged.

    Scores above ``clip`` are drawn at ``clip`` (images far from anything the detector was trained on would
    otherwise squeeze the rest into one bin). Returns the Figure.
    """
    plt = pyplot()
    frame = _with_split(detected, manifest)
    scores = pd.to_numeric(frame["score"], errors="coerce") if "score" in frame else pd.Series(np.nan, frame.index)
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    finite = scores[np.isfinite(scores)]
    if finite.empty:
        ax.text(0.5, 0.5, "This detector has no plausibility model: no scores.", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    shown = finite.clip(upper=clip)
    bins = np.linspace(min(float(shown.min()), -1.0), max(float(shown.max()), 2 * FLAG_SCORE), 31)
    for i, name in enumerate(s for s in SPLITS if (frame["split"] == s).any()):
        part = shown[frame.loc[shown.index, "split"] == name]
        ax.hist(part, bins=bins, histtype="step", linewidth=1.5, color=f"C{i}", label=f"{name} ({len(part)})")
    ax.axvline(FLAG_SCORE, color="black", linestyle="--", linewidth=1)
    ax.text(FLAG_SCORE, 1.0, " flagged →", transform=ax.get_xaxis_transform(), va="top", fontsize=9)
    clipped = f" (drawn at most at {clip:g})" if (finite > clip).any() else ""
    ax.set_xlabel(f"plausibility score{clipped}: 0 typical of the detector's calibration images")
    ax.set_ylabel("images")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0, title="split")
    fig.tight_layout()
    return fig


def detector_accuracy_text(evaluation: dict | None, source: str, plausibility: pd.DataFrame) -> str:
    """The landmarks chapter's paragraph on the detector's accuracy (Markdown).

    ``evaluation``: the test-split summary (``LandmarkEvaluation.summary()``) or None when there is no ground
    truth to measure against; ``source``: ``trained`` (on this cohort's training split) or ``external`` (given
    with ``landmark_model``); ``plausibility``: :func:`plausibility_table`. Flagged images are counted, never
    named.
    """
    parts = []
    if source == "external":
        parts.append("This study did not train its landmark detector: it uses the one it was given "
                     "(`landmark_model`), and every case's regions, training cases included, come from that "
                     "detector's points.")
    if evaluation is None:
        parts.append("**The detector's accuracy on this data is unmeasured**: the manifest has no ground-truth "
                     "landmarks to compare its points with (no `landmarks` column, or none for the test split). "
                     "What can be checked without them is below: whether each image and its detected points look "
                     "like the images the detector was calibrated on (the plausibility score), and, where images "
                     "may be shown, the points themselves. A plausible image is not an accurate one; annotating "
                     "some test images (see the appendix on landmark annotations) measures the error.")
    else:
        own = "its own training" if source == "external" else "the training"
        parts.append(
            f"On the {evaluation['n']} test images with ground-truth landmarks the detector's mean radial error is "
            f"{evaluation['mean_error_pct']:.2f} % of the image width (95th percentile "
            f"{evaluation['p95_error_pct']:.2f} %). The mean shape of {own} images placed in the image frame is "
            f"off by {evaluation['baselines']['mean_shape']['mean_error_pct']:.2f} %, and the global stage alone "
            "(the affine alignment before the local stages) by "
            f"{evaluation['baselines']['global_only']['mean_error_pct']:.2f} %.")
    if "all" in plausibility.index:
        all_ = plausibility.loc["all"]
        per = ", ".join(f"{split} {int(row['flagged'])} of {int(row['cases'])}"
                        for split, row in plausibility.iterrows() if split != "all")
        failed = int(all_["failed"])
        parts.append(f"The plausibility check flagged {int(all_['flagged'])} of {int(all_['cases'])} images ({per})"
                     + (f"; {failed} could not be read" if failed else "") + ".")
    return " ".join(parts)
