"""The outputs of a reconstruction (batch or online) and its report.

    summary = write_outputs(out, res, study, "label", flow=lumen_flow)

OUT receives (all in world mm, DESIGN.md frames):

    gaussians.ply        the Gaussians for 3DGS viewers (x, y, z, f_dc_*, opacity, scale_* = ln σ mm,
                         rot_* = quaternion w, x, y, z)
    gaussians.npz        means_mm [N,3], scales_mm [N,3], quats_wxyz [N,4], atten_per_mm [N],
                         lumen_level_per_mm
    lumen.npz            occupancy uint8 (= round(255·fraction)), origin_mm [3] (centre of voxel 0),
                         spacing_mm: the voxelized field / μ_c, clipped to [0, 1]
    lumen.stl, lumen.obj the 0.5 surface (marching cubes, trimesh), watertight
    centerline.csv       X,Y,Z,MaximumInscribedSphereRadius,BranchId (VMTK style)
    flow.npz             velocity_mm_s [X,Y,Z,3], pressure_pa [X,Y,Z] (NaN outside the lumen) on a
                         FLOW_GRID_MM grid, origin_mm, spacing_mm, method (when flow was estimated)
    flow_volume.vtu      velocity_mm_s, pressure_pa on the CFD mesh (or the lumen's grid points)
    wall.vtu             the lumen surface with wss_pa (wall shear stress) and pressure_pa
    summary.json         stenosis grading (and flattened sections, not lesions), Murray deviation, the flow estimate ("flow": Q, ΔP, FFR,
                         per lesion ΔP and FFR, or why there is none), fit statistics, timings
    report.md, report.png

``write_outputs`` writes into a folder its caller has staged (``reconstruct`` and the online fitter
build OUT beside it and swap it in when complete); summary.json is written last.
"""
from __future__ import annotations

import json
import math
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from .analysis.centerline import extract_centerline
from .analysis.stenosis import grade_stenosis, murray_deviation
from .analysis.surface import mask_to_mesh
from .flow.estimate import LumenFlow
from .flow.lesions import confirm_by_area
from .flow.transit import section_areas
from .geometry import view_separation_deg
from .io.atomic import atomic_file, failpoint
from .io.exports import write_centerline_csv, write_gaussians_npz, write_lumen_npz, write_mesh, write_ply
from .io.study import Study
from .polyline import plane_basis, tangents
from .render import nuisance_fit, render_views
from .units import PA_AORTIC_MMHG, PA_PER_MMHG

FLOW_GRID_MM = 0.2  # the velocity/pressure grid of flow.npz (the simulator's truth uses the same)


def write_outputs(out: Path, res, study: Study, study_label: str, *, branches: list | None = None,
                  flow: LumenFlow | None = None, flow_note: str = "", pa_mmhg: float = PA_AORTIC_MMHG,
                  t0: float | None = None, extra: dict | None = None, warnings: list[str] = ()) -> dict:
    """Write the reconstruction's files (module docstring) into the existing folder ``out`` (the
    caller stages it: the files are written in place, summary.json last).

    Args:
        res: a ``fit.FitResult`` (field, targets, lumen_level, occupancy, origin_mm, spacing_mm, info).
        study: the study it was fitted to.
        branches: the centerline if already extracted from ``res.occupancy``.
        flow: the flow estimate (``flow.estimate.flow_on_lumen``), or None; then ``flow_note`` says
            why, in summary.json and the report.
        pa_mmhg: mean aortic pressure for FFR.
        extra: merged into summary.json.
        warnings: what the reader must know first (e.g. that depth is not observable): summary.json's
            "warnings" and the first lines of the report.

    Returns:
        The summary (as written to summary.json).
    """
    t0 = time.perf_counter() if t0 is None else t0
    out = Path(out)
    write_ply(out / "gaussians.ply", res.field)
    write_gaussians_npz(out / "gaussians.npz", res.field, res.lumen_level)
    write_lumen_npz(out / "lumen.npz", res.occupancy, res.origin_mm, res.spacing_mm)
    failpoint("write")
    mesh = mask_to_mesh(res.occupancy, res.origin_mm, res.spacing_mm, 0.5)
    write_mesh(mesh, out / "lumen.stl")
    write_mesh(mesh, out / "lumen.obj")
    if branches is None:
        branches = extract_centerline(res.occupancy, res.origin_mm, res.spacing_mm)
    write_centerline_csv(out / "centerline.csv", branches)
    # lesions graded by the inscribed sphere and confirmed by the section areas; a flattened section
    # whose area is kept is listed apart (flow.lesions.confirm_by_area)
    lesions, flattened = confirm_by_area(grade_stenosis(branches), branches,
                                         section_areas(branches, res.occupancy, res.origin_mm, res.spacing_mm))
    summary = {
        "format": "pinngs-reconstruction", "version": 1, "study": study_label, "warnings": list(warnings),
        "study_meta": study.meta, "mode": study.mode, "n_views": len(study.views), "n_frames": len(study.frames),
        "view_separation_deg": view_separation_deg(study.views),
        "n_gaussians": len(res.field), "lumen_level_per_mm": res.lumen_level,
        "lumen_volume_mm3": float((res.occupancy > 0.5).sum() * res.spacing_mm ** 3),
        "surface": {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                    "watertight": bool(mesh.is_watertight), "area_mm2": float(mesh.area)},
        "centerline": {"branches": len(branches), "points": int(sum(len(b) for b in branches))},
        "stenosis": lesions, "flattened_sections": flattened, "murray": murray_deviation(branches),
        "flow": flow_section(flow, flow_note, study, res.info.get("data_rel_l2", float("nan")), pa_mmhg),
        "fit": res.info, "seconds_total": time.perf_counter() - t0,
    } | (extra or {})
    if flow is not None:
        write_flow_npz(out / "flow.npz", flow, res.occupancy, res.origin_mm, res.spacing_mm)
        summary["flow"]["files"] = write_flow_vtk(out, flow, mesh)
    _report(out, res, branches, summary, flow)
    summary["seconds_total"] = time.perf_counter() - t0
    with atomic_file(out / "summary.json") as fh:
        fh.write(json.dumps(summary, indent=1, default=_json_default))
    return summary


def flow_section(flow: LumenFlow | None, note: str, study: Study, data_rel_l2: float, pa_mmhg: float) -> dict:
    """summary.json's "flow": ``LumenFlow.summary`` (coverage at the newest frame; geometry confidence
    clip(1 − data misfit / 0.5, 0, 1), as the online fitter's), or {"status": why there is none}."""
    if flow is None:
        return {"method": None, "status": f"not available: {note or 'not computed'}", "pa_mmhg": float(pa_mmhg)}
    cg = float(np.clip(1 - data_rel_l2 / 0.5, 0, 1)) if math.isfinite(data_rel_l2) else 0.0
    t_last = max(fr.t_s for fr in study.frames) if study.frames else math.inf
    return flow.summary(pa_mmhg, t_last, cg)


def write_flow_npz(path: Path, flow: LumenFlow, occ: np.ndarray, origin_mm, spacing_mm: float,
                   grid_mm: float = FLOW_GRID_MM) -> None:
    """The flow estimate's velocity (mm/s) and pressure (Pa) on a ``grid_mm`` grid over the lumen's
    box, NaN pressure and zero velocity outside the lumen (the layout of the simulator's truth)."""
    shape = np.maximum(np.ceil(np.array(occ.shape) * spacing_mm / grid_mm).astype(int), 1)
    idx = np.indices(shape).reshape(3, -1).T
    pts = np.asarray(origin_mm, float) + grid_mm * idx
    inside = flow.domain.inside(pts) >= 0.5
    vel = np.zeros((len(pts), 3), np.float32)
    pr = np.full(len(pts), np.nan, np.float32)
    if inside.any():
        vel[inside] = flow.velocity_mm_s(pts[inside])
        pr[inside] = flow.pressure_pa(pts[inside])
    np.savez_compressed(path, velocity_mm_s=vel.reshape(*shape, 3), pressure_pa=pr.reshape(*shape),
                        origin_mm=np.asarray(origin_mm, float), spacing_mm=float(grid_mm), method=flow.method,
                        note="reduced: quasi-Poiseuille velocity, viscous pressure (the lesions' loss is in "
                             "summary.json); fem / pinn / pinn-pure: the solved field")


def write_flow_vtk(out: Path, flow: LumenFlow, wall_mesh) -> dict:
    """ParaView files of the flow (meshio, VTK XML): ``flow_volume.vtu`` (the CFD's tetrahedra where
    one was solved, else the lumen's points on the FLOW_GRID_MM grid) with ``velocity_mm_s`` and
    ``pressure_pa``, and ``wall.vtu`` (the lumen surface) with ``wss_pa`` and ``pressure_pa``. A PINN's
    pressure is NaN at the CFD's nodes outside the reconstructed lumen (it was trained inside it; the
    loft's round sections stick out of it by a few per cent): NaN, not 0, so no one reads it as a value."""
    from .io.exports import write_vtu

    if flow.mesh is not None:
        pts, cells, kind = flow.mesh[0], flow.mesh[1], "tetra"
    else:
        d = flow.domain
        shape = np.maximum(np.ceil(np.array(d.occ.shape) * d.spacing_mm / FLOW_GRID_MM).astype(int), 1)
        pts = d.origin_mm + FLOW_GRID_MM * np.indices(shape).reshape(3, -1).T
        pts, cells, kind = pts[d.inside(pts) >= 0.5], None, "vertex"
    write_vtu(out / "flow_volume.vtu", pts, cells, kind,
              {"velocity_mm_s": flow.velocity_mm_s(pts), "pressure_pa": flow.pressure_pa(pts)})
    v, n = np.asarray(wall_mesh.vertices), np.asarray(wall_mesh.vertex_normals)
    write_vtu(out / "wall.vtu", v, np.asarray(wall_mesh.faces), "triangle",
              {"wss_pa": flow.wss_pa(v, n), "pressure_pa": flow.pressure_pa(v - 0.1 * n)})
    return {"volume": "flow_volume.vtu", "wall": "wall.vtu", "volume_cells": kind,
            "units": {"velocity_mm_s": "mm/s", "pressure_pa": "Pa", "wss_pa": "Pa"}}


def _flow_lines(f: dict) -> list[str]:
    """The report's flow section."""
    if not f.get("method"):
        return [f"No flow estimate: {f.get('status', 'not computed')}. The geometry above is complete."]
    lines = [f"- Method: {f['method']} ({METHOD_TEXT.get(f['method'], '')})",
             f"- Status: {f['status']}",
             f"- Flow rate Q: {f['q_mm3_s']:.0f} mm³/s ({f['q_mm3_s'] * 0.06:.1f} ml/min; confidence "
             f"{f['q_confidence']:.2f})",
             f"- Mean inlet velocity {f['velocity_mean_mm_s']:.0f} mm/s, peak {f['velocity_max_mm_s']:.0f} mm/s",
             f"- ΔP along the main branch ({f['dp_section_arcs_mm'][0]:.1f}–{f['dp_section_arcs_mm'][1]:.1f} mm): "
             f"{f['dp_pa']:.0f} Pa = {f['dp_mmhg']:.2f} mmHg; FFR {f['ffr']:.3f} at Pa = {f['pa_mmhg']:.0f} mmHg "
             f"(confidence {f['ffr_confidence']:.2f})"]
    if f["lesions"]:
        lines += ["", "| lesion at (mm) | % diameter | % by area | jet weight | ΔP (mmHg) | FFR |", "|---|---|---|---|---|---|"]
        for x in f["lesions"]:
            lines.append(f"| {x['arc_from_inlet_mm']:.1f} | {x['percent_diameter_stenosis']:.1f} | "
                         f"{x['percent_equivalent_diameter_stenosis']:.1f} | {x['jet_weight']:.2f} | "
                         f"{x['dp_mmhg']:.2f} | {x['ffr']:.3f} |")
    sv = f.get("solver") or {}
    if "fallback" in sv:
        lines.append(f"- **The requested solver did not converge; the reduced estimate is reported** ({sv['fallback']})")
    if "lofted_dice" in sv:
        lines.append(f"- CFD lumen: lofted from the centerline with round sections, Dice {sv['lofted_dice']:.3f} against "
                     "the reconstructed lumen")
    if "fem" in sv:
        jet = sv["fem"].get("jet")
        mesh = (f"the jet core at {jet[0]:g} per throat radius" if jet else "uniform") + (
            f" ({sv['fem']['mesh_note']})" if sv["fem"].get("mesh_note") else "")
        lines.append(f"- CFD: {sv['fem'].get('n_tets', 0)} quadratic tetrahedra, mesh {mesh}, "
                     f"{sv['fem'].get('iterations', 0)} Newton/Picard iterations, {sv['fem'].get('seconds', 0):.0f} s")
    if (un := sv.get("fem", {}).get("unsteady")):
        lines.append(f"- **The CFD did not settle to a steady flow**: the fields are the mean of its last {un['states']} "
                     f"pseudo-time steps; over them the CFD's ΔP ranged {un['dp_min_pa']:.0f}–{un['dp_max_pa']:.0f} Pa")
    if "pinn" in sv:
        p = sv["pinn"]
        lines.append(f"- PINN: velocity rel-L2 against its anchor {p.get('anchor_velocity_rel_l2', float('nan')):.3f}; "
                     f"Navier–Stokes residual RMS {p.get('momentum_rel_convective', float('nan')):.3f} of the "
                     f"convective term; {p.get('seconds', 0):.0f} s")
    if f.get("files"):
        lines.append(f"- ParaView: `{f['files']['volume']}` (velocity_mm_s, pressure_pa), `{f['files']['wall']}` (wss_pa)")
    lines.append("")
    lines.append("Confidences are heuristics, not calibrated against errors (pinngs.flow.estimate).")
    return lines


METHOD_TEXT = {"reduced": "bolus-transit flow rate; Poiseuille + Young–Tsai pressure drop; quasi-Poiseuille velocity",
               "fem": "bolus-transit flow rate; 3D steady Navier–Stokes (Taylor–Hood FEM) on the lofted lumen",
               "pinn": "bolus-transit flow rate; a PINN anchored on 3D FEM, held to Navier–Stokes at the Gaussian centres",
               "pinn-pure": "bolus-transit flow rate; a PINN held to Navier–Stokes, no slip and the flux, without CFD"}


def _flow_row(ax, flow: LumenFlow | None, f: dict) -> None:
    """The report figure's flow row: pressure and FFR along the main branch, velocity magnitude."""
    if flow is None:
        for a in ax:
            a.axis("off")
        ax[0].text(0, 1, "no flow estimate:\n" + textwrap.fill(f.get("status", ""), 45), va="top", fontsize=8)
        return
    b0 = np.asarray(flow.branches[0], float)
    s0, s1 = flow.dp_arcs_mm
    grid = np.linspace(s0, s1, 60)
    p_mmhg = f["pa_mmhg"] - np.array([0.0] + [flow.dp_between_pa(s0, g) for g in grid[1:]]) / PA_PER_MMHG
    pa = f["pa_mmhg"]
    a = ax[0]
    a.plot(grid, p_mmhg, lw=1.2)
    a.set_xlabel("arc length (mm)", fontsize=8)
    a.set_ylabel("pressure (mmHg)", fontsize=8)
    a.set_title(f"pressure along branch 0 (Pa = {pa:.0f} mmHg at {s0:.1f} mm)", fontsize=8)
    a.tick_params(labelsize=7)
    a2 = a.twinx()
    a2.set_ylim(*(np.array(a.get_ylim()) / pa))  # the FFR axis: the same curve divided by Pa
    a2.set_ylabel("FFR", fontsize=8)
    a2.tick_params(labelsize=7)
    for x in f.get("lesions", []):
        a.axvline(x["arc_from_inlet_mm"], color="r", ls=":", lw=1)
    # velocity magnitude on the longitudinal plane through the main branch's narrowest section
    k = int(np.argmin(flow.areas_mm2[0]))
    t = tangents(b0[:, :3])[k]
    u, _ = plane_basis(t)
    half_len, half_w = 4.0 * float(np.median(b0[:, 3])) + 2.0, 1.6 * float(np.max(b0[:, 3]))
    along, across = np.linspace(-half_len, half_len, 240), np.linspace(-half_w, half_w, 80)
    A, C = np.meshgrid(along, across, indexing="ij")
    pts = b0[k, :3] + A.reshape(-1, 1) * t + C.reshape(-1, 1) * u
    speed = np.linalg.norm(flow.velocity_mm_s(pts), axis=1).reshape(A.shape)
    im = ax[1].imshow(speed.T, origin="lower", cmap="magma", aspect="equal",
                      extent=(-half_len, half_len, -half_w, half_w))
    ax[1].set_title("|u| (mm/s), axial plane at the throat", fontsize=8)
    ax[1].set_xlabel("mm along the vessel", fontsize=7)
    ax[1].tick_params(labelsize=6)
    ax[1].figure.colorbar(im, ax=ax[1], fraction=0.046)
    ax[2].axis("off")
    ax[2].text(0, 1, "\n".join([f"Q {f['q_mm3_s']:.0f} mm³/s", f"ΔP {f['dp_mmhg']:.2f} mmHg",
                                 f"FFR {f['ffr']:.3f}", f"status: {f['status'][:40]}"]),
               va="top", fontsize=8, family="monospace")


def _report(tmp: Path, res, branches: list[np.ndarray], summary: dict, flow: LumenFlow | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tg = res.targets
    show = list(range(len(tg.views)))
    if len(show) > 4:
        show = list(np.linspace(0, len(show) - 1, 4).astype(int))
    with torch.no_grad():
        fit_img = nuisance_fit(render_views(res.field, [tg.views[k] for k in show]), tg.images[show],
                               res.info["targets_mode"] == "frames" or res.info["targets"]["kind"].startswith("rot")).numpy()
    n = len(show)
    fig, ax = plt.subplots(n + 2, 3, figsize=(9.6, 3.1 * (n + 2)))
    for row, k in enumerate(show):
        data = tg.images[k].numpy()
        hi = float(np.percentile(data, 99.9)) or 1.0
        v = tg.views[k]
        ax[row, 0].imshow(data, cmap="gray_r", vmin=0, vmax=hi)
        ax[row, 0].set_title(f"data {v.primary_deg:+.0f}°/{v.secondary_deg:+.0f}°", fontsize=8)
        ax[row, 1].imshow(fit_img[row], cmap="gray_r", vmin=0, vmax=hi)
        ax[row, 1].set_title("fit (rendered Gaussians, fitted scale + background)", fontsize=8)
        r = fit_img[row] - data
        im = ax[row, 2].imshow(r, cmap="RdBu_r", vmin=-0.25 * hi, vmax=0.25 * hi)
        ax[row, 2].set_title(f"residual (rel L2 {np.linalg.norm(r) / np.linalg.norm(data):.3f})", fontsize=8)
        fig.colorbar(im, ax=ax[row, 2], fraction=0.046)
        for a in ax[row]:
            a.axis("off")
    occ = res.occupancy
    thin = int(np.argmin(occ.shape))
    ax[n, 0].imshow(occ.max(axis=thin).T, cmap="gray", origin="lower")
    ax[n, 0].set_title(f"lumen MIP (axis {'xyz'[thin]})", fontsize=8)
    ax[n, 0].axis("off")
    a = ax[n, 1]
    for bi, b in enumerate(branches):
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(b[:, :3], axis=0), axis=1))])
        a.plot(s, b[:, 3], lw=1, label=f"branch {bi}")
    for les in summary.get("stenosis", []):
        a.axvline(les.get("arc_from_inlet_mm", np.nan), color="r", ls=":", lw=1)
    a.set_xlabel("arc length (mm)", fontsize=8)
    a.set_ylabel("radius (mm)", fontsize=8)
    a.set_title("radius along the centerline", fontsize=8)
    a.tick_params(labelsize=7)
    if len(branches) > 1:
        a.legend(fontsize=7)
    ax[n, 2].axis("off")
    txt = [f"{summary['n_gaussians']} Gaussians, {summary['seconds_total']:.0f} s",
           f"data rel L2 {summary['fit']['data_rel_l2']:.3f}",
           f"lumen volume {summary['lumen_volume_mm3']:.1f} mm³"]
    for les in summary.get("stenosis", []):
        txt.append(f"stenosis {les['percent_diameter_stenosis']:.0f} % at {les['arc_from_inlet_mm']:.1f} mm, "
                   f"length {les['length_mm']:.1f} mm")
    ax[n, 2].text(0, 1, "\n".join(txt), va="top", fontsize=8, family="monospace")
    _flow_row(ax[n + 1], flow, summary.get("flow", {}))
    fig.tight_layout()
    fig.savefig(tmp / "report.png", dpi=80)
    plt.close(fig)
    lines = [f"**Warning: {w}.**" for w in summary.get("warnings", [])] + ([""] if summary.get("warnings") else [])
    lines += [f"# pinngs reconstruction: {summary['study']}", "",
             f"- Views: {summary['n_views']} ({summary['mode']}), at most {summary['view_separation_deg']:.0f}° apart",
             f"- Targets: {summary['fit']['targets']['kind']} ({summary['fit']['n_targets']} images)",
             *_gate_line(summary['fit'].get('gate') or {}),
             f"- Gaussians: {summary['n_gaussians']} (from {summary['fit']['n_init']} at initialisation)",
             f"- Data misfit (relative L2 over all targets): {summary['fit']['data_rel_l2']:.4f}",
             f"- Lumen level μ_c: {summary['lumen_level_per_mm']:.4f} mm⁻¹ (from the "
             f"{'projections' if summary['fit'].get('lumen_level_rule') == 'projected' else 'field density'}); "
             f"lumen volume {summary['lumen_volume_mm3']:.1f} mm³",
             f"- Surface: {summary['surface']['faces']} faces, watertight = {summary['surface']['watertight']}",
             f"- Wall time: {summary['seconds_total']:.1f} s (fit {summary['fit']['seconds_fit']:.1f} s)", "",
             "## Stenoses", ""]
    if summary.get("stenosis"):
        lines += ["| # | % diameter | % diameter by area | location (mm from inlet) | length (mm) | min diameter (mm) | "
                  "reference (mm) |", "|---|---|---|---|---|---|---|"]
        for k, les in enumerate(summary["stenosis"]):
            lines.append(f"| {k} | {les['percent_diameter_stenosis']:.1f} | "
                         f"{les.get('percent_equivalent_diameter_stenosis', float('nan')):.1f} | {les['arc_from_inlet_mm']:.1f} | "
                         f"{les['length_mm']:.1f} | {les['d_min_mm']:.2f} | {les['d_ref_mm']:.2f} |")
    else:
        lines.append("none found")
    if summary.get("flattened_sections"):
        lines += ["", "Flattened, not narrowed (the inscribed sphere shrinks, the section area does not; not lesions): "
                  + "; ".join(f"{x['percent_diameter_stenosis']:.0f} % by the inscribed diameter, "
                              f"{x['percent_equivalent_diameter_stenosis']:.0f} % by area at {x['arc_from_inlet_mm']:.1f} mm"
                              for x in summary["flattened_sections"])]
    if summary.get("murray"):
        lines += ["", "## Bifurcations (Murray's law)", ""]
        for k, b in enumerate(summary["murray"]):
            lines.append(f"- bifurcation {k}: deviation {b['deviation']:+.3f}, exponent "
                         f"{b['exponent_k'] if b['exponent_k'] is not None else float('nan'):.2f}")
    lines += ["", "## Flow", ""] + _flow_lines(summary.get("flow", {}))
    lines += ["", "![report](report.png)", ""]
    (tmp / "report.md").write_text("\n".join(lines))


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _gate_line(g: dict) -> list[str]:
    """The report's line on ECG gating (none where the study had no cardiac timing)."""
    if g.get("gate") == "end-diastole":
        return [f"- ECG gating: end-diastole (±{g['width'] / 2:.2f} of a cycle around each R wave): {g['frames_kept']} of "
                f"{g['frames']} frames fitted; {g['beats']} R waves, heart rate {g['heart_rate_bpm']:.0f} bpm "
                f"({g['source']})"]
    if g.get("source"):
        return [f"- ECG gating: none ({g.get('reason', 'not requested')}); heart rate {g['heart_rate_bpm']:.0f} bpm"]
    return []
