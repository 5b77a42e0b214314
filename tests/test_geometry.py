"""C-arm conventions pinned on poses whose answer is known by hand (DICOM XA, LPS world)."""
import numpy as np
import pytest
import torch

from pinngs.geometry import CArmView, orbit, pack_views

L, P, S = np.eye(3)  # LPS unit axes: patient left, posterior, superior (head)


def axes(view):
    u, v, w = view.rotation
    return u, v, w


def test_ap_view():
    v = CArmView(0, 0, sid_mm=1200, sod_mm=800)
    u, r, w = axes(v)
    # detector above the chest, source below the table
    np.testing.assert_allclose(v.source_mm, 800 * P, atol=1e-12)
    np.testing.assert_allclose(w, -P, atol=1e-12)  # beam runs posterior -> anterior
    np.testing.assert_allclose(u, L, atol=1e-12)  # columns run to the patient's left
    np.testing.assert_allclose(r, -S, atol=1e-12)  # rows run to the feet (head up)
    np.testing.assert_allclose(v.detector_center_mm, -400 * P, atol=1e-12)


def test_lao90_puts_detector_on_patient_left():
    v = CArmView(90, 0)
    np.testing.assert_allclose(v.source_mm, -v.sod_mm * L, atol=1e-9)
    np.testing.assert_allclose(v.rotation[2], L, atol=1e-12)
    np.testing.assert_allclose(v.rotation[1], -S, atol=1e-12)


def test_rao90_puts_detector_on_patient_right():
    v = CArmView(-90, 0)
    np.testing.assert_allclose(v.rotation[2], -L, atol=1e-12)
    np.testing.assert_allclose(v.source_mm, v.sod_mm * L, atol=1e-9)


def test_cra30_tilts_detector_towards_head():
    v = CArmView(0, 30)
    det_dir = v.detector_center_mm / np.linalg.norm(v.detector_center_mm)
    np.testing.assert_allclose(det_dir, [0, -np.cos(np.pi / 6), np.sin(np.pi / 6)], atol=1e-12)
    # a point on the head side projects towards the top of the image (smaller row)
    top, bottom = v.project(np.array([[0, 0, 20.0], [0, 0, -20.0]]))
    assert top[1] < bottom[1]


def test_cau_is_negative_secondary():
    v = CArmView(0, -40)
    assert v.detector_center_mm[2] < 0  # detector towards the feet


def test_lao_cra_combination_matches_dicom_formula():
    a, b = np.radians(37.0), np.radians(-22.0)
    v = CArmView(37.0, -22.0)
    n = np.array([np.sin(a) * np.cos(b), -np.cos(a) * np.cos(b), np.sin(b)])
    np.testing.assert_allclose(v.rotation[2], n, atol=1e-12)
    np.testing.assert_allclose(v.rotation @ v.rotation.T, np.eye(3), atol=1e-12)
    # the image is seen from the detector (DICOM Patient Orientation L\F at AP), so the pixel frame
    # (u, v, w) is left-handed
    assert np.linalg.det(v.rotation) == pytest.approx(-1.0)


def test_isocentre_projects_to_principal_point_and_magnification():
    v = CArmView(25, 10, sid_mm=1100, sod_mm=750, rows=200, cols=300, pixel_spacing_mm=(0.5, 0.4),
                 principal_offset_mm=(3.0, -2.0))
    fx, fy, cx, cy = v.intrinsics
    np.testing.assert_allclose(v.project(np.zeros((1, 3)))[0], [cx, cy], atol=1e-9)
    assert cx == pytest.approx(150 + 3.0 / 0.4) and cy == pytest.approx(100 - 2.0 / 0.5)
    # 10 mm along u at the isocentre spans 10 * SID/SOD mm on the detector
    p = v.project(10 * v.rotation[0][None])[0]
    assert p[0] - cx == pytest.approx(10 * 1100 / 750 / 0.4)


def test_project_backproject_round_trip():
    rng = np.random.default_rng(0)
    for a, b in [(0, 0), (90, 0), (-45, 30), (120, -35)]:
        v = CArmView(a, b, rows=128, cols=96)
        pts = rng.uniform(-60, 60, size=(50, 3))
        uv = v.project(pts)
        depth = (pts - v.source_mm) @ v.rotation[2]
        np.testing.assert_allclose(v.backproject(uv, depth), pts, atol=1e-9)


def test_pixel_centres_lie_on_detector_and_project_to_their_index():
    v = CArmView(30, -20, rows=20, cols=30, principal_offset_mm=(2, 1))
    pc = v.pixel_centers_mm()
    dist = (pc - v.source_mm) @ v.rotation[2]
    np.testing.assert_allclose(dist, v.sid_mm, atol=1e-9)
    uv = v.project(pc.reshape(-1, 3)).reshape(20, 30, 2)
    np.testing.assert_allclose(uv[..., 0], np.broadcast_to(np.arange(30)[None] + 0.5, (20, 30)), atol=1e-6)
    np.testing.assert_allclose(uv[..., 1], np.broadcast_to(np.arange(20)[:, None] + 0.5, (20, 30)), atol=1e-6)
    src, d = v.pixel_rays()
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-12)


def test_point_behind_source_projects_to_nan():
    v = CArmView(0, 0)
    assert np.isnan(v.project(v.source_mm[None] * 2)).all()


@pytest.mark.parametrize("kwargs, field", [
    (dict(sid_mm=500, sod_mm=600), "sod_mm"),
    (dict(sid_mm=-1.0), "sid_mm"),
    (dict(rows=0), "rows"),
    (dict(pixel_spacing_mm=(0.5,)), "pixel_spacing_mm"),
    (dict(primary_deg=float("nan")), "primary_deg"),
])
def test_invalid_view_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CArmView(**kwargs)


def test_pack_views_rejects_mixed_detectors():
    with pytest.raises(ValueError, match="detector size"):
        pack_views([CArmView(rows=64, cols=64), CArmView(rows=32, cols=64)])
    assert pack_views(orbit(3)).shape == (3, 17)


def test_projected_centres_match_gsplat_pinhole():
    """A peer's code as an oracle: gsplat's pure-torch world->camera + pinhole projection (CPU)."""
    gs = pytest.importorskip("gsplat.cuda._torch_impl")
    from pinngs.ops import project_gaussians
    from pinngs.field import covar_and_precision

    gen = torch.Generator().manual_seed(3)
    views = [CArmView(a, b, rows=128, cols=160, pixel_spacing_mm=(0.8, 0.7), principal_offset_mm=(4, -3))
             for a, b in [(0, 0), (-30, 25), (75, -10)]]
    N = 200
    means = (torch.rand(N, 3, generator=gen) - 0.5) * 80
    scales = 0.3 + 2 * torch.rand(N, 3, generator=gen)
    cov, prec = covar_and_precision(torch.randn(N, 4, generator=gen), scales)
    params, _ = project_gaussians(pack_views(views), means, prec, 160, 128)
    viewmats = torch.tensor(np.stack([v.viewmat() for v in views]), dtype=torch.float64)
    Ks = torch.tensor(np.stack([v.K() for v in views]), dtype=torch.float64)
    from pinngs.field import six_to_sym
    mc, cc = gs._world_to_cam(means.double(), six_to_sym(cov.double()), viewmats)
    means2d, _ = gs._persp_proj(mc, cc, Ks, 160, 128)
    # float32 kernel params vs float64 oracle: 1e-3 px on a ~1e3 px focal length is float32 rounding
    np.testing.assert_allclose(params[..., :2].numpy(), means2d.numpy(), atol=2e-3)
