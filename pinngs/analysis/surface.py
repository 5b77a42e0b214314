"""Lumen surface: a watertight triangle mesh from an occupancy volume.

    mesh = mask_to_mesh(occ, origin_mm, spacing_mm)          # trimesh.Trimesh, world mm

The surface is the ``level`` iso-surface of the occupancy (marching cubes, scikit-image's Lewiner
variant), so it sits between voxel centres with sub-voxel accuracy for a partial-volume occupancy.
The volume is padded with one empty voxel on every side first: where the lumen runs into the edge of
the grid the surface is closed there by a flat cap, and the mesh is always watertight.
"""
from __future__ import annotations

import numpy as np
import trimesh

# values this close to the iso-level are moved off it: a voxel exactly at the level makes marching
# cubes put several vertices on its centre, which become non-manifold once merged
_LEVEL_EPS = 1e-5


def occupancy_fraction(occ: np.ndarray) -> np.ndarray:
    """Occupancy as a lumen fraction in [0, 1], float32 [X, Y, Z]: uint8 volumes (as stored in
    lumen.npz) are divided by 255, boolean ones become 0/1, float ones are taken as they are."""
    occ = np.asarray(occ)
    if occ.ndim != 3:
        raise ValueError(f"occupancy must be a 3-D array [X, Y, Z], got shape {occ.shape}")
    if occ.dtype == np.uint8:
        return occ.astype(np.float32) / 255.0
    if occ.dtype == bool:
        return occ.astype(np.float32)
    if not np.issubdtype(occ.dtype, np.floating):
        raise TypeError(f"occupancy must be uint8 (0..255), bool or float (0..1), got {occ.dtype}")
    return occ.astype(np.float32, copy=False)


def _spacing3(spacing_mm) -> np.ndarray:
    s = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,)).copy()
    if not np.all(s > 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    return s


def mask_to_mesh(occ: np.ndarray, origin_mm, spacing_mm, level: float = 0.5) -> trimesh.Trimesh:
    """Watertight lumen surface of an occupancy volume.

    occ: [X, Y, Z] lumen fraction (float in [0, 1], uint8 0..255 or bool); voxel (i, j, k) is centred
    at origin_mm + spacing_mm * (i, j, k). spacing_mm: scalar or [3]. level: iso-value (0.5 = the
    half-occupied surface). Returns a trimesh.Trimesh in world mm with outward-facing normals
    (positive volume); open ends at the grid boundary are capped flat half a voxel outside it.
    """
    vol = occupancy_fraction(occ)
    origin = np.asarray(origin_mm, dtype=float).reshape(3)
    sp = _spacing3(spacing_mm)
    if not vol.max() > level:
        raise ValueError(f"mask_to_mesh: no voxel is above level {level} (max occupancy {float(vol.max()):.3g}); "
                         "the lumen is empty")
    vol = np.where(np.abs(vol - level) < _LEVEL_EPS,
                   np.where(vol >= level, level + _LEVEL_EPS, level - _LEVEL_EPS), vol).astype(np.float32)
    padded = np.pad(vol, 1, mode="constant", constant_values=0.0)
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(padded, level=level, spacing=tuple(sp))
    verts = verts + (origin - sp)  # padded voxel (0, 0, 0) sits one voxel before the origin
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=True)
    if mesh.volume < 0:  # orientation from marching cubes depends on its gradient convention
        mesh.invert()
    return mesh
