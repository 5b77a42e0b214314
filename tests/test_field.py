import pytest
import torch

from pinngs.field import GaussianField, covar_and_precision, quat_to_rotmat, six_to_sym
from pinngs.render import RenderSettings, render_views, voxelize_field
from pinngs.geometry import orbit
from pinngs.ops import VoxelGrid
from pinngs.scenes import random_vessel_cloud, vessel_tree


def test_activations_round_trip_and_stay_valid():
    means = torch.zeros(3, 3)
    scales = torch.tensor([[0.5, 1.0, 2.0]] * 3)
    atten = torch.tensor([1e-4, 0.02, 5.0])
    f = GaussianField(means, scales, torch.randn(3, 4), atten)
    torch.testing.assert_close(f.scales, scales)
    torch.testing.assert_close(f.attenuation, atten, rtol=1e-4, atol=1e-7)
    with torch.no_grad():  # any raw values stay valid
        f.log_scales.fill_(-50.0)
        f.raw_atten.fill_(-50.0)
    assert (f.scales > 0).all() and (f.attenuation >= 0).all()


def test_covariance_times_precision_is_identity():
    q, s = torch.randn(10, 4, dtype=torch.float64), torch.rand(10, 3, dtype=torch.float64) + 0.1
    cov, prec = covar_and_precision(q, s)
    eye = six_to_sym(cov) @ six_to_sym(prec)
    torch.testing.assert_close(eye, torch.eye(3, dtype=torch.float64).expand(10, 3, 3))
    R = quat_to_rotmat(q)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(10, 3, 3))


@pytest.mark.parametrize("bad, match", [
    (dict(scales_mm=-torch.ones(2, 3)), "strictly positive"),
    (dict(means_mm=torch.zeros(2, 2)), r"\[N, 3\]"),
    (dict(atten_per_mm=torch.tensor([0.1, float("nan")])), "strictly positive|NaN"),
    (dict(quats=torch.zeros(2, 4)), "non-zero"),
])
def test_field_rejects_bad_input(bad, match):
    kw = dict(means_mm=torch.zeros(2, 3), scales_mm=torch.ones(2, 3))
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        GaussianField(**kw)


def test_render_views_and_voxelize_field_on_builtin_scene():
    f = vessel_tree(600)
    views = orbit(3, rows=64, cols=64, pixel_spacing_mm=(2.0, 2.0))
    img = render_views(f, views)
    assert img.shape == (3, 64, 64) and img.max() > 0
    # gradients reach every parameter of the field
    img.sum().backward()
    for p in f.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    vol = voxelize_field(f, VoxelGrid.around(f.means, 2.0, 5.0))
    assert vol.max() > 0
    with pytest.raises(ValueError, match="sigma_cutoff"):
        RenderSettings(sigma_cutoff=0.5)
    assert len(random_vessel_cloud(1000)) == 1000
