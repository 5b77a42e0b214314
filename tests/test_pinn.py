"""PINN building blocks: the residuals vanish on exact flows and do not vanish on wrong ones, the
scales are consistent, and the coupling a_i(t) = a_i c(m_i, t) passes gradients to both the
Gaussians and the MLP.

The exact flows are written in mm, s, Pa (dimensional) and wrapped as non-dimensional models through
the Scales object, so the test also covers the non-dimensionalisation.
"""
from __future__ import annotations

import math

import pytest
import torch

from pinngs.field import GaussianField
from pinngs.geometry import CArmView
from pinngs.pinn import FlowMLP, Scales, coupled_attenuation, residuals
from pinngs.render import render_views

RHO, MU = 1.06e-3, 3.5e-3
R = 1.5  # mm
AXIS = torch.tensor([0.3, 0.2, 1.0], dtype=torch.float64) / math.sqrt(0.3 ** 2 + 0.2 ** 2 + 1.0)


def as_model(fields_dim, scales: Scales):
    """A non-dimensional model from dimensional fields(x [N, 3] mm, t [N] s) -> [N, 5]."""
    def model(xt):
        X = scales.dim_xt(xt)
        return scales.nondim_fields(fields_dim(X[:, :3], X[:, 3]))
    return model


def axial(x):  # z along AXIS and r² off it
    z = x @ AXIS
    r2 = (x * x).sum(1) - z * z
    return z, r2


def points(n, scales, r_max=0.95 * R, half_len=8.0, t_range=(0.0, 1.0), seed=0):
    """n points inside the tilted tube (r < r_max), non-dimensional."""
    g = torch.Generator().manual_seed(seed)
    e1 = torch.linalg.cross(AXIS, torch.tensor([1.0, 0, 0], dtype=torch.float64))
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(AXIS, e1)
    r = r_max * torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    th = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    z = half_len * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)
    x = z[:, None] * AXIS + (r * th.cos())[:, None] * e1 + (r * th.sin())[:, None] * e2
    t = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(n, generator=g, dtype=torch.float64)
    return scales.nondim_xt(torch.cat([x, t[:, None]], 1))


def poiseuille(u_max=400.0, grad_factor=1.0, c_speed_factor=1.0):
    G = 4 * MU * u_max / R ** 2  # -dp/dz (Pa/mm)

    def fields(x, t):
        z, r2 = axial(x)
        u = u_max * (1 - r2 / R ** 2)
        # pure advection of an inlet concentration c_in(t) = sigmoid((t - 0.3)/0.05): c = c_in(t - z/u)
        c = torch.sigmoid((t - z / (c_speed_factor * u) - 0.3) / 0.05)
        vel = u[:, None] * AXIS
        p = 100.0 - grad_factor * G * z
        return torch.cat([c[:, None], vel, p[:, None]], 1)
    return fields


def test_scales_groups():
    s = Scales.for_vessel(radius_mm=1.5, velocity_mm_s=200.0, diffusivity_mm2_s=1e-3, omega_rad_s=2 * math.pi)
    nu = MU / RHO
    assert s.Re == pytest.approx(200.0 * 1.5 / nu)
    assert s.Pe == pytest.approx(200.0 * 1.5 / 1e-3)
    assert s.St == pytest.approx(1.0)
    assert s.pressure_pa == pytest.approx(RHO * 200.0 ** 2)
    assert s.womersley == pytest.approx(1.5 * math.sqrt(2 * math.pi / nu))
    xt = torch.tensor([[1.0, -2.0, 3.0, 0.5]], dtype=torch.float64)
    assert torch.allclose(s.dim_xt(s.nondim_xt(xt)), xt)
    with pytest.raises(ValueError, match="velocity_mm_s"):
        Scales(1.0, -1.0, 1.0)


def _rel(res, ref):
    return float(res.detach().abs().max() / ref)


def test_residuals_vanish_on_poiseuille_with_advected_contrast():
    s = Scales.for_vessel(R, 200.0)
    xt = points(512, s)
    r = residuals(as_model(poiseuille(), s), xt, s)
    G_nd = 4 * MU * 400.0 / R ** 2 * s.length_mm / s.pressure_pa  # |∇p*|, the size of the balanced terms
    assert _rel(r.momentum, G_nd) < 1e-10
    assert _rel(r.mass, 400.0 / 200.0) < 1e-12
    c_t = 1.0 / 0.05 * 0.25 * s.time_s  # largest |St ∂c/∂t*|
    assert _rel(r.transport, c_t) < 1e-9
    # and they do not vanish on wrong fields: 10 % too much pressure gradient, contrast moving too fast
    bad = residuals(as_model(poiseuille(grad_factor=1.1, c_speed_factor=1.2), s), xt, s)
    assert float(bad.momentum.detach().norm(dim=1).max()) == pytest.approx(0.1 * G_nd, rel=1e-6)
    assert _rel(bad.transport, c_t) > 1e-2


def j0(z2_over_4: torch.Tensor, terms: int = 40) -> torch.Tensor:
    """J0(√(4q)) = Σ (−q)^m / (m!)² for q = z²/4 (complex); a power series, exact to rounding for |z| < 10."""
    out = torch.zeros_like(z2_over_4)
    term = torch.ones_like(z2_over_4)
    for m in range(terms):
        out = out + term
        term = term * (-z2_over_4) / ((m + 1) ** 2)
    return out


@pytest.mark.parametrize("alpha", [2.0, 4.0])
def test_residuals_vanish_on_womersley(alpha):
    omega = (alpha / R) ** 2 * MU / RHO
    A = 2.0  # pressure-gradient amplitude (Pa/mm): -dp/dz = A cos(ωt)
    s = Scales.for_vessel(R, 100.0, omega_rad_s=omega, time_s=2 * math.pi / omega)
    assert s.womersley == pytest.approx(alpha)
    k2 = -1j * alpha ** 2 / R ** 2  # (i^{3/2} α / R)²
    J0R = j0(torch.tensor(k2 * R ** 2 / 4, dtype=torch.complex128))

    def fields(x, t):
        z, r2 = axial(x)
        U = A / (1j * RHO * omega) * (1 - j0(k2 * r2.to(torch.complex128) / 4) / J0R)
        u = (U * torch.exp(1j * omega * t.to(torch.complex128))).real
        p = -z * A * torch.cos(omega * t)
        return torch.cat([torch.zeros_like(z)[:, None], u[:, None] * AXIS, p[:, None]], 1)

    xt = points(512, s, t_range=(0.0, 2 * math.pi / omega))
    r = residuals(as_model(fields, s), xt, s, terms=("momentum", "mass"))
    ref = A * s.length_mm / s.pressure_pa  # |∇p*| amplitude
    assert _rel(r.momentum, ref) < 1e-9
    assert _rel(r.mass, 1.0) < 1e-12
    # the quasi-steady Poiseuille profile with the same gradient is not a solution at this α
    def quasi_steady(x, t):
        z, r2 = axial(x)
        u = A * torch.cos(omega * t) / (4 * MU) * (R ** 2 - r2)
        return torch.cat([torch.zeros_like(z)[:, None], u[:, None] * AXIS, (-z * A * torch.cos(omega * t))[:, None]], 1)
    bad = residuals(as_model(quasi_steady, s), xt, s, terms=("momentum",))
    assert _rel(bad.momentum, ref) > 0.1


def test_residuals_vanish_on_taylor_green():
    nu, U0, k = MU / RHO, 50.0, 2 * math.pi / 4.0  # 4 mm vortices

    def fields(x, t):
        F = torch.exp(-2 * nu * k * k * t)
        u = U0 * torch.sin(k * x[:, 0]) * torch.cos(k * x[:, 1]) * F
        v = -U0 * torch.cos(k * x[:, 0]) * torch.sin(k * x[:, 1]) * F
        p = RHO * U0 ** 2 / 4 * (torch.cos(2 * k * x[:, 0]) + torch.cos(2 * k * x[:, 1])) * F * F
        return torch.stack([torch.zeros_like(u), u, v, torch.zeros_like(u), p], 1)

    s = Scales(length_mm=1.0, velocity_mm_s=U0, time_s=0.01)
    g = torch.Generator().manual_seed(1)
    xt = torch.cat([8 * torch.rand(400, 3, generator=g, dtype=torch.float64) - 4,
                    0.05 * torch.rand(400, 1, generator=g, dtype=torch.float64)], 1)
    r = residuals(as_model(fields, s), s.nondim_xt(xt), s, terms=("momentum", "mass"))
    ref = k * s.length_mm / 2  # size of the convective term, non-dimensional
    assert _rel(r.momentum, ref) < 1e-10
    assert _rel(r.mass, k * s.length_mm) < 1e-12
    # without viscous decay it is not a solution of the viscous equations
    def inviscid(x, t):
        return fields(x, torch.zeros_like(t))
    bad = residuals(as_model(inviscid, s), s.nondim_xt(xt), s, terms=("momentum",))
    assert _rel(bad.momentum, ref) > 1e-3


def test_transport_residual_with_diffusion():
    D, U, t0 = 0.5, 80.0, 0.02  # an advected, spreading Gaussian pulse: c_t + U c_z = D c_zz

    def fields(x, t):
        z = x @ AXIS
        c = torch.sqrt(t0 / (t + t0)) * torch.exp(-(z - U * t) ** 2 / (4 * D * (t + t0)))
        return torch.cat([c[:, None], U * AXIS.expand(len(z), 3), torch.zeros_like(z)[:, None]], 1)

    s = Scales.for_vessel(R, U, diffusivity_mm2_s=D)
    xt = points(400, s, t_range=(0.0, 0.05), half_len=3.0)
    r = residuals(as_model(fields, s), xt, s, terms=("transport",))
    ref = float(U * s.time_s / math.sqrt(4 * D * t0))  # St |c_t| scale
    assert _rel(r.transport, ref) < 1e-10
    no_diff = Scales.for_vessel(R, U)  # the same field is not pure advection
    bad = residuals(as_model(fields, no_diff), xt, no_diff, terms=("transport",))
    assert _rel(bad.transport, ref) > 1e-2


def test_residuals_reject_bad_shapes():
    s = Scales.for_vessel(R, 100.0)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        residuals(FlowMLP(), torch.zeros(5, 3), s)
    with pytest.raises(ValueError, match="unknown terms"):
        residuals(FlowMLP(), torch.zeros(5, 4), s, terms=("energy",))


def test_mlp_residuals_are_trainable():
    net = FlowMLP(width=32, depth=3, fourier=8)
    s = Scales.for_vessel(R, 100.0, diffusivity_mm2_s=1.0)
    xt = points(256, s).float()
    loss = sum(residuals(net, xt, s).mean_squares().values())
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_coupling_gradients_reach_gaussians_and_mlp():
    torch.manual_seed(0)
    N = 40
    z = torch.linspace(-10, 10, N)
    means = torch.stack([0.3 * z, 0.2 * z, z], 1) + 0.2 * torch.randn(N, 3)
    field = GaussianField(means, torch.full((N, 3), 1.0), atten_per_mm=torch.full((N,), 0.3))
    views = [CArmView(a, 10, rows=32, cols=32, pixel_spacing_mm=(1.5, 1.5)) for a in (0.0, 60.0)]
    net = FlowMLP(width=16, depth=2, fourier=4)
    s = Scales.for_vessel(R, 100.0, origin_mm=(0.0, 0.0, 0.0))
    times = [0.1, 0.3]
    a = coupled_attenuation(field, net, s, times)
    assert a.shape == (2, N)
    c = net(s.nondim_xt(torch.cat([field.means, torch.full((N, 1), 0.3)], 1)))[:, 0]
    assert torch.allclose(a[1], field.attenuation * c)  # a_i(t) = a_i c(m_i, t)
    # render each frame with its own attenuation
    imgs = torch.stack([render_views(field, [views[f]], atten=a[f:f + 1])[0] for f in range(2)])
    target = 0.5 * imgs.detach() + 0.01
    loss = (imgs - target).square().mean()
    loss.backward()
    for name, g in (("means", field.means.grad), ("raw_atten", field.raw_atten.grad),
                    ("log_scales", field.log_scales.grad)):
        assert g is not None and float(g.abs().sum()) > 0, name
    for name, p in net.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    # the MLP gradient is the right one: directional finite difference on the last layer's bias
    p = net.body[-1].bias
    d = torch.zeros_like(p)
    d[0] = 1.0
    analytic = float((p.grad * d).sum())
    h = 1e-2
    with torch.no_grad():
        vals = []
        for sgn in (1, -1):
            p.add_(sgn * h * d)
            a2 = coupled_attenuation(field, net, s, times)
            im2 = torch.stack([render_views(field, [views[f]], atten=a2[f:f + 1])[0] for f in range(2)])
            vals.append(float((im2 - target).square().mean()))
            p.sub_(sgn * h * d)
    assert analytic == pytest.approx((vals[0] - vals[1]) / (2 * h), rel=0.05)
    with pytest.raises(ValueError, match="finite times"):
        coupled_attenuation(field, net, s, [float("nan")])
