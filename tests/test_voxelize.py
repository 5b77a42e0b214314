"""The voxelizer: parity with its twin, gradcheck, and direct evaluation of the Gaussian sum."""
import pytest
import torch

from conftest import random_gaussians, rel_err, requires_C
from pinngs.field import six_to_sym
from pinngs.ops import VoxelGrid, _torch_impl as ref, voxelize

GRID = VoxelGrid((-22.0, -21.0, -20.0), (1.1, 1.0, 0.9), (41, 43, 45))


def direct(means, prec, amps, grid):
    """Σ_i a_i exp(-½ dᵀP_i d) at every voxel centre, float64, no bounds."""
    axes = [grid.origin_mm[a] + torch.arange(grid.shape[a], dtype=torch.float64) * grid.spacing_mm[a] for a in range(3)]
    X = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # [X, Y, Z, 3]
    vol = torch.zeros(grid.shape, dtype=torch.float64)
    for m, P, a in zip(means.double(), six_to_sym(prec.double()), amps.double()):
        d = X - m
        vol += a * torch.exp(-0.5 * torch.einsum("...a,ab,...b->...", d, P, d))
    return vol


@requires_C
def test_voxelize_parity_forward_backward(gen):
    means, _, _, cov, prec = random_gaussians(50, gen, spread=18, sigma=(0.5, 4.0), aniso=5)
    amps = torch.rand(50, generator=gen)
    cot = torch.randn(GRID.shape, generator=gen)
    out = []
    for twin in (False, True):
        dt = torch.float64 if twin else torch.float32
        m, P, a = (t.detach().to(dt).requires_grad_() for t in (means, prec, amps))
        if twin:
            vol = ref._voxelize(m, P, cov.to(dt), a, GRID.origin_mm, GRID.spacing_mm, GRID.shape, 5.0)
        else:
            vol = voxelize(m, P, cov, a, GRID)
        (vol * cot.to(dt)).sum().backward()
        out.append((vol.detach(), m.grad, P.grad, a.grad))
    assert rel_err(out[0][0], out[1][0]) <= 1e-5
    for name, g, g_ref in zip(("means", "precis", "amps"), out[0][1:], out[1][1:]):
        assert rel_err(g, g_ref) <= 1e-4, name


@requires_C
def test_voxelize_matches_direct_evaluation(gen):
    means, _, _, cov, prec = random_gaussians(20, gen, spread=15, sigma=(0.5, 3.0))
    amps = torch.rand(20, generator=gen)
    vol = voxelize(means, prec, cov, amps, GRID, sigma_cutoff=5.0)
    # 5σ box drops at most exp(-12.5) = 3.7e-6 of a Gaussian's peak
    assert rel_err(vol, direct(means, prec, amps, GRID)) <= 1e-5


def test_voxelize_gradcheck_twin(gen):
    grid = VoxelGrid((-6.0, -6.0, -6.0), (1.5, 1.5, 1.5), (9, 9, 9))
    means, _, _, cov, prec = random_gaussians(2, gen, spread=3, sigma=(1.0, 2.0), dtype=torch.float64)
    amps = torch.rand(2, generator=gen, dtype=torch.float64)

    def f(m, P, a):
        return ref._voxelize(m, P, cov, a, grid.origin_mm, grid.spacing_mm, grid.shape, 8.0)

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (means, prec, amps)), atol=1e-7)


def test_voxel_grid_validation():
    with pytest.raises(ValueError, match="spacing"):
        VoxelGrid((0, 0, 0), (0.0, 1.0, 1.0), (4, 4, 4))
    g = VoxelGrid.around(torch.tensor([[0.0, 0, 0], [10.0, 5, 2]]), 0.5, 1.0)
    assert g.shape == (25, 15, 9) and g.origin_mm == (-1.0, -1.0, -1.0)
