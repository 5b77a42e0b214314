"""Pure-torch twins of every kernel in csrc/: slow, dense and obviously right. They are the oracle in
tests and the fallback when pinngs._C is not built. Each has the name of its op with a leading `_`.

Two levels of reference:
  * ``_project``, ``_bin``, ``_rasterize``, ``_voxelize`` follow the kernels' decomposition
    (same per-(view, Gaussian) parameters, same inclusion rectangles), so the fast ops must match
    them to rounding;
  * ``_render_reference`` evaluates DESIGN.md §3 literally in world coordinates, with no
    re-parametrisation and no bounds. Run it in float64: it is the closed form.
"""
from __future__ import annotations

import math

import torch

from ..field import six_to_sym

TILE = 16  # keep in sync with csrc/config.h
SQRT_2PI = math.sqrt(2 * math.pi)


def _unpack_views(views: torch.Tensor):  # [V, 17]
    o, R = views[:, 0:3], views[:, 3:12].reshape(-1, 3, 3)
    fx, fy, cx, cy, near = views[:, 12:17].unbind(-1)
    return o, R, fx, fy, cx, cy, near


def _project(views: torch.Tensor,  # [V, 17]
             means: torch.Tensor,  # [N, 3]
             precis: torch.Tensor,  # [N, 6]
             W: int, H: int, sigma_cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-> params [V, N, 11] (stored layout, csrc/gauss_math.h), rects [V, N, 4] int32 (x0, y0, x1, y1)."""
    o, R, fx, fy, cx, cy, near = _unpack_views(views)
    fx, fy, cx, cy, near = (t[:, None] for t in (fx, fy, cx, cy, near))
    mc = torch.einsum("vab,vnb->vna", R, means[None] - o[:, None])  # [V, N, 3]
    Pc = R[:, None] @ six_to_sym(precis)[None] @ R.transpose(-1, -2)[:, None]  # [V, N, 3, 3]
    q = (Pc @ mc.unsqueeze(-1)).squeeze(-1)
    x, y, z = mc.unbind(-1)
    valid = z > near
    zz = torch.where(valid, z, torch.ones_like(z))
    raw = torch.stack([
        fx * x / zz + cx, fy * y / zz + cy,
        zz * zz * Pc[..., 0, 0] / (fx * fx), zz * zz * Pc[..., 0, 1] / (fx * fy), zz * zz * Pc[..., 1, 1] / (fy * fy),
        zz * q[..., 0] / fx, zz * q[..., 1] / fy,
        (mc * q).sum(-1),
        zz * SQRT_2PI,
    ], dim=-1)
    raw = torch.where(valid[..., None], raw, torch.zeros_like(raw))
    with torch.no_grad():
        rects = _bounds(raw.detach().double(), sigma_cutoff, W, H)
    return _condition(raw), rects


def _condition(raw: torch.Tensor) -> torch.Tensor:  # [..., 9] -> [..., 11], twin of condition()
    u0, v0, ca, cb, cc, lx, ly, C, zs = raw.unbind(-1)
    ok = (zs > 0) & (C > 0)
    C = torch.where(ok, C, torch.ones_like(C))
    tiny = torch.finfo(raw.dtype).tiny
    m00, m01, m11 = ca - lx * lx / C, cb - lx * ly / C, cc - ly * ly / C
    l00 = m00.clamp_min(tiny).sqrt()
    l10 = m01 / l00
    l11 = (m11 - l10 * l10).clamp_min(tiny).sqrt()
    p = torch.stack([u0, v0, l00, l10, l11, lx / C, ly / C, ca / C, cb / C, cc / C, zs / C.sqrt()], -1)
    return torch.where(ok[..., None], p, torch.zeros_like(p))


def _bounds(p: torch.Tensor, k: float, W: int, H: int) -> torch.Tensor:
    """Twin of bound_one (csrc/gauss_math.h): pixel rectangle of the exact image of the k-sigma ellipsoid."""
    C, k2 = p[..., 7], k * k
    m00 = (C - k2) * p[..., 2] - p[..., 5] ** 2
    m01 = (C - k2) * p[..., 3] - p[..., 5] * p[..., 6]
    m11 = (C - k2) * p[..., 4] - p[..., 6] ** 2
    det = m00 * m11 - m01 * m01
    bounded = (C > k2) & (m00 > 0) & (det > 0)
    sdet = torch.where(bounded, det, torch.ones_like(det))
    i00, i01, i11 = m11 / sdet, -m01 / sdet, m00 / sdet
    bx, by = k2 * p[..., 5], k2 * p[..., 6]
    cxo, cyo = i00 * bx + i01 * by, i01 * bx + i11 * by
    Rr = k2 * C + bx * cxo + by * cyo
    ex, ey = (Rr * i00).clamp_min(0).sqrt(), (Rr * i11).clamp_min(0).sqrt()
    xmin = torch.where(bounded, p[..., 0] + cxo - ex, torch.zeros_like(C))
    xmax = torch.where(bounded, p[..., 0] + cxo + ex, torch.full_like(C, W))
    ymin = torch.where(bounded, p[..., 1] + cyo - ey, torch.zeros_like(C))
    ymax = torch.where(bounded, p[..., 1] + cyo + ey, torch.full_like(C, H))
    eps = 1e-6
    x0 = torch.ceil(xmin - 0.5 - eps).clamp_min(0)
    x1 = (torch.floor(xmax - 0.5 + eps) + 1).clamp_max(W)
    y0 = torch.ceil(ymin - 0.5 - eps).clamp_min(0)
    y1 = (torch.floor(ymax - 0.5 + eps) + 1).clamp_max(H)
    rect = torch.stack([x0, y0, x1, y1], dim=-1)
    empty = (x1 <= x0) | (y1 <= y0) | (p[..., 8] <= 0)
    rect = torch.where(empty[..., None], torch.zeros_like(rect), rect)
    return rect.to(torch.int32)


def _bin(rects: torch.Tensor, W: int, H: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rects [V, N, 4] -> (offsets [V*T + 1] int64, ids [M] int32), ids ascending within each tile."""
    V, N, _ = rects.shape
    TX, TY = -(-W // TILE), -(-H // TILE)
    T = TX * TY
    lists: list[list[int]] = [[] for _ in range(V * T)]
    r = rects.tolist()
    for v in range(V):
        for i in range(N):
            x0, y0, x1, y1 = r[v][i]
            if x1 <= x0 or y1 <= y0:
                continue
            for ty in range(y0 // TILE, (y1 - 1) // TILE + 1):
                for tx in range(x0 // TILE, (x1 - 1) // TILE + 1):
                    lists[v * T + ty * TX + tx].append(i)
    counts = torch.tensor([len(lst) for lst in lists], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    ids = torch.tensor([i for lst in lists for i in lst], dtype=torch.int32)
    return offsets.to(rects.device), ids.to(rects.device)


def _pixel_L(views: torch.Tensor, W: int, H: int, dtype, device) -> torch.Tensor:  # [V, H, W]
    _, _, fx, fy, cx, cy, _ = _unpack_views(views.to(dtype))
    px = torch.arange(W, dtype=dtype, device=device) + 0.5
    py = torch.arange(H, dtype=dtype, device=device) + 0.5
    X = (px[None, None, :] - cx[:, None, None]) / fx[:, None, None]
    Y = (py[None, :, None] - cy[:, None, None]) / fy[:, None, None]
    return torch.sqrt(1 + X * X + Y * Y)


def _rasterize_chunk(px, py, xs, ys, p, a, r):  # p [n, 11], a [n], r [n, 4] -> [H, W]
    """Every pixel against n Gaussians, masked to their rectangles: the formula of gauss_math.h."""
    dx = px[None, None, :] - p[:, 0, None, None]
    dy = py[None, :, None] - p[:, 1, None, None]
    l00, l10, l11, kx, ky, e00, e01, e11, zc = (p[:, k, None, None] for k in range(2, 11))
    rho = 1 + 2 * (kx * dx + ky * dy) + e00 * dx * dx + 2 * e01 * dx * dy + e11 * dy * dy
    E = ((l00 * dx + l10 * dy) ** 2 + (l11 * dy) ** 2) / rho
    inside = ((xs[None, None, :] >= r[:, 0, None, None]) & (xs[None, None, :] < r[:, 2, None, None])
              & (ys[None, :, None] >= r[:, 1, None, None]) & (ys[None, :, None] < r[:, 3, None, None]))
    val = (zc * a[:, None, None]) * torch.rsqrt(rho) * torch.exp(-0.5 * E)
    return torch.where(inside, val, torch.zeros_like(val)).sum(0)


class _ChunkedRasterize(torch.autograd.Function):
    """Sum of _rasterize_chunk over Gaussian chunks. Forward keeps no graph; backward recomputes
    one chunk at a time and pulls the cotangent through it, so memory stays O(chunk·H·W)."""

    @staticmethod
    def forward(ctx, params, atten, rects, W, H, chunk):
        ctx.save_for_backward(params, atten, rects)
        ctx.W, ctx.H, ctx.chunk = W, H, chunk
        return _rasterize_sum(params, atten, rects, W, H, chunk, None)[0]

    @staticmethod
    def backward(ctx, v_img):
        params, atten, rects = ctx.saved_tensors
        _, gp, ga = _rasterize_sum(params, atten, rects, ctx.W, ctx.H, ctx.chunk, v_img)
        return gp, ga, None, None, None, None


def _rasterize_sum(params, atten, rects, W, H, chunk, v_img):
    V, N, _ = params.shape
    dtype, dev = params.dtype, params.device
    px = torch.arange(W, dtype=dtype, device=dev) + 0.5
    py = torch.arange(H, dtype=dtype, device=dev) + 0.5
    xs, ys = torch.arange(W, device=dev), torch.arange(H, device=dev)
    out = torch.zeros(V, H, W, dtype=dtype, device=dev)
    gp, ga = torch.zeros_like(params), torch.zeros_like(atten)
    for v in range(V):
        for s in range(0, N, chunk):
            p, a, r = params[v, s:s + chunk], atten[v, s:s + chunk], rects[v, s:s + chunk]
            if v_img is None:
                out[v] += _rasterize_chunk(px, py, xs, ys, p, a, r)
                continue
            with torch.enable_grad():
                p, a = p.detach().requires_grad_(), a.detach().requires_grad_()
                img = _rasterize_chunk(px, py, xs, ys, p, a, r)
                g = torch.autograd.grad(img, (p, a), v_img[v])
            gp[v, s:s + chunk], ga[v, s:s + chunk] = g
    return out, gp, ga


def _rasterize(views: torch.Tensor,  # [V, 17]
               params: torch.Tensor,  # [V, N, 11]
               atten: torch.Tensor,  # [V, N]
               rects: torch.Tensor,  # [V, N, 4]
               W: int, H: int, chunk: int = 64) -> torch.Tensor:
    """Dense twin of the rasterizer: every pixel-Gaussian pair, masked to the same rectangles.
    Double-differentiable when run without chunking concerns (gradcheck uses it directly)."""
    L = _pixel_L(views, W, H, params.dtype, params.device)
    if torch.is_grad_enabled() and (params.requires_grad or atten.requires_grad) and params.shape[1] > chunk:
        return _ChunkedRasterize.apply(params, atten, rects, W, H, chunk) * L
    dtype, dev = params.dtype, params.device
    px = torch.arange(W, dtype=dtype, device=dev) + 0.5
    py = torch.arange(H, dtype=dtype, device=dev) + 0.5
    xs, ys = torch.arange(W, device=dev), torch.arange(H, device=dev)
    if torch.is_grad_enabled() and (params.requires_grad or atten.requires_grad):  # small: plain autograd
        return torch.stack([_rasterize_chunk(px, py, xs, ys, params[v], atten[v], rects[v])
                            for v in range(params.shape[0])]) * L
    return _rasterize_sum(params, atten, rects, W, H, chunk, None)[0] * L


def _vox_boxes(means, covars, origin, spacing, shape, k):
    ext = k * torch.stack([covars[:, 0], covars[:, 3], covars[:, 5]], -1).clamp_min(0).sqrt()
    o = torch.tensor(origin, dtype=means.dtype, device=means.device)
    s = torch.tensor(spacing, dtype=means.dtype, device=means.device)
    n = torch.tensor(shape, dtype=means.dtype, device=means.device)
    lo = torch.ceil((means - ext - o) / s - 1e-6).clamp_min(0)
    hi = torch.minimum(torch.floor((means + ext - o) / s + 1e-6) + 1, n)
    return lo, hi


def _voxelize(means: torch.Tensor,  # [N, 3]
              precis: torch.Tensor,  # [N, 6]
              covars: torch.Tensor,  # [N, 6]
              amps: torch.Tensor,  # [N]
              origin, spacing, shape, sigma_cutoff: float, chunk: int = 64) -> torch.Tensor:
    """Dense twin of the voxelizer, masked to the same k-sigma boxes. -> [X, Y, Z]."""
    dtype, dev = means.dtype, means.device
    axes = [torch.arange(n, device=dev) for n in shape]
    coords = [origin[a] + axes[a].to(dtype) * spacing[a] for a in range(3)]
    with torch.no_grad():
        lo, hi = _vox_boxes(means.detach(), covars.detach(), origin, spacing, shape, sigma_cutoff)
    vol = torch.zeros(*shape, dtype=dtype, device=dev)
    for s in range(0, means.shape[0], chunk):
        m, P, a = means[s:s + chunk], precis[s:s + chunk], amps[s:s + chunk]
        d = [coords[k][None, :] - m[:, k, None] for k in range(3)]  # [n, X], [n, Y], [n, Z]
        dx, dy, dz = d[0][:, :, None, None], d[1][:, None, :, None], d[2][:, None, None, :]
        E = (P[:, 0, None, None, None] * dx * dx + P[:, 3, None, None, None] * dy * dy
             + P[:, 5, None, None, None] * dz * dz
             + 2 * (P[:, 1, None, None, None] * dx * dy + P[:, 2, None, None, None] * dx * dz
                    + P[:, 4, None, None, None] * dy * dz))
        inside = torch.ones_like(E, dtype=torch.bool)
        for k, ax in enumerate(axes):
            shp = [-1, 1, 1, 1]
            shp[k + 1] = ax.numel()
            sel = (ax[None] >= lo[s:s + chunk, k, None]) & (ax[None] < hi[s:s + chunk, k, None])
            inside = inside & sel.reshape(shp[0], *shp[1:])
        val = a[:, None, None, None] * torch.exp(-0.5 * E)
        vol = vol + torch.where(inside, val, torch.zeros_like(val)).sum(0)
    return vol


def _render_reference(source_mm: torch.Tensor,  # [V, 3]
                      rays: torch.Tensor,  # [V, H, W, 3] unit directions
                      means: torch.Tensor,  # [N, 3]
                      precis: torch.Tensor,  # [N, 6]
                      atten: torch.Tensor,  # [V, N]
                      ) -> torch.Tensor:
    """DESIGN.md §3 taken literally, no bounds: Σ_i a_i sqrt(2π/A) exp(-½(C - B²/A)). -> [V, H, W]."""
    P = six_to_sym(precis)  # [N, 3, 3]
    delta = source_mm[:, None, :] - means[None]  # [V, N, 3]
    q = torch.einsum("nab,vnb->vna", P, delta)
    C = (delta * q).sum(-1)  # [V, N]
    A = torch.einsum("vhwa,nab,vhwb->vhwn", rays, P, rays)
    B = torch.einsum("vhwa,vna->vhwn", rays, q)
    val = atten[:, None, None, :] * torch.sqrt(2 * math.pi / A) * torch.exp(-0.5 * (C[:, None, None, :] - B * B / A))
    return val.sum(-1)
