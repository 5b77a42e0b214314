"""Which graded narrowings count as lesions with a jet, and the pressure drop across them.

    w = lesion_jet_weight(lesion)                         # 0 .. 1
    dp = lesion_dp(branch, areas, q_mm3_s, lesions, s0, s1)

Young–Tsai is an empirical law for stenoses. A graded narrowing counts as a lesion with a jet by a
weight that rises linearly from 0 at ``YT_MIN_PERCENT`` (30 %) diameter stenosis to 1 at
``YT_FULL_PERCENT`` (40 %). Across a lesion of weight w, ΔP is w · Young–Tsai + (1 − w) · the
Poiseuille integral of its measured sections (``flow.reduced``), and the flow estimate times Q
upstream of it with the same weight (``flow.estimate``), so that neither jumps when a fit's grade
crosses a threshold. The grade that sets the weight is the milder of the inscribed sphere's and the
section areas' (``equivalent_stenosis_percent``): a section flattened with its area intact has no
jet. Measurements behind the thresholds: docs/decisions.md, "The jet gate".
"""
from __future__ import annotations

import math

import numpy as np

from ..analysis.stenosis import LESION_MIN_PERCENT  # grade_stenosis's threshold: both grades must reach it
from ..polyline import arc_length
from .reduced import reduced_order_dp

YT_MIN_PERCENT = 30.0  # % diameter stenosis below which a narrowing has no jet (weight 0)
YT_FULL_PERCENT = 40.0  # ... and from which Young–Tsai applies in full (weight 1)


def jet_weight(percent_diameter_stenosis: float) -> float:
    """How much a graded narrowing counts as a lesion with a jet: 0 below ``YT_MIN_PERCENT``, 1 from
    ``YT_FULL_PERCENT``, linear in between (module docstring; docs/decisions.md, "The jet gate")."""
    return float(np.clip((percent_diameter_stenosis - YT_MIN_PERCENT) / (YT_FULL_PERCENT - YT_MIN_PERCENT), 0.0, 1.0))


def equivalent_stenosis_percent(branch: np.ndarray, area_mm2: np.ndarray, lesion: dict) -> float:
    """% diameter stenosis of a graded lesion (a ``grade_stenosis`` dict of this branch, [P, 4] X, Y, Z, R)
    by the equivalent diameters 2 √(A / π) of the section areas ([P] mm², ``flow.transit.section_areas``,
    3-point moving average): the smallest within the lesion's stretch (start_arc_mm .. end_arc_mm)
    against the median in windows of 2 d_ref on either side of it, one median radius clear of the
    branch ends. NaN when those windows hold no point.
    The grading itself uses the inscribed-sphere diameter, which a flattened section lowers while its
    area, the one the flow sees, stays (docs/decisions.md, "The jet gate")."""
    b = np.asarray(branch, float)
    s = arc_length(b[:, :3])
    d = 2.0 * np.sqrt(np.maximum(np.asarray(area_mm2, float), 0.0) / math.pi)
    if len(d) >= 3:
        d = np.convolve(np.pad(d, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    shift = lesion["arc_from_inlet_mm"] - lesion["arc_in_branch_mm"]  # the branch's offset from the inlet
    a, e = lesion["start_arc_mm"] - shift, lesion["end_arc_mm"] - shift
    w, margin = 2.0 * lesion["d_ref_mm"], float(np.median(b[:, 3]))
    core = (s >= a) & (s <= e)
    ref = (((s >= a - w) & (s < a)) | ((s > e) & (s <= e + w))) & (s >= margin) & (s <= s[-1] - margin)
    if not core.any() or not ref.any():
        return float("nan")
    return float(100.0 * (1.0 - d[core].min() / np.median(d[ref])))


def confirm_by_area(lesions: list[dict], branches: list, areas_mm2: list,
                    min_percent: float = LESION_MIN_PERCENT) -> tuple[list[dict], list[dict]]:
    """(lesions, flattened): the graded narrowings (``grade_stenosis`` dicts) split by their section areas.

    Each dict gets ``percent_equivalent_diameter_stenosis`` (``equivalent_stenosis_percent`` on
    ``areas_mm2[branch]``, [P] mm² per branch). A narrowing is a lesion when that grade also reaches
    ``min_percent`` (or is NaN: no healthy window to compare with, so nothing contradicts the
    inscribed sphere). Otherwise the section is flattened with its area kept, as a reconstruction
    from few views leaves a round vessel in places: the inscribed sphere shrinks, the flow does not
    see a narrowing, and it is reported apart, not as a lesion (AneuRisk C0015 seed 0: inscribed 24.9 %,
    by area 11.2 %, the true lumen has none; docs/decisions.md, "Stenosis grading: flattened sections").
    """
    if not 0 <= min_percent <= 100:
        raise ValueError(f"confirm_by_area: min_percent must be in [0, 100], got {min_percent}")
    kept, flat = [], []
    for x in lesions:
        b = int(x["branch"])
        x["percent_equivalent_diameter_stenosis"] = equivalent_stenosis_percent(branches[b], areas_mm2[b], x)
        q = x["percent_equivalent_diameter_stenosis"]
        (flat if math.isfinite(q) and q < min_percent else kept).append(x)
    return kept, flat


def lesion_jet_weight(lesion: dict) -> float:
    """``jet_weight`` of a graded lesion by the milder of its two grades: the inscribed sphere's
    (percent_diameter_stenosis) and the section areas' (percent_equivalent_diameter_stenosis, set by
    ``flow_on_lumen``; ignored when absent or NaN). A section flattened with its area intact has no
    jet (see ``equivalent_stenosis_percent``)."""
    p = float(lesion["percent_diameter_stenosis"])
    q = lesion.get("percent_equivalent_diameter_stenosis")
    if q is not None and math.isfinite(q):
        p = min(p, float(q))
    return jet_weight(p)


def lesion_dp(branch: np.ndarray, area_mm2: np.ndarray, q_mm3_s: float, lesions: list[dict],
              s_from_mm: float, s_to_mm: float) -> dict:
    """``flow.reduced.reduced_order_dp`` along one branch ([P, 4], areas [P]) with each graded lesion
    weighted by ``lesion_jet_weight``: Young–Tsai across narrowings of >= YT_MIN_PERCENT, faded in up to
    YT_FULL_PERCENT; milder ones keep the Poiseuille integral of their measured sections."""
    weighted = [dict(x, weight=lesion_jet_weight(x)) for x in lesions]
    return reduced_order_dp(branch, area_mm2, q_mm3_s, weighted, s_from_mm, s_to_mm)  # weight 0: skipped there
