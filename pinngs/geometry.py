r"""C-arm cone-beam geometry (DESIGN.md §4). DICOM angle conventions live here and only here.

World frame: DICOM patient coordinates LPS (x to the patient's left, y posterior, z head), in mm,
isocentre at the origin.

Positioner angles (DICOM PS3.3 C.8.7.5, XA Positioner): the *primary* angle turns the image detector
in the patient's transverse plane, 0° above the chest (anterior), +90° at the patient's left (LAO),
-90° at the right (RAO). The *secondary* angle tilts it in the sagittal plane, +90° towards the head
(CRA), -90° towards the feet (CAU). So the unit vector from isocentre to detector is

    n = (sin α cos β, -cos α cos β, sin β),     α = primary, β = secondary,

which is R(α, β) · (0, -1, 0) with R = Rz(α) · Rx(-β). The source sits opposite at -SOD · n and the
detector plane is perpendicular to n at distance SID from the source.

Detector axes: at AP (α = β = 0) image columns run towards the patient's left (+x) and image rows
towards the feet (-z): the image is seen from the detector looking back at the source, head up.
This is DICOM's Patient Orientation "L\F" for an AP image. Other poses rotate these axes with the
same R. In camera terms (OpenCV convention, as gsplat uses) the rotation rows are (u, v, w) =
(column axis, row axis, source->detector axis). Because the image is seen from the detector side,
this frame is left-handed (det = -1): a pinhole at the source would see the mirror image.

Pixels: pixel (row r, col c) has its centre at detector coordinates (c + 0.5, r + 0.5). The principal
point (foot of the perpendicular from the source) is offset from the detector centre by
``principal_offset_mm`` = (along columns, along rows) in mm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

VIEW_FLOATS = 17  # packed layout shared with csrc/gauss_math.h: o(3) R(9) fx fy cx cy near_mm


@dataclass(frozen=True)
class CArmView:
    """One C-arm projection geometry.

    Attributes:
        primary_deg: positioner primary angle, LAO+ / RAO-, degrees.
        secondary_deg: positioner secondary angle, CRA+ / CAU-, degrees.
        sid_mm: source-to-image (detector) distance.
        sod_mm: source-to-isocentre (object) distance.
        rows, cols: detector size in pixels (H, W).
        pixel_spacing_mm: (row spacing, column spacing) on the detector, DICOM ImagerPixelSpacing.
        principal_offset_mm: principal point minus detector centre, (along columns, along rows).
        near_mm: Gaussians whose mean is closer to the source than this (along the axis) are culled.
    """

    primary_deg: float = 0.0
    secondary_deg: float = 0.0
    sid_mm: float = 1200.0
    sod_mm: float = 800.0
    rows: int = 256
    cols: int = 256
    pixel_spacing_mm: tuple[float, float] = (0.6, 0.6)
    principal_offset_mm: tuple[float, float] = (0.0, 0.0)
    near_mm: float = 1.0
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems = []
        for name in ("primary_deg", "secondary_deg", "sid_mm", "sod_mm", "near_mm"):
            if not math.isfinite(getattr(self, name)):
                problems.append(f"{name} must be finite, got {getattr(self, name)}")
        if not self.sid_mm > 0 or not self.sod_mm > 0:
            problems.append(f"sid_mm and sod_mm must be positive, got {self.sid_mm}, {self.sod_mm}")
        elif self.sod_mm >= self.sid_mm:
            problems.append(f"sod_mm ({self.sod_mm}) must be smaller than sid_mm ({self.sid_mm}): "
                            "the isocentre lies between source and detector")
        if int(self.rows) != self.rows or int(self.cols) != self.cols or self.rows < 1 or self.cols < 1:
            problems.append(f"rows and cols must be positive integers, got {self.rows}, {self.cols}")
        if len(self.pixel_spacing_mm) != 2 or not all(s > 0 for s in self.pixel_spacing_mm):
            problems.append(f"pixel_spacing_mm must be two positive values (row, col), got {self.pixel_spacing_mm}")
        if len(self.principal_offset_mm) != 2:
            problems.append(f"principal_offset_mm must be two values, got {self.principal_offset_mm}")
        if not self.near_mm > 0:
            problems.append(f"near_mm must be positive, got {self.near_mm}")
        if problems:
            raise ValueError("invalid CArmView: " + "; ".join(problems))

    # -- frames -----------------------------------------------------------------------------
    @property
    def rotation(self) -> np.ndarray:
        """[3, 3] float64, rows (u, v, w): column axis, row axis, source->detector axis (world)."""
        if "R" not in self._cache:
            a, b = math.radians(self.primary_deg), math.radians(self.secondary_deg)
            ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
            Rz = np.array([[ca, -sa, 0.0], [sa, ca, 0.0], [0.0, 0.0, 1.0]])
            Rx = np.array([[1.0, 0.0, 0.0], [0.0, cb, sb], [0.0, -sb, cb]])  # Rx(-β)
            M = Rz @ Rx  # maps AP-frame vectors to this pose
            u = M @ np.array([1.0, 0.0, 0.0])
            v = M @ np.array([0.0, 0.0, -1.0])
            w = M @ np.array([0.0, -1.0, 0.0])
            self._cache["R"] = np.stack([u, v, w])
        return self._cache["R"]

    @property
    def source_mm(self) -> np.ndarray:
        """[3] float64 source position (world, mm)."""
        return -self.sod_mm * self.rotation[2]

    @property
    def detector_center_mm(self) -> np.ndarray:
        """[3] float64 centre of the detector (world, mm)."""
        R = self.rotation
        ox, oy = self.principal_offset_mm
        return self.source_mm + self.sid_mm * R[2] - ox * R[0] - oy * R[1]

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels: pinhole focal lengths and principal point."""
        sr, sc = self.pixel_spacing_mm
        ox, oy = self.principal_offset_mm
        return (self.sid_mm / sc, self.sid_mm / sr, self.cols / 2 + ox / sc, self.rows / 2 + oy / sr)

    def K(self) -> np.ndarray:
        """[3, 3] pinhole intrinsics matrix."""
        fx, fy, cx, cy = self.intrinsics
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def viewmat(self) -> np.ndarray:
        """[4, 4] world-to-camera matrix (OpenCV convention, the one gsplat takes)."""
        M = np.eye(4)
        M[:3, :3] = self.rotation
        M[:3, 3] = -self.rotation @ self.source_mm
        return M

    # -- rays and projection ------------------------------------------------------------------
    def pixel_centers_mm(self) -> np.ndarray:
        """[H, W, 3] float64 world positions of the pixel centres on the detector plane."""
        fx, fy, cx, cy = self.intrinsics
        X = (np.arange(self.cols) + 0.5 - cx) / fx
        Y = (np.arange(self.rows) + 0.5 - cy) / fy
        R = self.rotation
        D = R[2][None, None] + X[None, :, None] * R[0] + Y[:, None, None] * R[1]
        return self.source_mm + self.sid_mm * D

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Source [3] and unit ray directions [H, W, 3] (float64) through every pixel centre."""
        d = self.pixel_centers_mm() - self.source_mm
        return self.source_mm, d / np.linalg.norm(d, axis=-1, keepdims=True)

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """World points [P, 3] -> detector coordinates [P, 2] as (col, row) in continuous pixels.

        Points at or behind the source plane give NaN.
        """
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        c = (p - self.source_mm) @ self.rotation.T
        fx, fy, cx, cy = self.intrinsics
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(c[:, 2] > 0, c[:, 2], np.nan)
            return np.stack([fx * c[:, 0] / z + cx, fy * c[:, 1] / z + cy], axis=-1)

    def backproject(self, uv: np.ndarray, depth_mm: np.ndarray | float) -> np.ndarray:
        """Detector coordinates [P, 2] (col, row) and depth along the axis -> world points [P, 3]."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        fx, fy, cx, cy = self.intrinsics
        X, Y = (uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy
        D = np.stack([X, Y, np.ones_like(X)], axis=-1) * np.asarray(depth_mm, dtype=np.float64).reshape(-1, 1)
        return self.source_mm + D @ self.rotation

    def packed(self) -> np.ndarray:
        """[17] float64: the layout the kernels read (see csrc/gauss_math.h)."""
        fx, fy, cx, cy = self.intrinsics
        return np.concatenate([self.source_mm, self.rotation.reshape(-1), [fx, fy, cx, cy, self.near_mm]])


def pack_views(views: list[CArmView] | tuple[CArmView, ...], device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pack views into the kernels' layout, [V, 17] (float32 for the kernels, float64 for the twins).

    All views must share one detector size."""
    if len(views) == 0:
        raise ValueError("pack_views: need at least one view")
    sizes = {(v.rows, v.cols) for v in views}
    if len(sizes) != 1:
        raise ValueError(f"all views rendered in one call must share the detector size; got (rows, cols) {sorted(sizes)}")
    return torch.tensor(np.stack([v.packed() for v in views]), dtype=dtype, device=device)


def orbit(n: int, start_deg: float = -60.0, span_deg: float = 120.0, secondary_deg: float = 0.0,
          **kwargs) -> list[CArmView]:
    """n views with primary angles spread over [start, start + span] (a biplane/multi-view set)."""
    if n < 1:
        raise ValueError(f"orbit: n must be >= 1, got {n}")
    step = span_deg / max(n - 1, 1)
    return [CArmView(primary_deg=start_deg + k * step, secondary_deg=secondary_deg, **kwargs) for k in range(n)]


def view_separation_deg(views: list[CArmView] | tuple[CArmView, ...]) -> float:
    """The largest angle (degrees, 0..90) between the projection axes of any two views: 0 for a
    single view, or for views that look along the same line (opposite views see the same depth-free
    projection); depth is observable only when it is well above 0."""
    w = np.array([v.rotation[2] for v in views], float).reshape(-1, 3)
    if len(w) < 2:
        return 0.0
    c = np.clip(np.abs(w @ w.T), 0.0, 1.0)
    return float(np.degrees(np.arccos(c.min())))


def sample_image(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples [P] of a detector image [H, W] at continuous (col, row) coordinates [P, 2], as
    CArmView.project returns them (pixel (r, c) centred at (c + 0.5, r + 0.5)); 0 outside."""
    H, W = img.shape
    x = uv[:, 0] - 0.5
    y = uv[:, 1] - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    out = np.zeros(len(uv), np.float64)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        out[ok] += w[ok] * img[yi[ok], xi[ok]]
    return out
