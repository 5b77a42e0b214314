"""pinngs on simulated DSA for one case and one acquisition, measured against the case's reference.

Steps (what benchmarks/bench_flow.py measures, with the reference CFD in place of the simulator's
truth):

1. simulate the preset (seed 0) and reconstruct it with ``pinngs reconstruct`` (cached);
2. the product's flow estimate on the reconstruction (``pinngs.flow.estimate.flow_on_lumen``:
   transit Q, Poiseuille + Young–Tsai ΔP between the sections 1.5 equivalent radii inside the ends of
   branch 0, quasi-Poiseuille velocity and viscous pressure);
3. metrics against the reference on the reference's lumen points (metrics.py), ΔP against the
   reference's section means at the same sections, and the arrays the figures need (figures.py).

The simulator's own truth for eccentric / bifurcation / real vessels is centerline-Poiseuille (see
pinngs.simulate.flowfield): it only drives the contrast transport here; every figure is measured
against the case reference.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.cfd import metrics
from benchmarks.common import CACHE, PA_MMHG, run_cli, disc_section, flow_on_reconstruction

METRIC_SPACING_MM = 0.2  # the simulator's flow grid
MAX_METRIC_POINTS = 60_000


def prepare(pre, cache: Path, log=print) -> tuple[Path, Path, dict]:
    """(study folder, reconstruction folder, seconds) for a preset; simulated and reconstructed if
    not cached. Registry presets reuse benchmarks/.cache (same phantom, acquisition and seed)."""
    from pinngs.simulate.pipeline import simulate, write_simulation
    from pinngs.simulate.presets import PRESETS

    timing = {}
    legacy_sim, legacy_rec = CACHE / "sim" / pre.name, CACHE / "recon" / pre.name
    if pre.name in PRESETS and (legacy_sim / "truth" / "truth.json").exists() and (legacy_rec / "summary.json").exists():
        return legacy_sim, legacy_rec, {"cached": "benchmarks/.cache"}
    sim, rec = cache / "sim" / pre.name, cache / "recon" / pre.name
    if not (sim / "truth" / "truth.json").exists():
        t0 = time.perf_counter()
        log(f"    simulate {pre.name}")
        write_simulation(simulate(pre, seed=0, progress=False), sim, overwrite=True)
        timing["simulate_s"] = time.perf_counter() - t0
    if not (rec / "summary.json").exists():
        t0 = time.perf_counter()
        log(f"    reconstruct {pre.name}")
        run_cli("reconstruct", str(sim), "-o", str(rec), "--overwrite")
        timing["reconstruct_s"] = time.perf_counter() - t0
    return sim, rec, timing


def section_mean(sample, points_mm: np.ndarray, weights_mm2: np.ndarray) -> float:
    """Weighted mean of a reference's pressure over a section's points (points outside its lumen,
    NaN, are left out)."""
    _, p = sample(points_mm)
    ok = np.isfinite(p)
    if not ok.any():
        return float("nan")
    return float((p[ok] * weights_mm2[ok]).sum() / weights_mm2[ok].sum())


def run_pinngs(case, pre, ref, cache: Path, log=print) -> tuple[dict, dict]:
    """(row, figure arrays) for the product's flow estimate on the preset's simulated DSA against
    ``ref`` (may be None: reference pending, then only Q, ΔP values and timings are reported)."""
    from pinngs.laws import ffr
    from pinngs.io import load_any_study

    sim, rec, prep = prepare(pre, cache, log)
    recon_s = json.loads((rec / "summary.json").read_text()).get("timing", {})
    t0 = time.perf_counter()
    flow = flow_on_reconstruction(load_any_study(sim), rec)
    t_flow = time.perf_counter() - t0
    q_est, dp = flow.q_mm3_s[0], float(flow.dp["dp_pa"])
    s0, s1 = flow.dp_arcs_mm
    study_views = len(json.loads((sim / "study.json").read_text()).get("views", []))
    q_true = case.q_mm3_s
    row = {"views": study_views, "preset": pre.name, "prepare": prep, "reconstruct_timing": recon_s,
           "q_true_mm3_s": q_true, "q_est_mm3_s": q_est, "q_error_percent": 100 * (q_est / q_true - 1),
           "section_arcs_mm": [s0, s1], "n_lesions": len(flow.lesions), "transit": flow.transit.to_dict(),
           "pinngs": {"method": "flow.estimate (reduced)", "dp_pa": dp, "seconds": t_flow}}
    if ref is None:
        return row, {}
    b0 = np.asarray(flow.branches[0], float)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(b0[:, :3], axis=0), axis=1))])
    secs = [disc_section(b0, x, 1.6 * float(np.sqrt(np.interp(x, s, flow.areas_mm2[0]) / np.pi))) for x in (s0, s1)]
    dp_ref = section_mean(ref.sample, *secs[0]) - section_mean(ref.sample, *secs[1])
    row["dp_ref_pa"] = dp_ref
    row["ffr_ref"] = ffr(dp_ref, PA_MMHG)
    pts = ref.lumen_points(METRIC_SPACING_MM)
    if len(pts) > MAX_METRIC_POINTS:
        pts = pts[np.random.default_rng(0).choice(len(pts), MAX_METRIC_POINTS, replace=False)]
    u_ref, p_ref = ref.sample(pts)
    u, p = _masked_eval(flow, pts)
    row["pinngs"].update(metrics.all_metrics(u, np.nan_to_num(p), u_ref, p_ref, dp, dp_ref, q_est, q_true, PA_MMHG))
    row["pinngs"]["n_metric_points"] = int(len(pts))
    return row, {"evaluate": lambda x: _masked_eval(flow, x)}


def _masked_eval(flow, pts):
    """The estimate's velocity and pressure at points; zero velocity and NaN pressure outside its lumen."""
    pts = np.asarray(pts, float)
    u, p = flow.velocity_mm_s(pts), flow.pressure_pa(pts)
    p[flow.domain.inside(pts) < 0.5] = np.nan
    return u, p
