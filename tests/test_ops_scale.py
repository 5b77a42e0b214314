"""Large-scale checks, outside the default suite (`make test-slow`)."""
import resource

import pytest
import torch

from conftest import requires_C
from pinngs.geometry import orbit, pack_views
from pinngs.ops import project_gaussians, rasterize
from pinngs.scenes import random_vessel_cloud


@pytest.mark.slow
@requires_C
def test_memory_grows_with_n_plus_vhw_not_their_product():
    """N = 1e5, 4 views of 512²: a dense [N, V, H, W] float32 tensor would be 400 GB."""
    f = random_vessel_cloud(100_000)
    views = orbit(4, rows=512, cols=512, pixel_spacing_mm=(0.3, 0.3))
    pv = pack_views(views)
    _, prec = f.covar_and_precision()
    m, P = f.means.detach().clone().requires_grad_(), prec.detach().clone().requires_grad_()
    a = f.attenuation.detach().expand(4, -1).contiguous().requires_grad_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params, rects = project_gaussians(pv, m, P, 512, 512)
    img = rasterize(pv, params, a, rects, 512, 512)
    img.sum().backward()
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert torch.isfinite(img).all() and img.max() > 0 and torch.isfinite(m.grad).all()
    assert grew < 1024, f"peak RSS grew by {grew:.0f} MiB"
