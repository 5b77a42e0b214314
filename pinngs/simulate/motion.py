"""Cardiac motion for the simulator: a periodic, smooth, non-rigid displacement of the phantom, and
the ECG that times it.

    m = CardiacMotion(amplitude_mm=5.0, heart_rate_bpm=72.0)
    d = m.displacement(points_mm, t_s, centre_mm, axis)   # [P, 3] mm
    t, ecg = m.ecg(0.0, 2.0)                               # lead II, mV, 500 Hz

The heart beats with R waves at ``first_r_s + k · 60 / heart_rate_bpm``. The cardiac phase φ ∈ [0, 1)
is the time since the last R wave over the R-R interval; the motion profile s(φ) = sin²(πφ) is 0 at
the R wave (end-diastole: the reference geometry, the one in ``truth/lumen.npz``), largest in
mid-cycle, and smooth. The displacement of a point x is

    d(x, t) = s(φ(t)) · [A ê + B sin(2π ((x − c)·â) / λ) n̂]

with A = ``amplitude_mm`` along ``direction`` ê (a translation of the whole vessel), and a bending wave
of amplitude B = ``bend_mm`` and wavelength λ along the vessel's axis â, normal to both (n̂ = â × ê
normalised): the vessel moves and bends, so no rigid transform (no moved camera) can undo it. The
amplitudes of coronary motion in the literature are 3–8 mm per beat.

The ECG is synthetic (P, QRS, T waves as Gaussians at their usual offsets from the R wave), for the
product's R-peak detection and gating (``pinngs.io.ecg``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CardiacMotion:
    amplitude_mm: float = 5.0
    heart_rate_bpm: float = 72.0
    direction: tuple[float, float, float] = (1.0, 0.4, 0.0)
    bend_mm: float = 1.0
    wavelength_mm: float = 30.0
    first_r_s: float = 0.05

    @property
    def rr_s(self) -> float:
        return 60.0 / self.heart_rate_bpm

    def r_waves(self, t0_s: float, t1_s: float) -> np.ndarray:
        """R-wave times (s) within [t0_s, t1_s]."""
        k0 = math.ceil((t0_s - self.first_r_s) / self.rr_s)
        k1 = math.floor((t1_s - self.first_r_s) / self.rr_s)
        return self.first_r_s + self.rr_s * np.arange(k0, k1 + 1)

    def phase(self, t_s) -> np.ndarray:
        return np.mod((np.asarray(t_s, float) - self.first_r_s) / self.rr_s, 1.0)

    def profile(self, t_s) -> np.ndarray:
        """s(φ(t)) in [0, 1]: 0 at end-diastole (the R waves)."""
        return np.sin(math.pi * self.phase(t_s)) ** 2

    def displacement(self, points_mm: np.ndarray, t_s: float, centre_mm, axis) -> np.ndarray:
        """[P, 3] displacement (mm) of points [P, 3] at time t_s (module docstring); ``centre_mm`` and
        ``axis`` (the vessel's, any length) place the bending wave."""
        e = np.asarray(self.direction, float)
        e /= np.linalg.norm(e)
        a = np.asarray(axis, float)
        a /= np.linalg.norm(a)
        n = np.cross(a, e)
        n = n / np.linalg.norm(n) if np.linalg.norm(n) > 1e-9 else np.cross(a, [0.0, 0.0, 1.0])
        s = float(self.profile(t_s))
        u = (np.asarray(points_mm, float) - np.asarray(centre_mm, float)) @ a
        return s * (self.amplitude_mm * e[None] + self.bend_mm * np.sin(2 * math.pi * u / self.wavelength_mm)[:, None]
                    * n[None])

    def max_displacement_mm(self) -> float:
        return self.amplitude_mm + abs(self.bend_mm)

    def ecg(self, t0_s: float, t1_s: float, fs: float = 500.0, noise_mv: float = 0.02,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(t [S] s, lead II [S] mV) from ``t0_s`` to ``t1_s``: P, QRS, T per beat, small noise."""
        t = t0_s + np.arange(int(round((t1_s - t0_s) * fs)) + 1) / fs
        x = np.zeros_like(t)
        for r in self.r_waves(t0_s - 1.0, t1_s + 1.0):
            for amp, dt, w in ((0.15, -0.16, 0.025), (-0.1, -0.03, 0.008), (1.1, 0.0, 0.011), (-0.25, 0.035, 0.01),
                               (0.3, 0.28, 0.05)):
                x += amp * np.exp(-0.5 * ((t - r - dt) / w) ** 2)
        if rng is not None and noise_mv > 0:
            x = x + noise_mv * rng.standard_normal(len(t))
        return t, x

    def as_dict(self) -> dict:
        return asdict(self)


def splat(values: np.ndarray, points_mm: np.ndarray, origin_mm, spacing_mm: float, shape) -> np.ndarray:
    """[X, Y, Z] grid of ``values`` [P] deposited trilinearly at ``points_mm`` [P, 3] (each value split
    over the 8 voxels around its point, so the sum is kept); points outside the grid are dropped."""
    g = (np.asarray(points_mm, float) - np.asarray(origin_mm, float)) / spacing_mm
    i0 = np.floor(g).astype(np.int64)
    f = g - i0
    out = np.zeros(int(np.prod(shape)), np.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                idx = i0 + np.array([dx, dy, dz])
                w = (np.where(dx, f[:, 0], 1 - f[:, 0]) * np.where(dy, f[:, 1], 1 - f[:, 1])
                     * np.where(dz, f[:, 2], 1 - f[:, 2]))
                ok = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
                flat = np.ravel_multi_index(idx[ok].T, shape)
                out += np.bincount(flat, weights=values[ok] * w[ok], minlength=out.size)
    return out.reshape(shape).astype(np.float32)
