"""Cardiac timing (pinngs.io.ecg and the DICOM tags that carry it): R peaks of a synthetic ECG whose
beats are known, the phase per frame, end-diastolic gating of a study and of the fit, and the ECG,
R-wave pointers and trigger delays read back from DICOM XA files written by pydicom."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pinngs.io.ecg import cardiac_info, cardiac_phase, gate_study, r_peaks


def synthetic_ecg(hr_bpm=72.0, duration_s=4.0, fs=500.0, t0=-0.3, seed=0, inverted=False):
    """(t [S], signal [S] mV, true R times): P, R, S and T waves per beat (R-R jittered ±20 ms),
    baseline wander and noise."""
    rng = np.random.default_rng(seed)
    t = t0 + np.arange(int(duration_s * fs)) / fs
    r = np.arange(t0 + 0.17, t[-1] - 0.3, 60.0 / hr_bpm)
    r = r + rng.uniform(-0.02, 0.02, len(r))
    x = np.zeros_like(t)
    for rt in r:
        for amp, dt, w in ((1.2, 0.0, 0.012), (-0.2, 0.04, 0.01), (0.15, -0.16, 0.03), (0.35, 0.3, 0.06)):
            x += amp * np.exp(-0.5 * ((t - rt - dt) / w) ** 2)
    x += 0.1 * np.sin(2 * np.pi * 0.3 * t) + 0.03 * rng.standard_normal(len(t))
    return t, -x if inverted else x, r


@pytest.mark.parametrize("hr,fs,inverted", [(72, 500, False), (110, 250, True), (55, 1000, False)])
def test_r_peaks_of_a_synthetic_ecg(hr, fs, inverted):
    t, x, r = synthetic_ecg(hr, fs=fs, inverted=inverted)
    d = r_peaks(t, x)
    assert len(d) == len(r) and np.abs(d - r).max() < 0.006  # within 6 ms, whatever the lead's polarity


def test_cardiac_phase():
    ph = cardiac_phase([0.0, 0.1, 0.5, 0.9, 1.3, 2.0], [0.1, 0.9, 1.7])
    assert ph == pytest.approx([0.875, 0.0, 0.5, 0.0, 0.5, 0.375])
    assert np.isnan(cardiac_phase([0.5], [0.1])).all()


def _with_ecg(study, hr=72.0):
    t, x, r = synthetic_ecg(hr, duration_s=max(f.t_s for f in study.frames) + 1.0)
    return dataclasses.replace(study, meta={**study.meta, "ecg": {"t_s": t.tolist(), "signal": x.tolist(),
                                                                  "source": "synthetic lead II"}}), r


def test_gating_keeps_the_frames_near_the_r_waves(tube_cine):
    study, r = _with_ecg(tube_cine[0])
    info = cardiac_info(study)
    assert info["heart_rate_bpm"] == pytest.approx(72, rel=0.05) and "detected" in info["source"]
    gated, g = gate_study(study, "auto", 0.2)
    assert g["gate"] == "end-diastole" and 0 < g["frames_kept"] < len(study.frames)
    rr = 60.0 / 72
    for f in gated.frames:  # every kept frame is within 0.1 of a cycle of a true R wave (+ detection error)
        assert np.abs(f.t_s - r).min() <= 0.1 * rr * 1.1 + 0.01
    assert {f.view for f in gated.frames} == {0, 1}
    # without timing: auto does nothing, end-diastole refuses; none never gates
    assert gate_study(tube_cine[0], "auto")[0] is tube_cine[0]
    with pytest.raises(ValueError, match="needs cardiac timing"):
        gate_study(tube_cine[0], "end-diastole")
    assert gate_study(study, "none")[0] is study
    for bad in (("sometimes", 0.2), ("auto", 0.0), ("auto", 1.5)):
        with pytest.raises(ValueError):
            gate_study(study, *bad)


def test_the_fit_is_gated_when_the_study_has_an_ecg(tube_cine):
    from pinngs.fit.batch import FitConfig, fit_study

    study, _ = _with_ecg(tube_cine[0])
    res = fit_study(study, FitConfig(iters=3, threads=1), progress=False)
    g = res.info["gate"]
    assert g["gate"] == "end-diastole" and g["frames_kept"] < g["frames"] == len(study.frames)
    assert res.info["targets"]["n_frames_used"] <= g["frames_kept"]
    assert fit_study(study, FitConfig(iters=3, threads=1, gate="none"), progress=False).info["gate"] == {"gate": "none"}


def test_dicom_carries_the_ecg_r_wave_pointers_and_trigger_delays(tube_cine, tmp_path):
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from pinngs.io.dicom import read_xa, write_xa

    study, r = _with_ecg(tube_cine[0])
    files = write_xa(study, tmp_path / "xa")
    back = read_xa(tmp_path / "xa")
    t_shift = min(f.t_s for f in study.frames)  # read_xa's clock starts at the first frame
    assert back.meta["ecg"]["t_s"][0] == pytest.approx(study.meta["ecg"]["t_s"][0] - t_shift, abs=1e-6)
    assert np.asarray(back.meta["ecg"]["signal"]) == pytest.approx(np.asarray(study.meta["ecg"]["signal"]), abs=1e-3)
    assert np.asarray(cardiac_info(back)["r_peaks_s"]) == pytest.approx(r - t_shift, abs=0.006)
    # a legacy XA run marks its R waves by frame number; an enhanced one by each frame's trigger delay
    ds = pydicom.dcmread(files[0])
    del ds.WaveformSequence
    n = int(ds.NumberOfFrames)
    ds.RWavePointer = [3, 15]
    ds.HeartRate = "70"
    ds.save_as(files[0])
    back = read_xa(tmp_path / "xa")
    times = sorted(f.t_s for f in back.frames if f.view == 0)
    assert back.meta["cardiac"]["r_peaks_s"] == pytest.approx([times[1], times[13]])  # frame 1 is the mask
    assert back.meta["cardiac"]["heart_rate_bpm_tag"] == 70.0 and "ecg" not in back.meta
    del ds.RWavePointer
    t_run = np.cumsum([float(x) for x in ds.FrameTimeVector]) / 1000.0  # s from the run's first frame
    delays = [t % 0.8 for t in t_run]  # an R wave every 0.8 s from the run's first frame on
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [Dataset() for _ in range(n)])
    for item, d in zip(ds.PerFrameFunctionalGroupsSequence, delays):
        cs = Dataset()
        cs.NominalCardiacTriggerDelayTime = 1000.0 * d
        item.CardiacSynchronizationSequence = Sequence([cs])
    ds.save_as(files[0])
    rp = read_xa(tmp_path / "xa").meta["cardiac"]["r_peaks_s"]
    assert np.diff(rp) == pytest.approx(0.8, abs=1e-3)
    # a pointer to a frame the run does not have is one clear error
    del ds.PerFrameFunctionalGroupsSequence
    ds.RWavePointer = [n + 5]
    ds.save_as(files[0])
    from pinngs.io.dicom import DicomError

    with pytest.raises(DicomError, match="RWavePointer"):
        read_xa(tmp_path / "xa")


def test_reconstruct_reports_the_gate_and_refuses_a_gate_it_cannot_apply(tube_cine, tmp_path):
    import json

    from pinngs.cli import main
    from pinngs.io.study import save_study

    study, _ = _with_ecg(tube_cine[0])
    save_study(study, tmp_path / "ecg")
    save_study(tube_cine[0], tmp_path / "plain")
    assert main(["reconstruct", str(tmp_path / "ecg"), "-o", str(tmp_path / "r"), "--flow", "none", "--iters", "5",
                 "--threads", "1"]) == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["fit"]["gate"]["gate"] == "end-diastole"
    assert "ECG gating: end-diastole" in (tmp_path / "r" / "report.md").read_text()
    assert main(["reconstruct", str(tmp_path / "plain"), "-o", str(tmp_path / "r2"), "--gate", "end-diastole"]) == 2
    assert not (tmp_path / "r2").exists() and not (tmp_path / ".r2.partial").exists()


def test_a_malformed_ecg_in_a_study_is_one_clear_error(tube_cine, tmp_path):
    from pinngs.cli import main
    from pinngs.io.study import save_study

    bad = dataclasses.replace(tube_cine[0], meta={"ecg": {"t_s": [0.0, 0.1, 0.2], "signal": [1.0, 2.0]}})
    save_study(bad, tmp_path / "s")
    assert main(["reconstruct", str(tmp_path / "s"), "-o", str(tmp_path / "r"), "--flow", "none", "--iters", "3"]) == 2
    assert not (tmp_path / "r").exists() and not (tmp_path / ".r.partial").exists()
