"""``pinngs reconstruct``: study -> Gaussians -> lumen, surface, centerline, grading, report.

    res = reconstruct("out/sten50", "out/sten50-recon")          # a study folder or DICOM XA
    print(res["stenosis"])

OUT receives (all in world mm, DESIGN.md frames):

    gaussians.ply        the Gaussians for 3DGS viewers (x, y, z, f_dc_*, opacity, scale_* = ln σ mm,
                         rot_* = quaternion w, x, y, z)
    gaussians.npz        means_mm [N,3], scales_mm [N,3], quats_wxyz [N,4], atten_per_mm [N],
                         lumen_level_per_mm
    lumen.npz            occupancy uint8 (= round(255·fraction)), origin_mm [3] (centre of voxel 0),
                         spacing_mm: the voxelized field / μ_c, clipped to [0, 1]
    lumen.stl, lumen.obj the 0.5 surface (marching cubes, trimesh), watertight
    centerline.csv       X,Y,Z,MaximumInscribedSphereRadius,BranchId (VMTK style)
    summary.json         stenosis grading, Murray deviation, fit statistics, timings
    report.md, report.png

While it runs OUT holds ``checkpoint.pt`` (every ``checkpoint_every`` steps); ``resume=True``
continues from it. The final files are written to ``OUT/.writing`` and moved into place only when
all of them exist, and the checkpoint is removed last.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..io.study import Study, StudyError, load_study
from .fit import FitConfig, FitResult, fit_study, nuisance_fit


class ReconstructError(ValueError):
    """A problem with the inputs or the output folder that the user can fix."""


def load_any_study(path: str | os.PathLike) -> Study:
    """A study folder (study.json + frames/) or DICOM XA: one file, or a folder of .dcm files."""
    p = Path(path)
    if not p.exists():
        raise ReconstructError(f"study {p} does not exist")
    if p.is_dir() and (p / "study.json").exists():
        return load_study(p)
    from ..io.dicom import read_xa

    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix.lower() in (".dcm", ".dicom") or q.suffix == "")
        files = [q for q in files if q.is_file()]
        if not files:
            raise ReconstructError(f"{p} holds neither study.json nor DICOM files (*.dcm)")
        return read_xa(files)
    return read_xa([p])


# ------------------------------------------------------------------------------------------------
def write_ply(path: Path, res: FitResult) -> None:
    """Binary little-endian PLY with the attribute names 3DGS viewers read. Opacity is the logit of
    a/max(a) (viewers apply a sigmoid); colour is a neutral grey."""
    f = res.field
    with torch.no_grad():
        m = f.means.numpy().astype(np.float32)
        ls = f.log_scales.numpy().astype(np.float32)
        q = torch.nn.functional.normalize(f.quats, dim=-1).numpy().astype(np.float32)
        a = f.attenuation.numpy().astype(np.float64)
    op = np.clip(a / a.max(), 1e-6, 1 - 1e-6)
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
             + [f"scale_{k}" for k in range(3)] + [f"rot_{k}" for k in range(4)])
    arr = np.zeros(len(m), dtype=[(n, "<f4") for n in names])
    for k, ax in enumerate("xyz"):
        arr[ax] = m[:, k]
        arr[f"scale_{k}"] = ls[:, k]
    for k in range(3):
        arr[f"f_dc_{k}"] = 0.5 / 0.28209479  # SH DC term that renders as mid-grey
    arr["opacity"] = np.log(op / (1 - op)).astype(np.float32)
    for k in range(4):
        arr[f"rot_{k}"] = q[:, k]
    header = ("ply\nformat binary_little_endian 1.0\ncomment pinngs Gaussians, world mm; scale_* = ln(sigma mm)\n"
              f"element vertex {len(m)}\n" + "".join(f"property float {n}\n" for n in names) + "end_header\n")
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(arr.tobytes())


def _report(tmp: Path, res: FitResult, branches: list[np.ndarray], summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..render import render_views

    tg = res.targets
    show = list(range(len(tg.views)))
    if len(show) > 4:
        show = list(np.linspace(0, len(show) - 1, 4).astype(int))
    with torch.no_grad():
        fit_img = nuisance_fit(render_views(res.field, [tg.views[k] for k in show]), tg.images[show],
                               res.info["targets_mode"] == "frames" or res.info["targets"]["kind"].startswith("rot")).numpy()
    n = len(show)
    fig, ax = plt.subplots(n + 1, 3, figsize=(9.6, 3.1 * (n + 1)))
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
    fig.tight_layout()
    fig.savefig(tmp / "report.png", dpi=80)
    plt.close(fig)
    lines = [f"# pinngs reconstruction: {summary['study']}", "",
             f"- Targets: {summary['fit']['targets']['kind']} ({summary['fit']['n_targets']} images)",
             f"- Gaussians: {summary['n_gaussians']} (from {summary['fit']['n_init']} at initialisation)",
             f"- Data misfit (relative L2 over all targets): {summary['fit']['data_rel_l2']:.4f}",
             f"- Lumen level μ_c: {summary['lumen_level_per_mm']:.4f} mm⁻¹; lumen volume {summary['lumen_volume_mm3']:.1f} mm³",
             f"- Surface: {summary['surface']['faces']} faces, watertight = {summary['surface']['watertight']}",
             f"- Wall time: {summary['seconds_total']:.1f} s (fit {summary['fit']['seconds_fit']:.1f} s)", "",
             "## Stenoses", ""]
    if summary.get("stenosis"):
        lines += ["| # | % diameter | location (mm from inlet) | length (mm) | min diameter (mm) | reference (mm) |",
                  "|---|---|---|---|---|---|"]
        for k, les in enumerate(summary["stenosis"]):
            lines.append(f"| {k} | {les['percent_diameter_stenosis']:.1f} | {les['arc_from_inlet_mm']:.1f} | {les['length_mm']:.1f} | "
                         f"{les['d_min_mm']:.2f} | {les['d_ref_mm']:.2f} |")
    else:
        lines.append("none found")
    if summary.get("murray"):
        lines += ["", "## Bifurcations (Murray's law)", ""]
        for k, b in enumerate(summary["murray"]):
            lines.append(f"- bifurcation {k}: deviation {b['deviation']:+.3f}, exponent "
                         f"{b['exponent_k'] if b['exponent_k'] is not None else float('nan'):.2f}")
    lines += ["", "![report](report.png)", ""]
    (tmp / "report.md").write_text("\n".join(lines))


def write_outputs(out: Path, res: FitResult, study: Study, study_label: str, t0: float | None = None,
                  extra: dict | None = None) -> dict:
    """Write the reconstruction's files (gaussians.ply/.npz, lumen.npz/.stl/.obj, centerline.csv,
    summary.json, report) into the existing folder ``out``: all go to ``out/.writing`` first and are
    moved into place only when every one exists. ``extra`` is merged into summary.json. Used by
    ``reconstruct`` and by the online fitter."""
    from .centerline import extract_centerline, grade_stenosis, murray_deviation, write_centerline_csv
    from .surface import mask_to_mesh

    t0 = time.perf_counter() if t0 is None else t0
    tmp = out / ".writing"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write_ply(tmp / "gaussians.ply", res)
        f = res.field
        with torch.no_grad():
            np.savez(tmp / "gaussians.npz", means_mm=f.means.numpy(), scales_mm=f.scales.numpy(),
                     quats_wxyz=torch.nn.functional.normalize(f.quats, dim=-1).numpy(),
                     atten_per_mm=f.attenuation.numpy(), lumen_level_per_mm=res.lumen_level,
                     note="world mm (DESIGN.md); mu(x) = sum_i atten_i exp(-1/2 d^T R diag(1/s^2) R^T d)")
        occ8 = np.round(res.occupancy * 255).astype(np.uint8)
        np.savez_compressed(tmp / "lumen.npz", occupancy=occ8, origin_mm=res.origin_mm, spacing_mm=res.spacing_mm,
                            note="occupancy/255 = voxelized Gaussians / lumen level, clipped; 0.5 = the lumen surface")
        mesh = mask_to_mesh(res.occupancy, res.origin_mm, res.spacing_mm, 0.5)
        mesh.export(tmp / "lumen.stl")
        mesh.export(tmp / "lumen.obj")
        branches = extract_centerline(res.occupancy, res.origin_mm, res.spacing_mm)
        write_centerline_csv(tmp / "centerline.csv", branches)
        lesions = grade_stenosis(branches)
        murray = murray_deviation(branches)
        summary = {
            "format": "pinngs-reconstruction", "version": 1, "study": study_label,
            "study_meta": study.meta, "mode": study.mode, "n_views": len(study.views), "n_frames": len(study.frames),
            "n_gaussians": len(f), "lumen_level_per_mm": res.lumen_level,
            "lumen_volume_mm3": float((res.occupancy > 0.5).sum() * res.spacing_mm ** 3),
            "surface": {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                        "watertight": bool(mesh.is_watertight), "area_mm2": float(mesh.area)},
            "centerline": {"branches": len(branches), "points": int(sum(len(b) for b in branches))},
            "stenosis": lesions, "murray": murray, "fit": res.info,
            "seconds_total": time.perf_counter() - t0,
        } | (extra or {})
        _report(tmp, res, branches, summary)
        summary["seconds_total"] = time.perf_counter() - t0
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
        for q in sorted(tmp.iterdir()):
            os.replace(q, out / q.name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def reconstruct(study_path: str | os.PathLike, out: str | os.PathLike, config: FitConfig | None = None,
                overwrite: bool = False, resume: bool = False, progress: bool = True,
                stop_after: int | None = None) -> dict | None:
    """Run the whole batch reconstruction; returns the summary (None if ``stop_after`` stopped it)."""
    t0 = time.perf_counter()
    out = Path(out)
    ckpt = out / "checkpoint.pt"
    if out.exists() and not out.is_dir():
        raise ReconstructError(f"output {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if resume and ckpt.exists():
            pass
        elif resume:
            raise ReconstructError(f"--resume: {out} holds no checkpoint.pt to resume from")
        elif overwrite:
            shutil.rmtree(out)
        else:
            raise ReconstructError(f"output folder {out} is not empty; choose another, pass --overwrite, "
                                   f"or --resume an interrupted run")
    try:
        study = load_any_study(study_path)
    except StudyError as e:
        raise ReconstructError(str(e)) from None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    cfg = config or FitConfig()
    try:
        res = fit_study(study, cfg, checkpoint=ckpt, resume=resume, progress=progress, stop_after=stop_after)
    except BaseException:
        # a run that fails before its first checkpoint leaves nothing behind; one with a checkpoint
        # keeps it for --resume
        if created and not ckpt.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    if res is None:
        return None
    summary = write_outputs(out, res, study, str(study_path), t0)
    if ckpt.exists():
        ckpt.unlink()
    return summary


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
