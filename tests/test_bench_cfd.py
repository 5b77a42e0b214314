"""Fast checks of the CFD comparison harness (benchmarks/cfd): metrics on known fields, the case
registry, the references' plumbing and the table. Units: mm, s, g; pressure in Pa."""
import dataclasses
import math

import numpy as np
import pytest

from benchmarks.cfd import cases as C
from benchmarks.cfd import metrics


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
def test_nrmse_of_field_against_itself_and_scaled():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(500, 3))
    assert metrics.nrmse(u, u) == 0.0
    # zero-mean field: error of 2u is u, whose RMS equals the std of u -> exactly 1 (pooled form)
    u0 = u - u.mean(0)
    assert metrics.nrmse(2 * u0, u0) == pytest.approx(1.0, rel=1e-12)
    # with a mean: RMSE(k u) = |k-1| sqrt(mean |u|^2), std = sqrt(mean |u - ū|^2)
    v = u + np.array([3.0, 0.0, 0.0])
    expect = 0.5 * np.sqrt((v ** 2).sum(1).mean()) / np.sqrt(((v - v.mean(0)) ** 2).sum(1).mean())
    assert metrics.nrmse(1.5 * v, v) == pytest.approx(expect, rel=1e-12)


def test_pressure_nrmse_ignores_a_constant_and_nans():
    p = np.linspace(0.0, 100.0, 101)
    assert metrics.nrmse(p + 1234.5, p, remove_mean=True) == pytest.approx(0.0, abs=1e-12)
    q = p.copy()
    q[5] = np.nan  # outside the lumen: left out, not propagated
    assert metrics.nrmse(q + 7.0, p, remove_mean=True) == pytest.approx(0.0, abs=1e-12)
    # a scalar field scaled about its mean: nRMSE = |k - 1| exactly
    assert metrics.nrmse(3 * (p - p.mean()), p, remove_mean=True) == pytest.approx(2.0, rel=1e-12)


def test_rel_l2_percent_and_ffr_errors():
    u = np.random.default_rng(1).normal(size=(200, 3))
    assert metrics.velocity_rel_l2(1.1 * u, u) == pytest.approx(0.1, rel=1e-12)
    assert metrics.percent_error(90.0, 100.0) == pytest.approx(-10.0)
    # FFR = (Pa - ΔP)/Pa: the error is |ΔP - ΔP_ref| / Pa, Pa = 93 mmHg = 93 * 133.322 Pa
    assert metrics.ffr_abs_error(400.0, 200.0, 93.0) == pytest.approx(200.0 / (93 * 133.322), rel=1e-12)
    m = metrics.all_metrics(None, None, u, None, 110.0, 100.0, 950.0, 1000.0, 93.0)
    assert m["velocity_rel_l2"] is None and m["dp_error_percent"] == pytest.approx(10.0)
    assert m["q_error_percent"] == pytest.approx(-5.0)


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------
def test_case_registry_covers_the_issue():
    need = {"poiseuille", "womersley", "stenosis30", "stenosis50", "stenosis70", "eccentric60", "bifurcation",
            "fda_nozzle", "aneurisk_C0015"}
    assert need <= set(C.CASES) and len(C.CASES) >= 8
    assert set(C.quick_cases()) <= set(C.CASES) and "stenosis50" in C.quick_cases()
    for c in C.CASES.values():
        # every case either runs pinngs at 2 and 4 views or says why not
        assert set(c.views) == {2, 4} or c.pinngs_note, c.key
        if c.views:
            assert c.views[2].acquisition.mode == "biplane" and len(c.views[2].acquisition.angles_deg) == 2
            assert c.views[4].acquisition.mode == "multiview" and len(c.views[4].acquisition.angles_deg) == 4
        if c.reference in ("axisymmetric", "tet", "womersley"):
            assert len(c.levels) == 3 and (c.quick_levels is None or len(c.quick_levels) == 3), c.key
    # the Womersley number is in the issue's 2-4 range
    s = C.womersley_setup()
    assert 2.0 <= s["alpha"] <= 4.0


def test_fda_nozzle_geometry_and_flow_rate():
    z, r, z_exp = C.fda_profile()
    assert C.FDA_CONE_MM == pytest.approx(22.685, abs=1e-3)  # (6 - 2) / tan 10°
    assert z_exp - z[1] == pytest.approx(C.FDA_CONE_MM + 40.0)
    assert r.max() == 6.0 and r.min() == 2.0
    # Q = Re μ π d / (4 ρ) = 5.206e-6 m³/s at Re 500 (references note §4)
    assert C.fda_q_mm3_s() == pytest.approx(5.206e3, rel=1e-3)
    ph = C.fda_phantom()
    assert ph.axisymmetric and ph.branches[0].length_mm == pytest.approx(z[-1], abs=0.1)


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------
def test_poiseuille_reference_samples_the_exact_field():
    case = C.CASES["poiseuille"]
    ref = C.build_reference(case, quick=True, log=lambda *a: None)
    ph = case.phantom()
    r, z, _ = C.axial_coords(ph, ref.lumen_points(0.3))
    assert r.max() < 1.5 and z.min() > 0 and z.max() < 40.0
    # on the axis at mid-length: u = 2 Q/(π R²) along the axis direction, p = G (L - z)
    o, d = ph.axis_origin_mm, ph.axis_dir / np.linalg.norm(ph.axis_dir)
    u, p = ref.sample((o + 20.0 * d)[None])
    assert u[0] @ d == pytest.approx(2 * 1000.0 / (math.pi * 1.5 ** 2), rel=1e-12)
    assert p[0] == pytest.approx(ref.dp_pa / 2, rel=1e-12)
    side = np.cross(d, [1.0, 0, 0])
    outside = o + 20.0 * d + 2.0 * side / np.linalg.norm(side)  # 2 mm from the axis of an R 1.5 mm tube
    assert np.isnan(ref.sample(outside[None])[1][0])
    assert ref.converged and ref.change_percent == 0.0


def test_tiny_axisymmetric_reference_and_convergence_figure():
    # a coarse 3-level study of the 50 % stenosis (60x8 .. 120x16): the plumbing, not the accuracy
    case = dataclasses.replace(C.CASES["stenosis50"], quick_levels=(0.5, 0.75, 1.0))
    ref = C.build_reference(case, quick=True, log=lambda *a: None)
    assert [c["n_axial"] for c in ref.convergence] == [60, 90, 120]
    dps = [c["dp_pa"] for c in ref.convergence]
    assert all(d > 0 for d in dps)
    assert ref.change_percent == pytest.approx(100 * abs(dps[2] / dps[1] - 1))
    # the ΔP of the finest level is the reference's, and ~ the simulator's default mesh figure (120x16)
    assert ref.dp_pa == dps[-1]
    pts = ref.lumen_points(0.4)
    u, p = ref.sample(pts)
    assert u.shape == (len(pts), 3) and np.isfinite(p).all()
    # mass: the mean axial velocity x area at any section is Q (checked by the solver's flow_rate)
    assert ref.axial.flow_rate(20.0) == pytest.approx(1000.0, rel=1e-3)


def test_womersley_fd_check_converges_to_the_analytic_flow_rate():
    s = C.womersley_setup()
    _, t, _, q = C.womersley_fd(s, 50)
    qe = C.womersley_q_exact(t, s)
    # second-order FD in r and t (CN, 400 steps/period): well below 0.1 % of the peak flow rate
    assert np.abs(q - qe).max() / np.abs(qe).max() < 1e-3


def test_tet_cases_are_pending_without_the_3d_solver(monkeypatch):
    monkeypatch.setattr(C, "tet_available", lambda: False)
    assert C.build_reference(C.CASES["bifurcation"], quick=True, log=lambda *a: None) is None


def test_table_keeps_every_case(tmp_path):
    from benchmarks.cfd import run

    rows = [
        {"key": "fda_nozzle", "reference_kind": "axisymmetric", "notes": "", "figures": [],
         "reference": {"status": "ok", "kind": "x", "dp_pa": 280.0, "seconds": 1.0, "change_percent": 3.0,
                       "converged": False, "convergence": [], "extra": {}},
         "methods": {"pinngs 2-view": {"not_run": "too big"}}},
        {"key": "bifurcation", "reference_kind": "tet", "notes": "", "figures": [],
         "reference": {"status": "pending", "why": "no solver"},
         "methods": {"pinngs 2-view": {"error": "RuntimeError: boom"}}},
        {"key": "stenosis50", "error": "ValueError: bad", "methods": {}, "reference": {"status": "failed"}},
    ]
    meta = {"machine": "cpu", "cores": 2, "python": "3", "runs": {"python x": 1}, "notes": []}
    text = run.write_readme({"meta": meta, "rows": rows}, tmp_path)
    assert "NOT CONVERGED" in text and "too big" in text and "boom" in text and "reference pending" in text
    assert "case failed: ValueError: bad" in text
