"""Study folder: round trip, atomic writes, and a clear error for each kind of bad input."""
import json

import numpy as np
import pytest

from pinngs.geometry import CArmView
from pinngs.io import Frame, Study, StudyError, load_study, save_study


def small_study(raw=False):
    views = [CArmView(-30, 20, rows=12, cols=16), CArmView(60, 0, rows=12, cols=16)]
    rng = np.random.default_rng(0)
    frames = [Frame(rng.random((12, 16), dtype=np.float32) + (1 if raw else 0), k % 2, 0.066 * k) for k in range(6)]
    masks = {0: np.full((12, 16), 2.0, np.float32), 1: np.full((12, 16), 2.0, np.float32)} if raw else {}
    return Study(views, frames, "biplane", "raw" if raw else "line_integral", masks, {"preset": "test"})


@pytest.mark.parametrize("raw", [False, True])
def test_round_trip(tmp_path, raw):
    s = small_study(raw)
    save_study(s, tmp_path / "s")
    r = load_study(tmp_path / "s")
    assert r.views == s.views and r.mode == s.mode and r.intensity == s.intensity and r.meta == s.meta
    np.testing.assert_array_equal(r.times_s(), s.times_s())
    for a, b in zip(r.frames, s.frames):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.view == b.view
    if raw:
        np.testing.assert_allclose(r.line_integrals()[0], np.log(2.0) - np.log(s.frames[0].image), rtol=1e-6, atol=1e-6)


def test_writer_refuses_non_empty_and_leaves_nothing_on_failure(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    with pytest.raises(FileExistsError):
        save_study(small_study(), tmp_path / "busy")
    bad = small_study()
    bad.frames[2].image[0, 0] = np.nan
    with pytest.raises(StudyError, match="NaN"):
        save_study(bad, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no partial output, no temp


def _saved(tmp_path):
    return save_study(small_study(), tmp_path / "s")


def test_truncated_tiff_names_the_file(tmp_path):
    root = _saved(tmp_path)
    f = root / "frames" / "00003.tif"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(StudyError, match=r"frames\[3\].*00003.tif.*not a readable TIFF"):
        load_study(root)


def test_nan_frame(tmp_path):
    import imageio.v3 as iio

    root = _saved(tmp_path)
    img = np.zeros((12, 16), np.float32)
    img[4, 4] = np.nan
    iio.imwrite(root / "frames" / "00001.tif", img)
    with pytest.raises(StudyError, match=r"frames\[1\]: image contains 1 NaN"):
        load_study(root)


def test_wrong_frame_count(tmp_path):
    root = _saved(tmp_path)
    doc = json.loads((root / "study.json").read_text())
    doc["n_frames"] = 7
    (root / "study.json").write_text(json.dumps(doc))
    (root / "frames" / "00005.tif").unlink()
    with pytest.raises(StudyError) as e:
        load_study(root)
    msg = str(e.value)
    assert "n_frames is 7 but frames lists 6" in msg and "missing: ['00005.tif']" in msg


def test_inconsistent_sizes(tmp_path):
    import imageio.v3 as iio

    root = _saved(tmp_path)
    iio.imwrite(root / "frames" / "00002.tif", np.zeros((10, 16), np.float32))
    with pytest.raises(StudyError, match=r"frames\[2\]: image is 10x16 but view 0 is 12x16"):
        load_study(root)


def test_wrong_json_version_and_format(tmp_path):
    root = _saved(tmp_path)
    doc = json.loads((root / "study.json").read_text())
    doc["version"] = 99
    (root / "study.json").write_text(json.dumps(doc))
    with pytest.raises(StudyError, match="version: this pinngs reads version 1, found 99"):
        load_study(root)
    (root / "study.json").write_text("{not json")
    with pytest.raises(StudyError, match="not valid JSON"):
        load_study(root)
    with pytest.raises(StudyError, match="not found"):
        load_study(tmp_path / "nowhere")


def test_bad_view_geometry_names_view_and_field(tmp_path):
    root = _saved(tmp_path)
    doc = json.loads((root / "study.json").read_text())
    doc["views"][1]["sod_mm"] = 5000
    del doc["views"][0]["rows"]
    (root / "study.json").write_text(json.dumps(doc))
    with pytest.raises(StudyError) as e:
        load_study(root)
    assert "views[0]: missing rows" in str(e.value) and "views[1]" in str(e.value) and "sod_mm" in str(e.value)


def test_mode_view_count_checked():
    s = small_study()
    s.mode = "multiview"
    with pytest.raises(StudyError, match="multiview needs 3-6 views"):
        s.validate()
