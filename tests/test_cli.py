import json

from pinngs.cli import main


def test_demo_writes_pngs_and_metadata(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--views", "2", "--size", "48", "--gaussians", "300"]) == 0
    meta = json.loads((out / "render.json").read_text())
    assert len(meta["views"]) == 2
    for v in meta["views"]:
        assert (out / v["file"]).stat().st_size > 0 and v["max_line_integral"] > 0
    assert (out / "montage.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo")]  # no temp left


def test_demo_refuses_non_empty_output_and_bad_args(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["demo", "-o", str(out), "--size", "32"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["demo", "-o", str(tmp_path / "x"), "--size", "4"]) == 2
    assert "--size" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["demo"]) == 2  # argparse: -o is required
    assert "required" in capsys.readouterr().err


def test_version_and_help_show_the_defaults(capsys):
    from pinngs import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pinngs {__version__}"
    assert main(["reconstruct", "--help"]) == 0
    raw = capsys.readouterr().out
    text = " ".join(raw.split())
    # every option has a help text, and the defaults are shown as values, not code names
    assert "(default: 93.0)" in text and "(default: pinn)" in text and "(default: 500)" in text
    assert "FitConfig" not in text and "(default: None)" not in text.split("positional arguments")[1]
    from pinngs.fit.batch import FitConfig

    assert (FitConfig().iters, FitConfig().checkpoint_every) == (500, 50)  # the CLI's defaults are the library's
    from pinngs.fit.batch import PROJECTED_LEVEL_BELOW_DEG

    # --lumen-level: the library's default, and the help names the library's separation
    assert FitConfig().lumen_level == "auto" and "(default: auto)" in text
    assert f"{PROJECTED_LEVEL_BELOW_DEG:.0f}° or more apart" in text
    for opt in ("--seed", "--threads", "--checkpoint-every", "--resume", "--overwrite", "--allow-single-view"):
        line = raw.split(opt, 1)[1].split("\n  -", 1)[0]
        assert len(line.strip()) > 10, opt


def test_reconstruct_and_evaluate_bad_input(tmp_path, capsys):
    """Bad input to `pinngs reconstruct` / `pinngs evaluate`: exit 2, one message, no traceback, and
    nothing left behind."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    # a study that does not exist
    assert main(["reconstruct", str(tmp_path / "nope"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert not out.exists()
    # a study folder with a broken study.json
    bad = tmp_path / "bad_study"
    bad.mkdir()
    (bad / "study.json").write_text("{not json")
    assert main(["reconstruct", str(bad), "-o", str(out)]) == 2
    assert "study.json" in capsys.readouterr().err
    assert not out.exists()
    # a non-empty output folder is refused and kept as it was
    assert main(["reconstruct", str(bad), "-o", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    # --resume without a checkpoint; a negative thread count
    (busy / "keep.txt").write_text("mine")
    assert main(["reconstruct", str(bad), "-o", str(busy), "--resume"]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert main(["reconstruct", str(bad), "-o", str(out), "--threads", "-1"]) == 2
    assert "threads" in capsys.readouterr().err
    assert not out.exists()
    # an unknown lumen level
    assert main(["reconstruct", str(bad), "-o", str(out), "--lumen-level", "brightest"]) == 2
    err = capsys.readouterr().err
    assert "--lumen-level" in err and "auto" in err and "Traceback" not in err
    assert not out.exists()
    # evaluate: missing folders, and an unreadable lumen.npz
    res = tmp_path / "metrics.json"
    assert main(["evaluate", str(busy), "--truth", str(tmp_path / "none"), "-o", str(res)]) == 2
    assert "does not exist" in capsys.readouterr().err
    for d in (tmp_path / "r", tmp_path / "t"):
        d.mkdir()
        for f in ("lumen.npz", "centerline.csv"):
            (d / f).write_text("garbage")
        (d / "summary.json").write_text('{"stenosis": []}')
        (d / "truth.json").write_text("{}")
    assert main(["evaluate", str(tmp_path / "r"), "--truth", str(tmp_path / "t"), "-o", str(res)]) == 2
    err = capsys.readouterr().err
    assert "not a readable .npz" in err and "Traceback" not in err
    assert not res.exists()


def test_reconstruct_failing_fit_leaves_no_output(tmp_path, capsys):
    """A study with no contrast fails in the fit: exit 2 and no OUT folder."""
    import numpy as np

    from pinngs.geometry import CArmView
    from pinngs.io.study import Frame, Study, save_study

    views = [CArmView(a, 0, rows=32, cols=32, pixel_spacing_mm=(1.0, 1.0)) for a in (0, 90)]
    frames = [Frame(np.zeros((32, 32), np.float32), v, 0.1 * k) for k in range(3) for v in (0, 1)]
    save_study(Study(views, frames), tmp_path / "flat")
    out = tmp_path / "out"
    assert main(["reconstruct", str(tmp_path / "flat"), "-o", str(out), "--iters", "5"]) == 2
    assert "no contrast" in capsys.readouterr().err
    assert not out.exists()
