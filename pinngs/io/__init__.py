"""Studies in and out: the pinngs study folder, DICOM XA, the output files, the folder watcher.

    study = load_any_study(path)      # a study folder (study.json) or DICOM XA (a file or a folder)
"""
from __future__ import annotations

import os
from pathlib import Path

from .study import Frame, Study, StudyError, load_study, save_study

__all__ = ["Frame", "Study", "StudyError", "load_any_study", "load_study", "save_study"]


def load_any_study(path: str | os.PathLike, force_merge: bool = False) -> Study:
    """A study folder (study.json + frames/) or DICOM XA: one file, or a folder of .dcm files (of one
    patient and study unless ``force_merge``, see ``dicom.read_xa``).

    Raises:
        StudyError: the path does not exist, holds neither a study nor DICOM files, or the study
            folder is invalid.
        DicomError: a DICOM file cannot be read as an XA run.
    """
    p = Path(path)
    if not p.exists():
        raise StudyError(str(p), ["does not exist"])
    if p.is_dir() and (p / "study.json").exists():
        return load_study(p)
    from .dicom import read_xa

    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix.lower() in (".dcm", ".dicom") or q.suffix == "")
        files = [q for q in files if q.is_file()]
        if not files:
            raise StudyError(str(p), ["holds neither study.json nor DICOM files (*.dcm)"])
        return read_xa(files, force_merge=force_merge)
    return read_xa([p], force_merge=force_merge)
