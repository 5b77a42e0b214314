"""pinngs: vessel geometry and blood flow from X-ray angiography, with Gaussians and a PINN."""
import os as _os

# MKL PARDISO (the reference CFD's sparse solver) is bitwise reproducible from run to run only in
# conditional-numerical-reproducibility mode; without it two identical 3D solves differed in the
# last digits, and `pinngs simulate` must be deterministic. AUTO,STRICT costs ~15 % of the solve
# (COMPATIBLE: 2.6x). Set before MKL first reads it; a value the user set wins.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
from .field import GaussianField
from .geometry import CArmView, orbit, pack_views
from .ops import VoxelGrid
from .render import RenderSettings, render_views, voxelize_field

__version__ = "0.1.0"
__all__ = ["CArmView", "GaussianField", "OnlineConfig", "OnlineFitter", "RenderSettings", "VoxelGrid", "orbit",
           "pack_views", "render_views", "voxelize_field"]


def __getattr__(name):  # the online fitter pulls in the fit and flow code: import it on first use
    if name in ("OnlineFitter", "OnlineConfig"):
        from .fit import online

        return getattr(online, name)
    raise AttributeError(f"module 'pinngs' has no attribute {name!r}")
