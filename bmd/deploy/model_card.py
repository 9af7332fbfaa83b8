"""The ``MODEL_CARD.md`` of a model bundle, written from its ``bundle.json`` description.

:func:`render_model_card` turns the description :func:`bmd.deploy.bundle.export_bundle` writes (model,
inputs, T-score settings, calibration, training data, test performance, provenance) into a short
Markdown page for the people who receive the bundle. Every fact on the card is in ``bundle.json``
too, so the card can be regenerated from it; it holds no path and no case or patient id.

Sections (:data:`CARD_SECTIONS`): the model, intended use, training data, test performance,
calibration, input requirements and known limits.
"""

from __future__ import annotations

import math
from typing import Any

CARD_SECTIONS: tuple[str, ...] = ("Model", "Intended use", "Training data", "Test performance", "Calibration",
                                  "Input requirements", "Known limits")
"""The level-2 headings of every model card, in order."""

_FAMILY_TEXT = {"chest": "the whole chest", "cervi": "the cervical spine", "clavi": "the two clavicles",
                "ribcage": "the two rib cages", "lumbar": "the T12 (lowest visible spine) region"}


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{float(x):.{digits}f}"


def _with_ci(row: dict, key: str, digits: int = 3) -> str:
    point, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if point is None or (isinstance(point, float) and not math.isfinite(point)):
        return "n/a"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return _num(point, digits)
    return f"{_num(point, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _model_section(info: dict) -> list[str]:
    model, cfg = info["model"], info.get("provenance", {}).get("training_config", {})
    regions = "7 regions (the whole chest and 6 local crops placed from 16 detected landmarks) through one shared backbone"
    what = {"multi_roi": f"multi-ROI model: {regions}; the joint head's output is the prediction",
            "attention": f"multi-ROI model with attention over the ROIs: {regions}; each region's feature plus a "
                         "learned embedding of its anatomy is a token, and one readout token per vertebra attends "
                         "over the 7 tokens (a small transformer) and gives that vertebra's prediction"
            }.get(model["kind"], f"ROI model on {_FAMILY_TEXT.get(model['family'], model['family'])}")
    init = cfg.get("pretrained") or "random"
    ts = info["t_scores"]
    return [
        "## Model", "",
        "- **Task**: lumbar-spine bone mineral density of L1, L2, L3 and L4 (g/cm², as DXA measures it) "
        "from one frontal chest radiograph.",
        f"- **Architecture**: {what}; backbone {model['backbone']}, width {model['width']}, "
        f"batch norm {'yes' if model['batch_norm'] else 'no'}, initialised from {init} weights.",
        f"- **Outputs** (`bmd predict`): BMD L1–L4, T-scores with the `{ts['reference']}` reference table "
        f"(sex {ts['sex']} unless `--sex` says otherwise) and the WHO category of the lowest vertebra T-score "
        f"(osteoporosis at T ≤ {ts['threshold']}); a `calibration` column says whether the numbers were "
        "recalibrated.",
        f"- **Exported**: {info.get('created', 'n/a')} with bmd "
        f"{info.get('provenance', {}).get('versions', {}).get('bmd', 'n/a')}; best validation epoch "
        f"{info.get('provenance', {}).get('best_epoch', 'n/a')}.", "",
    ]


def _intended_use() -> list[str]:
    return [
        "## Intended use", "",
        "Research only: opportunistic-screening studies of osteoporosis on chest radiographs that were taken "
        "anyway, and the reproduction of Wang et al. (arXiv:2104.01734). **This is not a diagnostic device**: "
        "it is not cleared or approved for clinical use, its output must not guide the care of a patient, and "
        "it does not replace DXA. T-scores and WHO categories are meant for people aged 50 and over and "
        "post-menopausal women.", "",
    ]


def _training_section(info: dict) -> list[str]:
    data = info.get("training_data", {})
    cfg = info.get("provenance", {}).get("training_config", {})
    sizes = data.get("split_sizes", {})
    lines = ["## Training data", ""]
    sha = data.get("manifest_sha256") or "n/a"
    if data.get("source") == "twin":
        twin = data.get("twin", {})
        lines.append(f"- **Source**: the synthetic twin cohort of bmd-cxr (`bmd twin`): spec version "
                     f"`{twin.get('spec_version')}`, spec hash `{twin.get('spec_hash')}`, seed {twin.get('seed')}, "
                     f"profile `{twin.get('profile')}`; manifest `{data.get('manifest')}` (SHA-256 `{sha}`). "
                     "No real patient's images or DXA results.")
    elif data:
        lines.append(f"- **Source**: a site's manifest `{data.get('manifest')}` (SHA-256 `{sha}`).")
    else:
        lines.append("- **Source**: not recorded.")

    def n(split: str) -> str:
        return "n/a" if sizes.get(split) is None else str(sizes[split])

    lines += [
        f"- **Split** (by patient): {n('train')} training, {n('val')} validation (best epoch and calibration), "
        f"{n('test')} test cases.",
        f"- **Recipe**: {cfg.get('optimizer', 'n/a')} (lr {cfg.get('lr', 'n/a')}, weight decay "
        f"{cfg.get('weight_decay', 'n/a')}), batch {cfg.get('batch_size', 'n/a')}, {cfg.get('epochs', 'n/a')} "
        f"epochs, schedule {cfg.get('schedule', 'n/a')}, augmentation {'on' if cfg.get('augment') else 'off'}, "
        f"seed {cfg.get('seed', 'n/a')}.", "",
    ]
    return lines


def _performance_section(info: dict) -> list[str]:
    perf = info.get("performance", {}).get("test", {})
    rows = perf.get("rows", [])
    lines = ["## Test performance", ""]
    if not rows or all(r.get("r") is None and r.get("bias") is None for r in rows):
        return [*lines, "Not recorded (the run had no test metrics or predictions).", ""]
    lines.append(f"Held-out test split of the training manifest; {perf.get('ci', '95% CI')} in brackets "
                 f"({perf.get('n_boot', 'n/a')} resamples). R: Pearson correlation with DXA BMD; AUC: osteoporosis "
                 "(DXA T < −2.5) by the predicted T-score; bias: mean of prediction − DXA (g/cm²); MAE: mean "
                 "absolute error (g/cm²). Uncalibrated output (R and AUC are the same after calibration).")
    lines.append("")
    lines += _table(["vertebra", "cases", "R", "AUC", "bias", "MAE"],
                    [[r["vertebra"], str(r.get("n") if r.get("n") is not None else "n/a"), _with_ci(r, "r"),
                      _with_ci(r, "auc"), _with_ci(r, "bias"), _with_ci(r, "mae")] for r in rows])
    if any("calibrated_bias" in r for r in rows):
        lines += ["", "After the validation recalibration (what `bmd predict` reports by default):", ""]
        lines += _table(["vertebra", "bias", "MAE"],
                        [[r["vertebra"], _with_ci(r, "calibrated_bias"), _with_ci(r, "calibrated_mae")]
                         for r in rows])
    return [*lines, ""]


def _calibration_section(info: dict) -> list[str]:
    cal = info.get("calibration") or {"method": "none", "reason": "this bundle predates calibration"}
    lines = ["## Calibration", ""]
    if cal.get("method") != "validation-linear":
        return [*lines, f"None: `bmd predict` reports the network's raw output (`calibration = none`). Reason: "
                        f"{cal.get('reason', 'not recorded')}.", ""]
    lines.append(f"`validation-linear`: a regression output shrinks toward the mean, so its T-scores under-call "
                 f"osteoporosis. Per vertebra, the line `pred = intercept + slope · DXA` was fitted on the "
                 f"{cal.get('n_cases', 'n/a')} validation cases and inverted: `calibrated = scale · raw + offset`. "
                 "`bmd predict` and `bmd evaluate` apply it by default (`calibration = validation-linear`); "
                 "`--raw` gives the network's output (`calibration = none`). T-scores and the category always "
                 "come from the numbers reported.")
    lines.append("")
    lines += _table(["vertebra", "slope", "intercept", "scale", "offset"],
                    [[v, _num(cal["slope"][j], 4), _num(cal["intercept"][j], 4), _num(cal["scale"][j], 4),
                      _num(cal["offset"][j], 4)] for j, v in enumerate(cal.get("vertebrae", []))])
    return [*lines, ""]


def _input_section(info: dict) -> list[str]:
    inputs = info["inputs"]
    return [
        "## Input requirements", "",
        "- One frontal (PA or AP) chest radiograph per file: DICOM (any bit depth, MONOCHROME1 or 2, "
        "compressed transfer syntaxes with the pylibjpeg decoders) or PNG (JPEG is read too); a 2-D "
        "float array in [0, 1], bone bright, through the Python API.",
        f"- At least {inputs['chest_size']} pixels on the shorter side (the whole-chest input side; an image "
        f"is never upsampled). The model sees a {inputs['chest_size']}² chest and six {inputs['roi_size']}² "
        "local crops placed by the bundled landmark detector.",
        "- Images unlike the training radiographs (the detector's plausibility check) or with a non-frontal "
        "DICOM view position are `flagged`: their numbers need a human look. Unreadable or too small images "
        "are `failed`.",
        "- Patient identifiers are never read; sex for the T-scores is the bundle's default unless given.", "",
    ]


def _limits_section(info: dict) -> list[str]:
    lines = ["## Known limits", ""]
    if info.get("training_data", {}).get("source") == "twin":
        lines.append("- **Trained on synthetic twin radiographs: not for real patients.** Its numbers verify the "
                     "pipeline, not the clinical claim; real radiographs are out of its training distribution.")
    else:
        lines.append("- Trained on one site's data: performance on other scanners, populations or protocols is "
                     "unknown until validated there (`bmd evaluate`).")
    lines += [
        "- The calibration is linear and fitted on the validation split only; it shifts bias and MAE but "
        "not R or AUC, and a small validation split makes it uncertain.",
        "- T-scores use one reference table and sex per call (DXA makers' tables differ); DXA-reported "
        "T-scores are not reproduced exactly.",
        "- Vertebrae a DXA reader would exclude (fractures, hardware) cannot be recognised from the "
        "radiograph: all four are always predicted.", "",
    ]
    return lines


def render_model_card(info: dict) -> str:
    """The Markdown text of a bundle's model card from its ``bundle.json`` description."""
    model = info["model"]
    title = {"multi_roi": "multi-ROI", "attention": "multi-ROI attention"}.get(model["kind"], f"{model['family']} ROI")
    title += f" {model['backbone']}"
    lines = [f"# Model card: lumbar BMD from a chest radiograph ({title})", "",
             "Written by `bmd.deploy.bundle.export_bundle`; `bundle.json` in this folder holds the same facts.", ""]
    for part in (_model_section(info), _intended_use(), _training_section(info), _performance_section(info),
                 _calibration_section(info), _input_section(info), _limits_section(info)):
        lines += part
    return "\n".join(lines).rstrip() + "\n"
