"""The study's expensive stages, each built once and reused: the landmark detector and the ROI cache.

Notebooks call one function per stage; each records its time and its numbers in ``summary.json``
and returns what the next stage needs. Each artifact (the detector, its landmarks and evaluation, the ROI
cache, a training run, the exported bundle, a table's rows) is reused while the key of its inputs is
unchanged (:mod:`bmd.infra.artifacts`), so a rebuild with nothing changed retrains nothing; a process
building the same artifact is waited for, and its result reused.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import COORD_COLUMNS
from bmd.deploy.bundle import export_bundle
from bmd.evaluation import metrics, radiomics, screening
from bmd.evaluation import predictions as prediction_frames
from bmd.evaluation.baselines import age_sex_baseline, roi_intensity_baseline, roi_intensity_features
from bmd.evaluation.metrics import pearson_r
from bmd.evaluation.predictions import ensemble
from bmd.evaluation.radiomics import radiomics_baseline
from bmd.infra import formatting, jobs, paths, progress
from bmd.infra.artifacts import Artifact, file_stamp, inputs_key
from bmd.infra.atomic import write_bytes, write_text
from bmd.infra.digests import sha256_bytes, sha256_file, sha256_files, sha256_json
from bmd.inputs import paper, tscores
from bmd.landmarks.annotations import manifest_landmarks
from bmd.landmarks.detector import (
    LandmarkEvaluation,
    evaluate_landmarks,
    predict_landmarks,
    recipe_for_profile,
)
from bmd.landmarks.fit import train_landmark_model
from bmd.landmarks.folder import detector_digest, read_detector_config
from bmd.landmarks.plausibility import DESCRIPTORS as PLAUSIBILITY_DESCRIPTORS
from bmd.rois.cache import build_roi_cache
from bmd.study import ablation, report, summary
from bmd.study.ablation import attention_study
from bmd.study.cohort import Cohort, check_landmark_source
from bmd.study.config import Profile
from bmd.study.experiments import ENSEMBLES, run_cost, table_models, train_config, train_model


def detector_folder(cfg: Profile, out: str | Path | None = None) -> Path:
    """The detector the study uses: the given one (``cfg.landmark_model``), else the one it trains in its run
    folder (``runs/<profile>/landmark_model``)."""
    if cfg.landmark_model is not None:
        return Path(cfg.landmark_model).expanduser().resolve()
    return paths.run_dir(cfg.profile, out) / "landmark_model"


def detector_source(cfg: Profile) -> str:
    """``external`` for a given detector (``cfg.landmark_model``), ``trained`` for one the study trains."""
    return "external" if cfg.landmark_model is not None else "trained"


def landmark_detector(cfg: Profile, cohort: Cohort, out: str | Path | None = None) -> Path:
    """The landmark detector's folder: the given one (``cfg.landmark_model``, used as it is), else the one
    trained on the cohort's train split (or reused).

    A trained detector is reused while its key (:func:`detector_inputs`) is unchanged; a process training the
    same detector is waited for and its detector reused. Without a given detector, a cohort whose train and
    val cases lack ground-truth landmarks is refused in one line before any training
    (:func:`bmd.study.cohort.check_landmark_source`).
    """

    if cfg.landmark_model is not None:
        return _given_detector(cfg, out)
    check_landmark_source(cfg, cohort)
    detector = detector_folder(cfg, out)
    recipe = recipe_for_profile(cfg)
    start = time.perf_counter()
    inputs = detector_inputs(cohort, recipe)

    def make() -> None:
        progress.note(f"training the landmark detector ({recipe['epochs']} epochs)")
        train_landmark_model(cohort.manifest_path, detector, progress=False, log=progress.note, **recipe)

    built = Artifact(detector, "the landmark detector").build(
        inputs_key(inputs), make, inputs=inputs, valid=lambda: (detector / "weights.pt").is_file(),
        legacy=lambda: _detector_matches(detector, cohort.manifest_path, recipe))
    if not built:
        progress.note("landmark detector: reused")
    path = summary.summary_path(cfg.profile, out)
    summary.record_timing(path, "landmarks", time.perf_counter() - start)
    summary.update(path, artifacts={"landmark_model": str(detector.relative_to(paths.out_root(out)))},
                   landmarks={"source": "trained", "detector_sha256": None})
    return detector


def _given_detector(cfg: Profile, out: str | Path | None = None) -> Path:
    """A detector given as ``cfg.landmark_model``: checked (one line when unusable), recorded in ``summary.json``
    by its content digest (never its path: the run's results do not depend on where it lies), not trained."""

    start = time.perf_counter()
    detector = detector_folder(cfg, out)
    read_detector_config(detector)
    progress.note("landmark detector: the given one (landmark_model), nothing trained")
    path = summary.summary_path(cfg.profile, out)
    summary.record_timing(path, "landmarks", time.perf_counter() - start)
    summary.update(path, landmarks={"source": "external", "detector_sha256": detector_digest(detector)})
    return detector


def _truth_files(cohort: Cohort) -> list[str]:
    """The manifest's ground-truth landmark files."""
    manifest = cohort.manifest
    return sorted(set(manifest["landmarks_path"]) - {""}) if "landmarks_path" in manifest else []


def detector_inputs(cohort: Cohort, recipe: dict) -> dict:
    """What the detector is trained from: the manifest and its landmark files (content digests), the recipe
    and the plausibility check's descriptors (a detector saved with other ones is refitted)."""
    return {"manifest": [str(cohort.manifest_path), sha256_file(cohort.manifest_path)],
            "landmarks": [[p, sha256_file(p)] for p in _truth_files(cohort)], "recipe": recipe,
            "plausibility": PLAUSIBILITY_DESCRIPTORS}


def _detector_matches(detector: Path, manifest: Path, recipe: dict) -> bool:
    """The rule before stamps: a detector trained on this manifest path with this recipe."""
    try:
        info = json.loads((detector / "config.json").read_text())
    except (OSError, ValueError):
        return False
    training = info.get("training", {})
    return (info.get("plausibility", {}).get("descriptors") == PLAUSIBILITY_DESCRIPTORS
            and training.get("manifest") == str(manifest) and training.get("epochs") == recipe["epochs"]
            and training.get("seed") == recipe["seed"] and training.get("batch_size") == recipe["batch_size"]
            and info.get("model", {}).get("input_size") == recipe["input_size"])


@dataclass
class LandmarkResults:
    """Detector accuracy on the test split and the landmark tables the ROI stage uses."""

    evaluation: LandmarkEvaluation | None  # None: not asked for, or no ground truth to measure against
    detected: pd.DataFrame  # case_id, 32 coordinates, status, plausibility, score, width: every case
    ground_truth: pd.DataFrame | None  # case_id + 32 coordinates from the manifest's landmark files
    source: str = "trained"  # "trained" here, or "external" (a given detector, cfg.landmark_model)

    def plausibility(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """Per split: images passed, flagged and failed by the detector's plausibility check (counts only)."""
        return report.plausibility_table(self.detected, manifest)

    def accuracy_text(self, manifest: pd.DataFrame) -> str:
        """What the book says about the detector's accuracy on this data (Markdown): the test-split errors, or
        plainly that they are unmeasured for want of ground truth."""
        return report.detector_accuracy_text(None if self.evaluation is None else self.evaluation.summary(),
                                             self.source, self.plausibility(manifest))


def ground_truth_landmarks(cohort: Cohort) -> pd.DataFrame | None:
    """The manifest's ground-truth landmarks (case_id + 32 columns), or None when it has none.

    Landmark files keyed by ``case_id`` or by ``image`` alike (:func:`bmd.landmarks.annotations.manifest_landmarks`).
    """
    return manifest_landmarks(cohort.manifest)


#: The columns of the detected landmarks besides ``case_id`` and the 32 coordinates.
DETECTED_EXTRA_COLUMNS: tuple[str, ...] = ("status", "plausibility", "score", "width")


def detected_landmarks(cfg: Profile, cohort: Cohort, detector: Path, out: str | Path | None = None) -> pd.DataFrame:
    """Detector landmarks for every case (case_id, 32 coordinates, then :data:`DETECTED_EXTRA_COLUMNS`),
    computed once per detector (its content digest, not its folder) and list of images."""

    saved = paths.run_dir(cfg.profile, out) / "landmarks_detected.csv"
    weights = detector / "weights.pt"
    cases = [str(c) for c in cohort.manifest["case_id"]]
    inputs = {"detector": detector_digest(detector), "cases": sha256_json(cases),
              "images": sha256_json([str(p) for p in cohort.manifest["image_path"]]),
              "columns": list(DETECTED_EXTRA_COLUMNS)}

    made: list[pd.DataFrame] = []

    def make() -> None:
        pred = predict_landmarks(detector, list(cohort.manifest["image_path"]))
        detected = pd.DataFrame(pred.points.reshape(len(cohort.manifest), -1), columns=list(COORD_COLUMNS))
        detected.insert(0, "case_id", cohort.manifest["case_id"].to_numpy())
        detected["status"] = pred.status
        detected["plausibility"] = pred.plausibility
        detected["score"] = pred.score
        detected["width"] = pred.widths
        write_text(saved, detected.to_csv(index=False))
        made.append(detected)

    def legacy() -> bool:  # the rule before stamps: newer than the weights, the same cases (and today's columns)
        table = pd.read_csv(saved, dtype={"case_id": str})
        return (saved.stat().st_mtime_ns >= weights.stat().st_mtime_ns and list(table["case_id"]) == cases
                and set(DETECTED_EXTRA_COLUMNS) <= set(table.columns))

    Artifact(saved, "the detector's landmarks", folder=False).build(inputs_key(inputs), make, inputs=inputs,
                                                                    legacy=legacy)
    # the frame just computed when built here (as before stamps), else the saved one
    return made[0] if made else pd.read_csv(saved, dtype={"case_id": str})


def evaluate_detector(cfg: Profile, cohort: Cohort, detector: Path, out: str | Path | None = None,
                      evaluate: bool = True) -> LandmarkResults:
    """Detector landmarks for every case and, with ``evaluate``, what the landmarks chapter reports.

    ``evaluate`` measures the test-split errors (model, mean shape, global stage) against the ground truth of
    the test cases that have some, for a trained and a given detector alike, and records in ``summary.json``'s
    ``landmarks`` block: the errors (null, with ``accuracy`` saying why, when no test case has ground truth),
    the detector's ``source`` and the plausibility counts per split (:func:`bmd.study.report.plausibility_table`;
    counts only, no case named).
    """

    truth = ground_truth_landmarks(cohort)
    detected = detected_landmarks(cfg, cohort, detector, out)
    source = detector_source(cfg)
    evaluation = None
    if evaluate:
        test = cohort.manifest[cohort.manifest["split"] == "test"]
        if truth is not None:
            test = test[test["case_id"].astype(str).isin(set(truth["case_id"].astype(str)))]
        if truth is not None and len(test):
            saved = paths.run_dir(cfg.profile, out) / "landmark_eval_test.json"
            with _evaluation_artifact(saved).holding():  # one process evaluates, the others wait and read it
                evaluation = _saved_evaluation(saved, detector, cohort)
                if evaluation is None:
                    # the loaded manifest (its split assigned when the file has none), annotated test cases only
                    evaluation = evaluate_landmarks(detector, test, split="test")
                    _save_evaluation(saved, evaluation, detector, cohort)
            block = evaluation.summary()
        else:
            block = {"mean_error_pct": None, "p95_error_pct": None}
        block["accuracy"] = ("measured on the test split against ground-truth landmarks" if evaluation is not None
                             else "unmeasured: no ground-truth landmarks for the test split")
        block["source"] = source
        block["plausibility"] = report.plausibility_counts(detected, cohort.manifest)
        summary.update(summary.summary_path(cfg.profile, out), landmarks=block)
    return LandmarkResults(evaluation, detected, truth, source)


def _evaluation_key(detector: Path, cohort: Cohort) -> str:
    """The key of a saved detector evaluation: the detector's content digest, the manifest and its landmark
    files (path, size, mtime), and the landmark code that scores them."""
    inputs = {"detector": detector_digest(detector), "manifest": file_stamp(cohort.manifest_path),
              "landmarks": [file_stamp(p) for p in _truth_files(cohort)],
              "code": sha256_files(sorted((paths.package_dir() / "landmarks").glob("*.py")))}
    return inputs_key(inputs)


def _evaluation_artifact(path: Path) -> Artifact:
    return Artifact(path, "the detector evaluation", folder=False)


def _save_evaluation(path: Path, evaluation, detector: Path, cohort: Cohort) -> None:
    _evaluation_artifact(path).clear()
    write_text(path, json.dumps(evaluation.to_dict()))
    _evaluation_artifact(path).mark(_evaluation_key(detector, cohort))


def _saved_evaluation(path: Path, detector: Path, cohort: Cohort):
    """The saved test-split evaluation when it was made from these weights and this manifest, else None."""

    if not _evaluation_artifact(path).is_current(_evaluation_key(detector, cohort)):
        return None
    try:
        return LandmarkEvaluation.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: evaluate again


def roi_cache(cfg: Profile, cohort: Cohort, results: LandmarkResults, detector: Path, out: str | Path | None = None):
    """Crop every case once: detector landmarks for val/test, ground truth jittered like the detector for train.

    Training crops come from ground truth plus Gaussian jitter with the detector's validation error, so
    that train and test crops are alike (without ground truth every split uses the detector). A given
    detector (``cfg.landmark_model``) crops every split at its own points, ground truth or not: it never saw
    this cohort, so its points on training cases are as good as on test cases, and the crops are then those
    it would give in use.
    """

    start = time.perf_counter()
    progress.note("ROI crops: building or checking the cache")
    marks = results.detected[["case_id", *COORD_COLUMNS]].set_index("case_id")
    source = "detector"
    if cfg.landmark_model is not None:
        source = f"all:external_detector(sha256:{detector_digest(detector)[:16]})"
    elif results.ground_truth is not None:
        truth = results.ground_truth.set_index("case_id")
        train_ids = [c for c in cohort.manifest.loc[cohort.manifest["split"] == "train", "case_id"] if c in truth.index]
        width = results.detected.set_index("case_id").loc[train_ids, "width"].to_numpy(dtype=float)
        sd_pct = _jitter_pct(detector)
        rng = np.random.default_rng(cfg.seed)
        noise = rng.normal(0, 1, (len(train_ids), 32)) * (sd_pct / 100 * width)[:, None]
        marks.loc[train_ids] = truth.loc[train_ids].to_numpy() + noise
        source = f"train:ground_truth+jitter({sd_pct:.3f}%),val/test:detector"
    cache = build_roi_cache(cohort.manifest, marks.reset_index(), paths.run_dir(cfg.profile, out) / "roi_cache",
                            cfg.roi_size, cfg.chest_size, source=source)
    summary.record_timing(summary.summary_path(cfg.profile, out), "rois", time.perf_counter() - start)
    return cache


def _jitter_pct(detector: Path) -> float:
    """Per-coordinate SD (% of width) matching the detector's mean radial error on the validation split.

    The validation error (recorded in the detector's config) sets it, so no test-split information reaches training.
    """
    info = json.loads((detector / "config.json").read_text())
    mean_radial = float(info["val_errors"]["model"]["mean_error_pct"])
    return mean_radial / np.sqrt(np.pi / 2)  # a 2-D Gaussian with this SD per axis has this mean radius


def train_models(cfg: Profile, cohort: Cohort, cache, specs: list, out: str | Path | None = None) -> dict[str, Path]:
    """Train (or reuse) each model spec on the ROI cache through the DDP entry point; name → run folder.

    ``cfg.train_parallel`` runs train at once on a fixed share of the cores (:mod:`bmd.infra.jobs`); a run
    that another starts from (the multi-ROI model, for the attention model) trains alone, with every core,
    before it. The longer runs start first (:func:`bmd.study.experiments.run_cost`).
    """

    start = time.perf_counter()
    runs = paths.run_dir(cfg.profile, out) / "models"
    drafts = {spec.name: train_config(spec, cfg, cache.path, cohort.manifest_path, runs) for spec in specs}
    folders = {Path(c.run_dir): name for name, c in drafts.items()}

    def job(i: int, spec) -> jobs.Job:
        draft = drafts[spec.name]
        source = folders.get(Path(draft.init_from).parent) if draft.init_from else None
        after = (source,) if source and source != spec.name else ()

        def run(threads: int) -> Path:
            # a run started from another's weights is made again once they exist: they key it
            config = train_config(spec, cfg, cache.path, cohort.manifest_path, runs) if after else draft
            progress.note(f"model {i}/{len(specs)}: {spec.name}")
            return train_model(config, nproc=cfg.train_nproc, threads=max(1, threads // cfg.train_nproc))

        return jobs.Job(spec.name, run, after, cost=run_cost(draft, cfg))

    done = jobs.run_jobs([job(i, spec) for i, spec in enumerate(specs, 1)], slots=cfg.train_parallel)
    summary.record_timing(summary.summary_path(cfg.profile, out), "training", time.perf_counter() - start)
    return {spec.name: done[spec.name] for spec in specs}


def predictions(run: Path) -> pd.DataFrame:
    """The saved val/test predictions of a training run."""
    return pd.read_csv(run / "predictions.csv", dtype={"case_id": str, "patient_id": str})


def baseline_predictions(cohort: Cohort, cache) -> dict[str, pd.DataFrame]:
    """The baselines' val/test predictions: ``age_sex``, ``roi_intensity`` and ``radiomics`` (on the ROI cache)."""

    manifest = _cache_manifest(cohort, cache)
    features = roi_intensity_features(np.asarray(cache.chest), np.asarray(cache.local))
    return {"age_sex": age_sex_baseline(manifest), "roi_intensity": roi_intensity_baseline(manifest, features),
            "radiomics": radiomics_predictions(cohort, cache)}


def _cache_manifest(cohort: Cohort, cache) -> pd.DataFrame:
    """The manifest's rows in the ROI cache's case order."""
    return cohort.manifest.set_index("case_id").loc[cache.case_ids].reset_index()


def radiomics_predictions(cohort: Cohort, cache) -> pd.DataFrame:
    """Val/test predictions of the hand-crafted ``radiomics`` ridge (:mod:`bmd.evaluation.radiomics`) on the ROI cache."""

    return radiomics_baseline(_cache_manifest(cohort, cache), radiomics_features(cache))


def radiomics_features(cache) -> np.ndarray:
    """:func:`bmd.evaluation.radiomics.radiomics_features` of the ROI cache, computed once per cache content and code.

    Every results table needs the radiomics predictions (its ΔR reference), so the features are saved
    beside the cache (``radiomics_features.npy``), keyed by the checksums of the crop files and the
    bytes of the feature code; anything else is recomputed (a few seconds on the quick cohort).
    """
    files = cache.meta.get("files", {})
    sums = [files.get(name, {}).get("sha256") for name in ("chest.npy", "local.npy", "case_ids.txt")]
    if None in sums:  # a cache without checksums: nothing to key a saved copy by
        return radiomics.radiomics_features(cache.chest, cache.local)
    inputs = {"crops": sums, "code": sha256_files([radiomics.__file__])}
    saved = Path(cache.path).parent / "radiomics_features.npy"

    def make() -> None:
        features = radiomics.radiomics_features(cache.chest, cache.local)
        for stale in saved.parent.glob("radiomics_features-*.npy"):  # keyed copies of an earlier version
            stale.unlink(missing_ok=True)
        buf = io.BytesIO()
        np.save(buf, features, allow_pickle=False)
        write_bytes(saved, buf.getvalue())

    def valid() -> bool:
        return np.load(saved, mmap_mode="r", allow_pickle=False).shape[0] == len(cache.case_ids)

    Artifact(saved, "the radiomics features", folder=False).build(inputs_key(inputs), make, inputs=inputs,
                                                                 valid=valid)
    return np.load(saved, allow_pickle=False)


def run_verdict(run: Path) -> tuple[bool, str]:
    """(converged, reason) of a training run, from its ``metrics.json`` (runs written before the flag
    existed count as converged)."""
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    converged = bool(metrics.get("converged", True))
    return converged, "" if converged else (metrics.get("reason") or "did not converge")


def run_converged(run: Path) -> bool:
    """Whether a training run converged (:func:`run_verdict`)."""
    return run_verdict(run)[0]


def failed_runs(results: TableResults) -> dict[str, str]:
    """Row label → why its training run did not learn, for the runs of a table that did not converge;
    empty when every model learned."""
    verdicts = {label: run_verdict(run) for label, run in results.runs.items()}
    return {label: reason for label, (ok, reason) in verdicts.items() if not ok}


@dataclass
class TableResults:
    """One results table: its rows (the ``summary.json`` layout), the predictions behind each row and the runs."""

    table: str
    rows: list[dict]
    frames: dict[str, pd.DataFrame]  # row label → val/test predictions frame
    runs: dict[str, Path]  # row label → training run folder (ensembles and baselines have none)
    reference: pd.DataFrame | None = None  # the radiomics baseline's predictions, the ΔR reference

    def avg(self) -> dict[str, dict]:
        """Row label → its ``avg`` row (the mean over L1–L4)."""
        return {r["model"]: r for r in self.rows if r["vertebra"] == "avg"}


def prepare_rois(cfg: Profile, cohort: Cohort, out: str | Path | None = None):
    """The landmark detector and the ROI cache every model trains on (both built once, then reused)."""
    detector = landmark_detector(cfg, cohort, out)
    return roi_cache(cfg, cohort, evaluate_detector(cfg, cohort, detector, out, evaluate=False), detector, out)


def table_results(cfg: Profile, cohort: Cohort, table: str, out: str | Path | None = None,
                  baselines: bool = False) -> TableResults:
    """Train (or reuse) the models of ``table1``/``table2``, or ensemble saved predictions for ``table3``.

    Every model is trained once through the DDP entry point; the rows (test-split R and AUC with
    patient-level bootstrap CIs, the paper's values and, on the twin, the ceilings) are recorded in
    ``summary.json`` under ``tables.<table>``. ``baselines`` adds the ``age_sex``, ``roi_intensity``
    and ``radiomics`` rows. Every table's deep models carry ΔR against the ``radiomics`` baseline
    (computed here for Tables 1 and 3 too) and their runs' ``converged`` flags.
    """

    cache = prepare_rois(cfg, cohort, out)
    if table == "table3":
        # only the ensembles' members (Table 2's attention model is no member: the ensembles are the paper's)
        members = {name for names in ENSEMBLES.values() for name in names}
        specs = {spec.name: spec for spec in table_models()["table2"].values() if spec.name in members}
        trained = train_models(cfg, cohort, cache, list(specs.values()), out)
        saved = {name: predictions(run) for name, run in trained.items()}
        frames = {label: ensemble([saved[name] for name in members]) for label, members in ENSEMBLES.items()}
        # an ensemble is as converged as its least converged member
        converged = {label: all(run_converged(trained[name]) for name in members)
                     for label, members in ENSEMBLES.items()}
        runs: dict[str, Path] = {}
    else:
        specs = table_models()[table]
        trained = train_models(cfg, cohort, cache, list(specs.values()), out)
        runs = {label: trained[spec.name] for label, spec in specs.items()}
        frames = {label: predictions(run) for label, run in runs.items()}
        converged = {label: run_converged(run) for label, run in runs.items()}
    if baselines:
        frames.update(baseline_predictions(cohort, cache))
    # every table's deep models are compared with the same hand-crafted reference (its row is Table 2's)
    reference = frames["radiomics"] if "radiomics" in frames else radiomics_predictions(cohort, cache)
    rows = _results_rows(cfg, table, frames, cohort.oracle, out, reference=reference, converged=converged)
    summary.update(summary.summary_path(cfg.profile, out), tables={table: rows})
    return TableResults(table, rows, frames, runs, reference)


#: What a table's rows are computed from besides the predictions: the metric code and the paper's values.
#: Named by module, not by path, so that moving a module cannot break the key.
_ROW_INPUTS = (metrics, prediction_frames, radiomics, report, formatting, paper, tscores, summary)


def _results_rows(cfg: Profile, table: str, frames: dict[str, pd.DataFrame], oracle: dict | None,
                  out: str | Path | None = None, reference: pd.DataFrame | None = None,
                  converged: dict[str, bool] | None = None) -> list[dict]:
    """:func:`bmd.study.report.results_rows`, reused when the same predictions, seed, ceilings and code made them.

    The bootstrap CIs are the costly part of a rebuild and several chapters show the same table, so
    rows are saved under ``rows/`` in the run folder with the key of everything they depend on (the ΔR
    reference's predictions and the runs' convergence flags included; :mod:`bmd.infra.artifacts`).
    """

    inputs = {
        "code": sha256_files([*(module.__file__ for module in _ROW_INPUTS), paths.paper_results_file()]),
        "table": table, "seed": cfg.seed, "ceilings": (oracle or {}).get("ceilings"), "converged": converged,
        "frames": {label: sha256_bytes(frame.to_csv(index=False).encode()) for label, frame in frames.items()},
        "reference": None if reference is None else sha256_bytes(reference.to_csv(index=False).encode()),
    }
    folder = paths.run_dir(cfg.profile, out) / "rows"
    saved = folder / f"{table}.json"

    made: list[list[dict]] = []

    def make() -> None:
        rows = report.results_rows(table, frames, oracle, seed=cfg.seed, reference=reference, converged=converged)
        for stale in folder.glob(f"{table}-*.json"):  # keyed copies of an earlier version
            stale.unlink(missing_ok=True)
        write_text(saved, json.dumps(rows, allow_nan=False))  # rows are JSON-clean: NaN is already None
        made.append(rows)

    Artifact(saved, f"the {table} rows", folder=False).build(inputs_key(inputs), make, inputs=inputs)
    return made[0] if made else json.loads(saved.read_text())


#: Table 2 rows that may become the exported model, in order of preference on a tie (the paper's first).
EXPORT_CANDIDATES: tuple[str, ...] = ("multi_roi", "attention")


def validation_r(frame: pd.DataFrame) -> float:
    """Mean over L1–L4 of Pearson R on the **validation** split of a predictions frame (NaN when undefined)."""

    part = frame[frame["split"] == "val"]
    rs = [pearson_r(part[f"pred_{v}"].to_numpy(float), part[f"bmd_{v}"].to_numpy(float))
          for v in ("l1", "l2", "l3", "l4")]
    rs = [r for r in rs if np.isfinite(r)]
    return float(np.mean(rs)) if rs else float("nan")


def choose_exported_model(table2: TableResults) -> tuple[str, dict[str, float]]:
    """The Table 2 model to export and every candidate's validation R (mean over L1–L4).

    The attention model replaces the paper's multi-ROI model only when its validation R is higher;
    the test split never takes part in the choice.
    """
    scores = {label: validation_r(table2.frames[label]) for label in EXPORT_CANDIDATES if label in table2.runs}
    best = EXPORT_CANDIDATES[0]
    for label, r in scores.items():
        if np.isfinite(r) and (not np.isfinite(scores[best]) or r > scores[best]):
            best = label
    return best, scores


def export_model(cfg: Profile, table2: TableResults, out: str | Path | None = None) -> Path:
    """Export the book's model with its landmark detector as the bundle ``bmd predict`` takes.

    The exported model is the multi-ROI model, or the attention model when its validation R is higher
    (:func:`choose_exported_model`). Written to ``runs/<profile>/bundles/<model>`` (re-exported only when
    the run's weights or the detector's content changed) and named in ``summary.json``'s
    ``artifacts.multi_roi_model`` (the key the results contract keeps); ``exported_model`` records which model
    it is and the validation R behind the choice. The bundle carries the detector the crops were cut with: the
    one trained in the run folder, or the given one (``cfg.landmark_model``).
    """

    label, scores = choose_exported_model(table2)
    run = table2.runs[label]
    run_root = paths.run_dir(cfg.profile, out)
    dest = run_root / "bundles" / label
    detector = detector_folder(cfg, out)  # the detector the crops were cut with, trained here or given
    inputs = {"model": label, "run": file_stamp(run / "best.pt"), "detector": detector_digest(detector)}

    def legacy() -> bool:  # the rule before stamps: exported after the run and the detector were last written
        made = (dest / "bundle.json").stat().st_mtime_ns
        return all(src.stat().st_mtime_ns <= made for src in (run / "best.pt", detector / "weights.pt"))

    Artifact(dest, f"the model bundle {label}").build(
        inputs_key(inputs), lambda: export_bundle(run, detector, dest), inputs=inputs,
        valid=lambda: (dest / "bundle.json").is_file(), legacy=legacy)
    path = summary.summary_path(cfg.profile, out)
    summary.update(path, artifacts={"multi_roi_model": str(dest.relative_to(paths.out_root(out)))},
                   exported_model={"model": label, "val_r": {k: (v if np.isfinite(v) else None)
                                                             for k, v in scores.items()},
                                   "rule": "the higher validation R (mean over L1–L4) of multi_roi and attention"})
    return dest


#: The earlier name of :func:`export_model` (it always exported the multi-ROI model then).
export_multi_roi = export_model


def attention_results(cfg: Profile, cohort: Cohort, table2: TableResults, out: str | Path | None = None):
    """What the attention model attends to on the test split (:func:`bmd.study.ablation.attention_study`):
    one pass of the test crops through it; the mean attention and the ablation go to ``summary.json``."""

    cache = prepare_rois(cfg, cohort, out)
    study = attention_study(table2.runs["attention"], cache, cohort.manifest)
    summary.update(summary.summary_path(cfg.profile, out), attention={
        "mean_weights": {v: {roi: float(w) for roi, w in row.items()} for v, row in study.mean().iterrows()},
        "weights": "last layer, averaged over heads, mean over the test split",
        "roi_ablation": _records(study.ablation)})
    return study


@dataclass
class ScreeningResults:
    """Everything the screening chapter shows, computed from saved predictions (nothing retrained)."""

    frames: dict[str, pd.DataFrame]  # multi_roi, the best ensemble (chosen on validation), age_sex
    recalibrated: dict[str, pd.DataFrame]  # the image models after the validation-split recalibration
    recalibration_error: str | None  # why a model could not be recalibrated (its raw output is kept), or None
    operating_points: pd.DataFrame  # bmd.evaluation.screening.operating_point_table, endpoints lowest and mean
    who: dict[str, tuple[pd.DataFrame, float]]  # "raw"/"recalibrated" → (confusion matrix, weighted kappa)
    subgroups: pd.DataFrame
    agreement: pd.DataFrame
    ablation: pd.DataFrame
    weights: pd.DataFrame
    rows: list[dict]  # table rows (R/AUC with CIs) of the models shown


def screening_results(cfg: Profile, cohort: Cohort, out: str | Path | None = None) -> ScreeningResults:
    """The screening chapter's numbers: operating points, WHO categories, subgroups, agreement, ROI roles."""

    t2 = table_results(cfg, cohort, "table2", out, baselines=True)
    t3 = table_results(cfg, cohort, "table3", out)
    best_ensemble = screening.best_on_validation({k: t3.frames[k] for k in ("ensm_roi", "ensm_all")})
    frames = {"multi_roi": t2.frames["multi_roi"], best_ensemble: t3.frames[best_ensemble],
              "age_sex": t2.frames["age_sex"]}
    # image models only: inverting the weak age+sex regression would only amplify noise
    recal, recal_error = {}, None
    for name, frame in frames.items():
        if name == "age_sex":
            continue
        try:
            recal[name] = screening.Recalibration.fit(frame).apply(frame)
        except ValueError as exc:  # e.g. a model that did not learn (tiny cohorts): say so, keep the raw output
            recal[name], recal_error = frame, f"{name}: {exc}"
    ops = pd.concat([screening.operating_point_table(frames, endpoint) for endpoint in ("lowest", "mean")],
                    ignore_index=True)
    who = {"raw": screening.who_confusion(frames["multi_roi"]),
           "recalibrated": screening.who_confusion(recal["multi_roi"])}
    cache = prepare_rois(cfg, cohort, out)
    run = t2.runs["multi_roi"]
    result = ScreeningResults(
        frames=frames, recalibrated=recal, recalibration_error=recal_error, operating_points=ops, who=who,
        subgroups=screening.subgroup_table(frames, cohort.manifest),
        agreement=screening.agreement_table(frames),
        ablation=ablation.roi_ablation(run, cache, cohort.manifest),
        weights=ablation.joint_weight_norms(run),
        rows=[r for r in t2.rows + t3.rows if r["model"] in frames],
    )
    summary.update(summary.summary_path(cfg.profile, out), screening={
        "best_ensemble": best_ensemble, "recalibration_error": recal_error,
        "operating_points": _records(ops),
        "who": {k: {"matrix": m.to_dict(), "weighted_kappa": kappa} for k, (m, kappa) in who.items()},
        "subgroups": _records(result.subgroups),
        "agreement": _records(result.agreement),
        "roi_ablation": _records(result.ablation),
        "joint_weight_share": _records(result.weights),
    })
    return result


def _records(df: pd.DataFrame) -> list[dict]:
    """JSON-ready records (NaN → None)."""
    return json.loads(df.to_json(orient="records"))
