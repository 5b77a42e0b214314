"""Contrast transport against the exact Poiseuille pure-advection solution c = c_in(t - z/u(r))."""
import numpy as np

from pinngs.simulate.transport import concentration, travel_time
from pinngs.laws import gamma_variate


def test_gamma_variate_peak_and_support():
    t = np.linspace(0, 3, 3001)
    c = gamma_variate(t, t0_s=0.2, alpha=3.0, beta_s=0.25)
    assert c[t <= 0.2].max() == 0.0
    assert abs(c.max() - 1.0) < 1e-6 and abs(t[c.argmax()] - (0.2 + 0.75)) < 2e-3


def test_poiseuille_pure_advection_matches_exact():
    R, L, h, umax = 1.5, 12.0, 0.1, 300.0  # mm, mm, mm, mm/s
    xs = np.arange(-2.0, 2.0 + h / 2, h)
    zs = np.arange(-1.0, L + 1.0 + h / 2, h)
    X, Y, Z = np.meshgrid(xs, xs, zs, indexing="ij")
    r = np.hypot(X, Y)
    vel = np.zeros(X.shape + (3,), np.float32)
    vel[..., 2] = np.where(r < R, umax * (1 - (r / R) ** 2), 0.0)
    origin = np.array([xs[0], xs[0], zs[0]])
    # query points inside r <= 0.8 R, 1..L mm downstream of the inlet plane z = 0
    sel = (r <= 0.8 * R) & (Z >= 1.0) & (Z <= L)
    pts = np.stack([X[sel], Y[sel], Z[sel]], 1)
    tau = travel_time(vel, origin, h, pts, [0.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    exact = pts[:, 2] / (umax * (1 - (np.hypot(pts[:, 0], pts[:, 1]) / R) ** 2))
    rel = np.abs(tau - exact) / exact
    print(f"travel time vs z/u(r): max rel err {rel.max():.2e}, {len(pts)} points")
    # RK2 on a field that is linear along z and quadratic in r, sampled trilinearly: the error is
    # the trilinear interpolation of u(r) (h²/R² scale, ≤ 0.5 % at r ≤ 0.8 R)
    assert rel.max() < 5e-3
    bolus = dict(t0_s=0.1, alpha=3.0, beta_s=0.2)
    for t in (0.3, 0.6, 1.0):
        c = concentration(tau, t, bolus)
        c_exact = gamma_variate(t - exact, **bolus)
        assert np.abs(c - c_exact).max() < 2e-2  # c_in' ≤ ~2.5/s times the τ error above


def test_fill_unreached_uses_the_nearest_reached_fluid():
    from pinngs.simulate.transport import fill_unreached

    x = np.linspace(0.0, 4.0, 41)
    pts = np.stack([x, np.zeros_like(x), np.zeros_like(x)], 1)
    tau = np.where(x <= 2.0, x / 100.0, np.inf)  # advected up to 2 mm, a dead zone beyond
    out, n = fill_unreached(pts, tau, d_mix_mm2_s=10.0, k=41)
    assert n == int((x > 2.0).sum())
    np.testing.assert_allclose(out[x <= 2.0], tau[x <= 2.0], rtol=1e-6)
    # the exact minimiser over reached y in [0, 2]: y = 2 (tau grows with y, but d² shrinks faster)
    expect = np.min(x[x <= 2.0][None] / 100.0 + (x[x > 2.0][:, None] - x[x <= 2.0][None]) ** 2 / 20.0, axis=1)
    np.testing.assert_allclose(out[x > 2.0], expect, rtol=1e-5)
    assert np.isfinite(out).all()
