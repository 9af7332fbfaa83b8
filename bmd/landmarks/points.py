"""The 16 landmarks of a frontal chest radiograph, in the project's fixed order.

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

COORD_COLUMNS: tuple[str, ...] = tuple(c for n in LANDMARK_NAMES for c in (f"x_{n}", f"y_{n}"))
"""The 32 coordinate columns of a landmark CSV, in order (x then y for each point)."""
