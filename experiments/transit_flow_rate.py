"""Flow rate from bolus transit (pinngs.flow.transit) on simulated studies, against the true Q.

    python experiments/transit_flow_rate.py [--sim benchmarks/.cache/sim] [--recon benchmarks/.cache/recon]

For each preset with both a simulation and a reconstruction (as left by benchmarks/bench_reconstruct.py),
estimates Q per branch from the frames twice: on the true geometry (truth centerline and lumen) and on
the reconstructed one (centerline.csv and lumen.npz of the reconstruction), each with the laminar and
the plug transit model, using the curves upstream of the graded lesions. Prints a markdown table and
writes it, with the JSON, to experiments/results/transit_flow_rate.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from pinngs.flow.transit import fit_transit, section_areas, time_intensity_curves, upstream_of_lesions
from pinngs.analysis.stenosis import grade_stenosis
from pinngs.io.exports import read_centerline_csv
from pinngs.io import load_any_study

ROOT = Path(__file__).resolve().parents[1]


def estimate(study, geom_dir: Path, model: str, proximal: bool) -> dict:
    br = read_centerline_csv(geom_dir / "centerline.csv")
    lum = np.load(geom_dir / "lumen.npz")
    areas = section_areas(br, lum["occupancy"], lum["origin_mm"], float(lum["spacing_mm"]))
    curves = time_intensity_curves(study, br, areas_mm2=areas)
    lesions = grade_stenosis(br)
    if proximal:
        curves = upstream_of_lesions(curves, lesions)
    f = fit_transit(curves, model=model)
    return dict(q_mm3_s=f.q_mm3_s, q_std_mm3_s=f.q_std_mm3_s, rel_residual=f.rel_residual, n_curves=f.n_curves,
                n_lesions=len(lesions), bolus=f.bolus, conservation=f.q_conservation)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", default=str(ROOT / "benchmarks/.cache/sim"))
    ap.add_argument("--recon", default=str(ROOT / "benchmarks/.cache/recon"))
    args = ap.parse_args()
    rows = []
    for sim in sorted(Path(args.sim).iterdir()):
        rec = Path(args.recon) / sim.name
        if not (sim / "truth/truth.json").exists() or not (rec / "summary.json").exists():
            continue
        truth = json.loads((sim / "truth/truth.json").read_text())
        study = load_any_study(sim)
        for geom, gdir in (("truth", sim / "truth"), ("recon", rec)):
            for model in ("laminar", "plug"):
                for proximal in (True, False):
                    t0 = time.perf_counter()
                    try:
                        e = estimate(study, gdir, model, proximal)
                    except ValueError as err:
                        e = dict(error=str(err))
                    e.update(preset=sim.name, geometry=geom, model=model, proximal_only=proximal,
                             q_true_mm3_s=truth["q_mm3_s"], seconds=time.perf_counter() - t0)
                    if "q_mm3_s" in e:
                        e["q_error_percent"] = 100 * (e["q_mm3_s"][0] / truth["q_mm3_s"] - 1)
                    rows.append(e)
                    print(sim.name, geom, model, "proximal" if proximal else "whole",
                          f"{e.get('q_error_percent', float('nan')):+.1f} %", e.get("error", ""), flush=True)
    out = ROOT / "experiments/results"
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(machine=platform.processor() or platform.machine(), python=platform.python_version())
    (out / "transit_flow_rate.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1, default=float))
    lines = ["# Flow rate from bolus transit (inlet branch) against the true Q", "",
             "Error of Q of the inlet branch, in % (negative: underestimate). Curves upstream of graded lesions "
             "('proximal') or along the whole vessel ('whole').", "",
             "| preset | geometry | laminar, proximal | laminar, whole | plug, proximal | plug, whole |",
             "|---|---|---|---|---|---|"]
    for p in sorted({r["preset"] for r in rows}):
        for g in ("truth", "recon"):
            cells = []
            for m in ("laminar", "plug"):
                for prox in (True, False):
                    r = next(r for r in rows if r["preset"] == p and r["geometry"] == g and r["model"] == m
                             and r["proximal_only"] == prox)
                    cells.append(f"{r['q_error_percent']:+.1f}" if "q_error_percent" in r else "n/a")
            lines.append(f"| {p} | {g} | " + " | ".join(cells) + " |")
    (out / "transit_flow_rate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
