"""Centerlines of a lumen volume: branches of [P, 4] X, Y, Z, R (mm), R the inscribed-sphere radius.

    branches = extract_centerline(occ, origin_mm, spacing_mm)      # list of [P, 4] X, Y, Z, R (mm)
    io.exports.write_centerline_csv("centerline.csv", branches)
    lesions = analysis.stenosis.grade_stenosis(branches)            # grading and Murray's law live there

Method (a geodesic, minimal-path tracing, in the spirit of VMTK's):

1. the lumen is the largest 26-connected component of ``occ >= level`` with its cavities filled, so
   specks and holes of a noisy reconstruction do not matter;
2. on a grid coarsened so that a typical radius spans about 7 voxels, voxels are the nodes of a
   26-neighbour graph; an end of the vessel is the node farthest (geodesic distance through the
   lumen) from the deepest voxel;
3. from that end, repeatedly: the lumen node farthest from the tree is a new end if it lies more
   than ``spur_factor`` local radii from the tree (a bump on the wall is about one radius away),
   otherwise tracing stops; the new path is the minimal path back to the tree under the cost
   1/EDT², which keeps it on the medial axis;
4. the paths are cut at the junctions into branches, oriented from the inlet (the end nearest
   ``inlet_hint_mm``; without one, the end of largest radius, ties broken by the lowest Z);
5. each branch is smoothed (junction points held fixed), re-centred by a circle fit to the wall in
   its normal plane, trimmed where it enters an end cap, and resampled;
6. terminal stubs shorter than ``stub_radii`` radii (ghosts of a frayed end, which step 3 measures
   against their own thin radius) are dropped and the junctions they leave joined (``prune_stubs``).

R is the distance to the marching-cubes ``level`` surface (sub-voxel, unlike the voxel distance
transform, which is biased by half a voxel). Where the lumen runs into the edge of the grid the flat
cap there is not a wall, and the branch stops about one radius before the edge. Branch lists follow
Phantom.centerline_table: branch 0 starts at the inlet; a daughter starts at its parent's last point.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from ..polyline import arc_length, plane_basis, resample, smooth, tangents
from .surface import mask_to_mesh, occupancy_fraction

_FULL = np.ones((3, 3, 3), dtype=bool)
# the 26-neighbourhood
_NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                        if (i, j, k) != (0, 0, 0)])


# ------------------------------------------------------------------------------------------------
# small helpers
def _block_mean(vol: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return vol.astype(np.float32)
    shp = [int(math.ceil(n / f)) * f for n in vol.shape]
    v = np.zeros(shp, np.float32)
    v[:vol.shape[0], :vol.shape[1], :vol.shape[2]] = vol
    return v.reshape(shp[0] // f, f, shp[1] // f, f, shp[2] // f, f).mean(axis=(1, 3, 5))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask, structure=_FULL)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _fill_cavities(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected (6-neighbour) to the border of the array."""
    lab, n = ndi.label(~mask)
    if n == 0:
        return mask
    border = np.unique(np.concatenate([lab[0].ravel(), lab[-1].ravel(), lab[:, 0].ravel(), lab[:, -1].ravel(),
                                       lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]))
    return mask | ~np.isin(lab, border)


def _isotropic(spacing_mm) -> float:
    s = np.atleast_1d(np.asarray(spacing_mm, dtype=float))
    if s.size not in (1, 3) or not np.all(s > 0) or np.ptp(s) > 1e-9 * s.max():
        raise ValueError(f"centerline extraction needs an isotropic positive spacing, got {spacing_mm}")
    return float(s[0])


# ------------------------------------------------------------------------------------------------
# the voxel graph and the tracing
def _edt_on_mask(mask: np.ndarray, spacing: float, slab: int = 64, reach: int = 32) -> np.ndarray:
    """[N] Euclidean distance (mm) from each True voxel of ``mask`` (C order) to the nearest False
    voxel, as ``ndi.distance_transform_edt(mask, sampling=spacing)[mask]``, but computed in slabs
    along the longest axis, each cropped to the mask around it.

    A thin vessel running diagonally through its bounding box fills a few per cent of it, and the
    whole-box transform pays for every voxel (docs/decisions.md, "Centerline: speed"). The nearest
    False voxel of a True voxel p lies next to a True voxel that is nearer to p (step from it
    towards p), so a slab extended by ``reach`` voxels either side and cropped to the True voxels
    in it plus one voxel holds it whenever the distance is under ``reach`` - 1 voxels; a slab
    where some distance is not falls back to the whole transform. Equal to it to rounding."""
    def whole() -> np.ndarray:
        return ndi.distance_transform_edt(mask, sampling=spacing)[mask]

    ax = int(np.argmax(mask.shape))
    n = mask.shape[ax]
    if n <= slab + 2 * reach:
        return whole()
    m = np.moveaxis(mask, ax, 0)  # a view: slabs along axis 0
    out = np.zeros(m.shape, np.float64)
    for a in range(0, n, slab):
        b = min(a + slab, n)
        lo, hi = max(a - reach, 0), min(b + reach, n)
        if not m[a:b].any():
            continue
        ext = m[lo:hi]
        i, j = np.nonzero(ext.any(axis=0))
        y0, y1 = max(i.min() - 1, 0), min(i.max() + 2, m.shape[1])
        z0, z1 = max(j.min() - 1, 0), min(j.max() + 2, m.shape[2])
        sub = ext[:, y0:y1, z0:z1]
        d = ndi.distance_transform_edt(sub, sampling=spacing)[a - lo:b - lo]
        if d.max(initial=0.0) >= (reach - 1) * spacing:
            return whole()
        out[a:b, y0:y1, z0:z1] = d
    return np.moveaxis(out, 0, ax)[mask]


class _VoxelGraph:
    """26-neighbour graph of the True voxels of a (coarse) mask.

    coords: [N, 3] voxel indices; edt: [N] distance to the background (mm); length / cost: [N, N]
    sparse matrices of edge lengths (mm) and of centre-seeking costs (length / EDT²).

    Built straight in CSR form: each node's neighbours are read off in increasing flat offset,
    which is increasing node number, so rows come out sorted as ``csr_matrix((data, (rows, cols)))``
    leaves them, without its sort (``_voxel_graph_by_coo`` in the tests is that version; the matrices
    are equal entry for entry, the costs to rounding). The distance transform is computed in slabs
    (``_edt_on_mask``). Timings: docs/decisions.md, "Centerline: speed"."""

    def __init__(self, mask: np.ndarray, spacing: float):
        self.edt = _edt_on_mask(mask, spacing)
        padded = np.pad(mask, 1)
        flat = np.flatnonzero(padded)
        node = np.full(padded.size, -1, np.int64)
        node[flat] = np.arange(flat.size)
        self.coords = np.stack(np.unravel_index(flat, padded.shape), axis=1) - 1
        sy, sz = padded.shape[1] * padded.shape[2], padded.shape[2]
        step = _NEIGHBOURS @ np.array([sy, sz, 1])
        order = np.argsort(step)
        nb = node[flat[:, None] + step[order][None, :]]  # [N, 26] neighbour node or -1, columns ascending
        ok = nb >= 0
        deg = ok.sum(1)
        indptr = np.concatenate([[0], np.cumsum(deg)])
        cols = nb[ok]
        rows = np.repeat(np.arange(flat.size), deg)
        ln = np.broadcast_to(spacing * np.linalg.norm(_NEIGHBOURS[order], axis=1), nb.shape)[ok]
        inv = 1.0 / np.maximum(self.edt, 0.5 * spacing) ** 2
        cost = ln * 0.5 * (inv[rows] + inv[cols])
        n = flat.size
        idx_t = np.int32 if max(n, len(cols)) < 2 ** 31 else np.int64
        cols, indptr = cols.astype(idx_t), indptr.astype(idx_t)
        self.length = csr_matrix((ln, cols, indptr), shape=(n, n))
        self.cost = csr_matrix((cost, cols.copy(), indptr.copy()), shape=(n, n))

    def farthest_from(self, sources) -> tuple[int, float, int]:
        """(node, geodesic distance, nearest source) of the node farthest from any of ``sources``."""
        d, _, src = dijkstra(self.length, indices=np.asarray(sources), min_only=True, return_predecessors=True)
        d = np.where(np.isfinite(d), d, -1.0)
        e = int(np.argmax(d))
        return e, float(d[e]), int(src[e])

    def minimal_path(self, sources, target: int) -> list[int]:
        """Nodes of the cheapest path from any of ``sources`` to ``target``, source first."""
        _, pred = dijkstra(self.cost, indices=np.asarray(sources), min_only=True, return_predecessors=True)[:2]
        path = [target]
        while pred[path[-1]] >= 0:
            path.append(int(pred[path[-1]]))
        return path[::-1]


def _trace(g: _VoxelGraph, start: int, spur_factor: float, max_branches: int) -> list[list[int]]:
    """Paths (node lists): the first from ``start`` to the farthest node, each later one from a node
    of the tree so far to a new end."""
    tree = [start]
    in_tree = np.zeros(len(g.edt), bool)
    in_tree[start] = True
    paths: list[list[int]] = []
    while len(paths) < max_branches:
        end, dist, near = g.farthest_from(tree)
        if paths and dist < spur_factor * g.edt[near]:
            break
        path = g.minimal_path(tree, end)
        paths.append(path)
        new = [n for n in path if not in_tree[n]]
        in_tree[new] = True
        tree.extend(new)
    return paths


def _segments(paths: list[list[int]]) -> list[list[int]]:
    """Cut the traced paths at the nodes where later paths attach: undirected segments."""
    attach = {p[0] for p in paths[1:]}
    segs = []
    for p in paths:
        cuts = [0] + [i for i in range(1, len(p) - 1) if p[i] in attach] + [len(p) - 1]
        segs.extend(p[a:b + 1] for a, b in zip(cuts[:-1], cuts[1:]) if b > a)
    return segs


def _orient(segs: list[list[int]], root: int) -> tuple[list[list[int]], list[int]]:
    """Depth-first from ``root``: segments oriented away from it, and each one's parent index (-1 for
    those leaving the root). Chains through nodes shared by exactly two segments are merged."""
    adj: dict[int, list[int]] = {}
    for i, s in enumerate(segs):
        adj.setdefault(s[0], []).append(i)
        adj.setdefault(s[-1], []).append(i)
    out: list[list[int]] = []
    parent: list[int] = []
    used = set()

    def visit(node: int, par: int) -> None:
        kids = sorted((i for i in adj.get(node, []) if i not in used), key=lambda i: -len(segs[i]))
        for i in kids:
            if i in used:
                continue
            used.add(i)
            s = segs[i] if segs[i][0] == node else segs[i][::-1]
            if len(adj[node]) == 2 and par >= 0 and out[par][-1] == node:
                out[par] = out[par] + s[1:]  # pass-through node: extend the parent
                visit(s[-1], par)
            else:
                out.append(list(s))
                parent.append(par)
                visit(s[-1], len(out) - 1)

    visit(root, -1)
    return out, parent


# ------------------------------------------------------------------------------------------------
class _Wall:
    """The lumen wall as marching-cubes vertices, for sub-voxel distances. Vertices on the flat caps
    that close the lumen at the edge of the grid are left out: they are not vessel wall."""

    def __init__(self, occ: np.ndarray, origin: np.ndarray, h: float, level: float,
                 box_lo: np.ndarray, box_hi: np.ndarray):
        mesh = mask_to_mesh(occ, origin, h, level)
        v = np.asarray(mesh.vertices)
        inside_box = np.all((v >= box_lo - 1e-9) & (v <= box_hi + 1e-9), axis=1)
        self.verts = v[inside_box]
        self.tree = cKDTree(self.verts)
        self.mesh_volume, self.mesh_area = float(mesh.volume), float(mesh.area)

    def radius(self, pts: np.ndarray, k: int = 6) -> np.ndarray:
        """Distance [P] from pts [P, 3] to the wall (mean of the k nearest wall vertices, so a single
        noisy vertex does not decide it)."""
        d, _ = self.tree.query(pts, k=k)
        return d.mean(axis=1) if k > 1 else d

    def recentre(self, pts: np.ndarray, r: np.ndarray, fixed: np.ndarray, slab: float) -> np.ndarray:
        """Move each point [P, 3] to the centre of a circle fitted (least squares) to the wall
        vertices within ``slab`` of its normal plane. Points where the fit is poor (junctions, caps)
        or would move them by more than half a radius stay where they are."""
        out = pts.copy()
        tan = tangents(pts)
        near = self.tree.query_ball_point(pts, 1.6 * r + slab)
        for i, idx in enumerate(near):
            if fixed[i] or len(idx) < 12:
                continue
            v = self.verts[idx] - pts[i]
            along = v @ tan[i]
            v = v[np.abs(along) < slab]
            if len(v) < 12:
                continue
            u, w = plane_basis(tan[i])
            x, y = v @ u, v @ w
            ang = np.sort(np.arctan2(y, x))
            if np.max(np.diff(np.concatenate([ang, [ang[0] + 2 * np.pi]]))) > 0.75 * np.pi:
                continue  # the ring is not seen all round
            A = np.column_stack([x, y, np.ones_like(x)])
            c, *_ = np.linalg.lstsq(A, x * x + y * y, rcond=None)
            cx, cy = c[0] / 2, c[1] / 2
            rr = math.sqrt(max(c[2] + cx * cx + cy * cy, 0.0))
            resid = np.sqrt(np.mean((np.hypot(x - cx, y - cy) - rr) ** 2))
            if rr <= 0 or resid > 0.15 * rr or math.hypot(cx, cy) > 0.5 * r[i]:
                continue
            out[i] = pts[i] + cx * u + cy * w
        return out


def extract_centerline(occ: np.ndarray, origin_mm, spacing_mm, inlet_hint_mm=None, *, level: float = 0.5,
                       step_mm: float | None = None, smooth_mm: float | None = None, spur_factor: float = 2.0,
                       max_branches: int = 64, stub_radii: float | None = 3.0) -> list[np.ndarray]:
    """Centerline branches of the lumen in ``occ``.

    occ: [X, Y, Z] lumen fraction (float 0..1, uint8 0..255 or bool), voxel (i, j, k) centred at
    origin_mm + spacing_mm * (i, j, k); spacing must be isotropic. inlet_hint_mm: [3] point near the
    inlet (optional). step_mm: output point spacing (default: the grid spacing). smooth_mm: Gaussian
    sigma for the centerline positions (default: max(2 coarse voxels, half the typical radius)).
    spur_factor: a new end must lie this many local radii from the tree to make a branch.
    stub_radii: terminal branches shorter than this many radii are dropped and single-daughter
    junctions joined afterwards (``prune_stubs``; None keeps the traced tree as it is).

    Returns a list of [P, 4] arrays (X, Y, Z, R in mm, R the maximum inscribed sphere radius),
    branch 0 from the inlet, daughters starting at their parent's last point (depth-first order).
    """
    vol = occupancy_fraction(occ)
    h = _isotropic(spacing_mm)
    origin = np.asarray(origin_mm, dtype=float).reshape(3)
    box_lo, box_hi = origin, origin + h * (np.array(vol.shape) - 1)
    mask = vol >= level
    if not mask.any():
        raise ValueError(f"extract_centerline: no voxel has occupancy >= {level}; the lumen is empty")
    mask = _largest_component(mask)
    # crop to the lumen (2 voxels of margin) to keep the work proportional to the vessel
    nz = np.nonzero(mask)
    c0 = np.maximum(np.array([a.min() for a in nz]) - 2, 0)
    c1 = np.minimum(np.array([a.max() for a in nz]) + 3, vol.shape)
    crop = tuple(slice(a, b) for a, b in zip(c0, c1))
    mask, vol = _fill_cavities(mask[crop]), vol[crop]
    corigin = origin + h * c0
    # occupancy of the kept lumen only (its partial-volume rim kept for the sub-voxel wall)
    occ_c = np.where(ndi.binary_dilation(mask, _FULL), vol, 0.0).astype(np.float32)
    occ_c[mask & (occ_c < level)] = 1.0
    wall = _Wall(occ_c, corigin, h, level, box_lo, box_hi)

    # coarse grid: a typical radius (2 V / A of the lumen) over ~7 coarse voxels
    r_typ = 2.0 * wall.mesh_volume / max(wall.mesh_area, 1e-12)
    f = int(np.clip(math.floor(r_typ / (7.0 * h)), 1, 4))
    while True:
        cm = _largest_component(_block_mean(mask, f) >= 0.5)
        if f == 1 or cm.sum() * f ** 3 >= 0.9 * mask.sum():
            break
        f -= 1  # too coarse: the lumen fell apart
    g = _VoxelGraph(cm, f * h)
    if len(g.edt) < 2:
        raise ValueError("extract_centerline: the lumen is too small to trace (fewer than 2 voxels)")
    node_mm = corigin + h * (f * g.coords + (f - 1) / 2.0)

    end0, _, _ = g.farthest_from([int(np.argmax(g.edt))])
    paths = _trace(g, end0, spur_factor, max_branches)
    segs = _segments(paths)
    # ends of the tree (nodes of one segment) and the inlet among them
    count: dict[int, int] = {}
    for s in segs:
        for n in (s[0], s[-1]):
            count[n] = count.get(n, 0) + 1
    ends = [n for n, c in count.items() if c == 1]
    if inlet_hint_mm is not None:
        hint = np.asarray(inlet_hint_mm, dtype=float).reshape(3)
        root = min(ends, key=lambda n: float(np.linalg.norm(node_mm[n] - hint)))
    else:
        def end_radius(n: int) -> float:
            s = next(s for s in segs if n in (s[0], s[-1]))
            s = s if s[0] == n else s[::-1]
            return float(np.percentile(g.edt[s[:max(2, len(s) // 2)]], 75))

        er = {n: end_radius(n) for n in ends}
        big = [n for n in ends if er[n] >= 0.9 * max(er.values())]
        root = min(big, key=lambda n: (node_mm[n][2], node_mm[n][1], node_mm[n][0]))
    osegs, parent = _orient(segs, root)

    # geometry on the fine grid
    sigma_mm = smooth_mm if smooth_mm is not None else max(2.0 * f * h, 0.5 * r_typ)
    out_step = step_mm or h
    branches = []
    n_children = [parent.count(i) for i in range(len(osegs))]
    for i, s in enumerate(osegs):
        start_xyz = branches[parent[i]][-1, :3] if parent[i] >= 0 else None  # the junction point
        branches.append(_branch_geometry(node_mm[s], wall, h, sigma_mm, parent[i] >= 0, n_children[i] > 0,
                                         box_lo, box_hi, start_xyz))
    # final resampling (junction points are kept exactly: both ends of a branch survive resampling)
    branches = [resample(b, out_step) for b in branches]
    return branches if stub_radii is None else prune_stubs(branches, stub_radii)


def prune_stubs(branches: list, radii: float = 3.0) -> list[np.ndarray]:
    """The centerline without the stubs a frayed vessel end grows, and without the junctions they
    leave behind.

    A stub is a terminal branch shorter than ``radii`` times the larger of its own mean radius and
    its parent's radius at the junction (a ghost of a 2-view reconstruction tapers to a fraction of a
    millimetre, so its own radius alone lets stubs through), or a needle (``_is_stub``), or a root
    branch that short (its longest daughter, or its longest sibling where branches start at its own
    start, becomes branch 0). After each round of dropping, a
    branch with a single daughter is joined to it (it is no junction), so that branch 0 runs on to
    the next true bifurcation or the outlet instead of ending at the first ghost (where ΔP would be
    taken over part of the vessel only); rounds repeat until no stub is left. Measurements:
    docs/decisions.md, "Centerline: stubs and ghost tails".
    """
    if not radii > 0:
        raise ValueError(f"prune_stubs: radii (stub_radii) must be > 0, or None to keep the traced tree; got {radii}")
    branches = [np.asarray(b, float) for b in branches]
    length = lambda b: arc_length(b[:, :3])[-1]  # noqa: E731
    while len(branches) > 1:
        parents, kids = branch_tree(branches)
        if length(branches[0]) < radii * float(branches[0][:, 3].mean()):
            # a short root: its longest daughter, or its longest sibling at the root junction (a branch
            # that starts where it starts), becomes branch 0
            heirs = kids[0] or [j for j in range(1, len(branches))
                                if np.linalg.norm(branches[j][0, :3] - branches[0][0, :3]) < 1e-3]
            if heirs:
                keep = max(heirs, key=lambda j: length(branches[j]))
                branches = [branches[keep]] + [b for j, b in enumerate(branches) if j not in (0, keep)]
                continue
        stub = [j for j, b in enumerate(branches) if j > 0 and not kids[j] and _is_stub(
            b, float(branches[parents[j]][-1, 3]) if parents[j] >= 0 else 0.0, radii)]
        if not stub:
            break
        # join before looking again: a piece of the true vessel between two ghosts is terminal now,
        # and short, but it is the continuation of its parent
        branches = _join_chains([b for j, b in enumerate(branches) if j not in stub])
    return _join_chains(branches)


def trim_ghost_ends(branches: list, frac: float = 0.5) -> list[np.ndarray]:
    """The centerline without the ghost tail a sparse-view fit can grow past a vessel's free end.

    branches: [P, 4] X, Y, Z, R (mm) each. At every free end (the start of a root branch, the end of
    a branch without daughters) the points whose inscribed radius R is below ``frac`` times the
    branch's median R are cut, walking in from the end to the first point at or above it; at most
    (P − 2) // 2 points per end, and never at a junction. Such a tail has no lumen beyond it, so it
    cannot be a stenosis, but grading reads it as a severe one and ΔP explodes (docs/decisions.md,
    "Centerline: stubs and ghost tails"). A mid-vessel stenosis is never cut, however severe: the
    walk stops at the first point of full calibre."""
    if not 0 < frac < 1:
        raise ValueError(f"trim_ghost_ends: frac must be in (0, 1), got {frac}")
    branches = [np.asarray(b, float) for b in branches]
    if not branches:
        return branches
    parents, kids = branch_tree(branches)
    out = []
    for j, b in enumerate(branches):
        n, r = len(b), b[:, 3]
        thr, most = frac * float(np.median(r)), max(0, (n - 2) // 2)
        lo, hi = 0, n
        if parents[j] < 0:
            while lo < most and r[lo] < thr:
                lo += 1
        if not kids[j]:
            while n - hi < most and r[hi - 1] < thr:
                hi -= 1
        out.append(b[lo:hi].copy())
    return out


def branch_tree(branches: list) -> tuple[list[int], list[list[int]]]:
    """(parent per branch, daughters per branch) from ``branch_topology``."""
    parents, _ = branch_topology(branches)
    return parents, [[j for j, p in enumerate(parents) if p == i] for i in range(len(branches))]


def _is_stub(b: np.ndarray, r_parent: float, radii: float = 3.0) -> bool:
    """A terminal branch that is a ghost of the reconstruction, not a vessel: shorter than ``radii``
    times the larger of its mean radius and its parent's radius at the junction, or a needle (its
    radius falls below a quarter of the parent's) shorter than twice that: a needle that survives the
    length test keeps a false bifurcation and grades as a severe "lesion" at its tip
    (docs/decisions.md, "Centerline: stubs and ghost tails")."""
    length = float(arc_length(b[:, :3])[-1])
    reach = radii * max(float(b[:, 3].mean()), r_parent)
    return length < reach or (r_parent > 0 and float(b[:, 3].min()) < 0.25 * r_parent and length < 2 * reach)


def _join_chains(branches: list) -> list:
    """Each branch with exactly one daughter joined to it, repeatedly (the daughter's first point
    is its parent's last, within branch_topology's tolerance, and is dropped)."""
    branches = list(branches)
    while len(branches) > 1:
        parents, kids = branch_tree(branches)
        one = next((i for i, k in enumerate(kids) if len(k) == 1), None)
        if one is None:
            break
        j = kids[one][0]
        joined = np.concatenate([branches[one], np.asarray(branches[j], float)[1:]])
        branches = [joined if k == one else b for k, b in enumerate(branches) if k != j]
    return branches


def _branch_geometry(pts: np.ndarray, wall: _Wall, h: float, sigma_mm: float, start_fixed: bool, end_fixed: bool,
                     box_lo: np.ndarray, box_hi: np.ndarray, start_xyz: np.ndarray | None) -> np.ndarray:
    """Smooth, re-centre and trim one branch: [P, 3] voxel-path points -> [Q, 4] X, Y, Z, R."""
    if start_xyz is not None:
        pts = np.vstack([start_xyz, pts[1:]])
    x = resample(pts, h)
    x = smooth(x, sigma_mm / h, True, True)
    x = resample(x, h)
    fixed = np.zeros(len(x), bool)
    fixed[0], fixed[-1] = start_fixed, end_fixed
    for _ in range(2):
        r = wall.radius(x)
        x = wall.recentre(x, r, fixed, slab=h)
        x = smooth(x, 2.0, True, True)  # 2-sample sigma: irons out fit noise
    r = wall.radius(x)

    # trim the free ends: a closed end stops where it enters its end cap (the wall ahead is nearer
    # than the wall around), an open end one radius before the edge of the grid
    def keep_from_end(xe: np.ndarray, re: np.ndarray) -> int:
        """Number of points to drop from the end of (xe, re), ordered end first."""
        ahead = arc_length(xe)
        to_box = np.min(np.concatenate([xe - box_lo, box_hi - xe], axis=1), axis=1)
        j = 0
        while j < len(xe) - 2 and (ahead[j] <= re[j] + h or to_box[j] < re[j]):
            j += 1
        return j

    a = 0 if start_fixed else keep_from_end(x, r)
    b = 0 if end_fixed else keep_from_end(x[::-1], r[::-1])
    if a + b < len(x) - 1:
        x, r = x[a:len(x) - b], r[a:len(x) - b]
    r = smooth(r[:, None], 2.0, False, False)[:, 0]
    return np.column_stack([x, r])


# ------------------------------------------------------------------------------------------------
# topology shared by grading and Murray's law
def branch_topology(branches: list[np.ndarray]) -> tuple[list[int], list[float]]:
    """(parent index per branch, -1 for roots; arc length from the inlet to each branch's start).

    A branch's parent is the branch whose last point is nearest its first point, if within a quarter
    of its first radius (0.05 mm at least); branch 0 is the root."""
    ends = np.array([np.asarray(b)[-1, :3] for b in branches])
    parents = []
    for j, b in enumerate(branches):
        b = np.asarray(b)
        if j == 0:
            parents.append(-1)
            continue
        d = np.linalg.norm(ends - b[0, :3], axis=1)
        d[j] = np.inf
        i = int(np.argmin(d))
        parents.append(i if d[i] <= max(0.25 * float(b[0, 3]), 0.05) and i != j else -1)
    offsets = [0.0] * len(branches)
    for _ in range(len(branches)):  # parents may come later in the list: relax until settled
        for j, p in enumerate(parents):
            if p >= 0:
                offsets[j] = offsets[p] + float(arc_length(np.asarray(branches[p])[:, :3])[-1])
    return parents, offsets
