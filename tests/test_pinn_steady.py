"""Steady flow in a lumen volume (pinngs.pinn.steady): the flux sections and the quasi-Poiseuille
start on a tube whose answer is known, and a short PINN fit that keeps the flux and lowers the
residuals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pinngs.flow.network import poiseuille_guess
from pinngs.flow.transit import section_areas
from pinngs.pinn.steady import SteadyConfig, build_domain, fit_steady_flow, section_mean_pressure
from pinngs.simulate.phantoms import straight_vessel
from pinngs.units import MU_BLOOD_PA_S as MU_BLOOD

R, Q, H = 1.5, 1000.0, 0.15


@pytest.fixture(scope="module")
def tube_domain():
    ph = straight_vessel("tube", radius_mm=R, length_mm=14.0, direction=(0.3, 0.2, 1.0))
    origin, shape = ph.grid(H, margin_mm=1.0)
    occ = ph.occupancy(origin, H, shape)
    cl = ph.branches[0].resampled(0.15)
    br = [np.column_stack([cl.points_mm, cl.radii_mm])[10:-10]]  # clear of the clipped ends
    areas = section_areas(br, occ, origin, H)
    return ph, build_domain(occ, origin, H, br, areas, [Q])


def exact(ph, pts):
    a, d = ph.axis_origin_mm, ph.axis_dir
    v = pts - a
    z = v @ d
    r2 = (v * v).sum(1) - z * z
    u = 2 * Q / (math.pi * R ** 2) * np.clip(1 - r2 / R ** 2, 0, None)
    return u[:, None] * d, -8 * MU_BLOOD * Q / (math.pi * R ** 4) * z


def test_domain_sections_and_poiseuille_guess(tube_domain):
    ph, dom = tube_domain
    assert len(dom.sections) >= 6 and all(s.branch == 0 for s in dom.sections)
    for sec in dom.sections:  # section areas are the lumen's
        assert sec.weights_mm2.sum() == pytest.approx(math.pi * R ** 2, rel=0.03)
    u, p = poiseuille_guess(dom, dom.interior_mm)
    ue, pe = exact(ph, dom.interior_mm)
    assert np.linalg.norm(u - ue) / np.linalg.norm(ue) < 0.05
    # pressure differences along the centerline are Poiseuille's
    a, b = dom.sections[0], dom.sections[-1]
    dp = poiseuille_guess(dom, a.centre_mm[None])[1][0] - poiseuille_guess(dom, b.centre_mm[None])[1][0]
    assert dp == pytest.approx(8 * MU_BLOOD * Q * (b.arc_mm - a.arc_mm) / (math.pi * R ** 4), rel=0.05)
    with pytest.raises(ValueError, match="positive flow rate"):
        build_domain(dom.occ, dom.origin_mm, H, dom.branches, dom.areas_mm2, [float("nan")])


def test_short_pinn_fit_keeps_flux_and_lowers_residuals(tube_domain):
    """200 physics steps after the supervised start: the momentum residual falls several-fold while
    the flux stays on Q and the field stays near Poiseuille (measured: residual 1.18 -> 0.07, flux
    within 1 %, velocity rel-L2 0.11; the start alone is 0.02, which the residual's second
    derivatives do not yet honour)."""
    ph, dom = tube_domain
    cfg = SteadyConfig(steps=200, batch_interior=256, batch_wall=256, width=32, depth=3)
    res = fit_steady_flow(dom, cfg, progress=False)
    h = res.history
    assert h[-1]["momentum"] < 0.2 * h[0]["momentum"]
    u, _ = res.evaluate(dom.interior_mm)
    ue, _ = exact(ph, dom.interior_mm)
    assert np.linalg.norm(u - ue) / np.linalg.norm(ue) < 0.15
    for sec in dom.sections:
        us, _ = res.evaluate(sec.points_mm)
        assert float((us @ sec.tangent * sec.weights_mm2).sum()) == pytest.approx(Q, rel=0.05)
    dp = section_mean_pressure(res, dom.sections[0]) - section_mean_pressure(res, dom.sections[-1])
    dp_exact = 8 * MU_BLOOD * Q * (dom.sections[-1].arc_mm - dom.sections[0].arc_mm) / (math.pi * R ** 4)
    print(f"tube PINN: dP {dp:.2f} Pa (exact {dp_exact:.2f}), velocity rel-L2 "
          f"{np.linalg.norm(u - ue) / np.linalg.norm(ue):.3f}")
    assert dp == pytest.approx(dp_exact, rel=0.25)


def test_work_energy_dp_of_exact_poiseuille(tube_domain):
    """The work-energy pressure drop of the exact Poiseuille field equals Poiseuille's ΔP: the
    dissipation integral over the lumen voxels between two sections, no pressure used."""
    import torch

    from pinngs.pinn import Scales
    from pinngs.pinn.steady import dp_work_energy, SteadyResult

    ph, dom = tube_domain
    s = Scales.for_vessel(R, Q / (math.pi * R ** 2), origin_mm=tuple(dom.interior_mm.mean(0)))
    d = torch.as_tensor(ph.axis_dir, dtype=torch.float32)
    a0 = torch.as_tensor(ph.axis_origin_mm, dtype=torch.float32)

    class Exact(torch.nn.Module):
        def forward(self, xt):  # non-dimensional in and out
            x = s.dim_xt(xt)[:, :3] - a0
            z = x @ d
            r2 = (x * x).sum(1) - z * z
            u = 2.0 * (1 - r2 / R ** 2).clamp(min=0)  # in units of the mean velocity
            return torch.cat([torch.zeros_like(z)[:, None], u[:, None] * d, torch.zeros_like(z)[:, None]], 1)

    res = SteadyResult(Exact(), s, SteadyConfig())
    a, b = dom.sections[1], dom.sections[-2]
    out = dp_work_energy(res, dom, a, b)
    exact_dp = 8 * MU_BLOOD * Q * (b.arc_mm - a.arc_mm) / (math.pi * R ** 4)
    print(f"work-energy dP {out['dp_pa']:.3f} Pa, exact {exact_dp:.3f}, Q {out['q_mm3_s']:.1f}")
    assert out["q_mm3_s"] == pytest.approx(Q, rel=0.03)
    assert abs(out["kinetic_flux_a"] - out["kinetic_flux_b"]) < 0.02 * out["dissipation_w"]
    assert out["dp_pa"] == pytest.approx(exact_dp, rel=0.05)
    with pytest.raises(ValueError, match="downstream"):
        dp_work_energy(res, dom, b, a)
