"""Steady (hyperaemic) flow in a reconstructed lumen: a PINN held to Navier-Stokes, no slip and the
flow rate from bolus transit.

    dom = build_domain(occ, origin_mm, spacing_mm, branches, areas_mm2, q_mm3_s)
    res = fit_steady_flow(dom, SteadyConfig())              # res.net, res.scales, res.history
    u, p = res.evaluate(points_mm)                          # [N, 3] mm/s, [N] Pa

Problem. The lumen (occupancy ≥ 0.5 of the reconstruction) is the fluid domain; its marching-cubes
surface is the wall. Unknowns u, p from the MLP (x, y, z, t = 0). The loss, non-dimensional
(L = inlet radius, U = mean inlet velocity, p / ρU²):

    momentum + mass residuals at lumen points (a fresh random batch each step)
  + w_wall  · |u|² at wall points (no slip)
  + w_flux  · (flux through each centerline section / Q_branch − 1)²
  + w_gauge · (mean p on the outlet section of branch 0)²

Q per branch comes from the transit fit (pinngs.flow.transit). Before the physics steps the MLP is
fitted to a quasi-Poiseuille guess (the parabolic profile of the local section, the Poiseuille
pressure gradient integrated along the centerline): it starts Adam near a solution, which matters on
a CPU budget of a few thousand steps. With ``physics=False`` the residuals are left out (the
ablation): the result is then that guess, made consistent with the flux and no-slip terms only.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree
from tqdm import tqdm

from ..analysis.centerline import branch_topology
from ..analysis.surface import mask_to_mesh, occupancy_fraction
from ..flow.network import Domain, Section, branch_flows, poiseuille_guess
from ..polyline import arc_length, plane_basis, tangents
from .net import FlowMLP
from .residuals import residuals
from .scales import Scales


def build_domain(occ: np.ndarray, origin_mm, spacing_mm: float, branches: list[np.ndarray],
                 areas_mm2: list[np.ndarray], q_mm3_s: list[float], section_step_mm: float = 1.0,
                 section_h_mm: float = 0.1, max_interior: int = 200_000, seed: int = 0) -> Domain:
    """Fluid domain of a reconstruction (see the module docstring).

    occ: [X, Y, Z] lumen fraction; branches: [P, 4] X, Y, Z, R (mm); areas_mm2: [P] per branch
    (pinngs.flow.transit.section_areas); q_mm3_s: flow rate per branch (NaN: split the parent's by
    Murray's law, r³, among the daughters that lack one).
    """
    occ = occupancy_fraction(occ)
    origin = np.asarray(origin_mm, float)
    rng = np.random.default_rng(seed)
    if len(branches) != len(areas_mm2) or len(branches) != len(q_mm3_s):
        raise ValueError("build_domain: branches, areas_mm2 and q_mm3_s must have one entry per branch")
    parents, _ = branch_topology(branches)
    q = branch_flows(q_mm3_s, parents, areas_mm2)
    idx = np.argwhere(occ >= 0.5)
    if len(idx) < 100:
        raise ValueError("build_domain: the lumen has fewer than 100 voxels at occupancy >= 0.5")
    if len(idx) > max_interior:
        idx = idx[rng.choice(len(idx), max_interior, replace=False)]
    interior = origin + spacing_mm * idx
    mesh = mask_to_mesh(occ, origin, spacing_mm)
    v = np.asarray(mesh.vertices)
    lo, hi = origin, origin + spacing_mm * (np.array(occ.shape) - 1)
    wall = v[np.all((v > lo + 0.5 * spacing_mm) & (v < hi - 0.5 * spacing_mm), axis=1)]  # not the grid caps
    allp = np.concatenate([np.asarray(b, float)[:, :3] for b in branches])
    allt = np.concatenate([tangents(np.asarray(b, float)[:, :3]) for b in branches])
    owner = np.concatenate([np.full(len(b), i) for i, b in enumerate(branches)])
    tree = cKDTree(allp)
    # the vessel's open ends are closed in the reconstruction (caps, or the mesh's flat cap at the
    # grid edge): vertices beyond the centerline's ends are inflow/outflow, not wall
    _, kw = tree.query(wall)
    off = np.abs(((wall - allp[kw]) * allt[kw]).sum(1))
    wall = wall[off <= 2.0 * spacing_mm]
    # sections: every section_step_mm along each branch, clear of its ends by 1.5 radii
    sections = []
    for bi, b in enumerate(branches):
        b = np.asarray(b, float)
        s = arc_length(b[:, :3])
        tan = tangents(b[:, :3])
        R_eq = np.sqrt(np.asarray(areas_mm2[bi]) / math.pi)
        for sc in np.arange(1.5 * R_eq[0], s[-1] - 1.5 * R_eq[-1] + 1e-9, section_step_mm):
            k = int(np.argmin(np.abs(s - sc)))
            c, t = b[k, :3], tan[k]
            u, w = plane_basis(t)
            rmax = 1.6 * max(R_eq[k], b[k, 3])
            g = np.arange(-rmax, rmax + 1e-9, section_h_mm)
            X, Y = np.meshgrid(g, g, indexing="ij")
            disc = (X * X + Y * Y) <= rmax * rmax
            pts = c + X[disc][:, None] * u + Y[disc][:, None] * w
            frac = map_coordinates(occ, ((pts - origin) / spacing_mm).T, order=1, mode="constant", cval=0.0)
            _, near = tree.query(pts)
            keep = (frac > 0.01) & (owner[near] == bi)
            wts = frac[keep] * section_h_mm ** 2
            if keep.sum() < 10:
                continue
            sections.append(Section(bi, float(sc), c, t, pts[keep], wts))
    if not any(sec.branch == 0 for sec in sections):
        raise ValueError("build_domain: branch 0 is too short for any flux section")
    return Domain(interior, wall, sections, q, [np.asarray(b, float) for b in branches],
                  [np.asarray(a, float) for a in areas_mm2], parents, occ, origin, float(spacing_mm))


@dataclass(frozen=True)
class SteadyConfig:
    steps: int = 1000  # Adam steps on the physics loss
    pretrain_steps: int = 1000  # supervised steps on the quasi-Poiseuille guess
    pretrain_lr: float = 5e-3
    batch_interior: int = 512
    batch_wall: int = 512
    sections_per_step: int = 16
    width: int = 64
    depth: int = 4
    fourier: int = 0
    lr: float = 5e-4
    warmup_steps: int = 100
    w_ns: float = 1.0
    w_mass: float = 1.0
    w_wall: float = 10.0
    w_flux: float = 10.0
    w_gauge: float = 1.0
    physics: bool = True  # False: the ablation without the NS and mass residuals
    seed: int = 0
    threads: int = 1


@dataclass
class SteadyResult:
    net: FlowMLP
    scales: Scales
    config: SteadyConfig
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def evaluate(self, pts_mm: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Velocity [N, 3] mm/s and pressure [N] Pa at world points."""
        out_u, out_p = [], []
        with torch.no_grad():
            for i in range(0, len(pts_mm), chunk):
                x = torch.as_tensor(pts_mm[i:i + chunk], dtype=torch.float32)
                xt = torch.cat([x, torch.zeros(len(x), 1)], 1)
                f = self.scales.dim_fields(self.net(self.scales.nondim_xt(xt)))
                out_u.append(f[:, 1:4].numpy())
                out_p.append(f[:, 4].numpy())
        return np.concatenate(out_u), np.concatenate(out_p)


def _nd_points(scales: Scales, pts_mm: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(pts_mm, dtype=torch.float32)
    return scales.nondim_xt(torch.cat([x, torch.zeros(len(x), 1)], 1))


def fit_steady_flow(dom: Domain, config: SteadyConfig | None = None, progress: bool = True) -> SteadyResult:
    c = config or SteadyConfig()
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(c.threads)
    try:
        torch.manual_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        R0 = float(np.sqrt(np.median(dom.areas_mm2[0][: max(3, len(dom.areas_mm2[0]) // 3)]) / math.pi))
        U0 = dom.q_mm3_s[0] / (math.pi * R0 ** 2)
        centre = dom.interior_mm.mean(0)
        scales = Scales.for_vessel(R0, U0, origin_mm=tuple(float(v) for v in centre))
        net = FlowMLP(c.width, c.depth, c.fourier, seed=c.seed)
        hist: list[dict] = []
        # 1. supervised start on the quasi-Poiseuille guess
        u_g, p_g = poiseuille_guess(dom, dom.interior_mm)
        p_g = p_g - np.mean(p_g)
        tgt = torch.as_tensor(np.column_stack([u_g / U0, p_g / scales.pressure_pa]), dtype=torch.float32)
        X_all = _nd_points(scales, dom.interior_mm)
        opt = torch.optim.Adam(net.parameters(), lr=c.pretrain_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(c.pretrain_steps, 1), eta_min=0.02 * c.pretrain_lr)
        for _ in tqdm(range(c.pretrain_steps), desc="flow: start from Poiseuille", disable=not progress, leave=False):
            i = torch.as_tensor(rng.choice(len(X_all), min(4096, len(X_all)), replace=False))
            loss = (net(X_all[i])[:, 1:] - tgt[i]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        # 2. physics
        W_all = _nd_points(scales, dom.wall_mm) if len(dom.wall_mm) else None
        secs = dom.sections
        sec_pts = [_nd_points(scales, s.points_mm) for s in secs]
        sec_w = [torch.as_tensor(s.weights_mm2 / (math.pi * R0 ** 2), dtype=torch.float32) for s in secs]
        sec_t = [torch.as_tensor(s.tangent, dtype=torch.float32) for s in secs]
        sec_q = [dom.q_mm3_s[s.branch] / dom.q_mm3_s[0] for s in secs]
        out0 = max((i for i, s in enumerate(secs) if s.branch == 0), key=lambda i: secs[i].arc_mm)
        opt = torch.optim.Adam(net.parameters(), lr=c.lr)
        # warm-up: a fresh Adam's first steps move every weight by ~lr at once (sign steps), which
        # undoes the supervised start (docs/decisions.md, "Steady PINN")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / max(c.warmup_steps, 1)) * (
            0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(k, c.steps) / max(c.steps, 1)))))
        for step in tqdm(range(c.steps), desc="flow: physics" if c.physics else "flow: no physics",
                         disable=not progress, leave=False):
            terms = {}
            if c.physics:
                i = torch.as_tensor(rng.choice(len(X_all), min(c.batch_interior, len(X_all)), replace=False))
                r = residuals(net, X_all[i], scales, terms=("momentum", "mass"))
                ms = r.mean_squares()
                terms["momentum"] = c.w_ns * ms["momentum"]
                terms["mass"] = c.w_mass * ms["mass"]
            if W_all is not None:
                j = torch.as_tensor(rng.choice(len(W_all), min(c.batch_wall, len(W_all)), replace=False))
                terms["wall"] = c.w_wall * net(W_all[j])[:, 1:4].square().sum(1).mean()
            pick = rng.choice(len(secs), min(c.sections_per_step, len(secs)), replace=False)
            if out0 not in pick:
                pick = np.append(pick, out0)
            fl = []
            for k in pick:
                f = net(sec_pts[k])
                flux = (f[:, 1:4] @ sec_t[k] * sec_w[k]).sum()
                fl.append((flux / sec_q[k] - 1.0) ** 2)
                if k == out0:
                    terms["gauge"] = c.w_gauge * (f[:, 4] * sec_w[k]).sum().div(sec_w[k].sum()).square()
            terms["flux"] = c.w_flux * torch.stack(fl).mean()
            loss = sum(terms.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0 or step == c.steps - 1:
                hist.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
        return SteadyResult(net, scales, c, hist, time.perf_counter() - t_start)
    finally:
        torch.set_num_threads(old_threads)


def section_mean_pressure(res: SteadyResult, sec: Section) -> float:
    _, p = res.evaluate(sec.points_mm)
    return float((p * sec.weights_mm2).sum() / sec.weights_mm2.sum())



def dp_work_energy(res: SteadyResult, dom: Domain, sec_a: Section, sec_b: Section,
                   chunk: int = 8192) -> dict:
    """Pressure drop from the fitted velocity by the work-energy balance (as vWERP in 4D-flow MRI):

        Q ΔP = Φ − (K_a − K_b),   Φ = ∫ 2μ ε:ε dV,   K = ∫ ½ρ|u|² u·n dA

    over the lumen between two sections of one branch. Φ needs only first derivatives of u, which a
    PINN fits far better than the Laplacian its own pressure depends on (docs/decisions.md, "Steady
    PINN"). Interior points are lumen voxel centres (weight h³, rescaled when subsampled)
    whose nearest centerline point lies on the sections' branch between the two arcs.
    Returns {"dp_pa", "dissipation_w", "kinetic_flux_a", "kinetic_flux_b", "q_mm3_s"} (W = g·mm²/s³ here).
    """
    if sec_a.branch != sec_b.branch or not sec_b.arc_mm > sec_a.arc_mm:
        raise ValueError("dp_work_energy: sections must be on one branch, sec_b downstream of sec_a")
    allp = np.concatenate([x[:, :3] for x in dom.branches])
    owner = np.concatenate([np.full(len(x), i) for i, x in enumerate(dom.branches)])
    arcs = np.concatenate([arc_length(x[:, :3]) for x in dom.branches])
    allt = np.concatenate([tangents(x[:, :3]) for x in dom.branches])
    _, k = cKDTree(allp).query(dom.interior_mm)
    # the arc of each point: its nearest centerline point's arc plus its offset along the tangent
    arc_pt = arcs[k] + ((dom.interior_mm - allp[k]) * allt[k]).sum(1)
    sel = (owner[k] == sec_a.branch) & (arc_pt >= sec_a.arc_mm) & (arc_pt <= sec_b.arc_mm)
    pts = dom.interior_mm[sel]
    n_lumen = int((dom.occ >= 0.5).sum())
    w = dom.spacing_mm ** 3 * n_lumen / len(dom.interior_mm)  # volume per interior point
    mu, rho = res.scales.mu_pa_s, res.scales.rho_g_mm3
    U, L = res.scales.velocity_mm_s, res.scales.length_mm
    phi = 0.0
    for i in range(0, len(pts), chunk):
        x = torch.as_tensor(pts[i:i + chunk], dtype=torch.float32)
        xt = res.scales.nondim_xt(torch.cat([x, torch.zeros(len(x), 1)], 1)).requires_grad_(True)
        f = res.net(xt)
        J = torch.stack([torch.autograd.grad(f[:, 1 + c].sum(), xt, retain_graph=c < 2)[0][:, :3] for c in range(3)], 1)
        E = 0.5 * (J + J.transpose(1, 2)) * (U / L)  # strain rate, 1/s
        phi += float((2 * mu * (E * E).sum((1, 2))).sum()) * w
    def kflux(sec):
        u, _ = res.evaluate(sec.points_mm)
        un = u @ sec.tangent
        return float((0.5 * rho * (u * u).sum(1) * un * sec.weights_mm2).sum()), float((un * sec.weights_mm2).sum())
    ka, qa = kflux(sec_a)
    kb, qb = kflux(sec_b)
    q = 0.5 * (qa + qb)
    return {"dp_pa": (phi - (ka - kb)) / q, "dissipation_w": phi, "kinetic_flux_a": ka, "kinetic_flux_b": kb,
            "q_mm3_s": q, "n_points": int(len(pts))}
