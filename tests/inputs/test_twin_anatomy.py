"""Twin anatomy: per-person shape beyond pose, landmarks on the structures they name."""

from __future__ import annotations

import numpy as np

from bmd.columns import LANDMARK_NAMES
from bmd.inputs.twin.anatomy import (
    HUMERUS_RADIUS,
    RIB_LEVELS,
    SHOULDER_COVER,
    SIDES,
    body_halfwidth,
    cage_halfwidth,
    canonical_landmarks,
    clavicle_curve,
    diaphragm_y,
    draw_anatomy,
    humeral_head,
    spine_x,
    vertebra_levels,
)


def _shapes(n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.stack([canonical_landmarks(draw_anatomy(rng, "F" if i % 5 else "M")) for i in range(n)])


def _affine_residual(shapes: np.ndarray) -> np.ndarray:
    """Per shape: RMS distance left after the best affine map from the mean shape (canonical units)."""
    mean = shapes.mean(axis=0)
    design = np.column_stack([mean, np.ones(len(mean))])
    out = []
    for s in shapes:
        coef, *_ = np.linalg.lstsq(design, s, rcond=None)
        out.append(np.sqrt(((design @ coef - s) ** 2).sum(axis=1).mean()))
    return np.asarray(out)


def test_landmarks_are_not_one_template_under_an_affine_map():
    residual = _affine_residual(_shapes())
    # twin v1's landmarks were affine images of one template (residual 0.003 px at 512 px); a global
    # model now has to learn shape, not only pose: ~1 % of the field on average
    assert np.median(residual) > 0.004, np.median(residual)
    assert residual.max() < 0.05


def test_the_same_generator_draws_the_same_anatomy():
    a = draw_anatomy(np.random.default_rng([3, 1]), "F")
    b = draw_anatomy(np.random.default_rng([3, 1]), "F")
    assert a == b and a.breast > 0
    assert draw_anatomy(np.random.default_rng([3, 1]), "M").breast == 0


def test_landmarks_sit_on_the_structures_they_name():
    rng = np.random.default_rng(11)
    for _ in range(50):
        a = draw_anatomy(rng, "F")
        pts = dict(zip(LANDMARK_NAMES, canonical_landmarks(a), strict=True))
        levels = vertebra_levels(a)
        assert np.allclose(pts["t12"], (spine_x(a, levels["T12"]), levels["T12"]))
        assert np.allclose(pts["cervical"], (spine_x(a, levels["C7"]), levels["C7"]))
        for side, tag in ((1, "l"), (-1, "r")):
            # rib-cage points on the lateral margin of their side, top to bottom
            ys = [pts[f"rib_{tag}_{k}"][1] for k in range(1, 5)]
            assert np.allclose(np.asarray(ys) - a.t1_y, np.asarray(RIB_LEVELS) * a.cage_height)
            for k, y in enumerate(ys, start=1):
                margin = 0.5 + side * cage_halfwidth(a, np.float64(y), side) * a.body_width
                assert np.isclose(pts[f"rib_{tag}_{k}"][0], margin)
            # the lateral clavicle end is its curve at r = 1, on the patient's side
            ax, y = clavicle_curve(a, np.float64(1.0), side)
            assert np.allclose(pts[f"clav_{tag}_lateral"], (0.5 + side * ax * a.body_width, y))
            assert side * (pts[f"clav_{tag}_lateral"][0] - 0.5) > side * (pts[f"clav_{tag}_medial"][0] - 0.5)
        # the lowest rib-cage points lie above the costophrenic angles
        for tag, u in (("l", 0.38), ("r", -0.38)):
            assert pts[f"rib_{tag}_4"][1] < diaphragm_y(a, np.float64(u))


def test_shape_parameters_vary_independently_between_people():
    rng = np.random.default_rng(5)
    people = [draw_anatomy(rng, "F") for _ in range(400)]
    cage = np.array([p.cage_width for p in people])
    assert 0.03 < np.std(cage[:, 0]) < 0.1 and np.std(cage[:, 0] - cage[:, 1]) > 0.02  # asymmetric
    tilt = np.array([p.clav_tilt for p in people])
    assert abs(np.corrcoef(tilt[:, 0], tilt[:, 1])[0, 1]) < 0.2
    assert np.std([p.inspiration for p in people]) > 0.02 and np.std([p.scoliosis for p in people]) > 0.005


def test_thorax_height_and_taper_spreads_come_from_the_spec():
    from bmd.evaluation.realfilms import thorax_aspect
    from bmd.inputs.twin.spec import TwinSpec

    fixed = TwinSpec(thorax_height=(1.0, 0.0), cage_apex=(0.14, 0.0), cage_flare=(0.8, 0.0))
    rng = np.random.default_rng(5)
    people = [draw_anatomy(rng, "F", fixed) for _ in range(50)]
    assert {a.cage_height for a in people} == {1.0} and {a.cage_apex for a in people} == {0.14}
    assert {a.cage_flare for a in people} == {0.8}
    # the default spread covers real frontal films' thorax aspect (0.78-0.92 on the five in ../shared/realdata,
    # from the twin-trained detector's points)
    aspect = thorax_aspect(_shapes(1000))
    assert 0.70 < np.median(aspect) < 0.80
    assert np.quantile(aspect, 0.95) > 0.90 and np.quantile(aspect, 0.05) < 0.65


def test_the_rib_cage_widens_down_to_its_fourth_margin_level_as_on_real_films():
    """Real films' margins widen steadily from the 1st to the 4th level (0.80, 0.92, 0.95, 1 of the 4th
    level's width, the detector's points on the five real chest films); a cage at full width from the 2nd
    level on made the 3rd and 4th equally wide in every twin, a constraint the shape check learnt."""
    shapes = _shapes(1000)
    i = {n: k for k, n in enumerate(LANDMARK_NAMES)}
    width = np.stack([shapes[:, i[f"rib_l_{k}"], 0] - shapes[:, i[f"rib_r_{k}"], 0] for k in range(1, 5)], axis=1)
    ratio = np.median(width / width[:, 3:], axis=0)
    assert np.all(np.diff(ratio) > 0.02), ratio
    assert np.allclose(ratio[:3], [0.80, 0.91, 0.955], atol=0.04), ratio
    assert np.quantile(width[:, 2] / width[:, 3], 0.99) < 0.995  # the 3rd level is narrower in (nearly) everyone


def test_the_clavicles_and_humeral_heads_lie_under_the_skin_of_the_shoulders():
    """The lateral clavicle and the humeral head sit under the top of the shoulder; in twin v2.4 the shoulder
    widened at a fixed height, so a clavicle rising laterally (and every humeral head's top) lay in the air
    above it, on every twin and on no real film."""
    rng = np.random.default_rng(11)
    r = np.linspace(0, 1, 41)
    for k in range(400):
        a = draw_anatomy(rng, "F" if k % 2 else "M")
        for side, _tag in SIDES:
            ax, y = clavicle_curve(a, r, side)
            # the skin SHOULDER_COVER above each clavicle point is still wider than the point is lateral
            assert np.all(body_halfwidth(a, y - SHOULDER_COVER, side) >= ax), (k, side)
            head_ax, head_y = humeral_head(a, side)
            assert body_halfwidth(a, head_y, side) > head_ax + HUMERUS_RADIUS / a.body_width, (k, side)


def _spine_offset(shapes: np.ndarray) -> np.ndarray:
    """x of the cervical point from the midpoint of the clavicles' medial ends, over the rib-cage width."""
    i = {n: k for k, n in enumerate(LANDMARK_NAMES)}
    mid = (shapes[:, i["clav_l_medial"], 0] + shapes[:, i["clav_r_medial"], 0]) / 2
    width = shapes[:, i["rib_l_3"], 0] - shapes[:, i["rib_r_3"], 0]
    return (shapes[:, i["cervical"], 0] - mid) / width


def test_axial_rotation_moves_the_spine_off_the_clavicles_midline_as_on_real_films():
    from bmd.inputs.twin.spec import TwinSpec

    offset = _spine_offset(_shapes(1000))
    # real films: -0.06…+0.04 of the rib-cage width (the five films of the real-data folder); without
    # rotation the twin's cervical point stayed within ±0.007
    assert 0.02 < np.std(offset) < 0.05 and abs(np.mean(offset)) < 0.005
    assert np.quantile(offset, 0.05) < -0.03 and np.quantile(offset, 0.95) > 0.03
    rng = np.random.default_rng(7)
    upright = [draw_anatomy(rng, "F", TwinSpec(axial_rotation_deg=0.0)) for _ in range(200)]
    assert {a.spine_shift for a in upright} == {0.0}
    assert np.abs(_spine_offset(np.stack([canonical_landmarks(a) for a in upright]))).max() < 0.01
