import json

import pytest

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
    with pytest.raises(SystemExit):
        main(["demo"])  # argparse: -o is required
