"""Physics-informed flow (DESIGN.md §5): non-dimensional scales, the coordinate MLP, PDE residuals
and the coupling of the Gaussians' attenuation to the PINN's concentration.

    scales = Scales.for_vessel(radius_mm=1.5, velocity_mm_s=200.0)
    net = FlowMLP()                                     # (x, y, z, t)* -> (c, u, v, w, p)*
    r = residuals(net, scales.nondim_xt(xt_mm_s), scales, diffusivity_mm2_s=1e-3)
    atten_vn = coupled_attenuation(field, net, scales, frame_times_s)   # a_i(t) = a_i c(m_i, t)
"""
from .coupling import coupled_attenuation
from .net import FlowMLP
from .residuals import Residuals, residuals
from .scales import Scales

__all__ = ["FlowMLP", "Residuals", "Scales", "coupled_attenuation", "residuals"]
