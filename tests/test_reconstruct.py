"""The batch pipeline (pinngs.reconstruct) writes the flow estimate: the same numbers the online
fitter's estimate gives on the same lumen, a clear line where flow cannot be computed, and nothing
but geometry with --no-flow."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import pinngs.reconstruct as rc
from pinngs.fit.batch import FitConfig
from pinngs.fit.online import OnlineFitter
from pinngs.io.study import Frame, Study, save_study

FAST = FitConfig(iters=150, densify_every=60, densify_until=120, checkpoint_every=50)
Q_TRUE = 300.0  # conftest.tube_cine_study's flow rate (mm³/s)


@pytest.fixture(scope="module")
def recon(tube_cine, tmp_path_factory):
    """`reconstruct` of the biplane tube cine, with the arguments its flow estimate was given."""
    study, _, _ = tube_cine
    d = tmp_path_factory.mktemp("recon")
    save_study(study, d / "study")
    seen = {}
    import pinngs.flow.estimate as fe

    real = fe.flow_on_lumen

    def spy(st, occ, origin, spacing, **kw):
        seen.update(study=st, occ=occ, origin=origin, spacing=spacing)
        return real(st, occ, origin, spacing, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(fe, "flow_on_lumen", spy)
    try:
        s = rc.reconstruct(d / "study", d / "out", FAST, flow="reduced", progress=False)
    finally:
        mp.undo()
    return s, d / "out", seen


def test_reconstruct_writes_q_dp_and_ffr(recon):
    s, out, _ = recon
    f = s["flow"]
    assert f["method"] == "reduced" and f["status"] == "ok"
    assert json.loads((out / "summary.json").read_text())["flow"] == json.loads(json.dumps(f))
    # an exactly advected bolus on a 150-step biplane fit of 96² frames: measured 269.7 mm³/s (−10 %)
    assert f["q_mm3_s"] == pytest.approx(Q_TRUE, rel=0.15)
    # a straight tube: the pressure drop is the viscous one, FFR just under 1
    assert 0 < f["dp_pa"] < 200 and 0.98 < f["ffr"] < 1.0
    md = (out / "report.md").read_text()
    assert "## Flow" in md and f"{f['q_mm3_s']:.0f} mm³/s" in md and f"FFR {f['ffr']:.3f}" in md
    z = np.load(out / "flow.npz")
    v, p = z["velocity_mm_s"], z["pressure_pa"]
    assert v.shape == p.shape + (3,) and float(z["spacing_mm"]) == pytest.approx(0.2)
    inside = np.isfinite(p)
    assert inside.sum() > 100 and np.all(v[~inside] == 0)
    # the peak speed of the field is the centre line's 2 Q / A of the narrowest section
    assert np.linalg.norm(v, axis=-1).max() <= 1.01 * f["velocity_max_mm_s"]


def test_reconstruct_flow_equals_the_online_estimate_on_the_same_lumen(recon):
    """Both callers run flow.estimate: an OnlineFitter whose lumen and frames are the batch's gives
    the same Q, ΔP, FFR and confidences to the last digit."""
    s, _, seen = recon
    f = OnlineFitter()
    f.field = [None] * s["n_gaussians"]  # "has geometry": the lumen and study below stand in for the fit
    f.lumen = lambda: (seen["occ"], seen["origin"], 0.0)
    f.study = lambda: seen["study"]
    f.data_residual = lambda: s["fit"]["data_rel_l2"]
    f.frame_t_s = [fr.t_s for fr in seen["study"].frames]
    f.images = [None] * len(f.frame_t_s)
    assert f.config.lumen_mm == seen["spacing"]
    est = f.estimate()
    fl = s["flow"]
    assert est.status == fl["status"] == "ok"
    for k in ("q_mm3_s", "dp_pa", "ffr", "q_confidence", "dp_confidence", "velocity_mean_mm_s", "velocity_max_mm_s"):
        assert getattr(est, k) == fl[k], k
    assert est.lesions == fl["lesions"]


def test_no_flow_writes_the_geometry_only(tube_cine, tmp_path):
    study, _, _ = tube_cine
    save_study(study, tmp_path / "study")
    s = rc.reconstruct(tmp_path / "study", tmp_path / "out", FitConfig(iters=20), flow="none", progress=False)
    assert s["flow"]["method"] is None and "not requested" in s["flow"]["status"]
    # a tube seen 90° apart: the field is not spread along the rays, no warning
    assert s["fit"]["depth_spread"] < rc.DEPTH_SPREAD_WARN and not any("spread along" in w for w in s["warnings"])
    assert s["view_separation_deg"] > rc.NARROW_VIEW_SEPARATION_DEG
    # every graded narrowing carries its grade by area; one that the area does not confirm is listed apart
    assert isinstance(s["flattened_sections"], list)
    for x in s["stenosis"] + s["flattened_sections"]:
        assert "percent_equivalent_diameter_stenosis" in x
    assert not (tmp_path / "out" / "flow.npz").exists()
    assert "No flow estimate" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(rc.ReconstructError, match="flow must be one of"):
        rc.reconstruct(tmp_path / "study", tmp_path / "out2", flow="pinn-magic")
    with pytest.raises(rc.ReconstructError, match="flow must be one of"):
        rc.reconstruct(tmp_path / "study", tmp_path / "out2", flow="pinn-magic", progress=False)


def test_a_flow_that_cannot_be_computed_is_a_line_and_the_geometry_is_written(tube_cine, tmp_path):
    """One static frame per view: no bolus passes, so there is no transit to time. The summary and the
    report say why; the geometry is complete."""
    study, _, _ = tube_cine
    last = {fr.view: fr for fr in study.frames}  # the last (filled) frame of each view
    static = Study(study.views, [Frame(fr.image, fr.view, 0.0) for fr in last.values()], "biplane", "line_integral")
    save_study(static, tmp_path / "study")
    s = rc.reconstruct(tmp_path / "study", tmp_path / "out", FitConfig(iters=60), progress=False)
    f = s["flow"]
    assert f["method"] is None and f["status"].startswith("not available: ")
    assert len(f["status"]) > len("not available: ") + 10  # the reason, not just the label
    for name in ("gaussians.npz", "lumen.npz", "lumen.stl", "centerline.csv", "report.md", "report.png"):
        assert (tmp_path / "out" / name).exists(), name
    assert not (tmp_path / "out" / "flow.npz").exists()
    assert "No flow estimate: not available" in (tmp_path / "out" / "report.md").read_text()
    assert math.isfinite(s["lumen_volume_mm3"]) and s["lumen_volume_mm3"] > 0


def test_outputs_get_the_users_umask(recon):
    """Files 0666 & ~umask, folders 0777 & ~umask (0644 / 0755 with the usual 022), not the 0600 / 0700
    of a temporary file or folder."""
    import stat

    from pinngs.io.atomic import umask

    _, out, _ = recon
    m = umask()
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~m
    for p in out.rglob("*"):
        want = (0o777 if p.is_dir() else 0o666) & ~m
        assert stat.S_IMODE(p.stat().st_mode) == want, p.name


@pytest.mark.parametrize("method", ["fem", "pinn"])
def test_cfd_and_pinn_flow_write_vtk_that_holds_the_pressure_drop(method, tube_cine, tmp_path):
    """--flow fem / pinn on the biplane tube: summary.json names the method and its solver; the VTK
    files read back with velocity (mm/s) and pressure (Pa) named by unit; the pressure they hold
    drops along the tube by the summary's ΔP."""
    from pinngs.flow.estimate import FlowConfig
    from pinngs.io.exports import read_vtu
    from pinngs.pinn.field import PinnConfig

    study, _, _ = tube_cine
    save_study(study, tmp_path / "study")
    fc = FlowConfig(pinn=PinnConfig(width=64, depth=3, fourier=16, data_steps=600, physics_steps=60))
    s = rc.reconstruct(tmp_path / "study", tmp_path / "out", FAST, flow=method, flow_config=fc, progress=False)
    f = s["flow"]
    assert f["method"] == method and f["status"] == "ok", f["status"]
    assert f["solver"]["fem"]["n_tets"] > 100 and 0.5 < f["solver"]["lofted_dice"] <= 1.0
    if method == "pinn":
        p = f["solver"]["pinn"]
        print(f"\nPINN: anchor rel-L2 {p['anchor_velocity_rel_l2']:.3f}, residual {p['momentum_rel_convective']:.3f}")
        assert p["anchor_velocity_rel_l2"] < 0.35  # a small net, 600 + 60 steps (plumbing, not accuracy): measured 0.222
    out = tmp_path / "out"
    vol, wall = read_vtu(out / "flow_volume.vtu"), read_vtu(out / "wall.vtu")
    assert set(vol.point_data) >= {"velocity_mm_s", "pressure_pa"} and vol.point_data["velocity_mm_s"].shape[1] == 3
    assert "wss_pa" in wall.point_data and np.nanmax(wall.point_data["wss_pa"]) > 0
    # the VTK pressure at the two ΔP sections (summary.json's centres and normals): nodes within 0.2 mm
    pts, pr = vol.points, vol.point_data["pressure_pa"]

    def near(sec):
        d = (pts - np.asarray(sec["centre_mm"])) @ np.asarray(sec["normal"])
        p = pr[np.abs(d) < 0.2]
        assert np.isfinite(p).sum() >= 10  # NaN at the loft's nodes outside the reconstruction (0.45-0.55 seen)
        return float(np.nanmean(p))

    dp_vtk = near(f["dp_sections"][0]) - near(f["dp_sections"][1])
    print(f"{method}: ΔP summary {f['dp_pa']:.2f} Pa, from the VTK {dp_vtk:.2f} Pa")
    assert dp_vtk == pytest.approx(f["dp_pa"], rel=0.15)


def test_a_cfd_that_does_not_converge_falls_back_to_the_reduced_estimate_and_says_so(tube_cine, tmp_path, monkeypatch):
    """solve_tet raising (as it does when Newton stalls under a jet): the reduced flow is written,
    summary.json's solver and warnings and the report name the fallback and the CFD's message."""
    import pinngs.flow.fem as fem

    def stalls(*a, **k):
        raise RuntimeError("solve_tet did not converge for reconstruction: relative update 7.3e-01")

    monkeypatch.setattr(fem, "solve_tet", stalls)
    study, _, _ = tube_cine
    save_study(study, tmp_path / "study")
    s = rc.reconstruct(tmp_path / "study", tmp_path / "out", FitConfig(iters=60), flow="fem", progress=False)
    f = s["flow"]
    assert f["method"] == "reduced" and math.isfinite(f["dp_pa"]) and f["dp_pa"] > 0
    assert "did not converge" in f["solver"]["fallback"] and f["solver"]["fallback"].startswith("--flow fem")
    assert any("did not converge" in w for w in s["warnings"]), s["warnings"]
    assert "did not converge; the reduced estimate is reported" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "flow_volume.vtu").exists()


def test_a_cfd_that_does_not_settle_is_written_as_its_mean_and_said(tube_cine, tmp_path, monkeypatch):
    """The real solver with a tolerance no iteration reaches (so that Newton, the continuation and
    the pseudo-time steps all run out): the fem flow is written as the mean of the pseudo-time states,
    and summary.json, its warnings and the report say that it did not settle, with the ΔP range."""
    import pinngs.flow.fem as fem

    real = fem.solve_tet

    def never_settles(*a, **k):
        return real(*a, **(k | {"tol": 1e-30, "max_iter": 2, "ptc_iter": 40}))

    monkeypatch.setattr(fem, "solve_tet", never_settles)
    study, _, _ = tube_cine
    save_study(study, tmp_path / "study")
    s = rc.reconstruct(tmp_path / "study", tmp_path / "out", FitConfig(iters=60), flow="fem", progress=False)
    f = s["flow"]
    un = f["solver"]["fem"]["unsteady"]
    assert f["method"] == "fem" and f["solver"]["fem"]["steady"] is False and un["states"] >= 5
    assert un["dp_min_pa"] <= un["dp_mean_pa"] <= un["dp_max_pa"] and math.isfinite(f["dp_pa"]) and f["dp_pa"] > 0
    assert any("did not settle" in w for w in s["warnings"]), s["warnings"]
    assert "The CFD did not settle to a steady flow" in (tmp_path / "out" / "report.md").read_text()


def test_views_closer_than_the_sweep_supports_get_a_warning():
    """Under NARROW_VIEW_SEPARATION_DEG the study is reconstructed with a warning naming the separation
    and the sweep; under MIN_VIEW_SEPARATION_DEG it is refused (unless --allow-single-view)."""
    from types import SimpleNamespace

    from pinngs.geometry import CArmView

    def st(*primary):
        return SimpleNamespace(views=[CArmView(a, 0.0) for a in primary])

    assert rc._check_views(st(0.0, 90.0), False) == []
    assert rc._check_views(st(0.0, rc.NARROW_VIEW_SEPARATION_DEG + 0.5), False) == []
    w = rc._check_views(st(0.0, 20.0), False)
    assert len(w) == 1 and "20°" in w[0] and "views.md" in w[0]
    with pytest.raises(rc.ReconstructError, match="depth is not observable"):
        rc._check_views(st(0.0, 2.0), False)
    assert "depth is not observable" in rc._check_views(st(0.0, 2.0), True)[0]
