"""Rasterizer benchmark: the C++ kernel and the torch twin side by side, in one run.

    python -m benchmarks.bench_rasterizer            # full: N in {1e3, 1e4, 1e5}, 256² and 512²
    python -m benchmarks.bench_rasterizer --quick    # CI-sized subset

Scenes: random_vessel_cloud (σ 0.2-1.5 mm, up to 4:1, along curved segments in an 80 mm box),
4 views, detector spanning ~100 mm at the isocentre. Each case runs in its own subprocess so its
peak memory (RSS above the process's state before the op) is its own. Counts: the kernel evaluates
only pairs inside each Gaussian's 5σ rectangle; the dense twin evaluates every pixel-Gaussian pair.
Writes benchmarks/results/rasterizer.json and rasterizer.md (or *_quick.* with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from benchmarks.common import RESULTS, ROOT, cpu_name


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(impl: str, n: int, size: int, mode: str, repeats: int) -> dict:
    import torch

    if impl == "twin":
        os.environ["PINNGS_FORCE_TORCH"] = "1"
    from pinngs.geometry import orbit, pack_views
    from pinngs.ops import project_gaussians, rasterize
    from pinngs.scenes import random_vessel_cloud

    field = random_vessel_cloud(n, seed=0)
    sp = 100.0 * 1.5 / size
    views = orbit(4, start_deg=-60, span_deg=150, secondary_deg=10, rows=size, cols=size, pixel_spacing_mm=(sp, sp))
    pv = pack_views(views)
    _, prec = field.covar_and_precision()
    means, prec = field.means.detach().clone(), prec.detach().clone()
    atten = field.attenuation.detach().expand(4, -1).contiguous()
    # the same work with the kernel's rectangles, for the pair count
    with torch.no_grad():
        _, rects = project_gaussians(pv, means, prec, size, size)
    r = rects.long()
    in_rect = int(((r[..., 2] - r[..., 0]).clamp_min(0) * (r[..., 3] - r[..., 1]).clamp_min(0)).sum())
    pairs = in_rect if impl == "kernel" else n * 4 * size * size

    def once():
        m, P, a = (t.clone().requires_grad_(mode == "fwd+bwd") for t in (means, prec, atten))
        with torch.set_grad_enabled(mode == "fwd+bwd"):
            params, rr = project_gaussians(pv, m, P, size, size)
            img = rasterize(pv, params, a, rr, size, size)
            if mode == "fwd+bwd":
                img.sum().backward()
        return img

    base = rss_mib()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    t = sorted(times)[len(times) // 2]
    threads = torch.get_num_threads()
    return dict(impl=impl, n=n, size=size, views=4, mode=mode, seconds=t, repeats=repeats, threads=threads,
                pairs=pairs, pairs_in_rects=in_rect, pairs_per_s=pairs / t, pairs_per_s_per_core=pairs / t / threads,
                peak_mib_above_start=max(peak - base, 0.0),
                dense_NVHW_mib=n * 4 * size * size * 4 / 2**20)


def machine() -> dict:
    import torch

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version(), gpu=gpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subset for CI")
    ap.add_argument("--case", nargs=4, metavar=("IMPL", "N", "SIZE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        impl, n, size, mode = args.case
        print(json.dumps(run_case(impl, int(n), int(size), mode, 1 if impl == "twin" else 3)))
        return

    if args.quick:
        cases = [("kernel", 1000, 256), ("twin", 1000, 256), ("kernel", 10000, 256)]
    else:
        cases = [("kernel", n, s) for n in (1000, 10000, 100000) for s in (256, 512)]
        # the dense twin costs N·V·H·W pairs: run it where that fits in minutes
        cases += [("twin", 1000, 256), ("twin", 10000, 256), ("twin", 1000, 512)]
    rows = []
    from tqdm import tqdm

    for impl, n, s in tqdm(cases, desc="benchmark cases"):
        for mode in ("fwd", "fwd+bwd"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_rasterizer", "--case", impl, str(n), str(s),
                                  mode], capture_output=True, text=True, check=True, cwd=ROOT)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mach = machine()
    ratios = []
    for r in rows:
        if r["impl"] != "twin":
            continue
        k = next(x for x in rows if x["impl"] == "kernel" and x["n"] == r["n"] and x["size"] == r["size"]
                 and x["mode"] == r["mode"])
        ratios.append(dict(n=r["n"], size=r["size"], mode=r["mode"], twin_over_kernel_time=r["seconds"] / k["seconds"]))
    result = dict(benchmark="rasterizer", quick=args.quick, machine=mach, rows=rows, speedups=ratios,
                  gpu_rows=None if mach["gpu"] is None else "not run", note=(
                      "No GPU on this machine: CUDA kernel and gsplat rows not measured." if mach["gpu"] is None else ""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "rasterizer_quick" if args.quick else "rasterizer"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))

    lines = [f"# Rasterizer benchmark{' (quick)' if args.quick else ''}", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} ({mach['torch_threads']} threads), "
             f"Python {mach['python']}, GPU: {mach['gpu'] or 'none'}.", "",
             "Command: `python -m benchmarks.bench_rasterizer" + (" --quick" if args.quick else "") + "`. "
             "4 views; times are medians (kernel: 3 runs, twin: 1). Pairs: kernel = pixel-Gaussian pairs inside "
             "the 5σ rectangles; twin = every pair (dense N·V·H·W). Peak MiB = peak RSS above the process state "
             "just before the op; 'dense' = what one float32 [N, V, H, W] tensor would take.", "",
             "| impl | N | det | mode | time (s) | pairs | pairs/s/core | peak MiB | dense MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['n']:.0e} | {r['size']}² | {r['mode']} | {r['seconds']:.4f} | "
                     f"{r['pairs']:.3g} | {r['pairs_per_s_per_core']:.3g} | {r['peak_mib_above_start']:.0f} | "
                     f"{r['dense_NVHW_mib']:.0f} |")
    lines += ["", "Twin time / kernel time, same case, same run:", "", "| N | det | mode | speed-up |", "|---|---|---|---|"]
    for q in ratios:
        lines.append(f"| {q['n']:.0e} | {q['size']}² | {q['mode']} | {q['twin_over_kernel_time']:.0f}× |")
    lines += ["", result["note"] or ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
