"""Vessel phantoms: branches of centerline points with radii, turned into a lumen on a fine grid.

Every phantom is a set of branches (points [P, 3] mm, radii [P] mm), the first point of branch 0
being the inlet. The lumen is, in each branch, the union of the discs of radius r normal to the
centerline (round caps at the branch ends), the branches united: the solid the flow truth is
computed in. On a grid it is a partial-volume occupancy in [0, 1] from the signed distance (a linear
ramp one voxel wide), so that projections of it converge as the grid is refined.

Presets (see ``make_phantom``): straight tube; axisymmetric and eccentric stenoses (cosine profile,
severity = fractional diameter reduction, length); a bifurcation obeying Murray's law
(r0³ = r1³ + r2³) with a chosen angle; a curved vessel (circular arc); real vessels from AneuRisk
centerline files (VMTK columns X,Y,Z,MaximumInscribedSphereRadius, several centerlines per file).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..flow.fem import Branch, swept_signed_distance


@dataclass
class Phantom:
    """A vessel: branches, plus what the flow solver needs to know about it."""

    name: str
    branches: list[Branch]
    axisymmetric: bool = False  # straight axis with r = R(z): the axisymmetric CFD applies
    axis_origin_mm: np.ndarray | None = None  # for axisymmetric phantoms: z = 0 point and
    axis_dir: np.ndarray | None = None  # unit direction (inlet -> outlet)
    axial_profile: tuple[np.ndarray, np.ndarray] | None = None  # (z_mm, R_mm) for axisymmetric ones
    stenosis: dict | None = None  # {"severity", "length_mm", "z_mm" (centre, along the axis)}
    meta: dict = field(default_factory=dict)

    @property
    def inlet(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(point, unit direction into the vessel, radius) at the inlet."""
        b = self.branches[0]
        d = b.points_mm[1] - b.points_mm[0]
        return b.points_mm[0], d / np.linalg.norm(d), float(b.radii_mm[0])

    def bounds_mm(self, margin_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        lo = np.min([(b.points_mm - b.radii_mm[:, None]).min(0) for b in self.branches], axis=0) - margin_mm
        hi = np.max([(b.points_mm + b.radii_mm[:, None]).max(0) for b in self.branches], axis=0) + margin_mm
        return lo, hi

    def grid(self, spacing_mm: float, margin_mm: float = 1.0) -> tuple[np.ndarray, tuple[int, int, int]]:
        """(origin_mm [3], shape) of a grid of the given spacing covering the phantom."""
        lo, hi = self.bounds_mm(margin_mm)
        shape = tuple(int(n) for n in np.ceil((hi - lo) / spacing_mm).astype(int) + 1)
        return lo, shape

    def signed_distance(self, origin_mm: np.ndarray, spacing_mm: float, shape: tuple[int, int, int],
                        step_mm: float | None = None) -> np.ndarray:
        """Approximate signed distance to the lumen wall (mm, negative inside), [X, Y, Z] float32
        (``pinngs.flow.fem.swept_signed_distance`` of the branches)."""
        return swept_signed_distance(self.branches, origin_mm, spacing_mm, shape, step_mm)

    def occupancy(self, origin_mm: np.ndarray, spacing_mm: float, shape: tuple[int, int, int]) -> np.ndarray:
        """Partial-volume lumen fraction in [0, 1], [X, Y, Z] float32 (ramp one voxel wide)."""
        sd = self.signed_distance(origin_mm, spacing_mm, shape)
        return np.clip(0.5 - sd / spacing_mm, 0.0, 1.0).astype(np.float32)

    def centerline_table(self) -> np.ndarray:
        """[P, 4] rows X, Y, Z, MaximumInscribedSphereRadius (VMTK), all branches in order."""
        return np.concatenate([np.column_stack([b.points_mm, b.radii_mm]) for b in self.branches])


# ------------------------------------------------------------------------------------------------
def _frame(direction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    a = np.array([1.0, 0, 0]) if abs(d[0]) < 0.9 else np.array([0, 1.0, 0])
    n1 = np.cross(d, a)
    n1 /= np.linalg.norm(n1)
    return d, n1, np.cross(d, n1)


def cosine_stenosis_radius(z_mm, r0_mm: float, severity: float, length_mm: float, z_centre_mm: float = 0.0):
    """r(z) = r0 (1 - s/2 (1 + cos(2π (z - zc)/L))) inside |z - zc| <= L/2, else r0."""
    z = np.asarray(z_mm, float)
    inside = np.abs(z - z_centre_mm) <= length_mm / 2
    return np.where(inside, r0_mm * (1 - severity / 2 * (1 + np.cos(2 * np.pi * (z - z_centre_mm) / length_mm))), r0_mm)


def straight_vessel(name: str, radius_mm: float = 1.5, length_mm: float = 40.0, direction=(0.3, 0.2, 1.0),
                    centre_mm=(0.0, 0.0, 0.0), severity: float = 0.0, stenosis_length_mm: float = 6.0,
                    eccentric_mm: float = 0.0, step_mm: float = 0.1) -> Phantom:
    """A straight tube along ``direction`` centred at ``centre_mm``, optionally with a cosine stenosis
    at its middle; ``eccentric_mm`` > 0 shifts the narrowed lumen's centre sideways (then the phantom
    is no longer axisymmetric)."""
    d, n1, _ = _frame(direction)
    z = np.arange(-length_mm / 2, length_mm / 2 + step_mm / 2, step_mm)
    r = cosine_stenosis_radius(z, radius_mm, severity, stenosis_length_mm) if severity > 0 else np.full_like(z, radius_mm)
    shift = np.zeros_like(z)
    if eccentric_mm:
        # the wall on one side stays put: centre moves by (r0 - r) towards that side, scaled
        shift = eccentric_mm * (radius_mm - r) / max(radius_mm * severity, 1e-9)
    pts = np.asarray(centre_mm, float) + z[:, None] * d + shift[:, None] * n1
    sten = {"severity": severity, "length_mm": stenosis_length_mm, "z_mm": length_mm / 2} if severity > 0 else None
    return Phantom(name, [Branch(pts, r)], axisymmetric=eccentric_mm == 0,
                   axis_origin_mm=pts[0], axis_dir=d, axial_profile=(z - z[0], r), stenosis=sten,
                   meta={"radius_mm": radius_mm, "length_mm": length_mm, "eccentric_mm": eccentric_mm})


def bifurcation(name: str = "bifurcation", r0_mm: float = 1.6, ratio: float = 0.8, angle_deg: float = 60.0,
                trunk_mm: float = 20.0, branch_mm: float = 20.0, direction=(0.2, 0.1, 1.0)) -> Phantom:
    """A parent of radius r0 splitting into two daughters r1, r2 with r1/r2 = ratio and Murray's law
    r0³ = r1³ + r2³; the daughters leave symmetrically at ±angle/2 from the parent axis."""
    r2 = r0_mm / (1 + ratio ** 3) ** (1 / 3)
    r1 = ratio * r2
    d, n1, _ = _frame(direction)
    start = -trunk_mm * d
    s = np.linspace(0.0, 1.0, int(trunk_mm / 0.1) + 1)[:, None]
    trunk = Branch(start + s * trunk_mm * d, np.full(len(s), r0_mm))
    half = math.radians(angle_deg / 2)
    out = []
    for sign, r in ((1, r1), (-1, r2)):
        dirb = math.cos(half) * d + sign * math.sin(half) * n1
        sb = np.linspace(0.0, 1.0, int(branch_mm / 0.1) + 1)[:, None]
        # radius tapers from r0 to r over the first 2 mm, so the junction is smooth
        rr = r + (r0_mm - r) * np.clip(1 - sb[:, 0] * branch_mm / 2.0, 0, 1)
        out.append(Branch(sb * branch_mm * dirb, rr))
    return Phantom(name, [trunk] + out, meta={"r0_mm": r0_mm, "r1_mm": r1, "r2_mm": r2, "angle_deg": angle_deg,
                                              "murray_residual": (r0_mm ** 3 - r1 ** 3 - r2 ** 3) / r0_mm ** 3})


def curved_vessel(name: str = "curved", radius_mm: float = 1.4, bend_radius_mm: float = 25.0,
                  angle_deg: float = 90.0) -> Phantom:
    """A circular arc of the given bend radius and sweep, in a tilted plane."""
    t = np.linspace(0.0, math.radians(angle_deg), int(bend_radius_mm * math.radians(angle_deg) / 0.1) + 1)
    pts = np.stack([bend_radius_mm * (1 - np.cos(t)), 0.3 * bend_radius_mm * np.sin(t), bend_radius_mm * np.sin(t)], 1)
    pts -= pts.mean(0)
    return Phantom(name, [Branch(pts, np.full(len(t), radius_mm))], meta={"bend_radius_mm": bend_radius_mm})


def load_vmtk_centerlines(path: str | Path) -> list[Branch]:
    """Split a VMTK centerline CSV (X,Y,Z,MaximumInscribedSphereRadius; several centerlines one after
    another) into branches wherever a point jumps more than 3x the median spacing."""
    path = Path(path)
    try:
        data = np.genfromtxt(path, delimiter=",", names=True)
    except OSError as err:
        raise FileNotFoundError(f"centerline file {path} cannot be read: {err}") from None
    need = ("X", "Y", "Z", "MaximumInscribedSphereRadius")
    missing = [c for c in need if c not in (data.dtype.names or ())]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected VMTK columns {need}")
    xyz = np.column_stack([data["X"], data["Y"], data["Z"]])
    r = np.asarray(data["MaximumInscribedSphereRadius"], float)
    step = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    cuts = np.nonzero(step > 3 * np.median(step))[0] + 1
    return [Branch(p, q) for p, q in zip(np.split(xyz, cuts), np.split(r, cuts)) if len(p) > 1]


def aneurisk_vessel(path: str | Path, branch: int = 0, length_mm: float = 40.0, start_mm: float = 0.0,
                    name: str | None = None) -> Phantom:
    """One real centerline (``branch``) from an AneuRisk file, the stretch [start, start + length] mm
    from its inlet, recentred at the origin (the study's isocentre)."""
    brs = load_vmtk_centerlines(path)
    if not 0 <= branch < len(brs):
        raise ValueError(f"{path} has {len(brs)} centerlines; branch {branch} does not exist")
    b = brs[branch]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(b.points_mm, axis=0), axis=1))])
    keep = (s >= start_mm) & (s <= start_mm + length_mm)
    pts, r = b.points_mm[keep], b.radii_mm[keep]
    centre = (pts.min(0) + pts.max(0)) / 2
    return Phantom(name or f"aneurisk_{Path(path).stem}", [Branch(pts - centre, r)],
                   meta={"source": str(path), "branch": branch, "start_mm": start_mm, "length_mm": length_mm,
                         "recentred_by_mm": (-centre).tolist()})
