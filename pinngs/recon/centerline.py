"""Centerlines of a lumen volume, stenosis grading and Murray's law at bifurcations.

    branches = extract_centerline(occ, origin_mm, spacing_mm)      # list of [P, 4] X, Y, Z, R (mm)
    write_centerline_csv("centerline.csv", branches)
    lesions = grade_stenosis(branches)                              # list of dicts, most severe first
    junctions = murray_deviation(branches)                          # one dict per bifurcation

Centerline method (a geodesic, minimal-path tracing, in the spirit of VMTK's):

1. the lumen is the largest 26-connected component of ``occ >= level`` with its cavities filled, so
   specks and holes of a noisy reconstruction do not matter;
2. on a grid coarsened so that a typical radius spans about 7 voxels, voxels are the nodes of a
   26-neighbour graph; an end of the vessel is the node farthest (geodesic distance through the
   lumen) from the deepest voxel;
3. from that end, repeatedly: the lumen node farthest from the current tree (geodesic distance) is a
   new end if it lies more than ``spur_factor`` times the local radius away from the tree, otherwise
   tracing stops (this is what prunes spurs: a bump on the wall is only about one radius away); the
   new path is the minimal path back to the tree under the cost 1/EDT², which keeps it on the
   medial axis;
4. the paths are cut at the junctions into branches, and oriented from the inlet (the end nearest
   ``inlet_hint_mm``; without one, the end of largest radius, ties broken by the lowest Z);
5. each branch is smoothed (Gaussian along arc length, junction points held fixed), re-centred by a
   circle fit to the wall in its normal plane, trimmed where it enters an end cap, and resampled;
6. terminal stubs shorter than ``stub_radii`` radii (ghosts of a frayed end, which step 3's
   ``spur_factor`` measures against their own thin radius and lets through) are dropped and the
   junctions they leave are joined (``prune_stubs``), so that branch 0 runs on to the outlet or
   the next true bifurcation.

The radius R is the maximum inscribed sphere radius at each point: its distance to the lumen wall,
taken as the marching-cubes ``level`` surface (sub-voxel, unlike the voxel distance transform,
which is biased by half a voxel). Where the lumen runs into the edge of the grid the flat cap there
is not a wall, and the branch stops about one radius before the edge.

Branch lists follow Phantom.centerline_table: branch 0 starts at the inlet; a daughter branch starts
at the last point of its parent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from ..io.atomic import atomic_file
from .surface import mask_to_mesh, occupancy_fraction

CSV_COLUMNS = ("X", "Y", "Z", "MaximumInscribedSphereRadius")
_FULL = np.ones((3, 3, 3), dtype=bool)
# the 26-neighbourhood
_NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                        if (i, j, k) != (0, 0, 0)])


# ------------------------------------------------------------------------------------------------
# small helpers
def _arc(xyz: np.ndarray) -> np.ndarray:
    """Cumulative arc length [P] of a polyline [P, 3]."""
    if len(xyz) < 2:
        return np.zeros(len(xyz))
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz, axis=0), axis=1))])


def _resample(x: np.ndarray, step: float) -> np.ndarray:
    """Polyline x [P, D] (first 3 columns are xyz) resampled at uniform arc-length steps."""
    s = _arc(x[:, :3])
    if s[-1] <= 0 or len(x) < 2:
        return x.copy()
    n = max(2, int(math.ceil(s[-1] / step)) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, x[:, k]) for k in range(x.shape[1])], axis=1)


def _smooth(x: np.ndarray, sigma_pts: float, pin_start: bool, pin_end: bool) -> np.ndarray:
    """Gaussian smoothing of x [P, D] along its first axis. A pinned end is padded by odd reflection
    (2 x0 - x[k]), which keeps the end point and any linear trend there; a free end by even
    reflection."""
    n = len(x)
    if n < 3 or sigma_pts <= 0:
        return x.copy()
    pad = min(n - 1, int(4 * sigma_pts) + 1)
    head = x[pad:0:-1]
    tail = x[-2:-pad - 2:-1]
    head = 2 * x[0] - head if pin_start else head
    tail = 2 * x[-1] - tail if pin_end else tail
    y = ndi.gaussian_filter1d(np.concatenate([head, x, tail]), sigma_pts, axis=0, mode="nearest")[pad:pad + n]
    if pin_start:
        y[0] = x[0]
    if pin_end:
        y[-1] = x[-1]
    return y


def _tangents(xyz: np.ndarray) -> np.ndarray:
    t = np.gradient(xyz, axis=0) if len(xyz) > 1 else np.array([[0.0, 0.0, 1.0]])
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def _plane_basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1.0, 0.0, 0.0]) if abs(t[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(t, a)
    u /= np.linalg.norm(u)
    return u, np.cross(t, u)


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
    whole-box transform paid for every voxel (1.8 s of tube-biplane's 7 M-voxel box). The nearest
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
    are equal entry for entry, the costs to rounding). With the distance transform in slabs
    (``_edt_on_mask``) this took the graph of tube-biplane's batch lumen (287 k voxels at 0.1 mm)
    from 3.3 to 0.7 s, stenosis50-biplane's from 2.5 to 0.5 s (1 thread, 2-core CPU)."""

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
        tan = _tangents(pts)
        near = self.tree.query_ball_point(pts, 1.6 * r + slab)
        for i, idx in enumerate(near):
            if fixed[i] or len(idx) < 12:
                continue
            v = self.verts[idx] - pts[i]
            along = v @ tan[i]
            v = v[np.abs(along) < slab]
            if len(v) < 12:
                continue
            u, w = _plane_basis(tan[i])
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
    branches = [_resample(b, out_step) for b in branches]
    return branches if stub_radii is None else prune_stubs(branches, stub_radii)


def prune_stubs(branches: list, radii: float = 3.0) -> list[np.ndarray]:
    """The centerline without the stubs a frayed vessel end grows, and without the junctions they
    leave behind.

    A stub is a terminal branch shorter than ``radii`` times the larger of its own mean radius and
    its parent's radius at the junction (a ghost of a 2-view reconstruction tapers to 0.2-0.3 mm, so
    its own radius alone let 2.3-2.8 mm stubs through on curved-biplane), or a root branch that
    short (its longest daughter becomes branch 0). After each round of dropping, a branch with a
    single daughter is joined to it (it is no junction), so that branch 0 runs on to the next true
    bifurcation or the outlet; rounds repeat until no stub is left. On curved-biplane's batch lumen
    branch 0 had ended at 33.4 mm of the 40.1 mm vessel, at the first ghost, and ΔP was taken over
    that part only: 65.4 Pa, now 81.4 Pa over 39.4 mm (3D truth 102.4 Pa); velocity rel-L2 against
    the truth 0.376, now 0.240.
    """
    if not radii > 0:
        raise ValueError(f"prune_stubs: radii (stub_radii) must be > 0, or None to keep the traced tree; got {radii}")
    branches = [np.asarray(b, float) for b in branches]
    length = lambda b: _arc(b[:, :3])[-1]  # noqa: E731
    while len(branches) > 1:
        parents, kids = _tree(branches)
        if length(branches[0]) < radii * float(branches[0][:, 3].mean()) and kids[0]:
            keep = max(kids[0], key=lambda j: length(branches[j]))
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
    cannot be a stenosis, but grading read it as one. Measured: online fits of aneurisk-4view (the
    study's vessel ends at 40.0 mm with R 1.36 mm) at 22 and 24 fixed steps per frame grew a 4 mm
    tail of R 0.16-0.36 mm past the outlet, graded 84.9 % and 93.1 % "lesions" there, and ΔP came
    out 30 203 and 680 273 Pa (batch: 36 Pa); in the online benchmark's run (24.5 steps per frame)
    3003 Pa. A mid-vessel stenosis is never cut, however severe: the walk stops at the first point
    of full calibre."""
    if not 0 < frac < 1:
        raise ValueError(f"trim_ghost_ends: frac must be in (0, 1), got {frac}")
    branches = [np.asarray(b, float) for b in branches]
    if not branches:
        return branches
    parents, kids = _tree(branches)
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


def _tree(branches: list) -> tuple[list[int], list[list[int]]]:
    """(parent per branch, daughters per branch) from ``recon.centerline.branch_topology``."""
    parents, _ = branch_topology(branches)
    return parents, [[j for j, p in enumerate(parents) if p == i] for i in range(len(branches))]


def _is_stub(b: np.ndarray, r_parent: float, radii: float = 3.0) -> bool:
    """A terminal branch that is a ghost of the reconstruction, not a vessel: shorter than ``radii``
    times the larger of its mean radius and its parent's radius at the junction, or a needle (its
    radius falls below a quarter of the parent's) shorter than twice that. Measured on curved-biplane
    online fits at 33 of 60 frames: a 3.5 mm ghost tapering to 0.07 mm (parent 1.1 mm) survived
    the length test, kept a false bifurcation and graded a 72 % "lesion" at its tip; where such a
    needle was joined on as branch 0's end, ΔP came out at 191877 Pa."""
    length = float(_arc(b[:, :3])[-1])
    reach = radii * max(float(b[:, 3].mean()), r_parent)
    return length < reach or (r_parent > 0 and float(b[:, 3].min()) < 0.25 * r_parent and length < 2 * reach)


def _join_chains(branches: list) -> list:
    """Each branch with exactly one daughter joined to it, repeatedly (the daughter's first point
    is its parent's last, within branch_topology's tolerance, and is dropped)."""
    branches = list(branches)
    while len(branches) > 1:
        parents, kids = _tree(branches)
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
    x = _resample(pts, h)
    x = _smooth(x, sigma_mm / h, True, True)
    x = _resample(x, h)
    fixed = np.zeros(len(x), bool)
    fixed[0], fixed[-1] = start_fixed, end_fixed
    for _ in range(2):
        r = wall.radius(x)
        x = wall.recentre(x, r, fixed, slab=h)
        x = _smooth(x, 2.0, True, True)  # 2-sample sigma: irons out fit noise
    r = wall.radius(x)

    # trim the free ends: a closed end stops where it enters its end cap (the wall ahead is nearer
    # than the wall around), an open end one radius before the edge of the grid
    def keep_from_end(xe: np.ndarray, re: np.ndarray) -> int:
        """Number of points to drop from the end of (xe, re), ordered end first."""
        ahead = _arc(xe)
        to_box = np.min(np.concatenate([xe - box_lo, box_hi - xe], axis=1), axis=1)
        j = 0
        while j < len(xe) - 2 and (ahead[j] <= re[j] + h or to_box[j] < re[j]):
            j += 1
        return j

    a = 0 if start_fixed else keep_from_end(x, r)
    b = 0 if end_fixed else keep_from_end(x[::-1], r[::-1])
    if a + b < len(x) - 1:
        x, r = x[a:len(x) - b], r[a:len(x) - b]
    r = _smooth(r[:, None], 2.0, False, False)[:, 0]
    return np.column_stack([x, r])


# ------------------------------------------------------------------------------------------------
# CSV
def write_centerline_csv(path: str | Path, branches: list[np.ndarray], branch_id: bool = True) -> Path:
    """VMTK-style CSV: header X,Y,Z,MaximumInscribedSphereRadius (+ BranchId, last, if branch_id),
    the branches one after another; written to a temporary sibling and renamed into place."""
    path = Path(path)
    if not branches:
        raise ValueError("write_centerline_csv: no branches to write")
    rows = []
    for i, b in enumerate(branches):
        b = np.asarray(b, dtype=float)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"write_centerline_csv: branch {i} must be [P, 4] X, Y, Z, R; got {b.shape}")
        rows.append(np.column_stack([b, np.full(len(b), i)]) if branch_id else b)
    data = np.concatenate(rows)
    header = ",".join(CSV_COLUMNS + (("BranchId",) if branch_id else ()))
    fmt = ["%.6f"] * 4 + (["%d"] if branch_id else [])
    with atomic_file(path, "w") as fh:
        np.savetxt(fh, data, delimiter=",", fmt=fmt, header=header, comments="")
    return path


def read_centerline_csv(path: str | Path) -> list[np.ndarray]:
    """Branches [P, 4] (X, Y, Z, R) from a VMTK-style CSV. With a BranchId column the branches are
    its groups; without one the rows are split where a point jumps more than 3x the median step or
    repeats the previous point (a daughter starting at its parent's last point)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"centerline file {path} does not exist")
    data = np.genfromtxt(path, delimiter=",", names=True)
    names = data.dtype.names or ()
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {','.join(CSV_COLUMNS)}")
    data = np.atleast_1d(data)
    table = np.column_stack([data[c] for c in CSV_COLUMNS]).astype(float)
    if "BranchId" in names:
        ids = np.asarray(data["BranchId"]).astype(int)
        cuts = np.nonzero(np.diff(ids) != 0)[0] + 1
    else:
        step = np.linalg.norm(np.diff(table[:, :3], axis=0), axis=1)
        med = np.median(step[step > 0]) if np.any(step > 0) else 0.0
        cuts = np.nonzero((step > 3 * med) | (step <= 1e-9))[0] + 1
    return [b for b in np.split(table, cuts) if len(b) > 0]


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
                offsets[j] = offsets[p] + float(_arc(np.asarray(branches[p])[:, :3])[-1])
    return parents, offsets


def _robust_line(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """[2] coefficients (a, b) of d ≈ a + b s fitted to the healthy points: points well below the
    line (lesions) or well above it (junctions, dilatations) are dropped iteratively."""
    if len(s) < 3 or np.ptp(s) <= 0:
        return np.array([float(np.median(d)), 0.0])
    A = np.column_stack([np.ones_like(s), s])
    keep = np.ones(len(s), bool)
    coef = np.array([float(np.median(d)), 0.0])
    for _ in range(30):
        if keep.sum() < 3:
            break
        coef, *_ = np.linalg.lstsq(A[keep], d[keep], rcond=None)
        res = d - A @ coef
        rk = res[keep]
        scale = max(1.4826 * float(np.median(np.abs(rk - np.median(rk)))), 0.01 * float(np.median(d)))
        new = (res > -2.5 * scale) & (res < 4.0 * scale)
        if np.array_equal(new, keep):
            break
        keep = new
    return coef


def _run_around(inside: np.ndarray, i: int) -> tuple[int, int]:
    """First and last index of the run of ``inside`` that contains index i (i itself counts)."""
    a = i
    while a > 0 and inside[a - 1]:
        a -= 1
    b = i
    while b < len(inside) - 1 and inside[b + 1]:
        b += 1
    return a, b


def _crossing_width(s: np.ndarray, below: np.ndarray, val: np.ndarray, i: int) -> tuple[float, float]:
    """Arc interval around index i where ``below`` holds, its ends placed by linear interpolation of
    ``val`` (which crosses zero at the interval ends)."""
    a, b = _run_around(below, i)
    sa = s[a] if a == 0 else s[a - 1] + (s[a] - s[a - 1]) * val[a - 1] / (val[a - 1] - val[a])
    sb = s[b] if b == len(s) - 1 else s[b] + (s[b + 1] - s[b]) * val[b] / (val[b] - val[b + 1])
    return float(sa), float(sb)


def _band_width(s: np.ndarray, ratio: np.ndarray, i: int, f: float, band: float) -> float:
    """Mean over thresholds t in [f − band, f + band] of the width of the stretch around index i
    where ratio < t. For one dip this is ∫ clip((f + band − ratio) / (2 band), 0, 1) ds over the
    stretch below f + band (piecewise linear in ``ratio``, trapezoid rule): continuous in the
    profile, where the width at one threshold jumps when a shoulder crosses it."""
    hi = f + band
    a, b = _run_around(ratio < hi, i)
    lo, up = max(a - 1, 0), min(b + 1, len(s) - 1)  # the neighbours outside, where the weight reaches 0
    w = np.clip((hi - ratio[lo:up + 1]) / (2 * band), 0.0, 1.0)
    return float(np.trapezoid(w, s[lo:up + 1]))


def grade_stenosis(branches: list[np.ndarray], *, extent_fraction: float = 0.9, healthy_fraction: float = 0.97,
                   min_percent: float = 20.0, window_diameters: float = 2.0,
                   end_margin_radii: float = 1.0, extent_band: float = 0.05) -> list[dict]:
    """Lesions along the branches, most severe first.

    branches: list of [P, 4] X, Y, Z, R (mm). Per branch, d = 2R is compared with a healthy
    reference: a straight line d(s) fitted robustly to the branch (lesions excluded) finds runs where
    d < extent_fraction * reference. Each run is widened to its shoulders (d back above
    healthy_fraction * reference); the lesion's reference diameter is then interpolated (by arc
    length) between the median diameters of the proximal and distal healthy windows, each
    window_diameters reference diameters long next to the shoulders (one side only if the other is
    missing). % diameter stenosis = 100 (1 - d_min / d_ref) at the narrowest point; lesions below
    min_percent are not reported. The lesion length is the stretch where d < f * d_ref, averaged over
    the thresholds f in extent_fraction ± extent_band (``_band_width``; with extent_band 0, the
    stretch at extent_fraction alone): a length at one threshold jumps wherever the profile has a
    shoulder or a second dip near that threshold. Measured on an online fit of eccentric60-4view
    (20 fixed steps per frame, seed 0, estimates every 3rd frame from 96 to 120): a distal dip
    behind a bump at 0.84-0.92 d_ref made the 0.9 length 4.63-4.66 mm or 6.72-7.26 mm from one
    estimate to the next, and ΔP over frames 102-120 667-807 Pa; with the band, 5.97-7.19 mm and
    728-798 Pa. On the 24 cached batch lumens (8 presets x 3 seeds) the lengths moved by at most
    0.25 mm (eccentric60-4view seeds 0/1/2: 5.57/5.23/5.24 -> 5.64/4.98/5.09 mm) and ΔP by at most
    1.6 % (697.0 -> 685.6 Pa on eccentric seed 1; 50 %, 70 %, rotational under 0.3 %). Also
    given: the stretch at extent_fraction (start_arc_mm, end_arc_mm: where reduced-order ΔP swaps
    the Poiseuille integral for Young-Tsai) and the width at half the lesion's depth, which is
    half the full length of a cosine stenosis. Points within end_margin_radii radii of a branch
    end are not graded: there the inscribed sphere touches the lumen's end cap, not its wall (its
    radius at a distance x < R from a flat end is x), as in the transit's sections
    (``flow.transit``, the same 1 radius). With 0.5 radii, the batch lumen of curved-biplane
    (round-vessel prior, seed 0), whose outlet ends in a 1.3 mm cone (R 1.25 -> 0.41 mm), was
    graded a 35.9 % stenosis at its last 0.7 mm, and aneurisk-4view's even-hull lumens (3 seeds)
    20-24 % at 0.8 mm from the inlet; with 1 radius none of them. On the 24 cached even-hull batch
    lumens (8 presets x 3 seeds) the true lesions did not move; one lumen gained a lesion:
    curved-biplane seed 2, 20.8 % at 35.6 mm, where its far end narrows (R 1.08 against 1.27 mm) and
    the robust reference line moved with the points no longer graded.

    Each dict: branch, percent_diameter_stenosis, percent_area_stenosis, d_min_mm, d_ref_mm,
    d_ref_proximal_mm, d_ref_distal_mm (None if missing), arc_from_inlet_mm, arc_in_branch_mm,
    xyz_mm [3], length_mm, length_threshold, length_band, length_at_threshold_mm, start_arc_mm,
    end_arc_mm (from the inlet), length_half_depth_mm.
    """
    if not (0 <= extent_band < extent_fraction and extent_fraction + extent_band <= 1):
        raise ValueError(f"grade_stenosis: need 0 <= extent_band < extent_fraction and extent_fraction + "
                         f"extent_band <= 1, got extent_band={extent_band}, extent_fraction={extent_fraction}")
    _, offsets = branch_topology(branches)
    lesions = []
    for bi, b in enumerate(branches):
        b = np.asarray(b, dtype=float)
        if len(b) < 5:
            continue
        s, d = _arc(b[:, :3]), 2.0 * b[:, 3]
        margin = end_margin_radii * float(np.median(b[:, 3]))
        valid = (s >= margin) & (s <= s[-1] - margin)
        if valid.sum() < 5:
            continue
        coef = _robust_line(s[valid], d[valid])
        ratio = d / np.maximum(coef[0] + coef[1] * s, 1e-9)
        below = valid & (ratio < extent_fraction)
        # runs of `below`, widened to their shoulders; overlapping ones merged
        spans = []
        i = 0
        while i < len(s):
            if not below[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(s) and below[j + 1]:
                j += 1
            a, c = i, j
            while a > 0 and valid[a - 1] and ratio[a] < healthy_fraction:
                a -= 1
            while c < len(s) - 1 and valid[c + 1] and ratio[c] < healthy_fraction:
                c += 1
            if spans and a <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(c, spans[-1][1]), spans[-1][2] + [(i, j)])
            else:
                spans.append((a, c, [(i, j)]))
            i = j + 1
        for a, c, runs in spans:
            core = np.concatenate([np.arange(i, j + 1) for i, j in runs])
            imin = int(core[np.argmin(ratio[core])])
            d_line = coef[0] + coef[1] * s[imin]
            w = window_diameters * d_line
            prox = valid & (s >= s[a] - w) & (s <= s[a])
            dist = valid & (s >= s[c]) & (s <= s[c] + w)
            refs = []
            for sel in (prox, dist):
                ok = sel.sum() >= 3 and np.ptp(s[sel]) >= 0.25 * w
                refs.append((float(np.median(s[sel])), float(np.median(d[sel]))) if ok else None)
            if refs[0] and refs[1]:
                (s0, d0), (s1, d1) = refs
                d_ref_at = lambda x: d0 + (d1 - d0) * np.clip((x - s0) / max(s1 - s0, 1e-9), 0, 1)  # noqa: E731
            elif refs[0] or refs[1]:
                dr = (refs[0] or refs[1])[1]
                d_ref_at = lambda x: np.full_like(np.asarray(x, float), dr)  # noqa: E731
            else:
                d_ref_at = lambda x: coef[0] + coef[1] * np.asarray(x, float)  # noqa: E731
            d_ref = float(d_ref_at(s[imin]))
            pct = 100.0 * (1.0 - d[imin] / d_ref)
            if pct < min_percent:
                continue
            ref_curve = d_ref_at(s)
            v_ext = extent_fraction * ref_curve - d  # > 0 inside the lesion
            sa, sb = _crossing_width(s, v_ext > 0, v_ext, imin)
            length = _band_width(s, d / ref_curve, imin, extent_fraction, extent_band) if extent_band > 0 else sb - sa
            half = ref_curve - 0.5 * (ref_curve - d[imin]) - d
            ha, hb = _crossing_width(s, half > 0, half, imin)
            lesions.append({
                "branch": bi,
                "percent_diameter_stenosis": float(pct),
                "percent_area_stenosis": float(100.0 * (1.0 - (d[imin] / d_ref) ** 2)),
                "d_min_mm": float(d[imin]), "d_ref_mm": d_ref,
                "d_ref_proximal_mm": refs[0][1] if refs[0] else None,
                "d_ref_distal_mm": refs[1][1] if refs[1] else None,
                "arc_from_inlet_mm": float(offsets[bi] + s[imin]), "arc_in_branch_mm": float(s[imin]),
                "xyz_mm": [float(v) for v in b[imin, :3]],
                "length_mm": float(length), "length_threshold": extent_fraction, "length_band": extent_band,
                "length_at_threshold_mm": sb - sa,
                "start_arc_mm": float(offsets[bi] + sa), "end_arc_mm": float(offsets[bi] + sb),
                "length_half_depth_mm": hb - ha,
            })
    return sorted(lesions, key=lambda L: -L["percent_diameter_stenosis"])


def _murray_exponent(rp: float, rd: list[float]) -> float | None:
    """k solving rp^k = sum rd^k (None when no daughter is smaller than... i.e. no root exists)."""
    q = np.asarray(rd, dtype=float) / rp
    if len(q) < 2 or np.any(q <= 0) or np.any(q >= 1):
        return None
    f = lambda k: float(np.sum(q ** k) - 1.0)  # noqa: E731  decreasing in k, f(0) = n - 1 > 0
    lo, hi = 0.0, 1.0
    while f(hi) > 0:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            return None
    for _ in range(100):  # bisection: robust and plenty fast
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def murray_deviation(branches: list[np.ndarray], *, offset_radii: float = 2.5,
                     window_radii: float = 2.0) -> list[dict]:
    """Murray's law at each bifurcation (a branch with two or more daughters).

    Radii are medians over a window window_radii parent radii long, starting offset_radii parent
    radii away from the junction (upstream on the parent, downstream on the daughters), clear of the
    junction's own widening; windows are shortened on branches too short for them.

    Each dict: parent, daughters [indices], junction_xyz_mm [3], r_parent_mm, r_daughters_mm [list],
    deviation = (r_p³ − Σ r_d³) / r_p³ (0 for Murray's law), exponent_k solving r_p^k = Σ r_d^k
    (3 for Murray's law; None if no daughter is smaller than the parent).
    """
    _, children = _tree(branches)
    out = []
    for i, kids in enumerate(children):
        if len(kids) < 2:
            continue
        bp = np.asarray(branches[i], dtype=float)
        rp_typ = float(np.median(bp[:, 3]))
        off, win = offset_radii * rp_typ, window_radii * rp_typ

        def window_median(b: np.ndarray, from_end: bool) -> float:
            s = _arc(b[:, :3])
            dist = s[-1] - s if from_end else s
            L = s[-1]
            a = min(off, 0.5 * L)
            sel = (dist >= a) & (dist <= a + win)
            if sel.sum() < 2:
                sel = dist >= 0.5 * L
            return float(np.median(b[sel, 3]))

        rp = window_median(bp, True)
        rd = [window_median(np.asarray(branches[j], dtype=float), False) for j in kids]
        out.append({
            "parent": i, "daughters": kids, "junction_xyz_mm": [float(v) for v in bp[-1, :3]],
            "r_parent_mm": rp, "r_daughters_mm": rd,
            "deviation": float((rp ** 3 - sum(r ** 3 for r in rd)) / rp ** 3),
            "exponent_k": _murray_exponent(rp, rd),
        })
    return out


def summary_dict(branches: list[np.ndarray]) -> dict:
    """{"stenosis": grade_stenosis(...), "murray": murray_deviation(...), "n_branches"}: what a
    reconstruction's summary.json carries (JSON-serialisable)."""
    return json.loads(json.dumps({"n_branches": len(branches), "stenosis": grade_stenosis(branches),
                                  "murray": murray_deviation(branches)}))
