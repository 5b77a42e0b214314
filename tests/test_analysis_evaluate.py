"""Reconstruction metrics (pinngs.recon.evaluate) on shapes whose answers are known."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pinngs.analysis.evaluate import centerline_metrics, dice, evaluate, resample_to, surface_metrics
from pinngs.analysis.surface import mask_to_mesh


def _sphere(r, h=0.05, n=90):
    x = (np.arange(n) - (n - 1) / 2) * h
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    d = np.sqrt(X ** 2 + Y ** 2 + Z ** 2)
    occ = np.clip(0.5 - (d - r) / h, 0, 1).astype(np.float32)  # linear partial-volume ramp
    return occ, np.full(3, x[0]), h


def test_dice_of_concentric_spheres_is_analytic():
    a, o, h = _sphere(1.5)
    b, _, _ = _sphere(1.2)
    expect = 2 * 1.2 ** 3 / (1.5 ** 3 + 1.2 ** 3)
    assert dice(a, a) == 1.0
    assert dice(a, b) == pytest.approx(expect, abs=0.01)


def test_resample_identity_and_shift():
    a, o, h = _sphere(1.5)
    same = resample_to(a, o, h, o, h, a.shape)
    np.testing.assert_allclose(same, a, atol=1e-6)
    # the same sphere sampled on a grid offset by half a voxel still has Dice ~1 with the original
    half = resample_to(a, o + h / 2, h, o, h, a.shape)
    assert dice(half, a) > 0.97


def test_surface_metrics_of_spheres_0_1_mm_apart():
    a, o, h = _sphere(1.5)
    b, _, _ = _sphere(1.6)
    m = surface_metrics(mask_to_mesh(b, o, h), mask_to_mesh(a, o, h), n_points=10000)
    print(f"\nspheres R 1.5 / 1.6: chamfer {m['chamfer_mm']:.4f}, HD95 {m['hausdorff95_mm']:.4f}, "
          f"F@0.2 {m['fscore_0.2mm']:.4f}")
    assert m["chamfer_mm"] == pytest.approx(0.1, abs=0.01)
    assert m["hausdorff95_mm"] == pytest.approx(0.1, abs=0.02)
    assert m["fscore_0.2mm"] == pytest.approx(1.0, abs=1e-3)
    m2 = surface_metrics(mask_to_mesh(a, o, h), mask_to_mesh(a, o, h), n_points=10000)
    assert m2["chamfer_mm"] < 0.01


def test_centerline_metrics_known_offsets():
    s = np.linspace(0, 20, 201)
    truth = [np.column_stack([np.zeros_like(s), np.zeros_like(s), s, np.full_like(s, 1.5)])]
    rec = [np.column_stack([np.full_like(s, 0.05), np.zeros_like(s), s, np.full_like(s, 1.4)])]
    m = centerline_metrics(rec, truth)
    assert m["radius_mae_mm"] == pytest.approx(0.1, abs=1e-9)
    assert m["radius_bias_mm"] == pytest.approx(-0.1, abs=1e-9)
    assert m["centerline_rmse_mm"] == pytest.approx(0.05, abs=1e-6)
    assert m["centerline_coverage"] == 1.0


def test_evaluate_truth_against_itself_and_missing_files(tmp_path):
    from pinngs.analysis.centerline import extract_centerline
    from pinngs.analysis.stenosis import grade_stenosis
    from pinngs.io.exports import write_centerline_csv
    from conftest import stenosed_tube

    ph = stenosed_tube(0.5)
    h = 0.1
    lo, shape = ph.grid(h)
    occ = ph.occupancy(lo, h, shape)
    t, r = tmp_path / "truth", tmp_path / "recon"
    t.mkdir()
    r.mkdir()
    for d in (t, r):
        np.savez(d / "lumen.npz", occupancy=np.round(occ * 255).astype(np.uint8), origin_mm=lo, spacing_mm=h)
    np.savetxt(t / "centerline.csv", ph.centerline_table(), delimiter=",", fmt="%.6f",
               header="X,Y,Z,MaximumInscribedSphereRadius", comments="")
    (t / "truth.json").write_text(json.dumps({"stenosis": ph.stenosis}))
    br = extract_centerline(occ, lo, h)
    write_centerline_csv(r / "centerline.csv", br)
    (r / "summary.json").write_text(json.dumps({"stenosis": grade_stenosis(br)}))
    m = evaluate(r, t, n_surface_points=10000)
    print(f"\ntruth vs itself: {json.dumps({k: v for k, v in m.items() if isinstance(v, float)}, default=float)}")
    assert m["dice"] == 1.0
    assert m["chamfer_mm"] < 0.02  # the floor of 10k samples against 200k: measured 0.012
    assert m["radius_mae_mm"] < 0.05
    assert m["centerline_rmse_mm"] < 0.05
    assert m["stenosis_error_points"] < 3.0
    (r / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="summary.json"):
        evaluate(r, t)
