"""Flow through a branching vessel: how the branches share the flow, and a quasi-Poiseuille field.

    q = split_flows(q_transit, parents, areas)      # flow per branch (mm³/s)
    dom = Domain(...); u, p = poiseuille_guess(dom, points_mm)

A junction's daughters share their parent's flow by Murray's law (``DAUGHTER_SPLIT`` = "murray"):
in proportion to r³ of each daughter's median measured radius r = sqrt(median area / π), which
conserves mass at the junction. "transit" keeps a daughter's own bolus-transit Q where it is
positive and no more than its parent's (measured against the Murray split: docs/decisions.md,
"Murray split of daughters").

The quasi-Poiseuille field: at each point the parabolic profile of the nearest centerline point's
section (equivalent radius sqrt(A/π), the branch's flow), and the Poiseuille gradient 8πμQ/A²
integrated along the branches (0 at the end of branch 0; a daughter starts at its parent's end
pressure). Its pressure is viscous only: a lesion's jet loss is in ``flow.lesions.lesion_dp``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree

from ..polyline import arc_length, tangents
from ..units import MU_BLOOD_PA_S

Daughters = Literal["murray", "transit"]
DAUGHTER_SPLIT: Daughters = "murray"  # the default split rule (module docstring)


def split_flows(q_transit_mm3_s: list[float], parents: list[int], areas_mm2: list[np.ndarray],
                daughters: Daughters = DAUGHTER_SPLIT) -> list[float]:
    """Flow per branch (mm³/s) from the transit Q per branch ([B], NaN where not timed), the branch
    parents ([B], -1 for a root) and the section areas ([P] per branch). "murray": the roots keep their
    transit Q and every junction's daughters share their parent's in proportion to r³ (r = sqrt(median
    area / π)), so that they add up to it; "transit": ``branch_flows`` on every branch's
    transit Q (a daughter's own where positive and no more than its parent's). See DAUGHTER_SPLIT."""
    check_daughters("split_flows", daughters)
    if not len(q_transit_mm3_s) == len(parents) == len(areas_mm2):
        raise ValueError(f"split_flows: one entry per branch needed, got {len(q_transit_mm3_s)} flows, "
                         f"{len(parents)} parents, {len(areas_mm2)} area arrays")
    given = [float(v) for v in q_transit_mm3_s]
    if daughters == "murray":
        given = [v if p < 0 else float("nan") for v, p in zip(given, parents)]
    return branch_flows(given, parents, areas_mm2)


def check_daughters(who: str, daughters: str) -> None:
    """Raise ValueError unless ``daughters`` is a known split rule."""
    if daughters not in ("murray", "transit"):
        raise ValueError(f"{who}: daughters must be 'murray' or 'transit', got {daughters!r}")


@dataclass
class Section:
    branch: int
    arc_mm: float
    centre_mm: np.ndarray  # [3]
    tangent: np.ndarray  # [3]
    points_mm: np.ndarray  # [S, 3]
    weights_mm2: np.ndarray  # [S] area carried by each point


@dataclass
class Domain:
    interior_mm: np.ndarray  # [Ni, 3]
    wall_mm: np.ndarray  # [Nw, 3]
    sections: list[Section]
    q_mm3_s: list[float]  # per branch
    branches: list[np.ndarray]  # [P, 4] per branch
    areas_mm2: list[np.ndarray]  # [P] per branch
    parents: list[int]
    occ: np.ndarray  # [X, Y, Z] lumen fraction
    origin_mm: np.ndarray
    spacing_mm: float

    def with_flows(self, q_mm3_s: list[float]) -> "Domain":
        """The same geometry with other flow rates per branch (NaN daughters: Murray split)."""
        if len(q_mm3_s) != len(self.branches):
            raise ValueError("with_flows: one flow rate per branch")
        return replace(self, q_mm3_s=branch_flows(q_mm3_s, self.parents, self.areas_mm2))

    def inside(self, pts_mm: np.ndarray) -> np.ndarray:
        """Lumen fraction [N] at world points (trilinear)."""
        ijk = (np.asarray(pts_mm, float) - self.origin_mm) / self.spacing_mm
        return map_coordinates(self.occ, ijk.T, order=1, mode="constant", cval=0.0)


def branch_flows(q_mm3_s: list[float], parents: list[int], areas_mm2: list[np.ndarray]) -> list[float]:
    """Flow rate per branch: the given ones, and for daughters without one (NaN or <= 0) the rest of
    their parent's split by Murray's law (r³ with r = sqrt(median area / π)). A daughter's given flow
    that exceeds its parent's is treated as missing: mass conservation says it cannot, and a transit
    fit on a short spurious branch can time one (docs/decisions.md, "Murray split of daughters")."""
    q = [float(v) for v in q_mm3_s]
    if not math.isfinite(q[0]) or q[0] <= 0:
        raise ValueError(f"build_domain: the inlet branch needs a positive flow rate, got {q[0]}")
    for b in range(len(q)):
        kids = [j for j, p in enumerate(parents) if p == b]
        missing = [j for j in kids if not (math.isfinite(q[j]) and 0 < q[j] <= q[b])]
        if missing:
            rest = q[b] - sum(q[j] for j in kids if j not in missing)
            r3 = np.array([np.median(areas_mm2[j]) ** 1.5 for j in missing])
            for j, w in zip(missing, r3 / r3.sum()):
                q[j] = max(rest, 0.05 * q[b]) * float(w)
    return q


def poiseuille_guess(dom: Domain, pts_mm: np.ndarray, mu: float = MU_BLOOD_PA_S) -> tuple[np.ndarray, np.ndarray]:
    """Quasi-Poiseuille velocity [N, 3] (mm/s) and pressure [N] (Pa): at each point, the parabolic
    profile of the nearest centerline point's section (equivalent radius sqrt(A/π), the branch's
    flow rate), and the Poiseuille gradient 8πμQ/A² integrated along the branches (0 at the end of
    branch 0; a daughter starts at its parent's end pressure)."""
    nb = len(dom.branches)
    drop = []
    for bi in range(nb):
        b = dom.branches[bi]
        s = arc_length(b[:, :3])
        A = np.maximum(dom.areas_mm2[bi], 1e-3)
        g = 8 * math.pi * mu * dom.q_mm3_s[bi] / A ** 2
        drop.append(np.concatenate([[0.0], np.cumsum(0.5 * (g[1:] + g[:-1]) * np.diff(s))]))
    start = {0: float(drop[0][-1])}
    for _ in range(nb):
        for bi in range(nb):
            p = dom.parents[bi]
            if bi not in start and p >= 0 and p in start:
                start[bi] = start[p] - float(drop[p][-1])
    P, T, R, Q, PR = [], [], [], [], []
    for bi, b in enumerate(dom.branches):
        P.append(b[:, :3])
        T.append(tangents(b[:, :3]))
        R.append(np.sqrt(np.maximum(dom.areas_mm2[bi], 1e-3) / math.pi))
        Q.append(np.full(len(b), dom.q_mm3_s[bi]))
        PR.append(start.get(bi, 0.0) - drop[bi])
    P, T, R, Q, PR = (np.concatenate(a) for a in (P, T, R, Q, PR))
    _, k = cKDTree(P).query(pts_mm)
    d = pts_mm - P[k]
    d_perp = d - (d * T[k]).sum(1, keepdims=True) * T[k]
    rr = (d_perp ** 2).sum(1) / R[k] ** 2
    umag = 2 * Q[k] / (math.pi * R[k] ** 2) * np.clip(1 - rr, 0, None)
    return umag[:, None] * T[k], PR[k]
