"""Forward propagation of value, gradient and Laplacian terms through an MLP (the "forward
Laplacian" idea of Li et al., 2023; our own implementation), and the steady Navier–Stokes residuals
that need nothing more.

    net = JetMLP(n_in=3, n_out=4)                      # (x*, y*, z*) -> (u*, v*, w*, p*)
    val, grad, d2 = net.jet(x)                         # [N, 4], [N, 4, 3], [N, 4, 3]
    mom, mass = ns_residuals(val, grad, d2, re=scales.Re)

A jet is the stack of 1 + 2D streams for D differentiated inputs: the value h, its first
derivatives ∂h/∂x_j and its pure second derivatives ∂²h/∂x_j² (j = 1..D), carried together as one
[1 + 2D, N, width] tensor so that every linear layer is one batched matmul:

1. inputs: value x, ∂x/∂x_j = e_j, ∂²x/∂x_j² = 0; optional Fourier features [sin θ, cos θ],
   θ = 2π x B, with ∂θ/∂x_j = 2π B_j (so ∂ sin θ = cos θ ∂θ, ∂² sin θ = −sin θ (∂θ)²);
2. a linear layer acts on every stream, the bias on the value stream only;
3. tanh: y = tanh z, y' = (1 − y²) z', y'' = (1 − y²) z'' − 2 y (1 − y²) z'².

The Laplacian is the sum of the second-derivative streams. Mixed second derivatives are never
formed: the steady incompressible momentum and mass residuals do not need them. Nested autograd
(``jet_autograd``) computes the same quantities slowly and obviously right: the test twin.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class JetMLP(nn.Module):
    """A tanh MLP with optional Gaussian Fourier features whose ``jet`` returns value, gradient and
    pure second derivatives in one forward pass.

    Args:
        n_in: inputs (non-dimensional coordinates); the first ``n_diff`` are differentiated.
        n_out: outputs.
        width, depth: hidden width and number of hidden layers.
        fourier: random Fourier frequencies (0: the raw coordinates only).
        fourier_sigma: standard deviation of the frequencies (per non-dimensional unit).
        n_diff: how many inputs the jet differentiates (default: all).
        seed: seed of the frequencies and of the Xavier-uniform weights.
    """

    def __init__(self, n_in: int = 3, n_out: int = 4, width: int = 64, depth: int = 4, fourier: int = 0,
                 fourier_sigma: float = 1.0, n_diff: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if min(n_in, n_out, width, depth) < 1 or fourier < 0:
            raise ValueError(f"JetMLP needs n_in, n_out, width, depth >= 1 and fourier >= 0; got {n_in}, {n_out}, "
                             f"{width}, {depth}, {fourier}")
        self.n_in, self.n_out = n_in, n_out
        self.n_diff = n_in if n_diff is None else n_diff
        if not 1 <= self.n_diff <= n_in:
            raise ValueError(f"JetMLP: n_diff must be in 1..{n_in}, got {n_diff}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(n_in, fourier, generator=g) * fourier_sigma)
        dims = [n_in + 2 * fourier] + [width] * depth + [n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        with torch.no_grad():
            for m in self.layers:
                bound = math.sqrt(6.0 / (m.in_features + m.out_features))
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 * bound - bound)
                m.bias.zero_()

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"JetMLP expects [N, {self.n_in}] inputs, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, n_in] -> [N, n_out]
        """The value alone (no derivative streams): the cheap pass for data terms."""
        self._check(x)
        h = x
        if self.B.shape[1]:
            th = 2 * math.pi * x @ self.B.to(x.dtype)
            h = torch.cat([x, th.sin(), th.cos()], dim=-1)
        for m in self.layers[:-1]:
            h = torch.tanh(m(h))
        return self.layers[-1](h)

    def jet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(value [N, n_out], gradient [N, n_out, D], pure second derivatives [N, n_out, D]) with
        D = n_diff: ∂f_k/∂x_j and ∂²f_k/∂x_j² in one forward pass (module docstring)."""
        self._check(x)
        N, D = x.shape[0], self.n_diff
        # streams: 0 value, 1..D first derivatives, D+1..2D pure second derivatives
        eye = torch.eye(D, self.n_in, dtype=x.dtype, device=x.device)  # ∂x/∂x_j
        H = torch.cat([x[None], eye[:, None, :].expand(D, N, self.n_in), x.new_zeros(D, N, self.n_in)])
        if self.B.shape[1]:
            B = self.B.to(x.dtype)
            th = 2 * math.pi * x @ B  # [N, F]
            dth = 2 * math.pi * B[:D]  # [D, F]: ∂θ/∂x_j, the same at every point
            s, c = th.sin(), th.cos()
            sin_s = torch.cat([s[None], c[None] * dth[:, None, :], -s[None] * dth[:, None, :] ** 2])
            cos_s = torch.cat([c[None], -s[None] * dth[:, None, :], -c[None] * dth[:, None, :] ** 2])
            H = torch.cat([H, sin_s, cos_s], dim=-1)
        for m in self.layers[:-1]:
            Z = H @ m.weight.T
            z0 = Z[0] + m.bias
            y = torch.tanh(z0)
            sech2 = 1 - y * y
            d1 = sech2 * Z[1:D + 1]
            d2 = sech2 * Z[D + 1:] - 2 * y * sech2 * Z[1:D + 1] ** 2
            H = torch.cat([y[None], d1, d2])
        last = self.layers[-1]
        Z = H @ last.weight.T
        val = Z[0] + last.bias
        return val, Z[1:D + 1].permute(1, 2, 0), Z[D + 1:].permute(1, 2, 0)


def jet_autograd(f, x: torch.Tensor, n_diff: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same triple as ``JetMLP.jet`` by nested autograd, for any differentiable ``f``: [N, n] ->
    [N, K]. Slow (2 K D backward passes) and obviously right: the twin of the forward jet."""
    x = x.detach().requires_grad_(True)
    val = f(x)
    K, D = val.shape[1], n_diff or x.shape[1]
    grad = torch.zeros(x.shape[0], K, D, dtype=x.dtype)
    d2 = torch.zeros(x.shape[0], K, D, dtype=x.dtype)
    for k in range(K):
        g, = torch.autograd.grad(val[:, k].sum(), x, create_graph=True)
        for j in range(D):
            grad[:, k, j] = g[:, j]
            h, = torch.autograd.grad(g[:, j].sum(), x, retain_graph=True, create_graph=True)
            d2[:, k, j] = h[:, j]
    return val, grad, d2


def ns_residuals(val: torch.Tensor, grad: torch.Tensor, d2: torch.Tensor, re: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Steady incompressible Navier–Stokes residuals, non-dimensional, from a jet of (u, v, w, p):

        momentum  (u·∇)u + ∇p − (1/Re) ∇²u      [N, 3]
        mass      ∇·u                            [N]

    val [N, 4], grad [N, 4, 3], d2 [N, 4, 3] (``JetMLP.jet`` of a net whose outputs are u*, v*, w*, p*)."""
    u = val[:, :3]
    conv = torch.einsum("nj,nij->ni", u, grad[:, :3, :])
    lap = d2[:, :3, :].sum(-1)
    return conv + grad[:, 3, :] - lap / re, grad[:, 0, 0] + grad[:, 1, 1] + grad[:, 2, 2]
