"""Physical constants and unit conversions: the one copy (DESIGN.md §4).

Internal units are mm, s, g; pressure is then in Pa (1 g·mm⁻¹·s⁻² = 1 Pa), dynamic viscosity in
Pa·s = g/(mm·s), density in g/mm³ and flow rate in mm³/s. mmHg appears only at I/O and in reports.
"""
from __future__ import annotations

RHO_BLOOD_G_MM3 = 1.06e-3  # blood density, g/mm³ (1060 kg/m³)
MU_BLOOD_PA_S = 3.5e-3  # blood dynamic viscosity, Pa·s = g/(mm·s) (3.5 cP)
PA_PER_MMHG = 133.322  # 1 mmHg in Pa
PA_AORTIC_MMHG = 93.0  # default mean aortic pressure for FFR = (Pa − ΔP) / Pa (DESIGN.md §5)


def pa_to_mmhg(p_pa: float) -> float:
    """Pressure in Pa → mmHg."""
    return p_pa / PA_PER_MMHG


def mmhg_to_pa(p_mmhg: float) -> float:
    """Pressure in mmHg → Pa."""
    return p_mmhg * PA_PER_MMHG
