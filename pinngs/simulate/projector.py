r"""Independent X-ray projector of the simulator: ray-marched line integrals of a voxel μ volume,
and the DSA noise model (``add_noise``).

No inverse crime: synthetic data made with the reconstruction's own rasterizer (``pinngs.ops``,
``pinngs.render``, ``pinngs.field``, ``pinngs._C``) would share its discretisation, approximations and
bugs, so a reconstruction could look perfect for the wrong reason. This module shares **no** code
with it: the phantom is a voxel grid rather than Gaussians, the projector a ray marcher in warp-lang
rather than a splatting kernel; only :class:`pinngs.geometry.CArmView` is shared, by definition.

``project_volume`` computes, for every pixel of every view, p = ∫ μ(source + s·d) ds (d the unit
direction from the source to the pixel centre), one warp thread per pixel:

1. **Field.** μ (mm⁻¹) is sampled at the voxel centres ``origin_mm + index * spacing_mm`` (index
   order (x, y, z), world frame DICOM LPS, mm) and interpolated trilinearly; samples outside the
   array are zero, so the field ramps to zero over the voxel beyond the outermost centres and is
   exactly zero outside the box ``[origin - spacing, origin + n·spacing]``.
2. **Clipping.** The ray is intersected with that box by the slab method, giving [t0, t1].
3. **Marching.** [t0, t1] is cut into ``N = ceil((t1 - t0) / step_mm)`` equal steps and summed by
   the midpoint rule; the field vanishes at both ends, so no end correction is needed.
4. Ray geometry is float64 (a source ~1 m from a 0.02 mm grid is placed without round-off); μ
   samples and the result are float32.

The default step, half the smallest voxel spacing, keeps the midpoint-rule error (O(step²) for a
smooth field; the trilinear field is piecewise cubic along a ray) well below the voxelisation's own
partial-volume error; a smaller step costs time linearly and buys little. One volume per call: the
caller loops over the time frames of a dynamic sequence. Devices: warp's CPU backend or a CUDA GPU
(see ``project_volume``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from pinngs.geometry import CArmView

__all__ = ["project_volume", "add_noise"]

_WARP = {}  # lazily built: {"wp": module, "kernel": Kernel}


def _warp():
    """Import and initialise warp on first use (quietly), and build the kernel once.

    Quiet: ``wp.config.quiet`` (warp < 1.19) and ``log_level`` raised to warnings (warp >= 1.19). On a
    machine without a CUDA driver warp's native library still prints one "Could not find or load the
    NVIDIA CUDA driver" line to stderr at init; that comes from C code (docs/decisions.md, "Projector")."""
    if "kernel" in _WARP:
        return _WARP["wp"], _WARP["kernel"]
    import warp as wp

    wp.config.quiet = True  # warp < 1.19; newer versions read log_level instead
    if hasattr(wp, "LOG_WARNING"):
        wp.config.log_level = max(int(getattr(wp.config, "log_level", 0)), int(wp.LOG_WARNING))
    wp.init()

    @wp.kernel
    def _project_kernel(
        mu: wp.array3d(dtype=wp.float32),
        origin: wp.vec3d,
        spacing: wp.vec3d,
        sources: wp.array(dtype=wp.vec3d),
        dirs: wp.array3d(dtype=wp.vec3d),
        step: wp.float64,
        out: wp.array3d(dtype=wp.float32),
    ):
        v, r, c = wp.tid()
        src = sources[v]
        d = dirs[v, r, c]
        nx = mu.shape[0]
        ny = mu.shape[1]
        nz = mu.shape[2]

        # ray in continuous index coordinates: u(t) = a + t * b, t in mm along the ray
        a = wp.vec3d(
            (src[0] - origin[0]) / spacing[0],
            (src[1] - origin[1]) / spacing[1],
            (src[2] - origin[2]) / spacing[2],
        )
        b = wp.vec3d(d[0] / spacing[0], d[1] / spacing[1], d[2] / spacing[2])
        hi = wp.vec3d(wp.float64(nx), wp.float64(ny), wp.float64(nz))

        # slab method against the support box [-1, n] (zero-padded trilinear field)
        t0 = wp.float64(0.0)  # only in front of the source
        t1 = wp.float64(1.0e30)
        hit = int(1)
        for k in range(3):
            if b[k] != wp.float64(0.0):
                ta = (wp.float64(-1.0) - a[k]) / b[k]
                tb = (hi[k] - a[k]) / b[k]
                t0 = wp.max(t0, wp.min(ta, tb))
                t1 = wp.min(t1, wp.max(ta, tb))
            else:
                if a[k] <= wp.float64(-1.0) or a[k] >= hi[k]:
                    hit = 0

        acc = wp.float64(0.0)
        if hit == 1 and t1 > t0:
            n = int(wp.ceil((t1 - t0) / step - wp.float64(1.0e-6)))  # slack: no extra step from round-off
            if n < 1:
                n = 1
            h = (t1 - t0) / wp.float64(n)
            for i in range(n):
                t = t0 + (wp.float64(i) + wp.float64(0.5)) * h
                ux = a[0] + t * b[0]
                uy = a[1] + t * b[1]
                uz = a[2] + t * b[2]
                fx = wp.floor(ux)
                fy = wp.floor(uy)
                fz = wp.floor(uz)
                ix = int(fx)
                iy = int(fy)
                iz = int(fz)
                wx = ux - fx
                wy = uy - fy
                wz = uz - fz
                s = wp.float64(0.0)
                for cx in range(2):
                    jx = ix + cx
                    if jx >= 0 and jx < nx:
                        ax = wx
                        if cx == 0:
                            ax = wp.float64(1.0) - wx
                        for cy in range(2):
                            jy = iy + cy
                            if jy >= 0 and jy < ny:
                                ay = wy
                                if cy == 0:
                                    ay = wp.float64(1.0) - wy
                                for cz in range(2):
                                    jz = iz + cz
                                    if jz >= 0 and jz < nz:
                                        az = wz
                                        if cz == 0:
                                            az = wp.float64(1.0) - wz
                                        s += ax * ay * az * wp.float64(mu[jx, jy, jz])
                acc += s
            acc = acc * h
        out[v, r, c] = wp.float32(acc)

    _WARP["wp"] = wp
    _WARP["kernel"] = _project_kernel
    return wp, _project_kernel


def _warp_device(wp, device: str):
    device = str(device)
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not wp.is_cuda_available():
            raise RuntimeError(
                f"project_volume: device={device!r} requested but warp finds no CUDA GPU "
                "(no driver or no device); use device='cpu'")
        return device
    raise ValueError(f"project_volume: device must be 'cpu' or 'cuda[:N]', got {device!r}")


def project_volume(mu: np.ndarray, origin_mm, spacing_mm, views: Sequence[CArmView],
                   step_mm: float | None = None, device: str = "cpu") -> np.ndarray:
    """Line integrals ∫ μ ds of a voxel volume through every pixel of every view.

    Args:
        mu: [X, Y, Z] attenuation in mm⁻¹ on a regular grid, array index order (x, y, z) (LPS).
        origin_mm: (3,) world position of the centre of voxel (0, 0, 0), mm.
        spacing_mm: scalar or (3,) voxel spacing per axis, mm.
        views: C-arm views; all must share one detector size (rows, cols).
        step_mm: ray-marching step, mm; default half the smallest voxel spacing. The step actually
            used per ray is the largest step <= step_mm that divides the ray's path through the grid
            box into equal parts.
        device: "cpu" (warp's CPU backend, single-threaded) or "cuda" / "cuda:N" (needs a CUDA GPU;
            RuntimeError when none is available). warp is imported and initialised on the first call.

    Returns:
        [V, H, W] float32 line integrals (dimensionless, μ·mm).
    """
    mu = np.asarray(mu)
    if mu.ndim != 3 or min(mu.shape) < 1:
        raise ValueError(f"project_volume: mu must be a non-empty [X, Y, Z] array, got shape {mu.shape}")
    if not np.all(np.isfinite(mu)):
        raise ValueError("project_volume: mu contains non-finite values")
    origin = np.asarray(origin_mm, dtype=np.float64).reshape(-1)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise ValueError(f"project_volume: origin_mm must be 3 finite values, got {origin_mm!r}")
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64).reshape(-1), (3,)).copy() \
        if np.size(spacing_mm) in (1, 3) else None
    if spacing is None or not np.all(np.isfinite(spacing)) or not np.all(spacing > 0):
        raise ValueError(f"project_volume: spacing_mm must be one or three positive values, got {spacing_mm!r}")
    views = list(views)
    if len(views) == 0:
        raise ValueError("project_volume: need at least one view")
    sizes = {(int(v.rows), int(v.cols)) for v in views}
    if len(sizes) != 1:
        raise ValueError(f"project_volume: all views must share the detector size; got (rows, cols) {sorted(sizes)}")
    H, W = sizes.pop()
    if step_mm is None:
        step_mm = 0.5 * float(spacing.min())
    step_mm = float(step_mm)
    if not (math.isfinite(step_mm) and step_mm > 0):
        raise ValueError(f"project_volume: step_mm must be positive, got {step_mm}")

    wp, kernel = _warp()
    dev = _warp_device(wp, device)

    sources = np.stack([np.asarray(v.source_mm, dtype=np.float64) for v in views])
    dirs = np.stack([v.pixel_rays()[1] for v in views]).astype(np.float64)  # [V, H, W, 3]

    mu_wp = wp.array(np.ascontiguousarray(mu, dtype=np.float32), dtype=wp.float32, device=dev)
    src_wp = wp.array(sources, dtype=wp.vec3d, device=dev)
    dirs_wp = wp.array(np.ascontiguousarray(dirs), dtype=wp.vec3d, device=dev)
    out = wp.zeros((len(views), H, W), dtype=wp.float32, device=dev)
    wp.launch(kernel, dim=(len(views), H, W),
              inputs=[mu_wp, wp.vec3d(*origin), wp.vec3d(*spacing), src_wp, dirs_wp, wp.float64(step_mm)],
              outputs=[out], device=dev)
    return out.numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# noise model
# ---------------------------------------------------------------------------------------------
def _residual_field(rng: np.random.Generator, H: int, W: int, n_terms: int = 4) -> np.ndarray:
    """Smooth random field on an H x W image, max |value| = 1: a sum of low-order 2D cosines
    (spatial frequencies up to 1.5 cycles per image side, random phases and weights)."""
    y = (np.arange(H) + 0.5)[:, None] / H
    x = (np.arange(W) + 0.5)[None, :] / W
    f = np.zeros((H, W))
    for _ in range(n_terms):
        kx, ky = rng.uniform(0.0, 1.5, size=2)
        phase = rng.uniform(0.0, 2 * np.pi)
        f += rng.normal() * np.cos(2 * np.pi * (kx * x + ky * y) + phase)
    peak = np.abs(f).max()
    return f / peak if peak > 0 else f


def add_noise(line_integrals: np.ndarray, rng: np.random.Generator, photons_per_pixel: float = 2e4,
              blur_sigma_px: float = 0.7, residual_amp: float = 0.01) -> np.ndarray:
    """DSA noise model applied to clean line integrals d = ∫ μ ds.

    Per image (the last two axes are H, W; any leading axes are independent frames/views):

    1. Fill (contrast) frame: transmitted photons N_fill ~ Poisson(N0 · exp(-d)), N0 = photons_per_pixel
       (the dose knob).
    2. Mask frame: N_mask ~ Poisson(N0), an independent draw (the background is already subtracted
       from d, so the mask sees exp(0)).
    3. Log subtraction: d_noisy = ln N_mask - ln N_fill, with counts clipped to >= 0.5 so a zero count
       stays finite. Its variance is ≈ (1 + e^d) / N0, i.e. 2 / N0 at d = 0.
    4. Detector blur: Gaussian of ``blur_sigma_px`` pixels (scipy.ndimage.gaussian_filter over the two
       image axes, mode "reflect", which keeps the image sum); 0 disables it.
    5. Subtraction residual (mis-registration / bowel-gas leftovers): a smooth random field made of a
       few low-order 2D cosines, scaled so its peak |value| is ``residual_amp``, drawn independently
       for every image; 0 disables it.

    Deterministic for a given ``rng`` state. Returns float32 of the input's shape.
    """
    from scipy.ndimage import gaussian_filter

    d = np.asarray(line_integrals, dtype=np.float64)
    if d.ndim < 2:
        raise ValueError(f"add_noise: need [..., H, W], got shape {d.shape}")
    if not (photons_per_pixel > 0 and math.isfinite(photons_per_pixel)):
        raise ValueError(f"add_noise: photons_per_pixel must be positive, got {photons_per_pixel}")
    if blur_sigma_px < 0 or residual_amp < 0:
        raise ValueError("add_noise: blur_sigma_px and residual_amp must be >= 0")
    H, W = d.shape[-2:]
    N0 = float(photons_per_pixel)

    n_fill = rng.poisson(N0 * np.exp(-d)).astype(np.float64)
    n_mask = rng.poisson(N0, size=d.shape).astype(np.float64)
    out = np.log(np.maximum(n_mask, 0.5)) - np.log(np.maximum(n_fill, 0.5))

    imgs = out.reshape(-1, H, W)
    if blur_sigma_px > 0:
        for k in range(imgs.shape[0]):
            imgs[k] = gaussian_filter(imgs[k], sigma=blur_sigma_px, mode="reflect")
    if residual_amp > 0:
        for k in range(imgs.shape[0]):
            imgs[k] += residual_amp * _residual_field(rng, H, W)
    return imgs.reshape(d.shape).astype(np.float32)
