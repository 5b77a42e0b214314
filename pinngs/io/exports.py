"""Output files of a reconstruction, each written completely or not at all (world mm, DESIGN.md §4).

    write_centerline_csv(path, branches)   # VMTK-style X,Y,Z,MaximumInscribedSphereRadius,BranchId
    branches = read_centerline_csv(path)
    write_ply(path, field)                 # the Gaussians for 3DGS viewers
    write_gaussians_npz(path, field, lumen_level_per_mm)
    write_lumen_npz(path, occupancy, origin_mm, spacing_mm)
    write_mesh(mesh, path)                 # .stl or .obj
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import trimesh

from ..field import GaussianField
from .atomic import atomic_file, umask

CSV_COLUMNS = ("X", "Y", "Z", "MaximumInscribedSphereRadius")


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


def write_ply(path: str | Path, field: GaussianField) -> Path:
    """Binary little-endian PLY with the attribute names 3DGS viewers read. Opacity is the logit of
    a/max(a) (viewers apply a sigmoid); colour is a neutral grey."""
    f = field
    with torch.no_grad():
        m = f.means.numpy().astype(np.float32)
        ls = f.log_scales.numpy().astype(np.float32)
        q = torch.nn.functional.normalize(f.quats, dim=-1).numpy().astype(np.float32)
        a = f.attenuation.numpy().astype(np.float64)
    op = np.clip(a / a.max(), 1e-6, 1 - 1e-6)
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
             + [f"scale_{k}" for k in range(3)] + [f"rot_{k}" for k in range(4)])
    arr = np.zeros(len(m), dtype=[(n, "<f4") for n in names])
    for k, ax in enumerate("xyz"):
        arr[ax] = m[:, k]
        arr[f"scale_{k}"] = ls[:, k]
    for k in range(3):
        arr[f"f_dc_{k}"] = 0.5 / 0.28209479  # SH DC term that renders as mid-grey
    arr["opacity"] = np.log(op / (1 - op)).astype(np.float32)
    for k in range(4):
        arr[f"rot_{k}"] = q[:, k]
    header = ("ply\nformat binary_little_endian 1.0\ncomment pinngs Gaussians, world mm; scale_* = ln(sigma mm)\n"
              f"element vertex {len(m)}\n" + "".join(f"property float {n}\n" for n in names) + "end_header\n")
    with atomic_file(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(arr.tobytes())
    return Path(path)

def write_gaussians_npz(path: str | Path, field: GaussianField, lumen_level_per_mm: float) -> Path:
    """means_mm [N, 3], scales_mm [N, 3], quats_wxyz [N, 4] (unit), atten_per_mm [N] and the lumen
    level μ_c (mm⁻¹)."""
    f = field
    with torch.no_grad(), atomic_file(path, "wb") as fh:
        np.savez(fh, means_mm=f.means.numpy(), scales_mm=f.scales.numpy(),
                 quats_wxyz=torch.nn.functional.normalize(f.quats, dim=-1).numpy(),
                 atten_per_mm=f.attenuation.numpy(), lumen_level_per_mm=lumen_level_per_mm,
                 note="world mm (DESIGN.md); mu(x) = sum_i atten_i exp(-1/2 d^T R diag(1/s^2) R^T d)")
    return Path(path)


def write_lumen_npz(path: str | Path, occupancy: np.ndarray, origin_mm, spacing_mm: float) -> Path:
    """occupancy [X, Y, Z] uint8 = round(255 · lumen fraction), origin_mm [3] (centre of voxel 0),
    spacing_mm."""
    occ8 = np.round(np.asarray(occupancy) * 255).astype(np.uint8)
    with atomic_file(path, "wb") as fh:
        np.savez_compressed(fh, occupancy=occ8, origin_mm=origin_mm, spacing_mm=spacing_mm,
                            note="occupancy/255 = voxelized Gaussians / lumen level, clipped; 0.5 = the lumen surface")
    return Path(path)


def _atomic_export(mesh: trimesh.Trimesh, path: str | Path, file_type: str) -> Path:
    path = Path(path)
    data = mesh.export(file_type=file_type)
    with atomic_file(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


def write_stl(mesh: trimesh.Trimesh, path: str | Path) -> Path:
    """Binary STL, written to a temporary sibling and renamed into place."""
    return _atomic_export(mesh, path, "stl")


def write_obj(mesh: trimesh.Trimesh, path: str | Path) -> Path:
    """Wavefront OBJ (vertices + faces), written to a temporary sibling and renamed into place."""
    return _atomic_export(mesh, path, "obj")


def write_mesh(mesh: trimesh.Trimesh, path: str | Path) -> Path:
    """STL or OBJ by the file's suffix (.stl / .obj), atomically."""
    suffix = Path(path).suffix.lower()
    if suffix == ".stl":
        return write_stl(mesh, path)
    if suffix == ".obj":
        return write_obj(mesh, path)
    raise ValueError(f"write_mesh: unsupported mesh format {suffix!r} for {path}; use .stl or .obj")


def write_vtu(path: str | Path, points_mm: np.ndarray, cells: np.ndarray | None, cell_type: str,
              point_data: dict[str, np.ndarray]) -> Path:
    """A VTK XML unstructured grid (.vtu, meshio) that ParaView opens: ``points_mm`` [V, 3] (world mm),
    ``cells`` [C, k] of ``cell_type`` ("tetra", "triangle"; None: one "vertex" cell per point) and
    point arrays whose names carry their units (``velocity_mm_s`` [V, 3], ``pressure_pa`` [V], ...)."""
    import meshio

    pts = np.asarray(points_mm, float)
    cells_ = [("vertex", np.arange(len(pts))[:, None])] if cells is None else [(cell_type, np.asarray(cells, np.int64))]
    mesh = meshio.Mesh(pts, cells_, point_data={k: np.asarray(v, np.float32) for k, v in point_data.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.vtu")  # meshio writes by name
    try:
        meshio.write(tmp, mesh, file_format="vtu")
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_vtu(path: str | Path):
    """The meshio.Mesh of a .vtu (points, cells, point_data)."""
    import meshio

    return meshio.read(path)
