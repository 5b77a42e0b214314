"""What every benchmark shares: the machine's name, the cache of simulated studies and their
reconstructions, the product's flow estimate on a cached reconstruction, the simulator's truth, and
the result writers (json + md in ``benchmarks/results/``).

Run the benchmarks from the repository root as modules (``python -m benchmarks.bench_flow``), so that
``benchmarks`` is importable without editing ``sys.path``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"  # sim/<preset>, recon/<preset>[-seed<k>]: simulated studies and `pinngs reconstruct`
PA_MMHG = 93.0  # mean aortic pressure for FFR in every benchmark (the product's default)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The machine a result came from: CPU, cores, Python, torch, and the GPU when one is visible."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"machine": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": gpu}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where unknown): how busy the machine was."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def preset_case(name: str, cache: Path = CACHE, recon_seed: int = 0, recon_args: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """(study folder, reconstruction folder) of a simulator preset: ``pinngs simulate PRESET --seed 0``
    and ``pinngs reconstruct --seed recon_seed``, each run only when its output is not cached."""
    sim = cache / "sim" / name
    rec = cache / "recon" / (name if recon_seed == 0 else f"{name}-seed{recon_seed}")
    if not (sim / "truth" / "truth.json").exists():
        run_cli("simulate", name, "-o", str(sim), "--seed", "0", "--overwrite")
    if not (rec / "summary.json").exists():
        run_cli("reconstruct", str(sim), "-o", str(rec), "--overwrite", "--seed", str(recon_seed), *recon_args)
    return sim, rec


def run_cli(*args: str) -> None:
    """`pinngs ARGS...` in a subprocess; RuntimeError with the end of its stderr when it fails."""
    r = subprocess.run([sys.executable, "-m", "pinngs.cli", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pinngs {' '.join(args)} failed (exit {r.returncode}): {r.stderr[-800:]}")


def flow_on_reconstruction(study, rec: Path):
    """The product's flow estimate (``pinngs.flow.estimate.flow_on_lumen``) on a `pinngs reconstruct`
    output: its lumen.npz and centerline.csv, and the study's frames."""
    from pinngs.analysis.surface import occupancy_fraction
    from pinngs.flow.estimate import flow_on_lumen
    from pinngs.io.exports import read_centerline_csv

    z = np.load(rec / "lumen.npz")
    occ, origin, h = occupancy_fraction(z["occupancy"]), z["origin_mm"], float(z["spacing_mm"])
    return flow_on_lumen(study, occ, origin, h, read_centerline_csv(rec / "centerline.csv"))


class Truth:
    """The simulator's lumen, velocity and pressure (``truth/``), and metrics against them."""

    def __init__(self, sim: Path) -> None:
        from pinngs.analysis.surface import occupancy_fraction

        z = np.load(sim / "truth" / "lumen.npz")
        self.occ, self.origin = occupancy_fraction(z["occupancy"]), np.asarray(z["origin_mm"], float).reshape(3)
        self.h = float(np.asarray(z["spacing_mm"]).flat[0])
        F = np.load(sim / "truth" / "flow.npz")
        self.V, self.P = F["velocity_mm_s"], F["pressure_pa"]
        self.flow_origin, self.flow_h = np.asarray(F["origin_mm"], float), float(F["spacing_mm"])
        idx = np.argwhere(np.linalg.norm(self.V, axis=-1) > 0)
        self.pts, self.vel = self.flow_origin + self.flow_h * idx, self.V[tuple(idx.T)]
        self.doc = json.loads((sim / "truth" / "truth.json").read_text())

    def dice(self, occ, origin, h) -> float:
        from pinngs.analysis.evaluate import dice, resample_to

        return float(dice(resample_to(occ, np.asarray(origin, float), h, self.origin, self.h, self.occ.shape), self.occ))

    def vel_rel_l2(self, u: np.ndarray) -> float:
        """‖u − u_true‖ / ‖u_true‖ over the truth's flow points ([P, 3] u at ``self.pts``)."""
        return float(np.linalg.norm(u - self.vel) / np.linalg.norm(self.vel))

    def section_pressure(self, points_mm: np.ndarray, weights_mm2: np.ndarray) -> float:
        """Area-weighted mean of the truth's pressure over a section's points (points outside its
        lumen, NaN, are left out)."""
        from scipy.ndimage import map_coordinates

        ijk = ((np.asarray(points_mm, float) - self.flow_origin) / self.flow_h).T
        pv = map_coordinates(np.nan_to_num(self.P, nan=0.0), ijk, order=1)
        m = map_coordinates((~np.isnan(self.P)).astype(float), ijk, order=1)
        return float((pv * weights_mm2).sum() / max((m * weights_mm2).sum(), 1e-12))


# a disc of points [S, 3] and area weights [S] (mm²) normal to a centerline branch at an arc length
# (the product's own section sampler; the benchmarks' section means use the same one)
from pinngs.polyline import disc_points as disc_section  # noqa: E402,F401 (re-exported)


def fmt(v, spec: str = "{:.3f}", bold_if=None) -> str:
    """A table cell: '–' for None/NaN, bold where ``bold_if(v)`` (a missed target)."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    s = spec.format(v)
    return f"**{s}**" if bold_if is not None and bold_if(v) else s


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def write_results(name: str, payload: dict, md_lines: list[str], results: Path = RESULTS) -> tuple[Path, Path]:
    """``results/<name>.json`` (payload, numpy-safe) and ``results/<name>.md``; returns both paths."""
    results.mkdir(parents=True, exist_ok=True)
    j, m = results / f"{name}.json", results / f"{name}.md"
    j.write_text(json.dumps(payload, indent=1, default=_json_default))
    m.write_text("\n".join(md_lines) + "\n")
    return j, m


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
