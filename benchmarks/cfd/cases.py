"""The CFD comparison cases (issue 6) and their reference solutions.

A case is a vessel, a flow rate and a fluid, plus how its reference is obtained:

* ``poiseuille``   : analytic (Hagen-Poiseuille), exact.
* ``womersley``    : analytic (Womersley 1955) steady + oscillatory flow, cross-checked by a
                     Crank-Nicolson finite-difference solve of the same 1D radial problem at three
                     radial resolutions.
* ``axisymmetric`` : ``pinngs.simulate.cfd.solve_axisymmetric`` (scikit-fem Taylor-Hood P2-P1,
                     steady Navier-Stokes) on three meshes; the finest is the reference and the ΔP
                     change between the two finest is the convergence figure (must be ≤ 2 %).
* ``tet``          : ``pinngs.flow.fem.solve_tet`` (3D Taylor-Hood on tetrahedra) on three
                     meshes (elements per radius), same convergence rule; "reference pending" while that module is
                     not in the tree.

Every reference is wrapped so that it can be sampled at world points (mm) like the simulator's
phantoms: ``sample(pts [N, 3]) -> (vel [N, 3] mm/s, p [N] Pa)``, NaN pressure outside the lumen.

Units: mm, s, g; pressure in Pa (1 g mm⁻¹ s⁻² = 1 Pa).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from pinngs.units import MU_BLOOD_PA_S as MU_BLOOD, RHO_BLOOD_G_MM3 as RHO_BLOOD
from pinngs.laws import poiseuille_dp_pa, poiseuille_velocity, womersley_flow_rate, womersley_number, womersley_velocity
from pinngs.simulate.cfd import solve_axisymmetric
from pinngs.simulate.phantoms import Branch, Phantom, straight_vessel
from pinngs.simulate.presets import BIPLANE, FOUR, PRESETS, Acquisition, Preset

CONVERGENCE_TOL_PERCENT = 2.0  # issue 6: ΔP change between the two finest meshes
# 3D meshes: elements per local radius (flow.fem.mesh_lumen), coarse -> fine. P2 velocity on a curved
# wall; what a 2-core / 23 GB box can hold for a 40 mm vessel (override with run.py --tet-levels)
TET_LEVELS = (1.5, 2.0, 2.5)
TET_QUICK_LEVELS = (1.0, 1.5, 2.0)

# ------------------------------------------------------------------------------------------------
# FDA critical-path nozzle (Hariharan et al., J Biomech Eng 133:041002, 2011), throat Re 500
# ------------------------------------------------------------------------------------------------
FDA_RHO = 1.056e-3  # g/mm³ (1056 kg/m³)
FDA_MU = 3.5e-3  # Pa s = g/(mm s)
FDA_R_TUBE_MM = 6.0  # 12 mm tube
FDA_R_THROAT_MM = 2.0  # 4 mm throat
FDA_THROAT_MM = 40.0
FDA_CONE_MM = (FDA_R_TUBE_MM - FDA_R_THROAT_MM) / math.tan(math.radians(10.0))  # 20° total angle: 22.685 mm
FDA_INLET_MM = 30.0  # straight tube upstream of the cone (the inlet profile is fully developed)
FDA_OUTLET_MM = 250.0  # downstream of the sudden expansion: the Re-500 jet and its recirculation
FDA_RAMP_MM = 0.1  # the sudden expansion as a 0.1 mm radial ramp (R(z) must be a function)
FDA_RE_THROAT = 500.0


def fda_q_mm3_s(re_throat: float = FDA_RE_THROAT) -> float:
    """Q = Re μ π d / (4 ρ) with the throat diameter d (Re 500: 5.206e3 mm³/s = 5.206e-6 m³/s)."""
    return re_throat * FDA_MU * math.pi * 2 * FDA_R_THROAT_MM / (4 * FDA_RHO)


def fda_profile() -> tuple[np.ndarray, np.ndarray, float]:
    """(z_mm, R_mm, z_expansion_mm): the nozzle as R(z), z = 0 at the inlet. The literature puts
    z = 0 at the sudden expansion; ``z_expansion_mm`` is where that lies here."""
    z_cone = FDA_INLET_MM
    z_throat = z_cone + FDA_CONE_MM
    z_exp = z_throat + FDA_THROAT_MM
    z = np.array([0.0, z_cone, z_throat, z_exp, z_exp + FDA_RAMP_MM, z_exp + FDA_OUTLET_MM])
    r = np.array([FDA_R_TUBE_MM, FDA_R_TUBE_MM, FDA_R_THROAT_MM, FDA_R_THROAT_MM, FDA_R_TUBE_MM, FDA_R_TUBE_MM])
    return z, r, z_exp


def fda_phantom() -> Phantom:
    """The nozzle as a straight axisymmetric phantom along +z (world = axial frame)."""
    z, r, z_exp = fda_profile()
    zz = np.arange(0.0, z[-1] + 1e-9, 0.1)
    rr = np.interp(zz, z, r)
    pts = np.column_stack([np.zeros_like(zz), np.zeros_like(zz), zz])
    return Phantom("fda_nozzle", [Branch(pts, rr)], axisymmetric=True, axis_origin_mm=pts[0],
                   axis_dir=np.array([0.0, 0.0, 1.0]), axial_profile=(z, r),
                   meta={"z_expansion_mm": z_exp, "ramp_mm": FDA_RAMP_MM})


# Published / second-hand values the FDA reference is checked against (see README.md for sources)
FDA_LITERATURE = {
    "centerline_velocity_at_expansion_m_s": {
        "values": {"OpenFOAM, parabolic inlet": 0.772, "OpenFOAM, uniform inlet": 0.747},
        "kind": "sanity range (third-party OpenFOAM V&V, not PIV)",
        "source": "third-party OpenFOAM v2506 V&V of the FDA nozzle at Re 500 (2M-cell mesh, GCI < 2.5 %), "
                  "README 'FDA Nozzle Benchmark - CFD Validation & Verification Portfolio' §5; repository "
                  "not identified (see /work/shared/references/flow-physics-and-clinical.md §4)"},
    "pressure_drop_pa": {
        "values": {"OpenFOAM, parabolic inlet": 317.1, "OpenFOAM, uniform inlet": 299.6},
        "kind": "sanity range (same third-party V&V; measurement stations not stated there)",
        "source": "same README §5"},
    "jet_width_at_expansion_mm": {
        "values": {"PIV (as quoted by the V&V)": 3.01, "OpenFOAM": 3.00},
        "kind": "PIV of Hariharan et al. 2011 as quoted second-hand by the same V&V (§2, 'Jet Width')",
        "source": "Hariharan et al., J Biomech Eng 133:041002 (2011), via the V&V README §2"},
    "mean_throat_velocity_m_s": {
        "values": {"definition Re = ρ U d / μ": FDA_RE_THROAT * FDA_MU / (FDA_RHO * 2 * FDA_R_THROAT_MM) / 1000.0},
        "kind": "exact by definition (mass conservation)", "source": "Re definition"},
}


# ------------------------------------------------------------------------------------------------
# Presets for pinngs on simulated DSA (the registry's where it has the same phantom)
# ------------------------------------------------------------------------------------------------
def _sten(sev: float, mode: str) -> Preset:
    pct = int(round(100 * sev))
    name = f"stenosis{pct}-{'biplane' if mode == 'biplane' else '4view'}"
    if name in PRESETS:
        return PRESETS[name]
    acq = Acquisition("biplane", BIPLANE) if mode == "biplane" else Acquisition("multiview", FOUR)
    return Preset(name, f"axisymmetric {pct} % stenosis (6 mm long) in a 1.5 mm tube, {mode}",
                  lambda: straight_vessel(f"stenosis{pct}", severity=sev), acq, flow="fem")


def _other(base: str, mode: str) -> Preset:
    """The registry preset ``base`` with the other acquisition (2 <-> 4 views)."""
    stem = base.rsplit("-", 1)[0]
    name = f"{stem}-{'biplane' if mode == 'biplane' else '4view'}"
    if name in PRESETS:
        return PRESETS[name]
    b = PRESETS[base]
    acq = Acquisition("biplane", BIPLANE) if mode == "biplane" else Acquisition("multiview", FOUR)
    desc = b.description.replace("4-view cine", f"{mode} cine").replace("biplane cine", f"{mode} cine")
    return Preset(name, desc, b.phantom, acq, q_mm3_s=b.q_mm3_s, flow=b.flow, bolus=b.bolus,
                  mu_peak_per_mm=b.mu_peak_per_mm, noise=b.noise)


def _views(base_name: str) -> dict[int, Preset]:
    return {2: _other(base_name, "biplane"), 4: _other(base_name, "multiview")}


# ------------------------------------------------------------------------------------------------
# the case registry
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One benchmark case. ``levels``: mesh levels coarse -> fine (axisymmetric: resolution factors
    on ``base_mesh`` = (n_axial, n_radial); tet: elements per radius); ``quick_levels`` replaces them
    in --quick. ``views``: pinngs-on-DSA presets by view count ({} with ``pinngs_note`` if not run)."""

    key: str
    title: str
    reference: Literal["poiseuille", "womersley", "axisymmetric", "tet"]
    phantom: Callable[[], Phantom] | None
    q_mm3_s: float
    rho: float = RHO_BLOOD
    mu: float = MU_BLOOD
    levels: tuple[float, ...] = ()
    quick_levels: tuple[float, ...] | None = None
    base_mesh: tuple[int, int] = (120, 16)
    views: dict = field(default_factory=dict)
    pinngs_note: str = ""
    young_tsai: str = "applies"  # "applies" | a reason it does not / what it reduces to
    quick: bool = False  # part of --quick
    quick_pinngs: tuple[int, ...] = ()  # view counts run by pinngs in --quick
    notes: str = ""


NO_PULSATILE = ("not run: pinngs has no pulsatile (time-dependent) flow mode yet; its steady PINN "
                "fits one time-independent field")
_FDA_LEN_MM = FDA_INLET_MM + FDA_CONE_MM + FDA_THROAT_MM + FDA_OUTLET_MM
FDA_NOT_RUN = (f"not run: a 12 mm x {_FDA_LEN_MM:.0f} mm vessel needs a ~120x120x{10 * _FDA_LEN_MM:.0f} lumen grid at the "
               f"simulator's 0.1 mm ({120 * 120 * 10 * _FDA_LEN_MM / 1e6:.0f} M voxels, ~30x the coronary phantoms) and "
               "its flow is a free jet with recirculation; out of this CPU budget")

CASES: dict[str, Case] = {c.key: c for c in [
    Case("poiseuille", "Poiseuille tube (R 1.5 mm, 40 mm, Q 1 ml/s)", "poiseuille",
         lambda: straight_vessel("tube"), 1000.0, views=_views("tube-biplane"),
         young_tsai="reduces to Poiseuille (no lesion)", quick=True, quick_pinngs=(2,)),
    Case("womersley", "Womersley tube (R 1.5 mm, α = 3; mean Q 1 ml/s, oscillating gradient 0.5x the mean one)", "womersley",
         None, 1000.0, levels=(25, 50, 100), pinngs_note=NO_PULSATILE,
         young_tsai="not applicable (steady model, no lesion); quasi-steady Poiseuille shown instead", quick=True),
    Case("stenosis30", "axisymmetric 30 % stenosis (cosine, 6 mm) in R 1.5 mm", "axisymmetric",
         lambda: straight_vessel("stenosis30", severity=0.3), 1000.0, levels=(1.0, 1.5, 2.0),
         quick_levels=(0.5, 1.0, 1.5), views={2: _sten(0.3, "biplane"), 4: _sten(0.3, "multiview")}),
    Case("stenosis50", "axisymmetric 50 % stenosis (cosine, 6 mm) in R 1.5 mm", "axisymmetric",
         lambda: straight_vessel("stenosis50", severity=0.5), 1000.0, levels=(1.0, 1.5, 2.0),
         quick_levels=(0.5, 1.0, 1.5), views={2: _sten(0.5, "biplane"), 4: _sten(0.5, "multiview")},
         quick=True, quick_pinngs=(2,)),
    Case("stenosis70", "axisymmetric 70 % stenosis (cosine, 6 mm) in R 1.5 mm", "axisymmetric",
         lambda: straight_vessel("stenosis70", severity=0.7), 1000.0, levels=(1.0, 1.5, 2.0),
         quick_levels=(0.5, 1.0, 1.5), views={2: _sten(0.7, "biplane"), 4: _sten(0.7, "multiview")}),
    Case("eccentric60", "eccentric 60 % stenosis (cosine, 6 mm, offset 0.45 mm) in R 1.5 mm", "tet",
         PRESETS["eccentric60-4view"].phantom, 1000.0, levels=(2.5, 3.0, 3.5),
         quick_levels=(2.0, 2.5, 3.0), views=_views("eccentric60-4view")),  # the throat jet (Re ~320)
    # does not reach a steady state below n = 2; ΔP 450.2 / 497.2 / 518.9 / 535.1 Pa at n = 2 / 2.5 / 3 / 3.5
    Case("bifurcation", "Murray bifurcation (r0 1.6 mm, 60°, r1/r2 0.8)", "tet",
         PRESETS["bifurcation-4view"].phantom, 1000.0, levels=TET_LEVELS,
         quick_levels=TET_QUICK_LEVELS, views=_views("bifurcation-4view"),
         young_tsai="reduces to Poiseuille along the parent (no lesion graded)"),
    Case("curved", "curved vessel (R 1.4 mm, 90° bend of radius 25 mm, Dean flow)", "tet",
         PRESETS["curved-biplane"].phantom, 1000.0, levels=TET_LEVELS,
         quick_levels=TET_QUICK_LEVELS, views=_views("curved-biplane"),
         young_tsai="reduces to Poiseuille along the centerline (no lesion graded)"),
    Case("fda_nozzle", "FDA nozzle, throat Re 500 (12 mm tube, 4 mm throat, 20° cone, sudden expansion)",
         "axisymmetric", fda_phantom, fda_q_mm3_s(), rho=FDA_RHO, mu=FDA_MU, levels=(0.71, 1.0, 1.41),
         quick_levels=(0.5, 0.71, 1.0), base_mesh=(200, 24), pinngs_note=FDA_NOT_RUN,
         young_tsai="applied with L_s = cone + throat (62.7 mm); outside its calibration (long throat, "
                    "sudden expansion)", quick=True,
         notes=f"sudden expansion as a {FDA_RAMP_MM} mm ramp in R(z), widened by the mesh to one axial element; "
               f"inlet tube {FDA_INLET_MM:g} mm with a Poiseuille profile, outlet tube {FDA_OUTLET_MM:g} mm"),
    Case("aneurisk_C0015", "real ICA (AneuRisk C0015, first 40 mm of centerline 0)", "tet",
         PRESETS["aneurisk-4view"].phantom, 1000.0, levels=TET_LEVELS,
         quick_levels=TET_QUICK_LEVELS, views=_views("aneurisk-4view")),
]}


def quick_cases() -> list[str]:
    return [k for k, c in CASES.items() if c.quick]


# ------------------------------------------------------------------------------------------------
# references on world points
# ------------------------------------------------------------------------------------------------
@dataclass
class Reference:
    """A converged reference flow, sampled at world points. ``convergence``: one dict per mesh level
    (coarse -> fine) with at least ``dp_pa`` and ``seconds``; ``change_percent``: |ΔP_finest /
    ΔP_next - 1| in %."""

    kind: str
    sample: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # pts [N, 3] -> vel [N, 3], p [N]
    lumen_points: Callable[[float], np.ndarray]  # spacing_mm -> pts [N, 3] inside the lumen
    dp_pa: float  # inlet minus outlet section-mean pressure of branch 0 (Pa)
    convergence: list[dict]
    seconds: float
    extra: dict = field(default_factory=dict)
    axial: object = None  # the AxiFlow (axisymmetric cases), for axial figures
    conv_key: str = "dp_pa"  # the figure whose change between the two finest levels is reported

    @property
    def change_percent(self) -> float | None:
        if len(self.convergence) < 2:
            return 0.0 if self.convergence and self.convergence[-1].get("exact") else None
        a, b = self.convergence[-2][self.conv_key], self.convergence[-1][self.conv_key]
        return float(100 * abs(b / a - 1))

    @property
    def converged(self) -> bool:
        c = self.change_percent
        return c is not None and c <= CONVERGENCE_TOL_PERCENT


def _axis_frame(ph: Phantom):
    o = np.asarray(ph.axis_origin_mm, float)
    d = np.asarray(ph.axis_dir, float)
    d = d / np.linalg.norm(d)
    a = np.array([1.0, 0, 0]) if abs(d[0]) < 0.9 else np.array([0, 1.0, 0])
    n1 = np.cross(d, a)
    n1 /= np.linalg.norm(n1)
    return o, d, n1, np.cross(d, n1)


def axial_coords(ph: Phantom, pts: np.ndarray):
    """(r [N], z [N], e_r [N, 3]) of world points in an axisymmetric phantom's frame."""
    o, d, _, _ = _axis_frame(ph)
    P = np.asarray(pts, float) - o
    z = P @ d
    rad = P - z[:, None] * d
    r = np.linalg.norm(rad, axis=1)
    er = np.zeros_like(rad)
    np.divide(rad, r[:, None], out=er, where=r[:, None] > 1e-12)
    return r, z, er


def axisymmetric_lumen_points(ph: Phantom, spacing_mm: float) -> np.ndarray:
    """World points on a grid of the given spacing (aligned with the axis frame) inside r < R(z)."""
    o, d, n1, n2 = _axis_frame(ph)
    z_prof, r_prof = ph.axial_profile
    rmax = float(np.max(r_prof))
    z = np.arange(0.5 * spacing_mm, z_prof[-1], spacing_mm)
    g = np.arange(-rmax + 0.5 * spacing_mm, rmax, spacing_mm)
    Z, X, Y = np.meshgrid(z, g, g, indexing="ij")
    keep = np.hypot(X, Y) < np.interp(Z, z_prof, r_prof)
    return o + Z[keep][:, None] * d + X[keep][:, None] * n1 + Y[keep][:, None] * n2


def _axi_sampler(ph: Phantom, sample_rz):
    """World sampler from an (r, z) -> (u_r, u_z, p) one (p NaN outside)."""
    _, d, _, _ = _axis_frame(ph)

    def sample(pts):
        r, z, er = axial_coords(ph, pts)
        ur, uz, p = sample_rz(r, z)
        return ur[:, None] * er + uz[:, None] * d, p
    return sample


def poiseuille_reference(case: Case) -> Reference:
    """Exact Hagen-Poiseuille in the straight tube phantom (R, L from the phantom)."""
    t0 = time.perf_counter()
    ph = case.phantom()
    z_prof, r_prof = ph.axial_profile
    R, L = float(r_prof[0]), float(z_prof[-1])
    G = poiseuille_dp_pa(1.0, R, case.q_mm3_s, case.mu)  # Pa/mm

    def rz(r, z):
        inside = (z >= 0) & (z <= L) & (r <= R)
        uz = np.where(inside, poiseuille_velocity(r, R, case.q_mm3_s), 0.0)
        return np.zeros_like(uz), uz, np.where(inside, G * (L - z), np.nan)
    dp = poiseuille_dp_pa(L, R, case.q_mm3_s, case.mu)
    return Reference("analytic (Hagen-Poiseuille)", _axi_sampler(ph, rz), lambda h: axisymmetric_lumen_points(ph, h),
                     dp, [{"level": "exact", "dp_pa": dp, "seconds": 0.0, "exact": True}],
                     time.perf_counter() - t0, extra={"radius_mm": R, "length_mm": L, "gradient_pa_mm": G})


def axisymmetric_reference(case: Case, levels: tuple[float, ...], log=print) -> Reference:
    """solve_axisymmetric on the case's R(z) at each resolution factor; the finest is the reference."""
    ph = case.phantom()
    z_prof, r_prof = ph.axial_profile
    conv, flow, prev = [], None, None
    t0 = time.perf_counter()
    for f in levels:
        prev = flow
        na, nr = int(round(f * case.base_mesh[0])), int(round(f * case.base_mesh[1]))
        flow = solve_axisymmetric(z_prof, r_prof, case.q_mm3_s, rho=case.rho, mu=case.mu, n_axial=na, n_radial=nr,
                                  max_iter=60)
        conv.append({"level": f, "n_axial": na, "n_radial": nr, "n_dofs": flow.info["n_dofs"],
                     "iterations": flow.info["iterations"], "dp_pa": flow.dp_pa, "seconds": flow.info["seconds"],
                     "q_outlet_mm3_s": flow.flow_rate(float(z_prof[-1]))})
        log(f"    {case.key}: mesh {na}x{nr} ({flow.info['n_dofs']} DOFs) ΔP {flow.dp_pa:.2f} Pa "
            f"in {flow.info['seconds']:.1f} s")

    def rz(r, z):
        return flow.sample(r, z)

    def rz_prev(r, z):
        return prev.sample(r, z)
    ref = Reference(f"scikit-fem axisymmetric P2-P1, finest {conv[-1]['n_axial']}x{conv[-1]['n_radial']}",
                    _axi_sampler(ph, rz), lambda h: axisymmetric_lumen_points(ph, h), flow.dp_pa, conv,
                    time.perf_counter() - t0, axial=flow)
    if prev is not None:
        ref.extra["prev_sample"] = _axi_sampler(ph, rz_prev)  # for the convergence error map
    if case.key == "fda_nozzle":
        ref.extra.update(fda_check(flow, conv))
    return ref


def fda_check(flow, conv: list[dict]) -> dict:
    """Reference figures compared with the literature (FDA_LITERATURE): centreline velocity and jet
    width (FWHM of u_z, as the V&V defines 'jet width') at the sudden expansion, ΔP."""
    _, _, z_exp = fda_profile()
    r = np.linspace(0.0, FDA_R_TUBE_MM, 1201)
    _, uz, _ = flow.sample(r, np.full_like(r, z_exp - 1e-6))
    u0 = float(uz[0])
    half = np.nonzero(uz < 0.5 * u0)[0][0]
    r_half = float(np.interp(0.5 * u0, [uz[half], uz[half - 1]], [r[half], r[half - 1]]))
    z0 = float(flow.z_nodes_mm[0])
    z1 = float(flow.z_nodes_mm[-1])
    out = {
        "q_mm3_s": flow.q_mm3_s, "z_expansion_mm": z_exp,
        "centerline_velocity_at_expansion_m_s": u0 / 1000.0,
        "jet_width_at_expansion_mm": 2 * r_half,
        "mean_throat_velocity_m_s": flow.q_mm3_s / (math.pi * FDA_R_THROAT_MM ** 2) / 1000.0,
        "dp_inlet_outlet_pa": flow.dp_pa,
        "dp_z-88mm_to_outlet_pa": flow.dp_between(z_exp - 88.0, z1),
        "dp_z-88mm_to_z+80mm_pa": flow.dp_between(z_exp - 88.0, z_exp + 80.0),
        "domain_mm": [z0 - z_exp, z1 - z_exp],
        "centerline_velocity_at_z+32mm_m_s": float(flow.sample(np.array([0.0]), np.array([z_exp + 32.0]))[1][0]) / 1000,
        "centerline_velocity_at_z+80mm_m_s": float(flow.sample(np.array([0.0]), np.array([z_exp + 80.0]))[1][0]) / 1000,
    }
    # the jet: does the centreline flow recirculate next to the wall downstream? (reattachment)
    zz = np.linspace(z_exp + 0.5, z1 - 1.0, 2000)
    _, uw, _ = flow.sample(np.full_like(zz, 0.95 * FDA_R_TUBE_MM), zz)
    neg = np.nonzero(uw < 0)[0]
    out["reattachment_z_mm"] = float(zz[neg[-1]] - z_exp) if len(neg) else None
    return out


def tet_available() -> bool:
    try:
        from pinngs.flow import fem as cfd3d  # noqa: F401
    except ImportError:
        return False
    return hasattr(cfd3d, "solve_tet")


def tet_reference(case: Case, levels: tuple[float, ...], log=print) -> Reference:
    """pinngs.flow.fem.solve_tet at each mesh level (coarse -> fine): ``levels`` are
    ``n_per_radius`` (elements per local radius) when solve_tet takes it, else element sizes h_mm.
    The finest is the reference."""
    import inspect

    from pinngs.flow.fem import solve_tet

    by_n = "n_per_radius" in inspect.signature(solve_tet).parameters
    ph = case.phantom()
    conv, flow = [], None
    t0 = time.perf_counter()
    for lv in levels:
        kw = {"n_per_radius": lv} if by_n else {"h_mm": lv}
        t1 = time.perf_counter()
        flow = solve_tet(ph, case.q_mm3_s, rho=case.rho, mu=case.mu, max_iter=40, **kw)
        info = dict(flow.info)
        conv.append({"level": lv, **kw, "n_tets": info.get("n_tets"), "n_dofs": info.get("n_dofs"),
                     "iterations": info.get("iterations"), "dp_pa": float(flow.dp_pa),
                     "seconds": info.get("seconds", time.perf_counter() - t1),
                     "outlet_flows_mm3_s": list(getattr(flow, "outlet_flows_mm3_s", []) or [])})
        log(f"    {case.key}: tet {kw} ({info.get('n_dofs')} DOFs) ΔP {flow.dp_pa:.2f} Pa "
            f"in {conv[-1]['seconds']:.1f} s")

    def lumen(h):
        lo, shape = ph.grid(h)
        occ = ph.occupancy(lo, h, shape)
        pts = lo + h * np.argwhere(occ >= 0.5)
        _, p = flow.sample(pts)
        return pts[np.isfinite(p)]
    lab = f"n_per_radius {levels[-1]}" if by_n else f"h {levels[-1]} mm"
    return Reference(f"scikit-fem 3D tetrahedral P2-P1, finest {lab}", flow.sample, lumen,
                     float(flow.dp_pa), conv, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------
# Womersley: analytic, cross-checked by finite differences
# ------------------------------------------------------------------------------------------------
WOMERSLEY_ALPHA = 3.0
WOMERSLEY_RADIUS_MM = 1.5
WOMERSLEY_PULSE = 0.5  # oscillatory gradient amplitude / steady gradient


def womersley_setup(q_mean_mm3_s: float = 1000.0, alpha: float = WOMERSLEY_ALPHA, radius_mm: float = WOMERSLEY_RADIUS_MM,
                    rho: float = RHO_BLOOD, mu: float = MU_BLOOD) -> dict:
    """-dp/dz = G0 + G1 cos(ω t): G0 carries q_mean (Poiseuille), G1 = WOMERSLEY_PULSE G0."""
    omega = (alpha / radius_mm) ** 2 * mu / rho
    g0 = poiseuille_dp_pa(1.0, radius_mm, q_mean_mm3_s, mu)
    return {"alpha": alpha, "omega_rad_s": omega, "period_s": 2 * math.pi / omega, "radius_mm": radius_mm,
            "g0_pa_mm": g0, "g1_pa_mm": WOMERSLEY_PULSE * g0, "q_mean_mm3_s": q_mean_mm3_s, "rho": rho, "mu": mu}


def womersley_exact(r, t, s: dict):
    u = poiseuille_velocity(r, s["radius_mm"], s["q_mean_mm3_s"]) + womersley_velocity(
        r, t, s["radius_mm"], s["g1_pa_mm"], s["omega_rad_s"], s["rho"], s["mu"])
    return u


def womersley_q_exact(t, s: dict):
    return s["q_mean_mm3_s"] + womersley_flow_rate(t, s["radius_mm"], s["g1_pa_mm"], s["omega_rad_s"], s["rho"], s["mu"])


def womersley_fd(s: dict, n_r: int, steps_per_period: int = 400, periods: int = 6):
    """Crank-Nicolson finite differences (cell-centred in r, second order) of
    ρ u_t = G0 + G1 cos ωt + μ (u_rr + u_r / r), u(R) = 0, started from rest, run ``periods`` periods
    (transients decay as exp(-j0,1² μ t/(ρ R²))); returns (r_c [n_r], t [K], u [K, n_r], q [K]) of
    the last period."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import factorized

    R, rho, mu = s["radius_mm"], s["rho"], s["mu"]
    dr = R / n_r
    rc = (np.arange(n_r) + 0.5) * dr
    rf = np.arange(n_r + 1) * dr  # faces
    # (1/r) d/dr (r du/dr): flux form; wall face at R with u = 0 at distance dr/2 (ghost)
    main = np.zeros(n_r)
    lo_ = np.zeros(n_r - 1)
    up = np.zeros(n_r - 1)
    for i in range(n_r):
        if i > 0:
            c = rf[i] / (rc[i] * dr * dr)
            main[i] -= c
            lo_[i - 1] += c
        if i < n_r - 1:
            c = rf[i + 1] / (rc[i] * dr * dr)
            main[i] -= c
            up[i] += c
        else:
            main[i] -= rf[n_r] / (rc[i] * dr * (dr / 2))  # Dirichlet u = 0 at the wall
    L = sp.diags([lo_, main, up], [-1, 0, 1], format="csc") * (mu / rho)
    T = s["period_s"]
    dt = T / steps_per_period
    Ident = sp.identity(n_r, format="csc")
    solve_a = factorized((Ident - 0.5 * dt * L).tocsc())
    B = (Ident + 0.5 * dt * L).tocsr()
    u = np.zeros(n_r)

    def f(t):
        return (s["g0_pa_mm"] + s["g1_pa_mm"] * np.cos(s["omega_rad_s"] * t)) / rho
    ts, us = [], []
    n_total = periods * steps_per_period
    for k in range(n_total):
        t = k * dt
        u = solve_a(B @ u + 0.5 * dt * (f(t) + f(t + dt)))
        if k >= n_total - steps_per_period - 1:
            ts.append(t + dt)
            us.append(u.copy())
    us = np.array(us)
    q = 2 * np.pi * (us * rc * dr).sum(1)  # midpoint rule, second order
    return rc, np.array(ts) - (periods - 1) * T, us, q


def womersley_reference(case: Case, levels: tuple[float, ...], log=print) -> Reference:
    """The analytic solution is the reference; the FD solve at ``levels`` radial cells is its check:
    ``dp_pa`` is the prescribed mean gradient over 40 mm, the convergence figure is the FD flow-rate
    amplitude (the quantity that is solved for here)."""
    s = womersley_setup(case.q_mm3_s)
    t0 = time.perf_counter()
    conv = []
    tt = None
    for n in levels:
        t1 = time.perf_counter()
        rc, tt, us, q = womersley_fd(s, int(n))
        qe = womersley_q_exact(tt, s)
        ue = womersley_exact(rc[None, :], tt[:, None], s)
        conv.append({"level": int(n), "n_radial": int(n), "q_amplitude_mm3_s": float(0.5 * (q.max() - q.min())),
                     "q_max_rel_error_vs_exact": float(np.abs(q - qe).max() / np.abs(qe).max()),
                     "u_rel_l2_vs_exact": float(np.linalg.norm(us - ue) / np.linalg.norm(ue)),
                     "dp_pa": float(s["g0_pa_mm"] * 40.0), "seconds": time.perf_counter() - t1})
        log(f"    womersley: FD {n} cells, |Q - Q_exact|max/max|Q| {conv[-1]['q_max_rel_error_vs_exact']:.2e}")
    qa = womersley_q_exact(tt, s)
    s_extra = dict(s, q_amplitude_exact_mm3_s=float(0.5 * (qa.max() - qa.min())),
                   womersley_number=float(womersley_number(s["radius_mm"], s["omega_rad_s"], s["rho"], s["mu"])))
    return Reference("analytic (Womersley 1955) + steady Poiseuille; FD cross-check", None, None,
                     float(s["g0_pa_mm"] * 40.0), conv, time.perf_counter() - t0, extra=s_extra,
                     conv_key="q_amplitude_mm3_s")


def build_reference(case: Case, quick: bool, log=print) -> Reference | None:
    """The case's reference, or None when its solver is not available (reference pending)."""
    levels = case.quick_levels if (quick and case.quick_levels) else case.levels
    if case.reference == "poiseuille":
        return poiseuille_reference(case)
    if case.reference == "womersley":
        return womersley_reference(case, levels, log)
    if case.reference == "axisymmetric":
        return axisymmetric_reference(case, levels, log)
    if case.reference == "tet":
        if not tet_available():
            return None
        return tet_reference(case, levels, log)
    raise ValueError(f"case {case.key}: unknown reference kind {case.reference!r}")
