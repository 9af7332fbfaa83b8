"""The names every stage shares, defined once: vertebrae, table columns, ROI and landmark names.

A *predictions frame* (see :mod:`bmd.evaluation.predictions`) has the identity columns
:data:`ID_COLUMNS`, the DXA truth :data:`BMD_COLUMNS` and the predictions :data:`PRED_COLUMNS`
(lists, so that they index a DataFrame directly; never modify them).

The 16 landmarks of a frontal chest radiograph are in the project's fixed order.

Left and right are the patient's. On a PA radiograph in standard display the patient's left is on
the image's right. Coordinates are pixels of the original image (x to the right, y down).
"""

from __future__ import annotations

LANDMARK_NAMES: tuple[str, ...] = (
    "clav_l_medial", "clav_l_mid", "clav_l_lateral",
    "clav_r_medial", "clav_r_mid", "clav_r_lateral",
    "rib_l_1", "rib_l_2", "rib_l_3", "rib_l_4",
    "rib_r_1", "rib_r_2", "rib_r_3", "rib_r_4",
    "cervical", "t12",
)  # fmt: skip
N_LANDMARKS: int = len(LANDMARK_NAMES)

PLAUSIBILITY_COMPONENTS: tuple[str, ...] = ("appearance", "local", "shape")
"""The parts of the landmark detector's plausibility score (:mod:`bmd.landmarks.plausibility`): the image's
layout at the scale of organs, the image around the detected points, the configuration of the points."""

COORD_COLUMNS: tuple[str, ...] = tuple(c for n in LANDMARK_NAMES for c in (f"x_{n}", f"y_{n}"))
"""The 32 coordinate columns of a landmark CSV, in order (x then y for each point)."""

VERTEBRAE: tuple[str, ...] = ("L1", "L2", "L3", "L4")
"""The lumbar vertebrae whose DXA BMD the study predicts."""

BMD_COLUMNS: list[str] = [f"bmd_{v.lower()}" for v in VERTEBRAE]
"""DXA BMD per vertebra (g/cm²; empty = excluded), as in the manifest."""

T_COLUMNS: list[str] = [f"t_{v.lower()}" for v in VERTEBRAE]
"""T-scores copied from DXA reports, optional in the manifest."""

PRED_COLUMNS: list[str] = [f"pred_{v.lower()}" for v in VERTEBRAE]
"""Predicted BMD per vertebra (g/cm²) in a predictions frame."""

ID_COLUMNS: list[str] = ["case_id", "patient_id", "split", "sex", "reference"]
"""The identity columns a predictions frame carries beside the BMD columns."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The manifest's splits, in order."""

ROI_NAMES: tuple[str, ...] = ("chest", "cervi", "clavi_l", "clavi_r", "ribcage_l", "ribcage_r", "lumbar")
"""The paper's 7 ROIs: the whole chest, then the six local crops."""

LOCAL_NAMES: tuple[str, ...] = ROI_NAMES[1:]
"""The six local ROIs (everything but the chest)."""
