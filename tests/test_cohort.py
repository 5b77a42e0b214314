"""`pinngs batch` (pinngs.cohort) and `pinngs simulate --cohort`: the manifest, a cohort through the
local Ray runtime with one study's worker killed mid-run and one broken study, the rerun that
completes the killed one and skips the rest, the cohort table and figure against a known truth."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pinngs.cohort import DEFAULTS, Job, ManifestError, read_manifest, run_cohort
from pinngs.io.study import save_study

FAST = ["--flow", "reduced", "--iters", "30"]


def _cli(args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "pinngs.cli", *args], capture_output=True, text=True,
                          env=None if env is None else os.environ | env, timeout=timeout)


def _table(out: Path) -> dict[str, dict]:
    with open(out / "cohort.csv") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def poiseuille_truth(folder: Path, radius_mm=1.2, q_mm3_s=300.0, length_mm=20.0, h_mm=0.15) -> Path:
    """A simulator-style truth/ folder for conftest's advected tube: its lumen, centerline, and the
    Poiseuille flow (u = 2Q/(πR²)(1 − r²/R²) along the axis, p falling by 8μQ/(πR⁴) per mm)."""
    from conftest import advected_tube
    from pinngs.units import MU_BLOOD_PA_S

    lo, h, inside, _, cl = advected_tube(radius_mm, q_mm3_s, length_mm, h_mm)
    axis = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
    start = -0.5 * length_mm * axis
    X = np.stack(np.meshgrid(*[lo[k] + h * np.arange(inside.shape[k]) for k in range(3)], indexing="ij"), -1)
    z = (X - start) @ axis
    r = np.linalg.norm(X - start - z[..., None] * axis, axis=-1)
    u = np.where(inside, 2 * q_mm3_s / (math.pi * radius_mm ** 2) * (1 - (r / radius_mm) ** 2), 0.0)
    grad = 8 * MU_BLOOD_PA_S * q_mm3_s / (math.pi * radius_mm ** 4)
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "lumen.npz", occupancy=(inside * 255).astype(np.uint8), origin_mm=lo, spacing_mm=h)
    np.savetxt(folder / "centerline.csv", cl, delimiter=",", fmt="%.6f", header="X,Y,Z,MaximumInscribedSphereRadius",
               comments="")
    np.savez_compressed(folder / "flow.npz", velocity_mm_s=(u[..., None] * axis).astype(np.float32),
                        pressure_pa=np.where(inside, grad * (length_mm - z), np.nan).astype(np.float32),
                        origin_mm=lo, spacing_mm=h)
    (folder / "truth.json").write_text(json.dumps({"q_mm3_s": q_mm3_s, "stenosis": None, "grad_pa_per_mm": grad}))
    return folder


@pytest.fixture(scope="module")
def cohort(tube_cine, tmp_path_factory) -> Path:
    """Three copies of the tube cine study, one with its Poiseuille truth, and a broken study."""
    d = tmp_path_factory.mktemp("cohort")
    for name in ("tube_a", "tube_b", "tube_c"):
        save_study(tube_cine[0], d / name)
    poiseuille_truth(d / "tube_a" / "truth")
    (d / "broken").mkdir()
    (d / "broken" / "study.json").write_text('{"format": "pinngs-study", ')  # cut short
    return d


# ------------------------------------------------------------------------------------------------
def test_manifest_rows_options_and_errors(cohort, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(f"path,id,iters,flow,truth,site\n{cohort / 'tube_a'},,40,fem,{cohort / 'tube_a' / 'truth'},north\n"
                 f"{cohort / 'tube_b'},second,,,,south\n")
    jobs = read_manifest(m, {"flow": "reduced"})
    assert [j.id for j in jobs] == ["tube_a", "second"]
    assert jobs[0].options["iters"] == 40 and jobs[0].options["flow"] == "fem" and jobs[0].truth
    assert jobs[1].options == DEFAULTS | {"flow": "reduced"} and jobs[1].truth is None
    assert jobs[1].meta == {"site": "south"}
    # relative paths are relative to the manifest; a folder of studies is a manifest too
    (cohort / "rel.csv").write_text("path\ntube_c\n")
    assert read_manifest(cohort / "rel.csv")[0].study == str((cohort / "tube_c").resolve())
    folder = read_manifest(cohort)
    assert [j.id for j in folder] == ["broken", "tube_a", "tube_b", "tube_c"]
    assert folder[1].truth == str((cohort / "tube_a" / "truth").resolve()) and folder[2].truth is None
    bad = {"id\nx\n": "no 'path' column", "path,id\na,x\nb,x\n": "also on line 2",
           "path,iters\na,0\n": "line 2: iters must be ≥ 1", "path,flow\na,cfd\n": "flow must be one of",
           "path,iter\na,3\n": "did you mean 'iters'", "path,id\na,../up\n": "cannot name an output folder",
           "path\n": "no studies"}
    for text, msg in bad.items():
        m.write_text(text)
        with pytest.raises(ManifestError, match=msg):
            read_manifest(m)
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "none.csv")


def test_a_cohort_on_ray_survives_a_killed_worker_and_a_broken_study(cohort, tmp_path):
    """4 studies through the local Ray runtime: one study's worker is killed mid-run (SIGKILL at its
    fit's checkpoint), one study is broken. The others succeed; the rerun completes the killed one
    from its checkpoint and skips the finished ones; the broken one fails again with its message."""
    m = tmp_path / "m.csv"
    m.write_text("path,id\n" + "".join(f"{cohort / n},{n}\n" for n in ("tube_a", "tube_b", "tube_c", "broken")))
    out, fp = tmp_path / "out", tmp_path / "fp"
    fp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "pinngs.cli", "batch", str(m), "-o", str(out), *FAST],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=os.environ | {"PINNGS_FAILPOINT": "checkpoint", "PINNGS_FAILPOINT_STUDY": "tube_b",
                                           "PINNGS_FAILPOINT_DIR": str(fp)})
    marker, t0 = fp / "checkpoint.reached", time.time()
    while not marker.exists() and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.1)
    assert marker.exists(), p.communicate()[1][-800:]
    worker = int(marker.read_text())
    assert worker != p.pid  # a Ray worker, not the batch itself
    os.kill(worker, signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    t = _table(out)
    assert {k: r["status"] for k, r in t.items()} == {"tube_a": "ok", "tube_b": "failed", "tube_c": "ok",
                                                       "broken": "failed"}
    assert "worker" in t["tube_b"]["error"] and "not valid JSON" in t["broken"]["error"]
    assert "failed: broken:" in err and "log.txt" in err
    assert (out / ".tube_b.partial" / "checkpoint.pt").is_file()  # the killed fit's checkpoint stays
    assert "Traceback" in (out / "broken" / "log.txt").read_text()
    finished = {k: json.loads((out / k / "batch.json").read_text())["finished"] for k in ("tube_a", "tube_c")}
    # the rerun: the killed study continues from its checkpoint, the finished ones are skipped
    r = _cli(["batch", str(m), "-o", str(out), *FAST])
    assert r.returncode == 1 and "3 of 4 studies done" in r.stdout, r.stderr
    t2 = _table(out)
    assert t2["tube_b"]["status"] == "ok" and t2["broken"]["status"] == "failed"
    assert {k: json.loads((out / k / "batch.json").read_text())["finished"] for k in finished} == finished
    assert "continuing from the checkpoint" in (out / "tube_b" / "log.txt").read_text()
    assert not (out / ".tube_b.partial").exists()
    # the resumed study's figures are those of the same study run whole
    for k in ("n_gaussians", "lumen_volume_mm3", "q_mm3_s", "dp_mmhg", "ffr"):
        assert t2["tube_b"][k] == t2["tube_a"][k], k
    # a third run has nothing left but the broken study
    assert "3 of 4" in _cli(["batch", str(m), "-o", str(out), *FAST, "--executor", "local"]).stdout


def test_local_executor_evaluates_against_the_truth_and_retries(cohort, tmp_path):
    out = tmp_path / "out"
    jobs = [Job("a", str(cohort / "tube_a"), str(cohort / "tube_a" / "truth"), DEFAULTS | {"flow": "reduced",
                                                                                         "iters": 30}, {"site": "x"}),
            Job("gone", str(tmp_path / "nowhere"), None, DEFAULTS | {"iters": 30})]
    from pinngs.cohort import prepare_output

    prepare_output(out, "test")
    rows = {r["id"]: r for r in run_cohort(jobs, out, executor="local", retries=2, progress=False)}
    assert rows["a"]["status"] == "ok" and rows["gone"]["status"] == "failed"
    assert rows["gone"]["attempts"] == 3 and "does not exist" in rows["gone"]["error"]
    assert rows["a"]["site"] == "x" and rows["a"]["dice"] > 0.8
    # the truth's ΔP between the estimate's sections is Poiseuille's gradient times their distance
    s = json.loads((out / "a" / "summary.json").read_text())["flow"]
    ev = json.loads((out / "a" / "evaluation.json").read_text())
    grad = json.loads((cohort / "tube_a" / "truth" / "truth.json").read_text())["grad_pa_per_mm"]
    a0, a1 = s["dp_section_arcs_mm"]
    assert ev["flow_dp_truth_pa"] == pytest.approx(grad * (a1 - a0), rel=0.03)
    assert ev["flow_q_error_percent"] == pytest.approx(100 * (s["q_mm3_s"] / 300.0 - 1))
    assert ev["flow_ffr_abs_error"] < 0.01
    assert (out / "cohort.png").stat().st_size > 10_000
    assert _table(out)["a"]["flow_dp_error_percent"] != ""


def test_batch_cli_refuses_bad_input_before_any_work(cohort, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    cases = [(["batch", str(tmp_path / "none.csv"), "-o", str(tmp_path / "o")], "no such manifest"),
             (["batch", str(cohort), "-o", str(tmp_path / "other")], "not a `pinngs batch` output"),
             (["batch", str(cohort), "-o", str(tmp_path / "o2"), "--executor", "local", "--address", "ray://x:1"],
              "--address needs --executor ray"),
             (["simulate", "tube-biplane", "--cohort", "2", "-o", str(tmp_path / "s")], "not both"),
             (["simulate", "--cohort", "0", "-o", str(tmp_path / "s")], "--cohort")]
    for args, msg in cases:
        r = _cli(args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert (tmp_path / "other" / "x.txt").read_text() == "mine" and not (tmp_path / "o").exists()


def test_simulated_cohort_presets_are_seeded_and_in_range():
    from pinngs.simulate.cohort import cohort_presets

    a, b, c = cohort_presets(16, seed=3), cohort_presets(16, seed=3), cohort_presets(16, seed=4)
    assert [x[2] for x in a] == [x[2] for x in b] and [x[2] for x in a] != [x[2] for x in c]
    meta = [x[2] for x in a]
    sev = np.array([m["true_severity"] for m in meta])
    assert np.all((sev == 0) | ((sev >= 0.25) & (sev <= 0.75))) and (sev > 0).sum() >= 8
    assert {m["views"] for m in meta} == {"biplane", "4view"}
    assert all(m["view_separation_deg"] >= 45 for m in meta)  # every study can resolve depth
    ph = a[0][1].phantom()
    assert ph.meta["radius_mm"] == pytest.approx(meta[0]["true_radius_mm"])
    assert a[0][1].q_mm3_s == pytest.approx(meta[0]["true_q_mm3_s"])
    assert a[0][1].noise["photons_per_pixel"] == pytest.approx(meta[0]["photons_per_pixel"])


@pytest.mark.slow
def test_simulated_cohort_end_to_end(tmp_path):
    """`pinngs simulate --cohort 2` then `pinngs batch` on it: the table holds the truth and the errors."""
    r = _cli(["simulate", "--cohort", "2", "-o", str(tmp_path / "s"), "--seed", "1"])
    assert r.returncode == 0, r.stderr
    r = _cli(["batch", str(tmp_path / "s"), "-o", str(tmp_path / "b"), "--flow", "reduced", "--iters", "200"])
    assert r.returncode == 0, r.stderr
    t = _table(tmp_path / "b")
    assert all(float(x["dice"]) > 0.85 and x["true_severity"] != "" and x["flow_q_error_percent"] != ""
               for x in t.values())
    assert (tmp_path / "b" / "cohort.png").is_file()


@pytest.mark.slow
def test_batch_on_a_ray_cluster_by_address(cohort, tmp_path):
    """The same batch sent to a running Ray cluster (`ray start --head`) by --address, both as a node
    address and through Ray Client (ray://); an address with no cluster is one clear error."""
    import shutil as sh

    ray_bin = sh.which("ray") or str(Path(sys.executable).parent / "ray")
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    m = tmp_path / "m.csv"
    m.write_text(f"path,id\n{cohort / 'tube_a'},a\n{cohort / 'broken'},bad\n")
    r = _cli(["batch", str(m), "-o", str(tmp_path / "none"), *FAST, "--address", "127.0.0.1:1"], env)
    assert r.returncode == 2 and "could not connect to the Ray cluster" in r.stderr and "Traceback" not in r.stderr
    up = subprocess.run([ray_bin, "start", "--head", "--port", "6391", "--ray-client-server-port", "10001",
                         "--num-cpus", "2", "--disable-usage-stats", "--include-dashboard=false"],
                        capture_output=True, text=True, env=env, timeout=120)
    try:
        assert up.returncode == 0, up.stderr[-800:]
        for k, addr in enumerate(("127.0.0.1:6391", "ray://127.0.0.1:10001")):
            r = _cli(["batch", str(m), "-o", str(tmp_path / f"o{k}"), *FAST, "--address", addr], env)
            assert r.returncode == 1 and "1 of 2 studies done" in r.stdout, r.stderr[-800:]
            assert _table(tmp_path / f"o{k}")["a"]["status"] == "ok"
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_cohort_table_as_csv_and_parquet(tmp_path):
    """cohort.csv always (columns in a fixed order, then the rest as they come); cohort.parquet with
    the same rows where pyarrow is installed."""
    from pinngs.cohort import write_table

    rows = [{"id": "a", "status": "ok", "dice": 0.9, "q_mm3_s": 1000.0, "lesion1_ffr": 0.8},
            {"id": "b", "status": "failed", "error": "ReconstructError: x"}]
    write_table(rows, tmp_path)
    t = _table(tmp_path)
    assert list(t["a"])[:4] == ["id", "status", "error", "q_mm3_s"] and t["b"]["lesion1_ffr"] == ""
    pq = pytest.importorskip("pyarrow.parquet")
    back = pq.read_table(tmp_path / "cohort.parquet").to_pylist()
    assert back[0]["dice"] == 0.9 and back[1]["error"] == "ReconstructError: x" and back[1]["dice"] is None
