"""One scales object for the PINN's non-dimensional variables (DESIGN.md §4).

Internal units are mm, s, g, so pressure is in Pa. With a length L (mm), velocity U (mm/s) and time
T (s), the non-dimensional variables are x* = (x - x0)/L, t* = t/T, u* = u/U, p* = p/(ρU²), and the
equations the residuals enforce read

    St ∂c/∂t* + u*·∇*c = (1/Pe) ∇*²c                     Pe = U L / D
    St ∂u*/∂t* + (u*·∇*)u* = −∇*p* + (1/Re) ∇*²u*         Re = ρ U L / μ
    ∇*·u* = 0                                             St = L / (U T)

and for a pulsatile flow of angular frequency ω the Womersley number is α = L sqrt(ω ρ / μ).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..units import MU_BLOOD_PA_S, RHO_BLOOD_G_MM3


@dataclass(frozen=True)
class Scales:
    length_mm: float  # L
    velocity_mm_s: float  # U
    time_s: float  # T
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # x0
    rho_g_mm3: float = RHO_BLOOD_G_MM3
    mu_pa_s: float = MU_BLOOD_PA_S
    diffusivity_mm2_s: float = 0.0  # D of the transport equation (numerical; reported)
    omega_rad_s: float | None = None  # pulsation, for the Womersley number

    def __post_init__(self) -> None:
        for name in ("length_mm", "velocity_mm_s", "time_s", "rho_g_mm3", "mu_pa_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"Scales.{name} must be a positive finite number, got {v!r}")
        if not (math.isfinite(self.diffusivity_mm2_s) and self.diffusivity_mm2_s >= 0):
            raise ValueError(f"Scales.diffusivity_mm2_s must be >= 0, got {self.diffusivity_mm2_s!r}")
        if len(self.origin_mm) != 3:
            raise ValueError(f"Scales.origin_mm must have 3 entries, got {self.origin_mm!r}")

    @classmethod
    def for_vessel(cls, radius_mm: float, velocity_mm_s: float, origin_mm=(0.0, 0.0, 0.0), time_s: float | None = None,
                   **kw) -> "Scales":
        """L = the vessel radius, U = a typical (mean) velocity, T = L/U unless given."""
        T = time_s if time_s is not None else radius_mm / velocity_mm_s
        return cls(float(radius_mm), float(velocity_mm_s), float(T), tuple(float(v) for v in origin_mm), **kw)

    # dimensionless groups
    @property
    def pressure_pa(self) -> float:  # ρ U²
        return self.rho_g_mm3 * self.velocity_mm_s ** 2

    @property
    def nu_mm2_s(self) -> float:
        return self.mu_pa_s / self.rho_g_mm3

    @property
    def Re(self) -> float:
        return self.velocity_mm_s * self.length_mm / self.nu_mm2_s

    @property
    def Pe(self) -> float:  # inf for pure advection
        return math.inf if self.diffusivity_mm2_s == 0 else self.velocity_mm_s * self.length_mm / self.diffusivity_mm2_s

    @property
    def St(self) -> float:
        return self.length_mm / (self.velocity_mm_s * self.time_s)

    @property
    def womersley(self) -> float | None:
        return None if self.omega_rad_s is None else self.length_mm * math.sqrt(self.omega_rad_s / self.nu_mm2_s)

    # conversions; xt is [N, 4] (x, y, z in mm, t in s), outputs [N, 5] (c, u, v, w, p)
    def nondim_xt(self, xt_mm_s):
        o = torch.as_tensor(self.origin_mm, dtype=xt_mm_s.dtype, device=xt_mm_s.device) if torch.is_tensor(xt_mm_s) \
            else np.asarray(self.origin_mm)
        return _cat(xt_mm_s[..., :3] - o, xt_mm_s[..., 3:4], self.length_mm, self.time_s)

    def dim_xt(self, xt):
        o = torch.as_tensor(self.origin_mm, dtype=xt.dtype, device=xt.device) if torch.is_tensor(xt) \
            else np.asarray(self.origin_mm)
        return _cat(xt[..., :3] * self.length_mm + o, xt[..., 3:4] * self.time_s, 1.0, 1.0)

    def dim_fields(self, f):
        """[N, 5] non-dimensional (c, u*, v*, w*, p*) -> (c, u, v, w in mm/s, p in Pa)."""
        s = [1.0, self.velocity_mm_s, self.velocity_mm_s, self.velocity_mm_s, self.pressure_pa]
        s = torch.as_tensor(s, dtype=f.dtype, device=f.device) if torch.is_tensor(f) else np.asarray(s)
        return f * s

    def nondim_fields(self, f):
        s = [1.0, self.velocity_mm_s, self.velocity_mm_s, self.velocity_mm_s, self.pressure_pa]
        s = torch.as_tensor(s, dtype=f.dtype, device=f.device) if torch.is_tensor(f) else np.asarray(s)
        return f / s

    def to_dict(self) -> dict:
        return dict(length_mm=self.length_mm, velocity_mm_s=self.velocity_mm_s, time_s=self.time_s,
                    origin_mm=list(self.origin_mm), rho_g_mm3=self.rho_g_mm3, mu_pa_s=self.mu_pa_s,
                    diffusivity_mm2_s=self.diffusivity_mm2_s, omega_rad_s=self.omega_rad_s,
                    Re=self.Re, Pe=None if math.isinf(self.Pe) else self.Pe, St=self.St, womersley=self.womersley)


def _cat(x, t, L, T):
    if torch.is_tensor(x):
        return torch.cat([x / L, t / T], dim=-1)
    return np.concatenate([x / L, t / T], axis=-1)
