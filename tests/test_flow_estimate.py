"""The one flow estimator (pinngs.flow.estimate)."""
from __future__ import annotations

import math

import numpy as np
import pytest


def test_transit_fits_blend_by_the_upstream_weight():
    from pinngs.flow.transit import TransitFit
    from pinngs.flow.estimate import _blend_transit

    whole = TransitFit([800.0, 300.0], dict(t0_s=0.1, alpha=3.0, beta_s=0.2), "laminar", 0.10, 120, [], [40.0, 20.0])
    up = TransitFit([1000.0, float("nan")], dict(t0_s=0.2, alpha=2.0, beta_s=0.3), "laminar", 0.20, 60, [], [80.0, 1.0])
    assert _blend_transit(whole, None, 0.0) is whole and _blend_transit(whole, up, 0.0) is whole
    assert _blend_transit(None, up, 1.0) is up
    m = _blend_transit(whole, up, 0.25)
    assert m.q_mm3_s[0] == pytest.approx(850.0) and math.isnan(m.q_mm3_s[1])
    assert m.q_std_mm3_s[0] == pytest.approx(50.0) and m.rel_residual == pytest.approx(0.125)
    assert m.bolus == whole.bolus and m.n_curves == 120
    assert _blend_transit(whole, up, 0.75).bolus == up.bolus


def test_lumen_flow_dp_at_is_poiseuille_on_a_straight_tube_and_linear_in_q():
    # a straight tube R 1.5 mm without lesions: dp_at(Q) is Hagen-Poiseuille 8 μ L Q / (π R⁴) between
    # the flow's dp_arcs_mm, whatever Q is asked; a bad Q is refused
    from pinngs.flow.estimate import LumenFlow
    from pinngs.units import MU_BLOOD_PA_S as MU_BLOOD

    z = np.arange(0.0, 40.0 + 1e-9, 0.1)
    b = np.column_stack([np.zeros_like(z), np.zeros_like(z), z, np.full_like(z, 1.5)])
    area = np.full(len(z), math.pi * 1.5 ** 2)
    fl = LumenFlow([b], [area], [], None, None, {}, (2.25, 37.75))
    for q in (500.0, 1000.0, 2000.0):
        want = 8 * MU_BLOOD * (37.75 - 2.25) * q / (math.pi * 1.5 ** 4)
        assert fl.dp_at(q)["dp_pa"] == pytest.approx(want, rel=1e-3)
    for bad in (0.0, -5.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="dp_at: the flow rate"):
            fl.dp_at(bad)


def test_implausible_figures_are_labelled_wherever_they_are_shown():
    """FFR outside [0.15, 1] cannot belong to a patient whose flow was measured: the estimator says
    so (plausible_ffr), and so does the terminal line of the online estimate."""
    from pinngs.fit.online import OnlineEstimate
    from pinngs.flow.estimate import FFR_MIN_PLAUSIBLE, plausible_ffr

    assert FFR_MIN_PLAUSIBLE == 0.15
    assert [plausible_ffr(x) for x in (-1.5, 0.0, 0.1, 0.15, 0.8, 1.0, 1.02, float("nan"))] == \
        [False, False, False, True, True, True, False, False]
    e = OnlineEstimate("implausible: FFR -1.518 ...", 58, 3.9, q_mm3_s=900.0, dp_pa=31219.0, dp_mmhg=234.17, ffr=-1.518)
    assert e.line().startswith("[IMPLAUSIBLE]")
    assert not OnlineEstimate("ok", 58, 3.9, q_mm3_s=900.0, dp_pa=300.0, dp_mmhg=2.25, ffr=0.976).line().startswith("[")


def test_flow_config_rejects_bad_mesh_settings():
    from pinngs.flow.estimate import FlowConfig

    for bad, match in ((dict(n_per_radius=0.0), "n_per_radius"), (dict(fallback_n_per_radius=-1.0), "n_per_radius"),
                       (dict(jet=(3.0, 1.5)), "jet must be"), (dict(jet=(3.0, 0.0, 0.5)), "jet must be"),
                       (dict(max_tets=10), "max_tets"), (dict(method="lbm"), "flow method")):
        with pytest.raises(ValueError, match=match):
            FlowConfig(**bad).validate()
    FlowConfig(jet=None, max_tets=None).validate()
