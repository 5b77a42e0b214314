"""The coordinate MLP: non-dimensional (x, y, z, t) -> (c, u, v, w, p)."""
from __future__ import annotations

import math

import torch
from torch import nn


class FlowMLP(nn.Module):
    """MLP with optional Gaussian Fourier features of the space-time input.

    Args:
        width, depth: hidden layer width and number of hidden layers.
        fourier: number of random Fourier frequencies (0: raw coordinates only).
        fourier_sigma: standard deviation of the frequencies (per non-dimensional unit).
        seed: seed of the frequency matrix and of the weights.

    forward(xt [N, 4]) -> [N, 5]: c in [0, 1] (a sigmoid), then u*, v*, w*, p* (unbounded).
    """

    def __init__(self, width: int = 64, depth: int = 4, fourier: int = 16, fourier_sigma: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        if width < 1 or depth < 1 or fourier < 0:
            raise ValueError(f"FlowMLP needs width >= 1, depth >= 1, fourier >= 0; got {width}, {depth}, {fourier}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(4, fourier, generator=g) * fourier_sigma)
        n_in = 4 + 2 * fourier
        layers: list[nn.Module] = []
        for i in range(depth):
            lin = nn.Linear(n_in if i == 0 else width, width)
            layers += [lin, nn.Tanh()]
        out = nn.Linear(width, 5)
        layers.append(out)
        self.body = nn.Sequential(*layers)
        with torch.no_grad():  # deterministic Xavier init from the seed
            for m in self.body:
                if isinstance(m, nn.Linear):
                    bound = math.sqrt(6.0 / (m.in_features + m.out_features))
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 * bound - bound)
                    m.bias.zero_()

    def features(self, xt: torch.Tensor) -> torch.Tensor:
        if self.B.shape[1] == 0:
            return xt
        proj = 2 * math.pi * xt @ self.B.to(xt.dtype)
        return torch.cat([xt, proj.sin(), proj.cos()], dim=-1)

    def forward(self, xt: torch.Tensor) -> torch.Tensor:  # [N, 4] -> [N, 5]
        if xt.ndim != 2 or xt.shape[1] != 4:
            raise ValueError(f"FlowMLP expects [N, 4] (x, y, z, t) non-dimensional inputs, got {tuple(xt.shape)}")
        y = self.body(self.features(xt))
        return torch.cat([torch.sigmoid(y[:, :1]), y[:, 1:]], dim=1)
