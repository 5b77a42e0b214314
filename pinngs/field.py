"""The Gaussian lumen model (DESIGN.md §3, §5).

μ(x) = Σ_i a_i · exp(-½ (x - m_i)ᵀ P_i (x - m_i)),  P_i = Σ_i⁻¹,  Σ_i = R_i S_i² R_iᵀ.

Parameters are stored unconstrained and mapped by activations that keep every state valid for an
optimiser: scales = exp(log_scales) > 0 (mm), rotations from normalised quaternions (w, x, y, z),
peak attenuation a = softplus(raw) > 0 (mm⁻¹). Symmetric 3x3 matrices travel as [N, 6] in the order
(00, 01, 02, 11, 12, 22), the layout the kernels read.
"""
from __future__ import annotations

import torch
from torch import nn

SYM6 = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:  # [..., 4] (w, x, y, z) -> [..., 3, 3]
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(q.shape[:-1] + (3, 3))


def sym_to_6(M: torch.Tensor) -> torch.Tensor:  # [..., 3, 3] -> [..., 6]
    return torch.stack([M[..., i, j] for i, j in SYM6], dim=-1)


def six_to_sym(s: torch.Tensor) -> torch.Tensor:  # [..., 6] -> [..., 3, 3]
    a, b, c, d, e, f = s.unbind(-1)
    return torch.stack([a, b, c, b, d, e, c, e, f], dim=-1).reshape(s.shape[:-1] + (3, 3))


def covar_and_precision(quats: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ = R S² Rᵀ and P = R S⁻² Rᵀ, both [N, 6], from quats [N, 4] and scales [N, 3] (mm).

    P is built from 1/s² directly rather than by inverting Σ, so it stays accurate for needles.
    """
    R = quat_to_rotmat(quats)
    cov = (R * scales.pow(2).unsqueeze(-2)) @ R.transpose(-1, -2)
    prec = (R * scales.pow(-2).unsqueeze(-2)) @ R.transpose(-1, -2)
    return sym_to_6(cov), sym_to_6(prec)


class GaussianField(nn.Module):
    """N anisotropic Gaussians in world mm with positive peak attenuation (mm⁻¹).

    Args:
        means_mm: [N, 3] centres.
        scales_mm: [N, 3] standard deviations along the Gaussian's own axes.
        quats: [N, 4] rotations (w, x, y, z), need not be normalised; identity if None.
        atten_per_mm: [N] peak attenuation; 0.02 mm⁻¹ if None.
    """

    def __init__(self, means_mm: torch.Tensor, scales_mm: torch.Tensor, quats: torch.Tensor | None = None,
                 atten_per_mm: torch.Tensor | None = None) -> None:
        super().__init__()
        means_mm = torch.as_tensor(means_mm, dtype=torch.float32)
        scales_mm = torch.as_tensor(scales_mm, dtype=torch.float32)
        N = means_mm.shape[0]
        if means_mm.shape != (N, 3) or scales_mm.shape != (N, 3):
            raise ValueError(f"means_mm and scales_mm must both be [N, 3]; got {tuple(means_mm.shape)} "
                             f"and {tuple(scales_mm.shape)}")
        if not bool((scales_mm > 0).all()):
            raise ValueError("scales_mm must be strictly positive")
        if quats is None:
            quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(N, 4).clone()
        quats = torch.as_tensor(quats, dtype=torch.float32)
        if quats.shape != (N, 4) or not bool((quats.norm(dim=-1) > 0).all()):
            raise ValueError(f"quats must be [N, 4] and non-zero; got shape {tuple(quats.shape)}")
        if atten_per_mm is None:
            atten_per_mm = torch.full((N,), 0.02)
        atten_per_mm = torch.as_tensor(atten_per_mm, dtype=torch.float32)
        if atten_per_mm.shape != (N,) or not bool((atten_per_mm > 0).all()):
            raise ValueError("atten_per_mm must be [N] and strictly positive")
        for name, t in (("means_mm", means_mm), ("scales_mm", scales_mm), ("quats", quats),
                        ("atten_per_mm", atten_per_mm)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or inf")
        self.means = nn.Parameter(means_mm.clone())
        self.log_scales = nn.Parameter(scales_mm.log())
        self.quats = nn.Parameter(quats.clone())
        # softplus⁻¹(a) = a + log(-expm1(-a)), stable for small and large a
        self.raw_atten = nn.Parameter(atten_per_mm + torch.log(-torch.expm1(-atten_per_mm)))

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> torch.Tensor:  # [N, 3] mm
        return self.log_scales.exp()

    @property
    def attenuation(self) -> torch.Tensor:  # [N] mm⁻¹
        return nn.functional.softplus(self.raw_atten)

    def covar_and_precision(self) -> tuple[torch.Tensor, torch.Tensor]:  # [N, 6], [N, 6]
        return covar_and_precision(self.quats, self.scales)
