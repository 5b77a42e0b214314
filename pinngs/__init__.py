"""pinngs: vessel geometry and blood flow from X-ray angiography, with Gaussians and a PINN."""
from .field import GaussianField
from .geometry import CArmView, orbit, pack_views
from .ops import VoxelGrid
from .render import RenderSettings, render_views, voxelize_field

__version__ = "0.1.0"
__all__ = ["CArmView", "GaussianField", "RenderSettings", "VoxelGrid", "orbit", "pack_views",
           "render_views", "voxelize_field"]
