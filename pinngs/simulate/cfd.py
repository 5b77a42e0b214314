"""Reference blood flow: axisymmetric FEM (the closed forms live in ``pinngs.laws``).

Units everywhere: mm, s, g.  Then pressure is in Pa (1 g mm^-1 s^-2 = 1 Pa), dynamic viscosity in
Pa s = g/(mm s), density in g/mm^3, flow rate in mm^3/s.

* ``solve_axisymmetric``: steady incompressible Navier-Stokes in an axisymmetric lumen r <= R(z),
  Taylor-Hood P2-P1 on a body-fitted triangle mesh with scikit-fem, Picard then Newton.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..flow.fem import probe_matrix, sparse_solver
from ..laws import poiseuille_velocity
from ..units import MU_BLOOD_PA_S as MU_BLOOD
from ..units import RHO_BLOOD_G_MM3 as RHO_BLOOD


def stenosis_radius(z_mm, r0_mm: float, severity: float, length_mm: float, z_centre_mm: float = 0.0):
    """Cosine-shaped axisymmetric stenosis radius (mm).

    r(z) = r0 (1 - severity/2 (1 + cos(2 pi (z - zc)/length))) for |z - zc| <= length/2, else r0;
    ``severity`` is the fractional diameter reduction at the throat (0.5 = 50 %).
    """
    z = np.asarray(z_mm, dtype=float)
    s = z - z_centre_mm
    bump = 0.5 * severity * (1.0 + np.cos(2.0 * np.pi * s / length_mm))
    return np.where(np.abs(s) <= 0.5 * length_mm, r0_mm * (1.0 - bump), r0_mm)


# ----------------------------------------------------------------------------------------------
# axisymmetric steady Navier-Stokes (scikit-fem)
# ----------------------------------------------------------------------------------------------
# Mesh coordinates: x[0] = z (axial), x[1] = r (radial).  Velocity components: u[0] = u_z, u[1] = u_r.
# Weak form (everything weighted by r, i.e. integrals over r dr dz):
#   mu (grad u : grad v + u_r v_r / r^2) r + rho ((w . grad) u) . v r - p div_a(v) r = 0
#   -q div_a(u) r = 0,   div_a(u) = du_z/dz + du_r/dr + u_r/r
# The natural condition of this (gradient) form, mu du/dn - p n = 0, is the do-nothing outlet.

def _forms(rho: float, mu: float):
    from skfem import BilinearForm, LinearForm

    @BilinearForm
    def viscous(u, v, w):
        r = w.x[1]
        g = u.grad
        gv = v.grad
        return mu * ((g[0, 0] * gv[0, 0] + g[0, 1] * gv[0, 1] + g[1, 0] * gv[1, 0] + g[1, 1] * gv[1, 1]) * r
                     + u[1] * v[1] / r)

    @BilinearForm
    def divergence(u, q, w):
        r = w.x[1]
        g = u.grad
        return -q * ((g[0, 0] + g[1, 1]) * r + u[1])

    @BilinearForm
    def convection(u, v, w):  # rho ((w . grad) u) . v r, w = current iterate (Picard / Oseen)
        r = w.x[1]
        a = w.wind
        g = u.grad
        c0 = g[0, 0] * a[0] + g[0, 1] * a[1]
        c1 = g[1, 0] * a[0] + g[1, 1] * a[1]
        return rho * (c0 * v[0] + c1 * v[1]) * r

    @BilinearForm
    def reaction(u, v, w):  # rho ((u . grad) w) . v r: the other half of the Newton linearisation
        r = w.x[1]
        gw = w.wind.grad
        uu = u
        c0 = gw[0, 0] * uu[0] + gw[0, 1] * uu[1]
        c1 = gw[1, 0] * uu[0] + gw[1, 1] * uu[1]
        return rho * (c0 * v[0] + c1 * v[1]) * r

    @LinearForm
    def newton_rhs(v, w):  # rho ((w . grad) w) . v r
        r = w.x[1]
        a = w.wind
        gw = w.wind.grad
        c0 = gw[0, 0] * a[0] + gw[0, 1] * a[1]
        c1 = gw[1, 0] * a[0] + gw[1, 1] * a[1]
        return rho * (c0 * v[0] + c1 * v[1]) * r

    return viscous, divergence, convection, reaction, newton_rhs


def _graded_nodes(n: int, beta: float) -> np.ndarray:
    """n+1 points on [0, 1], clustered towards 1 (the wall): blend of uniform and sin(pi s/2)."""
    s = np.linspace(0.0, 1.0, n + 1)
    eta = (1.0 - beta) * s + beta * np.sin(0.5 * np.pi * s)
    eta[0], eta[-1] = 0.0, 1.0
    return eta


def _axial_nodes(z_mm: np.ndarray, radius_mm: np.ndarray, n: int, gamma: float) -> np.ndarray:
    """n+1 axial stations equidistributing the density 1 + gamma (R_max/R(z) - 1): finer in narrowings."""
    z0, z1 = float(z_mm[0]), float(z_mm[-1])
    zf = np.linspace(z0, z1, max(2001, 20 * n))
    dens = 1.0 + gamma * (radius_mm.max() / np.interp(zf, z_mm, radius_mm) - 1.0)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(zf))])
    z = np.interp(np.linspace(0.0, cum[-1], n + 1), cum, zf)
    z[0], z[-1] = z0, z1
    return z


@dataclass
class AxiFlow:
    """Steady axisymmetric flow on a body-fitted P2-P1 mesh (coordinates x[0] = z, x[1] = r)."""

    mesh: object  # skfem.MeshTri, p[0] = z (mm), p[1] = r (mm)
    basis_u: object  # skfem CellBasis, ElementVector(ElementTriP2): components (u_z, u_r)
    basis_p: object  # skfem CellBasis, ElementTriP1
    u: np.ndarray  # velocity DOFs (mm/s)
    p: np.ndarray  # pressure DOFs (Pa)
    q_mm3_s: float
    rho: float
    mu: float
    z_nodes_mm: np.ndarray  # axial mesh stations
    eta_nodes: np.ndarray  # radial mesh stations as a fraction of the local radius
    z_profile_mm: np.ndarray  # input geometry
    r_profile_mm: np.ndarray
    info: dict = field(default_factory=dict)  # iterations, residual history, timing

    def __post_init__(self):
        # quad (i axial, j radial) -> its two triangles, from the triangle centroids in (z, eta)
        nz, ne = len(self.z_nodes_mm) - 1, len(self.eta_nodes) - 1
        cz = self.mesh.p[0, self.mesh.t].mean(axis=0)
        ci = np.clip(np.searchsorted(self.z_nodes_mm, cz) - 1, 0, nz - 1)
        # eta of each vertex is exact (r = eta R at the vertex's station): average in eta space
        vz = self.mesh.p[0]
        rw = self._wall_radius(vz)
        veta = np.divide(self.mesh.p[1], rw, out=np.zeros_like(vz), where=rw > 0)
        ce = veta[self.mesh.t].mean(axis=0)
        cj = np.clip(np.searchsorted(self.eta_nodes, ce) - 1, 0, ne - 1)
        quad = ci * ne + cj
        order = np.argsort(quad, kind="stable")
        if not np.array_equal(np.bincount(quad, minlength=nz * ne), np.full(nz * ne, 2)):
            raise RuntimeError("unexpected mesh structure (each quad should hold two triangles)")
        self._quad_tris = order.reshape(nz * ne, 2)
        self._nz, self._ne = nz, ne

    # -- geometry helpers -----------------------------------------------------------------
    def _wall_radius(self, z):
        """Radius of the mesh wall (piecewise linear through the wall vertices)."""
        return np.interp(z, self.z_nodes_mm, np.interp(self.z_nodes_mm, self.z_profile_mm, self.r_profile_mm))

    def lumen_radius(self, z_mm):
        """Input geometry R(z) (mm), NaN outside [z0, z1]."""
        return np.interp(z_mm, self.z_profile_mm, self.r_profile_mm, left=np.nan, right=np.nan)

    def _find_cells(self, z, r):
        """Triangle index for points known to lie in the mesh (structured search, vectorised)."""
        p, t = self.mesh.p, self.mesh.t
        i = np.clip(np.searchsorted(self.z_nodes_mm, z, side="right") - 1, 0, self._nz - 1)
        rw = self._wall_radius(z)
        eta = np.clip(np.divide(r, rw, out=np.zeros_like(r), where=rw > 0), 0.0, 1.0)
        j = np.clip(np.searchsorted(self.eta_nodes, eta, side="right") - 1, 0, self._ne - 1)
        cand = self._quad_tris[i * self._ne + j]  # [n, 2]
        best = np.empty(len(z), dtype=np.int64)
        score = np.full(len(z), -np.inf)
        for k in range(2):
            tri = cand[:, k]
            x0, y0 = p[0, t[0, tri]], p[1, t[0, tri]]
            x1, y1 = p[0, t[1, tri]], p[1, t[1, tri]]
            x2, y2 = p[0, t[2, tri]], p[1, t[2, tri]]
            det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
            l1 = ((z - x0) * (y2 - y0) - (x2 - x0) * (r - y0)) / det
            l2 = ((x1 - x0) * (r - y0) - (z - x0) * (y1 - y0)) / det
            s = np.minimum(np.minimum(l1, l2), 1.0 - l1 - l2)  # >= 0 inside
            better = s > score
            best[better], score[better] = tri[better], s[better]
        return best

    def _probe(self, basis, z, r, cells):
        return probe_matrix(basis, np.stack([z, r]), cells)

    # -- evaluation -------------------------------------------------------------------------
    def sample(self, r_mm, z_mm):
        """(u_r, u_z, p) at arbitrary points (broadcast shapes).  Outside the lumen (r > R(z) or z
        outside [z0, z1]) the velocity is 0 and the pressure NaN.  Points inside R(z) but just
        outside the piecewise-linear mesh wall are evaluated on the wall."""
        r_in, z_in = np.broadcast_arrays(np.abs(np.asarray(r_mm, dtype=float)), np.asarray(z_mm, dtype=float))
        shape = r_in.shape
        r, z = r_in.ravel(), z_in.ravel()
        R = self.lumen_radius(z)
        inside = np.isfinite(R) & (r <= R * (1 + 1e-12))
        ur = np.zeros(r.shape)
        uz = np.zeros(r.shape)
        pp = np.full(r.shape, np.nan)
        if inside.any():
            zi = z[inside]
            ri = np.minimum(r[inside], self._wall_radius(zi))
            cells = self._find_cells(zi, ri)
            n = len(zi)
            vel = self._probe(self.basis_u, zi, ri, cells) @ self.u
            uz[inside], ur[inside] = vel[:n], vel[n:]
            pp[inside] = self._probe(self.basis_p, zi, ri, cells) @ self.p
        return ur.reshape(shape), uz.reshape(shape), pp.reshape(shape)

    def _section_quadrature(self, z: float):
        """Gauss points/weights in r on [0, R_mesh(z)] that integrate the piecewise polynomial
        fields (cut at every mesh edge crossing) exactly up to degree 5."""
        z = float(np.clip(z, self.z_nodes_mm[0], self.z_nodes_mm[-1]))
        p, f = self.mesh.p, self.mesh.facets
        za, zb = p[0, f[0]], p[0, f[1]]
        ra, rb = p[1, f[0]], p[1, f[1]]
        cross = (np.minimum(za, zb) <= z) & (np.maximum(za, zb) >= z) & (za != zb)
        s = (z - za[cross]) / (zb[cross] - za[cross])
        rc = ra[cross] + s * (rb[cross] - ra[cross])
        rw = float(self._wall_radius(z))
        brk = np.unique(np.concatenate([[0.0, rw], np.clip(rc, 0.0, rw)]))
        brk = brk[np.concatenate([[True], np.diff(brk) > 1e-12 * rw])]
        xg, wg = np.polynomial.legendre.leggauss(3)
        a, b = brk[:-1, None], brk[1:, None]
        rq = (0.5 * (a + b) + 0.5 * (b - a) * xg).ravel()
        wq = (0.5 * (b - a) * wg).ravel()
        return rq, wq, rw

    def section_mean_pressure(self, z_mm: float) -> float:
        """Area-weighted mean pressure (Pa) over the cross-section at z: 2 pi int p r dr / (pi R^2)."""
        rq, wq, rw = self._section_quadrature(z_mm)
        _, _, pp = self.sample(rq, np.full_like(rq, np.clip(z_mm, self.z_nodes_mm[0], self.z_nodes_mm[-1])))
        return float(2.0 * np.sum(wq * pp * rq) / rw ** 2)

    def flow_rate(self, z_mm: float) -> float:
        """Flow rate (mm^3/s) through the section at z: 2 pi int u_z r dr."""
        rq, wq, _ = self._section_quadrature(z_mm)
        _, uz, _ = self.sample(rq, np.full_like(rq, np.clip(z_mm, self.z_nodes_mm[0], self.z_nodes_mm[-1])))
        return float(2.0 * np.pi * np.sum(wq * uz * rq))

    def dp_between(self, z_a_mm: float, z_b_mm: float) -> float:
        """Mean pressure at z_a minus mean pressure at z_b (Pa)."""
        return self.section_mean_pressure(z_a_mm) - self.section_mean_pressure(z_b_mm)

    @property
    def dp_pa(self) -> float:
        """Inlet minus outlet section-mean pressure (Pa)."""
        return self.dp_between(self.z_nodes_mm[0], self.z_nodes_mm[-1])


def solve_axisymmetric(z_mm: np.ndarray, radius_mm: np.ndarray, q_mm3_s: float, rho: float = RHO_BLOOD,
                       mu: float = MU_BLOOD, n_axial: int = 120, n_radial: int = 16, tol: float = 1e-8,
                       max_iter: int = 30, radial_grading: float = 0.5, axial_grading: float = 1.0,
                       newton: bool = True, newton_switch: float = 0.1, verbose: bool = False) -> AxiFlow:
    """Steady axisymmetric Navier-Stokes in the lumen r <= R(z), z in [z_mm[0], z_mm[-1]].

    Taylor-Hood P2-P1 (scikit-fem) on a body-fitted structured triangle mesh: the unit square
    (n_axial x n_radial cells; radial stations graded towards the wall by ``radial_grading``,
    axial stations concentrated where the lumen narrows by ``axial_grading``, 0 = uniform) mapped
    to z = z0 + xi (z1 - z0), r = eta R(z).  R is linearly interpolated between the nodes z_mm.

    Boundary conditions: inlet (z0) fully developed Poiseuille profile carrying q_mm3_s, no slip on
    the wall, u_r = 0 on the axis, do-nothing (mu du/dn - p n = 0) at the outlet, so the outlet
    mean pressure is ~0 Pa.

    Nonlinearity: Stokes start, Picard (Oseen) iterations until the relative velocity update is
    below ``newton_switch``, then Newton (if ``newton``; falls back to Picard when an update grows)
    until it is below ``tol``.  Raises RuntimeError if not converged in ``max_iter`` iterations
    (the Stokes solve is not counted).  Typical: 6-9 iterations for inlet Re 100-400 in a 50 %
    stenosis.  ``info`` on the result holds the iteration history, DOF count and timing.
    """
    from skfem import Basis, ElementTriP1, ElementTriP2, ElementVector, MeshTri, asm, condense, solve

    z_mm = np.asarray(z_mm, dtype=float)
    radius_mm = np.asarray(radius_mm, dtype=float)
    if z_mm.ndim != 1 or z_mm.shape != radius_mm.shape or len(z_mm) < 2:
        raise ValueError("z_mm and radius_mm must be 1-D arrays of the same length >= 2")
    if np.any(np.diff(z_mm) <= 0):
        raise ValueError("z_mm must be strictly increasing")
    if np.any(radius_mm <= 0):
        raise ValueError("radius_mm must be > 0")
    t_start = time.perf_counter()

    zs = _axial_nodes(z_mm, radius_mm, n_axial, axial_grading)
    etas = _graded_nodes(n_radial, radial_grading)
    z0, z1 = zs[0], zs[-1]
    xi = (zs - z0) / (z1 - z0)
    m = MeshTri.init_tensor(xi, etas)
    pz = z0 + m.p[0] * (z1 - z0)
    pz[np.isclose(m.p[0], 1.0)] = z1
    pr = m.p[1] * np.interp(pz, z_mm, radius_mm)
    tol_xi = 1e-9
    mesh = MeshTri(np.stack([pz, pr]), m.t).with_boundaries({
        "inlet": lambda x: np.abs(x[0] - z0) < tol_xi * (z1 - z0),
        "outlet": lambda x: np.abs(x[0] - z1) < tol_xi * (z1 - z0),
        "axis": lambda x: np.abs(x[1]) < 1e-12,
    })
    # the wall: boundary facets that are none of the above
    bf = mesh.boundary_facets()
    named = np.concatenate([mesh.boundaries[k] for k in ("inlet", "outlet", "axis")])
    mesh = mesh.with_boundaries({"wall": np.setdiff1d(bf, named)})

    ub = Basis(mesh, ElementVector(ElementTriP2()), intorder=6)
    pb = ub.with_element(ElementTriP1())
    viscous, divergence, convection, reaction, newton_rhs = _forms(rho, mu)
    A = asm(viscous, ub)
    B = asm(divergence, ub, pb)
    nu, npr = ub.N, pb.N

    # Dirichlet data
    inlet = ub.get_dofs("inlet")
    wall = ub.get_dofs("wall")
    axis = ub.get_dofs("axis")
    d_inlet = inlet.all()
    d_inlet_z = inlet.all("u^1")
    d_wall = wall.all()
    d_axis_r = axis.all("u^2")
    D = np.unique(np.concatenate([d_inlet, d_wall, d_axis_r]))
    u_bc = np.zeros(nu)
    r_in = float(radius_mm[0])
    u_bc[d_inlet_z] = poiseuille_velocity(ub.doflocs[1, d_inlet_z], r_in, q_mm3_s)
    # wall and axis values are 0; the inlet corner on the wall is 0 from the profile as well
    u_bc[d_wall] = 0.0
    x_bc = np.concatenate([u_bc, np.zeros(npr)])

    def linear_solve(Kuu, rhs_u):
        K = sp.bmat([[Kuu, B.T], [B, None]], format="csr")
        rhs = np.concatenate([rhs_u, np.zeros(npr)])
        return solve(*condense(K, rhs, x=x_bc, D=D), solver=sparse_solver())

    history = []
    x = linear_solve(A, np.zeros(nu))  # Stokes
    u = x[:nu]
    mode = "picard"
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        wind = ub.interpolate(u)
        C = asm(convection, ub, wind=wind)
        if mode == "newton":
            N = asm(reaction, ub, wind=wind)
            f = asm(newton_rhs, ub, wind=wind)
            x_new = linear_solve(A + C + N, f)
        else:
            x_new = linear_solve(A + C, np.zeros(nu))
        u_new = x_new[:nu]
        rel = float(np.linalg.norm(u_new - u) / max(np.linalg.norm(u_new), 1e-300))
        history.append((mode, rel))
        if verbose:
            print(f"  iter {it:2d} {mode:6s} rel update {rel:.3e}")
        x, u = x_new, u_new
        if rel < tol:
            converged = True
            break
        if newton and mode == "picard" and rel < newton_switch:
            mode = "newton"
        elif mode == "newton" and len(history) >= 2 and history[-2][0] == "newton" and rel > history[-2][1]:
            mode = "picard"  # Newton not contracting: back to the robust fixed point
    if not converged:
        raise RuntimeError(
            f"solve_axisymmetric did not converge: relative velocity update {history[-1][1]:.3e} > tol {tol:.1e} "
            f"after {it} iterations (max_iter={max_iter}); Q = {q_mm3_s:g} mm^3/s, "
            f"Re_inlet = {2 * rho * q_mm3_s / (np.pi * r_in * mu):.1f}, mesh {n_axial}x{n_radial}; "
            f"history: " + ", ".join(f"{md[0]}:{r:.1e}" for md, r in history))

    info = {
        "iterations": it,
        "history": history,
        "n_dofs": nu + npr,
        "seconds": time.perf_counter() - t_start,
        "re_inlet": 2 * rho * q_mm3_s / (np.pi * r_in * mu),
        "n_axial": n_axial,
        "n_radial": n_radial,
    }
    return AxiFlow(mesh=mesh, basis_u=ub, basis_p=pb, u=x[:nu].copy(), p=x[nu:].copy(), q_mm3_s=float(q_mm3_s),
                   rho=rho, mu=mu, z_nodes_mm=zs, eta_nodes=etas, z_profile_mm=z_mm.copy(),
                   r_profile_mm=radius_mm.copy(), info=info)
