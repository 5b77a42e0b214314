"""A simulated cohort through `pinngs batch`: a Ray runtime on this machine against a serial loop.

    python -m benchmarks.bench_cohort [--n 8] [--flow fem] [--iters 500]

1. ``pinngs simulate --cohort N --seed 0`` (cached in benchmarks/.cache/cohort/sim);
2. the same batch twice, each into a fresh folder: ``--executor local`` (one study after the other,
   every core for each) and ``--executor ray`` (one study per task, one thread each, as many at once
   as there are cores);
3. for each: wall time, and CPU utilisation = busy CPU time over wall time × cores, read from
   /proc/stat (the whole machine: run it on an otherwise idle one); then the cohort's accuracy
   against the truth (the Ray run's cohort.csv: Dice, ΔP and FFR errors) and its cohort.png.

Writes benchmarks/results/cohort.{json,md} and cohort.png.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, RESULTS, load_average, machine, md_table, run_cli, write_results


def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat, every core)."""
    f = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = 100.0  # USER_HZ
    total = sum(f[:8]) / tick
    return total - (f[3] + f[4]) / tick, total


def timed_batch(sim: Path, out: Path, executor: str, flow: str, iters: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    b0, t0, w0 = *cpu_times(), time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pinngs.cli", "batch", str(sim), "-o", str(out), "--executor", executor,
                        "--flow", flow, "--iters", str(iters)], capture_output=True, text=True)
    if r.returncode not in (0, 1):  # 1: some studies failed (they are rows with their error)
        raise RuntimeError(f"pinngs batch failed (exit {r.returncode}): {r.stderr[-800:]}")
    wall = time.perf_counter() - w0
    b1, t1 = cpu_times()
    with open(out / "cohort.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {"executor": executor, "wall_s": wall, "cpu_utilisation": (b1 - b0) / max(t1 - t0, 1e-9),
            "studies_ok": sum(r["status"] == "ok" for r in rows), "studies": len(rows), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--flow", default="fem")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--cache", type=Path, default=CACHE / "cohort")
    args = ap.parse_args(argv)
    sim = args.cache / "sim"
    t0 = time.perf_counter()
    run_cli("simulate", "--cohort", str(args.n), "-o", str(sim), "--seed", "0")
    sim_s = time.perf_counter() - t0
    runs = [timed_batch(sim, args.cache / f"out-{ex}", ex, args.flow, args.iters) for ex in ("local", "ray")]
    serial, ray = runs
    rows = ray["rows"]
    num = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else np.nan  # noqa: E731
    acc = {k: [num(r, k) for r in rows] for k in ("dice", "flow_q_error_percent", "flow_dp_error_percent",
                                                   "flow_ffr_abs_error", "stenosis_error_points")}
    summary = {k: {"median": float(np.nanmedian(v)), "max_abs": float(np.nanmax(np.abs(v)))} for k, v in acc.items()}
    shutil.copy(args.cache / "out-ray" / "cohort.png", RESULTS / "cohort.png")
    cmd = f"python -m benchmarks.bench_cohort --n {args.n} --flow {args.flow} --iters {args.iters}"
    payload = {"machine": machine(), "command": cmd, "load_average_end": load_average(), "simulate_s": sim_s,
               "runs": [{k: v for k, v in r.items() if k != "rows"} for r in runs],
               "ray_over_serial_wall": ray["wall_s"] / serial["wall_s"], "accuracy": summary, "studies": rows}
    m = payload["machine"]
    lines = ["# Cohort benchmark: `pinngs batch` on Ray against a serial loop", "",
             f"Machine: {m['machine']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}. Command: `{cmd}` "
             f"(simulating the cohort: {sim_s:.0f} s, cached after the first run). Each executor ran the whole cohort "
             "into a fresh folder; CPU utilisation = busy CPU time of the whole machine over wall time × cores "
             "(/proc/stat).", ""]
    lines += md_table(["executor", "studies ok", "wall s", "CPU utilisation", "wall / serial"],
                      [[r["executor"], f"{r['studies_ok']} / {r['studies']}", f"{r['wall_s']:.0f}",
                        f"{100 * r['cpu_utilisation']:.0f} %", f"{r['wall_s'] / serial['wall_s']:.2f}"] for r in runs])
    lines += ["", f"## The cohort against its truth (the Ray run; `--flow {args.flow}`)", ""]
    lines += md_table(["id", "views", "true % sten", "% sten (recon)", "Dice", "Q err %", "ΔP Pa (truth)", "ΔP err %",
                       "FFR (truth)", "FFR err", "wall s"],
                      [[r["id"], r.get("views", ""), f"{100 * num(r, 'true_severity'):.0f}",
                        f"{num(r, 'worst_stenosis_percent'):.0f}", f"{num(r, 'dice'):.3f}",
                        f"{num(r, 'flow_q_error_percent'):+.1f}",
                        f"{num(r, 'flow_dp_pa'):.0f} ({num(r, 'flow_dp_truth_pa'):.0f})",
                        f"{num(r, 'flow_dp_error_percent'):+.1f}",
                        f"{num(r, 'flow_ffr'):.3f} ({num(r, 'flow_ffr_truth'):.3f})",
                        f"{num(r, 'flow_ffr_abs_error'):.4f}", f"{num(r, 'wall_s'):.0f}"] for r in rows])
    lines += ["", "Medians (max |·|): " + "; ".join(f"{k} {v['median']:.3g} ({v['max_abs']:.3g})"
                                                  for k, v in summary.items()),
              "", "![cohort](cohort.png)"]
    write_results("cohort", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
