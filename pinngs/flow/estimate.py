"""The flow estimate on a lumen: the one recipe that `pinngs reconstruct`, the online fitter and the
benchmarks call.

    flow = flow_on_lumen(study, occ, origin_mm, spacing_mm)     # LumenFlow
    s = flow.summary(pa_mmhg=93.0)                               # Q, ΔP, FFR (+ per lesion), confidences
    u = flow.velocity_mm_s(points_mm); p = flow.pressure_pa(points_mm)

Steps (``flow_on_lumen``):

1. centerline of the lumen (``analysis.centerline``), terminal stubs pruned and thin ghost tails past
   the free ends cut (they would grade as lesions);
2. section areas along it and the time-intensity curves of the study's frames (``flow.transit``);
   when the bolus reaches the far end of branch 0 first, the centerline is reversed (its inlet is
   its widest end, which a frayed young fit can get wrong);
3. stenosis grading (``analysis.stenosis``) and each lesion's grade by section area, which gates its
   jet (``flow.lesions``);
4. the bolus-transit Q: timed upstream of the lesions with a jet, blended with Q timed on the whole
   vessel by the largest jet weight; a junction's daughters share their parent's flow by Murray's
   law (``flow.network.split_flows``);
5. ΔP along branch 0 between sections 1.5 equivalent radii inside its ends: Poiseuille along the
   healthy stretches plus Young–Tsai across the lesions (``flow.lesions.lesion_dp``); FFR =
   (Pa − ΔP)/Pa;
6. the velocity and pressure fields: quasi-Poiseuille (``flow.network.poiseuille_guess``).

Confidences (``LumenFlow.summary``) are heuristics, not calibrated against errors: Q's is
clip(1 − transit residual / 0.3) · exp(−σ_Q/Q / 0.1) · coverage (the fitted bolus's gamma CDF at the
newest frame); velocity, ΔP and FFR take Q's times the geometry's. An estimate whose ΔP reaches Pa
(FFR ≤ 0) is labelled implausible with zero ΔP/FFR confidence.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Literal

import numpy as np

from ..analysis.centerline import branch_topology, extract_centerline, prune_stubs, trim_ghost_ends
from ..analysis.stenosis import grade_stenosis
from ..analysis.surface import occupancy_fraction
from ..io.study import Study
from ..pinn.field import FlowPINN, PinnConfig, scales_from
from ..polyline import arc_length, disc_points, tangents
from ..units import MU_BLOOD_PA_S, PA_AORTIC_MMHG, PA_PER_MMHG
from .lesions import YT_MIN_PERCENT, confirm_by_area, lesion_dp, lesion_jet_weight
from .network import DAUGHTER_SPLIT, Daughters, Domain, check_daughters, poiseuille_guess, split_flows
from ..laws import ffr
from .transit import TransitFit, fit_transit, section_areas, time_intensity_curves, upstream_of_lesions

METHOD = "reduced"  # what this estimator is, as named in summary.json: transit Q, Poiseuille + Young–Tsai
# FFR outside [FFR_MIN_PLAUSIBLE, 1] is labelled implausible: a negative ΔP (FFR > 1) is a fitting error,
# and a ΔP of more than 85 % of Pa (FFR < 0.15) would have stopped the flow that was measured passing.
FFR_MIN_PLAUSIBLE = 0.15


@dataclass
class LumenFlow:
    """Flow on one lumen: centerline, sections, transit Q, reduced-order ΔP, quasi-Poiseuille field."""

    branches: list  # [P, 4] X, Y, Z, R (mm) per branch
    areas_mm2: list  # [P] per branch
    lesions: list  # grade_stenosis dicts (+ percent_equivalent_diameter_stenosis)
    transit: TransitFit
    domain: Domain  # interior/wall/sections empty: only the field is needed
    dp: dict  # flow.reduced.reduced_order_dp along branch 0 between dp_arcs_mm
    dp_arcs_mm: tuple
    upstream_weight: float = 0.0  # weight of Q timed upstream of the lesions (jet_weight of the worst)
    mesh: tuple | None = None  # (vertices [V, 3] mm, tetrahedra [T, 4]) of the CFD, where one was solved
    method: str = METHOD  # "reduced", or the method of ``field``
    field: object | None = None  # a solved field (velocity_mm_s, pressure_pa): FEM or a PINN; None: reduced
    solver: dict = dataclass_field(default_factory=dict)  # the field's solver figures (time, mesh, residuals)

    def with_field(self, fld, method: str, solver: dict) -> "LumenFlow":
        """The same lumen and Q with velocity and pressure from a solved field ``fld``: ΔP along branch
        0 and across each lesion become section-mean pressure differences of that field."""
        out = replace(self, field=fld, method=method, solver=dict(solver))
        s0, s1 = out.dp_arcs_mm
        out.dp = {"dp_pa": out.dp_between_pa(s0, s1), "method": method,
                  "reduced_pa": float(self.dp["dp_pa"])}
        return out

    def at_flow(self, q_mm3_s: float) -> "LumenFlow":
        """The same lumen at another inlet flow (mm³/s; daughters by Murray's law), reduced ΔP redone."""
        q = [float(q_mm3_s)] + [float("nan")] * (len(self.branches) - 1)
        out = replace(self, domain=replace(self.domain, q_mm3_s=split_flows(q, self.domain.parents, self.areas_mm2)))
        out.dp = out.dp_at(float(q_mm3_s))
        return out

    def section_pressure_pa(self, branch: int, arc_mm: float) -> float:
        """Area-mean pressure (Pa) of the field over the section normal to ``branch`` at ``arc_mm``:
        a disc 1.6 equivalent radii wide, points outside the field's lumen (NaN) left out."""
        b = np.asarray(self.branches[branch], float)
        s = arc_length(b[:, :3])
        r = float(np.sqrt(np.interp(arc_mm, s, self.areas_mm2[branch]) / math.pi))
        rad = 1.6 * max(r, float(np.interp(arc_mm, s, b[:, 3])))
        pts, w = disc_points(b, arc_mm, rad, rad / 30)
        p = self.pressure_pa(pts)
        ok = np.isfinite(p)
        return float((p[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else float("nan")

    @property
    def q_mm3_s(self) -> list[float]:
        """Flow per branch (mm³/s)."""
        return [float(v) for v in self.domain.q_mm3_s]

    def dp_at(self, q_mm3_s: float) -> dict:
        """``lesion_dp`` along branch 0 between ``dp_arcs_mm`` at inlet flow ``q_mm3_s`` (mm³/s): ``dp`` is
        this at the transit Q; another Q asks what this geometry gives at that flow."""
        if not (math.isfinite(q_mm3_s) and q_mm3_s > 0):
            raise ValueError(f"dp_at: the flow rate must be a finite positive mm³/s, got {q_mm3_s}")
        s0, s1 = self.dp_arcs_mm
        return lesion_dp(np.asarray(self.branches[0], float), self.areas_mm2[0], float(q_mm3_s),
                         [x for x in self.lesions if x["branch"] == 0], s0, s1)

    def _section_frame(self, branch: int, arc_mm: float) -> dict:
        """Centre (mm) and unit normal of the section of ``branch`` at ``arc_mm`` (for the summary)."""
        b = np.asarray(self.branches[branch], float)
        s = arc_length(b[:, :3])
        c = [float(np.interp(arc_mm, s, b[:, j])) for j in range(3)]
        t = tangents(b[:, :3])[int(np.argmin(np.abs(s - arc_mm)))]
        return {"centre_mm": c, "normal": [float(v) for v in t]}

    def dp_between_pa(self, s_from_mm: float, s_to_mm: float) -> float:
        """ΔP (Pa) along branch 0 between two arc lengths (mm) at the estimated flow, lesions included
        (with a field: the difference of its section-mean pressures)."""
        if self.field is not None:
            return self.section_pressure_pa(0, s_from_mm) - self.section_pressure_pa(0, s_to_mm)
        return float(lesion_dp(np.asarray(self.branches[0], float), self.areas_mm2[0], self.q_mm3_s[0],
                               [x for x in self.lesions if x["branch"] == 0], s_from_mm, s_to_mm)["dp_pa"])

    def lesion_dp_pa(self, lesion: dict) -> float:
        """Translesional ΔP (Pa) of one graded lesion: ``lesion_dp`` along its branch, at the branch's
        flow, from one reference diameter before the lesion's stretch to one after it (clipped to the
        branch's ends)."""
        b = np.asarray(self.branches[lesion["branch"]], float)
        s = arc_length(b[:, :3])
        shift = lesion["arc_from_inlet_mm"] - lesion["arc_in_branch_mm"]
        a = max(lesion["start_arc_mm"] - shift - lesion["d_ref_mm"], 0.0)
        e = min(lesion["end_arc_mm"] - shift + lesion["d_ref_mm"], float(s[-1]))
        if not e > a:
            return float("nan")
        if self.field is not None:
            return self.section_pressure_pa(lesion["branch"], a) - self.section_pressure_pa(lesion["branch"], e)
        q = self.q_mm3_s[lesion["branch"]]
        return float(lesion_dp(b, self.areas_mm2[lesion["branch"]], q, [lesion], a, e)["dp_pa"])

    def velocity_mm_s(self, points_mm: np.ndarray) -> np.ndarray:  # [P, 3] -> [P, 3]
        """Velocity at world points (mm/s): the field's, or quasi-Poiseuille; zero outside the lumen
        (occupancy < 0.5)."""
        pts = np.asarray(points_mm, float).reshape(-1, 3)
        if self.field is not None:
            u = np.asarray(self.field.velocity_mm_s(pts), float)
        else:
            u, _ = poiseuille_guess(self.domain, pts)
        u[self.domain.inside(pts) < 0.5] = 0.0
        return u

    def pressure_pa(self, points_mm: np.ndarray) -> np.ndarray:  # [P, 3] -> [P]
        """Pressure at world points (Pa): the field's (NaN outside its lumen), or quasi-Poiseuille (0 at
        the end of branch 0; viscous only, the lesions' loss is in ``dp``)."""
        pts = np.asarray(points_mm, float).reshape(-1, 3)
        if self.field is not None:
            return np.asarray(self.field.pressure_pa(pts), float)
        return poiseuille_guess(self.domain, pts)[1]

    def wss_pa(self, wall_mm: np.ndarray, normals: np.ndarray, depth_mm: float = 0.1) -> np.ndarray:
        """Wall shear stress magnitude (Pa) at wall points [W, 3] with outward unit normals [W, 3]: μ times
        the wall-normal derivative of the tangential velocity, one-sided second order from samples
        ``depth_mm`` and 2 ``depth_mm`` inside (no slip at the wall): (4 u(δ) − u(2δ)) / (2δ)."""
        x, n = np.asarray(wall_mm, float).reshape(-1, 3), np.asarray(normals, float).reshape(-1, 3)
        u1, u2 = self.velocity_mm_s(x - depth_mm * n), self.velocity_mm_s(x - 2 * depth_mm * n)
        tang = lambda u: u - (u * n).sum(1, keepdims=True) * n  # noqa: E731
        return MU_BLOOD_PA_S * np.linalg.norm((4 * tang(u1) - tang(u2)) / (2 * depth_mm), axis=1)

    def summary(self, pa_mmhg: float = PA_AORTIC_MMHG, t_latest_s: float = math.inf,
                geometry_confidence: float = 1.0) -> dict:
        """The clinical figures, JSON-serialisable: Q (mm³/s; per branch too), mean and peak velocity,
        ΔP along branch 0 (Pa, mmHg), FFR, per lesion its translesional ΔP and FFR, the confidences
        (module docstring), the transit fit and ``status`` ("ok" or why the figures are implausible).
        ``t_latest_s``: the newest frame's time, for the bolus coverage (default: all of it seen)."""
        from scipy.stats import gamma

        tr = self.transit
        q = self.q_mm3_s[0]
        q_std = float(tr.q_std_mm3_s[0]) if tr.q_std_mm3_s and math.isfinite(tr.q_std_mm3_s[0]) else q
        b = tr.bolus
        coverage = float(gamma.cdf(t_latest_s - b["t0_s"], b["alpha"], scale=b["beta_s"]))
        cq = float(np.clip(1 - tr.rel_residual / 0.3, 0, 1) * math.exp(-(q_std / max(q, 1e-12)) / 0.1) * coverage)
        a0 = float(np.asarray(self.areas_mm2[0])[: max(1, len(self.areas_mm2[0]) // 10)].mean())
        amin = float(min(np.min(a) for a in self.areas_mm2))
        dp = float(self.dp["dp_pa"])
        c_flow = cq * float(geometry_confidence)
        lesions = []
        for x in self.lesions:
            dpl = self.lesion_dp_pa(x)
            lesions.append({"branch": int(x["branch"]), "arc_from_inlet_mm": float(x["arc_from_inlet_mm"]),
                            "percent_diameter_stenosis": float(x["percent_diameter_stenosis"]),
                            "percent_equivalent_diameter_stenosis":
                                float(x.get("percent_equivalent_diameter_stenosis", float("nan"))),
                            "jet_weight": lesion_jet_weight(x), "q_mm3_s": self.q_mm3_s[x["branch"]],
                            "dp_pa": dpl, "dp_mmhg": dpl / PA_PER_MMHG, "ffr": float(ffr(dpl, pa_mmhg)),
                            "plausible": bool(plausible_ffr(float(ffr(dpl, pa_mmhg))))})
        out = {"method": self.method, "status": "ok", "solver": self.solver, "pa_mmhg": float(pa_mmhg),
               "q_mm3_s": q, "q_confidence": cq, "branch_flows_mm3_s": self.q_mm3_s,
               "velocity_mean_mm_s": q / a0, "velocity_max_mm_s": 2 * q / amin, "velocity_confidence": c_flow,
               "dp_pa": dp, "dp_mmhg": dp / PA_PER_MMHG, "dp_confidence": c_flow,
               "ffr": float(ffr(dp, pa_mmhg)), "ffr_confidence": c_flow,
               "dp_section_arcs_mm": [float(v) for v in self.dp_arcs_mm], "lesions": lesions,
               "dp_sections": [self._section_frame(0, a) for a in self.dp_arcs_mm],
               "transit": tr.to_dict() | {"coverage": coverage, "upstream_weight": self.upstream_weight}}
        if not plausible_ffr(out["ffr"]):  # the geometry is wrong, not the patient
            out["dp_confidence"] = out["ffr_confidence"] = 0.0
            out["status"] = (f"implausible: FFR {out['ffr']:.3f} (ΔP {out['dp_mmhg']:.1f} mmHg at Pa = {pa_mmhg:.0f} "
                             f"mmHg) is outside [{FFR_MIN_PLAUSIBLE}, 1] (a pinched section, usually a ghost of a young "
                             "fit, or a flow rate that cannot be right); ΔP, FFR confidence 0")
        return out


def plausible_ffr(ffr_value: float) -> bool:
    """Whether an FFR could belong to a patient whose flow was measured: in [FFR_MIN_PLAUSIBLE, 1]."""
    return bool(math.isfinite(ffr_value) and FFR_MIN_PLAUSIBLE <= ffr_value <= 1.0)


def flow_on_lumen(study: Study, occ: np.ndarray, origin_mm, spacing_mm: float,
                  branches: list | None = None, daughters: Daughters = DAUGHTER_SPLIT) -> LumenFlow:
    """Flow from a lumen occupancy [X, Y, Z] and the study's frames (module docstring).

    Args:
        study: the frames (line integrals) the lumen was fitted to.
        occ: [X, Y, Z] lumen fraction (float 0..1 or uint8 0..255); voxel (i, j, k) at origin_mm +
            spacing_mm · (i, j, k).
        branches: the centerline ([P, 4] X, Y, Z, R per branch) if already extracted.
        daughters: how a junction's daughters share their parent's flow ("murray" or "transit",
            ``flow.network``).

    Raises:
        ValueError: when a stage cannot run (no centerline, too short a vessel, no transit fit).
    """
    check_daughters("flow_on_lumen", daughters)  # before the seconds of work below
    if branches is None:
        branches = extract_centerline(occ, origin_mm, spacing_mm)
    # stubs: a no-op on extract_centerline's, but centerline.csv files may predate it; then the ghost
    # tails past the free ends, which would grade as lesions
    branches = trim_ghost_ends(prune_stubs(branches))
    areas = section_areas(branches, occ, origin_mm, spacing_mm)
    curves = time_intensity_curves(study, branches, areas_mm2=areas)
    if _arrival_slope_s_per_mm(curves) < 0:  # the bolus arrives first at the true inlet
        if len(branches) == 1:
            branches = [np.asarray(branches[0])[::-1].copy()]
        else:
            branches = trim_ghost_ends(extract_centerline(occ, origin_mm, spacing_mm,
                                                          inlet_hint_mm=np.asarray(branches[0])[-1, :3]))
        areas = section_areas(branches, occ, origin_mm, spacing_mm)
        curves = time_intensity_curves(study, branches, areas_mm2=areas)
    # the grade by section areas gates the jet (lesion_jet_weight); a flattened section with its area
    # kept is no lesion (confirm_by_area)
    lesions, _ = confirm_by_area(grade_stenosis(branches), branches, areas)
    parents, _ = branch_topology(branches)
    # Q timed upstream of the narrowings with a jet, blended with Q timed on the whole vessel by the
    # largest weight (flow.lesions)
    w_up = max((lesion_jet_weight(x) for x in lesions), default=0.0)
    tr_up = None
    if w_up > 0:
        try:
            jets = [x for x in lesions if lesion_jet_weight(x) > 0]
            tr_up = fit_transit(upstream_of_lesions(curves, jets, min_percent=YT_MIN_PERCENT))
        except ValueError:  # too little vessel upstream of the lesion: time the bolus on the whole vessel
            w_up = 0.0
    tr_all = fit_transit(curves) if w_up < 1 else None
    tr = _blend_transit(tr_all, tr_up, w_up)
    q = np.sum([w * np.asarray(split_flows(t.q_mm3_s, parents, areas, daughters))
                for w, t in ((1 - w_up, tr_all), (w_up, tr_up)) if w > 0], axis=0).tolist()
    dom = Domain(np.zeros((0, 3)), np.zeros((0, 3)), [], q, [np.asarray(b, float) for b in branches],
                 [np.asarray(a, float) for a in areas], parents, occupancy_fraction(occ),
                 np.asarray(origin_mm, float), float(spacing_mm))
    b0 = np.asarray(branches[0], float)
    s = arc_length(b0[:, :3])
    r_eq = np.sqrt(np.asarray(areas[0]) / math.pi)
    s0, s1 = 1.5 * r_eq[0], s[-1] - 1.5 * r_eq[-1]
    if not s1 > s0:
        raise ValueError(f"branch 0 is too short ({s[-1]:.1f} mm) for a pressure drop between sections "
                         f"1.5 radii inside its ends")
    flow = LumenFlow(branches, areas, lesions, tr, dom, {}, (float(s0), float(s1)), float(w_up))
    flow.dp = flow.dp_at(q[0])
    return flow


def _blend_transit(whole: TransitFit | None, upstream: TransitFit | None, w: float) -> TransitFit:
    """One TransitFit for Q blended as (1 − w) · ``whole`` + w · ``upstream`` (either may be None where
    its weight is 0): Q, σ_Q and the residual blend linearly; the bolus and the curve count are those
    of the fit with the larger weight."""
    if upstream is None or w <= 0:
        return whole
    if whole is None or w >= 1:
        return upstream
    mix = lambda a, b: [(1 - w) * x + w * y for x, y in zip(a, b)]  # noqa: E731  (NaN stays NaN)
    main = upstream if w >= 0.5 else whole
    return replace(main, q_mm3_s=mix(whole.q_mm3_s, upstream.q_mm3_s),
                   q_std_mm3_s=mix(whole.q_std_mm3_s, upstream.q_std_mm3_s)
                   if whole.q_std_mm3_s and upstream.q_std_mm3_s else main.q_std_mm3_s,
                   rel_residual=(1 - w) * whole.rel_residual + w * upstream.rel_residual)


def _arrival_slope_s_per_mm(curves) -> float:
    """Slope of the bolus arrival time (half-maximum rise) against arc length along branch 0 (s/mm);
    negative when the contrast enters at the branch's far end."""
    sel = np.nonzero(curves.branch == 0)[0]
    if len(sel) < 4:
        return 0.0
    arr = []
    for m in sel:
        t, y = curves.t_s[m], curves.values[m] - np.min(curves.values[m])
        arr.append(t[int(np.argmax(y >= 0.5 * y.max()))] if y.max() > 0 else np.nan)
    arr = np.asarray(arr)
    ok = np.isfinite(arr)
    return float(np.polyfit(curves.arc_mm[sel][ok], arr[ok], 1)[0]) if ok.sum() >= 4 else 0.0

FlowMethod = Literal["reduced", "fem", "pinn", "pinn-pure"]
FLOW_METHODS: tuple[str, ...] = ("reduced", "fem", "pinn", "pinn-pure")


@dataclass(frozen=True)
class FlowConfig:
    """Settings of ``estimate_flow``: the method, the CFD mesh and the PINN."""

    method: FlowMethod = "pinn"
    n_per_radius: float = 2.0  # CFD tetrahedra per local radius (flow.fem.mesh_lumen; docs/decisions.md, "Flow engine")
    # a lesion's jet meshed finer than the rest (flow.fem._Surface.size_mm): (tetrahedra per throat
    # radius in the jet core, core radius in throat radii, size growth in mm per mm outside it); None:
    # the whole cross-section of a lesion's wake at the throat's n_per_radius
    jet: tuple[float, float, float] | None = (3.0, 1.5, 0.5)
    # a jet mesh of more tetrahedra than this (a tight lesion, whose jet mesh does not settle within
    # the CPU budget: docs/decisions.md, "Flow engine: a mesh for the jet") is replaced by the plain
    # mesh at ``fallback_n_per_radius``; None: no limit
    max_tets: int | None = 18000
    fallback_n_per_radius: float = 1.5
    max_iter: int = 200  # CFD Newton/Picard iterations in all, continuation in Q included
    # grad-div stabilisation of the CFD, gamma = c rho U h (flow.fem.solve_tet; docs/decisions.md,
    # "Flow engine: grad-div"); 0 switches it off
    grad_div: float = 0.25
    # pseudo-time steps after Newton and the continuation in Q fail; a flow that still does not
    # settle is reported as the mean of the last half of them, with its spread (``solver["fem"]["unsteady"]``)
    ptc_steps: int = 60
    loft_smooth_pts: float = 1.0  # smoothing of the lofted radius along the centerline (points)
    # the lofted radius: "section" (median wall distance in the section plane) or "inscribed" (the
    # centerline's maximum inscribed sphere); docs/decisions.md, "Flow engine: the lofted radius"
    loft_radius: Literal["section", "inscribed"] = "section"
    pinn: PinnConfig = dataclass_field(default_factory=PinnConfig)

    def validate(self) -> None:
        if self.method not in FLOW_METHODS:
            raise ValueError(f"flow method must be one of {', '.join(FLOW_METHODS)}; got {self.method!r}")
        if self.loft_radius not in ("section", "inscribed"):
            raise ValueError(f"loft_radius must be 'section' or 'inscribed'; got {self.loft_radius!r}")
        if not (self.n_per_radius > 0 and self.fallback_n_per_radius > 0) or self.max_iter < 1:
            raise ValueError(f"need n_per_radius > 0, fallback_n_per_radius > 0 and max_iter >= 1, got "
                             f"{self.n_per_radius}, {self.fallback_n_per_radius}, {self.max_iter}")
        from .fem import check_jet

        check_jet(self.jet)
        if self.max_tets is not None and self.max_tets < 100:
            raise ValueError(f"max_tets must be None or >= 100, got {self.max_tets}")
        if not self.grad_div >= 0 or self.ptc_steps < 0:
            raise ValueError(f"need grad_div >= 0 and ptc_steps >= 0, got {self.grad_div}, {self.ptc_steps}")
        self.pinn.validate()


def estimate_flow(study: Study, occ: np.ndarray, origin_mm, spacing_mm: float, config: FlowConfig | None = None,
                  branches: list | None = None, centres_mm: np.ndarray | None = None, sigma_mm=0.3,
                  progress: bool = False, fallback: bool = False) -> LumenFlow:
    """The flow on a lumen by one of the methods (module docstring): "reduced" (``flow_on_lumen``),
    "fem" (3D Navier–Stokes on the lofted centerline at the transit Q), "pinn" (a PINN anchored on
    that CFD, trained at and around ``centres_mm``, the Gaussian centres [N, 3] of size ``sigma_mm``)
    or "pinn-pure" (the same PINN without CFD: quasi-Poiseuille start, Navier–Stokes, no slip and the
    transit flux). Raises ValueError (no centerline, no transit fit) or RuntimeError (the CFD did not
    converge) when the method cannot run; with ``fallback`` a CFD that does not converge gives the
    reduced estimate instead, its ``solver["fallback"]`` saying why."""
    cfg = config or FlowConfig()
    cfg.validate()
    base = flow_on_lumen(study, occ, origin_mm, spacing_mm, branches=branches)
    try:
        return solve_flow(base, cfg, centres_mm, sigma_mm, progress)
    except RuntimeError as e:  # ``fallback``: the reduced estimate on the same transit fit, said in ``solver``
        if not fallback:
            raise
        return replace(base, solver={"fallback": f"--flow {cfg.method}: {str(e)[:160]}"})


def solve_flow(base: LumenFlow, cfg: FlowConfig, centres_mm: np.ndarray | None = None, sigma_mm=0.3,
               progress: bool = False, fem=None) -> LumenFlow:
    """``estimate_flow``'s solve on a lumen whose centerline, lesions and Q are known (``base``, from
    ``flow_on_lumen``; a benchmark may give it the true Q with ``LumenFlow.at_flow``). ``fem``: a CFD
    already solved on this lumen (a ``FemField``), reused by "pinn"."""
    from .fem import FemField, loft, section_radii, solve_tet

    if cfg.method == "reduced":
        return base
    origin_mm, spacing_mm = base.domain.origin_mm, base.domain.spacing_mm
    t0 = time.perf_counter()
    branches = base.branches
    if cfg.loft_radius == "section":
        rs = section_radii(branches, base.domain.occ, origin_mm, spacing_mm)
        branches = [np.column_stack([np.asarray(b, float)[:, :3], r]) for b, r in zip(branches, rs)]
    lumen = loft(branches, cfg.loft_smooth_pts)
    solver: dict = {"lofted_dice": lofted_dice(lumen, base.domain)}
    if fem is None and cfg.method in ("fem", "pinn"):
        fem = FemField(solve_tet(lumen, base.q_mm3_s[0], n_per_radius=cfg.n_per_radius, jet=cfg.jet,
                                 max_tets=cfg.max_tets, fallback_n_per_radius=cfg.fallback_n_per_radius,
                                 max_iter=cfg.max_iter, grad_div=cfg.grad_div, ptc=cfg.ptc_steps > 0, ptc_iter=cfg.ptc_steps,
                                 allow_unsteady=True))
        fem.info["seconds"] = time.perf_counter() - t0
    if fem is not None:
        solver["fem"] = dict(fem.info)
        base = replace(base, mesh=fem.mesh())
    if cfg.method == "fem":
        return base.with_field(fem, "fem", solver)
    centres = np.asarray(centres_mm if centres_mm is not None else base.domain.interior_mm, float).reshape(-1, 3)
    if len(centres) == 0:  # no Gaussians given: the lumen's own voxels
        idx = np.argwhere(base.domain.occ >= 0.5)
        idx = idx[np.random.default_rng(0).choice(len(idx), min(len(idx), 20000), replace=False)]
        centres = np.asarray(origin_mm, float) + float(spacing_mm) * idx
    centres = centres[base.domain.inside(centres) >= 0.5]
    wall = _wall_points(base)
    r0 = float(np.sqrt(np.median(np.asarray(base.areas_mm2[0])[:10]) / math.pi))
    scales = scales_from(base.q_mm3_s[0], r0, centres.mean(0))
    t1 = time.perf_counter()
    if cfg.method == "pinn":
        pinn = FlowPINN(cfg.pinn, scales)
        anchor = lambda x: (fem.velocity_mm_s(x), fem.pressure_pa(x))  # noqa: E731
        rep = pinn.fit(anchor, centres, sigma_mm, wall, inside=base.domain.inside, progress=progress)
    else:
        pinn = FlowPINN(replace(cfg.pinn, w_data=0.0), scales)
        anchor = lambda x: (base.velocity_mm_s(x), base.pressure_pa(x))  # noqa: E731
        rep = pinn.fit(anchor, centres, sigma_mm, wall, inside=base.domain.inside, flux_sections=_flux_sections(base),
                       q_mm3_s=base.q_mm3_s[0], progress=progress)
    solver["pinn"] = rep | {"seconds": time.perf_counter() - t1}
    return base.with_field(pinn, cfg.method, solver)


def lofted_dice(lumen, dom: Domain) -> float:
    """Dice of the lofted lumen (round sections) against the reconstructed occupancy, on its grid."""
    from .fem import tube_occupancy

    lof = tube_occupancy(lumen.branches, dom.origin_mm, dom.spacing_mm, dom.occ.shape)
    a, b = lof >= 0.5, dom.occ >= 0.5
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _wall_points(flow: LumenFlow, n: int = 20000) -> np.ndarray:
    """Points on the reconstructed lumen's wall (its 0.5 surface), not on the open ends' caps."""
    from ..analysis.surface import mask_to_mesh

    mesh = mask_to_mesh(flow.domain.occ, flow.domain.origin_mm, flow.domain.spacing_mm)
    v = np.asarray(mesh.vertices)
    allp = np.concatenate([np.asarray(b, float)[:, :3] for b in flow.branches])
    allt = np.concatenate([tangents(np.asarray(b, float)[:, :3]) for b in flow.branches])
    from scipy.spatial import cKDTree

    _, k = cKDTree(allp).query(v)
    v = v[np.abs(((v - allp[k]) * allt[k]).sum(1)) <= 2.0 * flow.domain.spacing_mm]  # beyond the ends: a cap
    return v[np.random.default_rng(0).choice(len(v), min(n, len(v)), replace=False)]


def _flux_sections(flow: LumenFlow, step_mm: float = 1.0) -> list:
    """(points, area weights, unit normal) of sections every ``step_mm`` along branch 0, 1.5 radii clear
    of its ends, weighted by the lumen fraction (the pure PINN's flux term)."""
    b = np.asarray(flow.branches[0], float)
    s = arc_length(b[:, :3])
    t = tangents(b[:, :3])
    out = []
    s0, s1 = flow.dp_arcs_mm
    for a in np.arange(s0, s1 + 1e-9, step_mm):
        r = float(np.sqrt(np.interp(a, s, flow.areas_mm2[0]) / math.pi))
        pts, w = disc_points(b, a, 1.6 * r, 0.1)
        frac = flow.domain.inside(pts)
        keep = frac > 0.01
        if keep.sum() >= 10:
            out.append((pts[keep], w[keep] * frac[keep], t[int(np.argmin(np.abs(s - a)))]))
    return out

