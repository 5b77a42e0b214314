"""The angiography study: in memory (`Study`) and on disk (the study folder, DESIGN.md §6).

Study folder, format version 1::

    study.json          {"format": "pinngs-study", "version": 1, "mode": ..., "intensity": ...,
                         "n_frames": T, "views": [...], "frames": [...], "masks": [...]}
    frames/NNNNN.tif    one float32 TIFF per frame, [rows, cols]
    masks/VV.tif        raw intensity only: the mask (pre-contrast) image of each view

- ``mode``: "single" (1 view), "biplane" (2 views), "multiview" (3-6 views), "rotational" (one view per frame).
- ``intensity``: "line_integral" (frames already hold d = -ln(I_fill / I_mask)), or "raw" (frames
  hold detector intensity and ``masks`` the mask images; ``line_integrals()`` does the log
  subtraction).
- each view: the fields of ``CArmView`` (angles in degrees, distances in mm).
- each frame: {"file", "view" (index), "t_s"}.

The loader checks everything and raises one ``StudyError`` listing every problem, each with its
file and field. The writer builds the folder under a temporary name and renames it into place,
so a study is never half-written.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..geometry import CArmView
from .atomic import replace_dir, temp_dir_beside

FORMAT = "pinngs-study"
VERSION = 1
Mode = Literal["single", "biplane", "multiview", "rotational"]
Intensity = Literal["line_integral", "raw"]
VIEW_FIELDS = ("primary_deg", "secondary_deg", "sid_mm", "sod_mm", "rows", "cols", "pixel_spacing_mm",
               "principal_offset_mm")


class StudyError(ValueError):
    """A study that cannot be used, with every problem found (``problems``: list of strings)."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{where}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))


@dataclass
class Frame:
    """One projection image. ``image``: [rows, cols] float32; ``view``: index into Study.views."""

    image: np.ndarray
    view: int
    t_s: float


@dataclass
class Study:
    views: list[CArmView]
    frames: list[Frame]
    mode: Mode = "biplane"
    intensity: Intensity = "line_integral"
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # view -> [rows, cols], raw mode only
    meta: dict = field(default_factory=dict)

    def validate(self, where: str = "study") -> None:
        """Raise StudyError listing every inconsistency."""
        problems = _check_study(self)
        if problems:
            raise StudyError(where, problems)

    def line_integrals(self) -> list[np.ndarray]:
        """d = -ln(I_fill / I_mask) per frame (raw), or the frames as they are (line_integral)."""
        if self.intensity == "line_integral":
            return [f.image for f in self.frames]
        out = []
        for f in self.frames:
            m = self.masks[f.view]
            out.append((np.log(np.maximum(m, 1e-6)) - np.log(np.maximum(f.image, 1e-6))).astype(np.float32))
        return out

    def times_s(self) -> np.ndarray:
        return np.array([f.t_s for f in self.frames], dtype=np.float64)

    def fingerprint(self) -> str:
        """SHA-256 of everything a fit depends on (mode, intensity, views, frames with their images and
        times, masks): a checkpoint carries it, so that --resume refuses another study's checkpoint."""
        import hashlib

        h = hashlib.sha256(json.dumps([self.mode, self.intensity, [_view_to_json(v) for v in self.views]]).encode())
        for f in self.frames:
            h.update(np.asarray([f.view, f.t_s], np.float64).tobytes())
            h.update(np.ascontiguousarray(f.image, np.float32).tobytes())
        for vi in sorted(self.masks):
            h.update(np.ascontiguousarray(self.masks[vi], np.float32).tobytes())
        return h.hexdigest()


def _check_study(s: Study) -> list[str]:
    p: list[str] = []
    if s.mode not in ("single", "biplane", "multiview", "rotational"):
        p.append(f"mode: expected single, biplane, multiview or rotational, found {s.mode!r}")
    if s.intensity not in ("line_integral", "raw"):
        p.append(f"intensity: expected line_integral or raw, found {s.intensity!r}")
    if not s.views:
        p.append("views: a study needs at least one view")
    if not s.frames:
        p.append("frames: a study needs at least one frame")
    nv = len(s.views)
    if s.mode == "single" and nv != 1:
        p.append(f"views: single-plane needs 1 view, found {nv}")
    if s.mode == "biplane" and nv != 2:
        p.append(f"views: biplane needs 2 views, found {nv}")
    if s.mode == "multiview" and not 3 <= nv <= 6:
        p.append(f"views: multiview needs 3-6 views, found {nv}")
    if s.mode == "rotational" and nv != len(s.frames):
        p.append(f"views: rotational needs one view per frame, found {nv} views for {len(s.frames)} frames")
    for k, f in enumerate(s.frames):
        if not 0 <= f.view < nv:
            p.append(f"frames[{k}].view: {f.view} is not a view index (0..{nv - 1})")
            continue
        v = s.views[f.view]
        if f.image.shape != (v.rows, v.cols):
            p.append(f"frames[{k}]: image is {f.image.shape[0]}x{f.image.shape[1]} but view {f.view} "
                     f"is {v.rows}x{v.cols} (rows x cols)")
        elif not np.isfinite(f.image).all():
            p.append(f"frames[{k}]: image contains {int((~np.isfinite(f.image)).sum())} NaN/inf pixel(s)")
        if not math.isfinite(f.t_s):
            p.append(f"frames[{k}].t_s: must be finite, found {f.t_s}")
        elif f.t_s < 0:
            p.append(f"frames[{k}].t_s: frame times are seconds from the start of the run, ≥ 0; found {f.t_s}")
    last: dict[int, tuple[int, float]] = {}
    for k, f in enumerate(s.frames):  # per view, the frames must come in increasing time
        if 0 <= f.view < nv and math.isfinite(f.t_s):
            if f.view in last and not f.t_s > last[f.view][1]:
                j, tj = last[f.view]
                p.append(f"frames[{k}].t_s: {f.t_s} s is not after frames[{j}] ({tj} s) of the same view {f.view}: "
                         "frame times must increase within a view")
            last[f.view] = (k, f.t_s)
    if s.intensity == "raw":
        for vi in sorted({f.view for f in s.frames if 0 <= f.view < nv}):
            if vi not in s.masks:
                p.append(f"masks: raw intensity needs a mask image for view {vi}")
            elif s.masks[vi].shape != (s.views[vi].rows, s.views[vi].cols):
                p.append(f"masks[{vi}]: shape {s.masks[vi].shape} does not match view {vi}")
            elif not (np.isfinite(s.masks[vi]).all() and (s.masks[vi] > 0).all()):
                p.append(f"masks[{vi}]: raw mask intensities must be finite and positive")
    return p


# ------------------------------------------------------------------------------------------------
def _view_to_json(v: CArmView) -> dict:
    return {k: (list(getattr(v, k)) if isinstance(getattr(v, k), tuple) else getattr(v, k)) for k in VIEW_FIELDS}


def write_study_files(study: Study, root: Path) -> None:
    """Write study.json, frames/ and masks/ into the existing folder ``root`` (not atomic by itself)."""
    import imageio.v3 as iio

    study.validate("save_study")
    (root / "frames").mkdir()
    frames = []
    for k, f in enumerate(study.frames):
        name = f"frames/{k:05d}.tif"
        iio.imwrite(root / name, np.ascontiguousarray(f.image, dtype=np.float32))
        frames.append({"file": name, "view": int(f.view), "t_s": float(f.t_s)})
    masks = []
    if study.intensity == "raw":
        (root / "masks").mkdir()
        for vi, m in sorted(study.masks.items()):
            name = f"masks/{vi:02d}.tif"
            iio.imwrite(root / name, np.ascontiguousarray(m, dtype=np.float32))
            masks.append({"file": name, "view": int(vi)})
    doc = {"format": FORMAT, "version": VERSION, "mode": study.mode, "intensity": study.intensity,
           "n_frames": len(frames), "views": [_view_to_json(v) for v in study.views], "frames": frames,
           "masks": masks, "meta": study.meta}
    (root / "study.json").write_text(json.dumps(doc, indent=1))


class AtomicFolder:
    """Build a folder under a temporary sibling name; rename it into place only on success.

        with AtomicFolder(out, overwrite=False) as tmp:
            ...write into tmp...
    """

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False) -> None:
        self.out = Path(folder)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())) and not overwrite:
            raise FileExistsError(f"{self.out} exists and is not empty; choose another folder or allow overwriting")

    def __enter__(self) -> Path:
        self.tmp = temp_dir_beside(self.out)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        replace_dir(self.tmp, self.out)  # the old folder stays until the new one is complete
        return False


def save_study(study: Study, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``study`` as a study folder, atomically (temporary sibling, then rename)."""
    study.validate("save_study")
    with AtomicFolder(folder, overwrite) as tmp:
        write_study_files(study, tmp)
    return Path(folder)


def _read_image(path: Path, label: str, problems: list[str]) -> np.ndarray | None:
    import imageio.v3 as iio

    if not path.is_file():
        problems.append(f"{label}: file {path} does not exist")
        return None
    try:
        img = np.asarray(iio.imread(path))
    except Exception as err:  # imageio raises many types for corrupt files; report, don't crash
        problems.append(f"{label}: {path} is not a readable TIFF ({type(err).__name__}: {err})")
        return None
    if img.ndim != 2:
        problems.append(f"{label}: {path} has shape {img.shape}, expected a single 2D image")
        return None
    if img.dtype != np.float32:
        problems.append(f"{label}: {path} is {img.dtype}, expected float32")
        return None
    return img


def load_study(folder: str | os.PathLike) -> Study:
    """Read and validate a study folder. Raises StudyError with every problem found."""
    root = Path(folder)
    sj = root / "study.json"
    if not sj.is_file():
        raise StudyError(str(root), [f"{sj} not found: is this a pinngs study folder?"])
    try:
        doc = json.loads(sj.read_text())
    except json.JSONDecodeError as err:
        raise StudyError(str(sj), [f"not valid JSON: {err}"]) from None
    p: list[str] = []
    if doc.get("format") != FORMAT:
        p.append(f"study.json: format: expected {FORMAT!r}, found {doc.get('format')!r}")
    if doc.get("version") != VERSION:
        raise StudyError(str(sj), p + [f"study.json: version: this pinngs reads version {VERSION}, found "
                                       f"{doc.get('version')!r}"])
    views = []
    for k, vd in enumerate(doc.get("views") or []):
        missing = [f for f in VIEW_FIELDS if f not in vd]
        if missing:
            p.append(f"study.json: views[{k}]: missing {', '.join(missing)}")
            continue
        try:
            views.append(CArmView(**{f: (tuple(vd[f]) if isinstance(vd[f], list) else vd[f]) for f in VIEW_FIELDS}))
        except (TypeError, ValueError) as err:
            p.append(f"study.json: views[{k}]: {err}")
    fr = doc.get("frames") or []
    if doc.get("n_frames") != len(fr):
        p.append(f"study.json: n_frames is {doc.get('n_frames')} but frames lists {len(fr)}")
    on_disk = sorted(x.name for x in (root / "frames").glob("*")) if (root / "frames").is_dir() else []
    listed = sorted(Path(f.get("file", "")).name for f in fr)
    if on_disk != listed:
        extra, gone = set(on_disk) - set(listed), set(listed) - set(on_disk)
        p.append(f"frames/: holds {len(on_disk)} file(s), study.json lists {len(fr)}"
                 + (f"; not listed: {sorted(extra)[:5]}" if extra else "") + (f"; missing: {sorted(gone)[:5]}" if gone else ""))
    frames = []
    for k, f in enumerate(fr):
        for key in ("file", "view", "t_s"):
            if key not in f:
                p.append(f"study.json: frames[{k}]: missing {key}")
        if not all(key in f for key in ("file", "view", "t_s")):
            continue
        img = _read_image(root / f["file"], f"frames[{k}]", p)
        if img is not None:
            frames.append(Frame(img, int(f["view"]), float(f["t_s"])))
    masks = {}
    for m in doc.get("masks") or []:
        img = _read_image(root / m.get("file", "?"), f"masks[view {m.get('view')}]", p)
        if img is not None:
            masks[int(m["view"])] = img
    if p:
        raise StudyError(str(root), p)
    study = Study(views, frames, doc.get("mode"), doc.get("intensity"), masks, doc.get("meta") or {})
    study.validate(str(root))
    return study
