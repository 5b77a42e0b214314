"""Bad inputs and bad options, the way a new user makes them: every case exits with status 2 and one
message (``pinngs: error: ...``) that names the file or the option, prints no traceback, and leaves
every file that was there before untouched (the whole folder is hashed before and after).

Each case builds what it needs under tmp_path (a small valid study, an old output, a DICOM file that
is broken in one way) and runs the command in-process through ``pinngs.cli.main``; an uncaught
exception would fail the test with its traceback, so a returned status of 2 is also proof that none
reached the user."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pinngs.cli import main
from pinngs.geometry import CArmView
from pinngs.io.study import Frame, Study, save_study


def tiny_study(angles=((0.0, 0.0), (90.0, 0.0)), times=None, n=4) -> Study:
    """Two views (32², 1 mm pixels) of a bright vertical line filling up over n frames."""
    views = [CArmView(a, b, rows=32, cols=32, pixel_spacing_mm=(1.0, 1.0)) for a, b in angles]
    c = np.arange(32)
    line = np.tile(np.exp(-0.5 * ((c - 15.5) / 1.5) ** 2), (32, 1)).astype(np.float32)
    times = times or [0.1 * k for k in range(n)]
    frames = [Frame(((k + 1) / len(times) * line).astype(np.float32), v, t)
              for k, t in enumerate(times) for v in range(len(views))]
    return Study(views, frames, {1: "single", 2: "biplane"}.get(len(views), "multiview"), "line_integral")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("good") / "study"
    save_study(tiny_study(), d)
    return d


@pytest.fixture(scope="module")
def good_dicom(tmp_path_factory) -> list[Path]:
    from pinngs.io.dicom import write_xa

    return write_xa(tiny_study(), tmp_path_factory.mktemp("dcm"))


def tree(root: Path) -> dict:
    """Every file under root with its SHA-256, every folder with None."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    return out


def old_output(root: Path) -> Path:
    """A previous, good output a user would not want to lose."""
    o = root / "out"
    o.mkdir()
    (o / "summary.json").write_text('{"previous": "good result"}')
    (o / "lumen.stl").write_bytes(b"solid previous\n")
    return o


def _dicom_variant(tmp: Path, good_dicom: list[Path], edit) -> Path:
    import pydicom

    d = tmp / "dcm"
    d.mkdir()
    for k, f in enumerate(good_dicom):
        ds = pydicom.dcmread(f)
        edit(k, ds)
        ds.save_as(d / f.name)
    return d


# --------------------------------------------------------------------------------------------
# each case: (id, builder(tmp, good, good_dicom) -> argv, words the message must contain)
def _study_json(tmp, good, text):
    d = tmp / "s"
    shutil.copytree(good, d)
    (d / "study.json").write_text(text(json.loads((good / "study.json").read_text())))
    return d


def _saved(tmp, study):
    save_study(study, tmp / "s")
    return tmp / "s"


CASES = [
    # --- reconstruct: the study
    ("study-missing", lambda t, g, x: ["reconstruct", str(t / "nope"), "-o", str(t / "out")], ["nope", "does not exist"]),
    ("study-empty-folder", lambda t, g, x: ["reconstruct", str((t / "e").mkdir() or t / "e"), "-o", str(t / "out")],
     ["neither study.json nor DICOM"]),
    ("study-json-invalid", lambda t, g, x: ["reconstruct", str(_study_json(t, g, lambda d: "{not json")), "-o",
                                            str(t / "out")], ["study.json", "not valid JSON"]),
    ("study-json-missing-view-field", lambda t, g, x: ["reconstruct", str(_study_json(
        t, g, lambda d: json.dumps(d | {"views": [{k: v for k, v in d["views"][0].items() if k != "sid_mm"}, d["views"][1]]}))),
        "-o", str(t / "out")], ["views[0]", "sid_mm"]),
    ("study-json-wrong-version", lambda t, g, x: ["reconstruct", str(_study_json(t, g, lambda d: json.dumps(d | {"version": 7}))),
                                                  "-o", str(t / "out")], ["version", "7"]),
    ("study-frame-count", lambda t, g, x: ["reconstruct", str(_study_json(t, g, lambda d: json.dumps(d | {"n_frames": 3}))),
                                           "-o", str(t / "out")], ["n_frames"]),
    ("study-truncated-tiff", lambda t, g, x: ["reconstruct", str(_truncate(t, g)), "-o", str(t / "out")],
     ["frames[0]", "not a readable TIFF"]),
    ("study-nan-pixels", lambda t, g, x: ["reconstruct", str(_nan_frame(t)), "-o", str(t / "out")], ["NaN"]),
    ("study-one-view", lambda t, g, x: ["reconstruct", str(_saved(t, tiny_study(angles=((0.0, 0.0),)))), "-o",
                                        str(t / "out")], ["depth is not observable", "--allow-single-view"]),
    ("study-views-2deg-apart", lambda t, g, x: ["reconstruct", str(_saved(t, tiny_study(angles=((0.0, 0.0), (2.0, 0.0))))),
                                                "-o", str(t / "out")], ["2.0°", "--allow-single-view"]),
    ("study-opposite-views", lambda t, g, x: ["reconstruct", str(_saved(t, tiny_study(angles=((0.0, 0.0), (180.0, 0.0))))),
                                              "-o", str(t / "out")], ["depth is not observable"]),
    ("study-negative-times", lambda t, g, x: ["reconstruct", str(_study_json(
        t, g, lambda d: json.dumps(d | {"frames": [f | {"t_s": f["t_s"] - 1.0} for f in d["frames"]]}))),
        "-o", str(t / "out")], ["t_s", "≥ 0"]),
    ("study-times-not-increasing", lambda t, g, x: ["reconstruct", str(_study_json(
        t, g, lambda d: json.dumps(d | {"frames": d["frames"][:2] + [d["frames"][2] | {"t_s": 0.0}] + d["frames"][3:]}))),
        "-o", str(t / "out")], ["frames[2].t_s", "increase"]),
    # --- reconstruct: DICOM
    ("dicom-random-bytes", lambda t, g, x: ["reconstruct", str(_random_dcm(t)), "-o", str(t / "out")],
     ["junk.dcm", "not a readable DICOM"]),
    ("dicom-missing-tag", lambda t, g, x: ["reconstruct", str(_dicom_variant(t, x, lambda k, ds: delattr(ds, "DistanceSourceToDetector"))),
                                           "-o", str(t / "out")], ["DistanceSourceToDetector", ".dcm"]),
    ("dicom-zero-frames", lambda t, g, x: ["reconstruct", str(_dicom_variant(t, x, lambda k, ds: setattr(ds, "NumberOfFrames", 0))),
                                           "-o", str(t / "out")], ["NumberOfFrames", ".dcm"]),
    ("dicom-time-backwards", lambda t, g, x: ["reconstruct", str(_dicom_variant(t, x, _backwards)), "-o", str(t / "out")],
     ["FrameTimeVector", "backwards"]),
    ("dicom-two-patients", lambda t, g, x: ["reconstruct", str(_dicom_variant(t, x, lambda k, ds: setattr(ds, "PatientID", f"P{k}"))),
                                            "-o", str(t / "out")], ["PatientID", "'P0'", "'P1'", "--force-merge"]),
    ("dicom-two-studies", lambda t, g, x: ["reconstruct", str(_dicom_variant(t, x, lambda k, ds: setattr(ds, "StudyInstanceUID", f"1.2.{k}"))),
                                           "-o", str(t / "out")], ["StudyInstanceUID", "1.2.0", "1.2.1"]),
    # --- reconstruct: the output
    ("out-is-the-input", lambda t, g, x: ["reconstruct", str(g), "-o", str(g)], ["is the input"]),
    ("out-inside-the-input", lambda t, g, x: ["reconstruct", str(g), "-o", str(g / "frames" / "o")], ["inside the input"]),
    ("out-contains-the-input", lambda t, g, x: ["reconstruct", str(g), "-o", str(g.parent), "--overwrite"], ["contains the input"]),
    ("out-is-a-file", lambda t, g, x: ["reconstruct", str(g), "-o", str(_file(t))], ["is a file"]),
    ("out-under-a-file", lambda t, g, x: ["reconstruct", str(g), "-o", str(_file(t) / "sub")], ["is a file"]),
    ("out-not-empty", lambda t, g, x: ["reconstruct", str(g), "-o", str(old_output(t))], ["not empty", "--overwrite"]),
    ("overwrite-with-a-bad-study", lambda t, g, x: [
        "reconstruct", str(_study_json(t, g, lambda d: "{")), "-o", str(old_output(t)), "--overwrite"], ["study.json"]),
    ("resume-without-checkpoint", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--resume"],
     ["--resume", "no interrupted run"]),
    ("resume-another-studys-checkpoint", lambda t, g, x: _other_checkpoint(t, g), ["another study", "--overwrite"]),
    ("resume-past-iters", lambda t, g, x: _checkpoint_then(t, g, ["--resume", "--iters", "1"]), ["step 2", "--iters 1"]),
    ("interrupted-run-not-resumed", lambda t, g, x: _checkpoint_then(t, g, []), ["interrupted run", "--resume", "--overwrite"]),
    # --- reconstruct: options
    ("checkpoint-every-0", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--checkpoint-every", "0"],
     ["--checkpoint-every", "≥ 1"]),
    ("iters-0", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--iters", "0"], ["--iters", "1..1000000"]),
    ("iters-not-a-number", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--iters", "many"], ["--iters", "integer"]),
    ("threads-negative", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--threads", "-2"], ["--threads", "≥ 0"]),
    ("seed-negative", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--seed", "-1"], ["--seed", "≥ 0"]),
    ("pa-zero", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--pa-mmhg", "0"], ["--pa-mmhg", "> 0"]),
    ("pa-nan", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--pa-mmhg", "nan"], ["--pa-mmhg"]),
    ("cfd-res-zero", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--cfd-resolution", "0"],
     ["--cfd-resolution", "> 0.5"]),
    ("cfd-max-tets-negative", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--cfd-max-tets", "-5"],
     ["--cfd-max-tets", "≥ 0"]),
    ("flow-unknown", lambda t, g, x: ["reconstruct", str(g), "-o", str(t / "out"), "--flow", "magic"], ["--flow", "magic"]),
    # --- simulate
    ("simulate-out-under-a-file", lambda t, g, x: ["simulate", "tube-biplane", "-o", str(_file(t) / "sub")], ["is a file"]),
    ("simulate-out-not-empty", lambda t, g, x: ["simulate", "tube-biplane", "-o", str(old_output(t))], ["not empty"]),
    ("simulate-seed-negative", lambda t, g, x: ["simulate", "tube-biplane", "-o", str(t / "o"), "--seed", "-1"], ["--seed"]),
    ("simulate-unknown-preset", lambda t, g, x: ["simulate", "no-such-preset", "-o", str(t / "o")], ["no-such-preset"]),
    ("simulate-no-output", lambda t, g, x: ["simulate", "tube-biplane"], ["-o"]),
    # --- evaluate
    ("evaluate-invalid-truth-json", lambda t, g, x: _evaluate_bad_truth(t), ["truth.json", "not a readable JSON"]),
    ("evaluate-missing-recon", lambda t, g, x: ["evaluate", str(t / "none"), "--truth", str(t / "none2")], ["does not exist"]),
    ("evaluate-out-under-a-file", lambda t, g, x: ["evaluate", str(t), "--truth", str(t), "-o", str(_file(t) / "m.json")],
     ["is a file"]),
    ("evaluate-out-is-a-folder", lambda t, g, x: ["evaluate", str(t), "--truth", str(t), "-o", str(t)], ["is a folder"]),
    # --- demo
    ("demo-gaussians-negative", lambda t, g, x: ["demo", "-o", str(t / "d"), "--gaussians", "-10"], ["--gaussians", "30.."]),
    ("demo-views-0", lambda t, g, x: ["demo", "-o", str(t / "d"), "--views", "0"], ["--views", "1..32"]),
    ("demo-out-under-a-file", lambda t, g, x: ["demo", "-o", str(_file(t) / "d")], ["is a file"]),
    # --- watch
    ("watch-folder-missing", lambda t, g, x: ["watch", str(t / "nope"), "-o", str(t / "out")], ["nope", "not a folder"]),
    ("watch-out-is-the-input", lambda t, g, x: ["watch", str(g), "-o", str(g)], ["is the input"]),
    ("watch-budget-0", lambda t, g, x: ["watch", str(g), "-o", str(t / "out"), "--budget-s", "0"], ["--budget-s", "> 0"]),
    ("watch-resume-without-state", lambda t, g, x: ["watch", str(g), "-o", str(t / "out"), "--resume"],
     ["--resume", "no interrupted watch"]),
    ("watch-snapshot-every-negative", lambda t, g, x: ["watch", str(g), "-o", str(t / "out"), "--snapshot-every", "-1"],
     ["--snapshot-every"]),
]


def _file(t: Path) -> Path:
    f = t / "a_file"
    f.write_text("a regular file")
    return f


def _truncate(t: Path, g: Path) -> Path:
    d = t / "s"
    shutil.copytree(g, d)
    f = d / "frames" / "00000.tif"
    f.write_bytes(f.read_bytes()[:200])
    return d


def _nan_frame(t: Path) -> Path:
    import imageio.v3 as iio

    d = _saved(t, tiny_study())
    img = iio.imread(d / "frames" / "00001.tif").copy()
    img[3, 4] = np.nan
    iio.imwrite(d / "frames" / "00001.tif", img)
    return d


def _random_dcm(t: Path) -> Path:
    d = t / "dcm"
    d.mkdir()
    (d / "junk.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    return d


def _backwards(k, ds):
    ftv = [float(x) for x in ds.FrameTimeVector]
    ftv[2] = -50.0
    ds.FrameTimeVector = [str(x) for x in ftv]


def _checkpoint_then(t: Path, g: Path, extra: list[str]) -> list[str]:
    """An interrupted run (stopped after 2 fit steps, its checkpoint kept), then the command."""
    from pinngs.fit.batch import FitConfig
    from pinngs.reconstruct import reconstruct

    reconstruct(g, t / "out", FitConfig(iters=5, checkpoint_every=1), progress=False, stop_after=2)
    return ["reconstruct", str(g), "-o", str(t / "out"), "--iters", "5", *extra]


def _other_checkpoint(t: Path, g: Path) -> list[str]:
    other = _saved(t, tiny_study(times=[0.0, 0.15, 0.3, 0.45]))
    _checkpoint_then(t, other, [])
    return ["reconstruct", str(g), "-o", str(t / "out"), "--iters", "5", "--resume"]


def _evaluate_bad_truth(t: Path) -> list[str]:
    r, tr = t / "r", t / "truth"
    for d in (r, tr):
        d.mkdir()
        np.savez(d / "lumen.npz", occupancy=np.zeros((4, 4, 4), np.uint8), origin_mm=np.zeros(3), spacing_mm=0.1)
        (d / "centerline.csv").write_text("X,Y,Z,MaximumInscribedSphereRadius\n0,0,0,1\n0,0,1,1\n")
    (r / "summary.json").write_text('{"stenosis": []}')
    (tr / "truth.json").write_text("{this is not json")
    return ["evaluate", str(r), "--truth", str(tr)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_message_and_touches_nothing(case, tmp_path, good, good_dicom, capsys):
    name, build, words = case
    argv = build(tmp_path, good, good_dicom)
    before_tmp, before_good = tree(tmp_path), tree(good)
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, f"{name}: exit status {status}; stderr: {err}"
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    msg = [ln for ln in lines if ln.startswith("pinngs: error:") or ln.startswith("pinngs reconstruct: error:")
           or ": error:" in ln]
    assert msg, f"{name}: no error line in {err!r}"
    for w in words:
        assert w in err, f"{name}: {w!r} not in the message {err!r}"
    assert tree(tmp_path) == before_tmp, f"{name}: files under tmp_path changed"
    assert tree(good) == before_good


def test_the_corpus_has_forty_cases_or_more():
    assert len(CASES) >= 40


def test_threads_beyond_the_cores_are_capped_with_a_warning(tmp_path, good, capsys):
    import os

    from pinngs.cli import _threads, build_parser

    args = build_parser().parse_args(["reconstruct", str(good), "-o", str(tmp_path / "o"), "--threads", "100000"])
    assert _threads(args) == (os.cpu_count() or 1)
    assert "more than the" in capsys.readouterr().err
