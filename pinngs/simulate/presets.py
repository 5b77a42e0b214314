"""Simulator presets: a phantom, its flow, a contrast bolus and an acquisition, by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from .phantoms import Phantom, aneurisk_vessel, bifurcation, curved_vessel, straight_vessel

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Acquisition:
    """How the C-arm acquires. Cine modes: views at ``angles_deg`` (primary, secondary), all imaged
    at ``fps`` for ``duration_s``. Rotational: ``n_frames`` over ``sweep_deg`` in ``sweep_s``, each
    frame with its own angle and time."""

    mode: Literal["biplane", "multiview", "rotational"]
    angles_deg: tuple[tuple[float, float], ...] = ()
    fps: float = 15.0
    duration_s: float = 2.0
    sweep_start_deg: float = -100.0
    sweep_deg: float = 200.0
    n_frames: int = 133
    sweep_s: float = 4.0
    secondary_deg: float = 0.0
    detector_px: int = 256
    sid_mm: float = 1200.0
    sod_mm: float = 800.0


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    phantom: Callable[[], Phantom]
    acquisition: Acquisition
    q_mm3_s: float = 1000.0  # 1 ml/s: a coronary at rest-to-moderate flow
    flow: Literal["fem", "tet", "centerline"] = "centerline"  # axisymmetric FEM, 3D tetrahedral FEM, Poiseuille
    tet_n_per_radius: float = 2.0  # "tet": tetrahedra per local radius (flow.fem.mesh_lumen)
    bolus: dict = field(default_factory=lambda: {"t0_s": 0.1, "alpha": 3.0, "beta_s": 0.2})
    mu_peak_per_mm: float = 0.06  # attenuation of undiluted contrast in the lumen
    noise: dict = field(default_factory=lambda: {"photons_per_pixel": 2e4, "blur_sigma_px": 0.7,
                                                 "residual_amp": 0.005})
    # cardiac motion (simulate.motion.CardiacMotion's fields), None: a static vessel; with it the study
    # carries a synthetic ECG and the truth is the end-diastolic geometry
    motion: dict | None = None


BIPLANE = ((-30.0, 10.0), (60.0, -5.0))
FOUR = ((-45.0, 20.0), (-10.0, -15.0), (30.0, 25.0), (70.0, 0.0))

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("tube-biplane", "straight tube R 1.5 mm, 40 mm, biplane cine",
           lambda: straight_vessel("tube"), Acquisition("biplane", BIPLANE), flow="fem"),
    Preset("stenosis50-biplane", "axisymmetric 50 % stenosis (6 mm long) in a 1.5 mm tube, biplane cine",
           lambda: straight_vessel("stenosis50", severity=0.5), Acquisition("biplane", BIPLANE), flow="fem"),
    Preset("stenosis70-4view", "axisymmetric 70 % stenosis (6 mm long), 4-view cine",
           lambda: straight_vessel("stenosis70", severity=0.7), Acquisition("multiview", FOUR), flow="fem"),
    Preset("eccentric60-4view", "eccentric 60 % stenosis, 4-view cine (3D tetrahedral Navier-Stokes)",
           lambda: straight_vessel("eccentric60", severity=0.6, eccentric_mm=0.45), Acquisition("multiview", FOUR),
           flow="tet", tet_n_per_radius=2.5),
    Preset("bifurcation-4view", "Murray bifurcation, 60° angle, 4-view cine (3D tetrahedral Navier-Stokes)",
           lambda: bifurcation("bifurcation", angle_deg=60.0), Acquisition("multiview", FOUR), flow="tet"),
    Preset("curved-biplane", "curved vessel (25 mm bend radius, 90°), biplane cine (3D tetrahedral Navier-Stokes)",
           lambda: curved_vessel("curved"), Acquisition("biplane", BIPLANE), flow="tet"),
    Preset("stenosis50-rotational", "axisymmetric 50 % stenosis, rotational sweep 133 frames / 200° / 4 s",
           lambda: straight_vessel("stenosis50", severity=0.5),
           Acquisition("rotational", secondary_deg=5.0), flow="fem",
           bolus={"t0_s": 0.2, "alpha": 3.0, "beta_s": 0.5}),
    Preset("stenosis50-motion-biplane", "the 50 % stenosis of stenosis50-biplane moving with the heart (5 mm at 72 "
           "bpm, bending 1 mm), with its ECG: the motion factor of coronary realism alone",
           lambda: straight_vessel("stenosis50", severity=0.5), Acquisition("biplane", BIPLANE), flow="fem",
           motion={"amplitude_mm": 5.0, "heart_rate_bpm": 72.0, "bend_mm": 1.0}),
    Preset("aneurisk-4view", "real ICA centerline (AneuRisk C0015, 40 mm), 4-view cine (3D tetrahedral Navier-Stokes)",
           lambda: aneurisk_vessel(DATA / "aneurisk" / "C0015_centerlines.csv", branch=0, length_mm=40.0,
                                   name="aneurisk_C0015"), Acquisition("multiview", FOUR), flow="tet"),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
