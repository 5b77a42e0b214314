"""The GPU benchmark rows (issue 29), run by ``benchmarks/gpu/run.sh`` on a machine with a CUDA GPU:

1. the rasterizer, forward and forward+backward, N = 1e4, 1e5, 1e6 vessel-like Gaussians through 4
   views of 512²: time, pixel-Gaussian pairs per second and that as a fraction of the card's FP32 peak
   (FLOP per pair stated below), peak memory;
2. the PINN: one Adam step on the steady Navier–Stokes residuals (JetMLP 8×128, 32 Fourier
   features) at 4096 and 65536 points, eager and with torch.compile, against nested autograd and the
   CPU side by side: steps per second;
3. a batch ``pinngs reconstruct --device cuda`` of the carried studies: geometry and flow wall time;
4. the online benchmark at a 33 ms budget on one preset (``benchmarks.bench_online --device cuda``).

    python -m benchmarks.gpu.bench --cache DIR --out benchmarks/results [--skip-online]

Writes gpu.json and gpu.md in --out, the card named. Each row is measured and written even when
another fails (its error is the row).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import cpu_name, fmt, md_table

# FLOP per pixel-Gaussian pair of the forward kernel (gauss_math.h PairRow::value: 6 FMA = 12 FLOP, 3
# more multiplies and adds, a division, a square root and an exponential counted as 1 each, i.e. 18),
# and of forward + backward (pair_grad: about 3 times the forward); a convention for the fraction of
# peak, not a count of instructions
FLOP_PAIR_FWD, FLOP_PAIR_FWD_BWD = 18.0, 72.0
FP32_PEAK_TFLOPS = {"H200": 67.0, "H100": 67.0, "A100": 19.5}  # NVIDIA spec sheets (SXM), non-tensor FP32


def _peak(name: str) -> float | None:
    return next((v for k, v in FP32_PEAK_TFLOPS.items() if k in name), None)


def _timed(fn, reps: int = 5, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def rasterizer_rows() -> list[dict]:
    from pinngs.geometry import orbit, pack_views
    from pinngs.ops import project_gaussians, rasterize
    from pinngs.scenes import random_vessel_cloud

    views = orbit(4, rows=512, cols=512, pixel_spacing_mm=(0.3, 0.3))
    pv = pack_views(views, device="cuda")
    peak = _peak(torch.cuda.get_device_name(0))
    rows = []
    for n in (10_000, 100_000, 1_000_000):
        f = random_vessel_cloud(n).to("cuda")
        _, prec = f.covar_and_precision()
        means, prec = f.means.detach(), prec.detach()
        atten = f.attenuation.detach().expand(4, -1).contiguous()
        params, rects = project_gaussians(pv, means, prec, 512, 512, 5.0)
        pairs = float(((rects[..., 2] - rects[..., 0]).clamp_min(0) * (rects[..., 3] - rects[..., 1]).clamp_min(0)).sum())

        def fwd():
            p, r = project_gaussians(pv, means, prec, 512, 512, 5.0)
            return rasterize(pv, p, atten, r, 512, 512)

        m, P, a = (t.clone().requires_grad_() for t in (means, prec, atten))

        def fwd_bwd():
            p, r = project_gaussians(pv, m, P, 512, 512, 5.0)
            rasterize(pv, p, a, r, 512, 512).sum().backward()

        torch.cuda.reset_peak_memory_stats()
        t_f = _timed(fwd)
        t_fb = _timed(fwd_bwd)
        mem = torch.cuda.max_memory_allocated() / 2 ** 30
        row = {"n": n, "views": 4, "detector": "512x512", "pairs": pairs, "fwd_s": t_f, "fwd_bwd_s": t_fb,
               "pairs_per_s_fwd": pairs / t_f, "pairs_per_s_fwd_bwd": pairs / t_fb, "peak_gib": mem}
        if peak:
            row["fp32_peak_fraction_fwd"] = pairs * FLOP_PAIR_FWD / t_f / (peak * 1e12)
            row["fp32_peak_fraction_fwd_bwd"] = pairs * FLOP_PAIR_FWD_BWD / t_fb / (peak * 1e12)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del f, m, P, a
        torch.cuda.empty_cache()
    return rows


def pinn_rows() -> list[dict]:
    from pinngs.pinn.forward import JetMLP, jet_autograd, ns_residuals

    def step_fn(net, opt, x, how):
        def step():
            if how == "autograd":
                v, g, d = jet_autograd(net, x)
            else:
                v, g, d = net.jet(x)
            mom, mass = ns_residuals(v, g, d, 100.0)
            loss = mom.square().sum(1).mean() + mass.square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    rows = []
    for dev, n_pts, how in (("cuda", 4096, "forward"), ("cuda", 65536, "forward"), ("cuda", 4096, "autograd"),
                            ("cuda", 4096, "compiled"), ("cuda", 65536, "compiled"), ("cpu", 4096, "forward")):
        try:
            net = JetMLP(3, 4, width=128, depth=8, fourier=32, fourier_sigma=0.3).to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=1e-4)
            x = torch.randn(n_pts, 3, device=dev)
            if how == "compiled":
                net.jet = torch.compile(net.jet)
            fn = step_fn(net, opt, x, how)
            if dev == "cuda":
                t = _timed(fn, reps=10, warm=3)
            else:
                fn()
                t0 = time.perf_counter()
                for _ in range(3):
                    fn()
                t = (time.perf_counter() - t0) / 3
            row = {"device": dev, "points": n_pts, "derivatives": how, "step_s": t, "steps_per_s": 1.0 / t}
        except Exception as e:  # noqa: BLE001 - a failed row is reported
            row = {"device": dev, "points": n_pts, "derivatives": how, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def reconstruct_rows(cache: Path, out: Path, presets: list[str], flow: str) -> list[dict]:
    rows = []
    for name in presets:
        sim, rec = cache / "sim" / name, cache / "recon" / name
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pinngs.cli", "reconstruct", str(sim), "-o", str(rec), "--overwrite",
                            "--device", "cuda", "--flow", flow], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            rows.append({"preset": name, "error": r.stderr[-1200:], "wall_s": wall})
            continue
        s = json.loads((rec / "summary.json").read_text())
        f = s["flow"]
        row = {"preset": name, "flow_method": flow, "wall_s": wall, "fit_s": s["fit"]["seconds_fit"],
               "init_s": s["fit"]["seconds_init"], "flow_status": f["status"],
               "flow_s": (f.get("solver") or {}).get("pinn", {}).get("seconds"),
               "q_mm3_s": f.get("q_mm3_s"), "dp_pa": f.get("dp_pa"), "ffr": f.get("ffr")}
        try:
            from pinngs.analysis.evaluate import evaluate

            row["dice"] = evaluate(rec, sim / "truth", n_surface_points=5000)["dice"]
        except Exception as e:  # noqa: BLE001
            row["dice_error"] = f"{type(e).__name__}: {e}"
        truth = json.loads((sim / "truth" / "truth.json").read_text())
        row["q_true_mm3_s"], row["dp_true_total_pa"] = truth["q_mm3_s"], truth["dp_pa"]
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    return rows


def online_row(cache: Path, out: Path, preset: str) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_online", "--presets", preset, "--budget-s", "0.033",
                        "--batch-seeds", "1", "--online-seeds", "1", "--checkpoints", "2", "--device", "cuda",
                        "--cache", str(cache), "--results", str(out), "--tag", "_gpu_33ms"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return {"preset": preset, "error": r.stderr[-1500:]}
    doc = json.loads((out / "online_gpu_33ms.json").read_text())
    row = doc["rows"][0]
    if "error" in row:
        return {"preset": preset, "error": row["error"]}
    lat, fin, bat = row["latency"], row.get("final") or {}, row["batch"]
    return {"preset": preset, "wall_s": time.perf_counter() - t0, "p50_fitting_s": lat["p50_fitting_s"],
            "p95_fitting_s": lat["p95_fitting_s"], "max_s": lat["max_s"], "steps_per_frame": lat["mean_steps_fitting"],
            "dp_online_pa": fin.get("dp_pa"), "dp_batch_pa": bat.get("dp_pa"),
            "vel_online": fin.get("velocity_rel_l2"), "vel_batch": bat.get("velocity_rel_l2"),
            "dice_online": fin.get("dice"), "dice_batch": bat.get("dice"), "targets": row.get("targets")}


def markdown(doc: dict) -> list[str]:
    m = doc["meta"]
    L = ["# GPU benchmark", "", f"Card: {m['gpu']}; host CPU {m['cpu']} ({m['cores']} cores); torch {m['torch']}, "
         f"CUDA {m['cuda']}. Command: `bash benchmarks/gpu/run.sh` ({m['seconds']:.0f} s for the benchmark rows).", "",
         "## Rasterizer (4 views of 512², vessel-like Gaussians)", "",
         f"FP32 peak {m['fp32_peak_tflops']} TFLOP/s (spec sheet); FLOP per pair {FLOP_PAIR_FWD:g} forward, "
         f"{FLOP_PAIR_FWD_BWD:g} forward+backward (a convention, see bench.py). Target: forward+backward at 1e6 "
         "≤ 0.2 s; aim ≥ 20 % of the FP32 peak.", ""]
    L += md_table(["N", "pairs", "fwd ms", "fwd+bwd ms", "pairs/s fwd", "pairs/s fwd+bwd", "peak fraction fwd",
                   "peak fraction fwd+bwd", "peak GiB"],
                  [[f"{r['n']:.0e}", f"{r['pairs']:.3g}", fmt(1e3 * r["fwd_s"], "{:.2f}"),
                    fmt(1e3 * r["fwd_bwd_s"], "{:.2f}", lambda v: r["n"] == 1_000_000 and v > 200),
                    f"{r['pairs_per_s_fwd']:.3g}", f"{r['pairs_per_s_fwd_bwd']:.3g}",
                    fmt(r.get("fp32_peak_fraction_fwd"), "{:.1%}"), fmt(r.get("fp32_peak_fraction_fwd_bwd"), "{:.1%}"),
                    f"{r['peak_gib']:.2f}"] for r in doc["rasterizer"] if "error" not in r])
    L += ["", "## PINN step (steady NS residuals, JetMLP 8×128, 32 Fourier features, Adam)", ""]
    L += md_table(["device", "points", "derivatives", "ms per step", "steps/s"],
                  [[r["device"], str(r["points"]), r["derivatives"], fmt(1e3 * r.get("step_s", float("nan")), "{:.2f}"),
                    fmt(r.get("steps_per_s"), "{:.1f}")] if "error" not in r else
                   [r["device"], str(r["points"]), r["derivatives"], f"failed: {r['error'][:80]}", ""] for r in doc["pinn"]])
    L += ["", f"## Batch reconstruct on the GPU (`pinngs reconstruct --device cuda --flow {m['flow']}`)", "",
          "Target: geometry + flow ≤ 60 s per study. The CFD-based methods need gmsh, which this machine lacks (it "
          "is not carried: its wheel alone is 39 MB of the 64 MiB a device call may carry), so the flow here is "
          "the pure PINN.", ""]
    L += md_table(["preset", "wall s", "fit s", "flow s", "Dice", "Q (truth) mm³/s", "ΔP Pa (truth total)", "FFR", "status"],
                  [[r["preset"], fmt(r["wall_s"], "{:.1f}", lambda v: v > 60), fmt(r.get("fit_s"), "{:.1f}"),
                    fmt(r.get("flow_s"), "{:.1f}"), fmt(r.get("dice"), "{:.3f}"),
                    f"{fmt(r.get('q_mm3_s'), '{:.0f}')} ({r.get('q_true_mm3_s', float('nan')):.0f})",
                    f"{fmt(r.get('dp_pa'), '{:.0f}')} ({r.get('dp_true_total_pa', float('nan')):.0f})",
                    fmt(r.get("ffr"), "{:.3f}"), str(r.get("flow_status", ""))[:40]] if "error" not in r else
                   [r["preset"], f"failed: {r['error'][-150:]}", "", "", "", "", "", "", ""] for r in doc["reconstruct"]])
    o = doc.get("online")
    if o:
        L += ["", "## Online fitting at a 33 ms budget (`benchmarks.bench_online --device cuda --budget-s 0.033`)", "",
              "Targets: p95 ≤ 33 ms per fitting frame; final ΔP and velocity rel-L2 within 10 % of the batch.", ""]
        if "error" in o:
            L.append(f"failed: {o['error'][-400:]}")
        else:
            dpd = abs(o["dp_online_pa"] - o["dp_batch_pa"]) / abs(o["dp_batch_pa"]) if o.get("dp_online_pa") else None
            vd = abs(o["vel_online"] - o["vel_batch"]) / o["vel_batch"] if o.get("vel_online") else None
            L += md_table(["preset", "p50 ms", "p95 ms", "max ms", "steps/frame", "ΔP online (batch) Pa", "ΔP diff",
                           "vel rel-L2 online (batch)", "vel diff", "Dice online (batch)"],
                          [[o["preset"], f"{1e3 * o['p50_fitting_s']:.1f}", fmt(1e3 * o["p95_fitting_s"], "{:.1f}",
                                                                              lambda v: v > 33),
                            f"{1e3 * o['max_s']:.0f}", f"{o['steps_per_frame']:.1f}",
                            f"{fmt(o['dp_online_pa'], '{:.0f}')} ({fmt(o['dp_batch_pa'], '{:.0f}')})",
                            fmt(dpd, "{:.1%}", lambda v: v > 0.1),
                            f"{fmt(o['vel_online'])} ({fmt(o['vel_batch'])})", fmt(vd, "{:.1%}", lambda v: v > 0.1),
                            f"{fmt(o['dice_online'])} ({fmt(o['dice_batch'])})"]])
    return L


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=".gpu/cache", help="sim/<preset> (and recon/ written here)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--presets", nargs="*", default=["stenosis50-biplane", "tube-biplane"])
    ap.add_argument("--flow", default="pinn-pure")
    ap.add_argument("--skip-online", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to benchmark", file=sys.stderr)
        return 2
    out, cache = Path(args.out), Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gpu = torch.cuda.get_device_name(0)
    doc = {"meta": {"gpu": gpu, "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "fp32_peak_tflops": _peak(gpu), "flow": args.flow}}
    for key, fn in (("rasterizer", rasterizer_rows), ("pinn", pinn_rows),
                    ("reconstruct", lambda: reconstruct_rows(cache, out, args.presets, args.flow)),
                    ("online", (lambda: online_row(cache, out, args.presets[0])) if not args.skip_online else None)):
        if fn is None:
            continue
        try:
            doc[key] = fn()
        except Exception as e:  # noqa: BLE001 - every other row is still written
            traceback.print_exc()
            doc[key] = [{"error": f"{type(e).__name__}: {e}"}] if key != "online" else {"error": str(e)}
        doc["meta"]["seconds"] = time.perf_counter() - t0
        (out / "gpu.json").write_text(json.dumps(doc, indent=1, default=float))
    (out / "gpu.md").write_text("\n".join(markdown(doc)) + "\n")
    print("\n".join(markdown(doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
