"""Reduced-order pressure drop on a reconstructed geometry: Poiseuille along the healthy segments
plus Young–Tsai across each graded lesion (the baseline the PINN is compared with).

    dp_pa = reduced_order_dp(branch, area_mm2, q_mm3_s, lesions, s_from_mm, s_to_mm)

Along the branch, between arc lengths s_from and s_to (mm): outside the lesions, the viscous
gradient 8πμQ/A(s)² of the local section (equivalent radius); across each lesion that lies within
[s_from, s_to], the Young–Tsai loss (``pinngs.laws.young_tsai_dp_pa``) with r0 = d_ref/2,
rs = d_min/2 and the lesion length, in place of the viscous integral over the lesion. A lesion dict
may carry a ``weight`` w in [0, 1] (default 1): its stretch then costs w · Young–Tsai + (1 − w) · the
viscous integral over it, so that a caller can fade the empirical law in with the grade
(``pinngs.flow.lesions``) instead of switching it on at a threshold.
"""
from __future__ import annotations

import math

import numpy as np

from ..laws import young_tsai_dp_pa
from ..polyline import arc_length
from ..units import MU_BLOOD_PA_S, RHO_BLOOD_G_MM3


def reduced_order_dp(branch: np.ndarray, area_mm2: np.ndarray, q_mm3_s: float, lesions: list[dict],
                     s_from_mm: float | None = None, s_to_mm: float | None = None,
                     mu: float = MU_BLOOD_PA_S, rho: float = RHO_BLOOD_G_MM3) -> dict:
    """{"dp_pa", "viscous_pa", "lesions_pa": [...]} along one branch (see the module docstring).

    branch: [P, 4] X, Y, Z, R; area_mm2: [P]; lesions: grade_stenosis dicts of this branch
    (arc_in_branch_mm, start_arc_mm/end_arc_mm from the inlet, arc_from_inlet_mm, d_min_mm,
    d_ref_mm, length_mm)."""
    b = np.asarray(branch, float)
    s = arc_length(b[:, :3])
    s0 = s[0] if s_from_mm is None else s_from_mm
    s1 = s[-1] if s_to_mm is None else s_to_mm
    if not s1 > s0:
        raise ValueError(f"reduced_order_dp: s_to ({s1}) must exceed s_from ({s0})")
    A = np.maximum(np.asarray(area_mm2, float), 1e-6)
    g = 8 * math.pi * mu * q_mm3_s / A ** 2
    fine = np.linspace(s0, s1, 2000)
    gf = np.interp(fine, s, g)
    keep = np.ones_like(fine)  # weight of the viscous integrand: 1 - w across a lesion of weight w
    yt = []
    for les in lesions:
        w = float(les.get("weight", 1.0))
        if not 0.0 <= w <= 1.0:  # also refuses NaN
            raise ValueError(f"reduced_order_dp: a lesion's weight must be in [0, 1], got {les.get('weight')}")
        shift = les["arc_from_inlet_mm"] - les["arc_in_branch_mm"]  # branch offset from the inlet
        a, e = les["start_arc_mm"] - shift, les["end_arc_mm"] - shift
        if e < s0 or a > s1 or w == 0.0:
            continue
        inside = (fine >= a) & (fine <= e)
        keep[inside] = np.minimum(keep[inside], 1.0 - w)
        dp = float(young_tsai_dp_pa(q_mm3_s, les["d_ref_mm"] / 2, les["d_min_mm"] / 2, les["length_mm"], rho, mu))
        yt.append({"arc_in_branch_mm": les["arc_in_branch_mm"], "dp_pa": w * dp, "young_tsai_pa": dp, "weight": w})
    viscous = float(np.trapezoid(keep * gf, fine))
    return {"dp_pa": viscous + sum(x["dp_pa"] for x in yt), "viscous_pa": viscous, "lesions_pa": yt}


