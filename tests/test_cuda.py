"""CUDA against the CPU: the kernels, a few batch fit steps, the online fitter's add_frame and the
PINN's jet and residuals. Skipped cleanly without a GPU (``pytest -m cuda`` selects these).

Each tensor is detached and cloned before it moves to the GPU: the CPU pass has made the inputs leaves
with gradients, and ``.to("cuda")`` of such a leaf is a non-leaf whose ``.grad`` stays None."""
import dataclasses

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
        m, P, a = (t.detach().clone().to(dev).requires_grad_() for t in (means, prec, atten))
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
        m, P, a = (t.detach().clone().to(dev).requires_grad_() for t in (means, prec, amps))
        vol = voxelize(m, P, cov.to(dev), a, grid)
        (vol * cot.to(dev)).sum().backward()
        res.append([x.detach().cpu() for x in (vol, m.grad, P.grad, a.grad)])
    for g, c in zip(res[1], res[0]):
        assert rel_err(g, c) <= 1e-4


def test_batch_fit_steps_on_cuda_equal_cpu(tube_cine):
    """A few steps of the batch fit (the same seed, the same frames) on both devices: the fitted field
    and lumen agree to float32 round-off accumulated over the steps."""
    from pinngs.fit.batch import FitConfig, fit_study

    study = tube_cine[0]
    cfg = FitConfig(iters=20, densify_every=10, densify_until=15, threads=1)
    a = fit_study(study, cfg, progress=False)
    b = fit_study(study, dataclasses.replace(cfg, device="cuda"), progress=False)
    assert b.field.means.device.type == "cpu" and len(a.field) == len(b.field)
    assert rel_err(b.field.means, a.field.means) < 1e-3
    assert rel_err(b.field.attenuation, a.field.attenuation) < 1e-2
    d = 2 * ((a.occupancy > 0.5) & (b.occupancy > 0.5)).sum() / ((a.occupancy > 0.5).sum() + (b.occupancy > 0.5).sum())
    assert d > 0.99


def test_online_add_frame_on_cuda(tube_cine):
    from pinngs.fit.online import OnlineConfig, OnlineFitter

    study = tube_cine[0]
    cfgs = [OnlineConfig(latency_budget_s=30.0, min_steps=4, max_steps=4, device=dev) for dev in ("cpu", "cuda")]
    fits = [OnlineFitter(c) for c in cfgs]
    for fr in study.frames:
        reps = [f.add_frame(fr.image, study.views[fr.view], fr.t_s) for f in fits]
        assert reps[0].accepted == reps[1].accepted and reps[0].steps == reps[1].steps
    assert fits[1].field.means.device.type == "cuda" and fits[1].images[0].device.type == "cuda"
    assert rel_err(fits[1].field.means.cpu(), fits[0].field.means) < 1e-2
    e = fits[1].estimate()
    assert e.status == "ok", e.status


def test_pinn_jet_and_residuals_on_cuda_equal_cpu():
    from pinngs.pinn.forward import JetMLP, ns_residuals

    net = JetMLP(3, 4, width=64, depth=4, fourier=16, seed=1)
    x = torch.randn(512, 3)
    cpu = net.jet(x)
    gpu = [t.cpu() for t in net.to("cuda").jet(x.to("cuda"))]
    for a, b in zip(cpu, gpu):
        assert rel_err(b, a) < 1e-4
    mc, sc = ns_residuals(*cpu, 50.0)
    mg, sg = ns_residuals(*gpu, 50.0)
    assert rel_err(mg, mc) < 1e-4 and rel_err(sg, sc) < 1e-4
