"""Contrast transport: c_t + u·∇c = D∇²c with an inlet bolus c_in(t), for the simulator's steady flows.

Method (characteristics, i.e. semi-Lagrangian in time-of-flight form). In a steady velocity field
with pure advection the exact solution is c(x, t) = c_in(t - τ(x)), where τ(x) is the travel time
from the inlet plane to x along the streamline: u·∇τ = 1, τ = 0 on the inlet. A warp kernel
computes τ once per lumen voxel by tracing the streamline backwards (midpoint RK2, steps of
``step_frac`` voxels, trilinear velocity) until it crosses the inlet plane; every frame then costs
one evaluation of c_in. Fluid that does not reach the inlet within ``max_time_s`` (the slow layer at
the wall) gets τ = inf, c = 0.

Diffusion: D = 0 in the solver. Iodine in blood has D ≈ 5e-4 mm²/s (Pe ~ 1e5, DESIGN.md §5); over a
4 s run its diffusion length sqrt(2Dt) ≈ 0.06 mm is below the 0.1 mm voxel. The only smoothing is
the numerical one of trilinear interpolation, of order one voxel, reported in the truth metadata.
"""
from __future__ import annotations

import math

import numpy as np

from ..laws import gamma_variate

_wp = None


def _warp():
    global _wp
    if _wp is None:
        import warp as wp

        wp.config.quiet = True
        wp.init()
        _wp = wp
        _build_kernels(wp)
    return _wp


_kernels: dict = {}


def _build_kernels(wp) -> None:
    @wp.func
    def trilinear(vel: wp.array4d(dtype=wp.float32), origin: wp.vec3, inv_h: wp.vec3, x: wp.vec3) -> wp.vec3:
        g = wp.cw_mul(x - origin, inv_h)
        nx, ny, nz = vel.shape[0], vel.shape[1], vel.shape[2]
        i0 = int(wp.floor(g[0]))
        j0 = int(wp.floor(g[1]))
        k0 = int(wp.floor(g[2]))
        fx = g[0] - float(i0)
        fy = g[1] - float(j0)
        fz = g[2] - float(k0)
        out = wp.vec3(0.0, 0.0, 0.0)
        for di in range(2):
            for dj in range(2):
                for dk in range(2):
                    i = i0 + di
                    j = j0 + dj
                    k = k0 + dk
                    if i >= 0 and j >= 0 and k >= 0 and i < nx and j < ny and k < nz:
                        w = (fx if di == 1 else 1.0 - fx) * (fy if dj == 1 else 1.0 - fy) * (fz if dk == 1 else 1.0 - fz)
                        out = out + w * wp.vec3(vel[i, j, k, 0], vel[i, j, k, 1], vel[i, j, k, 2])
        return out

    @wp.kernel
    def travel_time_kernel(vel: wp.array4d(dtype=wp.float32), origin: wp.vec3, inv_h: wp.vec3,
                           pts: wp.array(dtype=wp.vec3), inlet_p: wp.vec3, inlet_d: wp.vec3,
                           step_mm: float, max_time: float, max_steps: int, tau: wp.array(dtype=wp.float32)):
        tid = wp.tid()
        x = pts[tid]
        t = float(0.0)
        a = wp.dot(x - inlet_p, inlet_d)
        result = float(1.0e30)
        if a <= 0.0:
            result = 0.0
        else:
            for it in range(max_steps):
                u = trilinear(vel, origin, inv_h, x)
                speed = wp.length(u)
                if speed < 1.0e-6:
                    break
                dt = step_mm / speed
                um = trilinear(vel, origin, inv_h, x - 0.5 * dt * u)
                xn = x - dt * um
                b = wp.dot(xn - inlet_p, inlet_d)
                if b <= 0.0:
                    result = t + dt * a / (a - b)  # crossed the inlet plane within this step
                    break
                x = xn
                a = b
                t = t + dt
                if t > max_time:
                    break
        tau[tid] = result

    _kernels["travel_time"] = travel_time_kernel


def travel_time(vel: np.ndarray,  # [X, Y, Z, 3] mm/s on the flow grid
                origin_mm, spacing_mm: float,
                points_mm: np.ndarray,  # [M, 3] where τ is wanted
                inlet_point_mm, inlet_dir, step_frac: float = 0.5, max_time_s: float = 30.0,
                device: str = "cpu") -> np.ndarray:
    """Travel time τ [M] (s) from the inlet plane to each point along the (steady) streamlines;
    inf where the streamline does not reach the inlet within max_time_s."""
    wp = _warp()
    d = np.asarray(inlet_dir, float)
    d = d / np.linalg.norm(d)
    step = step_frac * spacing_mm
    # enough steps to cross the grid diagonal at the local speed, plus slack for slow fluid
    max_steps = int(4 * math.sqrt(sum(n * n for n in vel.shape[:3])) / step_frac) + 100
    out = wp.zeros(len(points_mm), dtype=wp.float32, device=device)
    wp.launch(_kernels["travel_time"], dim=len(points_mm), device=device, inputs=[
        wp.array(np.ascontiguousarray(vel, dtype=np.float32), dtype=wp.float32, device=device),
        wp.vec3(*map(float, origin_mm)), wp.vec3(*(1.0 / spacing_mm,) * 3),
        wp.array(np.ascontiguousarray(points_mm, dtype=np.float32), dtype=wp.vec3, device=device),
        wp.vec3(*map(float, inlet_point_mm)), wp.vec3(*map(float, d)), float(step), float(max_time_s),
        int(max_steps), out])
    tau = out.numpy()
    tau[tau > 1e29] = np.inf
    return tau


def concentration(tau_s: np.ndarray, t_s: float, bolus: dict) -> np.ndarray:
    """c(x, t) = c_in(t - τ(x)); τ = inf gives 0."""
    return gamma_variate(t_s - tau_s, **bolus).astype(np.float32)


def fill_unreached(points_mm: np.ndarray,  # [M, 3]
                   tau_s: np.ndarray,  # [M] from travel_time, inf where the streamline never reaches the inlet
                   d_mix_mm2_s: float = 10.0, k: int = 16) -> tuple[np.ndarray, int]:
    """Arrival times for fluid that advection alone never reaches (closed streamlines: the
    recirculation behind a stenosis, the stagnant layer at the wall).

    A steady laminar solution traps fluid in recirculation zones forever; in a real artery the
    pulsatile, partly unsteady flow mixes contrast into them within a beat or two, and DSA shows
    the post-stenotic lumen filled. We model that exchange as diffusion with an effective mixing
    diffusivity D_mix (default 10 mm²/s, an eddy value, 2e4 × iodine's molecular D): an unreached
    point x gets τ(x) = min over reached points y (its k nearest) of τ(y) + |x − y|²/(2 D_mix).
    Returns (τ [M], how many points were filled). The truth metadata records D_mix.
    """
    tau = np.asarray(tau_s, np.float64).copy()
    bad = ~np.isfinite(tau)
    ok = ~bad
    if not bad.any() or not ok.any():
        return tau.astype(np.float32), 0
    from scipy.spatial import cKDTree

    tree = cKDTree(points_mm[ok])
    kk = min(k, int(ok.sum()))
    d, j = tree.query(points_mm[bad], k=kk)
    d, j = d.reshape(len(d), kk), j.reshape(len(j), kk)
    tau[bad] = (tau[ok][j] + d ** 2 / (2.0 * d_mix_mm2_s)).min(1)
    return tau.astype(np.float32), int(bad.sum())
