"""Fault tests: `pinngs reconstruct` and `pinngs watch` killed with SIGKILL at chosen moments, then
resumed; the outputs equal those of an uninterrupted run, and the output folder that existed before
is untouched until the new one is complete.

The moments are failpoints (``pinngs.io.atomic.failpoint``): the process reaches a named point,
says so with a file, and waits to be killed. The test waits for that file, not for a time, so it does
not depend on the machine's speed. One case kills at a random moment instead (a seeded delay after
the first checkpoint); its resume must give the same outputs whatever was interrupted.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pinngs.io.study import save_study

RECON = ["--flow", "reduced", "--iters", "60", "--checkpoint-every", "10", "--threads", "1", "--seed", "0"]
WATCH = ["--steps", "4", "--idle-timeout-s", "1.5", "--poll-s", "0.05", "--estimate-every", "0", "--threads", "1"]


def _cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinngs.cli", *args], capture_output=True, text=True,
                          env=None if env is None else os.environ | env, timeout=600)


def _killed_at(args: list[str], point: str, tmp: Path) -> None:
    """Run ``pinngs ARGS`` until it reaches the failpoint ``point`` ("name" or "name:n"), then SIGKILL it."""
    marker = tmp / f"{point.split(':')[0]}.reached"
    marker.unlink(missing_ok=True)
    p = subprocess.Popen([sys.executable, "-m", "pinngs.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=os.environ | {"PINNGS_FAILPOINT": point, "PINNGS_FAILPOINT_DIR": str(tmp)})
    t0 = time.time()
    while not marker.exists() and p.poll() is None and time.time() - t0 < 600:
        time.sleep(0.05)
    assert marker.exists(), f"the run never reached {point}: {p.stderr.read().decode()[-600:] if p.poll() is not None else ''}"
    p.send_signal(signal.SIGKILL)
    p.wait()


def _outputs(out: Path) -> dict:
    """What must be equal between runs: the fitted Gaussians, the lumen, the centerline and the
    figures of the summary (not its timings)."""
    g, lum = np.load(out / "gaussians.npz"), np.load(out / "lumen.npz")
    s = json.loads((out / "summary.json").read_text())
    flow = {k: s["flow"].get(k) for k in ("method", "status", "q_mm3_s", "dp_pa", "ffr", "lesions")}
    return {"gaussians": hashlib.sha256(b"".join(g[k].tobytes() for k in ("means_mm", "scales_mm", "quats_wxyz",
                                                                          "atten_per_mm"))).hexdigest(),
            "lumen": hashlib.sha256(lum["occupancy"].tobytes()).hexdigest(),
            "centerline": (out / "centerline.csv").read_text(), "stenosis": s["stenosis"], "flow": flow,
            "n_gaussians": s["n_gaussians"]}


def _old(out: Path) -> str:
    """A previous output in OUT, and its fingerprint."""
    out.mkdir(parents=True)
    (out / "summary.json").write_text('{"previous": true}')
    return (out / "summary.json").read_text()


@pytest.fixture(scope="module")
def study(tube_cine, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faults") / "study"
    save_study(tube_cine[0], d)
    return d


@pytest.fixture(scope="module")
def reference(study, tmp_path_factory) -> dict:
    """The uninterrupted reconstruction."""
    out = tmp_path_factory.mktemp("ref") / "out"
    r = _cli(["reconstruct", str(study), "-o", str(out), *RECON])
    assert r.returncode == 0, r.stderr
    return _outputs(out)


@pytest.mark.parametrize("point", ["checkpoint:2", "write", "swap"])
def test_reconstruct_killed_then_resumed_equals_an_uninterrupted_run(point, study, reference, tmp_path):
    out = tmp_path / "out"
    old = _old(out)
    args = ["reconstruct", str(study), "-o", str(out), "--overwrite", *RECON]
    _killed_at(args, point, tmp_path)
    # killed: the old output is exactly as it was; the checkpoint waits beside it
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"] and (out / "summary.json").read_text() == old
    assert (tmp_path / ".out.partial" / "checkpoint.pt").exists()
    # a plain rerun refuses to throw the interrupted run away; --resume finishes it
    r = _cli(["reconstruct", str(study), "-o", str(out), *RECON])
    assert r.returncode == 2 and "--resume" in r.stderr and "Traceback" not in r.stderr
    r = _cli(["reconstruct", str(study), "-o", str(out), "--resume", *RECON])
    assert r.returncode == 0, r.stderr
    assert _outputs(out) == reference
    assert not (tmp_path / ".out.partial").exists() and not (out / "checkpoint.pt").exists()


def test_reconstruct_killed_at_a_random_moment_then_resumed(study, reference, tmp_path):
    """A SIGKILL at a random time after the first checkpoint (whatever the process was doing): OUT is
    either the old folder or the new complete one, and a resume (when there is a run to resume)
    gives the uninterrupted run's outputs."""
    out = tmp_path / "out"
    old = _old(out)
    args = ["reconstruct", str(study), "-o", str(out), "--overwrite", *RECON]
    delay = np.random.default_rng(int(time.time())).uniform(0.0, 4.0)
    p = subprocess.Popen([sys.executable, "-m", "pinngs.cli", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ck = tmp_path / ".out.partial" / "checkpoint.pt"
    t0 = time.time()
    while not ck.exists() and p.poll() is None and time.time() - t0 < 600:
        time.sleep(0.05)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = (out / "gaussians.npz").exists()
    if not done:
        assert (out / "summary.json").read_text() == old
        r = _cli(["reconstruct", str(study), "-o", str(out), "--resume", *RECON])
        assert r.returncode == 0, r.stderr
    print(f"\nkilled {delay:.2f} s after the first checkpoint: {'finished before the kill' if done else 'resumed'}")
    assert _outputs(out) == reference


def test_a_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(study, tmp_path):
    out = tmp_path / "out"
    args = ["reconstruct", str(study), "-o", str(out), *RECON]
    marker = tmp_path / "checkpoint.reached"
    p = subprocess.Popen([sys.executable, "-m", "pinngs.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=os.environ | {"PINNGS_FAILPOINT": "checkpoint:2", "PINNGS_FAILPOINT_DIR": str(tmp_path),
                                           "PYTHONFAULTHANDLER": "1"},
                         # a Ctrl-C at a terminal: SIGINT at its default even where this test runs in a
                         # background job (which inherits SIGINT ignored: the child then never stopped)
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not marker.exists() and time.time() - t0 < 600:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    try:
        err = p.communicate(timeout=120)[1].decode()
    except subprocess.TimeoutExpired:  # say where it hangs (docs/decisions.md, "Reliability")
        p.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack to stderr
        err = p.communicate(timeout=60)[1].decode()
        pytest.fail("reconstruct did not exit within 120 s of Ctrl-C; its stacks:\n" + err[-6000:])
    assert p.returncode == 130 and "Traceback" not in err
    said = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("pinngs:")]  # not the progress bar
    assert len(said) == 1 and "--resume" in said[0] and "step 20" in said[0], said
    assert not out.exists() and (tmp_path / ".out.partial" / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def watch_reference(study, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("wref") / "out"
    r = _cli(["watch", str(study), "-o", str(out), *WATCH])
    assert r.returncode == 0, r.stderr
    return _outputs(out)


def test_watch_killed_then_resumed_equals_an_uninterrupted_run(study, watch_reference, tmp_path):
    out = tmp_path / "out"
    args = ["watch", str(study), "-o", str(out), "--snapshot-every", "10", *WATCH]
    _killed_at(args, "watch-state:2", tmp_path)  # after 20 frames
    assert not out.exists()
    w = json.loads((tmp_path / ".out.partial" / "watcher.json").read_text())
    assert w["accepted"] == 20
    r = _cli(["watch", str(study), "-o", str(out), "--resume", *WATCH])
    assert r.returncode == 0, r.stderr
    assert _outputs(out) == watch_reference
    assert not (tmp_path / ".out.partial").exists()


def test_watch_killed_while_writing_keeps_the_fit(study, watch_reference, tmp_path):
    """The second-signal case: the state is saved before the outputs are written, so a kill during
    the writing loses nothing; --resume writes them."""
    out = tmp_path / "out"
    _killed_at(["watch", str(study), "-o", str(out), *WATCH], "write", tmp_path)
    assert not out.exists() and (tmp_path / ".out.partial" / "fitter.pt").exists()
    r = _cli(["watch", str(study), "-o", str(out), "--resume", *WATCH])
    assert r.returncode == 0, r.stderr
    assert _outputs(out) == watch_reference
