"""True flow on the simulation grid: velocity [X, Y, Z, 3] (mm/s) and pressure [X, Y, Z] (Pa).

Two models, and every study says which one it used (truth.json "flow_model"):
  * "axisymmetric-fem": straight phantoms with r = R(z) (tube, axisymmetric stenosis): the steady
    Navier-Stokes solution of ``cfd.solve_axisymmetric`` (scikit-fem, Taylor-Hood P2-P1), sampled at
    the voxel centres through r = distance to the axis, z = position along it.
  * "tet-fem": any other phantom (eccentric stenosis, bifurcation): steady Navier-Stokes on curved
    quadratic tetrahedra (``flow.fem.solve_tet``: gmsh mesh, scikit-fem Taylor-Hood P2-P1), sampled at
    the voxel centres. The lumen's rounded end caps beyond the flat inlet/outlet caps of the CFD
    domain take the centerline-Poiseuille velocity and the pressure of the nearest sampled voxel.
  * "centerline-poiseuille": the cheap approximation (curved and real vessels by default): at each
    voxel the Poiseuille profile of the nearest centerline segment, along its tangent, with the
    branch flow split by Murray's law (Q ∝ r³) and the pressure integrated along the centerline
    (dp/ds = -8μQ/(πR⁴)). It is not CFD: no inertial losses, no secondary flow, no separation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..units import MU_BLOOD_PA_S
from .phantoms import Phantom



@dataclass
class FlowTruth:
    vel: np.ndarray  # [X, Y, Z, 3] mm/s
    p: np.ndarray  # [X, Y, Z] Pa (NaN outside the lumen)
    q_mm3_s: float
    dp_pa: float  # inlet minus outlet of branch 0, section-averaged
    model: str
    info: dict


def _nearest_centerline(ph: Phantom, origin, h: float, shape, step_mm: float = 0.1):
    """Per voxel: distance to the nearest centerline segment, its branch, the arc length along that
    branch, the local radius and the unit tangent."""
    best = np.full(shape, np.inf, np.float32)
    br_id = np.full(shape, -1, np.int16)
    s_at = np.zeros(shape, np.float32)
    r_at = np.zeros(shape, np.float32)
    tan = np.zeros(shape + (3,), np.float32)
    axes = [origin[k] + h * np.arange(shape[k]) for k in range(3)]
    for bi, b0 in enumerate(ph.branches):
        b = b0.resampled(step_mm)
        s_cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(b.points_mm, axis=0), axis=1))])
        for k, (a, c, ra, rc) in enumerate(zip(b.points_mm[:-1], b.points_mm[1:], b.radii_mm[:-1], b.radii_mm[1:])):
            rmax = max(ra, rc) + 2 * h
            i0 = np.clip(np.floor((np.minimum(a, c) - rmax - origin) / h).astype(int), 0, np.array(shape) - 1)
            i1 = np.clip(np.ceil((np.maximum(a, c) + rmax - origin) / h).astype(int) + 1, 0, np.array(shape))
            X, Y, Z = np.meshgrid(axes[0][i0[0]:i1[0]], axes[1][i0[1]:i1[1]], axes[2][i0[2]:i1[2]], indexing="ij")
            P = np.stack([X, Y, Z], -1)
            ac = c - a
            L2 = max(ac @ ac, 1e-12)
            t = np.clip(((P - a) @ ac) / L2, 0.0, 1.0)
            d = np.linalg.norm(P - (a + t[..., None] * ac), axis=-1)
            rr = ra + t * (rc - ra)
            sl = np.s_[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]]
            # nearest by distance relative to the local radius, so the thinner daughter near a
            # junction does not steal the parent's core
            better = (d - rr) < (best[sl])
            best[sl] = np.where(better, d - rr, best[sl])
            br_id[sl] = np.where(better, bi, br_id[sl])
            s_at[sl] = np.where(better, s_cum[k] + t * np.sqrt(L2), s_at[sl])
            r_at[sl] = np.where(better, rr, r_at[sl])
            tan[sl] = np.where(better[..., None], (ac / np.sqrt(L2)).astype(np.float32), tan[sl])
    return best, br_id, s_at, r_at, tan


def branch_flows(ph: Phantom, q_mm3_s: float) -> list[float]:
    """Branch 0 carries Q; later branches (daughters of branch 0's end) split it by Murray's law."""
    if len(ph.branches) == 1:
        return [q_mm3_s]
    r3 = np.array([b.radii_mm[-1] ** 3 for b in ph.branches[1:]])
    return [q_mm3_s] + list(q_mm3_s * r3 / r3.sum())


def centerline_poiseuille(ph: Phantom, origin, h: float, shape, q_mm3_s: float, mu: float = MU_BLOOD_PA_S) -> FlowTruth:
    sd, bid, s, R, tan = _nearest_centerline(ph, origin, h, shape)
    inside = (sd <= 0) & (bid >= 0)
    qs = branch_flows(ph, q_mm3_s)
    vel = np.zeros(shape + (3,), np.float32)
    p = np.full(shape, np.nan, np.float32)
    # pressure along each branch: p(s) = p_start - ∫ 8μQ/(πR⁴) ds (trapezoid on the centerline)
    p_end0 = None
    profiles = []
    for bi, b in enumerate(ph.branches):
        bb = b.resampled(0.1)
        ss = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(bb.points_mm, axis=0), axis=1))])
        g = 8 * mu * qs[bi] / (np.pi * bb.radii_mm ** 4)
        drop = np.concatenate([[0.0], np.cumsum(0.5 * (g[1:] + g[:-1]) * np.diff(ss))])
        start = 0.0 if bi == 0 else p_end0
        profiles.append((ss, start - drop))
        if bi == 0:
            p_end0 = float(start - drop[-1])
    for bi in range(len(ph.branches)):
        m = inside & (bid == bi)
        # distance to the axis = sd + R (sd is distance minus radius)
        dist = sd[m] + R[m]
        umag = 2 * qs[bi] / (np.pi * R[m] ** 2) * np.clip(1 - (dist / R[m]) ** 2, 0, None)
        vel[m] = umag[:, None] * tan[m]
        ss, pp = profiles[bi]
        p[m] = np.interp(s[m], ss, pp)
    dp = -profiles[0][1][-1]
    return FlowTruth(vel, p, q_mm3_s, float(dp), "centerline-poiseuille",
                     {"branch_flows_mm3_s": qs, "note": "Poiseuille per centerline segment; not CFD"})


def axisymmetric_fem(ph: Phantom, origin, h: float, shape, q_mm3_s: float, resolution: float = 1.0) -> FlowTruth:
    """Steady NS (scikit-fem, axisymmetric) for a straight phantom, sampled on the grid."""
    from .cfd import solve_axisymmetric

    if not ph.axisymmetric:
        raise ValueError(f"phantom {ph.name} is not axisymmetric; use centerline_poiseuille")
    z_prof, r_prof = ph.axial_profile
    L = float(z_prof[-1])
    flow = solve_axisymmetric(z_prof, r_prof, q_mm3_s, n_axial=int(round(resolution * max(120, 3 * L))),
                              n_radial=int(round(resolution * 16)))
    axes = [origin[k] + h * np.arange(shape[k]) for k in range(3)]
    X, Y, Z = np.meshgrid(*axes, indexing="ij")
    P = np.stack([X, Y, Z], -1) - ph.axis_origin_mm
    z = P @ ph.axis_dir
    radial = P - z[..., None] * ph.axis_dir
    r = np.linalg.norm(radial, axis=-1)
    Rz = np.interp(z, z_prof, r_prof, left=np.nan, right=np.nan)
    inside = (z >= 0) & (z <= L) & (r < Rz)
    ur, uz, pp = flow.sample(r[inside], z[inside])
    er = np.zeros_like(P)
    np.divide(radial, r[..., None], out=er, where=r[..., None] > 1e-9)
    vel = np.zeros(shape + (3,), np.float32)
    vel[inside] = (ur[:, None] * er[inside] + uz[:, None] * ph.axis_dir).astype(np.float32)
    # the inlet and outlet caps of the voxelized lumen (spherical ends) carry the end profiles
    p = np.full(shape, np.nan, np.float32)
    p[inside] = pp
    dp = flow.dp_between(float(z_prof[0]), float(z_prof[-1]))
    return FlowTruth(vel, p, q_mm3_s, float(dp), "axisymmetric-fem",
                     {"n_axial": int(round(resolution * max(120, 3 * L))), "n_radial": int(round(resolution * 16))})


def tet_fem(ph: Phantom, origin, h: float, shape, q_mm3_s: float, n_per_radius: float = 2.0,
            grad_div: float = 0.25) -> FlowTruth:
    """Steady NS on tetrahedra (``flow.fem.solve_tet``) for any phantom, sampled on the grid.

    With grad-div stabilisation (c = 0.25): without it the 3D jet after a lesion is under-resolved
    and its pressure recovery wrong (eccentric60's ΔP 489 Pa at 2.5 tetrahedra per radius against
    574 with it and 582 at 3.5; the 50 % stenosis against the axisymmetric solver −8 % without, −1 %
    with; docs/decisions.md, "Flow engine"). It vanishes on a divergence-free field, so it changes
    the solution the mesh converges to not at all."""
    from scipy.ndimage import distance_transform_edt

    from ..flow.fem import solve_tet

    flow = solve_tet(ph, q_mm3_s, n_per_radius=n_per_radius, grad_div=grad_div)
    base = centerline_poiseuille(ph, origin, h, shape, q_mm3_s)
    inside = ~np.isnan(base.p)
    idx = np.argwhere(inside)
    vel_s, p_s = flow.sample(origin + h * idx)
    ok = np.isfinite(p_s)
    vel = base.vel.copy()
    p = np.full(shape, np.nan, np.float32)
    vel[tuple(idx[ok].T)] = vel_s[ok]
    p[tuple(idx[ok].T)] = p_s[ok]
    # voxels of the lumen outside the CFD domain (rounded end caps): pressure of the nearest CFD voxel
    have = np.zeros(shape, bool)
    have[tuple(idx[ok].T)] = True
    _, near = distance_transform_edt(~have, return_indices=True)
    miss = idx[~ok]
    p[tuple(miss.T)] = p[tuple(near[:, miss[:, 0], miss[:, 1], miss[:, 2]])]
    info = {k: v for k, v in flow.info.items() if k not in ("facets", "curved_cells")}
    info.update(outlet_flows_mm3_s=flow.outlet_flows_mm3_s, voxels_outside_cfd=int((~ok).sum()),
                voxels_in_lumen=int(len(idx)))
    return FlowTruth(vel, p, q_mm3_s, float(flow.dp_pa), "tet-fem", info)
