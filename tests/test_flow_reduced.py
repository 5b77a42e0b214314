"""Poiseuille + Young–Tsai pressure drop and FFR (pinngs.flow.reduced)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pinngs.flow.reduced import reduced_order_dp
from pinngs.laws import ffr
from pinngs.laws import young_tsai_dp_pa
from pinngs.units import MU_BLOOD_PA_S as MU_BLOOD
from pinngs.units import PA_PER_MMHG as MMHG_PA

R, Q = 1.5, 1000.0  # the tube: radius (mm), flow rate (mm³/s)


def test_reduced_order_dp_tube_and_lesion():
    s = np.linspace(0, 30, 301)
    br = np.column_stack([np.zeros_like(s), np.zeros_like(s), s, np.full_like(s, R)])
    A = np.full_like(s, math.pi * R ** 2)
    out = reduced_order_dp(br, A, Q, [], 5.0, 25.0)
    assert out["dp_pa"] == pytest.approx(8 * MU_BLOOD * Q * 20.0 / (math.pi * R ** 4), rel=1e-6)
    les = dict(arc_in_branch_mm=15.0, arc_from_inlet_mm=15.0, start_arc_mm=13.0, end_arc_mm=17.0,
               d_min_mm=1.5, d_ref_mm=3.0, length_mm=4.0)
    out = reduced_order_dp(br, A, Q, [les], 5.0, 25.0)
    yt = float(young_tsai_dp_pa(Q, 1.5, 0.75, 4.0))
    assert out["lesions_pa"][0]["dp_pa"] == pytest.approx(yt)
    assert out["viscous_pa"] == pytest.approx(8 * MU_BLOOD * Q * 16.0 / (math.pi * R ** 4), rel=1e-3)
    with pytest.raises(ValueError, match="must exceed"):
        reduced_order_dp(br, A, Q, [], 10.0, 5.0)
    # a weighted lesion: w · Young-Tsai + (1 - w) · the viscous integral across it
    full = 8 * MU_BLOOD * Q * 20.0 / (math.pi * R ** 4)
    for w in (0.0, 0.25, 1.0):
        out = reduced_order_dp(br, A, Q, [dict(les, weight=w)], 5.0, 25.0)
        assert out["dp_pa"] == pytest.approx(w * (yt + 8 * MU_BLOOD * Q * 16.0 / (math.pi * R ** 4)) + (1 - w) * full,
                                             rel=1e-3)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="weight"):
            reduced_order_dp(br, A, Q, [dict(les, weight=bad)], 5.0, 25.0)


def test_ffr():
    assert ffr(0.0) == 1.0
    assert ffr(20 * MMHG_PA, 100.0) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="positive"):
        ffr(1.0, 0.0)
