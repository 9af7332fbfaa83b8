"""The twin cohort's specification: every constant of the generator, versioned and hashed.

``TWIN_VERSION`` names the generator ("twin-v2.5": twin v2 with wider thorax shapes, axial rotation, splits
stratified by BMD, a lung parenchymal texture, a rib cage that widens down to its 4th margin level and shoulders
that rise over the clavicles). Any change to a
constant changes ``spec_hash``, which ``oracle.json`` records and the reuse check compares: change
constants only on purpose.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from bmd.infra.digests import sha256_bytes

TWIN_VERSION = "twin-v2.5"

#: Chest bone families carrying a latent density, in a fixed order.
BONES: tuple[str, ...] = ("cervi", "clav_l", "clav_r", "rib_l", "rib_r", "t12")
#: ROI families (paper names) → the bones their regions show. "lumbar" is the T12 region.
FAMILY_BONES: dict[str, tuple[str, ...]] = {
    "cervi": ("cervi",), "clavi": ("clav_l", "clav_r"), "ribcage": ("rib_l", "rib_r"), "lumbar": ("t12",),
    "chest": BONES, "all": BONES,
}


@dataclass(frozen=True)
class TwinSpec:
    """Constants of the twin generator (population, bone signal, anatomy, acquisition)."""

    version: str = TWIN_VERSION
    # --- population (DXA-referred: mostly post-menopausal women)
    female_share: float = 0.80
    repeat_share: float = 0.025  # share of cases that are a patient's second radiograph
    age_mean: float = 67.0
    age_per_sd_bmd: float = -3.5  # years per SD of lumbar bone health (older → lower BMD)
    age_noise_sd: float = 8.5
    age_range: tuple[float, float] = (42.0, 92.0)
    bmd_mean_f: tuple[float, float, float, float] = (0.77, 0.835, 0.875, 0.895)  # g/cm², L1..L4
    bmd_mean_m_shift: float = 0.07
    bmd_sd: tuple[float, float, float, float] = (0.14, 0.15, 0.15, 0.16)
    # correlation of L1..L4 (the paper: L1–L2 0.907, L1–L3 0.883, L1–L4 0.825)
    bmd_corr: tuple[tuple[float, ...], ...] = (
        (1.000, 0.907, 0.883, 0.825),
        (0.907, 1.000, 0.935, 0.875),
        (0.883, 0.935, 1.000, 0.925),
        (0.825, 0.875, 0.925, 1.000),
    )
    excluded_vertebra_share: float = 0.03  # cases with one vertebra excluded at DXA
    repeat_bmd_change_sd: float = 0.01  # g/cm² between a patient's two DXA-matched radiographs
    # --- latent chest-bone densities: d_k = g + shared + specific_k (g = standardised lumbar health)
    shared_sd: float = 0.35  # systemic chest-versus-lumbar discrepancy, common to all chest bones
    specific_sd: dict[str, float] = field(default_factory=lambda: {
        "cervi": 0.35, "clav_l": 0.77, "clav_r": 0.77, "rib_l": 0.86, "rib_r": 0.86, "t12": 0.52})
    opacity_noise_sd: float = 0.25  # extra noise of the cancellous-opacity channel m
    cortex_noise_sd: float = 0.55  # extra noise of the cortical-thickness channel c
    texture_noise_sd: float = 0.60  # extra noise of the trabecular-texture channel tau
    # --- per-person thorax shape beyond pose (bmd.inputs.twin.anatomy). Real frontal chest films are taller
    # for their width, and vary more, than equal height and width spreads of 6 % give (real films' thorax
    # aspect, clavicles-to-T12 over the rib-cage width: 0.68-0.88; twin with 6 %: 0.57-0.80, p5-p95)
    thorax_height: tuple[float, float] = (1.07, 0.10)  # vertical scale below T1: mean, SD (clipped 0.8-1.35)
    cage_apex: tuple[float, float] = (0.12, 0.15)  # depth below the cage top over which its apex rounds off:
    #                                               median (cage heights), log-SD
    # widening of the rib cage below the apex (bmd.inputs.twin.anatomy.cage_halfwidth): median, log-SD
    # (conical ... barrel chest). Real films' margins widen steadily from the 1st to the 4th landmark level
    # (0.80, 0.92, 0.95, 1 of the 4th level's width); a cage at full width from the 2nd level on gave 0.72, 0.97,
    # 1, 1
    cage_flare: tuple[float, float] = (0.9, 0.3)
    # Axial rotation (the commonest positioning fault of a PA film) projects the vertebral bodies, which lie
    # behind the clavicles' medial ends, off the line midway between those ends. Real films' cervical point
    # lies -0.06…+0.04 of the rib-cage width from that midline (the five films of the real-data folder, from
    # the detector's points); without rotation the twin's stays within ±0.007 (p5-p95).
    axial_rotation_deg: float = 5.0  # SD of the rotation about the body's long axis (clipped at 2.4 SD)
    spine_depth_mm: float = 100.0  # depth of the vertebral bodies behind the clavicles' medial ends
    # --- pose and framing
    rotation_deg: float = 6.0  # uniform ±
    translation_frac: float = 0.05  # uniform ± of the image width
    scale_range: tuple[float, float] = (0.90, 1.22)  # log-uniform: wide field (neck, abdomen) … lungs only
    shutter_share: float = 0.5  # share of image edges with a visible collimator shutter
    # --- bone: a cortical tube around a cancellous interior (bmd.inputs.twin.render)
    marrow_mu: float = 0.45  # cancellous attenuation relative to cortical bone at the mean
    marrow_per_sd: float = 0.55  # relative change of cancellous attenuation per SD of the opacity channel
    cortex_mu: float = 1.0
    cortex_frac: float = 0.24  # cortical thickness as a fraction of the bone's half-width, at the mean
    cortex_per_sd: float = 0.22  # relative change of that fraction per SD of the cortical channel
    bone_size_sd: float = 0.07  # per-person bone depth factor (a PA projection cannot see depth)
    texture_period_px: tuple[float, float] = (3.5, 7.0)  # trabecular pattern period at 512 px (scales with size)
    texture_amp: float = 0.35  # relative trabecular modulation at the mean
    texture_amp_per_sd: float = 0.15
    # --- image formation and processing (bmd.inputs.twin.acquisition)
    soft_tissue_field_sd: float = 0.18  # smooth local soft-tissue thickness variation (relative)
    # lung parenchyma: the small vessels and interstitium below the drawn vessel tree, a band-pass texture
    # inside the lungs (amplitude in the soft-tissue units of the lungs' air, 2.1 at full depth; per-image
    # log-normal factor): without it the lung field's spectrum fell more steeply than any real film's
    lung_texture_amp: float = 0.04
    lung_texture_amp_log_sd: float = 0.3
    lung_texture_period_px: tuple[float, float] = (6.0, 40.0)  # at 512 px (scales with size)
    bone_kv: tuple[float, float] = (1.15, 0.85)  # bone attenuation factor, softest … hardest beam
    soft_kv: tuple[float, float] = (1.08, 0.92)  # soft-tissue attenuation factor of the same beams
    scatter_fraction: tuple[float, float] = (0.15, 0.50)
    heel_gradient: tuple[float, float] = (0.05, 0.25)
    photons: tuple[float, float] = (4000.0, 20000.0)  # detected quanta per pixel at open field
    blur_px: tuple[float, float] = (0.6, 1.2)  # detector blur (sigma, pixels of a 512 image)
    mce_power: tuple[float, float] = (0.55, 1.0)  # multi-scale contrast equalisation exponent (1 = none)
    unsharp_strength: tuple[float, float] = (0.0, 1.2)
    unsharp_radius_px: tuple[float, float] = (3.0, 14.0)
    gamma_max: float = 1.5  # display gamma log-uniform in [1/gamma_max, gamma_max]
    sigmoid_max: float = 1.0
    monochrome1_share: float = 0.30
    bits_stored: tuple[int, ...] = (12, 14, 16)
    field_width_mm: float = 380.0

    def as_dict(self) -> dict:
        """The spec as plain JSON-able data."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def spec_hash(spec: TwinSpec, sizes: dict) -> str:
    """SHA-256 of the canonical JSON of the spec plus the profile's sizes."""
    payload = json.dumps({"spec": spec.as_dict(), "sizes": sizes}, sort_keys=True, separators=(",", ":"))
    return sha256_bytes(payload.encode())
