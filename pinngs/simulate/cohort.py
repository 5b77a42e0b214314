"""A simulated cohort for validation sweeps (``pinngs simulate --cohort N -o DIR``).

    jobs = cohort_presets(8, seed=0)            # [(id, Preset, meta)]: sampled grades, views, noise
    write_cohort(8, "out/cohort-study", seed=0)  # DIR/<id>/ (study + truth/) and DIR/manifest.csv

Each study is an axisymmetric stenosed straight vessel (its flow by the simulator's axisymmetric
FEM) with, drawn from one seeded generator: the % diameter stenosis (0, with probability 1/8, else
uniform in [25, 75] %), its length (4–10 mm), the vessel radius (1.2–2.0 mm), its direction, the flow
rate (0.6–1.5 ml/s), the views (biplane 60–100° apart, or four views) and the photon count (log-
uniform in 5e3–5e4 per pixel). ``DIR/manifest.csv`` lists every study with its truth and these
values, so ``pinngs batch DIR -o OUT`` reconstructs the cohort and tabulates the errors against the
truth. Studies already written are kept (the command continues an interrupted cohort); a folder that
holds another cohort (another N or seed) is refused unless ``overwrite``.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..geometry import CArmView, view_separation_deg
from ..io.atomic import OutputError, atomic_file, check_output
from .phantoms import straight_vessel
from .presets import Acquisition, Preset

META_COLUMNS = ("true_severity", "true_stenosis_length_mm", "true_radius_mm", "true_q_mm3_s", "views",
                "view_separation_deg", "photons_per_pixel")


def cohort_presets(n: int, seed: int = 0) -> list[tuple[str, Preset, dict]]:
    """``n`` sampled presets (module docstring) and what was drawn for each; deterministic in ``seed``."""
    if n < 1:
        raise ValueError(f"a cohort needs at least one study, got {n}")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        sev = 0.0 if rng.random() < 0.125 else float(rng.uniform(0.25, 0.75))
        length, radius = float(rng.uniform(4.0, 10.0)), float(rng.uniform(1.2, 2.0))
        direction = (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5)), 1.0)
        q = float(rng.uniform(600.0, 1500.0))
        photons = float(10 ** rng.uniform(np.log10(5e3), np.log10(5e4)))
        if rng.random() < 0.5:
            a1, sep = float(rng.uniform(-45.0, -15.0)), float(rng.uniform(60.0, 100.0))
            angles = ((round(a1, 1), round(float(rng.uniform(-20, 20)), 1)),
                      (round(a1 + sep, 1), round(float(rng.uniform(-20, 20)), 1)))
            acq, label = Acquisition("biplane", angles), "biplane"
        else:
            jitter = rng.uniform(-10.0, 10.0, (4, 2))
            angles = tuple((round(p + float(j[0]), 1), round(s + float(j[1]), 1))
                           for (p, s), j in zip(((-45.0, 20.0), (-10.0, -15.0), (30.0, 25.0), (70.0, 0.0)), jitter))
            acq, label = Acquisition("multiview", angles), "4view"
        sep_deg = float(view_separation_deg([CArmView(p, s) for p, s in angles]))
        sid = f"c{k:03d}"
        pre = Preset(f"cohort-{sid}", f"cohort study {sid}: {100 * sev:.0f} % stenosis ({length:.1f} mm) in a "
                                      f"{radius:.2f} mm vessel, {label}",
                     (lambda sev=sev, length=length, radius=radius, d=direction:
                      straight_vessel(f"cohort_{sid}", radius_mm=radius, severity=sev, stenosis_length_mm=length,
                                      direction=d)),
                     acq, q_mm3_s=q, flow="fem")
        pre = replace(pre, noise={**pre.noise, "photons_per_pixel": photons})
        out.append((sid, pre, {"true_severity": sev, "true_stenosis_length_mm": length, "true_radius_mm": radius,
                               "true_q_mm3_s": q, "views": label, "view_separation_deg": sep_deg,
                               "photons_per_pixel": photons}))
    return out


def write_cohort(n: int, folder: str | os.PathLike, seed: int = 0, overwrite: bool = False,
                 progress: bool = True) -> Path:
    """Simulate the cohort into ``folder`` (module docstring); returns its manifest.csv."""
    from tqdm import tqdm

    from .pipeline import simulate, write_simulation

    folder = Path(folder)
    spec = {"format": "pinngs-simulated-cohort", "version": 1, "n": n, "seed": seed}
    check_output(folder, [], allow_nonempty=True)
    doc = folder / "cohort.json"
    if folder.is_dir() and any(folder.iterdir()):
        try:
            old = json.loads(doc.read_text())
        except (OSError, ValueError):
            old = None
        if old != spec and not overwrite:
            raise OutputError(f"-o {folder}: the folder is not empty and does not hold this cohort (--cohort {n} "
                              f"--seed {seed}); choose another, or pass --overwrite")
        if old != spec:
            import shutil

            for p in folder.iterdir():  # --overwrite of something else: start again
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(doc) as fh:
        fh.write(json.dumps(spec, indent=1))
    jobs = cohort_presets(n, seed)
    for sid, pre, _ in tqdm(jobs, desc="simulate cohort", unit="study", disable=not progress):
        if (folder / sid / "truth" / "truth.json").is_file():
            continue  # written by an earlier, interrupted run
        write_simulation(simulate(pre, seed=seed * 1000 + int(sid[1:]), progress=False), folder / sid, overwrite=True)
    manifest = folder / "manifest.csv"
    with atomic_file(manifest) as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "truth", *META_COLUMNS])
        for sid, _, meta in jobs:
            w.writerow([sid, sid, f"{sid}/truth", *(f"{meta[c]:.6g}" if isinstance(meta[c], float) else meta[c]
                                                     for c in META_COLUMNS)])
    return manifest
