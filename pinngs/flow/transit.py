"""Flow rate from bolus transit along the centerline (the constraint that makes the PINN well posed).

    curves = time_intensity_curves(study, branches)         # strip integrals across the vessel
    est = fit_transit(curves)                                # Q per branch (mm³/s), the bolus, residuals

Time-intensity curves. For every centerline point (every ``step_mm``) and every view, the DSA line
integral is summed over a strip across the projected vessel (± ``strip_radii`` projected radii,
normal to the projected centerline): K(s) · c̄(s, t), the concentration's cross-section integral
times a factor K(s) (attenuation, magnification, obliquity) constant in time. Points foreshortened
in a view, or whose strip crosses another part of the vessel, are not used in that view. A
rotational sweep (one frame per angle) pools its frames into one curve per point, each strip integral
divided by its view's gain, (px per mm at the point) / side, with side the sine of the angle between
the vessel and the ray (the fan of rays cuts the vessel obliquely, area A / side).

Transit model. Along a vessel of cumulative volume V(s) from the inlet, a laminar (Poiseuille-like)
profile carries the inlet bolus c_in(t) so that the section-averaged concentration is

    c̄(s, t) = ∫₀¹ c_in(t − τ_m(s)/w) dw,      τ_m(s) = V(s) / (2 Q)

(the centre streamline runs at twice the mean speed, and the area fraction of streamlines slower
than the centre's 1/w is 1 − w). For a daughter branch τ_m is its parent's at the junction plus its
own V/(2 Q_daughter). c_in is a gamma variate (t0, α, β); K(s) and a baseline b(s) are fitted in
closed form per curve (variable projection), and (t0, α, β, Q per branch) by non-linear least
squares (scipy), then once more with each view weighted by 1 / the RMS of its residuals
(``fit_transit(view_weights=True)``). A plug-flow model (c̄ = c_in(t − V/Q)) is available for comparison.

Moving vessels (a study with cardiac timing, ``io.ecg.cardiac_info``): the centerline is the gated,
end-diastolic one, and the heart moves the vessel by millimetres in the other frames. Each cine
frame is then first aligned to the centerline by a 2D shift (``frame_shifts``: the shift that
maximises the frame's line integral along the projected centerline), and the strips are sampled at
the shifted positions. A frame whose best shift does not stand out (little contrast yet) takes the
median shift of the aligned frames at the same cardiac phase. Static studies are not shifted.

Known limits: on a tortuous real vessel (AneuRisk C0015) the residual is high and Q depends on the
centerline and on where it starts (the model has no volume upstream of its first point); Q's
confidence follows the residual. Measurements: docs/decisions.md, "Transit flow rate: ..." sections.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import least_squares

from ..geometry import sample_image
from ..io.study import Study
from ..analysis.centerline import branch_topology
from ..laws import gamma_variate  # c_in(t): the gamma-variate first-pass model
from ..polyline import arc_length


TransitModel = Literal["laminar", "plug"]  # the section-mean transport model (module docstring)


@dataclass
class Curves:
    """Time-intensity curves: one row per (branch point, view) kept."""

    branch: np.ndarray  # [M] branch index
    volume_mm3: np.ndarray  # [M] cumulative lumen volume from the branch start to the point
    arc_mm: np.ndarray  # [M] arc length from the branch start
    view: np.ndarray  # [M]
    t_s: list[np.ndarray]  # M arrays [F_v] frame times of the row's view
    values: list[np.ndarray]  # M arrays [F_v] strip integrals (line integral · px)
    parents: list[int]  # per branch
    branch_volume_mm3: list[float]  # total volume of each branch
    motion: list[dict] = field(default_factory=list)  # per cine view, the frame shifts (moving vessels)


def section_areas(branches: list[np.ndarray], occ: np.ndarray, origin_mm, spacing_mm: float) -> list[np.ndarray]:
    """Cross-section area (mm²) at every centerline point, [P] per branch, from a lumen occupancy.

    Each lumen voxel (weighted by its occupancy fraction) goes to its nearest centerline point, and
    the area is the collected volume over the point spacing: along a smooth centerline the points'
    nearest-point cells are slabs normal to it, and the areas integrate to the lumen's volume. Only a
    branch's first and last points keep a voxel no more than half a point spacing from their normal
    plane, so that the end caps beyond them are not collected. (An earlier rule held every point to
    that half slab: on a reconstructed real vessel, whose centerline wiggles, the tangents tilted the
    slabs and left voxels in no slab; AneuRisk C0015's areas came out 15 % low. docs/decisions.md,
    "Section areas".) This is the area the flow sees, unlike π R² with the inscribed-sphere
    radius, which underestimates it wherever the section is not a circle (2-view reconstructions
    tend to round squares). That underestimate is a floor, though: a plane through the centre of the
    maximum inscribed sphere cuts its great disk, so the area is never below π R². Where the voxels
    went to another branch's points (near a junction, where a short side branch can collect almost
    nothing; docs/decisions.md, "Section areas") the floor π R² is used.
    """
    from scipy.spatial import cKDTree

    from ..analysis.surface import occupancy_fraction

    vol = occupancy_fraction(occ)
    idx = np.argwhere(vol > 0)
    w = vol[tuple(idx.T)].astype(float)
    xyz = np.asarray(origin_mm, float) + spacing_mm * idx
    pts, tans, steps, ends = [], [], [], []
    for b in branches:
        b = np.asarray(b, float)
        s = arc_length(b[:, :3])
        t = np.gradient(b[:, :3], axis=0)
        t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        ds = np.gradient(s) if len(s) > 1 else np.ones(1)
        e = np.zeros(len(b), bool)
        e[[0, -1]] = True
        pts.append(b[:, :3]); tans.append(t); steps.append(np.maximum(ds, 1e-6)); ends.append(e)
    P, T, DS, END = np.concatenate(pts), np.concatenate(tans), np.concatenate(steps), np.concatenate(ends)
    _, k = cKDTree(P).query(xyz)
    off = np.abs(((xyz - P[k]) * T[k]).sum(1))
    ok = ~END[k] | (off <= 0.5 * DS[k] + 1e-9)  # beyond a branch end (the caps) nothing is collected
    area = np.bincount(k[ok], weights=w[ok], minlength=len(P)) * spacing_mm ** 3 / DS
    # a slab one point spacing thick holds few voxel layers (aliasing from point to point; see
    # docs/decisions.md, "Section areas"): smooth along the branch over σ = 2 voxels
    from scipy.ndimage import gaussian_filter1d

    out, i = [], 0
    for b in branches:
        a = area[i:i + len(b)]
        step = float(np.median(DS[i:i + len(b)])) if len(b) > 1 else spacing_mm
        a = gaussian_filter1d(a, 2.0 * spacing_mm / max(step, 1e-9), mode="nearest") if len(a) > 3 else a
        b = np.asarray(b, float)
        out.append(np.maximum(a, np.pi * b[:, 3] ** 2) if b.shape[1] > 3 else a)
        i += len(b)
    return out


SWEEP_MIN_FRAMES = 8  # a rotational sweep's curve needs this many frames where its point is usable


def time_intensity_curves(study: Study, branches: list[np.ndarray], step_mm: float = 0.5,
                          strip_radii: float = 1.8, min_foreshortening: float = 0.5,
                          end_margin_radii: float = 1.0, areas_mm2: list[np.ndarray] | None = None,
                          band_px: float = 4.0, motion: bool | None = None) -> Curves:
    """Strip-integral curves along each branch in each view (see the module docstring).

    branches: [P, 4] X, Y, Z, R (mm) per branch, as from extract_centerline / centerline.csv.
    areas_mm2: [P] cross-section area per branch point (section_areas); π R² if None.
    band_px: width of the background bands either side of the strip (pixels).
    motion: align each cine frame to the centerline first (module docstring); None: when the study
        carries cardiac timing.

    Cine views (at least 4 frames each) give one curve per point and view. Frames of views with
    fewer than 4 frames (a rotational sweep: one frame per angle) are pooled into one curve per
    point (``view`` = -1), each frame's strip integral divided by its view's geometric gain
    (px per mm at the point over the obliquity of the cut, see ``_strips``), so that what is left is
    proportional to c̄(s, t) whatever the angle. A pooled curve needs ``SWEEP_MIN_FRAMES`` frames.
    """
    if not branches:
        raise ValueError("time_intensity_curves: no centerline branches")
    images = study.line_integrals()
    parents, _ = branch_topology(branches)
    # all centerline points (for the overlap test) and per-branch samples
    samples = []
    for bi, b in enumerate(branches):
        b = np.asarray(b, float)
        s = arc_length(b[:, :3])
        if s[-1] < 2 * step_mm:
            samples.append(None)
            continue
        q = np.arange(0.0, s[-1] + 1e-9, step_mm)
        pts = np.stack([np.interp(q, s, b[:, k]) for k in range(3)], 1)
        rad = np.interp(q, s, b[:, 3])
        area = np.interp(q, s, areas_mm2[bi]) if areas_mm2 is not None else math.pi * rad ** 2
        tan = np.gradient(pts, axis=0)
        tan /= np.maximum(np.linalg.norm(tan, axis=1, keepdims=True), 1e-12)
        vol = np.concatenate([[0.0], np.cumsum(0.5 * (area[1:] + area[:-1]) * np.diff(q))])
        keep = (q >= end_margin_radii * rad[0]) | (parents[bi] >= 0)
        keep &= q <= s[-1] - end_margin_radii * rad[-1]
        samples.append((q, pts, rad, tan, vol, keep))
    allc = dict(pts=np.concatenate([np.asarray(b, float)[:, :3] for b in branches]),
                rad=np.concatenate([np.asarray(b, float)[:, 3] for b in branches]),
                arc=np.concatenate([arc_length(np.asarray(b, float)[:, :3]) for b in branches]),
                branch=np.concatenate([np.full(len(b), i) for i, b in enumerate(branches)]))
    opts = dict(strip_radii=strip_radii, min_foreshortening=min_foreshortening, band_px=band_px)

    rows = dict(branch=[], volume=[], arc=[], view=[], t=[], values=[])

    def add(bi, k, vi, t, vals):
        q, vol = samples[bi][0], samples[bi][4]
        rows["branch"].append(bi)
        rows["volume"].append(vol[k])
        rows["arc"].append(q[k])
        rows["view"].append(vi)
        rows["t"].append(np.asarray(t, float))
        rows["values"].append(np.asarray(vals, float))

    frame_view = np.array([f.view for f in study.frames])
    frame_t = np.array([f.t_s for f in study.frames])
    from ..io.ecg import cardiac_info, cardiac_phase

    card = cardiac_info(study)
    moving = card is not None if motion is None else bool(motion)
    phase = cardiac_phase(frame_t, card["r_peaks_s"]) if card is not None else None
    shift_info: list[dict] = []
    n_per_view = np.bincount(frame_view, minlength=len(study.views))
    for vi, view in enumerate(study.views):
        if n_per_view[vi] < 4:
            continue
        fidx = np.nonzero(frame_view == vi)[0]
        order = fidx[np.argsort(frame_t[fidx])]
        stack = np.stack([images[i] for i in order])  # [F, H, W]
        shifts = np.zeros((len(order), 2))
        if moving:
            shifts = frame_shifts(stack, view.project(allc["pts"]), phase[order] if phase is not None else None)
            shift_info.append({"view": vi, "median_px": float(np.median(np.linalg.norm(shifts, axis=1))),
                               "max_px": float(np.linalg.norm(shifts, axis=1).max())})
        for bi, smp in enumerate(samples):
            if smp is None:
                continue
            for k, uv_s, split, _gain in _strips(view, smp, bi, allc, **opts):
                prof = np.stack([sample_image(img, uv_s + d) for img, d in zip(stack, shifts)])  # [F, S]
                add(bi, k, vi, frame_t[order], _strip_sum(prof, *split))
    # rotational sweep: pool the frames of views with fewer than 4 frames, one curve per point
    sweep = [int(f) for f in np.argsort(frame_t, kind="stable") if n_per_view[frame_view[f]] < 4]
    if len(sweep) >= SWEEP_MIN_FRAMES:
        acc: dict = {}
        for f in sweep:
            view = study.views[int(frame_view[f])]
            for bi, smp in enumerate(samples):
                if smp is None:
                    continue
                for k, uv_s, split, gain in _strips(view, smp, bi, allc, **opts):
                    v = _strip_sum(sample_image(images[f], uv_s)[None], *split)[0] / gain
                    acc.setdefault((bi, k), ([], []))
                    acc[(bi, k)][0].append(frame_t[f])
                    acc[(bi, k)][1].append(v)
        for (bi, k), (t, v) in sorted(acc.items()):
            if len(t) >= SWEEP_MIN_FRAMES:
                add(bi, k, -1, t, v)
    if not rows["branch"]:
        raise ValueError("time_intensity_curves: no usable centerline point in any view (vessel outside the "
                         "detector, foreshortened, or fewer than 4 frames per view and fewer than "
                         f"{SWEEP_MIN_FRAMES} sweep frames)")
    bvol = [float(s[4][-1]) if s is not None else 0.0 for s in samples]
    return Curves(np.array(rows["branch"]), np.array(rows["volume"]), np.array(rows["arc"]), np.array(rows["view"]),
                  rows["t"], rows["values"], parents, bvol, shift_info)


def frame_shifts(stack: np.ndarray, uv: np.ndarray, phase: np.ndarray | None = None, max_px: float = 40.0,
                 min_contrast: float = 6.0) -> np.ndarray:
    """[F, 2] (col, row) shift of each frame [F, H, W] that best aligns it with the projected
    centerline ``uv`` [P, 2]: the shift δ maximising Σ_p L_f(uv_p + δ), searched on a 2-px grid within
    ``max_px`` and refined to 0.25 px. A frame whose best score is less than ``min_contrast`` robust
    standard deviations above the median over the search grid (no vessel to align yet) takes the
    median shift of the aligned frames within 0.05 of a cycle of its cardiac ``phase`` (the nearest in
    phase where none is), or no shift without phases or aligned frames."""
    F = len(stack)
    coarse = np.arange(-max_px, max_px + 1e-9, 2.0)
    grid = np.stack(np.meshgrid(coarse, coarse, indexing="ij"), -1).reshape(-1, 2)  # [G, 2]
    pts = (uv[None, :, :] + grid[:, None, :]).reshape(-1, 2)
    out, ok = np.zeros((F, 2)), np.zeros(F, bool)
    for f in range(F):
        sc = sample_image(stack[f], pts).reshape(len(grid), -1).sum(1)
        med = float(np.median(sc))
        mad = float(np.median(np.abs(sc - med))) * 1.4826 + 1e-12
        best = grid[int(np.argmax(sc))]
        if (sc.max() - med) / mad < min_contrast:
            continue
        fine = np.arange(-2.0, 2.0 + 1e-9, 0.25)
        g2 = best + np.stack(np.meshgrid(fine, fine, indexing="ij"), -1).reshape(-1, 2)
        sc2 = sample_image(stack[f], (uv[None] + g2[:, None]).reshape(-1, 2)).reshape(len(g2), -1).sum(1)
        out[f], ok[f] = g2[int(np.argmax(sc2))], True
    if ok.all() or not ok.any():
        return out
    for f in np.nonzero(~ok)[0]:
        if phase is None:
            continue
        dphi = np.abs(phase[ok] - phase[f])
        dphi = np.minimum(dphi, 1.0 - dphi)
        near = dphi <= 0.05
        out[f] = np.median(out[ok][near], axis=0) if near.any() else out[ok][int(np.argmin(dphi))]
    return out


def _strips(view, smp, bi: int, allc: dict, strip_radii: float, min_foreshortening: float, band_px: float):
    """The usable strips of one branch's sample points in one view: yields (k, uv [S, 2] sample
    positions across the vessel and its background bands, (offsets, half-width), gain).

    A point is skipped where the vessel is foreshortened (its 0.5 mm step projects to less than
    ``min_foreshortening`` of its side-on length), where another part of the centerline projects
    into its strip, or where the strip leaves the detector. gain = (px per mm at the point) / side:
    the strip sum of a uniformly filled section is μ c̄ A · gain (the fan of rays through the strip
    cuts the vessel obliquely, area A / side).
    """
    q, pts, rad, tan, vol, keep = smp
    uv = view.project(pts)
    uv2 = view.project(pts + 0.5 * tan)
    d2 = uv2 - uv
    # foreshortening: projected length of a 0.5 mm step against its length seen side-on
    ray = pts - view.source_mm
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    side = np.sqrt(np.maximum(1 - (tan * ray).sum(1) ** 2, 0))
    n2 = np.stack([-d2[:, 1], d2[:, 0]], 1)
    n2 /= np.maximum(np.linalg.norm(n2, axis=1, keepdims=True), 1e-12)
    # projected radius (px): project a point one radius away, normal to the tangent and the ray
    perp = np.cross(tan, ray)
    perp /= np.maximum(np.linalg.norm(perp, axis=1, keepdims=True), 1e-12)
    r_px = np.linalg.norm(view.project(pts + rad[:, None] * perp) - uv, axis=1)
    seen = np.isfinite(uv).all(1) & np.isfinite(uv2).all(1) & np.isfinite(r_px)  # NaN: behind the source
    idx = np.nonzero(keep & seen & (side >= min_foreshortening))[0]
    if not len(idx):
        return
    uv_all = view.project(allc["pts"])
    for k in idx:
        w = strip_radii * r_px[k] + 1.5
        # overlap: another part of the centerline projects into this strip
        d_img = np.abs((uv_all - uv[k]) @ np.array([-n2[k, 1], n2[k, 0]]))  # along the vessel
        d_n = np.abs((uv_all - uv[k]) @ n2[k])
        near3d = np.linalg.norm(allc["pts"] - pts[k], axis=1) < 2.5 * rad[k] + 1e-9
        same = (allc["branch"] == bi) & (np.abs(allc["arc"] - q[k]) < 3 * rad[k])
        other = ~near3d & ~same & (d_n < w + 2 * allc["rad"] * r_px[k] / max(rad[k], 1e-9)) & (d_img < 2.0)
        if other.any():
            continue
        # samples across the vessel, plus a background band of `band_px` on each side
        offs = np.arange(-w - band_px, w + band_px + 1e-9, 0.5)
        xs = uv[k, 0] + offs * n2[k, 0]
        ys = uv[k, 1] + offs * n2[k, 1]
        if xs.min() < 0 or ys.min() < 0 or xs.max() > view.cols - 1 or ys.max() > view.rows - 1:
            continue
        yield int(k), np.column_stack([xs, ys]), (offs, w), float(r_px[k] / max(rad[k], 1e-9) / side[k])


def _strip_sum(prof: np.ndarray, offs: np.ndarray, w: float) -> np.ndarray:  # [F, S] -> [F]
    """Strip integral (line integral · px) of each row of samples across the vessel, after
    subtracting the line through the two background bands' means (it removes the smooth subtraction
    residual, which is common to all curves of a frame and would bias the fit)."""
    inner, lo_b, hi_b = np.abs(offs) <= w, offs < -w, offs > w
    bl, bh = prof[:, lo_b].mean(1), prof[:, hi_b].mean(1)
    base = bl[:, None] + (bh - bl)[:, None] * (offs[inner] + w) / (2 * w)
    return (prof[:, inner] - base).sum(1) * 0.5


_W = (np.arange(64) + 0.5) / 64  # midpoint nodes of ∫₀¹ dw


def section_mean(t: np.ndarray, tau_m: float, bolus: tuple[float, float, float], model: TransitModel = "laminar") -> np.ndarray:
    """c̄(t) at a point of transit parameter tau_m (s); see the module docstring."""
    if model == "plug":
        return gamma_variate(t - 2 * tau_m, *bolus)
    return gamma_variate(t[:, None] - tau_m / _W[None, :], *bolus).mean(1)


@dataclass
class TransitFit:
    q_mm3_s: list[float]  # per branch (nan where a branch had no curve)
    bolus: dict  # t0_s, alpha, beta_s of the inlet c_in
    model: TransitModel
    rel_residual: float  # ||model - data|| / ||data - mean||
    n_curves: int
    q_conservation: list[dict] = field(default_factory=list)  # per bifurcation: (Q_p - ΣQ_d)/Q_p
    q_std_mm3_s: list[float] = field(default_factory=list)  # from the Jacobian (local, optimistic)

    def to_dict(self) -> dict:
        return dict(q_mm3_s=self.q_mm3_s, q_std_mm3_s=self.q_std_mm3_s, bolus=self.bolus, model=self.model,
                    rel_residual=self.rel_residual, n_curves=self.n_curves, q_conservation=self.q_conservation)


def _tau_start(parents: list[int], bvol: list[float], inv_q: np.ndarray) -> list[float]:
    out = [0.0] * len(parents)
    for _ in range(len(parents)):
        for j, p in enumerate(parents):
            if p >= 0:
                out[j] = out[p] + bvol[p] * inv_q[p] / 2
    return out


def select(curves: Curves, keep: np.ndarray) -> Curves:
    """The curves where ``keep`` [M] is true."""
    i = np.nonzero(np.asarray(keep, bool))[0]
    return Curves(curves.branch[i], curves.volume_mm3[i], curves.arc_mm[i], curves.view[i],
                  [curves.t_s[j] for j in i], [curves.values[j] for j in i], curves.parents, curves.branch_volume_mm3)


UPSTREAM_MIN_PERCENT = 30.0  # % diameter: milder graded narrowings do not cut the transit curves


def upstream_of_lesions(curves: Curves, lesions: list[dict], margin_mm: float = 1.0,
                        min_percent: float = UPSTREAM_MIN_PERCENT) -> Curves:
    """Drop every curve at or downstream of a lesion of at least ``min_percent`` diameter stenosis
    (from ``margin_mm`` before its start), including the lesion's branch's descendants.

    Downstream of a stenosis the jet and its recirculation zone fill slowly: the lumen volume there is
    not all carrying the flow, and volume/transit underestimates Q. lesions: grade_stenosis dicts
    (branch, percent_diameter_stenosis, start_arc_mm: arc from the inlet, arc_from_inlet_mm,
    arc_in_branch_mm).

    Narrowings milder than ``min_percent`` (30 %; ``pinngs.flow.estimate.flow_on_lumen`` passes
    ``pinngs.flow.lesions.YT_MIN_PERCENT``, from which it fades Young–Tsai in and blends this Q with
    the whole vessel's by ``pinngs.flow.lesions.jet_weight``) cut nothing: a mild narrowing graded on
    a real vessel's natural calibre changes comes and goes between fits, and Q would jump with the
    grade of a narrowing that has no jet. Measurements: docs/decisions.md, "Transit flow rate: curves
    downstream of a lesion".
    """
    if not 0 <= min_percent <= 100:  # also refuses NaN
        raise ValueError(f"upstream_of_lesions: min_percent (% diameter stenosis) must be in [0, 100], got {min_percent}")
    lesions = [x for x in lesions if x.get("percent_diameter_stenosis", 100.0) >= min_percent]
    if not lesions:
        return curves
    nb = len(curves.parents)
    cut = np.full(nb, np.inf)  # arc in branch from which curves are dropped
    for les in lesions:
        b = int(les["branch"])
        start_in_branch = les["arc_in_branch_mm"] - (les["arc_from_inlet_mm"] - les["start_arc_mm"])
        cut[b] = min(cut[b], start_in_branch - margin_mm)
    dropped = set()
    for b in range(nb):  # descendants of a cut branch go too
        p = b
        while p >= 0:
            if np.isfinite(cut[p]) and p != b:
                dropped.add(b)
            p = curves.parents[p]
    keep = np.array([(int(br) not in dropped) and (a < cut[int(br)]) for br, a in zip(curves.branch, curves.arc_mm)])
    if keep.sum() < 4:
        raise ValueError("upstream_of_lesions: fewer than 4 curves proximal to the lesions; the vessel segment "
                         "upstream of the first lesion is too short to time the bolus")
    return select(curves, keep)


def fit_transit(curves: Curves, model: TransitModel = "laminar", joint: bool = False, view_weights: bool = True) -> TransitFit:
    """Q per branch from the curves (see the module docstring).

    By default each branch is fitted on its own, with its own inlet bolus (a daughter's inlet is its
    parent's dispersed outflow, which a gamma variate fits). ``joint=True`` keeps the joint model,
    where a daughter's transit continues its parent's laminar profile; it biased the parent's Q on
    the bifurcation preset (docs/decisions.md, "Transit flow rate: one fit per branch"). Branches
    with fewer than 4 curves get NaN. ``bolus`` and ``rel_residual`` are branch 0's.

    ``view_weights`` (default): after the least-squares fit, each view's residuals are weighted by
    1 / their own RMS and the fit is repeated once from its result (feasible generalised least
    squares). A view that the model fits badly counts less; with equally good views nothing changes,
    and the weights cannot tell which of two equally clean views is right. A rotational sweep's
    pooled curves are one view. ``rel_residual`` stays the unweighted one. Measurements:
    docs/decisions.md, "Transit flow rate: per-view weights".
    """
    if model not in ("laminar", "plug"):
        raise ValueError(f"fit_transit: model must be 'laminar' or 'plug', got {model!r}")
    if joint:
        return _fit_joint(curves, model, view_weights=view_weights)
    nb = len(curves.parents)
    if not (curves.branch == 0).sum() >= 4:
        raise ValueError("fit_transit: the inlet branch needs at least 4 time-intensity curves, got "
                         f"{int((curves.branch == 0).sum())}")
    q, q_std, first = [float("nan")] * nb, [float("nan")] * nb, None
    for b in range(nb):
        sel = curves.branch == b
        if sel.sum() < 4:
            continue
        sub = select(curves, sel)
        sub = Curves(np.zeros(len(sub.branch), int), sub.volume_mm3, sub.arc_mm, sub.view, sub.t_s, sub.values,
                     [-1], [curves.branch_volume_mm3[b]])
        f = _fit_joint(sub, model, view_weights=view_weights)
        q[b], q_std[b] = f.q_mm3_s[0], f.q_std_mm3_s[0]
        if b == 0:
            first = f
    cons = []
    for p in range(nb):
        kids = [j for j, pp in enumerate(curves.parents) if pp == p]
        if len(kids) >= 2 and all(np.isfinite(q[k]) for k in kids + [p]):
            cons.append({"parent": p, "daughters": kids, "relative_mismatch": (q[p] - sum(q[k] for k in kids)) / q[p]})
    return TransitFit(q, first.bolus, model, first.rel_residual, len(curves.values), cons, q_std)


class _Packed:
    """The curves concatenated once per fit, so that a residual evaluation is a few array operations
    instead of a loop over the curves (the transit fit evaluates it ~450 times; the loop,
    ``_residuals_loop``, is kept as the obviously right twin for the tests)."""

    def __init__(self, curves: Curves) -> None:
        self.curves = curves
        self.n = np.array([len(t) for t in curves.t_s])  # [M]
        self.idx = np.repeat(np.arange(len(self.n)), self.n)  # [S] curve of each sample
        self.t = np.concatenate(curves.t_s).astype(np.float64)  # [S]
        self.y = np.concatenate(curves.values).astype(np.float64)  # [S]
        M = len(self.n)
        self.scale = np.array([np.abs(y).max() + 1e-12 for y in curves.values])  # [M]
        self.ym = np.bincount(self.idx, self.y, M) / self.n  # [M]
        self.yc = self.y - self.ym[self.idx]  # [S]

    def residuals(self, inv_q: np.ndarray, bolus: tuple[float, float, float], model: TransitModel) -> np.ndarray:
        """[S]: per curve, the least-squares fit a·c̄(t) + b of the curve minus the curve, over the
        curve's |max|. inv_q: [branches] 1/Q (0 for a branch without curves)."""
        c = self.curves
        ts = np.asarray(_tau_start(c.parents, c.branch_volume_mm3, inv_q))
        b = c.branch.astype(int)
        tau = (ts[b] + c.volume_mm3 * inv_q[b] / 2)[self.idx]  # [S]
        if model == "plug":
            g = gamma_variate(self.t - 2 * tau, *bolus)
        else:
            g = gamma_variate(self.t[:, None] - tau[:, None] / _W[None, :], *bolus).mean(1)
        M = len(self.n)
        gc = g - (np.bincount(self.idx, g, M) / self.n)[self.idx]
        sgg = np.bincount(self.idx, gc * gc, M)
        a = np.where(sgg > 1e-300, np.bincount(self.idx, gc * self.yc, M) / np.maximum(sgg, 1e-300), 0.0)
        return (a[self.idx] * gc - self.yc) / self.scale[self.idx]  # a·g + b − y with b = ȳ − a·ḡ


def _residuals_loop(curves: Curves, inv_q: np.ndarray, bolus: tuple[float, float, float], model: TransitModel) -> np.ndarray:
    """``_Packed.residuals`` one curve at a time, with numpy's least squares (the reference)."""
    ts = _tau_start(curves.parents, curves.branch_volume_mm3, inv_q)
    out = []
    for m, (t, y) in enumerate(zip(curves.t_s, curves.values)):
        b = int(curves.branch[m])
        tau = ts[b] + curves.volume_mm3[m] * inv_q[b] / 2
        g = section_mean(t, tau, bolus, model)
        A = np.stack([g, np.ones_like(g)], 1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        out.append((A @ coef - y) / (np.abs(y).max() + 1e-12))
    return np.concatenate(out)


def _fit_joint(curves: Curves, model: TransitModel = "laminar", q_guess_mm3_s: float | None = None,
               view_weights: bool = True) -> TransitFit:
    """One fit of a shared bolus and every branch's Q, daughters continuing their parent's transit.
    ``view_weights``: reweight each view by its own misfit and refit (see ``fit_transit``)."""
    if model not in ("laminar", "plug"):
        raise ValueError(f"fit_transit: model must be 'laminar' or 'plug', got {model!r}")
    if len(curves.values) < 4:
        raise ValueError(f"fit_transit: need at least 4 time-intensity curves, got {len(curves.values)}")
    nb = len(curves.parents)
    used = sorted(set(int(b) for b in curves.branch))
    # initial guesses: bolus from the curve nearest the inlet; Q from the spread of arrival times
    t_all = np.concatenate(curves.t_s)
    span = float(t_all.max() - t_all.min())
    first = int(np.argmin(curves.volume_mm3 + 1e9 * (curves.branch != 0)))
    y0 = curves.values[first]
    t_peak = float(curves.t_s[first][np.argmax(y0)])
    if q_guess_mm3_s is None:
        # arrival (half rise) of each curve against volume: a rough slope
        arr = []
        for t, y in zip(curves.t_s, curves.values):
            y = y - np.median(y[: max(2, len(y) // 10)])
            i = int(np.argmax(y >= 0.5 * y.max())) if y.max() > 0 else 0
            arr.append(t[i])
        arr = np.array(arr)
        sel = curves.branch == 0
        slope = np.polyfit(curves.volume_mm3[sel], arr[sel], 1)[0] if sel.sum() > 3 else 0.0
        q_guess_mm3_s = 1.0 / slope if slope > 1e-6 else max(curves.volume_mm3.max(), 1.0) / (0.1 * span)
    x0 = [t_peak - 0.4 * span / 2, math.log(3.0), math.log(max(0.2 * span / 4, 1e-3))] + \
         [math.log(q_guess_mm3_s)] * len(used)

    def unpack(x):
        t0, alpha, beta = x[0], math.exp(x[1]), math.exp(x[2])
        inv_q = np.full(nb, np.nan)
        for i, b in enumerate(used):
            inv_q[b] = math.exp(-x[3 + i])
        return (t0, alpha, beta), inv_q

    packed = _Packed(curves)
    wts = np.ones(len(packed.t))

    def resid(x):
        bolus, inv_q = unpack(x)
        return wts * packed.residuals(np.nan_to_num(inv_q, nan=0.0), bolus, model)

    best = None
    # bounds keep the search physical (and exp() finite): α in [0.5, 20], β in [1 ms, the span],
    # Q within 1e-3..1e3 of the first guess
    t_lo = float(t_all.min()) - span
    lq = math.log(q_guess_mm3_s)
    lb = np.array([t_lo, math.log(0.5), math.log(1e-3)] + [lq - math.log(1e3)] * len(used))
    ub = np.array([float(t_all.max()), math.log(20.0), math.log(max(span, 2e-3))] + [lq + math.log(1e3)] * len(used))
    for dt0 in (0.0, -0.15 * span, 0.15 * span):
        xi = np.clip(np.array(x0) + np.r_[dt0, np.zeros(len(x0) - 1)], lb + 1e-9, ub - 1e-9)
        r = least_squares(resid, xi, method="trf", x_scale="jac", bounds=(lb, ub))
        if best is None or r.cost < best.cost:
            best = r
    views, sv = np.unique(np.asarray(curves.view)[packed.idx], return_inverse=True)  # [S] view of each sample
    if view_weights and len(views) > 1:
        # one reweighting step (feasible generalised least squares): each view's samples weighted by
        # 1 / the RMS of its residuals in the fit above, normalised to an RMS weight of 1; refit from there
        rms = np.sqrt(np.bincount(sv, best.fun ** 2) / np.bincount(sv))  # [views]
        wts = 1.0 / np.maximum(rms, 1e-6)[sv]
        wts /= np.sqrt(np.mean(wts ** 2))
        best = least_squares(resid, best.x, method="trf", x_scale="jac", bounds=(lb, ub))
        best.fun = best.fun / wts  # the residual reported is the unweighted one (the Jacobian stays weighted)
    bolus, inv_q = unpack(best.x)
    q = [float(1.0 / v) if np.isfinite(v) else float("nan") for v in inv_q]
    # local standard deviations of log Q from the Jacobian
    try:
        J = best.jac
        dof = max(len(best.fun) - len(best.x), 1)
        cov = np.linalg.pinv(J.T @ J) * (2 * best.cost / dof)
        q_std = [float("nan")] * nb
        for i, b in enumerate(used):
            q_std[b] = float(q[b] * math.sqrt(max(cov[3 + i, 3 + i], 0.0)))
    except np.linalg.LinAlgError:
        q_std = [float("nan")] * nb
    ydev = np.concatenate([(y - y.mean()) / (np.abs(y).max() + 1e-12) for y in curves.values])
    cons = []
    for p in range(nb):
        kids = [j for j, pp in enumerate(curves.parents) if pp == p]
        if len(kids) >= 2 and all(np.isfinite(q[k]) for k in kids + [p]):
            cons.append({"parent": p, "daughters": kids, "relative_mismatch": (q[p] - sum(q[k] for k in kids)) / q[p]})
    return TransitFit(q, {"t0_s": bolus[0], "alpha": bolus[1], "beta_s": bolus[2]}, model,
                      float(np.linalg.norm(best.fun) / max(np.linalg.norm(ydev), 1e-12)), len(curves.values), cons, q_std)
