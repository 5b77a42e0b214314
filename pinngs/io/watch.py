"""New frames in a watched folder (``pinngs watch``): a study folder being written, or DICOM XA
files arriving.

    w = FolderWatcher(Path("incoming"))
    for image, view, t_s, label in w.poll(): ...     # the frames new since the last poll, in time order
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..geometry import CArmView
from .study import VIEW_FIELDS, Frame, Study


class WatchWarning(UserWarning):
    """A file in the watched folder was skipped (unreadable after ``retries`` polls)."""


class FolderWatcher:
    """New frames in a watched folder: a study folder (study.json lists views and frames; a frame is
    taken once its file reads) or DICOM XA files (*.dcm, taken once their size is stable over two
    polls). A file that cannot be read ``retries`` polls in a row is skipped with a warning."""

    def __init__(self, folder: Path, retries: int = 3) -> None:
        self.dir, self.retries = folder, retries
        self.done: set[str] = set()
        self.fails: dict[str, int] = {}
        self.sizes: dict[str, int] = {}

    def _failed(self, key: str, why: str) -> None:
        self.fails[key] = self.fails.get(key, 0) + 1
        if self.fails[key] >= self.retries:
            self.done.add(key)
            warnings.warn(f"skipping {key}: {why}", WatchWarning, stacklevel=2)

    @staticmethod
    def key_of(label: str) -> str:
        """The file a frame's label came from ("file.dcm[3]" -> "file.dcm"; a study frame's label is its file)."""
        return label.split("[", 1)[0] if label.endswith("]") else label

    def poll(self) -> list[tuple]:
        """[(image [H, W] line integrals, CArmView, t_s, label)] of the frames new since the last poll,
        in time order."""
        out = self._poll_study() if (self.dir / "study.json").exists() else []
        out += self._poll_dicom()
        return sorted(out, key=lambda x: (x[2], x[3]))

    def _poll_study(self) -> list[tuple]:
        import imageio.v3 as iio

        try:
            doc = json.loads((self.dir / "study.json").read_text())
            views = [CArmView(**{k: (tuple(v[k]) if isinstance(v[k], list) else v[k]) for k in VIEW_FIELDS})
                     for v in doc["views"]]
            frames = list(doc["frames"])
            intensity = doc.get("intensity", "line_integral")
        except (OSError, ValueError, KeyError, TypeError) as e:  # being written, or broken: retry, then say so
            self._failed("study.json", f"unreadable ({type(e).__name__}: {e})")
            if "study.json" in self.done:  # give it another chance on the next change
                self.done.discard("study.json")
                self.fails["study.json"] = 0
            return []
        masks = {int(m["view"]): m["file"] for m in doc.get("masks") or [] if "view" in m and "file" in m}
        out = []
        for k, fr in enumerate(frames):
            key = str(fr.get("file", f"frames[{k}]"))
            if key in self.done or not (self.dir / key).is_file():
                continue
            try:
                vi, t = int(fr["view"]), float(fr["t_s"])
                view = views[vi]
                img = np.asarray(iio.imread(self.dir / key), dtype=np.float32)
                if img.ndim != 2 or img.size == 0:
                    raise ValueError(f"expected one 2D image, read an array of shape {img.shape}")
                if intensity == "raw":
                    mask = np.asarray(iio.imread(self.dir / masks[vi]), dtype=np.float32)
                    img = Study([view], [Frame(img, 0, t)], "single", "raw", {0: mask}).line_integrals()[0]
            except Exception as e:  # noqa: BLE001 - a partial or corrupt file: retry, then skip with a warning
                self._failed(key, f"{type(e).__name__}: {e}")
                continue
            self.done.add(key)
            out.append((img, view, t, key))
        return out

    def _poll_dicom(self) -> list[tuple]:
        from .dicom import read_xa

        out = []
        for q in sorted(self.dir.iterdir()):
            if q.suffix.lower() not in (".dcm", ".dicom") or not q.is_file() or q.name in self.done:
                continue
            size = q.stat().st_size
            if self.sizes.get(q.name) != size:  # still growing (or new): look again next poll
                self.sizes[q.name] = size
                continue
            try:
                st = read_xa([q])
                imgs = st.line_integrals()
            except Exception as e:  # noqa: BLE001 - DicomError or a truncated file: retry, then skip
                self._failed(q.name, f"{type(e).__name__}: {e}")
                continue
            self.done.add(q.name)
            out += [(im, st.views[f.view], f.t_s, f"{q.name}[{k}]") for k, (im, f) in enumerate(zip(imgs, st.frames))]
        return out
