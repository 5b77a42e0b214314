"""The heart's timing in a study: R peaks, cardiac phase per frame, and ECG gating.

    info = cardiac_info(study)                 # None, or {"r_peaks_s": [...], "heart_rate_bpm", "source"}
    phase = cardiac_phase(t_s, info["r_peaks_s"])        # [F] in [0, 1): 0 at the R wave
    gated, g = gate_study(study, "end-diastole", 0.2)    # only the frames within ±0.1 cycle of the R wave

Where the timing comes from (``Study.meta``, filled by ``io.dicom.read_xa`` or a study folder's
``study.json`` "meta"): ``meta["cardiac"]["r_peaks_s"]`` (R-wave times in the study's clock, s) if
given; else ``meta["ecg"]`` = {"t_s": [...], "signal": [...]} (a sampled lead, same clock), whose R
peaks ``r_peaks`` detects. End-diastole is at the R wave (the ventricles are fullest just before they
contract), where the coronary arteries move least; ``gate_study`` keeps the frames within
``width / 2`` of a cycle of it.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

GATES = ("auto", "none", "end-diastole")
MIN_RR_S = 0.3  # R peaks closer than this (200 bpm) are one beat


def r_peaks(t_s: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """R-wave times (s) of a sampled ECG lead (times [S] increasing, values [S], any units or sign).

    The QRS complex is the signal's fastest large change: the squared slope of the (5-25 Hz band-passed
    where the sampling allows) signal, smoothed over 80 ms, peaks once per beat; each such peak at
    least ``MIN_RR_S`` from the last and above 30 % of the 99th percentile is a beat, placed at the
    largest |deviation from the median| of the signal within ±60 ms (the R wave, whichever its sign)."""
    from scipy.signal import butter, filtfilt, find_peaks

    t, x = np.asarray(t_s, float), np.asarray(signal, float)
    if t.ndim != 1 or t.shape != x.shape or len(t) < 10:
        raise ValueError(f"an ECG needs matching 1D times and values of at least 10 samples, got {t.shape}, {x.shape}")
    dt = float(np.median(np.diff(t)))
    if not dt > 0:
        raise ValueError("the ECG's sample times must increase")
    fs = 1.0 / dt
    y = x - np.median(x)
    if fs > 60.0 and len(y) > 30:
        b, a = butter(2, [5.0 / (fs / 2), min(25.0, 0.45 * fs) / (fs / 2)], btype="band")
        y = filtfilt(b, a, y)
    e = np.gradient(y, dt) ** 2
    w = max(1, int(round(0.08 * fs)))
    e = np.convolve(e, np.ones(w) / w, mode="same")
    hi = float(np.percentile(e, 99))
    if not hi > 0:
        return np.zeros(0)
    pk, _ = find_peaks(e, height=0.3 * hi, distance=max(1, int(MIN_RR_S * fs)))
    dev = np.abs(x - np.median(x))
    half = max(1, int(round(0.06 * fs)))
    return np.array([t[max(0, p - half) + int(np.argmax(dev[max(0, p - half):p + half + 1]))] for p in pk])


def cardiac_phase(t_s, r_peaks_s) -> np.ndarray:
    """[F] phase in [0, 1) of each time within its R-R interval (0 at an R wave); before the first or
    after the last R peak the nearest interval's length is used; NaN with fewer than two R peaks."""
    t, r = np.asarray(t_s, float), np.sort(np.asarray(r_peaks_s, float))
    if len(r) < 2:
        return np.full(t.shape, np.nan)
    rr = np.diff(r)
    k = np.clip(np.searchsorted(r, t, side="right") - 1, 0, len(rr) - 1)
    return np.mod((t - r[k]) / rr[k], 1.0)


def cardiac_info(study) -> dict | None:
    """The study's R peaks (module docstring): {"r_peaks_s", "heart_rate_bpm", "source"}, or None
    when it carries no cardiac timing (fewer than two R peaks)."""
    meta = study.meta or {}
    card, ecg = meta.get("cardiac") or {}, meta.get("ecg") or {}
    if card.get("r_peaks_s") is not None and len(card["r_peaks_s"]) >= 2:
        r, source = np.asarray(card["r_peaks_s"], float), card.get("source", "R peaks given with the study")
    elif ecg.get("t_s") is not None and ecg.get("signal") is not None:
        r, source = r_peaks(np.asarray(ecg["t_s"]), np.asarray(ecg["signal"])), ecg.get("source", "ECG")
        source = f"R peaks detected in the {source}"
    else:
        return None
    if len(r) < 2:
        return None
    return {"r_peaks_s": [float(v) for v in r], "heart_rate_bpm": 60.0 / float(np.median(np.diff(r))),
            "source": source}


def gate_study(study, gate: str = "auto", width: float = 0.2):
    """(study, info): the study with only the frames near end-diastole (phase within ``width`` / 2 of
    an R wave) when ``gate`` is "end-diastole", or "auto" and the study carries cardiac timing; else the
    study unchanged. ``info`` says what was done (for the fit's summary). Views that would keep no
    frame keep their frame nearest end-diastole, so every view still constrains the fit.

    Raises ValueError for an unknown gate, a width outside (0, 1], or "end-diastole" on a study
    without cardiac timing."""
    if gate not in GATES:
        raise ValueError(f"gate must be one of {', '.join(GATES)}, got {gate!r}")
    if not 0 < width <= 1:
        raise ValueError(f"gate width must be in (0, 1] (a fraction of the cardiac cycle), got {width}")
    if gate == "none":
        return study, {"gate": "none"}
    info = cardiac_info(study)
    if info is None:
        if gate == "end-diastole":
            raise ValueError("ECG gating (end-diastole) needs cardiac timing: the study has no ECG waveform, "
                             "R-wave pointers or trigger delays (meta 'ecg' or 'cardiac'); use gate 'none'")
        return study, {"gate": "none", "reason": "no cardiac timing in the study"}
    if study.mode == "rotational":
        return study, {"gate": "none", "reason": "a rotational sweep has one frame per angle: gating would drop angles",
                       **info}
    ph = cardiac_phase([f.t_s for f in study.frames], info["r_peaks_s"])
    dist = np.minimum(ph, 1.0 - ph)  # cycles from the nearest R wave
    keep = set(np.nonzero(dist <= width / 2)[0].tolist())
    for v in range(len(study.views)):
        own = [k for k, f in enumerate(study.frames) if f.view == v]
        if own and not keep.intersection(own):
            keep.add(min(own, key=lambda k: dist[k]))
    frames = [f for k, f in enumerate(study.frames) if k in keep]
    out = replace(study, frames=frames)
    return out, {"gate": "end-diastole", "width": width, "frames_kept": len(frames), "frames": len(study.frames),
                 **{k: (round(v, 2) if isinstance(v, float) and math.isfinite(v) else v) for k, v in info.items()
                    if k != "r_peaks_s"}, "beats": len(info["r_peaks_s"])}
