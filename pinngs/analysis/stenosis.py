"""Stenosis grading and Murray's law on centerline branches ([P, 4] X, Y, Z, R in mm).

    lesions = grade_stenosis(branches)      # list of dicts, most severe first
    junctions = murray_deviation(branches)  # one dict per bifurcation

Grading: along each branch the diameter 2R is compared with a robust healthy reference line
(points far below it, lesions, or far above it, junctions and dilatations, are dropped
iteratively); a lesion is a dip below ``extent_fraction`` of the reference, graded by its minimum
diameter (% diameter stenosis), located at that minimum and measured by its length (the mean width
of the dip over a band of thresholds, so that a shoulder crossing one threshold cannot make it
jump). Murray's law: at each junction r_parent³ against Σ r_daughter³ of window medians set back
from the junction, and the exponent k with r_p^k = Σ r_d^k.
"""
from __future__ import annotations


import numpy as np

from ..polyline import arc_length
from .centerline import branch_topology, branch_tree


LESION_MIN_PERCENT = 20.0  # % diameter stenosis: milder narrowings are not reported (grade_stenosis)


def _robust_line(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """[2] coefficients (a, b) of d ≈ a + b s fitted to the healthy points: points well below the
    line (lesions) or well above it (junctions, dilatations) are dropped iteratively."""
    if len(s) < 3 or np.ptp(s) <= 0:
        return np.array([float(np.median(d)), 0.0])
    A = np.column_stack([np.ones_like(s), s])
    keep = np.ones(len(s), bool)
    coef = np.array([float(np.median(d)), 0.0])
    for _ in range(30):
        if keep.sum() < 3:
            break
        coef, *_ = np.linalg.lstsq(A[keep], d[keep], rcond=None)
        res = d - A @ coef
        rk = res[keep]
        scale = max(1.4826 * float(np.median(np.abs(rk - np.median(rk)))), 0.01 * float(np.median(d)))
        new = (res > -2.5 * scale) & (res < 4.0 * scale)
        if np.array_equal(new, keep):
            break
        keep = new
    return coef


def _run_around(inside: np.ndarray, i: int) -> tuple[int, int]:
    """First and last index of the run of ``inside`` that contains index i (i itself counts)."""
    a = i
    while a > 0 and inside[a - 1]:
        a -= 1
    b = i
    while b < len(inside) - 1 and inside[b + 1]:
        b += 1
    return a, b


def _crossing_width(s: np.ndarray, below: np.ndarray, val: np.ndarray, i: int) -> tuple[float, float]:
    """Arc interval around index i where ``below`` holds, its ends placed by linear interpolation of
    ``val`` (which crosses zero at the interval ends)."""
    a, b = _run_around(below, i)
    sa = s[a] if a == 0 else s[a - 1] + (s[a] - s[a - 1]) * val[a - 1] / (val[a - 1] - val[a])
    sb = s[b] if b == len(s) - 1 else s[b] + (s[b + 1] - s[b]) * val[b] / (val[b] - val[b + 1])
    return float(sa), float(sb)


def _band_width(s: np.ndarray, ratio: np.ndarray, i: int, f: float, band: float) -> float:
    """Mean over thresholds t in [f − band, f + band] of the width of the stretch around index i
    where ratio < t. For one dip this is ∫ clip((f + band − ratio) / (2 band), 0, 1) ds over the
    stretch below f + band (piecewise linear in ``ratio``, trapezoid rule): continuous in the
    profile, where the width at one threshold jumps when a shoulder crosses it."""
    hi = f + band
    a, b = _run_around(ratio < hi, i)
    lo, up = max(a - 1, 0), min(b + 1, len(s) - 1)  # the neighbours outside, where the weight reaches 0
    w = np.clip((hi - ratio[lo:up + 1]) / (2 * band), 0.0, 1.0)
    return float(np.trapezoid(w, s[lo:up + 1]))


def grade_stenosis(branches: list[np.ndarray], *, extent_fraction: float = 0.9, healthy_fraction: float = 0.97,
                   min_percent: float = LESION_MIN_PERCENT, window_diameters: float = 2.0,
                   end_margin_radii: float = 1.0, extent_band: float = 0.05) -> list[dict]:
    """Lesions along the branches, most severe first.

    branches: list of [P, 4] X, Y, Z, R (mm). Per branch, d = 2R is compared with a healthy
    reference:

    1. a straight line d(s) fitted robustly to the branch (lesions excluded) finds runs where
       d < extent_fraction * reference;
    2. each run is widened to its shoulders (d back above healthy_fraction * reference), and the
       lesion's reference diameter is interpolated (by arc length) between the median diameters of
       the proximal and distal healthy windows, each window_diameters reference diameters long next
       to the shoulders (one side only if the other is missing);
    3. % diameter stenosis = 100 (1 - d_min / d_ref) at the narrowest point; lesions below
       min_percent are not reported;
    4. the lesion length is the stretch where d < f * d_ref, averaged over the thresholds f in
       extent_fraction ± extent_band (``_band_width``; with extent_band 0, the stretch at
       extent_fraction alone), because a length at one threshold jumps wherever the profile has a
       shoulder or a second dip near that threshold.

    Also given: the stretch at extent_fraction (start_arc_mm, end_arc_mm: where reduced-order ΔP
    swaps the Poiseuille integral for Young-Tsai) and the width at half the lesion's depth, which is
    half the full length of a cosine stenosis. Points within end_margin_radii radii of a branch end
    are not graded: there the inscribed sphere touches the lumen's end cap, not its wall (its radius
    at a distance x < R from a flat end is x), as in the transit's sections (``flow.transit``, the
    same 1 radius). Measurements: docs/decisions.md, "Stenosis grading: lesion length" and
    "Stenosis grading: end margin".

    Each dict: branch, percent_diameter_stenosis, percent_area_stenosis, d_min_mm, d_ref_mm,
    d_ref_proximal_mm, d_ref_distal_mm (None if missing), arc_from_inlet_mm, arc_in_branch_mm,
    xyz_mm [3], length_mm, length_threshold, length_band, length_at_threshold_mm, start_arc_mm,
    end_arc_mm (from the inlet), length_half_depth_mm.
    """
    if not (0 <= extent_band < extent_fraction and extent_fraction + extent_band <= 1):
        raise ValueError(f"grade_stenosis: need 0 <= extent_band < extent_fraction and extent_fraction + "
                         f"extent_band <= 1, got extent_band={extent_band}, extent_fraction={extent_fraction}")
    _, offsets = branch_topology(branches)
    lesions = []
    for bi, b in enumerate(branches):
        b = np.asarray(b, dtype=float)
        if len(b) < 5:
            continue
        s, d = arc_length(b[:, :3]), 2.0 * b[:, 3]
        margin = end_margin_radii * float(np.median(b[:, 3]))
        valid = (s >= margin) & (s <= s[-1] - margin)
        if valid.sum() < 5:
            continue
        coef = _robust_line(s[valid], d[valid])
        ratio = d / np.maximum(coef[0] + coef[1] * s, 1e-9)
        below = valid & (ratio < extent_fraction)
        # runs of `below`, widened to their shoulders; overlapping ones merged
        spans = []
        i = 0
        while i < len(s):
            if not below[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(s) and below[j + 1]:
                j += 1
            a, c = i, j
            while a > 0 and valid[a - 1] and ratio[a] < healthy_fraction:
                a -= 1
            while c < len(s) - 1 and valid[c + 1] and ratio[c] < healthy_fraction:
                c += 1
            if spans and a <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(c, spans[-1][1]), spans[-1][2] + [(i, j)])
            else:
                spans.append((a, c, [(i, j)]))
            i = j + 1
        for a, c, runs in spans:
            core = np.concatenate([np.arange(i, j + 1) for i, j in runs])
            imin = int(core[np.argmin(ratio[core])])
            d_line = coef[0] + coef[1] * s[imin]
            w = window_diameters * d_line
            prox = valid & (s >= s[a] - w) & (s <= s[a])
            dist = valid & (s >= s[c]) & (s <= s[c] + w)
            refs = []
            for sel in (prox, dist):
                ok = sel.sum() >= 3 and np.ptp(s[sel]) >= 0.25 * w
                refs.append((float(np.median(s[sel])), float(np.median(d[sel]))) if ok else None)
            if refs[0] and refs[1]:
                (s0, d0), (s1, d1) = refs
                d_ref_at = lambda x: d0 + (d1 - d0) * np.clip((x - s0) / max(s1 - s0, 1e-9), 0, 1)  # noqa: E731
            elif refs[0] or refs[1]:
                dr = (refs[0] or refs[1])[1]
                d_ref_at = lambda x: np.full_like(np.asarray(x, float), dr)  # noqa: E731
            else:
                d_ref_at = lambda x: coef[0] + coef[1] * np.asarray(x, float)  # noqa: E731
            d_ref = float(d_ref_at(s[imin]))
            pct = 100.0 * (1.0 - d[imin] / d_ref)
            if pct < min_percent:
                continue
            ref_curve = d_ref_at(s)
            v_ext = extent_fraction * ref_curve - d  # > 0 inside the lesion
            sa, sb = _crossing_width(s, v_ext > 0, v_ext, imin)
            length = _band_width(s, d / ref_curve, imin, extent_fraction, extent_band) if extent_band > 0 else sb - sa
            half = ref_curve - 0.5 * (ref_curve - d[imin]) - d
            ha, hb = _crossing_width(s, half > 0, half, imin)
            lesions.append({
                "branch": bi,
                "percent_diameter_stenosis": float(pct),
                "percent_area_stenosis": float(100.0 * (1.0 - (d[imin] / d_ref) ** 2)),
                "d_min_mm": float(d[imin]), "d_ref_mm": d_ref,
                "d_ref_proximal_mm": refs[0][1] if refs[0] else None,
                "d_ref_distal_mm": refs[1][1] if refs[1] else None,
                "arc_from_inlet_mm": float(offsets[bi] + s[imin]), "arc_in_branch_mm": float(s[imin]),
                "xyz_mm": [float(v) for v in b[imin, :3]],
                "length_mm": float(length), "length_threshold": extent_fraction, "length_band": extent_band,
                "length_at_threshold_mm": sb - sa,
                "start_arc_mm": float(offsets[bi] + sa), "end_arc_mm": float(offsets[bi] + sb),
                "length_half_depth_mm": hb - ha,
            })
    return sorted(lesions, key=lambda L: -L["percent_diameter_stenosis"])


def _murray_exponent(rp: float, rd: list[float]) -> float | None:
    """k solving rp^k = sum rd^k (None when no daughter is smaller than... i.e. no root exists)."""
    q = np.asarray(rd, dtype=float) / rp
    if len(q) < 2 or np.any(q <= 0) or np.any(q >= 1):
        return None
    f = lambda k: float(np.sum(q ** k) - 1.0)  # noqa: E731  decreasing in k, f(0) = n - 1 > 0
    lo, hi = 0.0, 1.0
    while f(hi) > 0:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            return None
    for _ in range(100):  # bisection: robust and plenty fast
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def murray_deviation(branches: list[np.ndarray], *, offset_radii: float = 2.5,
                     window_radii: float = 2.0) -> list[dict]:
    """Murray's law at each bifurcation (a branch with two or more daughters).

    Radii are medians over a window window_radii parent radii long, starting offset_radii parent
    radii away from the junction (upstream on the parent, downstream on the daughters), clear of the
    junction's own widening; windows are shortened on branches too short for them.

    Each dict: parent, daughters [indices], junction_xyz_mm [3], r_parent_mm, r_daughters_mm [list],
    deviation = (r_p³ − Σ r_d³) / r_p³ (0 for Murray's law), exponent_k solving r_p^k = Σ r_d^k
    (3 for Murray's law; None if no daughter is smaller than the parent).
    """
    _, children = branch_tree(branches)
    out = []
    for i, kids in enumerate(children):
        if len(kids) < 2:
            continue
        bp = np.asarray(branches[i], dtype=float)
        rp_typ = float(np.median(bp[:, 3]))
        off, win = offset_radii * rp_typ, window_radii * rp_typ

        def window_median(b: np.ndarray, from_end: bool) -> float:
            s = arc_length(b[:, :3])
            dist = s[-1] - s if from_end else s
            L = s[-1]
            a = min(off, 0.5 * L)
            sel = (dist >= a) & (dist <= a + win)
            if sel.sum() < 2:
                sel = dist >= 0.5 * L
            return float(np.median(b[sel, 3]))

        rp = window_median(bp, True)
        rd = [window_median(np.asarray(branches[j], dtype=float), False) for j in kids]
        out.append({
            "parent": i, "daughters": kids, "junction_xyz_mm": [float(v) for v in bp[-1, :3]],
            "r_parent_mm": rp, "r_daughters_mm": rd,
            "deviation": float((rp ** 3 - sum(r ** 3 for r in rd)) / rp ** 3),
            "exponent_k": _murray_exponent(rp, rd),
        })
    return out
