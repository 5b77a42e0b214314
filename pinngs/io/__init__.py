"""Studies in and out: the pinngs study folder and DICOM XA."""
from .study import Frame, Study, StudyError, load_study, save_study

__all__ = ["Frame", "Study", "StudyError", "load_study", "save_study"]
