import numpy as np
import pytest
import torch

from pinngs.backend import get_C, has_cuda_kernels
from pinngs.field import covar_and_precision
from pinngs.geometry import CArmView

requires_C = pytest.mark.skipif(get_C() is None, reason="pinngs._C not built")
requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_cuda_kernels()), reason="no CUDA GPU or pinngs._C built without CUDA"
)


def random_gaussians(n, gen, spread=20.0, sigma=(0.3, 3.0), aniso=4.0, dtype=torch.float32):
    """means [n,3], quats [n,4], scales [n,3], cov [n,6], prec [n,6]."""
    means = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 2 * spread
    s = sigma[0] + (sigma[1] - sigma[0]) * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    scales = s * (1 + (aniso - 1) * torch.rand(n, 3, generator=gen, dtype=torch.float64))
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    cov, prec = covar_and_precision(quats, scales)
    return [t.to(dtype) for t in (means, quats, scales, cov, prec)]


def rel_err(x, ref):
    """max |x - ref| / max |ref|: peak-normalised error, the metric quoted throughout."""
    x, ref = x.double(), ref.double()
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# scenes used by the parity tests: (name, views, gaussian kwargs)
def parity_scenes():
    return {
        "standard": ([CArmView(a, b, rows=48, cols=64, pixel_spacing_mm=(1.2, 1.0)) for a, b in
                      [(0, 0), (35, 20), (-90, 0)]], dict()),
        # short SID, large detector: ±35° cone half-angle
        "wide_cone": ([CArmView(a, -25, sid_mm=400, sod_mm=250, rows=64, cols=64, pixel_spacing_mm=(8.0, 8.0))
                       for a in (-40, 10)], dict(spread=40)),
        "large_anisotropic": ([CArmView(a, 15, rows=48, cols=48, pixel_spacing_mm=(2.0, 2.0)) for a in (0, 60)],
                              dict(sigma=(2.0, 12.0), aniso=10.0)),
        # principal point shifted so the Gaussians sit far off-axis and across the detector edge
        "off_axis_edge": ([CArmView(20, 0, rows=40, cols=56, pixel_spacing_mm=(1.0, 1.0),
                                    principal_offset_mm=(-30.0, 20.0))], dict(spread=35)),
    }


def stenosed_tube(severity: float = 0.5):
    """The small stenosed tube of the fit, evaluation and sweep tests: radius 1.2 mm, 14 mm long, a
    cosine stenosis of ``severity`` (fraction of the diameter) 4 mm long at its middle."""
    from pinngs.simulate.phantoms import straight_vessel

    return straight_vessel("t", radius_mm=1.2, length_mm=14.0, severity=severity, stenosis_length_mm=4.0)


def advected_tube(radius_mm: float, q_mm3_s: float, length_mm: float, h_mm: float = 0.15):
    """A Poiseuille tube along a tilted axis with an exactly advected bolus (c = c_in(t − z/u(r))), the
    phantom of the online, transit and reconstruct-flow tests. Returns (grid origin [3], spacing h,
    inside [X, Y, Z] bool, arrival time tau [X, Y, Z] (inf outside), centerline [301, 4] X, Y, Z, R)."""
    import math

    axis = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
    start = -0.5 * length_mm * axis
    lo = np.minimum(start, -start) - radius_mm - 0.5
    hi = np.maximum(start, -start) + radius_mm + 0.5
    shape = tuple(np.ceil((hi - lo) / h_mm).astype(int) + 1)
    X = np.stack(np.meshgrid(*[lo[k] + h_mm * np.arange(shape[k]) for k in range(3)], indexing="ij"), -1)
    v = X - start
    z = v @ axis
    r = np.linalg.norm(v - z[..., None] * axis, axis=-1)
    inside = (r < radius_mm) & (z > 0) & (z < length_mm)
    u = 2 * q_mm3_s / (math.pi * radius_mm ** 2) * (1 - (r / radius_mm) ** 2)
    tau = np.where(inside, z / np.maximum(u, 1e-6), np.inf)
    cl = np.column_stack([start + np.linspace(0, length_mm, 301)[:, None] * axis, np.full(301, radius_mm)])
    return lo, h_mm, inside, tau, cl


def tube_cine_study(radius_mm=1.2, q_mm3_s=300.0, length_mm=20.0, h_mm=0.15, n_t=22, px=96, noise=0.003,
                    bolus=(0.1, 3.0, 0.2)):
    """Biplane cine (2 × n_t frames, px², 15 fps) of ``advected_tube``, projected by the simulator's ray
    marcher (not the rasterizer), small Gaussian noise. Returns (study, truth occupancy, grid origin)."""
    from pinngs.io.study import Frame, Study
    from pinngs.laws import gamma_variate
    from pinngs.simulate.projector import project_volume

    lo, h, inside, tau, _ = advected_tube(radius_mm, q_mm3_s, length_mm, h_mm)
    views = [CArmView(a, b, rows=px, cols=px, pixel_spacing_mm=(0.45, 0.45)) for a, b in ((-30, 10), (60, -5))]
    rng = np.random.default_rng(0)
    frames = []
    t0, alpha, beta = bolus
    for t in np.arange(n_t) / 15.0:
        mu = (0.06 * gamma_variate(t - tau, t0, alpha, beta)).astype(np.float32)
        for vi, img in enumerate(project_volume(mu, lo, h, views)):
            frames.append(Frame((img + noise * rng.standard_normal(img.shape)).astype(np.float32), vi, float(t)))
    return Study(views, frames, "biplane", "line_integral"), inside.astype(np.float32), lo


@pytest.fixture(scope="session")
def tube_cine():
    """``tube_cine_study()`` once per test session: the online and the reconstruct tests share it. On
    a machine without the simulator's warp-lang (the GPU machine), ``PINNGS_TUBE_CINE`` names the
    same study packed by ``benchmarks/gpu/pack.py``."""
    import json
    import os

    packed = os.environ.get("PINNGS_TUBE_CINE")
    if packed:
        from pinngs.io.study import Frame, Study

        z = np.load(packed)
        views = [CArmView(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if not k.startswith("_")})
                 for d in json.loads(str(z["views"]))]
        frames = [Frame(img, int(v), float(t)) for img, v, t in zip(z["frames"], z["view"], z["t_s"])]
        return Study(views, frames, "biplane", "line_integral"), z["occ"], z["lo"]
    return tube_cine_study()


def stenosed_tube_sweep(n=24, px=96, h=0.15):
    """A rotational sweep of a static, fully opacified 50 % stenosed tube (radius 1.2 mm, 14 mm long):
    n views over 180° of primary angle (secondary 5°), projected by the simulator's ray marcher (not
    the rasterizer). Returns (views, noise-free line integrals [n, px, px], occupancy, grid origin)."""
    import numpy as np

    from pinngs.simulate.projector import project_volume

    ph = stenosed_tube(0.5)
    lo, shape = ph.grid(h)
    occ = ph.occupancy(lo, h, shape)
    sp = round(20.0 * 1.5 / px, 4)  # 20 mm field of view at the isocentre
    views = [CArmView(-90.0 + 180.0 * k / (n - 1), 5.0, sid_mm=1200.0, sod_mm=800.0, rows=px, cols=px,
                      pixel_spacing_mm=(sp, sp)) for k in range(n)]
    return views, project_volume((0.06 * occ).astype(np.float32), lo, (h,) * 3, views), occ, lo
