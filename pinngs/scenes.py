"""Built-in vessel-like Gaussian scenes, for the demo and the benchmarks.

A small coronary-like tree: a curved main vessel with a focal narrowing and two side branches,
each a chain of elongated Gaussians aligned with the local tangent. Sizes are those of coronary
lumens (radius 0.8-1.8 mm) within a ~80 mm field around the isocentre.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .field import GaussianField


def _quat_from_x_to(t: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) [P, 4] rotating +x onto the unit tangents t [P, 3]."""
    x = np.array([1.0, 0.0, 0.0])
    axis = np.cross(x, t)
    w = 1.0 + t @ x
    q = np.concatenate([w[:, None], axis], axis=1)
    bad = w < 1e-8  # t = -x: rotate 180° about z
    q[bad] = np.array([0.0, 0.0, 0.0, 1.0])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _branch(p0, p1, bend, r0, r1, n, stenosis=None):
    """Points, tangents and radii of a quadratic Bézier vessel from p0 to p1."""
    p0, p1, bend = map(np.asarray, (p0, p1, bend))
    c = 0.5 * (p0 + p1) + bend
    s = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * c + s ** 2 * p1
    tan = 2 * (1 - s) * (c - p0) + 2 * s * (p1 - c)
    tan /= np.linalg.norm(tan, axis=1, keepdims=True)
    r = r0 + (r1 - r0) * s[:, 0]
    if stenosis is not None:  # (position in [0, 1], severity in [0, 1), half-width in [0, 1])
        pos, sev, hw = stenosis
        r = r * (1 - sev * np.exp(-0.5 * ((s[:, 0] - pos) / hw) ** 2))
    return pts, tan, r


def vessel_tree(n_gaussians: int = 2000, seed: int = 0, atten_per_mm: float = 0.02) -> GaussianField:
    """A coronary-like tree of about ``n_gaussians`` Gaussians (see module docstring).

    Gaussians per cross-section ring are spread over the lumen so the field fills a tube of the
    given radius; the exact count is ``n_gaussians`` rounded to whole rings.
    """
    if n_gaussians < 30:
        raise ValueError(f"vessel_tree needs at least 30 Gaussians, got {n_gaussians}")
    rng = np.random.default_rng(seed)
    branches = [
        dict(p0=(-35, -5, 30), p1=(30, 10, -35), bend=(5, 15, 5), r0=1.8, r1=1.2, stenosis=(0.45, 0.5, 0.05)),
        dict(p0=(-8, 2, 8), p1=(-30, 0, -30), bend=(-8, -10, 0), r0=1.2, r1=0.8),
        dict(p0=(10, 8, -12), p1=(35, -15, -5), bend=(0, 5, 8), r0=1.1, r1=0.8),
    ]
    lengths = [np.linalg.norm(np.subtract(b["p1"], b["p0"])) for b in branches]
    per_ring = 6
    rings = max(int(n_gaussians / per_ring), 3 * len(branches))
    means, scales, quats = [], [], []
    for b, L in zip(branches, lengths):
        n = max(3, int(round(rings * L / sum(lengths))))
        pts, tan, r = _branch(b["p0"], b["p1"], b["bend"], b["r0"], b["r1"], n, b.get("stenosis"))
        step = L / (n - 1)
        # two unit normals per point
        a = np.where(np.abs(tan[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
        n1 = np.cross(tan, a); n1 /= np.linalg.norm(n1, axis=1, keepdims=True)
        n2 = np.cross(tan, n1)
        q = _quat_from_x_to(tan)
        for k in range(per_ring):
            ang = 2 * math.pi * k / per_ring + rng.uniform(0, 0.3)
            off = 0.55 * r[:, None] * (math.cos(ang) * n1 + math.sin(ang) * n2)
            means.append(pts + off)
            scales.append(np.stack([np.full(n, 0.8 * step), 0.45 * r, 0.45 * r], axis=1))
            quats.append(q)
    means = np.concatenate(means); scales = np.concatenate(scales); quats = np.concatenate(quats)
    return GaussianField(torch.tensor(means, dtype=torch.float32), torch.tensor(scales, dtype=torch.float32),
                         torch.tensor(quats, dtype=torch.float32),
                         torch.full((len(means),), atten_per_mm))


def random_vessel_cloud(n: int, seed: int = 0, spread_mm: float = 40.0) -> GaussianField:
    """n Gaussians of vessel-like size (σ 0.2-1.5 mm, elongated up to 4:1) spread along random
    curved segments in a ``spread_mm`` box: a scalable stand-in for a fitted lumen (benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    n_seg = max(1, n // 200)
    t = torch.rand(n, generator=g)
    seg = torch.randint(0, n_seg, (n,), generator=g)
    a, b, c = (torch.rand(n_seg, 3, generator=g) - 0.5) * 2 * spread_mm, \
              (torch.rand(n_seg, 3, generator=g) - 0.5) * 2 * spread_mm, \
              (torch.rand(n_seg, 3, generator=g) - 0.5) * spread_mm
    tt = t[:, None]
    centre = (1 - tt) ** 2 * a[seg] + 2 * (1 - tt) * tt * c[seg] + tt ** 2 * b[seg]
    means = centre + torch.randn(n, 3, generator=g) * 0.8
    sig = 0.2 + 1.3 * torch.rand(n, 1, generator=g)
    scales = sig * torch.cat([1 + 3 * torch.rand(n, 1, generator=g), torch.ones(n, 2)], 1)
    quats = torch.randn(n, 4, generator=g)
    return GaussianField(means, scales, quats, torch.full((n,), 0.02))
