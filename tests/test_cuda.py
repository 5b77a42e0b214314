"""CUDA kernels against the CPU kernels and the twins. Skipped cleanly without a GPU."""
import pytest
import torch

from conftest import parity_scenes, random_gaussians, rel_err, requires_cuda
from pinngs.geometry import pack_views
from pinngs.ops import VoxelGrid, bin_tiles, project_gaussians, rasterize, voxelize

pytestmark = [pytest.mark.cuda, requires_cuda]


@pytest.mark.parametrize("scene", list(parity_scenes()))
def test_cuda_rasterizer_matches_cpu(scene, gen):
    views, kw = parity_scenes()[scene]
    means, _, _, _, prec = random_gaussians(200, gen, **kw)
    atten = torch.rand(len(views), 200, generator=gen)
    cot = torch.randn(len(views), views[0].rows, views[0].cols, generator=gen)
    H, W = views[0].rows, views[0].cols
    res = []
    for dev in ("cpu", "cuda"):
        m, P, a = (t.to(dev).requires_grad_() for t in (means, prec, atten))
        pv = pack_views(views, device=dev)
        p, r = project_gaussians(pv, m, P, W, H)
        img = rasterize(pv, p, a, r, W, H)
        (img * cot.to(dev)).sum().backward()
        off, ids = bin_tiles(r, W, H)
        res.append([x.detach().cpu() for x in (img, m.grad, P.grad, a.grad, r, off, ids)])
    cpu, gpu = res
    assert torch.equal(cpu[4], gpu[4]) and torch.equal(cpu[5], gpu[5]) and torch.equal(cpu[6], gpu[6])
    assert rel_err(gpu[0], cpu[0]) <= 1e-5
    for g, c in zip(gpu[1:4], cpu[1:4]):
        assert rel_err(g, c) <= 1e-4


def test_cuda_voxelizer_matches_cpu(gen):
    grid = VoxelGrid((-20.0, -20.0, -20.0), (1.0, 1.0, 1.0), (40, 41, 42))
    means, _, _, cov, prec = random_gaussians(100, gen, spread=15)
    amps = torch.rand(100, generator=gen)
    cot = torch.randn(grid.shape, generator=gen)
    res = []
    for dev in ("cpu", "cuda"):
        m, P, a = (t.to(dev).requires_grad_() for t in (means, prec, amps))
        vol = voxelize(m, P, cov.to(dev), a, grid)
        (vol * cot.to(dev)).sum().backward()
        res.append([x.detach().cpu() for x in (vol, m.grad, P.grad, a.grad)])
    for g, c in zip(res[1], res[0]):
        assert rel_err(g, c) <= 1e-4
