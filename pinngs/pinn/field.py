"""The flow PINN on a reconstructed lumen: a coordinate MLP for steady velocity and pressure, trained
at and around the Gaussian centres, held to Navier–Stokes by forward-propagated derivatives
(``pinn.forward``), and anchored on a CFD solution (``--flow pinn``) or not (``--flow pinn-pure``).

    pinn = FlowPINN(PinnConfig(), scales_from(q_mm3_s, radius_mm, centre_mm))
    report = pinn.fit(anchor, centres_mm, sigma_mm, wall_mm, inside=flow.domain.inside)
    u = pinn.velocity_mm_s(points); p = pinn.pressure_pa(points)
    pinn.update(new_centres_mm, sigma_mm, wall_mm)                # warm start, no new anchor

Training (``fit``):

1. points: the Gaussian centres and ``jitter`` samples around each (normal, the Gaussian's σ), kept
   where the anchor is defined (inside its lumen); a tenth are held out to measure the fit;
2. data phase: ``data_steps`` Adam steps on |u − u_anchor|² + w_p |p − p_anchor|² (non-dimensional;
   the value pass only, no derivatives), learning rate cosine-decayed from ``lr`` to ``lr_final``;
3. physics phase: ``physics_steps`` steps on the data term (times ``w_data``) + w_ns |momentum|² +
   w_mass |∇·u|² at the centres (steady Navier–Stokes in the scales' Re) + w_wall |u|² at wall
   points; for the pure PINN the anchor is the quasi-Poiseuille field, ``w_data`` is 0 in this
   phase and a flux term (the transit Q through sections along branch 0) replaces it.

Non-dimensional variables: x* = (x − x0)/L (L the inlet radius), u* = u/U (U = Q/(πL²)), and the
pressure output is p/(ρU² P), with P the anchor's pressure spread in units of ρU² (so that the
network's outputs are of order one); the residuals use p* = P · output.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from ..backend import resolve_device
from .forward import JetMLP, ns_residuals
from .scales import Scales


@dataclass(frozen=True)
class PinnConfig:
    """Knobs of ``FlowPINN`` (module docstring)."""

    width: int = 128
    depth: int = 5
    fourier: int = 48
    fourier_sigma: float = 0.3  # frequencies per inlet radius (docs/decisions.md, "Flow engine: the anchored PINN")
    jitter: int = 3  # samples around each Gaussian centre
    data_steps: int = 4000
    physics_steps: int = 400
    batch_data: int = 4096
    batch_physics: int = 1024
    lr: float = 3e-3
    lr_final: float = 5e-5
    w_pressure: float = 1.0
    w_data: float = 1.0  # the data term in the physics phase (0: the pure PINN)
    w_ns: float = 1e-3
    w_mass: float = 1e-2
    w_wall: float = 1.0
    w_flux: float = 1.0  # the pure PINN's flux term
    physics_lr_scale: float = 0.1  # the physics phase starts at this times lr (it refines the data phase's fit)
    seed: int = 0
    threads: int = 0  # 0: every core
    device: str = "cpu"  # "cpu", "cuda" or "auto" (backend.resolve_device)

    def validate(self) -> None:
        for k in ("width", "depth", "data_steps", "batch_data", "batch_physics"):
            if getattr(self, k) < 1:
                raise ValueError(f"PinnConfig.{k} must be >= 1, got {getattr(self, k)}")
        if self.physics_steps < 0 or self.jitter < 0 or self.fourier < 0:
            raise ValueError("PinnConfig: physics_steps, jitter and fourier must be >= 0")
        if not (0 < self.lr_final <= self.lr):
            raise ValueError(f"PinnConfig: need 0 < lr_final <= lr, got {self.lr_final}, {self.lr}")


def scales_from(q_mm3_s: float, radius_mm: float, centre_mm) -> Scales:
    """L = the inlet radius, U = the mean inlet velocity Q/(πL²), x0 = ``centre_mm``."""
    return Scales.for_vessel(radius_mm, q_mm3_s / (math.pi * radius_mm ** 2), origin_mm=tuple(np.asarray(centre_mm, float)))


Anchor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # points [P, 3] mm -> (u [P, 3] mm/s, p [P] Pa)


class FlowPINN:
    """Velocity and pressure as an MLP of position (module docstring)."""

    def __init__(self, config: PinnConfig, scales: Scales) -> None:
        config.validate()
        self.config, self.scales = config, scales
        self.device = resolve_device(config.device)
        self.net = JetMLP(3, 4, config.width, config.depth, config.fourier, config.fourier_sigma,
                          seed=config.seed).to(self.device)
        self.p_scale = 1.0  # P: the pressure output times P is p*
        self.p_offset = 0.0  # Pa: the anchor's mean pressure (pressure is defined up to a constant)
        self.inside: Callable[[np.ndarray], np.ndarray] | None = None
        self.history: list[dict] = []
        self.opt: torch.optim.Optimizer | None = None
        self._physics: dict = {}

    # --------------------------------------------------------------------------------------------
    def _nd(self, pts_mm: np.ndarray) -> torch.Tensor:
        s = self.scales
        return torch.as_tensor((np.asarray(pts_mm, float) - np.asarray(s.origin_mm)) / s.length_mm, dtype=torch.float32,
                               device=self.device)

    def _targets(self, u_mm_s: np.ndarray, p_pa: np.ndarray) -> torch.Tensor:
        s = self.scales
        u = np.asarray(u_mm_s, float) / s.velocity_mm_s
        p = (np.asarray(p_pa, float) - self.p_offset) / (s.pressure_pa * self.p_scale)
        return torch.as_tensor(np.column_stack([u, p]), dtype=torch.float32, device=self.device)

    def _points(self, centres_mm: np.ndarray, sigma_mm, anchor: Anchor, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.asarray(centres_mm, float).reshape(-1, 3)
        sig = np.broadcast_to(np.asarray(sigma_mm, float), (len(c),))[:, None]
        pts = [c] + [c + sig * rng.standard_normal(c.shape) for _ in range(self.config.jitter)]
        pts = np.concatenate(pts)
        u, p = anchor(pts)
        ok = np.isfinite(p) & np.all(np.isfinite(u), axis=1)
        if self.inside is not None:
            ok &= self.inside(pts) >= 0.5
        if ok.sum() < 100:
            raise ValueError(f"FlowPINN: only {int(ok.sum())} of {len(pts)} points around the Gaussian centres lie "
                             "inside the anchor's lumen; need at least 100")
        return pts[ok], u[ok], p[ok]

    def _lr(self, k: int, n: int) -> float:
        c = self.config
        return c.lr_final + 0.5 * (c.lr - c.lr_final) * (1 + math.cos(math.pi * min(k, n) / max(n, 1)))

    # --------------------------------------------------------------------------------------------
    def fit(self, anchor: Anchor, centres_mm: np.ndarray, sigma_mm, wall_mm: np.ndarray,
            inside: Callable[[np.ndarray], np.ndarray] | None = None, flux_sections: list | None = None,
            q_mm3_s: float | None = None, progress: bool = False) -> dict:
        """Train from scratch (module docstring). ``anchor``: the field to reproduce (CFD, or for the
        pure PINN the quasi-Poiseuille start); ``centres_mm`` [N, 3] the Gaussian centres, ``sigma_mm``
        their size (scalar or [N]); ``wall_mm`` [W, 3] points on the lumen wall; ``inside`` the lumen
        fraction at points; ``flux_sections`` [(points [S, 3], weights [S] mm², unit normal [3])] and
        ``q_mm3_s`` for the pure PINN's flux term. Returns the fit's report."""
        c = self.config
        self.inside = inside
        rng = np.random.default_rng(c.seed)
        torch.manual_seed(c.seed)
        pts, u, p = self._points(centres_mm, sigma_mm, anchor, rng)
        self.p_offset = float(np.mean(p))
        self.p_scale = max(float(np.std(p)) / self.scales.pressure_pa, 1.0)
        perm = rng.permutation(len(pts))
        n_val = max(len(pts) // 10, 1)
        val, tr = perm[:n_val], perm[n_val:]
        self._data = (self._nd(pts[tr]), self._targets(u[tr], p[tr]))
        self._val = (pts[val], u[val], p[val])
        self._physics = {"centres": self._nd(np.asarray(centres_mm, float).reshape(-1, 3)),
                         "wall": self._nd(wall_mm), "sections": flux_sections, "q": q_mm3_s}
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        t0 = time.perf_counter()
        with _threads(c.threads):
            self._train(c.data_steps, physics=False, progress=progress)
            after_data = self.report()["anchor_velocity_rel_l2"]
            t1 = time.perf_counter()
            self._train(c.physics_steps, physics=True, progress=progress, lr_scale=c.physics_lr_scale)
        rep = self.report()
        rep["anchor_velocity_rel_l2_data_phase"] = after_data
        rep.update(data_seconds=t1 - t0, physics_seconds=time.perf_counter() - t1, n_points=len(pts),
                   config=asdict(c))
        return rep

    def update(self, centres_mm: np.ndarray, sigma_mm, wall_mm: np.ndarray, anchor: Anchor | None = None,
               steps: int | None = None) -> dict:
        """Warm start after a small change of geometry: new centres and wall, the same anchor unless a
        new one is given (a re-solved CFD), ``steps`` physics-phase steps (default: the config's)."""
        if self.opt is None:
            raise RuntimeError("FlowPINN.update: fit() first")
        c = self.config
        if anchor is not None:
            pts, u, p = self._points(centres_mm, sigma_mm, anchor, np.random.default_rng(c.seed + len(self.history)))
            self._data = (self._nd(pts), self._targets(u, p))
        self._physics.update(centres=self._nd(np.asarray(centres_mm, float).reshape(-1, 3)), wall=self._nd(wall_mm))
        t0 = time.perf_counter()
        with _threads(c.threads):
            self._train(c.physics_steps if steps is None else steps, physics=True, lr_scale=0.2)
        rep = self.report()
        rep["update_seconds"] = time.perf_counter() - t0
        return rep

    def _train(self, n: int, physics: bool, progress: bool = False, lr_scale: float = 1.0) -> None:
        from tqdm import tqdm

        c = self.config
        X, Y = self._data
        g = torch.Generator().manual_seed(c.seed + len(self.history))
        re = self.scales.Re
        for k in tqdm(range(n), desc="PINN " + ("physics" if physics else "data"), disable=not progress, leave=False):
            for grp in self.opt.param_groups:
                grp["lr"] = lr_scale * self._lr(k, n)
            i = torch.randint(len(X), (min(c.batch_data, len(X)),), generator=g)
            out = self.net(X[i])
            err = out - Y[i]
            data = err[:, :3].square().sum(1).mean() + c.w_pressure * err[:, 3].square().mean()
            loss = data
            if physics:
                loss = c.w_data * data
                C = self._physics["centres"]
                j = torch.randint(len(C), (min(c.batch_physics, len(C)),), generator=g)
                val, grad, d2 = self.net.jet(C[j])
                grad = torch.cat([grad[:, :3], self.p_scale * grad[:, 3:]], 1)
                mom, mass = ns_residuals(val, grad, d2, re)
                ns, ms = mom.square().sum(1).mean(), mass.square().mean()
                W = self._physics["wall"]
                wi = torch.randint(len(W), (min(c.batch_physics, len(W)),), generator=g)
                wall = self.net(W[wi])[:, :3].square().sum(1).mean()
                loss = loss + c.w_ns * ns + c.w_mass * ms + c.w_wall * wall
                if c.w_data == 0 and self._physics.get("sections"):
                    loss = loss + c.w_flux * self._flux_loss()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if k % 100 == 0 or k == n - 1:
                rec = {"phase": "physics" if physics else "data", "step": k, "data": float(data.detach())}
                if physics:
                    rec.update(ns=float(ns.detach()), mass=float(ms.detach()), wall=float(wall.detach()))
                self.history.append(rec)

    def _flux_loss(self) -> torch.Tensor:
        """Σ over a few sections of (flux / Q − 1)²: the pure PINN's flow rate."""
        q = self._physics["q"] / (self.scales.velocity_mm_s * self.scales.length_mm ** 2)
        loss = 0.0
        secs = self._physics["sections"]
        pick = np.random.default_rng(len(self.history)).choice(len(secs), min(8, len(secs)), replace=False)
        for k in pick:
            pts, w, n = secs[k]
            u = self.net(self._nd(pts))[:, :3]
            flux = (u @ torch.as_tensor(n, dtype=torch.float32, device=self.device)
                    * torch.as_tensor(w / self.scales.length_mm ** 2, dtype=torch.float32, device=self.device)).sum()
            loss = loss + (flux / q - 1) ** 2
        return loss / len(pick)

    # --------------------------------------------------------------------------------------------
    def _eval(self, pts_mm: np.ndarray, chunk: int = 65536) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(pts_mm), chunk):
                out.append(self.net(self._nd(pts_mm[i:i + chunk])).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 4))

    def velocity_mm_s(self, points_mm: np.ndarray) -> np.ndarray:  # [P, 3] -> [P, 3]
        pts = np.asarray(points_mm, float).reshape(-1, 3)
        u = self._eval(pts)[:, :3] * self.scales.velocity_mm_s
        if self.inside is not None:
            u[self.inside(pts) < 0.5] = 0.0
        return u

    def pressure_pa(self, points_mm: np.ndarray) -> np.ndarray:  # [P, 3] -> [P]
        pts = np.asarray(points_mm, float).reshape(-1, 3)
        p = self._eval(pts)[:, 3] * self.scales.pressure_pa * self.p_scale + self.p_offset
        if self.inside is not None:
            p[self.inside(pts) < 0.5] = np.nan
        return p

    def residual_rms(self, points_mm: np.ndarray) -> dict:
        """RMS of the non-dimensional momentum and mass residuals at points (the Gaussian centres), and
        the momentum RMS relative to the RMS of its convective term |(u·∇)u| (how far from zero)."""
        x = self._nd(points_mm)
        val, grad, d2 = self.net.jet(x)
        grad = torch.cat([grad[:, :3], self.p_scale * grad[:, 3:]], 1)
        mom, mass = ns_residuals(val, grad, d2, self.scales.Re)
        conv = torch.einsum("nj,nij->ni", val[:, :3], grad[:, :3, :])
        mom, mass, conv = mom.detach(), mass.detach(), conv.detach()
        return {"momentum_rms": float(mom.square().sum(1).mean().sqrt()), "mass_rms": float(mass.square().mean().sqrt()),
                "momentum_rel_convective": float(mom.square().sum(1).mean().sqrt() / conv.square().sum(1).mean().sqrt()
                                                 .clamp_min(1e-12))}

    def report(self) -> dict:
        """The fit against the anchor on the held-out points, and the residuals at the centres."""
        pts, u, p = self._val
        up = self.velocity_mm_s(pts) if self.inside is None else self._eval(pts)[:, :3] * self.scales.velocity_mm_s
        rep = {"anchor_velocity_rel_l2": float(np.linalg.norm(up - u) / max(np.linalg.norm(u), 1e-12)),
               "steps": len([h for h in self.history])}
        C = self._physics["centres"]
        idx = np.random.default_rng(0).choice(len(C), min(2048, len(C)), replace=False)
        pts_c = C[idx].double().cpu().numpy() * self.scales.length_mm + np.asarray(self.scales.origin_mm)
        rep.update(self.residual_rms(pts_c))
        return rep


class _threads:
    """torch threads set for a block (0: every core), restored after."""

    def __init__(self, n: int) -> None:
        import os

        self.n = n if n > 0 else max(1, os.cpu_count() or 1)

    def __enter__(self):
        self.prev = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev)
