"""Batch reconstruction of every simulator preset: accuracy against truth and wall time.

    python -m benchmarks.bench_reconstruct [--presets a b ...] [--iters N] [--cache DIR] [--flow METHOD]

For each preset: `pinngs simulate PRESET --seed 0` (cached in --cache, default
benchmarks/.cache/sim, so reruns skip it), then `pinngs reconstruct --flow none` (the geometry; the
flow stage has its own budget and benchmark, bench_flow) timed end to end in its own process (that
is the wall time quoted: fit, lumen, surface, centerline, grading, report) into
.cache/recon-geometry/ (not the flow benchmark's .cache/recon/), then
`pinngs.analysis.evaluate`. Writes benchmarks/results/reconstruct.json and reconstruct.md with the
issue's targets next to each figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import CACHE, RESULTS, cpu_name

# the targets: preset -> {metric: (op, value)}
FOUR_VIEW = {"dice": (">=", 0.90), "chamfer_mm": ("<=", 0.15), "radius_mae_mm": ("<=", 0.10),
             "stenosis_error_points": ("<=", 5.0)}
TARGETS = {
    "stenosis70-4view": FOUR_VIEW,
    "bifurcation-4view": FOUR_VIEW,
    "stenosis50-biplane": {"dice": (">=", 0.85), "stenosis_error_points": ("<=", 8.0)},
    "aneurisk-4view": {"dice": (">=", 0.85)},
}
WALL_BUDGET_S = 180.0


def _ok(v, op, t):
    if v is None:
        return False
    return v >= t if op == ">=" else v <= t


def main() -> None:
    from tqdm import tqdm

    from pinngs.analysis.evaluate import evaluate
    from pinngs.simulate import PRESETS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    ap.add_argument("--iters", type=int, default=None, help="fit steps (default: FitConfig.iters)")
    ap.add_argument("--cache", default=str(CACHE / "sim"))
    ap.add_argument("--tag", default="", help="suffix for the result files (e.g. _quick)")
    ap.add_argument("--flow", default="none", help="`pinngs reconstruct --flow` (default none: the geometry alone)")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in tqdm(args.presets, desc="presets"):
        sim = cache / name
        if not (sim / "truth" / "truth.json").exists():
            r = subprocess.run([sys.executable, "-m", "pinngs.cli", "simulate", name, "-o", str(sim), "--seed", "0",
                                "--overwrite"], capture_output=True, text=True)
            if r.returncode != 0:
                rows.append(dict(preset=name, ok=False, stage="simulate", error=r.stderr[-2000:]))
                continue
        out = cache.parent / "recon-geometry" / name
        if out.exists():
            shutil.rmtree(out)
        cmd = [sys.executable, "-m", "pinngs.cli", "reconstruct", str(sim), "-o", str(out), "--flow", args.flow]
        if args.iters:
            cmd += ["--iters", str(args.iters)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            rows.append(dict(preset=name, ok=False, stage="reconstruct", seconds=wall, error=r.stderr[-2000:]))
            continue
        m = evaluate(out, sim / "truth")
        s = json.loads((out / "summary.json").read_text())
        row = dict(preset=name, ok=True, wall_s=wall, n_views=s["n_views"], mode=s["mode"],
                   n_gaussians=s["n_gaussians"], fit_s=s["fit"]["seconds_fit"], data_rel_l2=s["fit"]["data_rel_l2"],
                   metrics=m, stenosis=s["stenosis"])
        tg = TARGETS.get(name, {})
        row["targets"] = {k: dict(op=op, value=t, measured=m.get(k), met=_ok(m.get(k), op, t))
                          for k, (op, t) in tg.items()}
        row["wall_within_budget"] = wall <= WALL_BUDGET_S
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("preset", "wall_s")} | {"metrics": m}, default=float), flush=True)
    cpu = cpu_name()
    mach = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"reconstruct{args.tag}.json").write_text(json.dumps(
        dict(benchmark="reconstruct", machine=mach, wall_budget_s=WALL_BUDGET_S, iters=args.iters, flow=args.flow, rows=rows),
        indent=2, default=float))
    cols = [("dice", "Dice", "{:.3f}"), ("chamfer_mm", "Chamfer mm", "{:.3f}"), ("hausdorff95_mm", "HD95 mm", "{:.3f}"),
            ("fscore_0.2mm", "F@0.2mm", "{:.3f}"), ("radius_mae_mm", "radius MAE mm", "{:.3f}"),
            ("centerline_rmse_mm", "CL RMSE mm", "{:.3f}"), ("stenosis_error_points", "% sten. err", "{:.1f}")]
    lines = ["# Reconstruction benchmark", "",
             f"Machine: {cpu}, {os.cpu_count()} cores, Python {mach['python']}. Command: "
             f"`python -m benchmarks.bench_reconstruct{' --iters ' + str(args.iters) if args.iters else ''}"
             f"{' --flow ' + args.flow if args.flow != 'none' else ''}`. "
             f"Wall time = the whole `pinngs reconstruct --flow {args.flow}` process (budget {WALL_BUDGET_S:.0f} s). "
             "A figure in **bold** misses the issue's target for that preset; targets are listed below the table.", "",
             "| preset | views | " + " | ".join(c[1] for c in cols) + " | Gaussians | wall s |",
             "|---|---|" + "---|" * len(cols) + "---|---|"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['preset']} | FAILED in {r['stage']} |" + " |" * (len(cols) + 2))
            continue
        cells = []
        for k, _, fmt in cols:
            v = r["metrics"].get(k)
            txt = "–" if v is None else fmt.format(v)
            t = r["targets"].get(k)
            cells.append(f"**{txt}**" if t and not t["met"] else txt)
        w = f"{r['wall_s']:.0f}" if r["wall_within_budget"] else f"**{r['wall_s']:.0f}**"
        lines.append(f"| {r['preset']} | {r['n_views']} | " + " | ".join(cells) + f" | {r['n_gaussians']} | {w} |")
    lines += ["", "Targets (issue 4): " + "; ".join(
        f"{p}: " + ", ".join(f"{k} {op} {v}" for k, (op, v) in t.items()) for p, t in TARGETS.items())
        + f"; every preset: wall ≤ {WALL_BUDGET_S:.0f} s.", ""]
    (RESULTS / f"reconstruct{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
