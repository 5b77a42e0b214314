"""CFD comparison benchmark (issue 6): pinngs against analytic solutions and reference CFD.

    python -m benchmarks.cfd.run --quick          # CI subset (≤ 15 min on a 2-core CPU) -> results/cfd/quick/
    python -m benchmarks.cfd.run --full           # every case, pinngs at 2 and 4 views
    python -m benchmarks.cfd.run --full --cases stenosis70 bifurcation --merge   # some cases, merged

Per case: the reference (analytic where exact, else scikit-fem with a 3-level mesh-convergence
study), pinngs (the product's flow estimate, ``pinngs.flow.estimate``) on simulated DSA at 2 and 4
views, Young–Tsai on the true geometry, and per method: velocity rel-L2, velocity and pressure nRMSE (Hidden Fluid
Mechanics), ΔP error, FFR error, flow-rate error and wall time. Writes benchmarks/results/cfd/
results.json, README.md (the table) and per-case figures. A case that fails is reported with its
error, never dropped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks.cfd import cases as C
from benchmarks.cfd import metrics
from benchmarks.common import CACHE as BENCH_CACHE
from benchmarks.common import PA_MMHG, RESULTS, cpu_name

OUT = RESULTS / "cfd"
CACHE = BENCH_CACHE / "cfd"


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------
# Young–Tsai / reduced order on the true geometry
# ------------------------------------------------------------------------------------------------
def true_lesions(case, ph) -> list[dict]:
    """Lesions of branch 0 from the case's known geometry (grade_stenosis for real vessels)."""
    if case.key == "fda_nozzle":
        a, b = C.FDA_INLET_MM, C.FDA_INLET_MM + C.FDA_CONE_MM + C.FDA_THROAT_MM
        return [{"branch": 0, "arc_in_branch_mm": 0.5 * (a + b), "arc_from_inlet_mm": 0.5 * (a + b),
                 "start_arc_mm": a, "end_arc_mm": b, "d_min_mm": 2 * C.FDA_R_THROAT_MM,
                 "d_ref_mm": 2 * C.FDA_R_TUBE_MM, "length_mm": b - a}]
    if ph.stenosis:
        st, r0 = ph.stenosis, float(ph.branches[0].radii_mm[0])
        zc, ls = st["z_mm"], st["length_mm"]
        return [{"branch": 0, "arc_in_branch_mm": zc, "arc_from_inlet_mm": zc, "start_arc_mm": zc - ls / 2,
                 "end_arc_mm": zc + ls / 2, "d_min_mm": 2 * r0 * (1 - st["severity"]), "d_ref_mm": 2 * r0,
                 "length_mm": ls}]
    from pinngs.analysis.stenosis import grade_stenosis

    brs = [np.column_stack([b.points_mm, b.radii_mm]) for b in ph.branches]
    return [x for x in grade_stenosis(brs) if x["branch"] == 0]


def disc_section(ph, arc_mm: float, n: int = 60):
    """Points and area weights of a disc section of branch 0 (radius 1.1 R; the reference's NaN
    outside its lumen leaves the excess out)."""
    from benchmarks.cfd.figures import _perp, centerline

    s, P, T, R = centerline(ph)
    k = int(np.argmin(np.abs(s - arc_mm)))
    centre = np.array([np.interp(arc_mm, s, P[:, j]) for j in range(3)])  # exactly at the arc
    rmax = 1.1 * np.interp(arc_mm, s, R)
    g = np.linspace(-rmax, rmax, n)
    h = g[1] - g[0]
    X, Y = np.meshgrid(g, g, indexing="ij")
    keep = X ** 2 + Y ** 2 <= rmax ** 2
    n1 = _perp(T[k])
    n2 = np.cross(T[k], n1)
    pts = centre + X[keep][:, None] * n1 + Y[keep][:, None] * n2
    return pts, np.full(len(pts), h * h)


def young_tsai_true(case, ref) -> dict:
    """Reduced-order ΔP (Poiseuille + Young–Tsai) on the true geometry with the true Q, between the
    sections 1.5 radii inside the ends of branch 0, against the reference at the same sections."""
    from pinngs.flow.reduced import reduced_order_dp
    from benchmarks.cfd.pinngs_run import section_mean

    t0 = time.perf_counter()
    ph = case.phantom()
    b = ph.branches[0]
    brs = np.column_stack([b.points_mm, b.radii_mm])
    L = b.length_mm
    sa, sb = 1.5 * float(b.radii_mm[0]), L - 1.5 * float(b.radii_mm[-1])
    les = true_lesions(case, ph)
    yt = reduced_order_dp(brs, math.pi * b.radii_mm ** 2, case.q_mm3_s, les, sa, sb, mu=case.mu, rho=case.rho)
    secs = [disc_section(ph, s) for s in (sa, sb)]
    dp_ref = section_mean(ref.sample, *secs[0]) - section_mean(ref.sample, *secs[1])
    out = metrics.all_metrics(None, None, None, None, yt["dp_pa"], dp_ref, None, case.q_mm3_s, PA_MMHG)
    out.update(seconds=time.perf_counter() - t0, section_arcs_mm=[sa, sb], detail=yt, lesions=les)
    return out


# ------------------------------------------------------------------------------------------------
def run_case(case, quick: bool, views: tuple[int, ...], fig_dir: Path,
             skip_tet: bool = False) -> dict:
    from benchmarks.cfd.figures import case_figures
    from benchmarks.cfd.pinngs_run import run_pinngs

    row = {"key": case.key, "title": case.title, "reference_kind": case.reference, "q_mm3_s": case.q_mm3_s,
           "rho_g_mm3": case.rho, "mu_pa_s": case.mu, "notes": case.notes, "methods": {}, "figures": []}
    t0 = time.perf_counter()
    log(f"[{case.key}] reference ({case.reference})")
    ref = None if (skip_tet and case.reference == "tet") else C.build_reference(case, quick, log)
    if ref is None:
        why = ("3D reference not solved in this run (--skip-tet)" if skip_tet and C.tet_available()
               else "pinngs.flow.fem.solve_tet is not in the tree yet")
        row["reference"] = {"status": "pending", "why": why}
    else:
        row["reference"] = {"status": "ok", "kind": ref.kind, "dp_pa": ref.dp_pa, "seconds": ref.seconds,
                            "convergence": ref.convergence, "change_percent": ref.change_percent,
                            "converged": ref.converged, "convergence_quantity": ref.conv_key,
                            "extra": {k: v for k, v in ref.extra.items() if not callable(v)}}
        log(f"    reference ΔP {ref.dp_pa:.2f} Pa, change between the two finest levels "
            f"{ref.change_percent if ref.change_percent is not None else float('nan'):.3f} % ({ref.seconds:.0f} s)")
    if case.reference == "womersley":
        row["methods"]["quasi-steady Poiseuille"] = womersley_quasi_steady(ref)
    elif ref is not None:
        try:
            row["methods"]["young-tsai (true geometry)"] = young_tsai_true(case, ref)
        except Exception as e:  # reported, not dropped
            row["methods"]["young-tsai (true geometry)"] = {"error": f"{type(e).__name__}: {e}"}
    evaluators = {}
    for v in views:
        label = f"pinngs {v}-view"
        if not case.views:
            row["methods"][label] = {"not_run": case.pinngs_note}
            continue
        try:
            r, fig = run_pinngs(case, case.views[v], ref, CACHE, log)
        except Exception as e:
            traceback.print_exc()
            row["methods"][label] = {"error": f"{type(e).__name__}: {e}"}
            continue
        row["methods"][label] = {"q_error_percent": r["q_error_percent"], **r["pinngs"], "preset": r["preset"],
                                 "q_est_mm3_s": r["q_est_mm3_s"], "section_arcs_mm": r["section_arcs_mm"],
                                 "prepare": r["prepare"], "dp_ref_pa": r.get("dp_ref_pa")}
        if "evaluate" in fig:
            evaluators[label] = fig["evaluate"]
        m = row["methods"][label]
        log(f"    {label}: Q err {r['q_error_percent']:+.1f} %, ΔP {m['dp_pa']:.1f} Pa "
            f"(ref {r.get('dp_ref_pa', float('nan')):.1f}), rel-L2 {m.get('velocity_rel_l2')}, {m['seconds']:.0f} s")
    if ref is not None:
        try:
            row["figures"] = case_figures(case, ref, evaluators, fig_dir)
        except Exception as e:
            traceback.print_exc()
            row["figures_error"] = f"{type(e).__name__}: {e}"
    row["seconds"] = time.perf_counter() - t0
    return row


def womersley_quasi_steady(ref) -> dict:
    """Error of a steady (quasi-steady Poiseuille) flow model on the pulsatile case: Q(t) from the
    instantaneous gradient, against the analytic Womersley Q(t)."""
    s = ref.extra
    t = np.linspace(0, s["period_s"], 401)
    qe = C.womersley_q_exact(t, s)
    g = s["g0_pa_mm"] + s["g1_pa_mm"] * np.cos(s["omega_rad_s"] * t)
    qq = np.pi * s["radius_mm"] ** 4 * g / (8 * s["mu"])
    amp_e, amp_q = 0.5 * (qe.max() - qe.min()), 0.5 * (qq.max() - qq.min())
    return {"q_amplitude_error_percent": float(100 * (amp_q / amp_e - 1)),
            "q_nrmse": metrics.nrmse(qq, qe), "q_rel_l2": float(np.linalg.norm(qq - qe) / np.linalg.norm(qe)),
            "q_peak_lag_s": float(t[np.argmax(qe)] - t[np.argmax(qq)]), "seconds": 0.0}


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------
def _f(v, fmt="{:.3f}", bold_if=None):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    s = fmt.format(v)
    return f"**{s}**" if bold_if is not None and bold_if(v) else s


def method_rows(r: dict) -> list[str]:
    out = []
    ref = r["reference"]
    conv = ref.get("change_percent")
    if ref["status"] == "ok":
        refcell = (f"ΔP {ref['dp_pa']:.1f} Pa; mesh change {conv:.2f} %" if r["reference_kind"] != "womersley"
                   else f"Q amplitude change {conv:.3f} % (FD check)")
        if not ref.get("converged"):
            refcell += " **NOT CONVERGED**"
        out.append(f"| {r['key']} | reference: {ref['kind']} | – | – | – | {refcell} | – | – | – | {ref['seconds']:.0f} |")
    else:
        out.append(f"| {r['key']} | reference pending: {ref['why']} | – | – | – | – | – | – | – | – |")
    for name, m in r["methods"].items():
        if "not_run" in m:
            out.append(f"| {r['key']} | {name} | {m['not_run']} | | | | | | | |")
            continue
        if "error" in m:
            out.append(f"| {r['key']} | {name} | failed: {m['error'][:120]} | | | | | | | |")
            continue
        if name == "quasi-steady Poiseuille":
            out.append(f"| {r['key']} | {name} (vs analytic Q(t)) | – | nRMSE of Q(t) {m['q_nrmse']:.3f} | – | "
                       f"Q amplitude {m['q_amplitude_error_percent']:+.1f} %, peak lag {1000 * m['q_peak_lag_s']:.0f} ms"
                       f" | – | – | – | – |")
            continue
        dpe = m.get("dp_error_percent")
        dpref = m.get("dp_ref_pa")
        dpcell = (f"{m['dp_pa']:.1f} ({dpref:.1f})" if dpref is not None and math.isfinite(dpref)
                  else f"{m['dp_pa']:.1f} (ref pending)")
        out.append(
            f"| {r['key']} | {name} | {_f(m.get('velocity_rel_l2'))} | {_f(m.get('velocity_nrmse'))} | "
            f"{_f(m.get('pressure_nrmse'))} | {dpcell} | {_f(dpe, '{:+.1f}')} | {_f(m.get('ffr_abs_error'), '{:.4f}')} | "
            f"{_f(m.get('q_error_percent'), '{:+.1f}')} | {m.get('seconds', 0):.0f} |")
    return out


def summary_rows(rows: list[dict]) -> list[str]:
    """One line per case: the ΔP error of pinngs (2, 4 views) and of Young–Tsai on the true geometry."""
    out = ["| case | ref ΔP (Pa) | converged | pinngs 2-view ΔP err % | pinngs 4-view ΔP err % | "
           "YT true geometry ΔP err % | pinngs 2-view Q err % | pinngs 4-view Q err % |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['key']} | failed: {r['error'][:90]} | – | – | – | – | – | – |")
            continue
        ref = r["reference"]
        m = r["methods"]

        def e(k, what="dp_error_percent"):
            v = m.get(k, {})
            return v.get(what) if isinstance(v, dict) else None
        cells = [e("pinngs 2-view"), e("pinngs 4-view"), e("young-tsai (true geometry)"),
                 e("pinngs 2-view", "q_error_percent"), e("pinngs 4-view", "q_error_percent")]
        dp = f"{ref['dp_pa']:.1f}" if ref["status"] == "ok" else "pending"
        conv = ("yes" if ref.get("converged") else "**no**") if ref["status"] == "ok" else "–"
        out.append(f"| {r['key']} | {dp} | {conv} | " + " | ".join(_f(c, "{:+.1f}") for c in cells) + " |")
    return out


def write_readme(res: dict, out: Path) -> str:
    meta, rows = res["meta"], res["rows"]
    L = ["# CFD comparison benchmark (issue 6)", "",
         f"Machine: {meta['machine']}, {meta['cores']} cores (shared with other jobs while this ran), "
         f"Python {meta['python']}. Runs (wall time): "
         + ("; ".join(f"`{c}` ({w} s)" for c, w in meta["runs"].items()) if "runs" in meta
            else f"{meta.get('commands')} ({meta.get('wall_s_by_command')})") + ".", "",
         "Reproduce: `python -m benchmarks.cfd.run --quick` (CI subset) or `--full` (all cases, pinngs at 2 and 4 "
         "views). Sim/reconstruction caches: `benchmarks/.cache/cfd/` (and the registry presets' "
         "`benchmarks/.cache/`).", "",
         "## Summary: ΔP and Q error against the reference", "",
         "pinngs = the product's flow estimate (`pinngs.flow.estimate.flow_on_lumen`, what `pinngs reconstruct` "
         "writes): bolus-transit Q; ΔP by Poiseuille + Young–Tsai between the sections 1.5 equivalent radii "
         "inside the ends of branch 0 of each reconstruction; the reference evaluated at the same sections. "
         "'YT true geometry': the same reduced model on the exact phantom with the exact Q.", ""]
    L += summary_rows(rows)
    L += ["", "## All methods", "",
          f"Metrics over the reference's lumen points (0.2 mm grid, ≤ 60k points): velocity rel-L2 = "
          "‖u − u_ref‖/‖u_ref‖; nRMSE as in Hidden Fluid Mechanics = RMSE / std of the truth, pooled over the "
          "velocity components (vector form, see metrics.py); pressure nRMSE after removing each field's mean; "
          f"FFR = (Pa − ΔP)/Pa with Pa = {PA_MMHG:g} mmHg; Q error against the true inlet flow rate. "
          "'ΔP Pa (ref)' is each method's ΔP and the reference's at the same sections. Time: wall seconds "
          "(reference: all mesh levels; pinngs: the flow estimate, not the simulation/reconstruction).", "",
          "| case | method | vel rel-L2 | vel nRMSE | p nRMSE | ΔP Pa (ref) | ΔP err % | FFR abs err | Q err % | s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            L.append(f"| {r['key']} | case failed: {r['error'][:150]} | | | | | | | | |")
            continue
        L += method_rows(r)
    L += ["", "## Mesh convergence of the references", "",
          "| case | level | mesh | DOFs | ΔP (Pa) | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        ref = r.get("reference", {})
        for c in ref.get("convergence", []):
            mesh = (f"{c['n_axial']}x{c['n_radial']}" if "n_axial" in c else
                    f"h {c['h_mm']} mm" if "h_mm" in c else f"{c.get('n_radial', '')} radial cells" if "n_radial" in c
                    else "exact")
            val = c.get("q_amplitude_mm3_s")
            dp = (f"Q amp {val:.3f} mm³/s (exact {ref['extra'].get('q_amplitude_exact_mm3_s', float('nan')):.3f})"
                  if val is not None else f"{c['dp_pa']:.3f}")
            L.append(f"| {r['key']} | {c['level']} | {mesh} | {c.get('n_dofs', '–')} | {dp} | {c.get('seconds', 0):.1f} |")
    fda = next((r for r in rows if r["key"] == "fda_nozzle" and r["reference"]["status"] == "ok"
                and "centerline_velocity_at_expansion_m_s" in r["reference"].get("extra", {})), None)
    if fda:
        L += fda_section(fda)
    L += ["", "## Figures", ""]
    for r in rows:
        if r.get("figures"):
            L.append(f"- {r['key']}: " + ", ".join(f"[{f}]({f})" for f in r["figures"]))
    L += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    for r in rows:
        if r.get("notes"):
            L.append(f"- {r['key']}: {r['notes']}")
        c = C.CASES.get(r["key"])
        if c is not None and c.young_tsai != "applies":
            L.append(f"- {r['key']}, Young–Tsai: {c.young_tsai}")
    text = "\n".join(L) + "\n"
    (out / "README.md").write_text(text)
    return text


def fda_section(r: dict) -> list[str]:
    x = r["reference"]["extra"]
    lit = C.FDA_LITERATURE
    L = ["", "## FDA nozzle (Re 500): reference solver against the literature", "",
         f"Q = Re μ π d / (4ρ) = {x['q_mm3_s']:.1f} mm³/s ({x['q_mm3_s'] * 1e-9:.4e} m³/s). Domain z = "
         f"{x['domain_mm'][0]:.1f} … +{x['domain_mm'][1]:.1f} mm from the sudden expansion.", "",
         "| quantity | this reference | literature | kind of value | source |", "|---|---|---|---|---|"]

    def lv(k):
        return ", ".join(f"{n}: {v:.3f}" for n, v in lit[k]["values"].items())
    L.append(f"| centreline velocity at the expansion (z = 0), m/s | {x['centerline_velocity_at_expansion_m_s']:.3f} "
             f"| {lv('centerline_velocity_at_expansion_m_s')} | {lit['centerline_velocity_at_expansion_m_s']['kind']} "
             f"| {lit['centerline_velocity_at_expansion_m_s']['source']} |")
    L.append(f"| jet width (FWHM of u_z) at z = 0, mm | {x['jet_width_at_expansion_mm']:.2f} | {lv('jet_width_at_expansion_mm')} "
             f"| {lit['jet_width_at_expansion_mm']['kind']} | {lit['jet_width_at_expansion_mm']['source']} |")
    L.append(f"| ΔP, Pa | inlet→outlet {x['dp_inlet_outlet_pa']:.1f}; z −88 mm→outlet {x['dp_z-88mm_to_outlet_pa']:.1f}; "
             f"z −88→+80 mm {x['dp_z-88mm_to_z+80mm_pa']:.1f} | {lv('pressure_drop_pa')} | {lit['pressure_drop_pa']['kind']} "
             f"| {lit['pressure_drop_pa']['source']} |")
    L.append(f"| mean throat velocity, m/s | {x['mean_throat_velocity_m_s']:.4f} | {lv('mean_throat_velocity_m_s')} | "
             f"{lit['mean_throat_velocity_m_s']['kind']} | – |")
    L.append(f"| centreline velocity at z = +32 / +80 mm, m/s | {x['centerline_velocity_at_z+32mm_m_s']:.3f} / "
             f"{x['centerline_velocity_at_z+80mm_m_s']:.3f} | (PIV profiles in Hariharan 2011; numbers not available "
             "here) | – | – |")
    rz = x.get("reattachment_z_mm")
    L.append(f"| wall recirculation ends at z, mm | {rz if rz is None else f'{rz:.0f}'} | – | – | – |")
    L += ["", "The PIV data of Hariharan et al. (J Biomech Eng 133:041002, 2011; inter-lab uncertainty ~10 % at Re 500) "
          "are not reachable from this machine; the numbers above labelled 'sanity range' come from a third-party "
          "OpenFOAM V&V of the same geometry and are not measurements. The V&V does not state its ΔP stations, so "
          "the ΔP comparison is a plausibility check only. Our inlet profile is parabolic (fully developed)."]
    return L


# ------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="CI subset (default)")
    g.add_argument("--full", action="store_true", help="every case, pinngs at 2 and 4 views")
    ap.add_argument("--cases", nargs="*", help=f"subset of {', '.join(C.CASES)}")
    ap.add_argument("--no-pinngs", action="store_true", help="references and Young–Tsai only")
    ap.add_argument("--merge", action="store_true", help="update these cases in an existing results.json")
    ap.add_argument("--skip-tet", action="store_true",
                    help="do not solve the 3D references (reported as pending)")
    ap.add_argument("--tet-levels", type=float, nargs=3, help="3D mesh levels (elements per radius), coarse -> fine")
    ap.add_argument("--readme-only", action="store_true", help="rewrite README.md from results.json and exit")
    ap.add_argument("--out", help="output folder (default benchmarks/results/cfd, --quick: .../cfd/quick)")
    args = ap.parse_args(argv)
    quick = not args.full
    keys = args.cases or (C.quick_cases() if quick else list(C.CASES))
    unknown = [k for k in keys if k not in C.CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(C.CASES)}")
    out = Path(args.out) if args.out else (OUT / "quick" if quick else OUT)
    out.mkdir(parents=True, exist_ok=True)
    if args.readme_only:
        print(write_readme(json.loads((out / "results.json").read_text()), out))
        return 0
    cmd = " ".join(["python -m benchmarks.cfd.run", *(argv if argv is not None else sys.argv[1:])])
    t0 = time.perf_counter()
    prev = json.loads((out / "results.json").read_text()) if args.merge and (out / "results.json").exists() else None
    rows = []
    for k in keys:
        case = C.CASES[k]
        if case.reference == "tet" and args.tet_levels:
            case = dataclasses.replace(case, levels=tuple(args.tet_levels), quick_levels=tuple(args.tet_levels))
        if args.no_pinngs:
            views = ()
        elif not case.views:  # reported as not run, with the reason
            views = (2, 4)
        else:
            views = tuple(case.quick_pinngs) if quick else (2, 4)
        try:
            r = run_case(case, quick, views, out, skip_tet=args.skip_tet)
        except Exception as e:  # a failed case is reported, never dropped
            traceback.print_exc()
            r = {"key": k, "title": case.title, "error": f"{type(e).__name__}: {e}", "methods": {},
                 "reference": {"status": "failed"}}
        r["mode"] = "quick" if quick else "full"
        rows.append(r)
        if args.merge and (out / "results.json").exists():  # re-read: another run may have merged meanwhile
            prev = json.loads((out / "results.json").read_text())
        partial = _assemble(prev, rows, cmd, time.perf_counter() - t0)
        (out / "results.json").write_text(json.dumps(partial, indent=1, default=_json_default))
    res = _assemble(prev, rows, cmd, time.perf_counter() - t0)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=_json_default))
    text = write_readme(res, out)
    print(text)
    log(f"total wall time {time.perf_counter() - t0:.0f} s ({'quick' if quick else 'full'})")
    bad = [r["key"] for r in rows if r.get("reference", {}).get("status") == "ok" and not r["reference"].get("converged")]
    if bad:
        log(f"references NOT converged (ΔP change > {C.CONVERGENCE_TOL_PERCENT} %): {bad}")
        return 1
    return 0


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _assemble(prev, rows, cmd, wall_s) -> dict:
    notes = [
        "pinngs has no pulsatile mode: the Womersley case has an analytic reference (checked by finite "
        "differences) and a quasi-steady Poiseuille baseline, and no pinngs numbers.",
        "pinngs rows are the product's flow estimate (pinngs.flow.estimate: transit Q, Poiseuille + Young–Tsai "
        "ΔP, quasi-Poiseuille velocity, viscous pressure); before 2026-12-04 they were a steady PINN "
        "(benchmarks/results/archive/).",
        "Eccentric, bifurcation and AneuRisk references come from pinngs.flow.fem (3D tetrahedral "
        "Taylor–Hood); where it is not available or not solved in a run (--skip-tet) they are 'reference pending' "
        "and only pinngs' Q error and ΔP values are shown. Their simulated DSA is driven by the simulator's centerline-Poiseuille flow.",
        "Registry presets (tube-biplane, stenosis50-biplane, stenosis70-4view, eccentric60-4view, "
        "bifurcation-4view, aneurisk-4view) reuse the simulations and reconstructions cached by "
        "bench_reconstruct.py (same phantom, acquisition and seed 0).",
        "The simulator's truth for the axisymmetric cases is solve_axisymmetric at its default mesh (120x16); "
        "the references here are finer meshes of the same solver (not an independent code).",
    ]
    meta = dict(machine=cpu_name(), cores=os.cpu_count(), python=platform.python_version(), pa_mmhg=PA_MMHG,
                notes=notes, runs={cmd: round(wall_s)})
    if prev is None:
        return {"meta": meta, "rows": rows}
    meta["runs"] = {**prev["meta"].get("runs", {}), cmd: round(wall_s)}
    keys = {r["key"] for r in rows}
    merged = [r for r in prev["rows"] if r["key"] not in keys] + rows
    order = list(C.CASES)
    merged.sort(key=lambda r: order.index(r["key"]) if r["key"] in order else 99)
    return {"meta": meta, "rows": merged}


if __name__ == "__main__":
    sys.exit(main())
