"""pinngs: vessel geometry and blood flow from X-ray angiography, with Gaussians and a PINN."""
from .field import GaussianField
from .geometry import CArmView, orbit, pack_views
from .ops import VoxelGrid
from .render import RenderSettings, render_views, voxelize_field

__version__ = "0.1.0"
__all__ = ["CArmView", "GaussianField", "OnlineConfig", "OnlineFitter", "RenderSettings", "VoxelGrid", "orbit",
           "pack_views", "render_views", "voxelize_field"]


def __getattr__(name):  # the online fitter pulls in the fit and flow code: import it on first use
    if name in ("OnlineFitter", "OnlineConfig"):
        from . import online

        return getattr(online, name)
    raise AttributeError(f"module 'pinngs' has no attribute {name!r}")
