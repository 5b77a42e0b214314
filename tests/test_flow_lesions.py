"""Which graded narrowings have a jet, and the pressure drop across them (pinngs.flow.lesions)."""
from __future__ import annotations

import math

import numpy as np
import pytest


def test_a_narrowing_fades_in_as_a_lesion_with_a_jet():
    """jet_weight is 0 under 30 %, 1 from 40 %, linear between; ΔP across a graded narrowing is
    continuous in its grade (it was switched at 30 %: Young-Tsai on, the Poiseuille integral off)."""
    from pinngs.flow.lesions import jet_weight, lesion_dp, YT_FULL_PERCENT
    from pinngs.flow.lesions import YT_MIN_PERCENT
    from pinngs.laws import young_tsai_dp_pa

    assert [jet_weight(p) for p in (0.0, 29.9, 30.0, 35.0, 40.0, 70.0)] == pytest.approx([0, 0, 0, 0.5, 1, 1])
    assert (YT_MIN_PERCENT, YT_FULL_PERCENT) == (30.0, 40.0)
    s = np.linspace(0, 30, 301)
    r = 1.5 * (1 - 0.3 * np.exp(-((s - 15) / 2.0) ** 2))  # a 30 % narrowing at 15 mm
    br = np.column_stack([np.zeros_like(s), np.zeros_like(s), s, r])
    A = math.pi * r ** 2

    def les(pct):
        return dict(branch=0, arc_in_branch_mm=15.0, arc_from_inlet_mm=15.0, start_arc_mm=13.0, end_arc_mm=17.0,
                    d_ref_mm=3.0, d_min_mm=3.0 * (1 - pct / 100), length_mm=4.0, percent_diameter_stenosis=pct)

    dp = {p: lesion_dp(br, A, 1000.0, [les(p)], 5.0, 25.0)["dp_pa"] for p in (29.99, 30.01, 35.0, 40.0, 45.0)}
    poiseuille = lesion_dp(br, A, 1000.0, [], 5.0, 25.0)["dp_pa"]
    assert dp[29.99] == pytest.approx(poiseuille, rel=1e-9)
    assert dp[30.01] == pytest.approx(dp[29.99], rel=2e-3)  # no jump at the threshold
    # from 40 % on: Young-Tsai across the lesion, Poiseuille elsewhere
    outside = lesion_dp(br, A, 1000.0, [dict(les(45.0), weight=1.0)], 5.0, 25.0)["viscous_pa"]
    assert dp[45.0] == pytest.approx(outside + float(young_tsai_dp_pa(1000.0, 1.5, 1.5 * 0.55, 4.0)), rel=1e-9)
    # in between: halfway at 35 % between the Poiseuille integral and the full law at that grade
    yt35 = lesion_dp(br, A, 1000.0, [dict(les(35.0), percent_diameter_stenosis=40.0)], 5.0, 25.0)["dp_pa"]
    assert dp[35.0] == pytest.approx(0.5 * (poiseuille + yt35), rel=1e-9)


def test_a_flattened_section_with_its_area_intact_has_no_jet():
    """The jet weight takes the milder of the inscribed-sphere grade and the section-area grade: a 40 %
    dip of the inscribed radius whose areas stay round-vessel (a flattened section) costs Poiseuille
    only; the same dip in the areas too is a 40 % lesion with Young-Tsai in full."""
    from pinngs.flow.lesions import equivalent_stenosis_percent, lesion_dp, lesion_jet_weight
    from pinngs.analysis.stenosis import grade_stenosis

    s = np.linspace(0, 40, 401)
    dip = 1 - 0.4 * np.exp(-((s - 20) / 2.0) ** 2)  # 40 % diameter at 20 mm
    r_in = 1.5 * dip
    br = np.column_stack([np.zeros_like(s), np.zeros_like(s), s, r_in])
    (les,) = grade_stenosis([br])
    assert les["percent_diameter_stenosis"] == pytest.approx(40.0, abs=0.5)
    flat = np.full_like(s, math.pi * 1.5 ** 2)  # the flow's area does not narrow
    mild = math.pi * (1.5 * (1 - 0.1 * np.exp(-((s - 20) / 2.0) ** 2))) ** 2  # ... or by 10 % in diameter
    real = math.pi * r_in ** 2
    assert equivalent_stenosis_percent(br, flat, les) == pytest.approx(0.0, abs=0.1)
    assert equivalent_stenosis_percent(br, mild, les) == pytest.approx(10.0, abs=0.5)
    assert equivalent_stenosis_percent(br, real, les) == pytest.approx(40.0, abs=1.0)
    for areas, w in ((flat, 0.0), (mild, 0.0), (real, 1.0)):
        x = dict(les, percent_equivalent_diameter_stenosis=equivalent_stenosis_percent(br, areas, les))
        assert lesion_jet_weight(x) == pytest.approx(w, abs=0.05)
    # without the area grade (a caller's own lesion dicts), or NaN, the inscribed grade alone decides
    assert lesion_jet_weight(les) == pytest.approx(1.0, abs=0.05)
    assert lesion_jet_weight(dict(les, percent_equivalent_diameter_stenosis=float("nan"))) == lesion_jet_weight(les)
    # ΔP: the flattened section is the Poiseuille integral of its (round) areas, no Young-Tsai
    x = dict(les, percent_equivalent_diameter_stenosis=equivalent_stenosis_percent(br, flat, les))
    assert lesion_dp(br, flat, 1000.0, [x], 5.0, 35.0)["dp_pa"] == pytest.approx(
        lesion_dp(br, flat, 1000.0, [], 5.0, 35.0)["dp_pa"], rel=1e-9)
    # no reference window (a lesion spanning the branch): NaN, not a guess
    wide = dict(les, start_arc_mm=0.0, end_arc_mm=40.0)
    assert math.isnan(equivalent_stenosis_percent(br, real, wide))


def test_a_flattened_section_is_reported_apart_not_as_a_lesion():
    """confirm_by_area: a dip of the inscribed radius whose section area stays (a reconstruction's
    flattened round vessel) is no lesion; a dip of both is; without healthy windows (NaN) the
    inscribed grade stands."""
    from pinngs.analysis.stenosis import grade_stenosis
    from pinngs.flow.lesions import confirm_by_area

    s = np.linspace(0, 40, 401)
    dip = 1.5 * (1 - 0.35 * np.exp(-((s - 20) / 1.5) ** 2))  # a 35 % dip of the inscribed radius at 20 mm
    br = np.column_stack([np.zeros_like(s), np.zeros_like(s), s, dip])
    graded = grade_stenosis([br])
    assert len(graded) == 1 and graded[0]["percent_diameter_stenosis"] == pytest.approx(35, abs=1.5)

    flat_area = np.full_like(s, math.pi * 1.5 ** 2)  # flattened: the area of the round 1.5 mm section
    kept, flat = confirm_by_area(grade_stenosis([br]), [br], [flat_area])
    assert kept == [] and len(flat) == 1 and flat[0]["percent_equivalent_diameter_stenosis"] < 5

    narrowed = math.pi * dip ** 2  # a real narrowing: the area goes with the radius
    kept, flat = confirm_by_area(grade_stenosis([br]), [br], [narrowed])
    assert flat == [] and len(kept) == 1
    assert kept[0]["percent_equivalent_diameter_stenosis"] == pytest.approx(kept[0]["percent_diameter_stenosis"], abs=3)

    les = dict(graded[0], start_arc_mm=-5.0, end_arc_mm=45.0)  # no healthy window beside it: NaN, kept
    kept, flat = confirm_by_area([les], [br], [flat_area])
    assert len(kept) == 1 and math.isnan(kept[0]["percent_equivalent_diameter_stenosis"])
    with pytest.raises(ValueError, match="min_percent"):
        confirm_by_area(graded, [br], [flat_area], min_percent=120)
