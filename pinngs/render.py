"""Rendering a GaussianField: X-ray line integrals through C-arm views, voxelization, and the
per-image nuisances (contrast scale, background plane) that compare a rendering with data."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .field import GaussianField
from .geometry import CArmView, pack_views
from .ops import VoxelGrid, project_gaussians, rasterize, voxelize


@dataclass(frozen=True)
class RenderSettings:
    """Rendering knobs.

    Attributes:
        sigma_cutoff: each Gaussian is evaluated on the pixels whose rays pass within this many
            sigmas (Mahalanobis) of its mean. The dropped part of any pixel's value is below
            a·sqrt(2π)·σ_max·exp(-k²/2): 3.7e-6 of the Gaussian's largest line integral at k = 5.
    """

    sigma_cutoff: float = 5.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.sigma_cutoff <= 10.0:
            raise ValueError(f"sigma_cutoff must be in [1, 10], got {self.sigma_cutoff}")


def render_views(field: GaussianField, views: list[CArmView],
                 atten: torch.Tensor | None = None,  # [V, N] per-view attenuation; field's if None
                 settings: RenderSettings = RenderSettings()) -> torch.Tensor:
    """DSA line-integral images [V, H, W] of the field through each view (one call for all views)."""
    dev = field.means.device
    packed = pack_views(views, device=dev)
    H, W = views[0].rows, views[0].cols
    _, prec = field.covar_and_precision()
    if atten is None:
        atten = field.attenuation.expand(len(views), -1)
    params, rects = project_gaussians(packed, field.means, prec, W, H, settings.sigma_cutoff)
    return rasterize(packed, params, atten, rects, W, H)


def voxelize_field(field: GaussianField, grid: VoxelGrid,
                   settings: RenderSettings = RenderSettings()) -> torch.Tensor:
    """Attenuation of the field sampled on a grid, [X, Y, Z] (mm⁻¹)."""
    cov, prec = field.covar_and_precision()
    return voxelize(field.means, prec, cov, field.attenuation, grid, settings.sigma_cutoff)


def nuisance_fit(img: torch.Tensor, target: torch.Tensor, scale: bool) -> torch.Tensor:
    """The rendering plus per-image nuisances fitted by least squares, [T, H, W]: a background
    plane a + b·x + c·y (the subtraction residual and any leftover offset), and with ``scale`` a
    contrast factor s, so the model is s·img + plane. The nuisances are solved with the rendering
    held fixed (no gradient through them); the gradient reaches the Gaussians through ``img``."""
    T, H, W = img.shape
    with torch.no_grad():
        dev = img.device
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, device=dev), torch.linspace(-1, 1, W, device=dev), indexing="ij")
        basis = torch.stack([torch.ones_like(xx), xx, yy]).reshape(3, -1)  # [3, HW]
        cols = [basis.expand(T, 3, H * W)]
        if scale:
            cols.insert(0, img.detach().reshape(T, 1, -1))
            A = torch.cat(cols, 1).double()  # [T, 4, HW]
            rhs = target.reshape(T, -1).double()
        else:
            A = cols[0].double()
            rhs = (target - img.detach()).reshape(T, -1).double()
        G = A @ A.transpose(1, 2) + 1e-9 * torch.eye(A.shape[1], dtype=A.dtype, device=dev)
        coef = torch.linalg.solve(G, (A @ rhs[..., None]))[..., 0].float()  # [T, k]
        plane = (coef[:, -3:] @ basis).reshape(T, H, W)
        s = coef[:, 0].clamp(0.0, 4.0) if scale else torch.ones(T, device=dev)
    return s[:, None, None] * img + plane
