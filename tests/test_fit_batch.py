"""Gaussian fitting to studies (pinngs.fit.batch): a small static study of a stenosed tube, projected
by the simulator's ray marcher (not the rasterizer), is fitted and the lumen compared with the
phantom; checkpoints resume bit-exactly (the CLI's kill/resume: tests/test_faults.py)."""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch

from pinngs.geometry import CArmView
from pinngs.io.study import Frame, Study
from pinngs.fit.batch import densify_prune, fit_study, FitConfig, gaussian_mass, lumen_level
from pinngs.field import GaussianField

H = 0.15  # phantom grid (mm)


def _small_study(n_views: int = 4, px: int = 96, severity: float = 0.5, noise: float = 0.0, frames: int = 1):
    from conftest import stenosed_tube
    from pinngs.simulate.projector import project_volume

    ph = stenosed_tube(severity)
    lo, shape = ph.grid(H)
    occ = ph.occupancy(lo, H, shape)
    angles = [(-45.0, 20.0), (-10.0, -15.0), (30.0, 25.0), (70.0, 0.0)][:n_views]
    sp = round(20.0 * 1.5 / px, 4)  # 20 mm field of view at the isocentre
    views = [CArmView(a, b, sid_mm=1200.0, sod_mm=800.0, rows=px, cols=px, pixel_spacing_mm=(sp, sp))
             for a, b in angles]
    imgs = project_volume((0.06 * occ).astype(np.float32), lo, (H,) * 3, views)
    rng = np.random.default_rng(0)
    fr = []
    for k in range(frames):  # cine: a contrast ramp, so the composite has to pick the filled frame
        level = min(1.0, (k + 1) / max(1, frames - 1))
        for v in range(n_views):
            fr.append(Frame((level * imgs[v] + noise * rng.standard_normal(imgs[v].shape)).astype(np.float32), v,
                            0.1 * k))
    mode = "biplane" if n_views == 2 else "multiview"
    return Study(views, fr, mode, "line_integral"), occ, lo


def _dice_on_truth(res, occ_t, lo_t):
    from scipy.ndimage import map_coordinates

    idx = np.stack(np.meshgrid(*[np.arange(n) for n in occ_t.shape], indexing="ij"), 0).reshape(3, -1)
    ri = (lo_t[:, None] + H * idx - res.origin_mm[:, None]) / res.spacing_mm
    occ_r = map_coordinates(res.occupancy, ri, order=1, cval=0.0).reshape(occ_t.shape)
    a, b = occ_t > 0.5, occ_r > 0.5
    return 2 * (a & b).sum() / (a.sum() + b.sum())


FAST = dict(iters=150, densify_every=60, densify_until=120, checkpoint_every=40, lumen_mm=0.1)


@pytest.mark.parametrize("targets", ["frames", "composite"])
def test_fit_recovers_stenosed_tube_4_views(targets):
    st, occ, lo = _small_study(frames=3, noise=0.002)
    t0 = time.perf_counter()
    res = fit_study(st, FitConfig(**FAST, targets=targets, frames_batch=6), progress=False)
    dice = _dice_on_truth(res, occ, lo)
    print(f"\n{targets}: 4 views, 96², 150 steps: Dice {dice:.4f}, data rel L2 {res.info['data_rel_l2']:.4f}, "
          f"{res.info['n_gaussians']} Gaussians, μ_c {res.lumen_level:.4f} (truth 0.06), {time.perf_counter() - t0:.1f} s")
    kind = {"frames": "all-frames-own-contrast", "composite": "cine-opacified-composite"}[targets]
    assert res.info["targets"]["kind"] == kind
    assert dice >= 0.85
    if targets == "composite":  # in "frames" mode the field's scale is free (one scale per frame)
        assert abs(res.lumen_level - 0.06) < 0.015
        assert res.info["data_rel_l2"] < 0.2


def test_rotational_sweep_is_fitted_on_every_opacified_frame():
    """A 24-frame sweep over 180° while the contrast ramps up: only the last frames are near the
    peak (a narrow arc of angles). The "frames" fit takes every frame with >= frames_keep of the
    peak mass, each with its own contrast scale, so it sees the whole arc."""
    from conftest import stenosed_tube_sweep

    views, imgs, occ, lo = stenosed_tube_sweep(h=H)
    n = len(views)
    rng = np.random.default_rng(0)
    level = np.minimum(1.0, (np.arange(n) + 1) / (0.8 * n))
    st = Study(views, [Frame((level[k] * imgs[k] + 0.002 * rng.standard_normal(imgs[k].shape)).astype(np.float32),
                             k, 0.05 * k) for k in range(n)], "rotational", "line_integral")
    res = fit_study(st, FitConfig(**FAST, frames_batch=6), progress=False)
    dice = _dice_on_truth(res, occ, lo)
    print(f"\nrotational, {n} frames, 150 steps: {res.info['targets']}, Dice {dice:.4f}")
    assert res.info["targets"]["kind"] == "all-frames-own-contrast"
    # the frames the mass rule keeps: those with at least 30 % of the peak (about 20 of 24 here)
    assert res.info["targets"]["n_frames_used"] >= 18
    assert dice >= 0.95


def test_lumen_level_is_the_plateau_and_ignores_a_spike():
    v = torch.zeros(60, 60, 60)
    v[10:50, 20:40, 20:40] = 0.06
    assert lumen_level(v) == pytest.approx(0.06)
    v[5, 5, 5] = 5.0  # one spike holding < half of the mass does not move it
    assert lumen_level(v) == pytest.approx(0.06)


def test_densify_prune_preserves_the_integral():
    g = torch.Generator().manual_seed(0)
    n = 200
    f = GaussianField(torch.randn(n, 3, generator=g), 0.1 + torch.rand(n, 3, generator=g),
                      torch.randn(n, 4, generator=g), 0.01 + 0.05 * torch.rand(n, generator=g))
    with torch.no_grad():
        f.raw_atten[:10] = -20.0  # ten negligible Gaussians to prune
    before = float(gaussian_mass(f).sum())
    f2, info = densify_prune(f, FitConfig(split_scale_mm=0.8, prune_mass_frac=0.02))
    after = float(gaussian_mass(f2).sum())
    assert info["pruned"] >= 10 and info["split"] > 0
    assert len(f2) == n - info["pruned"] + info["split"]
    assert after == pytest.approx(before, rel=1e-5)
    assert float(f2.scales.max()) <= float(f.scales.max()) + 1e-6


def test_checkpoint_resume_is_exact(tmp_path):
    st, _, _ = _small_study(n_views=2, px=64)
    cfg = FitConfig(**{**FAST, "iters": 90, "densify_every": 50, "densify_until": 60, "checkpoint_every": 30})
    full = fit_study(st, cfg, progress=False)
    ck = tmp_path / "ck.pt"
    assert fit_study(st, cfg, checkpoint=ck, progress=False, stop_after=45) is None  # killed after step 45
    assert ck.exists()
    assert torch.load(ck, weights_only=False)["step"] == 30  # loses at most one checkpoint interval
    resumed = fit_study(st, cfg, checkpoint=ck, resume=True, progress=False)
    assert torch.equal(resumed.field.means, full.field.means)
    assert torch.equal(resumed.field.raw_atten, full.field.raw_atten)
    assert np.array_equal(resumed.occupancy, full.occupancy)


def test_bad_inputs_are_reported(tmp_path):
    st, _, _ = _small_study(n_views=2, px=64)
    for fr in st.frames:
        fr.image[:] = 0.0
    with pytest.raises(ValueError, match="no contrast"):
        fit_study(st, FitConfig(iters=5), progress=False)
    with pytest.raises(ValueError, match="iters"):
        FitConfig(iters=0).validate()


@pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL")
def test_lumen_threshold_recovers_a_blurred_cylinder():
    from scipy.ndimage import gaussian_filter

    from pinngs.fit.batch import lumen_threshold

    h = 0.05
    x = (np.arange(100) - 49.5) * h
    X, Y = np.meshgrid(x, x, indexing="ij")
    vol = np.repeat((0.06 * (X ** 2 + Y ** 2 <= 1.5 ** 2))[:, :, None], 8, axis=2)
    vol = gaussian_filter(vol, (0.25 / h, 0.25 / h, 0), mode="nearest")  # a blurred wall, as a fit gives
    mu_c, tau = lumen_threshold(torch.from_numpy(vol), h ** 3)
    r = np.sqrt((vol[:, :, 0] > tau).sum() * h * h / np.pi)
    r_half = np.sqrt((vol[:, :, 0] > 0.5 * mu_c).sum() * h * h / np.pi)
    print(f"\nblurred cylinder R 1.5: mu_c {mu_c:.4f}, radius at tau {r:.4f}, at mu_c/2 {r_half:.4f}")
    # a symmetric blur keeps the half level on the wall; the integral-preserving level sits slightly
    # outside it because the mass-weighted median underestimates a blurred plateau (measured +0.039 mm)
    assert abs(mu_c - 0.06) < 0.004
    assert abs(r_half - 1.5) < 0.01
    assert abs(r - 1.5) < 0.05


def test_keep_main_lumen_drops_haze_even_around_a_single_component():
    from pinngs.flow.transit import section_areas
    from pinngs.fit.batch import keep_main_lumen

    h = 0.1
    x = (np.arange(60) - 29.5) * h
    X, Y, Z = np.meshgrid(x, x, np.arange(40) * h, indexing="ij")
    r = np.sqrt(X ** 2 + Y ** 2)
    occ = np.clip(0.5 - (r - 1.0) / 0.4, 0, 1).astype(np.float32)  # R 1 mm, ramp 0.8..1.2 mm
    occ[r > 1.8] = 0.08  # faint haze, as a sparse-view fit leaves around the vessel
    line = np.stack([np.zeros(40), np.zeros(40), np.arange(40) * h, np.full(40, 1.0)], 1)
    a_before = np.median(section_areas([line], occ, (x[0], x[0], 0.0), h)[0][5:-5])

    out = keep_main_lumen(occ, h)  # one component: before, nothing was removed then
    assert np.array_equal(out[r <= 1.45], occ[r <= 1.45])  # the wall's ramp is untouched
    assert not out[r >= 1.55].any()
    a_after = np.median(section_areas([line], out, (x[0], x[0], 0.0), h)[0][5:-5])
    print(f"\nsection area, truth {np.pi:.3f} mm²: with haze {a_before:.3f}, after {a_after:.3f}")
    assert a_before > 1.3 * np.pi  # the haze would have counted as lumen
    assert abs(a_after - np.pi) < 0.03 * np.pi

    blob = (np.abs(X - 1.3) < 0.15) & (np.abs(Y) < 0.15) & (np.abs(Z - 2.0) < 0.15)
    occ[blob] = 0.9  # a small component touching the wall's ramp goes, the ramp stays
    out = keep_main_lumen(occ, h)
    assert not out[blob].any() and np.array_equal(out[(r <= 1.45) & ~blob], occ[(r <= 1.45) & ~blob])
    assert np.array_equal(keep_main_lumen(np.zeros((4, 4, 4), np.float32), h), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="margin_mm"):
        keep_main_lumen(occ, h, margin_mm=-1)


def test_keep_main_lumen_matches_a_distance_transform():
    """Parity with the obviously right version: a Euclidean distance transform of the whole grid."""
    from scipy import ndimage as ndi

    from pinngs.fit.batch import keep_main_lumen

    rng = np.random.default_rng(3)
    occ = ndi.gaussian_filter(rng.random((40, 36, 30)), 2.5)
    occ = np.clip((occ - occ.mean()) / occ.std() * 0.4 + 0.3, 0, 1).astype(np.float32)  # blobs, ramps, haze
    lab, n = ndi.label(occ > 0.5, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel())[1:]
    assert n >= 3 and (sizes < 0.05 * sizes.max()).any()  # some components are dropped
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes >= 0.05 * sizes.max()
    for h, margin in ((0.1, 0.5), (0.1, 0.3), (0.1, 0.05), (0.2, 0.45), (0.1, 0.0)):
        near = ndi.distance_transform_edt(~keep[lab], sampling=h) <= margin + 1e-9
        slow = np.where(near & ((lab == 0) | keep[lab]), occ, 0.0)
        fast = keep_main_lumen(occ, h, margin_mm=margin)
        assert np.array_equal(fast, slow), (h, margin, int((fast != slow).sum()))
    assert (keep_main_lumen(occ, 0.1) != occ).any()


def test_the_round_vessel_prior_turns_the_biplane_hull_into_a_disc():
    """Two orthogonal views of a round tube (the simulator's ray marcher, not the rasterizer) carve a
    square section; the even hull puts mass in its corners, the disc-weighted hull
    (``disc_window_mm``) almost none outside the true radius, keeps the total mass, and weighs the
    axis ~1 and the square's corners (1.3 R along both diagonals) ~0."""
    from pinngs.fit.batch import backprojection_init, disc_weights, Targets
    from pinngs.simulate.phantoms import straight_vessel
    from pinngs.simulate.projector import project_volume

    R = 1.2
    ph = straight_vessel("t", radius_mm=R, length_mm=12.0, direction=(0.0, 0.0, 1.0))
    lo, shape = ph.grid(H)
    occ = ph.occupancy(lo, H, shape)
    views = [CArmView(a, 0.0, sid_mm=1200.0, sod_mm=800.0, rows=96, cols=96, pixel_spacing_mm=(0.3125, 0.3125))
             for a in (0.0, 90.0)]
    tg = Targets(views, torch.from_numpy(np.stack(project_volume((0.06 * occ).astype(np.float32), lo, (H,) * 3,
                                                                 views))))

    def radial(f):  # [N] distance from the tube's axis (z), and the field's masses
        p = f.means.detach().numpy()
        return np.hypot(p[:, 0], p[:, 1]), gaussian_mass(f).detach().numpy()

    even = backprojection_init(tg, 0.3, 0.12)
    disc = backprojection_init(tg, 0.3, 0.12, disc_window_mm=3.0)
    (r_e, m_e), (r_d, m_d) = radial(even), radial(disc)
    out_e, out_d = m_e[r_e > 1.1 * R].sum() / m_e.sum(), m_d[r_d > 1.1 * R].sum() / m_d.sum()
    print(f"\nmass outside 1.1 R: even hull {out_e:.3f}, disc-weighted {out_d:.3f}; points {len(r_e)} -> {len(r_d)}")
    assert out_e > 0.05 and out_d < 0.25 * out_e
    assert m_d.sum() == pytest.approx(m_e.sum(), rel=1e-4)
    # which view sees the square's corners along which detector axis is the projector's business:
    # both diagonals, so either way the corners are tested
    c = 1.3 * R / math.sqrt(2)
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [c, c, 0.0], [-c, c, 1.0], [c, -c, -1.0], [-c, -c, 2.0]])
    w = disc_weights(tg.images.numpy(), views, pts)
    assert (w[:2] > 0.8).all() and (w[2:] < 0.1).all(), w
    with pytest.raises(ValueError, match="one view each"):
        disc_weights(tg.images.numpy()[:1], views, pts)
    with pytest.raises(ValueError, match="window_mm"):
        disc_weights(tg.images.numpy(), views, pts, window_mm=0.0)


def test_the_batch_fit_uses_the_round_vessel_prior_on_sparse_views(monkeypatch):
    """``FitConfig.init_disc_window_mm`` (default 3 mm) reaches the batch fit's back-projection on a
    2-4 view study and not on a rotational one, and on a biplane stenosed tube the fitted lumen
    is closer to the truth with it than with the even hull (whose square section the fit keeps)."""
    import pinngs.fit.batch as fit

    assert FitConfig().init_disc_window_mm == 3.0
    with pytest.raises(ValueError, match="init_disc_window_mm"):
        FitConfig(init_disc_window_mm=-1.0).validate()
    seen = []
    real = fit.backprojection_init
    monkeypatch.setattr(fit, "backprojection_init", lambda *a: seen.append(a[4]) or real(*a))
    st, occ, lo = _small_study(n_views=2, frames=3, noise=0.002)
    dice = {}
    for w in (0.0, 3.0):
        res = fit_study(st, FitConfig(**FAST, init_disc_window_mm=w, frames_batch=6), progress=False)
        assert seen[-1] == w
        dice[w] = _dice_on_truth(res, occ, lo)
    print(f"\nbiplane, 96², 150 steps: Dice even hull {dice[0.0]:.4f}, round-vessel prior {dice[3.0]:.4f}")
    assert dice[3.0] > dice[0.0] + 0.01
    rot = Study([st.views[fr.view] for fr in st.frames],  # one view per frame, as a sweep has
                [Frame(fr.image, k, fr.t_s) for k, fr in enumerate(st.frames)], "rotational", "line_integral")
    fit_study(rot, FitConfig(iters=1), progress=False)
    assert seen[-1] == 0.0


def _tube_field(stretch_y: float = 1.0, mu: float = 0.05, radius: float = 1.0, h: float = 0.1, length: float = 10.0):
    """Gaussians on a lattice filling a tube along x (radius, length mm) at density mu; with
    ``stretch_y`` the tube is stretched along y (the AP view's rays) at mu / stretch_y, which leaves
    every AP line integral as it was."""
    from pinngs.field import GaussianField

    g = np.arange(-radius, radius + h / 2, h)
    x = np.arange(-length / 2, length / 2 + h / 2, h)
    X, Y, Z = np.meshgrid(x, g, g, indexing="ij")
    keep = Y ** 2 + Z ** 2 <= radius ** 2
    means = np.column_stack([X[keep], stretch_y * Y[keep], Z[keep]])
    sig = 0.6 * h
    a = mu / ((2 * math.pi) ** 1.5 * sig ** 3 / h ** 3)  # the lattice's plateau density is mu
    scales = np.tile([sig, stretch_y * sig, sig], (len(means), 1))
    return GaussianField(torch.tensor(means), torch.tensor(scales), atten_per_mm=torch.full((len(means),), a / stretch_y))


def test_projected_lumen_level_reads_the_density_from_the_projections():
    """projected_lumen_level: a round tube filled at 0.05 mm⁻¹ reads 0.05 (within 2 %) from one view;
    stretched along that view's rays at half the density, its projections and so its level stay,
    while the field's density level halves (the 2-view depth stretch that inflated the lumen)."""
    from pinngs.fit.batch import projected_lumen_level
    from pinngs.ops import VoxelGrid, voxelize

    view = CArmView(0.0, 0.0, rows=192, cols=192, pixel_spacing_mm=(0.12, 0.12))
    cl = np.column_stack([np.arange(-5, 5.01, 0.1), np.zeros(101), np.zeros(101), np.full(101, 1.0)])
    levels = {}
    for k in (1.0, 2.0):
        f = _tube_field(k)
        mu_p, n = projected_lumen_level(f, [view], [cl])
        cov, prec = f.covar_and_precision()
        grid = VoxelGrid.around(f.means, 0.1, 0.5)
        dens = lumen_level(voxelize(f.means, prec, cov, f.attenuation, grid, 5.0))
        levels[k] = (mu_p, dens)
        assert n >= 5  # points every 0.5 mm, 3 mm clear of the ends
    assert levels[1.0][0] == pytest.approx(0.05, rel=0.02)  # measured 0.0501
    assert levels[2.0][0] == pytest.approx(levels[1.0][0], rel=0.03)
    assert levels[2.0][1] == pytest.approx(0.5 * levels[1.0][1], rel=0.1)
    assert math.isnan(projected_lumen_level(_tube_field(), [view], [cl[:5]])[0])  # too short: no profile


def test_fitted_lumen_reads_the_level_from_the_projections_when_the_views_are_close():
    """fitted_lumen "auto": views under PROJECTED_LEVEL_BELOW_DEG apart take the projected level, wider
    ones the density level; "density" and "projected" force either; a bad rule is refused."""
    import dataclasses

    from pinngs.fit.batch import PROJECTED_LEVEL_BELOW_DEG, fitted_lumen

    f = _tube_field(1.5, length=16.0)  # a tube stretched 1.5-fold along the AP rays at 0.033 mm⁻¹
    kw = dict(rows=192, cols=192, pixel_spacing_mm=(0.12, 0.12))
    close = [CArmView(0.0, 0.0, **kw), CArmView(0.5 * PROJECTED_LEVEL_BELOW_DEG, 0.0, **kw)]
    wide = [CArmView(0.0, 0.0, **kw), CArmView(0.0, 1.2 * PROJECTED_LEVEL_BELOW_DEG, **kw)]
    c = FitConfig()
    assert c.lumen_level == "auto"
    occ, _, mu_close, lv = fitted_lumen(f, close, c)
    assert lv["lumen_level_rule"] == "projected" and lv["lumen_level_profiles"] >= 20
    assert mu_close == pytest.approx(0.05, rel=0.03)  # the round tube's density (measured 0.0501)
    assert lv["lumen_level_density_per_mm"] == pytest.approx(0.05 / 1.5, rel=0.05)
    _, _, mu_wide, lw = fitted_lumen(f, wide, c)
    assert lw["lumen_level_rule"] == "density" and mu_wide == pytest.approx(lw["lumen_level_density_per_mm"])
    # read either way: how far the field spread along the rays (the reconstruct warning's figure)
    assert lw["depth_spread"] == pytest.approx(lw["lumen_level_projected_per_mm"] / mu_wide) and lw["depth_spread"] > 1.05
    _, _, mu_forced, lf = fitted_lumen(f, wide, dataclasses.replace(c, lumen_level="projected"))
    # forced: the projected level, although the 72° view sees the stretched (elliptical) section
    # edge-on and reads it lower (an ellipse of axes a, b reads μ b / a along a)
    assert lf["lumen_level_rule"] == "projected" and mu_forced == lf["lumen_level_projected_per_mm"] > mu_wide
    assert occ.max() > 0.5
    with pytest.raises(ValueError, match="lumen_level"):
        FitConfig(lumen_level="brightest").validate()
