"""The forward-propagated jet (value, gradient, pure second derivatives) of pinngs.pinn.forward against
nested autograd, and the steady Navier–Stokes residuals on flows whose answer is known."""
from __future__ import annotations

import math

import pytest
import torch

from pinngs.pinn.forward import JetMLP, jet_autograd, ns_residuals


@pytest.mark.parametrize("fourier", [0, 12])
def test_forward_jet_equals_nested_autograd_in_float64(fourier):
    torch.manual_seed(0)
    net = JetMLP(3, 4, width=32, depth=4, fourier=fourier, fourier_sigma=0.8, seed=3).double()
    x = torch.randn(64, 3, dtype=torch.float64)
    fwd, ref = net.jet(x), jet_autograd(net, x)
    for name, a, b in zip(("value", "gradient", "second derivatives"), fwd, ref):
        # float64 round-off of two orders of summation; measured ≤ 1e-13
        assert float((a - b).abs().max()) <= 1e-10 * max(1.0, float(b.abs().max())), name
    assert torch.equal(net(x), fwd[0])  # the value pass alone is the same function


def test_jet_of_a_time_input_differentiates_space_only():
    net = JetMLP(4, 2, width=16, depth=2, n_diff=3).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    v, g, d2 = net.jet(x)
    _, g_ref, d2_ref = jet_autograd(net, x, n_diff=3)
    assert g.shape == (10, 2, 3) and torch.allclose(g, g_ref, atol=1e-12) and torch.allclose(d2, d2_ref, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        net.jet(torch.zeros(3, 3, dtype=torch.float64))


def _poiseuille(re: float):
    """Non-dimensional Poiseuille flow in a tube of radius 1 along z: u_z = 2 (1 − r²), p = −(8/Re) z."""
    def f(x):
        r2 = x[:, 0] ** 2 + x[:, 1] ** 2
        return torch.stack([0 * r2, 0 * r2, 2 * (1 - r2), -8.0 / re * x[:, 2]], 1)
    return f


def _taylor_green_steady(re: float):
    """2D steady Taylor–Green-like cellular flow u = (sin x cos y, −cos x sin y) with the pressure that
    balances its convection and a body-free viscous term: residual = (1/Re)·2u (exactly known)."""
    def f(x):
        u = torch.sin(x[:, 0]) * torch.cos(x[:, 1])
        v = -torch.cos(x[:, 0]) * torch.sin(x[:, 1])
        p = 0.25 * (torch.cos(2 * x[:, 0]) + torch.cos(2 * x[:, 1]))
        return torch.stack([u, v, 0 * u, p], 1)
    return f


def test_ns_residuals_vanish_on_poiseuille_and_match_taylor_green():
    x = torch.rand(200, 3, dtype=torch.float64) * 0.9 - 0.45
    for re in (1.0, 100.0):
        mom, mass = ns_residuals(*jet_autograd(_poiseuille(re), x), re)
        assert float(mom.abs().max()) < 1e-12 and float(mass.abs().max()) < 1e-12
    # Taylor–Green: convection is balanced by the pressure; the viscous term leaves exactly (2/Re) u
    re = 10.0
    mom, mass = ns_residuals(*jet_autograd(_taylor_green_steady(re), x * 2 * math.pi), re)
    val = _taylor_green_steady(re)(x * 2 * math.pi)
    assert torch.allclose(mom[:, :2], 2.0 / re * val[:, :2], atol=1e-12) and float(mass.abs().max()) < 1e-12
