"""Fitting Gaussians to a DSA study with the rasterizer (issue 4, DESIGN.md §3).

Pipeline (``fit_study``):

1. **Targets** (``FitConfig.targets``). ``"frames"`` (default, ``frame_targets``): every frame with
   at least ``frames_keep`` of the brightest frame's total line integral, background median removed;
   each step renders ``frames_batch`` of them, each with one least-squares contrast scale and a
   background plane a + b·x + c·y (``nuisance_fit``). ``"composite"`` (``targets_from_study``): per
   view, a 3-frame running mean of its frames, then the per-pixel maximum minus the median; the
   maximum of noisy frames is biased upwards, which widens the vessel. A rotational sweep has no
   composite: its frames with at least ``rot_keep`` of the brightest, rescaled to it, stand in. The
   composite always seeds the initialisation and is what the report shows.
2. **Initialisation** (``backprojection_init``): one isotropic Gaussian on each lattice point that
   every target sees as vessel (a soft visual hull), weighted on 2-4 view studies by a round-vessel
   prior (``init_disc_window_mm``, ``disc_weights``), since two views carve a square section.
3. **Optimisation.** Adam on means, log-scales, quaternions and attenuations against the relative
   squared error over the targets, plus ``scale_weight`` · a hinge on scales outside [min_scale_mm,
   max_scale_mm] and, off by default, ``binary_weight`` · a double-well penalty μ(μ_c − μ)/μ_c² on a
   coarse voxel grid (empty or one lumen level μ_c, ``lumen_level``).
4. **Densify and prune** (``densify_prune``, integral-preserving) every ``densify_every`` steps until
   ``densify_until``; Adam's moments are reset for the changed set.
5. **Lumen** (``fitted_lumen``, ``lumen_occupancy``): the field voxelized at ``lumen_mm``, its surface the
   level τ whose inside has the volume ∫μ/μ_c (``lumen_threshold``); clutter and far haze removed
   (``keep_main_lumen``). μ_c, the filled lumen's attenuation, comes from the field's projections across
   the vessel (``projected_lumen_level``), which do not depend on how the field spreads along the rays,
   where the views are less than ``PROJECTED_LEVEL_BELOW_DEG`` apart, else from the field's own density
   (``lumen_level``; ``FitConfig.lumen_level``: "auto", "projected", "density").

Checkpoints (``checkpoint``/``resume``) hold the field, the optimiser and the step, written
atomically, so that a killed run loses at most ``checkpoint_every`` steps.
Measurements behind these choices: docs/decisions.md, the "Batch fit: ..." sections.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from ..analysis.centerline import extract_centerline
from ..backend import resolve_device
from ..field import GaussianField
from ..geometry import CArmView, pack_views, sample_image, view_separation_deg
from ..io.study import Study
from ..ops import VoxelGrid, project_gaussians, rasterize, voxelize
from ..io.atomic import atomic_file, failpoint
from ..io.ecg import gate_study
from ..polyline import arc_length, tangents
from ..render import nuisance_fit, render_views

TWO_PI_32 = (2.0 * math.pi) ** 1.5
TargetMode = Literal["frames", "composite"]  # FitConfig.targets (module docstring, 1.)
SurfaceRule = Literal["mass", "half"]  # FitConfig.surface_rule (module docstring, 5.)
LevelRule = Literal["auto", "projected", "density"]  # FitConfig.lumen_level (module docstring, 5.)
DISC_MIN_WEIGHT = 0.02  # backprojection_init's round-vessel prior drops hull points weighted below this
# disc_weights solves for the offset by ridge regression, shrinking each direction by sv² / (sv² +
# DISC_RIDGE x the largest sv²): a direction the views resolve poorly is cut less, one they do not
# resolve (the vessel's axis) not at all. Measurements: docs/decisions.md, "Batch fit: round-vessel prior".
DISC_RIDGE = 0.05


@dataclass(frozen=True)
class FitConfig:
    """Knobs of ``fit_study`` (defaults are the ones the benchmark measures)."""

    iters: int = 500
    init_spacing_mm: float = 0.45
    hull_frac: float = 0.12
    # round-vessel prior on the initial hull of a 2-4 view study (backprojection_init, disc_weights): the
    # half-width (mm) of the across-vessel window that finds each view's local peak; 0: the even hull.
    # Never used on rotational studies (disc_window_for): 16+ views carve a round hull already, and
    # weighting their points is slow. Measurements: docs/decisions.md, "Batch fit: round-vessel prior".
    init_disc_window_mm: float = 3.0
    rot_keep: float = 0.9  # rotational: near-peak frames for the initialisation (and the "composite" fit)
    targets: TargetMode = "frames"  # "frames": every frame with its own contrast; "composite": one image per view
    frames_keep: float = 0.3  # "frames": frames with at least this fraction of the peak frame's mass
    frames_batch: int = 8  # "frames": frames per step
    lr_means: float = 0.01
    lr_scales: float = 0.02
    lr_quats: float = 0.02
    lr_atten: float = 0.03
    binary_weight: float = 0.0  # double-well lumen prior (module docstring, 3.); off: it lowered the Dice
    binary_grid_mm: float = 0.25  # voxel size (mm) of that prior's grid
    scale_weight: float = 1.0  # hinge on scales outside [min_scale_mm, max_scale_mm]
    min_scale_mm: float = 0.06
    max_scale_mm: float = 1.2
    split_scale_mm: float = 0.6  # densify_prune splits Gaussians larger than this along their major axis
    prune_mass_frac: float = 0.02  # ... and drops those with less than this fraction of the median integral
    densify_every: int = 100
    densify_until: int = 350
    max_gaussians: int = 40000
    lumen_mm: float = 0.1
    surface_rule: SurfaceRule = "mass"  # "mass": integral-preserving threshold; "half": μ_c / 2
    # μ_c, the filled lumen's attenuation: "projected" from the field's projections across the vessel
    # (projected_lumen_level), "density" the field's mass-weighted median density (lumen_level), "auto"
    # projected where no two views are PROJECTED_LEVEL_BELOW_DEG or more apart, else density (fitted_lumen)
    lumen_level: LevelRule = "auto"
    # ECG gating (io.ecg.gate_study): "auto" fits only the frames within gate_width / 2 of a cardiac cycle
    # of an R wave (end-diastole) when the study carries cardiac timing (an ECG, R-wave pointers or
    # trigger delays), all frames otherwise; "end-diastole" requires the timing; "none" never gates
    gate: str = "auto"
    gate_width: float = 0.2
    checkpoint_every: int = 50
    seed: int = 0
    threads: int = 0  # torch/OpenMP threads while fitting (0: every core; 1 on a busy machine); see fit_study
    device: str = "cpu"  # "cpu", "cuda" or "auto" (backend.resolve_device); the result comes back on the CPU

    def validate(self) -> None:
        if self.iters < 1:
            raise ValueError(f"iters must be >= 1, got {self.iters}")
        for k in ("init_spacing_mm", "lumen_mm", "min_scale_mm", "max_scale_mm", "split_scale_mm",
                  "binary_grid_mm"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be > 0, got {getattr(self, k)}")
        if self.targets not in ("composite", "frames"):
            raise ValueError(f"targets must be 'composite' or 'frames', got {self.targets!r}")
        if self.surface_rule not in ("mass", "half"):
            raise ValueError(f"surface_rule must be 'mass' or 'half', got {self.surface_rule!r}")
        if self.lumen_level not in ("auto", "projected", "density"):
            raise ValueError(f"lumen_level must be 'auto', 'projected' or 'density', got {self.lumen_level!r}")
        if not 0 < self.hull_frac < 1:
            raise ValueError(f"hull_frac must be in (0, 1), got {self.hull_frac}")
        if self.min_scale_mm >= self.max_scale_mm:
            raise ValueError("min_scale_mm must be < max_scale_mm")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: every core), got {self.threads}")
        if self.gate not in ("auto", "none", "end-diastole"):
            raise ValueError(f"gate must be 'auto', 'none' or 'end-diastole', got {self.gate!r}")
        if not 0 < self.gate_width <= 1:
            raise ValueError(f"gate_width must be in (0, 1] (a fraction of the cardiac cycle), got {self.gate_width}")
        if not self.init_disc_window_mm >= 0:
            raise ValueError(f"init_disc_window_mm must be >= 0 (0: no round-vessel prior), got "
                             f"{self.init_disc_window_mm}")

    def disc_window_for(self, mode: str) -> float:
        """``init_disc_window_mm`` for a study of this mode: 0 on a rotational sweep, whose views carve
        a round hull already."""
        return 0.0 if mode == "rotational" else self.init_disc_window_mm


@dataclass
class Targets:
    views: list[CArmView]  # one per target image
    images: torch.Tensor  # [T, H, W] float32 line integrals (opacified)
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# 1. targets
# ------------------------------------------------------------------------------------------------
def targets_from_study(study: Study, rot_keep: float = 0.9) -> Targets:
    """Opacified target images from a study (see the module docstring)."""
    study.validate("reconstruct")
    d = study.line_integrals()
    H, W = study.views[0].rows, study.views[0].cols
    if any((v.rows, v.cols) != (H, W) for v in study.views):
        raise ValueError("all views must share one detector size (rows x cols) for fitting")
    if study.mode == "rotational":
        mass = np.array([float(np.clip(img - np.median(img), 0, None).sum()) for img in d])
        keep = np.nonzero(mass >= rot_keep * mass.max())[0]
        views = [study.views[study.frames[k].view] for k in keep]
        imgs = [(d[k] - np.median(d[k])) * (mass.max() / mass[k]) for k in keep]
        info = {"kind": "rotational-peak-frames", "n_frames_used": int(len(keep)), "rot_keep": rot_keep}
    else:
        views, imgs, used = [], [], []
        for vi, v in enumerate(study.views):
            ks = sorted((k for k, f in enumerate(study.frames) if f.view == vi), key=lambda k: study.frames[k].t_s)
            if not ks:
                continue
            stack = np.stack([d[k] for k in ks]).astype(np.float32)
            if len(ks) >= 3:  # 3-frame running mean: less noise before the max
                sm = stack.copy()
                sm[1:-1] = (stack[:-2] + stack[1:-1] + stack[2:]) / 3.0
                stack = sm
            comp = stack.max(0)
            imgs.append(comp - np.median(comp))
            views.append(v)
            used.append(len(ks))
        info = {"kind": "cine-opacified-composite", "frames_per_view": used}
    images = torch.from_numpy(np.stack(imgs).astype(np.float32))
    return Targets(views, images, info)


def frame_targets(study: Study, keep: float = 0.3) -> Targets:
    """Every frame as its own target (background median removed), for the "frames" alternative to
    the composite: frames whose total line integral is below ``keep`` of the brightest are left out
    (nothing or little is opacified in them). Each frame's contrast state enters the fit as one
    scale factor (see ``FitConfig.targets``). A rotational sweep's frames are targets like cine's,
    so the fit sees every opacified angle, not only those near the peak of the bolus."""
    study.validate("reconstruct")
    d = study.line_integrals()
    imgs = [im - np.median(im) for im in d]
    mass = np.array([float(np.clip(im, 0, None).sum()) for im in imgs])
    k = np.nonzero(mass >= keep * mass.max())[0]
    return Targets([study.views[study.frames[j].view] for j in k],
                   torch.from_numpy(np.stack([imgs[j] for j in k]).astype(np.float32)),
                   {"kind": "all-frames-own-contrast", "n_frames_used": int(len(k)), "frames_keep": keep})


# ------------------------------------------------------------------------------------------------
# 2. initialisation
# ------------------------------------------------------------------------------------------------
def across_peak(img: np.ndarray, uv: np.ndarray, half_px: float,
                sigma_px: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Across-vessel peak of a detector image [H, W] at points uv [P, 2] (CArmView.project's (col, row)).

    Returns (peak [P], across [P, 2], downhill [P]): the largest value on a segment ±``half_px``
    pixels through each point along ``across``, the dominant eigenvector of the image's structure
    tensor (gradients at σ = ``sigma_px``, averaged over σ = ``half_px`` / 2: the direction the
    edges of a vessel face, on both sides of it and at its centre, unlike the Hessian's, which
    points along the vessel where the profile is convex), a unit vector; and ``downhill`` = +1 where
    the image falls along +across (the point is on that side of the ridge), -1 where it rises.
    Sampled every pixel, bilinearly."""
    from scipy.ndimage import gaussian_filter

    gx, gy = gaussian_filter(img, sigma_px, order=(0, 1)), gaussian_filter(img, sigma_px, order=(1, 0))
    rho = max(1.0, 0.5 * half_px)
    jxx, jxy, jyy = (sample_image(gaussian_filter(a, rho), uv) for a in (gx * gx, gx * gy, gy * gy))
    lam = 0.5 * (jxx + jyy) + np.sqrt(0.25 * (jxx - jyy) ** 2 + jxy ** 2)  # the larger eigenvalue
    d = np.stack([jxy, lam - jxx], 1)  # its eigenvector (x = col, y = row); the other form where that is 0
    alt = np.stack([lam - jyy, jxy], 1)
    d = np.where((np.linalg.norm(d, axis=1) < np.linalg.norm(alt, axis=1))[:, None], alt, d)
    n = np.linalg.norm(d, axis=1, keepdims=True)
    d = np.where(n > 0, d / np.where(n > 0, n, 1), np.array([1.0, 0.0]))  # flat image: any direction
    best = np.zeros(len(uv))
    for t in np.linspace(-half_px, half_px, 2 * int(math.ceil(half_px)) + 1):
        best = np.maximum(best, sample_image(img, uv + t * d))
    slope = sample_image(gx, uv) * d[:, 0] + sample_image(gy, uv) * d[:, 1]
    return best, d, np.where(slope < 0, 1.0, -1.0)


def disc_weights(images: np.ndarray, views: list[CArmView], pts_mm: np.ndarray,
                 window_mm: float = 3.0) -> np.ndarray:  # [V, H, W], V views, [P, 3] -> [P]
    """How well each point fits a round vessel, in [0, 1]: 1 - r²/R² of the disc consistent with
    every view's profile, 0 outside it (see ``backprojection_init``).

    In view v, s_v = image / the largest value across the vessel within ``window_mm`` at the
    isocentre (``across_peak``) is, for a round lumen of radius R with uniform contrast seen at any
    obliquity, the chord through the point over the diameter: s_v = sqrt(1 - (x·n_v)² / R²), with
    x the point's offset from the axis and n_v the unit normal of the plane through the ray and the
    vessel's axis. That plane projects onto the vessel's image, so n_v = Jᵀ·across_v normalised (J
    the projection's 2x3 Jacobian at the point); the axis is the direction most nearly normal to
    every n_v. The signed offsets x·n_v / R = ±sqrt(1 - s_v²) (the sign: which side of the ridge the
    point's image lies on) give x / R in the section by ridge regression (``DISC_RIDGE``: a
    direction the views resolve poorly is cut less; the vessel's axis, which no view resolves, not
    at all), and the weight max(0, 1 - |x|²/R²). The ridge solve holds at any obliquity, also where
    the views' normals close up (a foreshortened stretch).
    The normalisation is local, so that a thin branch is not judged against a wide one, and across
    the vessel, so that a free end is not judged against the vessel behind it. Known limit: a
    stenosis throat is still judged against its shoulders within the window. Measurements, and the
    forms tried before: docs/decisions.md, "Batch fit: round-vessel prior"."""
    imgs = np.asarray(images, np.float64)
    P = np.asarray(pts_mm, np.float64)
    if imgs.ndim != 3 or len(imgs) != len(views) or P.ndim != 2 or P.shape[1] != 3:
        raise ValueError(f"disc_weights needs images [V, H, W] with one view each and points [P, 3]; got "
                         f"{imgs.shape}, {len(views)} views and {P.shape}")
    if not window_mm > 0:
        raise ValueError(f"window_mm must be > 0, got {window_mm}")
    normals, offsets = [], []
    for im, v in zip(imgs, views):
        uv = v.project(P)
        px = v.pixel_spacing_mm[0] * v.sod_mm / v.sid_mm
        peak, across, downhill = across_peak(im, uv, window_mm / px)
        s = np.clip(sample_image(im, uv) / np.maximum(peak, 1e-12), 0.0, 1.0)
        h = 0.01  # mm: the projection's Jacobian by central differences
        J = np.stack([(v.project(P + h * e) - v.project(P - h * e)) / (2 * h) for e in np.eye(3)], -1)  # [P, 2, 3]
        n = np.einsum("pij,pi->pj", J, across)
        normals.append(n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12))
        offsets.append(downhill * np.sqrt(1.0 - s ** 2))
    N = np.stack(normals, 1)  # [P, V, 3]
    b = np.stack(offsets, 1)  # [P, V]
    # x / R in 3D by ridge regression (see DISC_RIDGE): the axis (normal to no n_v) stays at 0
    U, sv, Vt = np.linalg.svd(N, full_matrices=False)  # N = U diag(sv) Vt, [P, V, k], [P, k], [P, k, 3]
    coef = np.einsum("pvk,pv->pk", U, b) * sv / (sv ** 2 + DISC_RIDGE * sv[:, :1] ** 2)
    x = np.einsum("pk,pkj->pj", coef, Vt)
    return np.clip(1.0 - (x ** 2).sum(1), 0.0, 1.0)


def backprojection_init(t: Targets, spacing_mm: float = 0.45, hull_frac: float = 0.12,
                        max_points: int = 40000, disc_window_mm: float = 0.0) -> GaussianField:
    """Gaussians on the soft visual hull of the targets.

    On a lattice of spacing ``spacing_mm`` around the isocentre (a 4x coarser pass first finds the
    occupied region), a point is kept where every target sees at least ``hull_frac`` of its peak at
    the point's projection: the minimum over views of the back-projected images. One isotropic
    Gaussian (σ = ½ spacing) sits on each kept point (the ``max_points`` best at most); all get one
    peak attenuation, set so that the field's total mass matches the mass seen in the images.

    ``disc_window_mm`` > 0: a round-vessel prior for sparse views. Two views of a round vessel carve
    a square section out of space; the hull fills it evenly, and a short fit (the online fitter's)
    keeps its corners. Each hull point's attenuation is then weighted by ``disc_weights`` (points
    under 0.02 dropped; the total mass unchanged), so the initial section is the disc both views'
    profiles agree with (``FitConfig.init_disc_window_mm``, 3 mm by default). 0: the even hull."""
    imgs = t.images.numpy().astype(np.float64)
    peaks = np.array([np.percentile(im, 99.9) for im in imgs])
    if not (peaks > 0).all():
        raise ValueError("a target image has no contrast (its 99.9th percentile is <= 0): is the vessel opacified "
                         "in every view?")
    # the region every view sees: a cube of the smallest isocentre field of view
    half = 0.5 * min(min(v.cols * v.pixel_spacing_mm[1], v.rows * v.pixel_spacing_mm[0]) * v.sod_mm / v.sid_mm
                     for v in t.views)
    # coarse-to-fine: a 4x coarser pass finds the occupied region, then the fine lattice there
    lo, hi = np.full(3, -half), np.full(3, half)
    for h in (4 * spacing_mm, spacing_mm):
        axes = [np.arange(lo[k], hi[k] + 0.5 * h, h) for k in range(3)]
        P = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        score = np.full(len(P), np.inf)
        for im, v, pk in zip(imgs, t.views, peaks):
            score = np.minimum(score, sample_image(im, v.project(P)) / pk)
        keep = score > (hull_frac if h == spacing_mm else 0.5 * hull_frac)
        if not keep.any():
            raise ValueError("back-projection found no point seen as vessel by every view; are the views of one "
                             "vessel and is the geometry (angles, SID, SOD, pixel spacing) right?")
        if h != spacing_mm:
            lo = P[keep].min(0) - 2 * h
            hi = P[keep].max(0) + 2 * h
    pts = P[keep]
    if len(pts) > max_points:
        order = np.argsort(-score[keep])[:max_points]
        pts = pts[np.sort(order)]
    # mass seen in the images (pixel area at the isocentre) -> one common peak attenuation
    mass = np.mean([im.clip(0).sum() * (v.pixel_spacing_mm[0] * v.pixel_spacing_mm[1]) * (v.sod_mm / v.sid_mm) ** 2
                    for im, v in zip(imgs, t.views)])
    sigma = 0.5 * spacing_mm
    w = np.ones(len(pts))
    if disc_window_mm > 0:
        w = disc_weights(imgs, t.views, pts, disc_window_mm)
        if not (w > DISC_MIN_WEIGHT).any():
            raise ValueError("no point of the visual hull is consistent with a round vessel in every view; "
                             "initialise without the prior (disc_window_mm=0)")
        pts, w = pts[w > DISC_MIN_WEIGHT], w[w > DISC_MIN_WEIGHT]
    a = mass / (w.sum() * TWO_PI_32 * sigma ** 3) * w
    n = len(pts)
    return GaussianField(torch.from_numpy(pts).float(), torch.full((n, 3), sigma), None,
                         torch.from_numpy(a).float())


# ------------------------------------------------------------------------------------------------
# 3-5. optimisation, densify/prune, lumen
# ------------------------------------------------------------------------------------------------
def gaussian_mass(f: GaussianField) -> torch.Tensor:  # [N]: ∫ a G dV (mm⁻¹ · mm³)
    return f.attenuation * TWO_PI_32 * f.scales.prod(-1)


def lumen_level(vol: torch.Tensor) -> float:
    """μ_c, the attenuation of the filled lumen: the mass-weighted median of the field's density
    (half of the field's integral sits at densities below it).

    For an ideally filled lumen (one plateau) this is the plateau value exactly; for a blurred one
    it is the typical density inside (docs/decisions.md, "Batch fit: priors and the lumen surface")."""
    v = vol.detach().flatten()
    v = v[v > 0].double()
    if v.numel() == 0:
        return 1.0
    v, _ = torch.sort(v)
    c = torch.cumsum(v, 0)
    return float(v[int(torch.searchsorted(c, 0.5 * c[-1]))])


def _grid_around(f: GaussianField, spacing: float, margin: float) -> VoxelGrid:
    return VoxelGrid.around(f.means, spacing, margin)


def make_optimizer(f: GaussianField, c: FitConfig) -> torch.optim.Adam:
    """Adam over the field's four parameter groups at the config's learning rates."""
    return torch.optim.Adam([
        {"params": [f.means], "lr": c.lr_means},
        {"params": [f.log_scales], "lr": c.lr_scales},
        {"params": [f.quats], "lr": c.lr_quats},
        {"params": [f.raw_atten], "lr": c.lr_atten},
    ], eps=1e-15)


def _rebuild(f: GaussianField, means, scales, quats, atten) -> GaussianField:
    return GaussianField(means.detach(), scales.detach(), quats.detach(), atten.detach().clamp_min(1e-8))


def densify_prune(f: GaussianField, c: FitConfig) -> tuple[GaussianField, dict]:
    """Integral-preserving split of large Gaussians and prune of negligible ones.

    Gaussians larger than ``split_scale_mm`` along their major axis (while the total stays under
    ``max_gaussians``) are split into two children ±½σ along that axis with 0.6σ there, each
    carrying half the parent's integral a·(2π)^{3/2}·s₁s₂s₃; Gaussians whose integral is below
    ``prune_mass_frac`` of the median are dropped, and all attenuations are rescaled so that the
    total integral is unchanged. Returns (field, {"split", "pruned", "n"})."""
    with torch.no_grad():
        means, scales, quats, atten = f.means, f.scales, f.quats, f.attenuation
        mass = gaussian_mass(f)
        total = mass.sum()
        keep = mass >= c.prune_mass_frac * mass.median()
        big = keep & (scales.max(-1).values > c.split_scale_mm)
        room = max(0, c.max_gaussians - int(keep.sum()))
        bi = torch.nonzero(big).flatten()[:room]
        small = keep.clone()
        small[bi] = False
        from ..field import quat_to_rotmat
        R = quat_to_rotmat(quats[bi])  # [b, 3, 3], columns = the Gaussian's axes
        ax = scales[bi].argmax(-1)
        dirs = R[torch.arange(len(bi), device=R.device), :, ax]  # [b, 3]
        smax = scales[bi].gather(1, ax[:, None])  # [b, 1]
        off = 0.5 * smax * dirs
        child_scales = scales[bi].clone()
        child_scales.scatter_(1, ax[:, None], 0.6 * smax)
        # each child carries half the parent's integral: a' s'_max = a s_max / 2
        child_atten = atten[bi] * smax[:, 0] / (2 * 0.6 * smax[:, 0])
        new_means = torch.cat([means[small], means[bi] + off, means[bi] - off])
        new_scales = torch.cat([scales[small], child_scales, child_scales])
        new_quats = torch.cat([quats[small], quats[bi], quats[bi]])
        new_atten = torch.cat([atten[small], child_atten, child_atten])
        new_mass = new_atten * TWO_PI_32 * new_scales.prod(-1)
        new_atten = new_atten * (total / new_mass.sum())  # the pruned mass goes back to the rest
        g = _rebuild(f, new_means, new_scales, new_quats, new_atten)
    return g, {"split": int(len(bi)), "pruned": int((~keep).sum()), "n": len(g)}


@dataclass
class FitResult:
    field: GaussianField
    targets: Targets
    lumen_level: float  # μ_c (mm⁻¹)
    occupancy: np.ndarray  # [X, Y, Z] float32 in [0, 1]
    origin_mm: np.ndarray  # [3] centre of voxel (0, 0, 0)
    spacing_mm: float
    history: list[dict]
    info: dict
    # the centerline of ``occupancy`` where the lumen step traced it already (``extract_centerline``'s
    # defaults); None: not traced
    centerline: list[np.ndarray] | None = None


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during ``fit_study``: the last checkpoint (``checkpoint``, at ``step``; None
    when none was written yet) is kept for ``resume``."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; last checkpoint at step {step}" if checkpoint else "interrupted before the "
                         "first checkpoint")
        self.step, self.checkpoint = step, checkpoint


def _state(f: GaussianField, opt, step: int, history: list, c: FitConfig, fingerprint: str | None) -> dict:
    return {"step": step, "means": f.means.detach(), "log_scales": f.log_scales.detach(), "quats": f.quats.detach(),
            "raw_atten": f.raw_atten.detach(), "opt": opt.state_dict(), "history": history, "config": asdict(c),
            "rng": torch.get_rng_state(), "study_fingerprint": fingerprint}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint completely or not at all (temporary file, then rename)."""
    with atomic_file(path, "wb") as fh:
        torch.save(state, fh)


def _read_checkpoint(path: Path) -> dict:
    try:
        st = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - anything unreadable is reported the same way
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); start again with "
                         "--overwrite") from None
    if not isinstance(st, dict) or "step" not in st:
        raise ValueError(f"{path} is not a pinngs fit checkpoint; start again with --overwrite")
    return st


def read_checkpoint_step(path: Path) -> int:
    """The fit step a checkpoint was written at."""
    return int(_read_checkpoint(path)["step"])


def read_checkpoint_fingerprint(path: Path) -> str | None:
    """The ``Study.fingerprint`` of the study a checkpoint was fitted to (None for old checkpoints)."""
    return _read_checkpoint(path).get("study_fingerprint")


def load_checkpoint(path: Path) -> tuple[GaussianField, dict]:
    """The field of a checkpoint, bit-exact, and the whole state dict."""
    st = _read_checkpoint(path)
    f = GaussianField(st["means"], st["log_scales"].exp(), st["quats"],
                      torch.nn.functional.softplus(st["raw_atten"]))
    with torch.no_grad():  # bit-exact, not through the exp/log and softplus round trips
        f.log_scales.copy_(st["log_scales"])
        f.raw_atten.copy_(st["raw_atten"])
    return f, st


def fit_study(study: Study, config: FitConfig | None = None, checkpoint: str | Path | None = None,
              resume: bool = False, progress: bool = True, stop_after: int | None = None,
              study_fingerprint: str | None = None) -> FitResult:
    """Fit Gaussians to a study; see the module docstring.

    ``checkpoint``: file to save to every ``config.checkpoint_every`` steps; with ``resume`` the fit
    restarts from it when it exists; ``study_fingerprint`` (``Study.fingerprint``) is stored in it, so
    that a resume can check it is the same study. ``stop_after``: stop (without the lumen) after that
    many steps in this call, for tests of the resume path; returns None then. Ctrl-C (or SIGTERM
    turned into KeyboardInterrupt) raises ``Interrupted`` naming the last checkpoint, which is kept.

    Threads (``config.threads``; 0 = every core, the default; the previous setting is restored
    afterwards). On a busy machine pass threads=1: small steps on a shared core spend more on an
    OpenMP barrier per op than on the work (docs/decisions.md, "Batch fit: threads").
    """
    c = config or FitConfig()
    c.validate()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(resolve_threads(c.threads))
    try:
        return _fit(study, c, checkpoint, resume, progress, stop_after, study_fingerprint)
    finally:
        torch.set_num_threads(prev_threads)


def resolve_threads(threads: int) -> int:
    """The torch thread count a ``threads`` setting means: itself, or every core for 0."""
    return threads if threads > 0 else max(1, os.cpu_count() or 1)


def _fit(study: Study, c: FitConfig, checkpoint, resume: bool, progress: bool, stop_after: int | None,
         fingerprint: str | None = None) -> FitResult | None:
    torch.manual_seed(c.seed)
    t0 = time.perf_counter()
    study, gate_info = gate_study(study, c.gate, c.gate_width)
    tg = targets_from_study(study, c.rot_keep)
    init_tg = tg
    if c.targets == "frames":
        tg = frame_targets(study, c.frames_keep)
    dev = resolve_device(c.device)  # the steps run there; NumPy steps (init, lumen post-processing) on the CPU
    V = len(tg.views)
    H, W = tg.images.shape[1:]
    tg = Targets(tg.views, tg.images.to(dev), tg.info)
    packed = pack_views(tg.views, device=dev)
    per_target = (tg.images ** 2).sum((1, 2)).clamp_min(1e-12)  # [T]
    norm = per_target.sum()  # data term = relative squared error
    batch = V > c.frames_batch and (c.targets == "frames" or study.mode == "rotational")
    ckpt = Path(checkpoint) if checkpoint else None
    history: list[dict] = []
    start = 0
    if resume and ckpt is not None and ckpt.exists():
        f, st = load_checkpoint(ckpt)
        f = f.to(dev)
        opt = make_optimizer(f, c)
        opt.load_state_dict(st["opt"])
        start, history = st["step"], st["history"]
        if start > c.iters:
            raise ValueError(f"the checkpoint {ckpt} is at step {start}, past iters = {c.iters}")
        torch.set_rng_state(st["rng"])
    else:
        f = backprojection_init(init_tg, c.init_spacing_mm, c.hull_frac, c.max_gaussians,
                                c.disc_window_for(study.mode)).to(dev)
        opt = make_optimizer(f, c)
    n_init = len(f) if start == 0 else None
    t_init = time.perf_counter() - t0
    bar = tqdm(range(start, c.iters), desc="fit Gaussians", unit="step", disable=not progress,
               initial=start, total=c.iters)
    steps_here = 0
    try:
        for it in bar:
            if c.densify_every and it > 0 and it % c.densify_every == 0 and it <= c.densify_until:
                f, dinfo = densify_prune(f, c)
                opt = make_optimizer(f, c)
                history.append({"step": it, "densify": dinfo})
            opt.zero_grad(set_to_none=True)
            _, prec = f.covar_and_precision()
            atten = f.attenuation
            if batch:  # a random subset of frames; each frame's contrast state = one least-squares scale
                sel = torch.randperm(V)[:c.frames_batch]
                pk, tgt = packed[sel], tg.images[sel]
                params, rects = project_gaussians(pk, f.means, prec, W, H, 5.0)
                img = rasterize(pk, params, atten.expand(len(sel), -1), rects, W, H)
                data = ((nuisance_fit(img, tgt, True) - tgt) ** 2).sum() / per_target[sel].sum()
            else:
                params, rects = project_gaussians(packed, f.means, prec, W, H, 5.0)
                img = rasterize(packed, params, atten.expand(V, -1), rects, W, H)
                data = ((nuisance_fit(img, tg.images, False) - tg.images) ** 2).sum() / norm
            loss = data
            s = f.scales
            reg_s = (torch.relu(s - c.max_scale_mm) + torch.relu(c.min_scale_mm - s)).pow(2).sum(-1).mean()
            loss = loss + c.scale_weight * reg_s
            reg_b = torch.zeros((), device=dev)
            if c.binary_weight > 0:
                grid = _grid_around(f, c.binary_grid_mm, 1.0)
                cov, prec2 = f.covar_and_precision()
                vol = voxelize(f.means, prec2, cov, atten, grid, 4.0)
                mu_c = lumen_level(vol)
                w = vol / mu_c
                support = max(1, int((w.detach() > 0.05).sum()))
                reg_b = (torch.relu(w) * torch.relu(1.0 - w)).sum() / support
                loss = loss + c.binary_weight * reg_b
            loss.backward()
            opt.step()
            steps_here += 1
            if it % 10 == 0 or it == c.iters - 1:
                history.append({"step": it, "data": float(data.detach()), "scale": float(reg_s.detach()),
                                "binary": float(reg_b.detach()), "n": len(f)})
                bar.set_postfix(data=f"{float(data.detach()):.2e}", n=len(f))
            done = it + 1
            if ckpt is not None and (done % c.checkpoint_every == 0 or done == c.iters):
                save_checkpoint(ckpt, _state(f, opt, done, history, c, fingerprint))
                failpoint("checkpoint")
            if stop_after is not None and steps_here >= stop_after:
                bar.close()
                return None
    except KeyboardInterrupt:  # the last checkpoint stays; resume continues from it
        bar.close()
        last = read_checkpoint_step(ckpt) if ckpt is not None and ckpt.exists() else 0
        raise Interrupted(last, ckpt if last else None) from None
    bar.close()
    t_fit = time.perf_counter() - t0 - t_init
    occ, origin, mu_c, levels, branches = _fitted_lumen(f, study.views, c)
    with torch.no_grad():  # misfit against the composite targets (what the report shows), in both modes
        _, prec = f.covar_and_precision()
        pk = pack_views(init_tg.views, device=dev)
        ref = init_tg.images.to(dev)
        params, rects = project_gaussians(pk, f.means, prec, W, H, 5.0)
        img = nuisance_fit(rasterize(pk, params, f.attenuation.expand(len(init_tg.views), -1), rects, W, H),
                           ref, c.targets == "frames" or study.mode == "rotational")
        rel = float(((img - ref) ** 2).sum().sqrt() / (ref ** 2).sum().sqrt())
    f = f.cpu()  # the result (and the files written from it) is on the CPU whatever the device
    info = {"n_targets": V, "targets": tg.info, "targets_mode": c.targets, "gate": gate_info, "n_gaussians": len(f), "n_init": n_init,
            "seconds_init": t_init, "seconds_fit": t_fit, "steps": c.iters, "data_rel_l2": rel,
            "lumen_level_per_mm": mu_c, **levels, "config": asdict(c)}
    return FitResult(f, init_tg, mu_c, occ, origin, c.lumen_mm, history, info, branches)


PROJECTED_LEVEL_MIN_PROFILES = 20  # fewer usable profiles: keep the density level
# "auto": the projected level where the views' largest separation is below this (degrees). Below it
# the density level inflates the lumen by 10-40 %; above it the projected level reads 2-10 % high on
# the presets' rounded-square sections (docs/decisions.md, "Batch fit: the lumen level from the
# projections")
PROJECTED_LEVEL_BELOW_DEG = 60.0
PROJECTED_LEVEL_MIN_SINE = 0.5  # profiles where the vessel runs within 30° of the ray are skipped


def projected_lumen_level(f: GaussianField, views: list[CArmView], branches: list[np.ndarray],
                          step_mm: float = 0.5, end_mm: float = 3.0) -> tuple[float, int]:
    """(μ_c, number of profiles): the filled lumen's attenuation from the field's own projections.

    At centerline points every ``step_mm`` (``end_mm`` clear of the branch ends; branches [P, 4] X, Y,
    Z, R mm) and in every view, the rendered line integral L(x) is sampled across the vessel, along
    the direction normal to both the vessel and the ray, over ±4 R (x in mm at the point's depth).
    A round section of radius R filled at μ_c gives L_peak = 2 R μ_c / sin φ and ∫L dx = π R² μ_c /
    sin φ (φ the angle between the vessel and the ray), so μ_c = π L_peak² sin φ / (4 ∫L dx), whatever
    the field does along the ray. Returns the median over all profiles (NaN, 0 when none is usable:
    points where sin φ < ``PROJECTED_LEVEL_MIN_SINE``). An elliptical section of axes a, b seen along
    a gives μ_c a / b, along b μ_c b / a: the median over views lies between.

    Why: the projections fix the field's integral, not how it spreads along the rays. Two views
    close together leave the vessel stretched in depth at a lower density, and the density level
    (``lumen_level``) then inflates the lumen volume ∫μ / μ_c (+38 % at 30° apart; docs/decisions.md,
    "Batch fit: the lumen level from the projections").
    """
    with torch.no_grad():
        imgs = render_views(f, list(views)).cpu().numpy()
    x_rel = np.linspace(-4.0, 4.0, 161)
    est = []
    for b in branches:
        b = np.asarray(b, float)
        if len(b) < 3:
            continue
        s, t = arc_length(b[:, :3]), tangents(b[:, :3])
        every = max(1, int(round(step_mm / max(float(np.median(np.diff(s))), 1e-6))))
        for k in np.nonzero((s > end_mm) & (s < s[-1] - end_mm))[0][::every]:
            p, R = b[k, :3], float(b[k, 3])
            if not R > 0:
                continue
            x = x_rel * R
            for v, img in zip(views, imgs):
                ray = p - v.source_mm
                n = np.cross(t[k], ray / np.linalg.norm(ray))
                sin_phi = float(np.linalg.norm(n))
                if sin_phi < PROJECTED_LEVEL_MIN_SINE:
                    continue
                L = sample_image(img, v.project(p[None] + x[:, None] * (n / sin_phi)[None]))
                peak, area = float(L.max()), float(np.trapezoid(L, x))
                if peak > 0 and area > 0:
                    est.append(math.pi * peak ** 2 * sin_phi / (4.0 * area))
    if not est:
        return float("nan"), 0
    return float(np.median(est)), len(est)


def fitted_lumen(f: GaussianField, views: list[CArmView], c: FitConfig) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """(occupancy [X, Y, Z], origin_mm [3], μ_c, levels) of a fitted field, at the lumen level
    ``c.lumen_level`` says: "projected" (``projected_lumen_level`` on the centerline of the
    density-level lumen; the density level where fewer than ``PROJECTED_LEVEL_MIN_PROFILES`` profiles
    are usable or no centerline can be traced) or "density" (``lumen_level``). ``levels``: both levels,
    the rule used and ``depth_spread`` = projected / density level (how many times the volume the
    field's density implies exceeds the one its projections imply; ~1 for a lumen the views resolve),
    for the fit's info. "auto": "projected" where ``view_separation_deg(views)`` is
    below ``PROJECTED_LEVEL_BELOW_DEG``, else "density". The batch fit and the online fitter both use
    this."""
    return _fitted_lumen(f, views, c)[:4]


def _fitted_lumen(f: GaussianField, views, c: FitConfig):
    """``fitted_lumen`` and the centerline it traced when that is the returned occupancy's (the
    density level kept), else None, so that the caller need not trace it again."""
    occ, origin, mu_density = lumen_occupancy(f, c.lumen_mm, rule=c.surface_rule)
    levels = {"lumen_level_density_per_mm": mu_density, "lumen_level_rule": "density"}
    rule = c.lumen_level
    if rule == "auto":
        rule = "projected" if view_separation_deg(list(views)) < PROJECTED_LEVEL_BELOW_DEG else "density"
    # the projected level is read either way: against the density level it says how far the field
    # spread along the rays (``depth_spread``), a warning when the views leave depth ambiguous
    try:
        branches = extract_centerline(occ, origin, c.lumen_mm)
    except ValueError:  # no centerline in a degenerate lumen: the density level stands
        return occ, origin, mu_density, levels, None
    mu_p, n = projected_lumen_level(f, views, branches)
    levels |= {"lumen_level_projected_per_mm": mu_p, "lumen_level_profiles": n}
    if n < PROJECTED_LEVEL_MIN_PROFILES or not math.isfinite(mu_p) or mu_p <= 0:
        return occ, origin, mu_density, levels, branches
    levels["depth_spread"] = mu_p / mu_density if mu_density > 0 else float("nan")
    if rule != "projected":
        return occ, origin, mu_density, levels, branches
    occ, origin, mu_c = lumen_occupancy(f, c.lumen_mm, rule=c.surface_rule, mu_c=mu_p)
    return occ, origin, mu_c, levels | {"lumen_level_rule": "projected"}, None


def lumen_threshold(vol: torch.Tensor, voxel_mm3: float, mu_c: float | None = None) -> tuple[float, float]:
    """(μ_c, τ): the lumen level (``lumen_level``) and the density threshold τ whose superlevel set
    {μ > τ} has the volume the field's integral implies, ∫μ / μ_c ("integral-preserving").

    Both ∫μ and μ_c scale with the contrast, so the lumen volume does not depend on how well the
    composite captured the peak opacification; and where the field's edge is blurred, τ sits where
    the blur puts as much mass outside the surface as it takes from inside. For an ideal plateau
    τ falls anywhere in (0, μ_c]; ``lumen_occupancy`` then uses μ_c/2. ``mu_c``: a level found otherwise
    (``projected_lumen_level``) instead of the field's density."""
    if mu_c is None:
        mu_c = lumen_level(vol)
    v = vol.detach().flatten().double()
    target = float(v.sum()) / mu_c  # voxels
    n = int(round(target))
    vs, _ = torch.sort(v, descending=True)
    if n <= 0 or n >= v.numel():
        return mu_c, 0.5 * mu_c
    tau = float(vs[n])
    if not 0.2 * mu_c <= tau <= 0.8 * mu_c:  # a field far from a filled lumen: fall back to the half level
        tau = 0.5 * mu_c
    return mu_c, tau


def lumen_occupancy(f: GaussianField, spacing_mm: float = 0.1, margin_mm: float = 1.0, rule: SurfaceRule = "mass",
                    mu_c: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Voxelize the field; occupancy = clip(μ / 2τ, 0, 1) so that its 0.5 level is the
    integral-preserving threshold τ (``lumen_threshold``; ``mu_c`` given or the field's density level).
    Returns (occupancy [X, Y, Z] in [0, 1], origin_mm [3], μ_c)."""
    with torch.no_grad():
        grid = _grid_around(f, spacing_mm, margin_mm)
        cov, prec = f.covar_and_precision()
        vol = voxelize(f.means, prec, cov, f.attenuation, grid, 5.0)
        mu_c, tau = lumen_threshold(vol, spacing_mm ** 3, mu_c)
        if rule == "half":
            tau = 0.5 * mu_c
        occ = (vol / (2.0 * tau)).clamp(0, 1).cpu().numpy().astype(np.float32)
    return keep_main_lumen(occ, spacing_mm), np.array(grid.origin_mm), mu_c


def keep_main_lumen(occ: np.ndarray, spacing_mm: float = 0.1, min_fraction: float = 0.05,
                    margin_mm: float = 0.5) -> np.ndarray:
    """Zero what a sparse-view fit leaves beside the vessel. occ: [X, Y, Z] lumen fraction on a grid
    of spacing_mm. Keeps the connected components (26-connectivity) of occ > 0.5 that hold at least
    ``min_fraction`` of the largest one's volume, and of the faint rest (occ <= 0.5) only the voxels
    within ``margin_mm`` of them (Euclidean), where the partial-volume ramp of their walls lies.

    The faint haze is zeroed even when the lumen is one component: section areas
    (``flow.transit.section_areas``) sum the fractions, and haze anywhere in the grid counts there. A
    narrower margin than 0.5 mm cuts into the partial-volume ramp of 2-view fits. Measurements:
    docs/decisions.md, "Batch fit: haze beside the lumen"."""
    from scipy import ndimage as ndi

    if not spacing_mm > 0 or not margin_mm >= 0:
        raise ValueError(f"keep_main_lumen: spacing_mm must be > 0 and margin_mm >= 0, got {spacing_mm}, {margin_mm}")
    lab, n = ndi.label(occ > 0.5, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return occ
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes >= min_fraction * sizes.max()
    kept = keep[lab]
    # the faint voxels within margin_mm of the kept lumen, exactly (Euclidean) but without a
    # distance transform of the whole grid, which is slow on large grids (tests compare the two):
    # candidates in a cube dilation (chessboard distance <= Euclidean), measured against the kept
    # voxels that have a non-kept 26-neighbour (the nearest kept voxel always has one)
    from scipy.spatial import cKDTree

    m = margin_mm / spacing_mm + 1e-6  # voxels; the tolerance keeps 0.3 / 0.1 = 2.9999... at 3
    cube = np.ones((3, 3, 3), bool)
    near = kept.copy()
    ci = np.argwhere((lab == 0) & (occ > 0) & ndi.binary_dilation(kept, structure=cube, iterations=int(m))) \
        if m >= 1 else np.zeros((0, 3), int)  # under one voxel, no faint voxel is near enough
    if len(ci):
        rim = np.argwhere(kept & ~ndi.binary_erosion(kept, structure=cube, border_value=0))
        d, _ = cKDTree(rim).query(ci, distance_upper_bound=m)
        near[tuple(ci[d <= m].T)] = True
    return np.where(near, occ, 0.0).astype(np.float32)
