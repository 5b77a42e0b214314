"""Error metrics of a flow against a reference (issue 6).

All arrays are over the reference's lumen points: velocity [N, 3] (mm/s), pressure [N] (Pa).

* velocity rel-L2   : ||u - u_ref||_2 / ||u_ref||_2 over all points and components.
* velocity nRMSE    : Hidden Fluid Mechanics (Raissi et al., Science 367:1026, 2020) normalises the
                      RMSE by the standard deviation of the truth. For a vector field we use the
                      pooled (vector) form: sqrt(mean_i |u_i - u_ref,i|²) / sqrt(mean_i |u_ref,i - ū_ref|²),
                      i.e. the RMSE of the vector error over the total standard deviation of the
                      reference field (frame-invariant; per-component nRMSE blows up on the near-zero
                      radial components of an axial flow).
* pressure nRMSE    : the same on p - mean(p) against p_ref - mean(p_ref) (HFM: pressure is known only
                      up to a constant, so its mean is removed before comparing).
* ΔP error %        : 100 (ΔP / ΔP_ref - 1).
* FFR abs. error    : |FFR(ΔP) - FFR(ΔP_ref)|, FFR = (Pa - ΔP)/Pa (pinngs.laws.ffr).
* flow-rate error % : 100 (Q / Q_ref - 1).
"""
from __future__ import annotations

import numpy as np


def _finite(*arrs):
    ok = np.ones(len(arrs[0]), bool)
    for a in arrs:
        a = np.asarray(a, float)
        ok &= np.isfinite(a.reshape(len(a), -1)).all(1)
    return ok


def velocity_rel_l2(u, u_ref) -> float:
    """||u - u_ref|| / ||u_ref|| (u, u_ref [N, 3]); points where either is not finite are left out."""
    u, u_ref = np.asarray(u, float), np.asarray(u_ref, float)
    ok = _finite(u, u_ref)
    return float(np.linalg.norm(u[ok] - u_ref[ok]) / np.linalg.norm(u_ref[ok]))


def nrmse(x, x_ref, remove_mean: bool = False) -> float:
    """HFM nRMSE, RMSE / std of the truth, for scalars [N] or vectors [N, D] (pooled over components:
    sqrt(mean |x - x_ref|²) / sqrt(mean |x_ref - mean(x_ref)|²)). ``remove_mean``: compare x - mean(x)
    with x_ref - mean(x_ref) (pressure)."""
    x, x_ref = np.asarray(x, float), np.asarray(x_ref, float)
    if x.ndim == 1:
        x, x_ref = x[:, None], x_ref[:, None]
    ok = _finite(x, x_ref)
    x, x_ref = x[ok], x_ref[ok]
    if remove_mean:
        x = x - x.mean(0)
        x_ref = x_ref - x_ref.mean(0)
    rmse = np.sqrt(np.mean(np.sum((x - x_ref) ** 2, axis=1)))
    std = np.sqrt(np.mean(np.sum((x_ref - x_ref.mean(0)) ** 2, axis=1)))
    return float(rmse / std)


def percent_error(x: float, x_ref: float) -> float:
    return float(100.0 * (x / x_ref - 1.0))


def ffr_abs_error(dp_pa: float, dp_ref_pa: float, pa_mmhg: float) -> float:
    from pinngs.laws import ffr

    return float(abs(ffr(dp_pa, pa_mmhg) - ffr(dp_ref_pa, pa_mmhg)))


def all_metrics(u, p, u_ref, p_ref, dp_pa, dp_ref_pa, q_mm3_s, q_ref_mm3_s, pa_mmhg: float) -> dict:
    """The five figures of issue 6 (None where a method gives no field, e.g. Young–Tsai)."""
    from pinngs.laws import ffr

    return {
        "velocity_rel_l2": None if u is None else velocity_rel_l2(u, u_ref),
        "velocity_nrmse": None if u is None else nrmse(u, u_ref),
        "pressure_nrmse": None if p is None else nrmse(p, p_ref, remove_mean=True),
        "dp_pa": float(dp_pa), "dp_ref_pa": float(dp_ref_pa),
        "dp_error_percent": percent_error(dp_pa, dp_ref_pa),
        "ffr": float(ffr(dp_pa, pa_mmhg)), "ffr_ref": float(ffr(dp_ref_pa, pa_mmhg)),
        "ffr_abs_error": ffr_abs_error(dp_pa, dp_ref_pa, pa_mmhg),
        "q_error_percent": None if q_mm3_s is None else percent_error(q_mm3_s, q_ref_mm3_s),
    }
