"""Residuals of transport, momentum and mass for a field given as a callable (DESIGN.md §5).

All in non-dimensional variables (see scales.py): for f = model(xt), xt [N, 4] = (x*, y*, z*, t*),
f [N, 5] = (c, u*, v*, w*, p*),

    transport  St c_t + u·∇c − (1/Pe) ∇²c
    momentum   St u_t + (u·∇)u + ∇p − (1/Re) ∇²u        [N, 3]
    mass       ∇·u

Derivatives by autograd (create_graph=True, so the residuals can be trained on). ``model`` can be
the MLP or any differentiable torch function, which is how the tests hold the residuals to exact
flows (Poiseuille, Womersley, Taylor-Green, advected profiles).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .scales import Scales


@dataclass
class Residuals:
    transport: torch.Tensor  # [N]
    momentum: torch.Tensor  # [N, 3]
    mass: torch.Tensor  # [N]
    fields: torch.Tensor  # [N, 5] the model's output at the points

    def mean_squares(self) -> dict[str, torch.Tensor]:
        return {"transport": self.transport.square().mean(), "momentum": self.momentum.square().sum(1).mean(),
                "mass": self.mass.square().mean()}


def _grad(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    g, = torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def residuals(model: Callable[[torch.Tensor], torch.Tensor], xt: torch.Tensor, scales: Scales,
              terms: tuple[str, ...] = ("transport", "momentum", "mass")) -> Residuals:
    """PDE residuals of ``model`` at the points xt [N, 4] (non-dimensional).

    terms: which residuals to compute (the others are returned as zeros, and their second
    derivatives are skipped: the momentum residual alone costs 12 second-derivative passes).
    """
    if xt.ndim != 2 or xt.shape[1] != 4:
        raise ValueError(f"residuals: xt must be [N, 4] (x*, y*, z*, t*), got {tuple(xt.shape)}")
    unknown = set(terms) - {"transport", "momentum", "mass"}
    if unknown:
        raise ValueError(f"residuals: unknown terms {sorted(unknown)}")
    xt = xt.detach().requires_grad_(True) if not xt.requires_grad else xt
    f = model(xt)
    if f.shape != (xt.shape[0], 5):
        raise ValueError(f"residuals: the model must return [N, 5] (c, u, v, w, p), got {tuple(f.shape)}")
    N = xt.shape[0]
    zero = xt.new_zeros(N)
    St, inv_re = scales.St, 1.0 / scales.Re
    inv_pe = 0.0 if math.isinf(scales.Pe) else 1.0 / scales.Pe
    vel = f[:, 1:4]
    # first derivatives of every output: J[:, k, :] = d f_k / d(x, y, z, t)
    J = torch.stack([_grad(f[:, k], xt) for k in range(5)], dim=1)  # [N, 5, 4]

    def laplacian(k: int) -> torch.Tensor:
        return sum(_grad(J[:, k, d], xt)[:, d] for d in range(3))

    transport = momentum = mass = None
    if "transport" in terms:
        transport = St * J[:, 0, 3] + (vel * J[:, 0, :3]).sum(1)
        if inv_pe:
            transport = transport - inv_pe * laplacian(0)
    if "momentum" in terms:
        conv = torch.einsum("nj,nij->ni", vel, J[:, 1:4, :3])  # (u·∇)u
        lap = torch.stack([laplacian(k) for k in (1, 2, 3)], dim=1)
        momentum = St * J[:, 1:4, 3] + conv + J[:, 4, :3] - inv_re * lap
    if "mass" in terms:
        mass = J[:, 1, 0] + J[:, 2, 1] + J[:, 3, 2]
    return Residuals(transport if transport is not None else zero,
                     momentum if momentum is not None else xt.new_zeros(N, 3),
                     mass if mass is not None else zero, f)
