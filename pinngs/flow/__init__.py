"""Flow from DSA: the flow rate from bolus transit along the centerline (transit.py). The PINN
itself lives in pinngs.pinn."""
from .transit import fit_transit, section_areas, time_intensity_curves, upstream_of_lesions

__all__ = ["fit_transit", "section_areas", "time_intensity_curves", "upstream_of_lesions"]
