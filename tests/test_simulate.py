"""Simulator: phantoms, centerline flow, and a small end-to-end run (deterministic, complete output)."""
import dataclasses
import json

import numpy as np
import pytest

from pinngs.cli import main
from pinngs.io import load_study
from pinngs.simulate import get_preset
from pinngs.simulate.flowfield import branch_flows, centerline_poiseuille
from pinngs.simulate.phantoms import aneurisk_vessel, bifurcation, load_vmtk_centerlines, straight_vessel
from pinngs.simulate.presets import DATA


def test_tube_occupancy_volume_matches_capsule():
    ph = straight_vessel("tube", radius_mm=1.0, length_mm=10.0, direction=(0.2, 0.4, 1.0))
    o, sh = ph.grid(0.1)
    vol = ph.occupancy(o, 0.1, sh).sum() * 1e-3
    exact = np.pi * 1.0 * 10.0 + 4 / 3 * np.pi  # cylinder + two hemispherical caps
    assert vol == pytest.approx(exact, rel=5e-3)  # partial-volume ramp: error ~ (h/R)² scale


def test_stenosis_occupancy_is_its_sections_not_the_union_of_spheres():
    """The voxel lumen is the solid of the flow truth: circular sections of radius r(z) normal to the
    axis. On the steep flank of a 70 % stenosis the union of spheres of radius r(z) is wider
    (max over s of sqrt(r(s)² − (z − s)²) > r(z)); the lumen volume tells the two apart."""
    ph = straight_vessel("s", radius_mm=1.5, length_mm=14.0, severity=0.7, stenosis_length_mm=4.0,
                         direction=(0.2, 0.4, 1.0))
    o, sh = ph.grid(0.05)
    vol = ph.occupancy(o, 0.05, sh).sum() * 0.05 ** 3
    z, r = ph.axial_profile
    sections = np.trapezoid(np.pi * r ** 2, z) + 4 / 3 * np.pi * 1.5 ** 3  # + the two end hemispheres
    zz = np.linspace(z[0], z[-1], 2801)
    rr = np.interp(zz, z, r)
    union = np.array([np.sqrt(np.clip(rr ** 2 - (zz - zi) ** 2, 0, None)).max() for zi in zz])
    union_vol = np.trapezoid(np.pi * union ** 2, zz) + 4 / 3 * np.pi * 1.5 ** 3
    assert union_vol > sections * 1.01  # the two solids differ by more than the tolerance below
    assert vol == pytest.approx(sections, rel=3e-3)


def test_stenosis_profile_and_murray():
    ph = straight_vessel("s", severity=0.7, stenosis_length_mm=6.0)
    z, r = ph.axial_profile
    assert r.min() == pytest.approx(0.3 * 1.5, rel=1e-3) and r.max() == pytest.approx(1.5)
    b = bifurcation(r0_mm=1.6, ratio=0.8)
    assert abs(b.meta["murray_residual"]) < 1e-12
    q = branch_flows(b, 1000.0)
    assert q[1] + q[2] == pytest.approx(1000.0)


def test_centerline_poiseuille_matches_analytic_tube():
    ph = straight_vessel("tube", radius_mm=1.5, length_mm=40.0, direction=(0, 0, 1))
    o, sh = ph.grid(0.2)
    ft = centerline_poiseuille(ph, o, 0.2, sh, 1000.0)
    assert ft.dp_pa == pytest.approx(8 * 3.5e-3 * 40 * 1000 / (np.pi * 1.5 ** 4), rel=1e-9)
    q_mid = ft.vel[:, :, sh[2] // 2, 2].sum() * 0.2 ** 2
    assert q_mid == pytest.approx(1000.0, rel=0.01)  # midpoint quadrature of the profile on 0.2 mm


def test_aneurisk_loader():
    brs = load_vmtk_centerlines(DATA / "aneurisk" / "C0015_centerlines.csv")
    assert len(brs) == 6  # shared/data README: 6 centerlines
    ph = aneurisk_vessel(DATA / "aneurisk" / "C0015_centerlines.csv", length_mm=20.0)
    assert 19.0 < ph.branches[0].length_mm <= 20.0
    with pytest.raises(ValueError, match="branch 9 does not exist"):
        aneurisk_vessel(DATA / "aneurisk" / "C0015_centerlines.csv", branch=9)


def small(name):
    pre = get_preset(name)
    acq = dataclasses.replace(pre.acquisition, detector_px=48, duration_s=0.4, fps=10.0)
    return dataclasses.replace(pre, acquisition=acq)


def test_small_simulation_is_complete_and_deterministic(tmp_path):
    from pinngs.simulate.pipeline import simulate, write_simulation

    # the pipeline, not the flow solver, is under test here: the quick centerline flow (the preset's
    # 3D Navier-Stokes is tested in test_cfd3d.py and timed in benchmarks/bench_simulate.py)
    pre = dataclasses.replace(small("curved-biplane"), flow="centerline")
    a = simulate(pre, seed=3, lumen_mm=0.2, flow_mm=0.4, progress=False)
    b = simulate(pre, seed=3, lumen_mm=0.2, flow_mm=0.4, progress=False)
    c = simulate(pre, seed=4, lumen_mm=0.2, flow_mm=0.4, progress=False)
    assert len(a.study.frames) == 2 * 4
    for fa, fb, fc in zip(a.study.frames, b.study.frames, c.study.frames):
        np.testing.assert_array_equal(fa.image, fb.image)
    assert any(not np.array_equal(fa.image, fc.image) for fa, fc in zip(a.study.frames, c.study.frames))
    # the vessel stands out of the noise once contrast has arrived (bolus starts at t0 = 0.1 s)
    first = min(a.study.frames, key=lambda f: f.t_s)
    late = max(a.study.frames, key=lambda f: f.t_s)
    assert late.image.max() > 3 * first.image.std()
    out = write_simulation(a, tmp_path / "sim")
    st = load_study(out)
    assert st.mode == "biplane" and len(st.frames) == 8
    truth = json.loads((out / "truth" / "truth.json").read_text())
    assert truth["flow_model"] == "centerline-poiseuille" and truth["dp_pa"] > 0 and truth["q_ml_s"] == 1.0
    for f in ("lumen.npz", "flow.npz", "concentration.npz", "centerline.csv"):
        assert (out / "truth" / f).stat().st_size > 0
    assert (out / "preview.png").stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["sim"]


def test_cli_simulate_errors(tmp_path, capsys):
    assert main(["simulate", "nope", "-o", str(tmp_path / "x")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    assert main(["simulate", "tube-biplane", "-o", str(tmp_path / "busy")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["simulate"]) == 2
    assert main(["simulate", "--list"]) == 0
    assert "stenosis70-4view" in capsys.readouterr().out
    assert not (tmp_path / "x").exists()


def test_flow_grid_arrival_is_the_projected_one():
    """The stored truth arrival times are the lumen-grid ones (what the projector used) at the
    coincident nodes of the coarser flow grid; non-fluid nodes are inf; grids must nest."""
    from pinngs.simulate.pipeline import flow_grid_arrival

    lshape, fshape = (9, 7, 5), (5, 4, 3)
    rng = np.random.default_rng(0)
    occ = rng.random(lshape) > 0.3
    idx = np.nonzero(occ)
    tau = rng.random(len(idx[0])).astype(np.float32)
    vel = np.ones(fshape + (3,), np.float32)
    vel[0, 0, 0] = 0.0  # not fluid
    out = flow_grid_arrival(tau, idx, lshape, 0.1, np.zeros(3), vel, 0.2, np.zeros(3))
    full = np.full(lshape, np.inf, np.float32)
    full[idx] = tau
    for i, j, k in [(1, 1, 1), (4, 3, 2), (2, 0, 1)]:
        assert out[i, j, k] == full[2 * i, 2 * j, 2 * k]
    assert np.isinf(out[0, 0, 0])
    with pytest.raises(ValueError, match="whole multiple"):
        flow_grid_arrival(tau, idx, lshape, 0.1, np.zeros(3), vel, 0.25, np.zeros(3))
