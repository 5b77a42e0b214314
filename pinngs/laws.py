"""Closed forms that the product and the simulator both use (units: mm, s, g; pressure in Pa).

* ``poiseuille_velocity`` / ``poiseuille_dp_pa``: steady fully developed flow in a rigid tube.
* ``womersley_velocity`` / ``womersley_flow_rate``: fully developed oscillatory flow driven by
  -dp/dz = Re{A e^{i omega t}} (Womersley 1955).
* ``young_tsai_dp_pa``: empirical steady pressure drop across a stenosis (Young & Tsai 1973,
  Seeley & Young 1976).
* ``gamma_variate``: the first-pass contrast bolus c_in(t).
"""
from __future__ import annotations

import numpy as np
from scipy.special import jv

from .units import MU_BLOOD_PA_S, PA_AORTIC_MMHG, PA_PER_MMHG, RHO_BLOOD_G_MM3

_I32 = np.exp(0.75j * np.pi)  # i^{3/2}


def poiseuille_velocity(r_mm, radius_mm: float, q_mm3_s: float):
    """Axial velocity (mm/s) of Poiseuille flow, u(r) = 2 U (1 - r^2/R^2), U = Q/(pi R^2).

    Zero outside the tube (r > R)."""
    r = np.asarray(r_mm, dtype=float)
    u_mean = q_mm3_s / (np.pi * radius_mm ** 2)
    return np.where(np.abs(r) <= radius_mm, 2.0 * u_mean * (1.0 - (r / radius_mm) ** 2), 0.0)


def poiseuille_dp_pa(length_mm: float, radius_mm: float, q_mm3_s: float, mu: float = MU_BLOOD_PA_S):
    """Poiseuille pressure drop (Pa) over a length: 8 mu L Q / (pi R^4)."""
    return 8.0 * mu * length_mm * q_mm3_s / (np.pi * radius_mm ** 4)


def womersley_number(radius_mm: float, omega_rad_s: float, rho: float = RHO_BLOOD_G_MM3, mu: float = MU_BLOOD_PA_S):
    """alpha = R sqrt(omega rho / mu) (dimensionless)."""
    return radius_mm * np.sqrt(omega_rad_s * rho / mu)


def womersley_velocity(r_mm, t_s, radius_mm: float, grad_amp_pa_per_mm, omega_rad_s: float,
                       rho: float = RHO_BLOOD_G_MM3, mu: float = MU_BLOOD_PA_S):
    """Womersley axial velocity (mm/s) for -dp/dz = Re{A e^{i omega t}}, A = ``grad_amp_pa_per_mm``.

    u(r, t) = Re{ A/(i rho omega) [1 - J0(i^{3/2} alpha r/R) / J0(i^{3/2} alpha)] e^{i omega t} },
    alpha = R sqrt(omega rho/mu).  ``r_mm`` and ``t_s`` broadcast against each other.  A may be
    complex (phase).  For alpha >~ 30 the Bessel functions overflow; this is meant for the
    physiological range (alpha ~ 1-20).
    """
    if omega_rad_s <= 0:
        raise ValueError("omega_rad_s must be > 0 (use poiseuille_velocity for steady flow)")
    r, t = np.broadcast_arrays(np.asarray(r_mm, dtype=float), np.asarray(t_s, dtype=float))
    alpha = womersley_number(radius_mm, omega_rad_s, rho, mu)
    k = _I32 * alpha
    shape = 1.0 - jv(0, k * r / radius_mm) / jv(0, k)
    u = np.real(grad_amp_pa_per_mm / (1j * rho * omega_rad_s) * shape * np.exp(1j * omega_rad_s * t))
    return np.where(np.abs(r) <= radius_mm, u, 0.0)


def womersley_flow_rate(t_s, radius_mm: float, grad_amp_pa_per_mm, omega_rad_s: float,
                        rho: float = RHO_BLOOD_G_MM3, mu: float = MU_BLOOD_PA_S):
    """Womersley flow rate (mm^3/s):
    Q(t) = Re{ pi R^2 A/(i rho omega) [1 - 2 J1(i^{3/2} alpha) / (i^{3/2} alpha J0(i^{3/2} alpha))] e^{i omega t} }.
    """
    if omega_rad_s <= 0:
        raise ValueError("omega_rad_s must be > 0")
    t = np.asarray(t_s, dtype=float)
    alpha = womersley_number(radius_mm, omega_rad_s, rho, mu)
    k = _I32 * alpha
    fac = 1.0 - 2.0 * jv(1, k) / (k * jv(0, k))
    return np.real(np.pi * radius_mm ** 2 * grad_amp_pa_per_mm / (1j * rho * omega_rad_s) * fac
                   * np.exp(1j * omega_rad_s * t))


def young_tsai_dp_pa(q_mm3_s, r0_mm: float, rs_mm: float, ls_mm: float, rho: float = RHO_BLOOD_G_MM3,
                     mu: float = MU_BLOOD_PA_S, kt: float = 1.52, kv: float | None = None):
    """Steady Young-Tsai pressure drop (Pa) across an axisymmetric stenosis.

    dP = (K_v mu / (A0 D0)) Q + (K_t rho / (2 A0^2)) (A0/As - 1)^2 Q |Q|

    with A0 = pi r0^2 (unobstructed), As = pi rs^2 (throat), D0 = 2 r0, and by default
    K_v = 32 (0.83 L_s + 1.64 D_s) / D0 * (A0/As)^2, D_s = 2 rs, K_t = 1.52.

    Sources: D. F. Young and F. Y. Tsai, "Flow characteristics in models of arterial stenoses.
    I. Steady flow", J. Biomech. 6 (1973) 395-410; B. D. Seeley and D. F. Young, "Effect of
    geometry on pressure losses across models of arterial stenoses", J. Biomech. 9 (1976) 439-448
    (the K_v correlation above and K_t = 1.52).  It is an empirical fit to experiments on a family of
    stenosis shapes: expect agreement within tens of percent, not a match.  It covers the loss
    of the stenosis only (no viscous loss of the unobstructed tube around it).
    """
    q = np.asarray(q_mm3_s, dtype=float)
    a0 = np.pi * r0_mm ** 2
    a_s = np.pi * rs_mm ** 2
    d0 = 2.0 * r0_mm
    if kv is None:
        kv = 32.0 * (0.83 * ls_mm + 1.64 * 2.0 * rs_mm) / d0 * (a0 / a_s) ** 2
    return kv * mu / (a0 * d0) * q + kt * rho / (2.0 * a0 ** 2) * (a0 / a_s - 1.0) ** 2 * q * np.abs(q)


def gamma_variate(t_s, t0_s: float = 0.2, alpha: float = 3.0, beta_s: float = 0.25) -> np.ndarray:
    """Inlet bolus c_in(t) = ((t - t0)/(αβ))^α exp(α - (t - t0)/β) for t > t0, else 0: peak 1 at
    t = t0 + αβ (the classic gamma-variate first-pass model)."""
    t = np.asarray(t_s, dtype=np.float64) - t0_s
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        x = np.where(t > 0, t / (alpha * beta_s), 0.0)
        c = np.where(t > 0, x ** alpha * np.exp(alpha * (1.0 - x)), 0.0)
    return np.nan_to_num(c, nan=0.0, posinf=0.0)


def ffr(dp_pa: float, pa_mmhg: float = PA_AORTIC_MMHG) -> float:
    """FFR ≈ (Pa − ΔP) / Pa with the mean aortic pressure Pa (default 93 mmHg, DESIGN.md §5)."""
    if not pa_mmhg > 0:
        raise ValueError(f"Pa must be positive, got {pa_mmhg} mmHg")
    return (pa_mmhg - dp_pa / PA_PER_MMHG) / pa_mmhg
