"""Accuracy of a reconstruction against simulator truth (``pinngs evaluate OUT --truth DIR``).

    m = evaluate("out/recon", "out/study/truth")

Metrics (all lengths in mm):

* ``dice``: lumen Dice, the reconstruction's occupancy resampled (trilinear) onto the truth grid,
  both thresholded at 0.5.
* ``chamfer_mm``, ``hausdorff95_mm``, ``fscore_0.2mm``: between the two 0.5 surfaces (marching
  cubes), from ``n_surface_points`` points sampled uniformly by area on each (fixed seed), each
  matched against a 20x denser sample of the other surface.
  Chamfer = mean of the two directed mean distances; HD95 = the larger of the two directed 95th
  percentiles; F-score = harmonic mean of precision (reconstruction points within 0.2 mm of the
  truth) and recall (truth points within 0.2 mm of the reconstruction).
* ``radius_mae_mm``, ``centerline_rmse_mm``: each truth centerline point is matched to the nearest
  reconstructed centerline point; MAE of the radii, RMSE of the distances. Truth points within one
  radius of a branch's free end are left out (at a rounded end cap the inscribed sphere is not
  defined the same way on both sides); ``centerline_coverage`` is the fraction of the remaining
  truth points whose match lies within one truth radius.
* ``stenosis_error_points``: |most severe reconstructed % diameter stenosis − truth|, the truth
  being the phantom's nominal severity (truth.json) or, for vessels without a nominal stenosis,
  the same grading applied to the truth centerline (0 when neither finds a lesion).
* ``flow_*`` (when the reconstruction computed flow and the truth holds ``flow.npz``): the flow
  rate's error against the truth's Q (``flow_q_error_percent``); the truth's pressure drop between
  the two sections the estimate used (``summary.json`` flow.dp_sections), each a disc normal to the
  estimate's direction there, 1.6 truth radii wide (the radius of the nearest truth centerline
  point), its pressure the area mean over the truth's fluid voxels (``flow_dp_truth_pa``,
  ``flow_dp_error_percent``); FFR from both at the estimate's Pa (``flow_ffr_truth``,
  ``flow_ffr_abs_error``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree

from ..io.exports import read_centerline_csv
from .stenosis import grade_stenosis
from .surface import mask_to_mesh, occupancy_fraction


def _load_lumen(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        z = np.load(path)
    except Exception as e:  # truncated or not an .npz: one clear message, no traceback
        raise ValueError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    for k in ("occupancy", "origin_mm", "spacing_mm"):
        if k not in z:
            raise KeyError(f"{path}: missing array {k!r} (expected occupancy, origin_mm, spacing_mm)")
    sp = np.asarray(z["spacing_mm"], float)
    if sp.size != 1:
        if not np.allclose(sp, sp.flat[0]):
            raise ValueError(f"{path}: only isotropic spacing is supported, got {sp}")
    return occupancy_fraction(z["occupancy"]), np.asarray(z["origin_mm"], float).reshape(3), float(sp.flat[0])


def resample_to(occ: np.ndarray, origin: np.ndarray, h: float, origin_t: np.ndarray, h_t: float,
                shape_t: tuple[int, int, int]) -> np.ndarray:
    """occ [X, Y, Z] on (origin, h) resampled trilinearly at the voxel centres of the target grid
    [shape_t]; 0 outside."""
    axes = [(origin_t[k] + h_t * np.arange(shape_t[k]) - origin[k]) / h for k in range(3)]
    out = np.empty(shape_t, np.float32)
    X, Y = np.meshgrid(axes[0], axes[1], indexing="ij")
    for kz in range(shape_t[2]):  # slice by slice: bounded memory on 0.1 mm grids
        Z = np.full_like(X, axes[2][kz])
        out[:, :, kz] = map_coordinates(occ, [X, Y, Z], order=1, cval=0.0)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def surface_metrics(mesh_r, mesh_t, n_points: int = 50_000, tol_mm: float = 0.2, seed: int = 0,
                    ref_density: int = 20) -> dict:
    """Directed distances from ``n_points`` points sampled on each surface to a ``ref_density``
    times denser sample of the other (so the sampling itself adds < 0.01 mm on vessel-sized
    surfaces; point-to-point distances between two equally sparse samples would not vanish even
    for identical surfaces)."""
    import trimesh

    def directed(a, b, s):
        q, _ = trimesh.sample.sample_surface(a, n_points, seed=s)
        ref, _ = trimesh.sample.sample_surface(b, ref_density * n_points, seed=s + 1)
        return cKDTree(ref).query(q)[0]

    d_rt = directed(mesh_r, mesh_t, seed)  # reconstruction -> truth
    d_tr = directed(mesh_t, mesh_r, seed + 2)
    prec = float((d_rt < tol_mm).mean())
    rec = float((d_tr < tol_mm).mean())
    return {"chamfer_mm": 0.5 * float(d_rt.mean() + d_tr.mean()),
            "hausdorff95_mm": float(max(np.percentile(d_rt, 95), np.percentile(d_tr, 95))),
            f"fscore_{tol_mm:g}mm": 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec),
            "precision": prec, "recall": rec}


def _free_end_mask(branches: list[np.ndarray]) -> np.ndarray:
    """[P] True for truth centerline points farther than one radius from every free branch end
    (an end that is not shared with another branch)."""
    ends = []
    for i, b in enumerate(branches):
        for e in (b[0], b[-1]):
            shared = any(np.linalg.norm(o[[0, -1], :3] - e[:3], axis=1).min() < 1e-3
                         for j, o in enumerate(branches) if j != i)
            if not shared:
                ends.append(e)
    pts = np.concatenate(branches)
    keep = np.ones(len(pts), bool)
    for e in ends:
        keep &= np.linalg.norm(pts[:, :3] - e[:3], axis=1) > pts[:, 3]
    return keep


def centerline_metrics(branches_r: list[np.ndarray], branches_t: list[np.ndarray]) -> dict:
    t = np.concatenate(branches_t)
    r = np.concatenate(branches_r)
    keep = _free_end_mask(branches_t)
    tk = t[keep]
    d, j = cKDTree(r[:, :3]).query(tk[:, :3])
    return {"radius_mae_mm": float(np.abs(r[j, 3] - tk[:, 3]).mean()),
            "radius_bias_mm": float((r[j, 3] - tk[:, 3]).mean()),
            "centerline_rmse_mm": float(np.sqrt((d ** 2).mean())),
            "centerline_coverage": float((d < tk[:, 3]).mean())}


def _read_json(path: Path) -> dict:
    """A JSON object from a file; ValueError naming the file when it is not one."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def evaluate(recon_dir: str | Path, truth_dir: str | Path, n_surface_points: int = 50_000) -> dict:
    """All metrics of the module docstring as a dict; writes nothing."""
    rd, td = Path(recon_dir), Path(truth_dir)
    for p in (rd / "lumen.npz", rd / "centerline.csv", rd / "summary.json", td / "lumen.npz", td / "centerline.csv",
              td / "truth.json"):
        if not p.is_file():
            raise FileNotFoundError(f"evaluate: {p} does not exist (recon = a `pinngs reconstruct` folder, "
                                    f"truth = the truth/ folder of a simulated study)")
    # every input is read and checked before any metric is computed
    summary, truth = _read_json(rd / "summary.json"), _read_json(td / "truth.json")
    lesions = summary.get("stenosis")
    if lesions is None:
        raise KeyError(f"{rd / 'summary.json'}: missing 'stenosis' (the grading of `pinngs reconstruct`)")
    occ_r, o_r, h_r = _load_lumen(rd / "lumen.npz")
    occ_t, o_t, h_t = _load_lumen(td / "lumen.npz")
    br, bt = read_centerline_csv(rd / "centerline.csv"), read_centerline_csv(td / "centerline.csv")
    out: dict = {"dice": dice(resample_to(occ_r, o_r, h_r, o_t, h_t, occ_t.shape), occ_t)}
    out.update(surface_metrics(mask_to_mesh(occ_r, o_r, h_r), mask_to_mesh(occ_t, o_t, h_t), n_surface_points))
    out.update(centerline_metrics(br, bt))
    rec_pct = max((float(x["percent_diameter_stenosis"]) for x in lesions), default=0.0)
    if truth.get("stenosis"):
        true_pct, source = 100.0 * float(truth["stenosis"]["severity"]), "nominal"
    else:
        true_pct = max((float(x["percent_diameter_stenosis"]) for x in grade_stenosis(bt)), default=0.0)
        source = "graded truth centerline"
    out.update({"stenosis_percent_recon": rec_pct, "stenosis_percent_truth": true_pct, "stenosis_truth_source": source,
                "stenosis_error_points": abs(rec_pct - true_pct),
                "lumen_volume_mm3_recon": float((occ_r > 0.5).sum() * h_r ** 3),
                "lumen_volume_mm3_truth": float((occ_t > 0.5).sum() * h_t ** 3)})
    if (td / "flow.npz").is_file():
        out.update(flow_metrics(summary.get("flow") or {}, truth, td / "flow.npz", bt))
    return out


def truth_section_pressure(flow_npz: dict, centre_mm, normal, radius_mm: float, h_mm: float = 0.05) -> float:
    """Area mean of the truth's pressure (Pa) over a disc (centre, unit normal, radius; mm), its
    points outside the truth's fluid (NaN pressure) left out."""
    from ..polyline import disc_at

    c, n = np.asarray(centre_mm, float), np.asarray(normal, float)
    pts, _ = disc_at(c, n / np.linalg.norm(n), radius_mm, h_mm)
    P = flow_npz["pressure_pa"]
    ijk = ((pts - np.asarray(flow_npz["origin_mm"], float)) / float(np.asarray(flow_npz["spacing_mm"]).flat[0])).T
    pv = map_coordinates(np.nan_to_num(P, nan=0.0), ijk, order=1)
    m = map_coordinates((~np.isnan(P)).astype(float), ijk, order=1)
    if m.sum() <= 0:
        raise ValueError(f"the section at {np.round(c, 2).tolist()} mm lies outside the truth's lumen")
    return float(pv.sum() / m.sum())


def flow_metrics(flow: dict, truth: dict, flow_npz_path: Path, branches_t: list[np.ndarray]) -> dict:
    """The reconstruction's flow (its summary's ``flow``) against the simulator's truth (module
    docstring); empty when the reconstruction has no flow figures."""
    from ..laws import ffr

    if flow.get("q_mm3_s") is None or flow.get("dp_pa") is None:
        return {}
    q_true = float(truth["q_mm3_s"])
    out = {"flow_method": flow.get("method"), "flow_q_mm3_s": float(flow["q_mm3_s"]), "flow_q_truth_mm3_s": q_true,
           "flow_q_error_percent": 100.0 * (float(flow["q_mm3_s"]) / q_true - 1.0)}
    secs = flow.get("dp_sections") or []
    if len(secs) != 2:
        return out
    F = np.load(flow_npz_path)
    t = np.concatenate(branches_t)
    p = []
    for sec in secs:
        r = float(t[int(np.argmin(np.linalg.norm(t[:, :3] - np.asarray(sec["centre_mm"]), axis=1))), 3])
        p.append(truth_section_pressure(F, sec["centre_mm"], sec["normal"], 1.6 * r))
    dpt, dp = p[0] - p[1], float(flow["dp_pa"])
    pa = float(flow.get("pa_mmhg", 93.0))
    out.update({"flow_dp_pa": dp, "flow_dp_truth_pa": dpt, "flow_dp_error_percent": 100.0 * (dp / dpt - 1.0),
                "flow_ffr": ffr(dp, pa), "flow_ffr_truth": ffr(dpt, pa),
                "flow_ffr_abs_error": abs(ffr(dp, pa) - ffr(dpt, pa))})
    return out
