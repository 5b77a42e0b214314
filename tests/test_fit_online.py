"""Online fitting (pinngs.online, `pinngs watch`): a small biplane cine study of a Poiseuille tube with
an exactly advected bolus, projected by the simulator's ray marcher (not the rasterizer), is fed
frame by frame. Geometry improves with frames; bad frames are skipped with a warning and leave the
state bit-identical; a failing update rolls back; snapshots round-trip bit-exactly; the latency
budget bounds the time per frame; `pinngs watch` processes a folder as its files appear."""
from __future__ import annotations

import json
import math
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from pinngs.geometry import CArmView
from pinngs.io.study import Study, save_study
from pinngs.fit.online import OnlineConfig, OnlineFitter, OnlineFrameWarning
from pinngs.fit.batch import FitConfig

R_MM, Q_MM3_S, H_MM = 1.2, 300.0, 0.15  # the tube of conftest.tube_cine_study: radius, flow, grid


@pytest.fixture(scope="module")
def cine(tube_cine):
    """Biplane cine (2 x 22 frames, 96², 15 fps) of a tilted tube, contrast c = c_in(t − z/u(r)),
    small Gaussian noise (``conftest.tube_cine_study``); returns (study, truth occupancy, grid origin)."""
    return tube_cine


@pytest.fixture(scope="module")
def fed(cine):
    """A fitter that has absorbed the whole study (4 steps per frame); tests only read it."""
    study, _, _ = cine
    f = OnlineFitter(OnlineConfig(**FIXED))
    reps = _feed(f, study, range(len(study.frames)))
    return f, reps


def _dice(fitter: OnlineFitter, occ_t: np.ndarray, lo_t: np.ndarray) -> float:
    from scipy.ndimage import map_coordinates

    occ, origin, _ = fitter.lumen()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in occ_t.shape], indexing="ij"), 0).reshape(3, -1)
    ri = (lo_t[:, None] + H_MM * idx - origin[:, None]) / fitter.config.lumen_mm
    occ_r = map_coordinates(occ, ri, order=1, cval=0.0).reshape(occ_t.shape)
    a, b = occ_t > 0.5, occ_r > 0.5
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _feed(fitter: OnlineFitter, study: Study, frames) -> list:
    return [fitter.add_frame(study.frames[k].image, study.views[study.frames[k].view], study.frames[k].t_s)
            for k in frames]


# fixed work per frame (the budget is generous, max_steps bounds it): deterministic runs
FIXED = dict(latency_budget_s=30.0, min_steps=8, max_steps=8, lumen_mm=0.1)


def _state_tensors(f: OnlineFitter) -> dict:
    st = f._state()
    out = {"images": st["images"], "gen": st["gen"], "view": torch.tensor(st["frame_view"]),
           "t": torch.tensor(st["frame_t_s"], dtype=torch.float64), "steps": torch.tensor(st["total_steps"])}
    if st["field"] is not None:
        out |= {f"field.{k}": v for k, v in st["field"].items()}
        out |= {f"ema.{i}": v for i, v in enumerate(st["ema"] or [])}
        for k, s in sorted(st["opt"]["state"].items()):
            out |= {f"opt.{k}.{n}": v for n, v in s.items()}
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def test_geometry_improves_with_frames(cine, fed):
    study, occ_t, lo = cine
    f, reps = fed
    k_init = next(r.index for r in reps if r.event == "init")
    assert all(r.accepted for r in reps) and f.field is not None
    # geometry right after the initialisation, then after every further frame: compare by replaying
    g = OnlineFitter(OnlineConfig(**FIXED))
    _feed(g, study, range(k_init + 1))
    d_early, r_early = _dice(g, occ_t, lo), g.data_residual()
    d_late, r_late = _dice(f, occ_t, lo), f.data_residual()
    print(f"\ninit at frame {k_init}: Dice {d_early:.3f} -> {d_late:.3f}, data rel L2 {r_early:.3f} -> {r_late:.3f} "
          f"after {len(study.frames)} frames ({f.total_steps} steps, {len(f.field)} Gaussians)")
    assert d_late > d_early + 0.05
    assert r_late < 0.8 * r_early
    assert d_late > 0.75


def test_estimate_flow_with_confidence(fed):
    early = OnlineFitter().estimate()
    assert early.status.startswith("waiting") and math.isnan(early.q_mm3_s) and early.q_confidence == 0.0
    f, _ = fed
    e = f.estimate()
    print(f"\n{e.line()}; status {e.status}; {e.seconds:.1f} s")
    assert e.status == "ok"
    assert e.q_mm3_s == pytest.approx(Q_MM3_S, rel=0.25)
    # a straight tube: no lesion, and ΔP = Poiseuille 8 μ L Q / (π R⁴) between the two sections
    s0, s1 = e.dp_section_arcs_mm
    dp_poiseuille = 8 * 3.5e-3 * (s1 - s0) * Q_MM3_S / (math.pi * R_MM ** 4)
    print(f"ΔP {e.dp_pa:.1f} Pa, Poiseuille with the true Q and R {dp_poiseuille:.1f} Pa; lesions {e.stenosis}")
    assert e.stenosis == []
    assert e.dp_pa == pytest.approx(dp_poiseuille, rel=0.4)
    assert e.dp_mmhg == pytest.approx(e.dp_pa / 133.322)
    assert e.ffr == pytest.approx((93.0 - e.dp_mmhg) / 93.0) and 0 < e.ffr < 1
    for k in ("geometry_confidence", "q_confidence", "velocity_confidence", "dp_confidence", "ffr_confidence"):
        assert 0.0 < getattr(e, k) <= 1.0, k
    assert e.transit["branch_flows_mm3_s"][0] == pytest.approx(e.q_mm3_s)
    assert f.estimate() is e  # cached until a frame arrives
    # the velocity field: along the vessel inside, zero far outside
    cl = np.asarray(f._flow.branches[0])
    mid = cl[len(cl) // 2, :3]
    u = f.velocity_mm_s(np.stack([mid, mid + 10.0]))
    assert np.linalg.norm(u[0]) == pytest.approx(2 * e.q_mm3_s / (math.pi * R_MM ** 2), rel=0.4)
    assert np.all(u[1] == 0)
    assert f.pressure_pa(mid[None]).shape == (1,)


def test_bad_frames_are_skipped_and_leave_the_state_unchanged(cine):
    study, _, _ = cine
    f = OnlineFitter(OnlineConfig(**FIXED))
    n = 26  # past the initialisation
    _feed(f, study, range(n))
    assert f.field is not None
    before, history = _state_tensors(f), json.dumps(f.history)
    good = study.frames[n]
    v0 = study.views[good.view]
    nan_img = good.image.copy()
    nan_img[3, 4] = np.nan
    last = study.frames[n - 2]  # same view as `good`, earlier time
    bad = {
        "NaN": (nan_img, v0, good.t_s),
        "wrong shape": (good.image[:-1], v0, good.t_s),
        "3D": (good.image[None], v0, good.t_s),
        "not an array": ("garbage", v0, good.t_s),
        "duplicate": (last.image, study.views[last.view], last.t_s),
        "out of order": (good.image, v0, last.t_s - 0.01),
        "not a view": (good.image, {"primary_deg": 0}, good.t_s),
        "time NaN": (good.image, v0, float("nan")),
        "other detector size": (np.zeros((64, 64), np.float32), CArmView(10, 0, rows=64, cols=64), good.t_s),
    }
    for name, (img, view, t) in bad.items():
        with pytest.warns(OnlineFrameWarning, match="frame skipped"):
            rep = f.add_frame(img, view, t)
        assert not rep.accepted and rep.reason, name
        _assert_same(before, _state_tensors(f))
        assert json.dumps(f.history) == history, name  # a rejected frame leaves no trace, not even in the history
    assert f.n_frames == n
    assert f.add_frame(good.image, v0, good.t_s).accepted  # and the stream goes on


def test_failing_update_rolls_back(cine, monkeypatch):
    study, _, _ = cine
    f = OnlineFitter(OnlineConfig(**FIXED))
    _feed(f, study, range(26))
    before = _state_tensors(f)
    fr = study.frames[26]

    def nan_loss(sel):  # a step that poisons the parameters
        loss = f.field.means.sum() * float("nan")
        return loss, loss

    monkeypatch.setattr(f, "_loss", nan_loss)
    with pytest.warns(OnlineFrameWarning, match="rolled back"):
        rep = f.add_frame(fr.image, study.views[fr.view], fr.t_s)
    assert rep.accepted and rep.event == "rollback" and rep.steps == 0
    after = _state_tensors(f)
    for k in before:  # geometry, optimiser and RNG as before; the frame itself is kept
        if k not in ("images", "view", "t"):
            assert torch.equal(before[k], after[k]), k
    assert f.n_frames == 27

    def boom(sel):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(f, "_loss", boom)
    fr = study.frames[27]
    with pytest.warns(OnlineFrameWarning, match="simulated kernel failure"):
        f.add_frame(fr.image, study.views[fr.view], fr.t_s)
    assert all(bool(torch.isfinite(p).all()) for p in f.field.parameters())


def test_snapshot_restore_is_bit_exact(cine, tmp_path):
    study, _, _ = cine
    a = OnlineFitter(OnlineConfig(**(FIXED | dict(min_steps=2, max_steps=2))))  # fewer steps: faster
    _feed(a, study, range(30))
    e = a.estimate()
    path = a.snapshot(tmp_path / "state.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary left behind
    b = OnlineFitter.restore(path)
    _assert_same(_state_tensors(a), _state_tensors(b))
    assert json.dumps(b.history) == json.dumps(a.history)  # (NaN-aware)
    assert b.views == a.views and b.config == a.config
    assert b.estimate().to_dict() == e.to_dict()  # the cached estimate came along
    ra, rb = _feed(a, study, range(30, 34)), _feed(b, study, range(30, 34))
    assert [r.data_rel for r in ra] == [r.data_rel for r in rb]
    _assert_same(_state_tensors(a), _state_tensors(b))
    # unreadable or foreign files are refused with a message
    (tmp_path / "bad.pt").write_bytes(b"not a snapshot")
    with pytest.raises(ValueError, match="cannot be read"):
        OnlineFitter.restore(tmp_path / "bad.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pinngs online snapshot"):
        OnlineFitter.restore(tmp_path / "other.pt")


def test_latency_budget_bounds_the_time_per_frame(cine):
    study, _, _ = cine
    spent = {}
    for budget in (0.03, 0.12):
        # 1 thread: on a CPU shared with other jobs, every-core steps wait on each other, and one step
        # of a 30 ms budget took 94-134 ms in a CI run next to `make demo` (the budget logic is the same)
        f = OnlineFitter(OnlineConfig(latency_budget_s=budget, threads=1))
        reps = _feed(f, study, range(36))
        fit = [r for r in reps if r.steps and not r.event]  # (re)initialisations are reported, not budgeted
        secs = np.array([r.seconds for r in fit])
        steps = np.array([r.steps for r in fit])
        print(f"\nbudget {budget * 1e3:.0f} ms: {len(fit)} frames, p50 {np.median(secs) * 1e3:.0f} ms, "
              f"max {secs.max() * 1e3:.0f} ms, steps/frame median {np.median(steps):.0f}")
        # the loop stops before a step that would overrun: the overshoot is one step's variation
        # (a 96² step takes ~5-20 ms here, more when the shared CPU is busy)
        assert secs.max() <= budget + 0.1
        assert np.median(secs) >= 0.5 * budget  # the budget is used, not ignored
        spent[budget] = np.median(steps)
    assert spent[0.12] >= 2 * spent[0.03]


def test_write_outputs_and_from_batch(cine, fed, tmp_path):
    study, occ_t, lo = cine
    a, _ = fed
    out = tmp_path / "out"
    s = a.write_outputs(out)
    for name in ("gaussians.ply", "gaussians.npz", "lumen.npz", "lumen.stl", "lumen.obj", "centerline.csv",
                 "summary.json", "report.md", "report.png"):
        assert (out / name).is_file(), name
    assert s["online"]["frames_accepted"] == len(study.frames) and s["n_gaussians"] == len(a.field)
    with pytest.raises(ValueError, match="not empty"):  # io.atomic.OutputError
        a.write_outputs(out)
    b = OnlineFitter.from_batch(out, OnlineConfig(**FIXED), study=study)
    assert b.n_frames == len(study.frames) and b.total_steps == 0
    assert torch.allclose(b.field.means, a.model().means)  # the outputs hold the averaged field
    assert _dice(b, occ_t, lo) == pytest.approx(_dice(a, occ_t, lo), abs=0.02)
    with pytest.raises(FileNotFoundError, match="gaussians.npz"):
        OnlineFitter.from_batch(tmp_path)


def test_watch_processes_a_folder_as_files_appear(cine, tmp_path, capsys):
    from pinngs.cli import main

    study, _, _ = cine
    src = save_study(study, tmp_path / "src")
    watched = tmp_path / "incoming"
    (watched / "frames").mkdir(parents=True)
    doc = json.loads((src / "study.json").read_text())
    doc["frames"].append({"file": "frames/corrupt.tif", "view": 0, "t_s": 9.0})  # a broken file in the stream
    doc["n_frames"] += 1
    (watched / "study.json").write_text(json.dumps(doc))
    (watched / "truncated.dcm").write_bytes(b"\x00" * 200)  # and a broken DICOM file beside it

    def writer():  # frames arrive one by one, in acquisition order, while `watch` runs
        for fr in doc["frames"][:-1]:
            tmp = watched / (fr["file"] + ".part")
            shutil.copy(src / fr["file"], tmp)
            tmp.rename(watched / fr["file"])
            time.sleep(0.02)
        (watched / "frames" / "corrupt.tif").write_bytes(b"II*\x00garbage")

    th = threading.Thread(target=writer)
    th.start()
    out = tmp_path / "out"
    try:
        rc = main(["watch", str(watched), "-o", str(out), "--idle-timeout-s", "2", "--poll-s", "0.05",
                   "--budget-s", "0.05", "--steps", "20", "--estimate-every", "0",
                   "--snapshot", str(tmp_path / "w.pt")])
    finally:
        th.join()
    cap = capsys.readouterr()
    print(cap.out[-600:])
    assert rc == 0
    assert "skipping frames/corrupt.tif" in cap.err and "skipping truncated.dcm" in cap.err
    # which frames each step sees depends on when the files arrive, so on this tiny study the flow
    # estimate may come out unavailable (its accuracy is tested on the add_frame path above); the
    # final line must then say why
    assert "stopped (idle)" in cap.out and ("Q " in cap.out or "flow not available" in cap.out)
    s = json.loads((out / "summary.json").read_text())
    assert s["online"]["frames_accepted"] == len(study.frames)
    assert s["online"]["estimate"]["status"] == "ok" or s["online"]["estimate"]["status"].startswith("geometry only")
    for name in ("gaussians.ply", "lumen.stl", "centerline.csv", "report.md"):
        assert (out / name).is_file()
    assert OnlineFitter.restore(tmp_path / "w.pt").n_frames == len(study.frames)
    # refuses a non-empty output, and a missing folder, with a message
    assert main(["watch", str(watched), "-o", str(out)]) == 2
    assert main(["watch", str(tmp_path / "nope"), "-o", str(tmp_path / "o2")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_watch_reads_dicom_files(cine, tmp_path, capsys):
    from pinngs.cli import main
    from pinngs.io.dicom import write_xa

    study, _, _ = cine
    watched = tmp_path / "dcm"
    write_xa(study, watched)
    out = tmp_path / "out"
    rc = main(["watch", str(watched), "-o", str(out), "--idle-timeout-s", "0.5", "--poll-s", "0.05",
               "--budget-s", "0.05", "--estimate-every", "0", "--max-frames", "40"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "stopped (max-frames) after 40 frames" in cap.out
    s = json.loads((out / "summary.json").read_text())
    assert s["online"]["frames_accepted"] == 40 and s["n_views"] == 2


@pytest.mark.parametrize("bad, match", [
    (dict(latency_budget_s=0.0), "latency_budget_s"),
    (dict(min_steps=5, max_steps=2), "min_steps"),
    (dict(lr_floor=0.0), "lr_floor"),
    (dict(lr_decay_steps=-1), "lr_decay_steps"),
    (dict(rot_lr_decay_steps=-1), "rot_lr_decay_steps"),
    (dict(max_reinit=-1), "max_reinit"),
    (dict(reinit_growth=1.0), "reinit_growth"),
    (dict(lead_peak_frac=1.5), "lead_peak_frac"),
    (dict(fit=FitConfig(init_disc_window_mm=-1.0)), "init_disc_window_mm"),
])
def test_bad_config_is_refused_with_the_field_named(bad, match):
    with pytest.raises(ValueError, match=match):
        OnlineFitter(OnlineConfig(**bad))


def test_a_washing_out_frame_does_not_lead_the_steps(cine, monkeypatch):
    """Past its view's peak (net mass < lead_peak_frac of the largest), a new frame is not fitted on
    its own: the steps take frames near their own view's peak. Before the peak the new frame leads."""
    study, _, _ = cine
    f = OnlineFitter(OnlineConfig(**FIXED))
    _feed(f, study, range(30))
    assert f.field is not None
    seen = []
    orig = OnlineFitter._loss
    monkeypatch.setattr(OnlineFitter, "_loss", lambda self, sel, *a: (seen.append(list(sel)), orig(self, sel, *a))[1])
    m = np.asarray(f._net_masses())
    view = f.frame_view[-1]
    same = [k for k in range(len(m)) if f.frame_view[k] == view]
    peak = max(same, key=lambda k: m[k])
    # a frame of the view at 30-50 % of its peak contrast (a target, but not near the peak), sent
    # again as a late frame: what a washing-out frame looks like to the mass test
    dim = next(k for k in same if 0.32 < m[k] / m[peak] < 0.48)
    f.add_frame(study.frames[dim].image, study.views[view], 10.0)
    assert f.n_frames - 1 in f._targets().tolist()
    new = f.n_frames - 1
    assert seen and all(new not in s for s in seen)
    assert all(f._near_peak()[k] for s in seen for k in s)
    # the peak frame, sent again, leads every step
    seen.clear()
    f.add_frame(study.frames[peak].image, study.views[view], 11.0)
    assert seen and all(s == [f.n_frames - 1] for s in seen)


def test_a_pressure_drop_above_pa_is_flagged_implausible(fed):
    """ΔP ≥ Pa (FFR ≤ 0) means the geometry is wrong (a pinched ghost section of a young fit), not
    the patient: the estimate says so and gives ΔP and FFR zero confidence. Here Pa is set below the
    tube's ΔP."""
    import copy
    import dataclasses

    f = copy.deepcopy(fed[0])
    ok = f.estimate()
    assert ok.status == "ok" and ok.dp_confidence > 0
    f.config = dataclasses.replace(f.config, pa_mmhg=0.5 * ok.dp_mmhg)
    e = f.estimate(refresh=True)
    assert e.status.startswith("implausible") and "Pa" in e.status
    assert e.dp_confidence == 0.0 and e.ffr_confidence == 0.0 and e.ffr < 0
    assert e.q_confidence == ok.q_confidence > 0  # Q does not depend on Pa


def test_a_rotational_sweep_steps_through_the_whole_arc(monkeypatch):
    """One frame per angle: the new frame leads the first step of its budget only; the other steps
    take random opacified frames of the sweep, so the fit does not see just its last arc."""
    from conftest import stenosed_tube_sweep

    views, imgs, _, _ = stenosed_tube_sweep()
    n = len(views)
    rng = np.random.default_rng(0)
    frames = [(imgs[k] + 0.002 * rng.standard_normal(imgs[k].shape)).astype(np.float32) for k in range(n)]
    f = OnlineFitter(OnlineConfig(**FIXED))
    for k in range(n - 1):
        f.add_frame(frames[k], views[k], 0.05 * k)
    assert f.field is not None
    seen = []
    orig = OnlineFitter._loss
    monkeypatch.setattr(OnlineFitter, "_loss", lambda self, sel, *a: (seen.append(list(sel)), orig(self, sel, *a))[1])
    f.add_frame(frames[-1], views[-1], 0.05 * (n - 1))
    new = f.n_frames - 1
    assert len(seen) == FIXED["max_steps"] and seen[0] == [new]
    later = {k for s in seen[1:] for k in s}
    assert len(later - {new}) >= 4  # other angles of the sweep
    assert max(abs(views[k].primary_deg - views[new].primary_deg) for k in later) > 60.0
    # and its learning rates decay over rot_lr_decay_steps, not lr_decay_steps
    c, it = f.config, f.steps_since_init - 1  # the last step set its rates before counting itself
    assert it > 0 and f._rotational
    rot, multi = (max(c.lr_floor, 1 / (1 + it / n)) for n in (c.rot_lr_decay_steps, c.lr_decay_steps))
    assert abs(rot - multi) > 1e-3
    assert f.opt.param_groups[0]["lr"] == pytest.approx(c.fit.lr_means * rot, rel=1e-9)


def test_the_running_average_is_the_plain_mean_until_it_spans_its_window():
    """After a restart the outputs' average is the mean of the iterates (not weighted d^n towards the
    restart point) until it spans ema_frames x the steps per frame; then it decays by 1 - 1/window."""
    from pinngs.field import GaussianField

    for bad in (dict(ema_frames=-1.0), dict(ema_min_steps=-1)):
        with pytest.raises(ValueError, match="ema_frames"):
            OnlineConfig(**bad).validate()
    f = OnlineFitter(OnlineConfig(ema_frames=2.0, ema_min_steps=4))
    f.field = GaussianField(torch.zeros(2, 3), torch.ones(2, 3))
    f.steps_per_frame = 5.0  # a window of 10 steps
    xs = []
    for k in range(25):
        x = float(k % 7) + 0.1 * k
        with torch.no_grad():
            f.field.means.fill_(x)
        f._update_ema()
        xs.append(x)
        if k < 10:
            assert float(f.ema[0][0, 0]) == pytest.approx(np.mean(xs), rel=1e-5)
    ref = np.mean(xs[:10])
    for x in xs[10:]:
        ref = 0.9 * ref + 0.1 * x
    assert float(f.ema[0][0, 0]) == pytest.approx(ref, rel=1e-5)
    assert f.ema_n == 25
    f.ema = None  # a restart (a re-initialisation or densification sets it so)
    f._update_ema()
    assert f.ema_n == 1 and float(f.ema[0][0, 0]) == pytest.approx(xs[-1])
    # at about one step per frame the window is ema_min_steps (here 4 steps: decay 0.75)
    f.steps_per_frame = 1.0
    with torch.no_grad():
        f.field.means.fill_(1.0)
    for _ in range(3):
        f._update_ema()  # the mean of 4 iterates so far
    with torch.no_grad():
        f.field.means.fill_(0.0)
    f._update_ema()
    assert float(f.ema[0][0, 0]) == pytest.approx(0.75 * (0.25 * xs[-1] + 0.75))
    # without averaging, the output is the iterate
    g = OnlineFitter(OnlineConfig(ema_frames=0.0))
    g.field, g.steps_per_frame = f.field, 5.0
    for _ in range(3):
        g._update_ema()
    assert g.ema_n == 1


def test_the_average_window_follows_the_steps_per_frame(cine):
    """add_frame keeps a running mean of its steps per frame (what sets the window in steps)."""
    study, _, _ = cine
    f = OnlineFitter(OnlineConfig(**FIXED))
    reps = _feed(f, study, range(30))
    fit = [r.steps for r in reps if r.steps]
    assert fit and f.steps_per_frame == pytest.approx(FIXED["min_steps"])


def test_the_round_vessel_prior_reaches_the_initialisation(cine, monkeypatch):
    """``FitConfig.init_disc_window_mm`` is passed to the back-projection (a biplane run) and its weights drop
    the hull's corners: fewer Gaussians than the even hull of the same frames (the mass and the
    weights themselves: test_recon_fit's test_the_round_vessel_prior_turns_the_biplane_hull_into_a_disc)."""
    import pinngs.fit.online as online

    study, _, _ = cine
    seen = []
    real = online.backprojection_init
    monkeypatch.setattr(online, "backprojection_init", lambda *a: seen.append(a[4]) or real(*a))
    fields = {}
    for w in (0.0, 3.0):
        f = OnlineFitter(OnlineConfig(**{**FIXED, "min_steps": 1, "max_steps": 1},
                                      fit=FitConfig(init_disc_window_mm=w)))
        _feed(f, study, range(16))
        assert f.field is not None and seen[-1] == w
        fields[w] = len(f.field.means)
    even, disc = fields[0.0], fields[3.0]
    print(f"\nGaussians after 16 frames: even hull {even}, disc-weighted {disc}")
    assert disc < 0.9 * even
    assert OnlineConfig().fit.init_disc_window_mm == 3.0  # on by default (module docstring, Initialise)
