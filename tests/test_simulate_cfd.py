"""Checks of pinngs.simulate.cfd: analytic flows (Poiseuille, Womersley, Young-Tsai) and the
axisymmetric Taylor-Hood Navier-Stokes solver.  Units: mm, s, g; pressure in Pa."""
import time

import numpy as np
import pytest

from pinngs.units import MU_BLOOD_PA_S as MU_BLOOD, RHO_BLOOD_G_MM3 as RHO_BLOOD
from pinngs.laws import poiseuille_dp_pa, poiseuille_velocity, womersley_flow_rate, womersley_velocity, young_tsai_dp_pa
from pinngs.simulate.cfd import solve_axisymmetric, stenosis_radius

R0_MM = 1.5


def q_for_reynolds(re, radius_mm=R0_MM, rho=RHO_BLOOD, mu=MU_BLOOD):
    """Flow rate (mm^3/s) giving Re = rho U D / mu in a tube of the given radius."""
    u_mean = re * mu / (rho * 2 * radius_mm)
    return u_mean * np.pi * radius_mm ** 2


# ----------------------------------------------------------------------------------------------
# analytic helpers
# ----------------------------------------------------------------------------------------------
def test_analytic_helpers():
    q = 500.0
    # Poiseuille: integrates to Q, zero at the wall, centreline 2 U
    x, wg = np.polynomial.legendre.leggauss(8)
    r = 0.5 * R0_MM * (x + 1)
    q_num = 2 * np.pi * np.sum(0.5 * R0_MM * wg * poiseuille_velocity(r, R0_MM, q) * r)
    assert abs(q_num / q - 1) < 1e-12  # 8-point Gauss is exact for the cubic u r: round-off only
    assert poiseuille_velocity(R0_MM, R0_MM, q) == 0.0
    assert abs(poiseuille_velocity(0.0, R0_MM, q) - 2 * q / (np.pi * R0_MM ** 2)) < 1e-12

    # stenosis shape: throat r0 (1 - severity) at the centre, r0 beyond +-length/2, continuous
    zs = np.array([-10.0, -3.0, 0.0, 3.0, 10.0]) + 5.0
    rs = stenosis_radius(zs, R0_MM, 0.5, 6.0, z_centre_mm=5.0)
    np.testing.assert_allclose(rs, [R0_MM, R0_MM, 0.75, R0_MM, R0_MM], rtol=0, atol=1e-12)  # closed form

    # Young-Tsai: K_v term linear, K_t term quadratic and odd in Q
    lin = young_tsai_dp_pa(q, R0_MM, 0.75, 6.0, kt=0.0)
    kv = 32 * (0.83 * 6.0 + 1.64 * 1.5) / 3.0 * 16
    assert abs(lin - kv * MU_BLOOD * q / (np.pi * R0_MM ** 2 * 3.0)) < 1e-9 * lin  # same closed form
    full = young_tsai_dp_pa(np.array([q, -q]), R0_MM, 0.75, 6.0)
    assert full[0] > lin and abs(full[0] + full[1]) < 1e-9 * full[0]  # Q|Q| keeps the sign


# ----------------------------------------------------------------------------------------------
# Womersley
# ----------------------------------------------------------------------------------------------
def _radial_gauss(n, radius):
    x, wg = np.polynomial.legendre.leggauss(n)
    return 0.5 * radius * (x + 1), 0.5 * radius * wg


@pytest.mark.parametrize("alpha", [0.5, 3.0, 10.0])
def test_womersley_flow_rate_matches_profile_integral(alpha):
    a_pa_mm = 2.0 * np.exp(0.3j)  # complex amplitude: tests the phase handling too
    omega = (alpha / R0_MM) ** 2 * MU_BLOOD / RHO_BLOOD
    t = np.linspace(0.0, 2 * np.pi / omega, 13)
    r, wr = _radial_gauss(80, R0_MM)
    u = womersley_velocity(r[None, :], t[:, None], R0_MM, a_pa_mm, omega)
    q_num = 2 * np.pi * np.sum(u * r * wr, axis=1)
    q_formula = womersley_flow_rate(t, R0_MM, a_pa_mm, omega)
    err = np.abs(q_num - q_formula).max() / np.abs(q_formula).max()
    print(f"\nWomersley alpha={alpha}: |Q_formula - 2pi int u r dr| / max|Q| = {err:.2e}")
    # the profile is analytic in r; 80-point Gauss integrates it to round-off for alpha <= 10
    assert err < 1e-9


def test_womersley_satisfies_momentum_equation():
    # rho du/dt = Re{A e^{iwt}} + mu (u'' + u'/r), checked by central differences (O(h^2) error)
    alpha, a_pa_mm = 4.0, 1.5
    omega = (alpha / R0_MM) ** 2 * MU_BLOOD / RHO_BLOOD
    r = np.linspace(0.2, 1.4, 7)[:, None]
    t = np.linspace(0, 2 * np.pi / omega, 9)[None, :]
    hr, ht = 1e-3, 1e-3 / omega

    def u(rr, tt):
        return womersley_velocity(rr, tt, R0_MM, a_pa_mm, omega)

    dudt = (u(r, t + ht) - u(r, t - ht)) / (2 * ht)
    d2 = (u(r + hr, t) - 2 * u(r, t) + u(r - hr, t)) / hr ** 2
    d1 = (u(r + hr, t) - u(r - hr, t)) / (2 * hr)
    res = RHO_BLOOD * dudt - (a_pa_mm * np.cos(omega * t) + MU_BLOOD * (d2 + d1 / r))
    scale = a_pa_mm
    print(f"\nWomersley momentum residual / A = {np.abs(res).max() / scale:.2e}")
    # finite-difference truncation (h^2 ~ 1e-6 relative) plus cancellation in the second difference
    assert np.abs(res).max() / scale < 1e-4
    u_wall = np.abs(u(np.array([[R0_MM]]), t)).max()
    assert u_wall < 1e-9 * np.abs(u(r, t)).max()  # no slip: J0(k r/R)/J0(k) = 1 at r = R, round-off only


def test_womersley_small_alpha_is_quasi_steady_poiseuille():
    a_pa_mm = 2.0
    r = np.linspace(0.0, R0_MM, 41)
    errs = []
    for alpha in (0.05, 0.1):
        omega = (alpha / R0_MM) ** 2 * MU_BLOOD / RHO_BLOOD
        t = np.linspace(0, 2 * np.pi / omega, 25)[:, None]
        u = womersley_velocity(r[None, :], t, R0_MM, a_pa_mm, omega)
        grad = a_pa_mm * np.cos(omega * t)  # instantaneous -dp/dz
        u_p = grad * (R0_MM ** 2 - r[None, :] ** 2) / (4 * MU_BLOOD)
        err = np.abs(u - u_p).max() / np.abs(u_p).max()
        errs.append(err)
        print(f"\nWomersley alpha={alpha}: max |u - u_Poiseuille(t)| / max|u_P| = {err:.2e}")
        # leading correction of the low-frequency expansion is (3/16) alpha^2 relative: 4.7e-4 at 0.05
        assert err < 0.25 * alpha ** 2
    # the discrepancy is O(alpha^2): halving alpha divides it by ~4
    assert 3.5 < errs[1] / errs[0] < 4.5


# ----------------------------------------------------------------------------------------------
# axisymmetric FEM: Poiseuille tube
# ----------------------------------------------------------------------------------------------
def test_fem_poiseuille_tube():
    length = 30.0
    q = q_for_reynolds(100.0)
    t0 = time.perf_counter()
    flow = solve_axisymmetric(np.array([0.0, length]), np.array([R0_MM, R0_MM]), q, n_axial=60, n_radial=12)
    elapsed = time.perf_counter() - t0

    r = np.linspace(0.0, R0_MM, 61)
    ur, uz, p = flow.sample(r, np.full_like(r, 15.0))
    ua = poiseuille_velocity(r, R0_MM, q)
    err_u = np.linalg.norm(uz - ua) / np.linalg.norm(ua)
    dp = flow.dp_between(5.0, 25.0)
    dp_ref = poiseuille_dp_pa(20.0, R0_MM, q)
    err_dp = abs(dp / dp_ref - 1)
    qs = np.array([flow.flow_rate(z) for z in np.linspace(0, length, 13)])
    err_q = np.abs(qs / q - 1).max()
    print(f"\nPoiseuille FEM (Re=100, Q={q:.1f} mm^3/s, {flow.info['n_dofs']} dofs, {elapsed:.2f} s, "
          f"{flow.info['iterations']} it): rel L2 u_z = {err_u:.2e}, dP(5..25) = {dp:.4f} Pa vs {dp_ref:.4f} Pa "
          f"(rel {err_dp:.2e}), max |Q(z)/Q - 1| = {err_q:.2e}, max |u_r| = {np.abs(ur).max():.2e} mm/s")
    # spec tolerances (1 %, 1 %, 0.5 %); in fact the parabola lies in P2 and the linear pressure in P1,
    # so Taylor-Hood reproduces Poiseuille to round-off and the numbers above are ~1e-12
    assert err_u <= 0.01
    assert err_dp <= 0.01
    assert err_q <= 0.005
    assert np.abs(ur).max() < 1e-6 * ua.max()  # exact solution has u_r = 0: round-off only
    assert abs(flow.section_mean_pressure(length)) < 1e-6 * dp_ref  # do-nothing outlet: mean p = 0

    # inputs are validated
    with pytest.raises(ValueError):
        solve_axisymmetric(np.array([0.0, 0.0]), np.array([R0_MM, R0_MM]), q)

    # outside the lumen: zero velocity, NaN pressure
    ur_o, uz_o, p_o = flow.sample(np.array([R0_MM * 1.01, 0.5, 0.5]), np.array([10.0, -1.0, length + 1]))
    assert np.all(ur_o == 0) and np.all(uz_o == 0) and np.all(np.isnan(p_o))


# ----------------------------------------------------------------------------------------------
# axisymmetric FEM: 50 % stenosis
# ----------------------------------------------------------------------------------------------
STEN_Z = np.linspace(-15.0, 45.0, 601)  # 5 D upstream, 13 D downstream of the 6 mm stenosis
STEN_R = stenosis_radius(STEN_Z, R0_MM, 0.5, 6.0)
STEN_RE = 100.0  # inlet Re (throat Re 200): the jet has recovered (Poiseuille gradient) well before the outlet
BASE = (120, 16)
SCALES = (1.0, 1.5, 2.0)


@pytest.fixture(scope="module")
def stenosis_runs():
    q = q_for_reynolds(STEN_RE)
    runs = []
    for s in SCALES:
        t0 = time.perf_counter()
        flow = solve_axisymmetric(STEN_Z, STEN_R, q, n_axial=int(round(BASE[0] * s)), n_radial=int(round(BASE[1] * s)))
        runs.append((s, flow, time.perf_counter() - t0))
    return q, runs


def test_fem_stenosis_mesh_convergence(stenosis_runs):
    q, runs = stenosis_runs
    dps = np.array([flow.dp_pa for _, flow, _ in runs])
    print(f"\n50 % stenosis, Re_in = {STEN_RE:g} (Q = {q:.1f} mm^3/s):")
    for (s, flow, sec), dp in zip(runs, dps):
        print(f"  mesh x{s:g} ({flow.info['n_axial']}x{flow.info['n_radial']}, {flow.info['n_dofs']} dofs, "
              f"{flow.info['iterations']} it, {sec:.1f} s): dP = {dp:.3f} Pa")
    ch = np.abs(np.diff(dps)) / dps[1:]
    print(f"  change x1->x1.5: {100 * ch[0]:.3f} %, x1.5->x2: {100 * ch[1]:.3f} %")
    # 2 %: the requested mesh-independence criterion for dP between the two finest meshes
    assert ch[1] <= 0.02
    # and the flow rate is conserved through the stenosis on the finest mesh; Taylor-Hood conserves
    # mass only weakly (div u = 0 against P1), so allow 0.5 %
    fine = runs[-1][1]
    qz = np.array([fine.flow_rate(z) for z in (-15.0, -2.0, 0.0, 1.5, 10.0, 45.0)])
    print(f"  finest mesh max |Q(z)/Q - 1| = {np.abs(qz / q - 1).max():.2e}")
    assert np.abs(qz / q - 1).max() <= 0.005


def test_fem_not_converged_raises():
    z = np.linspace(-5.0, 15.0, 81)
    with pytest.raises(RuntimeError, match="did not converge"):
        solve_axisymmetric(z, stenosis_radius(z, R0_MM, 0.5, 6.0), q_for_reynolds(200.0), n_axial=30, n_radial=6,
                           max_iter=2)


def test_fem_stenosis_vs_young_tsai(stenosis_runs):
    q, runs = stenosis_runs
    fine = runs[-1][1]
    length_total = STEN_Z[-1] - STEN_Z[0]
    ls, rs = 6.0, 0.75

    def stenosis_loss(flow, qq):
        # Young-Tsai models the loss of the stenosis only; remove the Poiseuille loss of the
        # unobstructed tube outside the stenosis (its viscous loss inside is part of K_v)
        return flow.dp_pa - poiseuille_dp_pa(length_total - ls, R0_MM, qq)

    dp_fem = stenosis_loss(fine, q)
    dp_yt = young_tsai_dp_pa(q, R0_MM, rs, ls)
    ratio = dp_fem / dp_yt
    print(f"\nYoung-Tsai, Re_in = {STEN_RE:g}: FEM total dP = {fine.dp_pa:.2f} Pa, FEM stenosis loss "
          f"(total - Poiseuille of {length_total - ls:g} mm) = {dp_fem:.2f} Pa, Young-Tsai = {dp_yt:.2f} Pa; "
          f"ratio FEM/YT = {ratio:.3f} (raw total/YT = {fine.dp_pa / dp_yt:.3f})")
    # Band 0.25-2: Young-Tsai is an empirical model calibrated on other (blunt-ended) stenosis
    # shapes; we report the ratio, not a match.  For this smooth cosine throat its viscous
    # coefficient K_v mu/(A0 D0) is ~3.6x the Poiseuille resistance int 8 mu/(pi R(z)^4) dz of the
    # narrowing itself and K_t = 1.52 exceeds Borda-Carnot (1.0), so it over-predicts here, most at
    # low Re (ratio ~0.3 at Re 25, ~0.45 at Re 300 on the coarse mesh).  A ratio far outside the band
    # would mean a unit or formula error (factor 4 = radius/diameter, 1e3 = unit), not model scatter.
    assert 0.25 <= ratio <= 2.0
    # physical lower bound: the stenosis costs at least the Poiseuille loss of the narrowing itself
    x, wg = np.polynomial.legendre.leggauss(64)
    zz = 0.5 * ls * x
    vis = np.sum(0.5 * ls * wg * 8 * MU_BLOOD * q / (np.pi * stenosis_radius(zz, R0_MM, 0.5, ls) ** 4))
    print(f"  Poiseuille loss of the narrowing alone = {vis:.2f} Pa")
    assert dp_fem > vis

    # trend: both grow with Q (coarsest mesh, Q x1.5)
    q2 = 1.5 * q
    t0 = time.perf_counter()
    flow2 = solve_axisymmetric(STEN_Z, STEN_R, q2, n_axial=BASE[0], n_radial=BASE[1])
    coarse = runs[0][1]
    fem1, fem2 = stenosis_loss(coarse, q), stenosis_loss(flow2, q2)
    yt1, yt2 = young_tsai_dp_pa(q, R0_MM, rs, ls), young_tsai_dp_pa(q2, R0_MM, rs, ls)
    print(f"  trend (mesh x1): Q {q:.1f} -> {q2:.1f} mm^3/s: FEM {fem1:.2f} -> {fem2:.2f} Pa, "
          f"YT {yt1:.2f} -> {yt2:.2f} Pa; ratio {fem1 / yt1:.3f} -> {fem2 / yt2:.3f} "
          f"({time.perf_counter() - t0:.1f} s)")
    assert fem2 > fem1 and yt2 > yt1  # monotone in Q
    # both superlinear (inertial Q|Q| part): dP grows faster than Q
    assert fem2 / fem1 > 1.5 and yt2 / yt1 > 1.5
