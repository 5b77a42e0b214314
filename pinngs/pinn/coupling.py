"""Coupling of the Gaussian lumen to the PINN: a_i(t) = a_i · c(m_i, t) (DESIGN.md §5).

The per-view attenuation this returns goes straight into ``render_views(field, views, atten=...)``,
so the rendered frames depend on both the Gaussians (means, attenuation) and the MLP, and one loss on
the frames trains both.
"""
from __future__ import annotations

import torch

from ..field import GaussianField
from .scales import Scales


def coupled_attenuation(field: GaussianField, model, scales: Scales, times_s) -> torch.Tensor:
    """[F, N] attenuation (mm⁻¹) of every Gaussian at each of F frame times: a_i · c(m_i, t_f)."""
    t = torch.as_tensor(times_s, dtype=field.means.dtype, device=field.means.device).reshape(-1)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError("coupled_attenuation: times_s must be a non-empty list of finite times (s)")
    F, N = t.numel(), len(field)
    m = field.means.unsqueeze(0).expand(F, N, 3)
    xt = torch.cat([m, t.view(F, 1, 1).expand(F, N, 1)], dim=-1).reshape(F * N, 4)
    c = model(scales.nondim_xt(xt))[:, 0].reshape(F, N)
    return field.attenuation.unsqueeze(0) * c
