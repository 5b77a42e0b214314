"""3D steady Navier-Stokes on tetrahedra: the simulator's reference CFD for phantoms that are not
axisymmetric, and the product's CFD on a reconstruction (``--flow fem``).

    flow = solve_tet(lumen, q_mm3_s=1000.0)                   # -> TetFlow; lumen: Lumen or a Phantom
    vel_mm_s, p_pa = flow.sample(points_mm)                   # [N, 3], [N]; NaN outside the mesh
    field = FemField(solve_tet(loft(branches), q))            # a reconstruction's centerline, lofted

Geometry. The lumen (each branch the union of the circles of radius r normal to its centerline,
the branches united) is built as an OpenCASCADE solid with gmsh: each branch is lofted through circles normal to
its centerline (``addThruSections``, ruled between sections spaced so that the radius changes by ≤ 2 % and the axis turns by ≤ 8°), each junction gets the sphere of its parent's radius, and the
pieces are fused. The inlet is the flat cap at the first point of branch 0; every branch end from
which no other branch starts is a flat outlet cap. Rounded end caps of the voxel lumen lie outside
the CFD domain (see ``pinngs.simulate.flowfield.tet_fem``).

Mesh. gmsh tetrahedra whose size follows the lumen radius, h = R(x) / ``n_per_radius``, where R
is the narrowest radius within 6 mm upstream (fine in a stenosis throat and in the jet after it,
coarser in a wide parent); with ``jet`` (the product's default, ``_Surface.size_mm``) a lesion's
wake is fine only in a core around the jet and coarsens outward into the recirculation; then made quadratic (``MeshTet2``) with the
mid-edge nodes of the wall moved onto the exact wall (``_Surface.project``), so that the wall is curved and a
circular section is represented to O(h³) rather than as a polygon.

Flow. Taylor-Hood P2-P1 with scikit-fem, in the units of the whole simulator (mm, s, g → Pa):
    mu (grad u, grad v) + rho ((u·grad) u, v) - (p, div v) = 0,   (div u, q) = 0,
fully developed Poiseuille velocity carrying Q at the inlet, no slip at the wall, and the natural
"do-nothing" condition mu du/dn - p n = 0 at every outlet (all outlets at the same mean pressure,
~0 Pa; the flow split between daughters is whatever the geometry's resistance gives). Stokes start,
Picard (Oseen) until the update is below ``newton_switch``, then Newton, solved with SuperLU.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..units import MU_BLOOD_PA_S as MU_BLOOD
from ..units import RHO_BLOOD_G_MM3 as RHO_BLOOD


JUNCTION_SPHERE = 1.03


class DegenerateMeshError(RuntimeError):
    """gmsh left near-flat tetrahedra at this mesh size (``mesh_lumen``); another size usually does not."""


def check_jet(jet) -> None:
    """ValueError unless ``jet`` is None or (tetrahedra per throat radius, core radius in throat radii,
    grade in mm per mm), all > 0 (``_Surface.size_mm``)."""
    if jet is not None and (len(jet) != 3 or not min(jet) > 0):
        raise ValueError(f"jet must be None or (tetrahedra per throat radius, core radius in throat radii, grade in "
                         f"mm per mm), all > 0; got {jet!r}")


# a sample point may lie this far outside its cell (barycentric): the quadratic wall between its
# nodes is within O(h³) of the true surface, and a point in that sliver is evaluated in its cell
OUTSIDE_TOL = 0.05

# ------------------------------------------------------------------------------------------------
# sparse solves and point probes (also used by the simulator's axisymmetric solver)
# ------------------------------------------------------------------------------------------------
def sparse_solver():
    """The direct solver for the FEM saddle-point systems, as a scikit-fem ``solver``.

    Intel MKL PARDISO (``pypardiso``) when it is installed: multithreaded, and on the 3D
    Taylor-Hood systems about 7x faster than SciPy's SuperLU (0.36 s against 2.4 s for 13.7k
    unknowns on 2 cores), which is what lets the 3D eccentric stenosis be meshed finely enough to
    converge. SciPy's ``spsolve`` (SuperLU) otherwise. Both are exact direct solvers; the choice
    changes only the time."""
    try:
        import pypardiso
    except ImportError:  # pragma: no cover - pypardiso is in the requirements
        return None  # scikit-fem's default, scipy.sparse.linalg.spsolve

    def solver(A, b, **kwargs):
        return pypardiso.spsolve(sp.csr_matrix(A), np.asarray(b, dtype=float))

    return solver


def probe_matrix(basis, x: np.ndarray, cells: np.ndarray, ref: np.ndarray | None = None) -> sp.csr_matrix:
    """Matrix mapping a basis' DOFs to its values at points x [dim, N] lying in the given cells [N]
    (component-major rows for vector bases). Like skfem's ``CellBasis.probes`` with the cells known.
    ``ref`` [dim, N]: reference-cell coordinates, if the caller has them (else the mapping's inverse)."""
    mapping = basis.mapping
    pts = mapping.invF(x[:, :, None], tind=cells) if ref is None else ref[:, :, None]
    phis = np.array([basis.elem.gbasis(mapping, pts, k, tind=cells)[0] for k in range(basis.Nbfun)])
    comp = int(np.prod(basis._base_tensor_order))
    npt = x.shape[1]
    rows = np.tile(np.arange(comp * npt), basis.Nbfun)
    cols = basis.element_dofs[:, np.tile(cells, comp)].flatten()
    return sp.coo_matrix((phis.flatten(), (rows, cols)), shape=(comp * npt, basis.N)).tocsr()


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------
@dataclass
class Branch:
    points_mm: np.ndarray  # [P, 3]
    radii_mm: np.ndarray  # [P]

    def resampled(self, step_mm: float) -> "Branch":
        seg = np.linalg.norm(np.diff(self.points_mm, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        n = max(2, int(math.ceil(s[-1] / step_mm)) + 1)
        t = np.linspace(0.0, s[-1], n)
        pts = np.stack([np.interp(t, s, self.points_mm[:, k]) for k in range(3)], axis=1)
        return Branch(pts, np.interp(t, s, self.radii_mm))

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.diff(self.points_mm, axis=0), axis=1).sum())


@dataclass
class Lumen:
    """A vessel as the solver sees it: named branches of centerline points with radii; branch 0
    starts at the inlet, a daughter starts at its parent's last point (``simulate.Phantom`` has
    the same shape)."""

    name: str
    branches: list[Branch]


def swept_signed_distance(branches: list, origin_mm: np.ndarray, spacing_mm: float, shape: tuple[int, int, int],
                          step_mm: float | None = None) -> np.ndarray:
    """Signed distance to the lumen wall (mm, negative inside), [X, Y, Z] float32, of the solid made of
    the circular sections normal to each branch's centerline (the solid the flow truth and the loft
    use), with a round cap at each branch end.

    Within a branch, a point belongs to the section through its closest centerline point:
    d = |x - c(s*)| - r(s*), s* = argmin_s |x - c(s)|; the branches are united (min over branches).
    Exact in the radial direction for a straight axis; on a taper the wall distance is measured
    radially, not normal to the wall (the 0.5 level, which is the wall, is exact). The union of the
    spheres of radius r(s) would be wider than these sections on a steep taper by about r·r'²/2
    (+17 % in radius on the flank of the 70 % stenosis; docs/decisions.md, "Flow engine")."""
    step = step_mm or max(spacing_mm, 0.1)
    sd = np.full(shape, np.inf, dtype=np.float32)
    axes = [origin_mm[k] + spacing_mm * np.arange(shape[k]) for k in range(3)]
    for br in branches:
        b = br.resampled(step)
        # every segment visits the voxels within the branch's widest radius (+2 voxels), so that
        # a voxel's closest centerline point is among the segments that visit it wherever it is
        # inside or near the wall
        reach = float(b.radii_mm.max()) + 2 * spacing_mm
        best_d = np.full(shape, np.inf, dtype=np.float32)  # distance to the closest centerline point
        best_r = np.zeros(shape, dtype=np.float32)  # the radius there
        for a, c, ra, rc in zip(b.points_mm[:-1], b.points_mm[1:], b.radii_mm[:-1], b.radii_mm[1:]):
            lo = np.minimum(a, c) - reach
            hi = np.maximum(a, c) + reach
            i0 = np.clip(np.floor((lo - origin_mm) / spacing_mm).astype(int), 0, np.array(shape) - 1)
            i1 = np.clip(np.ceil((hi - origin_mm) / spacing_mm).astype(int) + 1, 0, np.array(shape))
            X, Y, Z = np.meshgrid(axes[0][i0[0]:i1[0]], axes[1][i0[1]:i1[1]], axes[2][i0[2]:i1[2]], indexing="ij")
            P = np.stack([X, Y, Z], -1)
            ac = c - a
            t = np.clip(((P - a) @ ac) / max(ac @ ac, 1e-12), 0.0, 1.0)
            d = np.linalg.norm(P - (a + t[..., None] * ac), axis=-1).astype(np.float32)
            box = (slice(i0[0], i1[0]), slice(i0[1], i1[1]), slice(i0[2], i1[2]))
            view_d, view_r = best_d[box], best_r[box]  # views: written in place
            closer = d < view_d
            view_d[closer] = d[closer]
            view_r[closer] = (ra + t[closer] * (rc - ra))
        np.minimum(sd, best_d - best_r, out=sd)
    return sd


def tube_occupancy(branches: list, origin_mm: np.ndarray, spacing_mm: float, shape: tuple[int, int, int]) -> np.ndarray:
    """Partial-volume lumen fraction in [0, 1], [X, Y, Z] float32, of the swept tubes (ramp one voxel
    wide)."""
    sd = swept_signed_distance(branches, origin_mm, spacing_mm, shape)
    return np.clip(0.5 - sd / spacing_mm, 0.0, 1.0).astype(np.float32)


def section_radii(branches: list, occ: np.ndarray, origin_mm, spacing_mm: float, n_rays: int = 32,
                  step_vox: float = 0.2) -> list[np.ndarray]:
    """The median wall distance in each centerline point's section plane, [P] per branch (mm): rays
    from the point in ``n_rays`` directions normal to the tangent, each to its first crossing of the
    occupancy's 0.5 level (trilinear, steps of ``step_vox`` voxels). Unbiased on a round lumen with a
    bumpy wall, where the maximum inscribed sphere touches the innermost bump (5 % low on the
    reconstructed tube; docs/decisions.md, "Flow engine: the lofted radius"), and unmoved by a thin
    fin of haze on one side, which inflates the area-equivalent radius. Within one radius of a branch
    end the radius is held at its value there (the cut end is not a section)."""
    from scipy.ndimage import map_coordinates

    from ..polyline import arc_length, plane_basis, tangents

    occ32 = np.asarray(occ, np.float32)
    org = np.asarray(origin_mm, float)
    th = np.linspace(0.0, 2 * math.pi, n_rays, endpoint=False)
    out = []
    for b in branches:
        b = np.asarray(b, float)
        p, t = b[:, :3], tangents(b[:, :3])
        u, v = (np.array(x) for x in zip(*(plane_basis(ti) for ti in t)))  # [P, 3] each
        d = np.cos(th)[None, :, None] * u[:, None] + np.sin(th)[None, :, None] * v[:, None]  # [P, R, 3]
        s = np.arange(0.0, 3.0 * max(float(b[:, 3].max()), spacing_mm), step_vox * spacing_mm)
        r = np.empty((len(p), n_rays))
        for i0 in range(0, len(p), 64):  # [64, R, S, 3] samples at a time
            x = p[i0:i0 + 64, None, None] + d[i0:i0 + 64, :, None] * s[None, None, :, None]
            val = map_coordinates(occ32, ((x - org) / spacing_mm).reshape(-1, 3).T, order=1,
                                  mode="constant").reshape(x.shape[:3])
            outside = val < 0.5
            k = np.where(outside.any(2), outside.argmax(2), len(s) - 1)  # first sample outside
            km = np.maximum(k - 1, 0)
            v0 = np.take_along_axis(val, km[..., None], 2)[..., 0]
            v1 = np.take_along_axis(val, k[..., None], 2)[..., 0]
            frac = np.clip((v0 - 0.5) / np.maximum(v0 - v1, 1e-9), 0.0, 1.0)  # the 0.5 crossing between them
            r[i0:i0 + 64] = s[km] + frac * (s[k] - s[km])
        rm = np.median(r, axis=1)
        # the end sections meet the lumen's cut ends (their planes are not the cut's): hold the
        # radius one radius in from each end, so that the loft ends in a straight cylinder to its cap
        arc = arc_length(p)
        r_in = float(np.median(rm))
        lo, hi = np.searchsorted(arc, r_in), np.searchsorted(arc, arc[-1] - r_in)
        if lo < hi:
            rm[:lo], rm[hi:] = rm[lo], rm[hi - 1]
        out.append(rm)
    return out


def loft(branches: list, smooth_pts: float = 1.0, min_radius_mm: float = 0.1, name: str = "reconstruction") -> Lumen:
    """The solver's lumen from centerline branches ([P, 4] X, Y, Z, R: the maximum inscribed sphere
    radius): each branch swept by its radius, smoothed by a Gaussian of ``smooth_pts`` points along
    the branch (the fit's point-to-point noise would otherwise make the loft's sections wobble) and
    floored at ``min_radius_mm``. Sections are round, so a flattened lumen is lofted with its
    inscribed radius (report the lofted lumen's Dice against the reconstruction's)."""
    from scipy.ndimage import gaussian_filter1d

    out = []
    for k, b in enumerate(branches):
        b = np.asarray(b, float)
        if b.ndim != 2 or b.shape[1] < 4 or len(b) < 3:
            raise ValueError(f"loft: branch {k} must be [P >= 3, 4] X, Y, Z, R; got {b.shape}")
        r = gaussian_filter1d(b[:, 3], smooth_pts, mode="nearest") if smooth_pts > 0 else b[:, 3]
        out.append(Branch(b[:, :3].copy(), np.maximum(r, min_radius_mm)))
    return Lumen(name, out)


@dataclass
class Cap:
    """A flat inlet/outlet disc: centre (mm), unit normal pointing out of the lumen, radius (mm)."""

    centre_mm: np.ndarray
    normal: np.ndarray
    radius_mm: float
    branch: int


def _tangents(pts: np.ndarray, sigma_mm: float = 0.0) -> np.ndarray:
    """Unit tangents [P, 3]; with ``sigma_mm`` > 0 of the centerline smoothed by a Gaussian of that
    width along the arc (measured centerlines kink at their point spacing: a section plane turning
    faster than R per unit arc makes neighbouring sections of the loft cross each other)."""
    t = np.gradient(pts, axis=0)
    if sigma_mm > 0 and len(pts) > 2:
        from scipy.ndimage import gaussian_filter1d

        step = float(np.linalg.norm(np.diff(pts, axis=0), axis=1).mean())
        t = gaussian_filter1d(t, sigma_mm / max(step, 1e-9), axis=0, mode="nearest")
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def _transported_x(tangents: np.ndarray) -> np.ndarray:
    """A reference direction normal to each tangent, parallel-transported (no twist along the loft)."""
    t0 = tangents[0]
    a = np.array([1.0, 0, 0]) if abs(t0[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(t0, a)
    x /= np.linalg.norm(x)
    out = [x]
    for t in tangents[1:]:
        x = x - (x @ t) * t
        x /= np.linalg.norm(x)
        out.append(x)
    return np.array(out)


def _sections(b: Branch, max_step_mm: float, tol: float = 0.01, max_turn_deg: float = 8.0) -> np.ndarray:
    """Indices of the centerline points to loft through: as few as keep the radius within ``tol``
    (relative) of its linear interpolation between kept sections, the axis turning by at most
    ``max_turn_deg`` between them, and at most ``max_step_mm`` of arc apart."""
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(b.points_mm, axis=0), axis=1))])
    tan = _tangents(b.points_mm, float(np.mean(b.radii_mm)))
    r = b.radii_mm
    keep = [0]
    i = 1
    while i < len(s):
        k = keep[-1]
        j = i
        # extend the section [k, j] while it stays within tolerance
        while j + 1 < len(s):
            c = j + 1
            lin = r[k] + (r[c] - r[k]) * (s[k:c + 1] - s[k]) / max(s[c] - s[k], 1e-12)
            if (s[c] - s[k] > max_step_mm or np.max(np.abs(r[k:c + 1] - lin) / r[k:c + 1]) > tol
                    or tan[c] @ tan[k] < math.cos(math.radians(max_turn_deg))):
                break
            j = c
        keep.append(j)
        i = j + 1
    return np.array(keep)


def _topology(ph: Lumen) -> tuple[list[np.ndarray], list[Cap]]:
    """Junction points (where a branch other than 0 starts, with the parent radius there) and caps."""
    junctions, caps = [], []
    b0 = ph.branches[0]
    d0 = _tangents(b0.points_mm, float(np.mean(b0.radii_mm)))[0]  # the loft's first section plane
    caps.append(Cap(b0.points_mm[0].astype(float), -d0, float(b0.radii_mm[0]), 0))
    starts = [b.points_mm[0] for b in ph.branches]
    for bi, b in enumerate(ph.branches):
        end = b.points_mm[-1]
        if any(np.linalg.norm(end - s) < b.radii_mm[-1] for j, s in enumerate(starts) if j != bi and j != 0):
            junctions.append((end, float(b.radii_mm[-1])))
        else:
            d = _tangents(b.points_mm, float(np.mean(b.radii_mm)))[-1]
            caps.append(Cap(end.astype(float), d, float(b.radii_mm[-1]), bi))
    return junctions, caps


def build_geometry(ph: Lumen, max_step_mm: float = 10.0):
    """Create the OCC solid of the lumen in the current gmsh model. Returns the caps."""
    import gmsh

    occ = gmsh.model.occ
    solids = []
    junctions, caps = _topology(ph)
    for b in ph.branches:
        keep = _sections(b, max_step_mm)
        pts, rad = b.points_mm[keep], b.radii_mm[keep]
        tan = _tangents(b.points_mm, float(np.mean(b.radii_mm)))[keep]
        xs = _transported_x(tan)
        wires = []
        for p, r, t, x in zip(pts, rad, tan, xs):
            c = occ.addCircle(*p.tolist(), float(r), zAxis=t.tolist(), xAxis=x.tolist())
            wires.append(occ.addCurveLoop([c]))
        solids.append((3, occ.addThruSections(wires, makeSolid=True, makeRuled=True)[0][1]))
    for c, r in junctions:
        # the branch ends there are great circles of a sphere of radius r, a tangency OCC booleans
        # turn into sliver faces: the junction sphere is 3 % larger (a 0.03 r bulge at the junction)
        solids.append((3, occ.addSphere(*c.tolist(), JUNCTION_SPHERE * r)))
    if len(solids) > 1:
        out, _ = occ.fuse(solids[:1], solids[1:])
        if len(out) != 1:
            raise RuntimeError(f"fusing the branches of {ph.name} gave {len(out)} solids, expected 1")
    occ.synchronize()
    return caps


class _Surface:
    """The lumen's wall near a point (mesh size, and moving wall nodes onto it)."""

    def __init__(self, ph: Lumen, step_mm: float = 0.05, wake_mm: float = 6.0):
        self.segs = []
        wake, ref, local = [], [], []
        for b0 in ph.branches:
            b = b0.resampled(step_mm)
            self.segs.append((b.points_mm[:-1], b.points_mm[1:], b.radii_mm[:-1], b.radii_mm[1:]))
            # mesh-size radius: the narrowest radius over the last ``wake_mm`` upstream, so that a
            # jet leaving a narrowing keeps the throat's resolution for a while
            r = 0.5 * (b.radii_mm[:-1] + b.radii_mm[1:])
            n = max(1, int(round(wake_mm / step_mm)))
            wake.append(np.array([r[max(0, i - n):i + 1].min() for i in range(len(r))]))
            # the healthy radius around a point: the widest within ``wake_mm`` either side
            ref.append(np.array([r[max(0, i - n):i + n + 1].max() for i in range(len(r))]))
            local.append(r)
        self.R_size = np.concatenate(wake)
        self.R_local = np.concatenate(local)
        self.R_ref = np.concatenate(ref)
        from scipy.spatial import cKDTree

        self.mid = np.concatenate([0.5 * (a + c) for a, c, _, _ in self.segs])
        self.flat = [(a, c, ra, rc) for a0, c0, ra0, rc0 in self.segs for a, c, ra, rc in zip(a0, c0, ra0, rc0)]
        A = np.concatenate([s[0] for s in self.segs])
        C = np.concatenate([s[1] for s in self.segs])
        RA = np.concatenate([s[2] for s in self.segs])
        RC = np.concatenate([s[3] for s in self.segs])
        self.A, self.C, self.RA, self.RC = A, C, RA, RC
        self.branch_of = np.concatenate([np.full(len(sg[0]), k) for k, sg in enumerate(self.segs)])
        self.tree = cKDTree(self.mid)

    def radius_near(self, x: np.ndarray) -> np.ndarray:
        """[N] radius of the nearest centerline point (mm)."""
        _, i = self.tree.query(x)
        return 0.5 * (self.RA[i] + self.RC[i])

    def size_radius(self, x: np.ndarray) -> np.ndarray:
        """[N] the radius that sets the mesh size at x (mm): the narrowest within ``wake_mm`` upstream."""
        _, i = self.tree.query(x)
        return self.R_size[i]

    def size_mm(self, x: np.ndarray, n_per_radius: float, jet: tuple | None = None) -> np.ndarray:
        """[N] the target tetrahedron size at x (mm).

        Without ``jet``: R_size / n, the narrowest radius within ``wake_mm`` upstream (the whole
        cross-section of a lesion's wake at the throat's resolution). With ``jet`` = (n_jet, core,
        grade): the same outside lesions; in a lesion (R_size < 0.9 of the widest radius within
        ``wake_mm``) a core of ``core`` x R_size around the centerline gets R_size / n_jet, the size
        growing by ``grade`` mm per mm outside it up to the local radius / n: the jet and its shear
        layer fine, the slow recirculation beside it coarse."""
        d, i = self.tree.query(x)
        if jet is None:
            return self.R_size[i] / n_per_radius
        n_jet, core, grade = jet
        lesion = self.R_size[i] < 0.9 * self.R_ref[i]
        h = np.where(lesion, self.R_local[i], self.R_size[i]) / n_per_radius
        h_jet = self.R_size[i] / n_jet + grade * np.maximum(d - core * self.R_size[i], 0.0)
        return np.where(lesion, np.minimum(h, h_jet), h)

    def project(self, x: np.ndarray, k: int = 24) -> np.ndarray:
        """[N, 3] points moved onto the lumen's wall: in each branch onto the section through the
        point's closest centerline point (as ``swept_signed_distance``), the branch whose wall is
        farthest out along the point's own direction winning, as for a union."""
        _, idx = self.tree.query(x, k=min(k, len(self.mid)))
        n = len(x)
        best_d = np.full((len(self.segs), n), np.inf)  # per branch: the closest centerline point
        best_x = np.repeat(x[None].astype(float), len(self.segs), axis=0)
        best_sd = np.full((len(self.segs), n), np.inf)
        for j in range(idx.shape[1]):
            i = idx[:, j]
            a, c, ra, rc = self.A[i], self.C[i], self.RA[i], self.RC[i]
            ac = c - a
            t = np.clip(np.einsum("ij,ij->i", x - a, ac) / np.maximum(np.einsum("ij,ij->i", ac, ac), 1e-12), 0, 1)
            foot = a + t[:, None] * ac
            d = np.linalg.norm(x - foot, axis=1)
            r = ra + t * (rc - ra)
            dirn = (x - foot) / np.maximum(d, 1e-12)[:, None]
            br = self.branch_of[i]
            for b in range(len(self.segs)):
                better = (br == b) & (d < best_d[b])
                best_d[b, better] = d[better]
                best_sd[b, better] = (d - r)[better]
                best_x[b, better] = (foot + r[:, None] * dirn)[better]
        win = np.argmin(best_sd, axis=0)
        return best_x[win, np.arange(n)]


@dataclass
class TetMesh:
    mesh: object  # skfem.MeshTet2 (curved wall)
    caps: list[Cap]
    h_mm: dict  # {"n_per_radius", "min", "max"}
    seconds: float
    vertex_size_radius_mm: np.ndarray  # [V] the narrowest radius upstream of each vertex (mm; sets the jet speed)
    vertex_h_mm: np.ndarray  # [V] the target tetrahedron size at each vertex (mm)


def mesh_lumen(ph: Lumen, n_per_radius: float = 3.0, max_step_mm: float = 10.0, curved: bool = True,
               optimize: bool = True, wake_mm: float = 6.0, jet: tuple | None = None) -> TetMesh:
    """Tetrahedral mesh of the phantom's lumen, sized h = R(x)/n_per_radius (see the module doc)."""
    import gmsh
    from skfem import MeshTet1, MeshTet2

    if n_per_radius <= 0:
        raise ValueError(f"n_per_radius must be > 0, got {n_per_radius}")
    check_jet(jet)
    t0 = time.perf_counter()
    surf = _Surface(ph, wake_mm=wake_mm)
    own = not gmsh.isInitialized()
    if own:
        gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add(f"lumen-{ph.name}")
        caps = build_geometry(ph, max_step_mm)
        for k in ("MeshSizeExtendFromBoundary", "MeshSizeFromPoints", "MeshSizeFromCurvature"):
            gmsh.option.setNumber(f"Mesh.{k}", 0)
        gmsh.option.setNumber("Mesh.Algorithm3D", 1)  # Delaunay
        # the 1D size integral to 1e-3, not 1e-9: the size is a Python callback, and at 1e-9 gmsh
        # called it 2.7 M times (47 s) for a 16 mm stenosis of 2400 tetrahedra
        gmsh.option.setNumber("Mesh.LcIntegrationPrecision", 1e-3)
        gmsh.model.mesh.setSizeCallback(
            lambda dim, tag, x, y, z, lc: float(surf.size_mm(np.array([[x, y, z]]), n_per_radius, jet)[0]))
        gmsh.model.mesh.generate(3)
        if optimize:
            gmsh.model.mesh.optimize("Netgen")
        tags, coords, _ = gmsh.model.mesh.getNodes()
        etypes, _, enodes = gmsh.model.mesh.getElements(3)
        gmsh.model.remove()
    finally:
        if own:
            gmsh.finalize()
    if 4 not in list(etypes):
        raise RuntimeError(f"gmsh produced no tetrahedra for {ph.name}")
    conn = np.asarray(enodes[list(etypes).index(4)], dtype=np.int64).reshape(-1, 4)
    pos = np.full(int(tags.max()) + 1, -1, np.int64)
    pos[tags.astype(np.int64)] = np.arange(len(tags))
    p = coords.reshape(-1, 3)
    used = np.unique(pos[conn])
    remap = np.full(len(p), -1, np.int64)
    remap[used] = np.arange(len(used))
    t = remap[pos[conn]].T
    p = p[used].T
    # positive orientation
    v = np.einsum("ij,ij->j", np.cross(p[:, t[1]] - p[:, t[0]], p[:, t[2]] - p[:, t[0]], axis=0), p[:, t[3]] - p[:, t[0]])
    t[[1, 2]] = np.where(v < 0, t[[2, 1]], t[[1, 2]])
    h_min = float(surf.size_radius(p.T).min() / n_per_radius)
    if np.abs(v).min() < 1e-4 * h_min ** 3:
        raise DegenerateMeshError(
            f"gmsh left {(np.abs(v) < 1e-4 * h_min ** 3).sum()} degenerate tetrahedra in the mesh of {ph.name} "
            f"(n_per_radius={n_per_radius}); try another n_per_radius")
    m1 = MeshTet1(p, t)
    m2 = MeshTet2.from_mesh(m1)
    if curved:
        cap_facets = _classify_caps(m1, caps)
        named = np.concatenate([f for f in cap_facets.values()]) if cap_facets else np.zeros(0, int)
        wall_f = np.setdiff1d(m1.boundary_facets(), named)
        wall_e = np.unique(m1.f2e[:, wall_f])
        doflocs = m2.doflocs.copy()
        ed = m1.nvertices + wall_e  # P2 geometry: vertex nodes, then one node per edge in m1.edges order
        assert np.allclose(doflocs[:, ed], m1.p[:, m1.edges[:, wall_e]].mean(axis=1))
        doflocs[:, ed] = surf.project(doflocs[:, ed].T).T
        m2 = MeshTet2(doflocs=doflocs, t=m1.t)
    r = surf.size_radius(m1.p.T)
    h = surf.size_mm(m1.p.T, n_per_radius, jet)
    return TetMesh(m2, caps, {"n_per_radius": n_per_radius, "jet": jet, "min": float(h.min()), "max": float(h.max()),
                              "r_min": float(r.min())}, time.perf_counter() - t0, r, h)


def _classify_caps(mesh, caps: list[Cap], tol: float = 1e-6) -> dict[str, np.ndarray]:
    """Boundary facets lying in each cap's plane and disc: {"inlet": [...], "outlet0": [...], ...}."""
    bf = mesh.boundary_facets()
    fp = mesh.p[:, mesh.facets[:, bf]]  # [3, 3 nodes, F]
    out = {}
    for k, c in enumerate(caps):
        off = np.einsum("i,ijk->jk", c.normal, fp - c.centre_mm[:, None, None])
        rad = np.linalg.norm(fp - c.centre_mm[:, None, None] - off[None] * c.normal[:, None, None], axis=0)
        ok = np.all(np.abs(off) < tol * max(1.0, c.radius_mm) * 1e3, axis=0) & np.all(rad <= c.radius_mm * 1.001, axis=0)
        name = "inlet" if k == 0 else f"outlet{k - 1}"
        out[name] = bf[ok]
        if not ok.any():
            raise RuntimeError(f"no mesh facets found on the {name} cap at {c.centre_mm}")
    return out


# ------------------------------------------------------------------------------------------------
# flow
# ------------------------------------------------------------------------------------------------
def _forms(rho: float, mu: float):
    from skfem import BilinearForm, LinearForm
    from skfem.helpers import ddot, div, dot, grad

    @BilinearForm
    def viscous(u, v, w):
        return mu * ddot(grad(u), grad(v))

    @BilinearForm
    def divergence(u, q, w):
        return -div(u) * q

    @BilinearForm
    def convection(u, v, w):  # rho ((w·grad) u)·v
        return rho * dot(np.einsum("ij...,j...->i...", grad(u), w.wind), v)

    @BilinearForm
    def reaction(u, v, w):  # rho ((u·grad) w)·v
        return rho * dot(np.einsum("ij...,j...->i...", grad(w.wind), u), v)

    @LinearForm
    def newton_rhs(v, w):  # rho ((w·grad) w)·v
        return rho * dot(np.einsum("ij...,j...->i...", grad(w.wind), w.wind), v)

    return viscous, divergence, convection, reaction, newton_rhs


class ConvectionAssembler:
    """Fast assembly of the convective terms of ``_forms`` for a P2 vector basis on tetrahedra.

    scikit-fem assembles a bilinear form by looping over the 30 x 30 local basis pairs, about 2 s
    per form for 10k curved P2 tetrahedra; Newton needs two forms per iteration. Here the scalar P2
    values and gradients at the quadrature points are kept, and the element matrices of
    ``convection`` and ``reaction`` come from a few einsums (the vector element's local dof
    3 a + c is scalar dof a in component c, as in ``skfem.ElementVector``). ``tests/test_cfd3d.py``
    checks it against ``asm`` of the forms (the slow, obviously right twin)."""

    def __init__(self, ub, rho: float) -> None:
        from skfem import ElementTetP2

        sb = ub.with_element(ElementTetP2())
        self.rho, self.N = rho, ub.N
        self.phi = np.stack([f[0].value for f in sb.basis])  # [10, E, Q]
        self.dphi = np.stack([f[0].grad for f in sb.basis])  # [10, 3, E, Q]
        self.dx = sb.dx  # [E, Q]
        self.dofs = ub.element_dofs.reshape(10, 3, -1)  # [a, c, E] -> global dof
        dofs = ub.element_dofs  # [30, E]
        self.rows = np.broadcast_to(dofs.T[:, :, None], (dofs.shape[1], 30, 30)).ravel()
        self.cols = np.broadcast_to(dofs.T[:, None, :], (dofs.shape[1], 30, 30)).ravel()

    def _wind(self, u: np.ndarray):  # u [N] -> W [3, E, Q], dW [3 (comp), 3 (deriv), E, Q]
        ue = u[self.dofs]  # [10, 3, E]
        return (np.einsum("ace,aeq->ceq", ue, self.phi, optimize=True),
                np.einsum("ace,ajeq->cjeq", ue, self.dphi, optimize=True))

    def _matrix(self, local: np.ndarray) -> sp.csr_matrix:  # [E, 30, 30] -> [N, N]
        return sp.coo_matrix((local.ravel(), (self.rows, self.cols)), shape=(self.N, self.N)).tocsr()

    def assemble(self, u: np.ndarray, newton: bool):
        """Picard: the convection matrix C(u). Newton: (C(u) + R(u), rhs(u)), the Jacobian part and
        the right-hand side rho ((u·grad) u)·v of the linearised step."""
        W, dW = self._wind(u)
        wdx = self.dx * self.rho
        adv = np.einsum("jeq,bjeq->beq", W, self.dphi, optimize=True)  # (w·grad) phi_b
        cs = np.einsum("eq,aeq,beq->eab", wdx, self.phi, adv, optimize=True)  # [E, 10, 10]
        E = cs.shape[0]
        local = np.zeros((E, 10, 3, 10, 3))
        for c in range(3):
            local[:, :, c, :, c] = cs
        if newton:
            pp = np.einsum("eq,aeq,beq->abeq", wdx, self.phi, self.phi, optimize=True)
            local += np.einsum("abeq,ijeq->eaibj", pp, dW, optimize=True)
        K = self._matrix(local.reshape(E, 30, 30))
        if not newton:
            return K
        conv = np.einsum("ijeq,jeq->ieq", dW, W, optimize=True)  # (w·grad) w
        fe = np.einsum("eq,aeq,ieq->aie", wdx, self.phi, conv, optimize=True).reshape(30, E)
        rhs = np.bincount(self.dofs.reshape(30, E).ravel(), weights=fe.ravel(), minlength=self.N)
        return K, rhs


@dataclass
class TetFlow:
    """Steady flow on a quadratic tetrahedral mesh: velocity P2 (mm/s), pressure P1 (Pa)."""

    mesh: object
    basis_u: object
    basis_p: object
    u: np.ndarray
    p: np.ndarray
    caps: list[Cap]
    q_mm3_s: float
    rho: float
    mu: float
    info: dict = field(default_factory=dict)

    def _facet_integral(self, name: str, what: str) -> tuple[float, float]:
        from skfem import FacetBasis, Functional
        from skfem.helpers import dot

        fb = FacetBasis(self.mesh, self.basis_u.elem, facets=self.info["facets"][name], intorder=4)
        if what == "flux":
            val = Functional(lambda w: dot(w.u, w.n)).assemble(fb, u=fb.interpolate(self.u))
        else:
            fp = fb.with_element(self.basis_p.elem)
            val = Functional(lambda w: w.p).assemble(fp, p=fp.interpolate(self.p))
        area = Functional(lambda w: 1.0 + 0.0 * w.x[0]).assemble(fb)
        return float(val), float(area)

    def cap_mean_pressure(self, name: str) -> float:
        """Area-mean pressure (Pa) over a cap ("inlet", "outlet0", ...)."""
        val, area = self._facet_integral(name, "p")
        return val / area

    def cap_flux(self, name: str) -> float:
        """Outward flux (mm³/s) through a cap: negative at the inlet."""
        return self._facet_integral(name, "flux")[0]

    @property
    def outlet_names(self) -> list[str]:
        return [f"outlet{k}" for k in range(len(self.caps) - 1)]

    @property
    def outlet_flows_mm3_s(self) -> list[float]:
        return [self.cap_flux(n) for n in self.outlet_names]

    @property
    def dp_pa(self) -> float:
        """Inlet minus outlet mean pressure (Pa); the outlet is branch 0's own outlet when it has
        one, else the first outlet."""
        names = [n for n, c in zip(self.outlet_names, self.caps[1:]) if c.branch == 0] or self.outlet_names[:1]
        return self.cap_mean_pressure("inlet") - self.cap_mean_pressure(names[0])

    def sample(self, pts_mm: np.ndarray, chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
        """(velocity [N, 3] mm/s, pressure [N] Pa) at points; NaN for points outside the mesh."""
        pts = np.asarray(pts_mm, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"pts_mm must be [N, 3], got {pts.shape}")
        vel = np.full((len(pts), 3), np.nan)
        pr = np.full(len(pts), np.nan)
        finder = self._finder()
        for s in range(0, len(pts), chunk):
            x = pts[s:s + chunk]
            cells, ref = finder(*x.T)
            ok = cells >= 0
            if not ok.any():
                continue
            X = self._curved_ref(x[ok].T, cells[ok], ref[ok].T)
            # keep only points inside their (curved) cell: no extrapolation beyond the wall
            inside = np.minimum(X.min(axis=0), 1 - X.sum(axis=0)) >= -OUTSIDE_TOL
            sel = np.flatnonzero(ok)[inside]
            if not len(sel):
                continue
            xs, cs, X = x[sel].T, cells[sel], X[:, inside]
            Pu = probe_matrix(self.basis_u, xs, cs, X)
            Pp = probe_matrix(self.basis_p, xs, cs, X)
            vel[s + sel] = (Pu @ self.u).reshape(3, len(sel)).T
            pr[s + sel] = Pp @ self.p
        return vel, pr

    def _curved_ref(self, x: np.ndarray, cells: np.ndarray, ref: np.ndarray, iters: int = 8) -> np.ndarray:
        """Reference coordinates [3, N] under the curved (quadratic) map of wall cells, by Newton
        from the affine guess ``ref``; interior cells are straight and keep ``ref``. A point whose
        Newton iteration does not settle (far outside its cell) keeps the affine guess."""
        curved = np.isin(cells, self.info["curved_cells"]) if "curved_cells" in self.info else np.ones(len(cells), bool)
        if not curved.any():
            return ref
        mp = self.basis_u.mapping
        X = ref[:, curved][:, :, None].copy()
        xc, tc = x[:, curved][:, :, None], cells[curved]
        for _ in range(iters):
            dX = np.einsum("ijkl,jkl->ikl", mp.invDF(X, tc), xc - mp.F(X, tc))
            X += dX
        good = np.all(np.isfinite(X[:, :, 0]), axis=0) & (np.abs(dX[:, :, 0]).max(axis=0) < 1e-8)
        out = ref.copy()
        idx = np.flatnonzero(curved)
        out[:, idx[good]] = X[:, good, 0]
        return out

    def _finder(self):
        """(candidate cell index [N] (-1: none near), affine reference coordinates [N, 3]) per
        point. Interior cells are straight, so these are exact there; in a wall cell the curved map
        differs by O(h²/R), so candidates slightly outside the straight cell are kept and
        ``sample`` decides with the curved map's reference coordinates."""
        if getattr(self, "_finder_cache", None) is None:
            from skfem import MeshTet1

            m1 = MeshTet1(self.mesh.p, self.mesh.t)
            self._finder_cache = _linear_finder(m1)
        return self._finder_cache


def _linear_finder(m1):
    """Point location on a straight tetrahedral mesh: nearest cell centroids, then barycentric test;
    a point in no cell but within 0.3 of a boundary cell's size goes to the nearest centroid's cell."""
    from scipy.spatial import cKDTree

    p, t = m1.p, m1.t
    cen = p[:, t].mean(axis=1).T
    tree = cKDTree(cen)
    T = np.stack([p[:, t[1]] - p[:, t[0]], p[:, t[2]] - p[:, t[0]], p[:, t[3]] - p[:, t[0]]], axis=-1)  # [3, E, 3]
    Tinv = np.linalg.inv(np.moveaxis(T, 0, 1))  # [E, 3, 3]

    def find(x, y, z, k: int = 16):
        X = np.stack([x, y, z], 1)
        d, idx = tree.query(X, k=k)
        out = np.full(len(X), -1, np.int64)
        ref = np.zeros((len(X), 3))
        best = np.full(len(X), -np.inf)
        for j in range(k):
            c = idx[:, j]
            lam = np.einsum("nij,nj->ni", Tinv[c], X - p[:, t[0, c]].T)
            s = np.minimum(lam.min(axis=1), 1 - lam.sum(axis=1))
            better = s > best
            best[better], out[better], ref[better] = s[better], c[better], lam[better]
        # outside every candidate: accept slightly outside the straight mesh (curved wall), else -1
        out[best < -0.3] = -1
        return out, ref

    return find


def solve_tet(ph: Lumen, q_mm3_s: float, n_per_radius: float = 3.0, rho: float = RHO_BLOOD, mu: float = MU_BLOOD,
              tol: float = 1e-7, max_iter: int = 80, newton_switch: float = 0.1, curved: bool = True,
              mesh: TetMesh | None = None, ramp: tuple[float, float, float] = (0.25, 0.25, 0.01),
              wake_mm: float = 6.0, jet: tuple | None = None, max_tets: int | None = None,
              fallback_n_per_radius: float | None = None, grad_div: float = 0.0,
              ptc: bool = True, ptc_iter: int = 60,
              allow_unsteady: bool = False, verbose: bool = False) -> TetFlow:
    """Steady Navier-Stokes in the phantom's lumen on tetrahedra (see the module doc).

    Newton at Q from the Stokes solution first. If that does not converge within 8 iterations, the
    flow rate is continued adaptively: ``ramp`` = (first fraction of Q, first step, smallest step);
    a step that fails is halved, one that converges grows by 1.5x. Raises RuntimeError if it does not
    converge in ``max_iter`` iterations in all.

    ``jet`` (see ``_Surface.size_mm``) meshes a lesion's jet finer than its recirculation; a jet mesh
    of more than ``max_tets`` tetrahedra (a tight lesion on a CPU budget) is replaced by the plain
    one at ``fallback_n_per_radius`` (default ``n_per_radius``), said in ``info["mesh_note"]``."""
    from skfem import Basis, ElementTetP1, ElementTetP2, ElementVector, asm, condense, solve

    if q_mm3_s <= 0:
        raise ValueError(f"q_mm3_s must be > 0, got {q_mm3_s}")
    t0 = time.perf_counter()
    mesh_note = None

    def meshed(n: float, jet_: tuple | None) -> TetMesh:
        try:
            return mesh_lumen(ph, n_per_radius=n, curved=curved, wake_mm=wake_mm, jet=jet_)
        except DegenerateMeshError:  # gmsh left a sliver at this size: once more at a slightly other one
            return mesh_lumen(ph, n_per_radius=1.07 * n, curved=curved, wake_mm=wake_mm, jet=jet_)

    tm = mesh or meshed(n_per_radius, jet)
    if mesh is None and jet is not None and max_tets is not None and tm.mesh.t.shape[1] > max_tets:
        # the jet mesh is past the budget (a tight lesion): the plain mesh, said in info["mesh_note"]
        n_plain = fallback_n_per_radius or n_per_radius
        mesh_note = (f"jet mesh {tm.mesh.t.shape[1]} tetrahedra > max_tets {max_tets}: plain mesh "
                     f"({n_plain:g} per radius, the wake at the throat's size)")
        tm = meshed(n_plain, None)
    m = tm.mesh
    facets = _classify_caps(m, tm.caps)
    named = np.concatenate(list(facets.values()))
    facets["wall"] = np.setdiff1d(m.boundary_facets(), named)
    ub = Basis(m, ElementVector(ElementTetP2()), intorder=4)
    pb = ub.with_element(ElementTetP1())
    viscous, divergence, *_ = _forms(rho, mu)
    conv = ConvectionAssembler(ub, rho)
    A = asm(viscous, ub)
    if grad_div > 0:
        # grad-div stabilisation gamma (div u, div v), gamma = c rho U h per element with the mesh's
        # own size radius R and size h: U = Q / (pi R^2) (consistent: div u = 0 exactly)
        from skfem import BilinearForm
        from skfem.helpers import div

        r_size = tm.vertex_size_radius_mm[m.t].mean(axis=0)  # [E]
        h_e = tm.vertex_h_mm[m.t].mean(axis=0)  # [E]
        gamma = grad_div * rho * q_mm3_s / (math.pi * r_size ** 2) * h_e
        A = A + asm(BilinearForm(lambda u, v, w: w.gamma * div(u) * div(v)), ub,
                    gamma=np.repeat(gamma[:, None], ub.X.shape[1], axis=1))
    B = asm(divergence, ub, pb)
    nu, npr = ub.N, pb.N

    inlet = ub.get_dofs(facets["inlet"])
    wall = ub.get_dofs(facets["wall"])
    D = np.unique(np.concatenate([inlet.all(), wall.all()]))
    cin = tm.caps[0]
    u_bc = np.zeros(nu)
    for comp in range(3):
        d = inlet.all(f"u^{comp + 1}")
        x = ub.doflocs[:, d].T - cin.centre_mm
        r2 = np.einsum("ij,ij->i", x, x) - (x @ cin.normal) ** 2
        prof = 2 * q_mm3_s / (math.pi * cin.radius_mm ** 2) * np.clip(1 - r2 / cin.radius_mm ** 2, 0, None)
        u_bc[d] = -cin.normal[comp] * prof  # the cap normal points out of the lumen
    u_bc[wall.all()] = 0.0
    x_bc = np.concatenate([u_bc, np.zeros(npr)])

    lin = sparse_solver()

    def linear_solve(Kuu, rhs_u):
        K = sp.bmat([[Kuu, B.T], [B, None]], format="csr")
        return solve(*condense(K, np.concatenate([rhs_u, np.zeros(npr)]), x=x_bc, D=D), solver=lin)

    t_asm = time.perf_counter()
    x = linear_solve(A, np.zeros(nu))  # Stokes at Q
    t_stokes = time.perf_counter() - t_asm
    history, it, limit = [], 0, [max_iter]
    ptc_states, unsteady = [], None

    def iterate(frac: float, u0: np.ndarray, picard_first: bool, cap: int, final: bool):
        """Picard/Newton at frac * Q from u0: (x, converged)."""
        nonlocal it
        x_bc[:nu] = frac * u_bc
        u, xk, mode, n = u0, None, "picard" if picard_first else "newton", 0
        while n < cap and it < limit[0]:
            n += 1
            it += 1
            if mode == "newton":
                J, f = conv.assemble(u, newton=True)
                x_new = linear_solve(A + J, f)
            else:
                x_new = linear_solve(A + conv.assemble(u, newton=False), np.zeros(nu))
            rel = float(np.linalg.norm(x_new[:nu] - u) / max(np.linalg.norm(x_new[:nu]), 1e-300))
            if not np.isfinite(rel):
                return xk, False
            history.append((f"{mode}@{frac:.3g}Q", rel))
            if verbose:
                print(f"  iter {it:2d} {mode:6s} Q x {frac:.3g}: rel update {rel:.3e} "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
            xk, u = x_new, x_new[:nu]
            if rel < (tol if final else max(tol, 1e-3)):  # a level only seeds the next
                return xk, True
            if mode == "picard" and rel < newton_switch:
                mode = "newton"
            elif mode == "newton" and n >= 3 and rel > 0.5:
                return xk, False  # Newton is not contracting: give up on this step
        return xk, False

    def pseudo_transient(x0: np.ndarray, frac0: float):
        nonlocal it
        from skfem import BilinearForm
        from skfem.helpers import dot

        M = asm(BilinearForm(lambda u, v, w: rho * dot(u, v)), ub)
        x_bc[:nu] = u_bc
        # the last state scaled to Q: divergence-free and on the boundary values at Q, so that a
        # short step changes it little
        u, xk = x0[:nu] / frac0, x0
        # time scale: a cell crossed at the narrowest section's mean velocity (h_min = R_min / n)
        r_min = tm.h_mm["r_min"]
        dt = tm.h_mm["min"] / (q_mm3_s / (math.pi * r_min ** 2))
        prev, limit[0], tries = None, it + ptc_iter, 0
        while it < limit[0]:
            it += 1
            J, f = conv.assemble(u, newton=True)
            x_new = linear_solve(A + J + M / dt, f + M @ u / dt)
            rel = float(np.linalg.norm(x_new[:nu] - u) / max(np.linalg.norm(x_new[:nu]), 1e-300))
            history.append((f"ptc dt={dt:.1e}", rel))
            if verbose:
                print(f"  iter {it:2d} ptc dt {dt:.2e}: rel update {rel:.3e} ({time.perf_counter() - t0:.1f} s)", flush=True)
            if not np.isfinite(rel) or rel > 0.3:  # too long a step for the linearisation: shorter
                dt /= 4.0
                continue
            xk, u = x_new, x_new[:nu]
            ptc_states.append(x_new)
            if rel < 1e-3 and tries < 2:  # near a steady state: finish with plain Newton (twice at most)
                tries += 1
                xq, ok = iterate(1.0, u, False, 8, True)
                if ok:
                    return xq, True
                u, xk = xq[:nu], xq
            dt *= float(np.clip((prev / rel) if prev else 2.0, 0.5, 4.0))
            prev = rel
        return xk, False

    def cap_mean_weights(name: str) -> np.ndarray:  # [npr]: w @ p = area-mean pressure over a cap
        from skfem import FacetBasis, LinearForm

        fp = FacetBasis(m, pb.elem, facets=facets[name], intorder=4)
        w = asm(LinearForm(lambda q, w: q), fp)
        return w / w.sum()

    # 1. Newton straight at Q from Stokes (enough for moderate Reynolds numbers)
    xq, converged = iterate(1.0, x[:nu], False, 8, True)
    done = 1.0
    if converged:
        x = xq
    else:
        # 2. adaptive continuation in the flow rate: a step that fails is halved, one that
        #    converges grows by 1.5x; every level starts from the last converged solution
        x_bc[:nu] = ramp[0] * u_bc
        x = linear_solve(A, np.zeros(nu))
        xs, ok = iterate(ramp[0], x[:nu], True, 20, False)
        x = x if xs is None else xs  # no iteration left: the Stokes flow at that fraction
        done, step = ramp[0], ramp[1]
        while ok and it < max_iter:
            target = min(1.0, done + step)
            xt, good = iterate(target, x[:nu], False, 8, target == 1.0)
            if good:
                x, done, step = xt, target, step * 1.5
                if done == 1.0:
                    converged = True
                    break
            else:
                step /= 2
                if step < ramp[2]:
                    break
    if not converged and ptc:
        # 3. pseudo-transient continuation at Q: implicit Euler steps rho (u' - u)/dt + NS(u') = 0
        #    linearised by Newton, dt growing as the update shrinks (switched evolution relaxation);
        #    it follows the flow's own path to a stable steady state where Newton's basin is small
        x, converged = pseudo_transient(x, done)
        if not converged and allow_unsteady and len(ptc_states) >= 10:
            # the discrete flow does not settle (a jet that sheds, or a mesh too coarse for the
            # steady one): the mean of the last half of the pseudo-time states, with its spread
            keep = np.array(ptc_states[len(ptc_states) // 2:])
            outlet = next((f"outlet{k}" for k, c in enumerate(tm.caps[1:]) if c.branch == 0), "outlet0")
            dps = keep[:, nu:] @ (cap_mean_weights("inlet") - cap_mean_weights(outlet))
            x = keep.mean(axis=0)
            unsteady = {"states": int(len(keep)), "dp_mean_pa": float(dps.mean()), "dp_min_pa": float(dps.min()),
                        "dp_max_pa": float(dps.max()), "last_update": float(history[-1][1])}
    re_in = 2 * rho * q_mm3_s / (math.pi * cin.radius_mm * mu)
    if not converged and unsteady is None:
        raise RuntimeError(
            f"solve_tet did not converge for {ph.name}: relative update {history[-1][1]:.3e} > tol {tol:.1e} after "
            f"{it} iterations; Re_inlet = {re_in:.1f}; history: " + ", ".join(f"{a}:{b:.1e}" for a, b in history))
    info = {"iterations": it, "history": history, "n_tets": int(m.t.shape[1]), "n_dofs": int(nu + npr),
            "seconds": time.perf_counter() - t0, "mesh_seconds": tm.seconds, "stokes_solve_seconds": t_stokes,
            "re_inlet": re_in, "h_mm": tm.h_mm, "facets": facets, "curved_wall": curved,
            "curved_cells": np.unique(m.f2t[:, facets["wall"]][0]), "steady": unsteady is None,
            "unsteady": unsteady, "grad_div": grad_div, "jet": tm.h_mm["jet"], "mesh_note": mesh_note}
    return TetFlow(m, ub, pb, x[:nu].copy(), x[nu:].copy(), tm.caps, float(q_mm3_s), rho, mu, info)


class FemField:
    """A solved ``TetFlow`` as a field on world points: velocity (mm/s, zero outside the mesh) and
    pressure (Pa, NaN outside), with the solver's figures in ``info``."""

    def __init__(self, flow: TetFlow) -> None:
        self.flow = flow
        self.info = {k: v for k, v in flow.info.items() if k in ("iterations", "n_tets", "n_dofs", "seconds",
                                                                  "mesh_seconds", "re_inlet", "h_mm", "steady",
                                                                  "unsteady", "grad_div", "jet", "mesh_note")}
        self.info["outlet_flows_mm3_s"] = [float(x) for x in flow.outlet_flows_mm3_s]
        self.info["dp_caps_pa"] = float(flow.dp_pa)

    def velocity_mm_s(self, points_mm: np.ndarray) -> np.ndarray:  # [P, 3] -> [P, 3]
        u, _ = self.flow.sample(np.asarray(points_mm, float).reshape(-1, 3))
        return np.nan_to_num(u, nan=0.0)

    def pressure_pa(self, points_mm: np.ndarray) -> np.ndarray:  # [P, 3] -> [P]
        return self.flow.sample(np.asarray(points_mm, float).reshape(-1, 3))[1]

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """(vertices [V, 3] mm, tetrahedra [T, 4]) of the linear mesh under the quadratic one."""
        m = self.flow.mesh
        return np.asarray(m.p.T, float), np.asarray(m.t.T, np.int64)
