"""The simulator's cardiac motion (pinngs.simulate.motion): zero at the R waves, periodic, non-rigid,
its ECG's R waves where the motion says, the splatting that moves the lumen keeps its mass; and the
motion preset end to end (slow): its truth, its ECG, and what gating does for the reconstruction."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pinngs.io.ecg import r_peaks
from pinngs.simulate.motion import CardiacMotion, splat


def test_motion_is_zero_at_end_diastole_periodic_and_not_rigid():
    m = CardiacMotion(amplitude_mm=5.0, heart_rate_bpm=75.0, bend_mm=1.0, wavelength_mm=20.0, first_r_s=0.1)
    pts = np.stack([np.zeros(41), np.zeros(41), np.linspace(-20, 20, 41)], 1)
    for r in m.r_waves(0.0, 3.0):
        assert np.abs(m.displacement(pts, r, (0, 0, 0), (0, 0, 1))).max() < 1e-12
    mid = 0.1 + 0.5 * m.rr_s
    d = m.displacement(pts, mid, (0, 0, 0), (0, 0, 1))
    assert d == pytest.approx(m.displacement(pts, mid + 2 * m.rr_s, (0, 0, 0), (0, 0, 1)))
    e = np.array([1.0, 0.4, 0.0]) / np.linalg.norm([1.0, 0.4, 0.0])
    assert (d @ e) == pytest.approx(np.full(41, 5.0))  # the translation: the full amplitude at mid-cycle
    bend = d - 5.0 * e
    assert np.linalg.norm(bend, axis=1).max() == pytest.approx(1.0, abs=0.02)  # it bends: ±1 mm along the vessel
    assert np.linalg.norm(bend[5] - bend[15]) == pytest.approx(2.0, abs=0.02)
    # continuous in time: no jump at the R wave
    ts = np.linspace(0.0, 3.0, 3001)
    s = m.profile(ts)
    assert np.abs(np.diff(s)).max() < 0.01 and s.min() >= 0 and s.max() <= 1


def test_the_synthetic_ecg_has_its_r_waves_where_the_motion_has_them():
    m = CardiacMotion(heart_rate_bpm=66.0, first_r_s=0.23)
    t, x = m.ecg(0.0, 4.0, rng=np.random.default_rng(0))
    assert r_peaks(t, x) == pytest.approx(m.r_waves(0.0, 4.0), abs=0.004)


def test_splat_keeps_the_mass_and_moves_it():
    rng = np.random.default_rng(1)
    pts = rng.uniform(2.0, 8.0, (5000, 3))
    vals = rng.uniform(0.5, 1.0, 5000)
    g = splat(vals, pts + np.array([0.73, -0.41, 0.2]), np.zeros(3), 0.1, (110, 110, 110))
    assert g.sum() == pytest.approx(vals.sum(), rel=1e-5)
    idx = np.argwhere(g > 0)
    centroid = (idx * 0.1 * g[g > 0][:, None]).sum(0) / g.sum()
    assert centroid == pytest.approx((pts * vals[:, None]).sum(0) / vals.sum() + [0.73, -0.41, 0.2], abs=1e-3)
    assert splat(vals, pts + 50.0, np.zeros(3), 0.1, (110, 110, 110)).sum() == 0  # outside: dropped


@pytest.mark.slow
def test_the_motion_preset_and_gating(tmp_path):
    """stenosis50-motion-biplane: the truth holds the end-diastolic lumen and the per-frame displaced
    centerline, the study its ECG; reconstructed with the ECG gate the lumen is far closer to the
    end-diastolic truth than without it."""
    from pinngs.analysis.evaluate import evaluate
    from pinngs.cli import main

    st = tmp_path / "study"
    assert main(["simulate", "stenosis50-motion-biplane", "-o", str(st)]) == 0
    truth = json.loads((st / "truth" / "truth.json").read_text())
    z = np.load(st / "truth" / "motion.npz")
    assert z["centerline_displacement_mm"].shape[0] == len(z["frame_times_s"]) == 30
    assert np.abs(z["centerline_displacement_mm"]).max() > 3.0 and truth["motion"]["amplitude_mm"] == 5.0
    meta = json.loads((st / "study.json").read_text())["meta"]
    assert r_peaks(np.array(meta["ecg"]["t_s"]), np.array(meta["ecg"]["signal"])) == pytest.approx(
        [r for r in truth["motion"]["r_waves_s"] if meta["ecg"]["t_s"][0] < r < meta["ecg"]["t_s"][-1]], abs=0.005)
    dice = {}
    for gate in ("auto", "none"):
        out = tmp_path / f"rec-{gate}"
        assert main(["reconstruct", str(st), "-o", str(out), "--flow", "none", "--gate", gate]) == 0
        dice[gate] = evaluate(out, st / "truth", n_surface_points=5000)["dice"]
    assert dice["auto"] > 0.85 and dice["none"] < dice["auto"] - 0.2, dice
