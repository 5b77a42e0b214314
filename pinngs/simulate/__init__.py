"""Ground-truth DSA simulator (DESIGN.md §6). Shares no code with the Gaussian rasterizer."""
from .presets import PRESETS, Acquisition, Preset, get_preset

__all__ = ["PRESETS", "Acquisition", "Preset", "get_preset", "simulate", "write_simulation"]


def __getattr__(name):  # the pipeline pulls in warp and scikit-fem: import it on first use
    if name in ("simulate", "write_simulation"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
