"""Simulation time of every preset on this machine (issue: each ≤ 5 min on the 2-core CPU).

    python -m benchmarks.bench_simulate [--presets a b ...]

Each preset runs `pinngs simulate PRESET -o TMP --seed 0` in its own process (so warp's kernel
compilation cache is warm after the first, as it is for a user), timed end to end including writing
the study, the truth and the preview. Writes benchmarks/results/simulate.json and simulate.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, cpu_name
BUDGET_S = 300.0


def main() -> None:
    from tqdm import tqdm

    from pinngs.simulate import PRESETS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    ap.add_argument("--merge", action="store_true",
                    help="keep the other presets' rows of the existing results (each row names its machine)")
    args = ap.parse_args()
    cpu = cpu_name()
    old = []
    if args.merge and (RESULTS / "simulate.json").exists():
        prev = json.loads((RESULTS / "simulate.json").read_text())
        old = [dict(r, machine=r.get("machine", prev["machine"]["cpu"])) for r in prev["rows"]
               if r["preset"] not in args.presets]
    rows = []
    for name in tqdm(args.presets, desc="presets"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "pinngs.cli", "simulate", name, "-o", f"{tmp}/s", "--seed", "0"],
                                 capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if out.returncode != 0:
                rows.append(dict(preset=name, ok=False, seconds=dt, error=out.stderr[-2000:], machine=cpu))
                continue
            truth = json.loads(Path(f"{tmp}/s/truth/truth.json").read_text())
            size = sum(f.stat().st_size for f in Path(f"{tmp}/s").rglob("*") if f.is_file())
            rows.append(dict(preset=name, ok=True, seconds=dt, within_budget=dt <= BUDGET_S, machine=cpu,
                             n_frames=truth["n_frames"], n_views=truth["n_views"], mode=truth["mode"],
                             flow_model=truth["flow_model"], dp_mmhg=truth["dp_mmhg"], q_ml_s=truth["q_ml_s"],
                             lumen_shape=truth["grids"]["lumen_shape"], output_mib=size / 2**20))
    order = {n: i for i, n in enumerate(PRESETS)}
    rows = sorted(old + rows, key=lambda r: order.get(r["preset"], len(order)))
    mach = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "simulate.json").write_text(json.dumps(dict(benchmark="simulate", machine=mach, budget_s=BUDGET_S,
                                                           rows=rows), indent=2))
    lines = ["# Simulation benchmark", "", f"Machine: {cpu}, {os.cpu_count()} cores, Python {mach['python']}. "
             f"Command: `python -m benchmarks.bench_simulate`. Budget: {BUDGET_S:.0f} s per preset. "
             "Rows rerun alone (`--merge`) name their own machine.", "",
             "| preset | mode | frames | flow model | ΔP (mmHg) | lumen grid (0.1 mm) | time (s) | ≤ budget | output MiB | machine |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['preset']} | FAILED | | | | | {r['seconds']:.1f} | no | |")
            continue
        lines.append(f"| {r['preset']} | {r['mode']} | {r['n_frames']} | {r['flow_model']} | {r['dp_mmhg']:.2f} | "
                     f"{'×'.join(map(str, r['lumen_shape']))} | {r['seconds']:.1f} | {'yes' if r['within_budget'] else 'NO'} | "
                     f"{r['output_mib']:.0f} | {r.get('machine', cpu)} |")
    (RESULTS / "simulate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for r in rows:
        if not r["ok"]:
            print(f"\n{r['preset']} failed:\n{r['error']}")


if __name__ == "__main__":
    main()
