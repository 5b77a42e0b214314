"""Coronary realism, one factor at a time (issue 33): each realism preset against its static, ideal-DSA
twin, reconstructed as the product does and with the handling of that factor switched off.

    python -m benchmarks.bench_realism [--flow fem]

Factors measured so far: cardiac motion (stenosis50-motion-biplane against stenosis50-biplane;
handling: the ECG gate of the fit and the frame alignment of the transit curves, both on by default
when a study carries an ECG; ablation: ``--gate none``). Every row: `pinngs simulate --seed 0`,
`pinngs reconstruct --seed 0 --flow FLOW [--gate ...]`, `pinngs evaluate` against the end-diastolic
truth: Dice, radius MAE, % stenosis error, Q / ΔP / FFR errors, wall time. Writes
benchmarks/results/realism.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import CACHE, load_average, machine, md_table, run_cli, write_results

ROWS = [  # (factor, preset, label, extra reconstruct args)
    ("none (static, ideal DSA)", "stenosis50-biplane", "product", ()),
    ("cardiac motion 5 mm, 72 bpm", "stenosis50-motion-biplane", "product (ECG gate + aligned transit)", ()),
    ("cardiac motion 5 mm, 72 bpm", "stenosis50-motion-biplane", "no gate (--gate none)", ("--gate", "none")),
]
KEYS = ("dice", "radius_mae_mm", "stenosis_error_points", "flow_q_error_percent", "flow_dp_error_percent",
        "flow_ffr_abs_error")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flow", default="fem")
    args = ap.parse_args(argv)
    root = CACHE / "realism"
    rows = []
    for factor, preset, label, extra in ROWS:
        sim = root / "sim" / preset
        if not (sim / "truth" / "truth.json").exists():
            run_cli("simulate", preset, "-o", str(sim), "--seed", "0", "--overwrite")
        rec = root / "recon" / f"{preset}{'-' + '-'.join(x.strip('-') for x in extra) if extra else ''}"
        t0 = time.perf_counter()
        run_cli("reconstruct", str(sim), "-o", str(rec), "--overwrite", "--seed", "0", "--flow", args.flow, *extra)
        wall = time.perf_counter() - t0
        run_cli("evaluate", str(rec), "--truth", str(sim / "truth"), "-o", str(rec.parent / f"{rec.name}.json"))
        ev = json.loads((rec.parent / f"{rec.name}.json").read_text())
        s = json.loads((rec / "summary.json").read_text())
        g = s["fit"].get("gate") or {}
        rows.append({"factor": factor, "preset": preset, "reconstruction": label, "wall_s": wall,
                     "frames_fitted": s["fit"]["targets"]["n_frames_used"], "gate": g.get("gate"),
                     **{k: ev.get(k) for k in KEYS}})
        print(rows[-1], flush=True)
    cmd = f"python -m benchmarks.bench_realism --flow {args.flow}"
    m = machine()
    lines = ["# Coronary realism, one factor at a time", "",
             f"Machine: {m['machine']}, {m['cores']} cores, Python {m['python']}. Command: `{cmd}` (load average at the "
             f"end {load_average()}). Truth: the end-diastolic geometry (the R waves) for moving presets. Targets "
             "(issue 33, on the full coronary preset): Dice ≥ 0.85, radius MAE ≤ 0.15 mm, stenosis error ≤ 8 points, "
             "FFR error ≤ 0.05.", ""]
    fmt = lambda v, f: "–" if v is None else f.format(v)  # noqa: E731
    lines += md_table(["factor", "preset", "reconstruction", "frames fitted", "Dice", "radius MAE mm", "% sten err",
                       "Q err %", "ΔP err %", "FFR err", "wall s"],
                      [[r["factor"], r["preset"], r["reconstruction"], str(r["frames_fitted"]), fmt(r["dice"], "{:.3f}"),
                        fmt(r["radius_mae_mm"], "{:.3f}"), fmt(r["stenosis_error_points"], "{:.1f}"),
                        fmt(r["flow_q_error_percent"], "{:+.1f}"), fmt(r["flow_dp_error_percent"], "{:+.1f}"),
                        fmt(r["flow_ffr_abs_error"], "{:.4f}"), f"{r['wall_s']:.0f}"] for r in rows])
    lines += ["", "Not yet simulated: non-subtracted runs, the polychromatic spectrum, scatter, calcium (issue 33)."]
    write_results("realism", {"machine": m, "command": cmd, "rows": rows}, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
