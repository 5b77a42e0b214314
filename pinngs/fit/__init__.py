"""Fitting Gaussians to angiography frames: the batch fit of a whole study (``batch``) and the
online fitter that absorbs one frame at a time (``online``)."""
from .batch import FitConfig, FitResult, Targets, fit_study

__all__ = ["FitConfig", "FitResult", "OnlineConfig", "OnlineFitter", "Targets", "fit_study"]


def __getattr__(name):  # the online fitter pulls in the flow code: import it on first use
    if name in ("OnlineFitter", "OnlineConfig"):
        from . import online

        return getattr(online, name)
    raise AttributeError(f"module 'pinngs.fit' has no attribute {name!r}")
