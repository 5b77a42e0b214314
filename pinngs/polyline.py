"""Polylines: arc length, resampling, smoothing, tangents and section bases (world mm).

Centerline branches are arrays [P, D] whose first three columns are X, Y, Z; the rest (a radius,
an area) are carried along by ``resample`` and ``smooth``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


def arc_length(xyz: np.ndarray) -> np.ndarray:
    """Cumulative arc length [P] of a polyline [P, 3]."""
    if len(xyz) < 2:
        return np.zeros(len(xyz))
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz, axis=0), axis=1))])


def resample(x: np.ndarray, step: float) -> np.ndarray:
    """Polyline x [P, D] (first 3 columns are xyz) resampled at uniform arc-length steps."""
    s = arc_length(x[:, :3])
    if s[-1] <= 0 or len(x) < 2:
        return x.copy()
    n = max(2, int(math.ceil(s[-1] / step)) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, x[:, k]) for k in range(x.shape[1])], axis=1)


def smooth(x: np.ndarray, sigma_pts: float, pin_start: bool, pin_end: bool) -> np.ndarray:
    """Gaussian smoothing of x [P, D] along its first axis. A pinned end is padded by odd reflection
    (2 x0 - x[k]), which keeps the end point and any linear trend there; a free end by even
    reflection."""
    n = len(x)
    if n < 3 or sigma_pts <= 0:
        return x.copy()
    pad = min(n - 1, int(4 * sigma_pts) + 1)
    head = x[pad:0:-1]
    tail = x[-2:-pad - 2:-1]
    head = 2 * x[0] - head if pin_start else head
    tail = 2 * x[-1] - tail if pin_end else tail
    y = ndi.gaussian_filter1d(np.concatenate([head, x, tail]), sigma_pts, axis=0, mode="nearest")[pad:pad + n]
    if pin_start:
        y[0] = x[0]
    if pin_end:
        y[-1] = x[-1]
    return y


def tangents(xyz: np.ndarray) -> np.ndarray:
    """Unit tangents [P, 3] of a polyline [P, 3] (central differences; +z for a single point)."""
    t = np.gradient(xyz, axis=0) if len(xyz) > 1 else np.array([[0.0, 0.0, 1.0]])
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def plane_basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (u, w) [3] that span the plane normal to the unit vector t [3]."""
    a = np.array([1.0, 0.0, 0.0]) if abs(t[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(t, a)
    u /= np.linalg.norm(u)
    return u, np.cross(t, u)


def disc_points(branch: np.ndarray, arc_mm: float, radius_mm: float, h_mm: float = 0.05
                ) -> tuple[np.ndarray, np.ndarray]:
    """Points [S, 3] on a square grid of spacing ``h_mm`` covering a disc of ``radius_mm`` normal to a
    polyline ([P, >= 3], first columns X, Y, Z) at arc length ``arc_mm``, and their areas [S] (mm²)."""
    b = np.asarray(branch, float)
    s = arc_length(b[:, :3])
    c = np.array([np.interp(arc_mm, s, b[:, j]) for j in range(3)])
    return disc_at(c, tangents(b[:, :3])[int(np.argmin(np.abs(s - arc_mm)))], radius_mm, h_mm)


def disc_at(centre_mm, normal, radius_mm: float, h_mm: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``disc_points`` for a disc given by its centre [3] and unit normal [3] (mm)."""
    c = np.asarray(centre_mm, float)
    u, w = plane_basis(np.asarray(normal, float))
    g = np.arange(-radius_mm, radius_mm + 1e-9, h_mm)
    X, Y = np.meshgrid(g, g, indexing="ij")
    disc = X * X + Y * Y <= radius_mm * radius_mm
    return c + X[disc][:, None] * u + Y[disc][:, None] * w, np.full(int(disc.sum()), h_mm * h_mm)
