"""pinngs on simulated DSA for one case and one acquisition, measured against the case's reference.

Steps (the pipeline of benchmarks/bench_flow.py, with the reference CFD in place of the simulator's
truth, and only the full PINN variant):

1. simulate the preset (seed 0) and reconstruct it with ``pinngs reconstruct`` (cached);
2. Q of branch 0 from bolus transit upstream of the graded lesions (pinngs.flow.transit);
3. steady PINN in the reconstructed lumen (pinngs.pinn.steady), ΔP between the first and last flux
   sections of branch 0 by the work-energy balance (dp_work_energy);
4. reduced-order model on the same reconstruction: Poiseuille + Young–Tsai (pinngs.flow.reduced);
5. metrics against the reference on the reference's lumen points (metrics.py), and the arrays the
   figures need (figures.py).

The simulator's own truth for eccentric / bifurcation / real vessels is centerline-Poiseuille (see
pinngs.simulate.flowfield): it only drives the contrast transport here; every figure is measured
against the case reference.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_flow import PA_MMHG, transit_on_reconstruction
from benchmarks.cfd import metrics

BENCH = Path(__file__).resolve().parents[1]
LEGACY_CACHE = BENCH / ".cache"  # bench_reconstruct.py / bench_flow.py: registry presets, seed 0
METRIC_SPACING_MM = 0.2  # the simulator's flow grid
MAX_METRIC_POINTS = 60_000


def prepare(pre, cache: Path, log=print) -> tuple[Path, Path, dict]:
    """(study folder, reconstruction folder, seconds) for a preset; simulated and reconstructed if
    not cached. Registry presets reuse benchmarks/.cache (same phantom, acquisition and seed)."""
    from pinngs.simulate.pipeline import simulate, write_simulation
    from pinngs.simulate.presets import PRESETS

    timing = {}
    legacy_sim, legacy_rec = LEGACY_CACHE / "sim" / pre.name, LEGACY_CACHE / "recon" / pre.name
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
        r = subprocess.run([sys.executable, "-m", "pinngs.cli", "reconstruct", str(sim), "-o", str(rec), "--overwrite"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pinngs reconstruct {sim} failed (exit {r.returncode}): {r.stderr[-800:]}")
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


def run_pinngs(case, pre, ref, cache: Path, steps: int, pretrain_steps: int, log=print) -> tuple[dict, dict]:
    """(row, figure arrays) for pinngs on the preset's simulated DSA against ``ref`` (may be None:
    reference pending, then only Q, ΔP values and timings are reported)."""
    from pinngs.flow.reduced import ffr, reduced_order_dp
    from pinngs.pinn.steady import build_domain, dp_work_energy, fit_steady_flow, SteadyConfig

    sim, rec, prep = prepare(pre, cache, log)
    recon_s = json.loads((rec / "summary.json").read_text()).get("timing", {})
    fit_cache = cache / "pinn" / f"{pre.name}_{pretrain_steps}_{steps}.pkl"
    if fit_cache.exists():  # the fitted PINN of an earlier run (the metrics are recomputed)
        with open(fit_cache, "rb") as fh:
            res, dom, a, b, q_est, lesions, tr_d, t_transit, t_pinn, dp, yt = pickle.load(fh)
        log(f"    PINN {pre.name}: cached fit {fit_cache.name}")
    else:
        t0 = time.perf_counter()
        br, occ, origin, h, areas, lesions, tr = transit_on_reconstruction(sim, rec)
        q_est, tr_d = [float(x) for x in tr.q_mm3_s], tr.to_dict()
        t_transit = time.perf_counter() - t0
        dom = build_domain(occ, origin, h, br, areas, q_est)
        s0 = [s for s in dom.sections if s.branch == 0]
        a, b = s0[0], s0[-1]
        log(f"    PINN {pre.name}: {pretrain_steps} + {steps} steps")
        t1 = time.perf_counter()
        res = fit_steady_flow(dom, SteadyConfig(steps=steps, pretrain_steps=pretrain_steps), progress=False)
        dp = float(dp_work_energy(res, dom, a, b)["dp_pa"])
        t_pinn = time.perf_counter() - t1
        yt = reduced_order_dp(br[0], areas[0], q_est[0], [x for x in lesions if x["branch"] == 0], a.arc_mm, b.arc_mm)
        fit_cache.parent.mkdir(parents=True, exist_ok=True)
        with open(fit_cache, "wb") as fh:
            pickle.dump((res, dom, a, b, q_est, lesions, tr_d, t_transit, t_pinn, dp, yt), fh)
    study_views = len(json.loads((sim / "study.json").read_text()).get("views", []))

    q_true = case.q_mm3_s
    row = {"views": study_views, "preset": pre.name, "prepare": prep, "reconstruct_timing": recon_s,
           "q_true_mm3_s": q_true, "q_est_mm3_s": float(q_est[0]), "q_error_percent": 100 * (q_est[0] / q_true - 1),
           "section_arcs_mm": [a.arc_mm, b.arc_mm], "n_lesions": len(lesions),
           "transit": tr_d,
           "pinn": {"dp_pa": dp, "seconds": t_pinn + t_transit, "steps": steps, "pretrain_steps": pretrain_steps,
                    "final_loss": res.history[-1] if res.history else None},
           "young_tsai_recon": {"dp_pa": float(yt["dp_pa"]), "seconds": t_transit, "detail": yt}}
    fig = {}
    if ref is None:
        return row, fig
    dp_ref = section_mean(ref.sample, a.points_mm, a.weights_mm2) - section_mean(ref.sample, b.points_mm, b.weights_mm2)
    row["dp_ref_pa"] = dp_ref
    row["ffr_ref"] = ffr(dp_ref, PA_MMHG)
    pts = ref.lumen_points(METRIC_SPACING_MM)
    if len(pts) > MAX_METRIC_POINTS:
        pts = pts[np.random.default_rng(0).choice(len(pts), MAX_METRIC_POINTS, replace=False)]
    u_ref, p_ref = ref.sample(pts)
    u, p = res.evaluate(pts)
    u[dom.inside(pts) < 0.5] = 0.0  # the prediction is zero outside the reconstructed lumen
    row["pinn"].update(metrics.all_metrics(u, p, u_ref, p_ref, dp, dp_ref, float(q_est[0]), q_true, PA_MMHG))
    row["pinn"]["n_metric_points"] = int(len(pts))
    row["young_tsai_recon"].update(metrics.all_metrics(None, None, u_ref, p_ref, float(yt["dp_pa"]), dp_ref,
                                                       float(q_est[0]), q_true, PA_MMHG))
    fig = {"evaluate": lambda x: _masked_eval(res, dom, x)}
    return row, fig


def _masked_eval(res, dom, pts):
    u, p = res.evaluate(np.asarray(pts, float))
    out = dom.inside(pts) < 0.5
    u[out] = 0.0
    p[out] = np.nan
    return u, p
