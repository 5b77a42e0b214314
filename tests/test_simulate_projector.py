"""The simulator's independent projector (pinngs.simulate.projector) against analytic chord lengths,
and the DSA noise model against its theory.

Accuracy note: near a silhouette the chord grows like sqrt(distance to the silhouette), so any
representation of a sharp object on a grid of spacing h smears the projection there; with a
partial-volume (anti-aliased) voxelisation plus trilinear interpolation the relative chord error at a
pixel whose chord is a fraction f of the maximum scales like (h / ((1 - sqrt(1 - f²)) R))². At the
20 % threshold that is a distance of 0.02 R from the silhouette, so the grids here are fine
(0.0175 mm sphere, 0.011 mm cylinder cross-section) to reach the 0.5 % bound with margin.
"""
import numpy as np
import pytest

from pinngs.geometry import CArmView
from pinngs.simulate.projector import add_noise, project_volume

MU = 0.02  # mm^-1
VIEWS = [
    CArmView(0, 0, rows=32, cols=32, pixel_spacing_mm=(0.5, 0.5)),
    CArmView(35, 25, rows=32, cols=32, pixel_spacing_mm=(0.5, 0.5)),  # LAO 35 / CRA 25
]
TOL = 5e-3


def _occupancy(sdf, h):
    """Partial-volume occupancy from a signed distance (negative inside), clipped to ±h/2."""
    return np.clip(0.5 - sdf / h, 0.0, 1.0).astype(np.float32)


def _check(name, img, chord, valid, far):
    m = valid & (chord >= 0.2 * chord[valid].max())
    assert m.sum() > 100, (name, int(m.sum()))
    rel = img[m] / (MU * chord[m]) - 1.0
    err = float(np.abs(rel).max())
    print(f"\n{name}: {int(m.sum())} pixels, max rel err {err:.3%}, mean {rel.mean():+.3%}")
    assert err <= TOL, (name, err)
    # rays that pass well clear of the object (beyond the partial-volume ramp) see nothing
    assert far.sum() > 50 and np.abs(img[far]).max() == 0
    return err


def test_sphere_chords():
    R, h = 3.0, 0.0175
    c = np.array([0.3, -0.2, 0.25])
    n = int(np.ceil((R + 2 * h) / h))
    ax = (np.arange(-n, n + 1) * h).astype(np.float32)
    mu = ax[:, None, None] ** 2 + ax[None, :, None] ** 2
    mu = mu + ax[None, None, :] ** 2  # r^2, then in place: r, occupancy, mu (keeps one 170 MB array)
    np.sqrt(mu, out=mu)
    mu -= R
    mu *= -1.0 / h
    mu += 0.5
    np.clip(mu, 0.0, 1.0, out=mu)
    mu *= MU
    img = project_volume(mu, c - n * h, h, VIEWS)
    assert img.shape == (2, 32, 32) and img.dtype == np.float32
    errs = []
    for v, im in zip(VIEWS, img):
        s, d = v.pixel_rays()
        w = c - s
        dist2 = w @ w - (d @ w) ** 2
        chord = 2 * np.sqrt(np.clip(R * R - dist2, 0, None))
        far = np.sqrt(dist2) > R + 2 * h
        errs.append(_check(f"sphere view {v.primary_deg}/{v.secondary_deg}", im, chord, np.ones_like(chord, bool), far))
    assert max(errs) <= TOL


def _cylinder_chords(view, c, a, R):
    """Chord of the infinite cylinder (axis point c, unit axis a, radius R) along every pixel ray,
    in closed form: with w = source - c and ⊥ the part perpendicular to a, the ray s + t d is inside
    where |w⊥ + t d⊥|² <= R², a quadratic in t. Returns the chord [H, W] and the entry and exit
    points [H, W, 3] (NaN where the ray misses)."""
    s, d = view.pixel_rays()
    w = s - c
    dp = d - (d @ a)[..., None] * a
    wp = w - (w @ a) * a
    A = (dp * dp).sum(-1)
    B = 2 * dp @ wp
    C = wp @ wp - R * R
    disc = B * B - 4 * A * C
    root = np.sqrt(np.clip(disc, 0, None))
    chord = root / A
    t_in, t_out = (-B - root) / (2 * A), (-B + root) / (2 * A)
    hit = (disc > 0)[..., None]
    p_in = np.where(hit, s + t_in[..., None] * d, np.nan)
    p_out = np.where(hit, s + t_out[..., None] * d, np.nan)
    return chord, p_in, p_out


def test_cylinder_chords():
    # Axis tilted ~5.4° off the grid's z axis (5° towards x, 2° towards y), so its projection is
    # tilted on the detector and the pixels sample the distance to the axis finely (an axis-aligned
    # cylinder would put the same few distances on every row and could miss the silhouette band).
    # The cross-section needs a fine grid (0.011 mm); z can be coarser (0.05 mm) because the field
    # varies along z only through the small tilt (hz * sin(tilt) < h / 2). The anisotropic spacing
    # also checks that per-axis spacings are not mixed up.
    R, h, hz, L = 2.0, 0.011, 0.05, 8.0
    c = np.array([0.4, -0.3, 0.1])
    a = np.array([np.tan(np.radians(5.0)), np.tan(np.radians(2.0)), 1.0])
    a /= np.linalg.norm(a)
    nx = int(np.ceil((L / 2 * abs(a[0]) / a[2] + R / a[2]) / h)) + 3
    ny = int(np.ceil((L / 2 * abs(a[1]) / a[2] + R / a[2]) / h)) + 3
    nz = int(round(L / 2 / hz))
    X = (np.arange(-nx, nx + 1) * h).astype(np.float32)[:, None, None]
    Y = (np.arange(-ny, ny + 1) * h).astype(np.float32)[None, :, None]
    a32 = a.astype(np.float32)
    mu = np.empty((2 * nx + 1, 2 * ny + 1, 2 * nz + 1), np.float32)
    for k0 in range(0, 2 * nz + 1, 40):  # z slabs keep the temporaries small
        Z = (np.arange(k0, min(k0 + 40, 2 * nz + 1)) - nz).astype(np.float32)[None, None, :] * np.float32(hz)
        pa = X * a32[0] + Y * a32[1] + Z * a32[2]
        rho = np.sqrt(np.maximum(X * X + Y * Y + Z * Z - pa * pa, 0))  # distance to the axis
        mu[:, :, k0:k0 + Z.shape[-1]] = MU * _occupancy(rho - R, h)
    # the cylinder is cut only by the z faces of the grid
    assert not (mu[[0, -1]].any() or mu[:, [0, -1]].any())
    origin = c - np.array([nx * h, ny * h, nz * hz])
    img = project_volume(mu, origin, (h, h, hz), VIEWS)
    zlim = (c[2] - nz * hz + 2 * hz, c[2] + nz * hz - 2 * hz)  # both ends of the chord inside the grid
    errs = []
    for v, im in zip(VIEWS, img):
        chord, p_in, p_out = _cylinder_chords(v, c, a, R)
        with np.errstate(invalid="ignore"):
            valid = (chord == 0) | ((np.minimum(p_in[..., 2], p_out[..., 2]) > zlim[0])
                                    & (np.maximum(p_in[..., 2], p_out[..., 2]) < zlim[1]))
        assert valid.mean() > 0.5
        far = _cylinder_chords(v, c, a, R + 2 * h)[0] == 0
        errs.append(_check(f"cylinder view {v.primary_deg}/{v.secondary_deg}", im, chord, valid, far))
    assert max(errs) <= TOL


def test_edges_and_linearity():
    rng = np.random.default_rng(0)
    mu = rng.uniform(0, 0.05, size=(12, 9, 7)).astype(np.float32)
    origin, spacing = np.array([-3.0, -2.0, -1.5]), (0.5, 0.45, 0.4)
    v = [CArmView(20, -10, rows=16, cols=12, pixel_spacing_mm=(0.8, 0.8))]
    p = project_volume(mu, origin, spacing, v)
    assert p.shape == (1, 16, 12) and np.all(p >= 0)
    p2 = project_volume(2 * mu, origin, spacing, v)
    np.testing.assert_allclose(p2, 2 * p, rtol=1e-5, atol=1e-7)
    # far from the rays: all zero
    assert np.all(project_volume(mu, origin + 100.0, spacing, v) == 0)
    # a smaller step changes little for a smooth field
    p3 = project_volume(mu, origin, spacing, v, step_mm=0.05)
    assert np.abs(p3 - p).max() <= 0.02 * p.max()


def test_ray_along_grid_axis_is_exact():
    # principal ray of the AP view runs along +y through x = z = 0: for a constant column of n voxels
    # the zero-padded trilinear field integrates to exactly n * spacing.
    mu = np.zeros((3, 10, 3), np.float32)
    mu[1, :, 1] = 0.1
    vv = CArmView(0, 0, rows=1, cols=1, pixel_spacing_mm=(1.0, 1.0))  # single pixel on the axis
    p = project_volume(mu, (-1.0, -4.5 * 0.3, -1.0), (1.0, 0.3, 1.0), [vv])
    np.testing.assert_allclose(p[0, 0, 0], 0.1 * 10 * 0.3, rtol=1e-5)


def test_validation_and_devices():
    mu = np.ones((4, 4, 4), np.float32)
    v = [CArmView(rows=4, cols=4)]
    with pytest.raises(ValueError):
        project_volume(np.ones((4, 4)), (0, 0, 0), 1.0, v)
    with pytest.raises(ValueError):
        project_volume(mu, (0, 0, 0), (1.0, -1.0, 1.0), v)
    with pytest.raises(ValueError):
        project_volume(mu, (0, 0, 0), 1.0, [])
    with pytest.raises(ValueError):
        project_volume(mu, (0, 0, 0), 1.0, v + [CArmView(rows=5, cols=4)])
    with pytest.raises(ValueError):
        project_volume(mu, (0, 0, 0), 1.0, v, device="tpu")
    import warp as wp

    if wp.is_cuda_available():
        mu = np.random.default_rng(1).uniform(0, 0.05, (20, 20, 20)).astype(np.float32)
        vs = [CArmView(a, 10, rows=24, cols=24, pixel_spacing_mm=(0.5, 0.5)) for a in (0, 40)]
        np.testing.assert_allclose(project_volume(mu, (-5, -5, -5), 0.5, vs, device="cuda"),
                                   project_volume(mu, (-5, -5, -5), 0.5, vs), rtol=1e-4, atol=1e-6)
    else:
        with pytest.raises(RuntimeError, match="CUDA"):
            project_volume(mu, (0, 0, 0), 1.0, v, device="cuda")


# ------------------------------------------------------------------------------------------------
# noise model
# ------------------------------------------------------------------------------------------------
def _smooth_image(H=64, W=64):
    y, x = np.mgrid[0:H, 0:W]
    return (0.5 * np.exp(-((x - 30) ** 2 + (y - 20) ** 2) / 60.0) + 0.2 * np.exp(-((x - 10) ** 2) / 8.0)).astype(np.float32)


def test_noise_huge_dose_is_identity():
    d = np.stack([_smooth_image(), 0.5 * _smooth_image()])
    out = add_noise(d, np.random.default_rng(0), photons_per_pixel=1e13, blur_sigma_px=0.0, residual_amp=0.0)
    assert out.shape == d.shape and out.dtype == np.float32
    assert np.abs(out - d).max() <= 1e-3


def test_noise_std_matches_theory():
    N0 = 2e4
    d = np.zeros((4, 128, 128), np.float32)
    out = add_noise(d, np.random.default_rng(1), photons_per_pixel=N0, blur_sigma_px=0.0, residual_amp=0.0)
    std, theory = float(out.std()), np.sqrt(2 / N0)
    print(f"\nnoise std at d=0: {std:.5f}, theory sqrt(2/N0) = {theory:.5f}")
    assert abs(std / theory - 1) <= 0.10
    assert abs(float(out.mean())) <= 0.1 * theory


def test_blur_preserves_sum():
    d = _smooth_image()
    out = add_noise(d, np.random.default_rng(2), photons_per_pixel=1e13, blur_sigma_px=1.5, residual_amp=0.0)
    assert abs(out.sum() / d.sum() - 1) <= 0.01
    assert out.max() < d.max()  # it did blur


def test_residual_and_determinism():
    d = np.zeros((3, 40, 50), np.float32)
    a = add_noise(d, np.random.default_rng(3), photons_per_pixel=1e13, blur_sigma_px=0.0, residual_amp=0.01)
    b = add_noise(d, np.random.default_rng(3), photons_per_pixel=1e13, blur_sigma_px=0.0, residual_amp=0.01)
    np.testing.assert_array_equal(a, b)
    for img in a:
        assert 0.005 <= np.abs(img).max() <= 0.0101  # peak amplitude ~ residual_amp
        assert np.abs(np.diff(img, axis=-1)).max() <= 0.01 * 2 * np.pi * 1.5 / 50 * 2  # low frequency
    assert not np.allclose(a[0], a[1])  # independent per image
    c = add_noise(d, np.random.default_rng(4), residual_amp=0.01)
    assert not np.allclose(a, c)
