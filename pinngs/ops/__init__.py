"""Differentiable ops over Gaussians: projection + bounds, tile binning, the additive X-ray
rasterizer and the voxelizer. Each is a thin autograd wrapper around pinngs._C (CPU or CUDA) with a
pure-torch twin of the same name with a leading `_` in ``_torch_impl``. Float64 inputs, or a
missing compiled module, run the twin.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backend import get_C
from . import _torch_impl as ref

__all__ = ["VoxelGrid", "project_gaussians", "bin_tiles", "rasterize", "voxelize", "use_kernels"]


@dataclass(frozen=True)
class VoxelGrid:
    """A regular grid: ``origin_mm`` is the centre of voxel (0, 0, 0); array index order is (x, y, z)."""

    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.origin_mm) != 3 or len(self.spacing_mm) != 3 or len(self.shape) != 3:
            raise ValueError("VoxelGrid: origin_mm, spacing_mm and shape need 3 entries each")
        if not all(s > 0 for s in self.spacing_mm) or not all(int(n) == n and n > 0 for n in self.shape):
            raise ValueError(f"VoxelGrid: spacing must be > 0 and shape positive integers; got "
                             f"{self.spacing_mm}, {self.shape}")

    @staticmethod
    def around(points_mm: torch.Tensor, spacing_mm: float, margin_mm: float) -> "VoxelGrid":
        """The smallest grid of isotropic spacing covering points [P, 3] plus a margin."""
        lo = points_mm.detach().min(0).values.double() - margin_mm
        hi = points_mm.detach().max(0).values.double() + margin_mm
        shape = tuple(int(n) for n in (torch.ceil((hi - lo) / spacing_mm) + 1).tolist())
        return VoxelGrid(tuple(lo.tolist()), (spacing_mm,) * 3, shape)


def use_kernels(*tensors: torch.Tensor) -> bool:
    """True when pinngs._C can run these tensors (float32, CPU, or CUDA with CUDA kernels built)."""
    C = get_C()
    if C is None or any(t.dtype != torch.float32 for t in tensors):
        return False
    return all(t.device.type == "cpu" or (t.device.type == "cuda" and C.has_cuda()) for t in tensors)


# --------------------------------------------------------------------------------------------
class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, views, means, precis, W, H, k):
        params, rects = get_C().project_fwd(views, means.contiguous(), precis.contiguous(), W, H, k)
        ctx.save_for_backward(views, means, precis)
        ctx.mark_non_differentiable(rects)
        return params, rects

    @staticmethod
    def backward(ctx, v_params, _v_rects):
        views, means, precis = ctx.saved_tensors
        v_means, v_precis = get_C().project_bwd(views, means.contiguous(), precis.contiguous(),
                                                v_params.contiguous())
        return None, v_means, v_precis, None, None, None


def project_gaussians(views: torch.Tensor,  # [V, 17] from geometry.pack_views
                      means: torch.Tensor,  # [N, 3] mm
                      precis: torch.Tensor,  # [N, 6] mm⁻²
                      width: int, height: int, sigma_cutoff: float = 5.0,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view preprocessing: per (view, Gaussian) parameters [V, N, 11] and the conservative
    detector rectangle [V, N, 4] int32 (x0, y0, x1, y1, half-open) of its sigma_cutoff ellipsoid."""
    if use_kernels(views, means, precis):
        return _Project.apply(views, means, precis, int(width), int(height), float(sigma_cutoff))
    return ref._project(views, means, precis, int(width), int(height), float(sigma_cutoff))


def bin_tiles(rects: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rects [V, N, 4] -> (offsets [V*T + 1] int64, ids [M] int32): the Gaussians of each 16x16 tile."""
    C = get_C()
    if C is not None and (rects.device.type == "cpu" or C.has_cuda()):
        return C.bin(rects.contiguous(), int(width), int(height))
    return ref._bin(rects, int(width), int(height))


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, views, params, atten, rects, W, H):
        offsets, ids = get_C().bin(rects, W, H)
        image = get_C().rasterize_fwd(views, params, atten, rects, offsets, ids, W, H)
        ctx.save_for_backward(views, params, atten, rects)
        ctx.W, ctx.H = W, H
        return image

    @staticmethod
    def backward(ctx, v_image):
        views, params, atten, rects = ctx.saved_tensors
        v_params, v_atten = get_C().rasterize_bwd(views, params, atten, rects, ctx.W, ctx.H,
                                                  v_image.contiguous())
        return None, v_params, v_atten, None, None, None


def rasterize(views: torch.Tensor,  # [V, 17]
              params: torch.Tensor,  # [V, N, 11] from project_gaussians
              atten: torch.Tensor,  # [V, N] peak attenuation per view (mm⁻¹)
              rects: torch.Tensor,  # [V, N, 4] from project_gaussians
              width: int, height: int) -> torch.Tensor:
    """Additive X-ray rendering: line integrals of Σ_i atten[v, i]·G_i through every pixel, [V, H, W].

    A pair (pixel, Gaussian) contributes iff the pixel lies in the Gaussian's rectangle.
    """
    V, N = params.shape[:2]
    if atten.shape != (V, N):
        raise ValueError(f"atten must be [V, N] = [{V}, {N}], got {tuple(atten.shape)}")
    if use_kernels(views, params, atten):
        return _Rasterize.apply(views, params.contiguous(), atten.contiguous(), rects.contiguous(),
                                int(width), int(height))
    return ref._rasterize(views, params, atten, rects, int(width), int(height))


class _Voxelize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, precis, covars, amps, grid, k):
        g = (list(grid.origin_mm), list(grid.spacing_mm), list(grid.shape))
        vol = get_C().voxelize_fwd(means, precis, covars, amps, *g, k)
        ctx.save_for_backward(means, precis, covars, amps)
        ctx.g, ctx.k = g, k
        return vol

    @staticmethod
    def backward(ctx, v_vol):
        means, precis, covars, amps = ctx.saved_tensors
        v_means, v_precis, v_amps = get_C().voxelize_bwd(means, precis, covars, amps, *ctx.g, ctx.k,
                                                         v_vol.contiguous())
        return v_means, v_precis, None, v_amps, None, None


def voxelize(means: torch.Tensor,  # [N, 3] mm
             precis: torch.Tensor,  # [N, 6]
             covars: torch.Tensor,  # [N, 6] (bounds only; not differentiated)
             amps: torch.Tensor,  # [N]
             grid: VoxelGrid, sigma_cutoff: float = 5.0) -> torch.Tensor:
    """Gaussians to a grid: vol[x, y, z] = Σ_i amps_i exp(-½ dᵀP_i d) at voxel centres, [X, Y, Z]."""
    if use_kernels(means, precis, covars, amps):
        return _Voxelize.apply(means.contiguous(), precis.contiguous(), covars.detach().contiguous(),
                               amps.contiguous(), grid, float(sigma_cutoff))
    return ref._voxelize(means, precis, covars, amps, grid.origin_mm, grid.spacing_mm, grid.shape,
                         float(sigma_cutoff))
