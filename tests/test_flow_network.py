"""How branches share the flow (pinngs.flow.network)."""
from __future__ import annotations

import math

import numpy as np
import pytest


def test_daughters_share_their_parents_flow_by_murrays_law():
    """split_flows: a Y (root 0, daughters 1 and 2, a grand-daughter 3 of daughter 2) whose daughters
    were timed over their parent, as the laminar transit model times a bifurcation's short daughters
    (pinngs.fit.online.DAUGHTER_SPLIT): "murray" keeps the root's Q, ignores the daughters' and splits by
    r³ so that each junction conserves mass; "transit" keeps the old rule (a daughter over its parent
    is treated as missing)."""
    from pinngs.flow.network import split_flows

    r = [1.6, 1.4, 1.1, 0.9]
    areas = [np.full(20, math.pi * x ** 2) for x in r]
    parents = [-1, 0, 0, 2]
    q = split_flows([1000.0, 1070.0, 450.0, 200.0], parents, areas)
    w1 = 1.4 ** 3 / (1.4 ** 3 + 1.1 ** 3)
    assert q == pytest.approx([1000.0, 1000.0 * w1, 1000.0 * (1 - w1), 1000.0 * (1 - w1)])
    assert q[1] + q[2] == pytest.approx(q[0])  # mass is conserved at the junction
    assert split_flows([1000.0, float("nan"), float("nan"), float("nan")], parents, areas) == pytest.approx(q)
    # the measured rule: daughter 1 (1070 > 1000) is missing and gets the rest, 1000 - 450
    assert split_flows([1000.0, 1070.0, 450.0, 200.0], parents, areas, "transit") == pytest.approx(
        [1000.0, 550.0, 450.0, 200.0])
    # a second root (a disconnected piece) keeps its own transit Q under either rule
    assert split_flows([1000.0, 300.0], [-1, -1], areas[:2]) == pytest.approx([1000.0, 300.0])
    with pytest.raises(ValueError, match="daughters must be 'murray' or 'transit'"):
        split_flows([1000.0], [-1], areas[:1], "poiseuille")
    with pytest.raises(ValueError, match="one entry per branch"):
        split_flows([1000.0, 1.0], [-1], areas[:1])
    # flow_on_lumen refuses a bad rule before any work (no study or lumen is looked at)
    from pinngs.flow.estimate import flow_on_lumen

    with pytest.raises(ValueError, match="flow_on_lumen: daughters must be 'murray' or 'transit'"):
        flow_on_lumen(None, np.zeros((2, 2, 2)), (0.0, 0.0, 0.0), 0.1, daughters="Murray")
