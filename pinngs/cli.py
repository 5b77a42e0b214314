"""The pinngs command line.

    pinngs simulate PRESET -o DIR [--seed S] [--overwrite]     a synthetic DSA study with ground truth
    pinngs simulate --list                                     the presets
    pinngs reconstruct STUDY -o OUT [--iters N] [--resume] [--overwrite]
                                                               Gaussians, lumen, mesh, centerline, grading
    pinngs evaluate OUT --truth DIR                            metrics of a reconstruction against truth
    pinngs demo -o OUT [--views 4] [--size 256]                render the built-in Gaussian scene
    pinngs watch DIR -o OUT [--budget-s 0.35] [--max-frames N] [--idle-timeout-s S]
                                                               online fit of frames as they appear in DIR

``simulate`` writes DIR/study.json + frames/ (a pinngs study folder), DIR/truth/ (lumen, centerline,
velocity, pressure, arrival times, truth.json with ΔP and flow rate) and DIR/preview.png.
``reconstruct`` takes a study folder or DICOM XA (a file or a folder of .dcm) and writes OUT (see
``pinngs.recon.pipeline``). ``watch`` feeds frames to ``pinngs.online.OnlineFitter`` as their files
appear in DIR (a study folder's frames/ listed in study.json, or .dcm files), prints the running
estimates and writes the outputs of ``reconstruct`` to OUT when it stops.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _to_png(img: np.ndarray) -> np.ndarray:
    """Line-integral image -> 8-bit, contrast as on an angiography monitor (dark vessels)."""
    hi = float(np.percentile(img, 99.9)) or 1.0
    return (255 * (1 - np.clip(img / hi, 0, 1))).astype(np.uint8)


def cmd_demo(args: argparse.Namespace) -> None:
    import imageio.v3 as iio
    import torch
    from tqdm import tqdm

    from .geometry import orbit
    from .render import render_views
    from .scenes import vessel_tree

    if args.views < 1 or args.views > 32:
        raise UserError(f"--views must be between 1 and 32, got {args.views}")
    if args.size < 16 or args.size > 2048:
        raise UserError(f"--size must be between 16 and 2048 pixels, got {args.size}")
    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"output folder {out} is not empty; choose another or pass --overwrite")

    field = vessel_tree(args.gaussians, seed=args.seed)
    # a 100 mm field of view at the isocentre, whatever the detector size
    spacing = 100.0 * 1200.0 / 800.0 / args.size
    views = orbit(args.views, start_deg=-60, span_deg=120, secondary_deg=15, rows=args.size, cols=args.size,
                  pixel_spacing_mm=(spacing, spacing))
    # write into a temporary sibling, then rename: no half-written output on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            images = [render_views(field, [v])[0].numpy() for v in tqdm(views, desc="rendering views", unit="view")]
        dt = time.perf_counter() - t0
        meta = {"format": "pinngs-render", "version": 1, "n_gaussians": len(field), "seconds": dt, "views": []}
        for k, (v, img) in enumerate(zip(views, images)):
            name = f"view_{k:02d}_{v.primary_deg:+.0f}_{v.secondary_deg:+.0f}.png"
            iio.imwrite(tmp / name, _to_png(img))
            np.save(tmp / name.replace(".png", ".npy"), img.astype(np.float32))
            meta["views"].append({"file": name, "primary_deg": v.primary_deg, "secondary_deg": v.secondary_deg,
                                  "sid_mm": v.sid_mm, "sod_mm": v.sod_mm, "rows": v.rows, "cols": v.cols,
                                  "pixel_spacing_mm": list(v.pixel_spacing_mm),
                                  "max_line_integral": float(img.max())})
        montage = np.concatenate([_to_png(i) for i in images], axis=1)
        iio.imwrite(tmp / "montage.png", montage)
        (tmp / "render.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"rendered {len(field)} Gaussians through {len(views)} views of {args.size}x{args.size} "
          f"in {dt:.2f} s -> {out}/montage.png")


def cmd_simulate(args: argparse.Namespace) -> None:
    from .simulate import PRESETS, get_preset

    if args.list or not args.preset:
        if not args.list:
            raise UserError("simulate needs a PRESET (see `pinngs simulate --list`)")
        for p in PRESETS.values():
            print(f"{p.name:24s} {p.description}")
        return
    if args.output is None:
        raise UserError("simulate needs an output folder: -o DIR")
    try:
        pre = get_preset(args.preset)
    except KeyError as err:
        raise UserError(str(err.args[0])) from None
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise UserError(f"output folder {out} is not empty; choose another or pass --overwrite")
    from .simulate import simulate, write_simulation

    t0 = time.perf_counter()
    sim = simulate(pre, seed=args.seed)
    write_simulation(sim, out, overwrite=args.overwrite)
    s = sim.summary
    print(f"{pre.name}: {s['n_frames']} frames, {s['n_views']} views, Q = {s['q_ml_s']:.2f} ml/s, "
          f"ΔP = {s['dp_mmhg']:.2f} mmHg ({s['flow_model']}) in {time.perf_counter() - t0:.1f} s -> {out}/preview.png")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from .fit.batch import FitConfig
    from .io.dicom import DicomError
    from .reconstruct import ReconstructError, reconstruct

    cfg = FitConfig(seed=args.seed)
    given = {k: getattr(args, k) for k in ("iters", "checkpoint_every", "threads") if getattr(args, k) is not None}
    flow = "none" if args.no_flow else args.flow
    try:
        cfg = dataclasses.replace(cfg, **given)
        cfg.validate()
        s = reconstruct(args.study, args.output, cfg, flow=flow, pa_mmhg=args.pa_mmhg, overwrite=args.overwrite,
                        resume=args.resume)
    except (ReconstructError, DicomError, ValueError) as e:
        raise UserError(str(e)) from None
    les = ", ".join(f"{x['percent_diameter_stenosis']:.0f} % at {x['arc_from_inlet_mm']:.1f} mm" for x in s["stenosis"]) or "none"
    f = s["flow"]
    fl = (f"Q {f['q_mm3_s']:.0f} mm³/s, ΔP {f['dp_mmhg']:.2f} mmHg, FFR {f['ffr']:.3f}" if f.get("method")
          else f"flow {f['status']}")
    print(f"reconstructed {s['n_gaussians']} Gaussians, lumen {s['lumen_volume_mm3']:.0f} mm³, stenoses: {les}; "
          f"{fl}; {s['seconds_total']:.0f} s -> {args.output}/report.md")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .analysis.evaluate import evaluate

    try:
        m = evaluate(args.recon, args.truth)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise UserError(str(e)) from None
    text = json.dumps(m, indent=1, default=float)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    print(text)


def cmd_watch(args: argparse.Namespace) -> None:
    import warnings

    from tqdm import tqdm

    from .fit.online import OnlineConfig, OnlineFitter, OnlineFrameWarning
    from .io.watch import FolderWatcher, WatchWarning

    d, out = Path(args.dir), Path(args.output)
    if not d.is_dir():
        raise UserError(f"{d} is not a folder to watch (a study folder or a folder receiving .dcm files)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise UserError(f"output folder {out} is not empty; choose another or pass --overwrite")
    for name in ("budget_s", "poll_s", "idle_timeout_s"):
        if not getattr(args, name) > 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("max_frames", "estimate_every"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0 (0: off), got {getattr(args, name)}")
    try:
        cfg = OnlineConfig(latency_budget_s=args.budget_s, seed=args.seed)
        if args.threads is not None:
            cfg = dataclasses.replace(cfg, threads=args.threads)
        if args.steps:  # a fixed amount of work per frame: reproducible, whatever the machine's speed
            cfg = dataclasses.replace(cfg, min_steps=args.steps, max_steps=args.steps)
        cfg.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    fitter = OnlineFitter(cfg)
    src = FolderWatcher(d)
    accepted, last_new = 0, time.monotonic()
    bar = tqdm(desc="frames", unit="frame", total=args.max_frames or None)

    def flush(caught: list) -> None:  # warnings (skipped frames, files) as one line each, above the bar
        for w in caught:
            tqdm.write(f"pinngs: warning: {w.message}", file=sys.stderr)
        caught.clear()

    stop = "idle"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OnlineFrameWarning)
        warnings.simplefilter("always", WatchWarning)
        try:
            while True:
                new = src.poll()
                flush(caught)
                if new:
                    last_new = time.monotonic()
                for img, view, t, label in new:
                    rep = fitter.add_frame(img, view, t)
                    flush(caught)
                    if not rep.accepted:
                        continue
                    accepted += 1
                    bar.update(1)
                    bar.set_postfix(t_s=f"{t:.3f}", ms=f"{1000 * rep.seconds:.0f}", steps=rep.steps,
                                    gaussians=rep.n_gaussians)
                    if args.estimate_every and accepted % args.estimate_every == 0 and fitter.field is not None:
                        tqdm.write(f"[{accepted} frames, t {t:.3f} s] {fitter.estimate().line()}")
                    if args.max_frames and accepted >= args.max_frames:
                        break
                if args.max_frames and accepted >= args.max_frames:
                    stop = "max-frames"
                    break
                if new:  # idle time counts from the end of the last work, not from when it arrived
                    last_new = time.monotonic()
                if not new and time.monotonic() - last_new > args.idle_timeout_s:
                    break
                if not new:
                    time.sleep(args.poll_s)
        except KeyboardInterrupt:
            stop = "interrupted"
        flush(caught)
    bar.close()
    if fitter.field is None:
        raise UserError(f"stopped ({stop}) after {accepted} frame(s) without geometry: the fitter needs two "
                        f"views with an opacified frame; nothing written to {out}")
    est = fitter.estimate()
    print(f"stopped ({stop}) after {accepted} frames: {est.line()}")
    try:
        fitter.write_outputs(out, overwrite=args.overwrite, study_label=str(d))
    except (FileExistsError, ValueError, RuntimeError) as e:  # e.g. a lumen too small to trace
        if args.snapshot:
            fitter.snapshot(args.snapshot)
        raise UserError(f"could not write the outputs to {out}: {e}"
                        + (f" (the fitter's state is in {args.snapshot})" if args.snapshot else "")) from None
    if args.snapshot:
        fitter.snapshot(args.snapshot)
    lat = [h["seconds"] for h in fitter.history if h.get("accepted") and h.get("steps")]
    p = np.percentile(lat, [50, 95]) if lat else [float("nan")] * 2
    print(f"per-frame latency p50 {1000 * p[0]:.0f} ms, p95 {1000 * p[1]:.0f} ms (budget "
          f"{1000 * args.budget_s:.0f} ms) -> {out}/summary.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pinngs", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="render the built-in vessel-like scene from several C-arm views")
    d.add_argument("-o", "--output", required=True, help="output folder (created; must be empty)")
    d.add_argument("--views", type=int, default=4, help="number of views (default 4)")
    d.add_argument("--size", type=int, default=256, help="detector rows = cols (default 256)")
    d.add_argument("--gaussians", type=int, default=3000, help="approximate number of Gaussians")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    d.set_defaults(func=cmd_demo)
    s = sub.add_parser("simulate", help="write a synthetic DSA study with full ground truth")
    s.add_argument("preset", nargs="?", help="preset name (see --list)")
    s.add_argument("-o", "--output", help="output folder (created; must be empty)")
    s.add_argument("--seed", type=int, default=0, help="random seed (noise); runs are deterministic")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    s.add_argument("--list", action="store_true", help="list the presets and exit")
    s.set_defaults(func=cmd_simulate)
    r = sub.add_parser("reconstruct", help="fit Gaussians to a study: lumen, surface, centerline, stenosis grading")
    r.add_argument("study", help="study folder (study.json) or DICOM XA file / folder of .dcm files")
    r.add_argument("-o", "--output", required=True, help="output folder (created; must be empty)")
    r.add_argument("--iters", type=int, default=None, help="optimisation steps (default: FitConfig.iters)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/checkpoint.pt")
    r.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints (default: FitConfig.checkpoint_every)")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the fit (default: every core; 1 is faster on a busy machine)")
    r.add_argument("--flow", choices=["reduced", "none"], default="reduced",
                   help="flow method: reduced = bolus-transit Q, Poiseuille + Young-Tsai ΔP, quasi-Poiseuille "
                        "fields (default: reduced)")
    r.add_argument("--no-flow", action="store_true", help="geometry only (the same as --flow none)")
    r.add_argument("--pa-mmhg", type=float, default=93.0, help="mean aortic pressure for FFR (default: 93 mmHg)")
    r.set_defaults(func=cmd_reconstruct)
    e = sub.add_parser("evaluate", help="compare a reconstruction with a simulator truth folder")
    e.add_argument("recon", help="a `pinngs reconstruct` output folder")
    e.add_argument("--truth", required=True, help="the truth/ folder of a simulated study")
    e.add_argument("-o", "--output", help="also write the metrics to this JSON file")
    e.set_defaults(func=cmd_evaluate)
    w = sub.add_parser("watch", help="online fit: process frames as their files appear in DIR")
    w.add_argument("dir", help="a study folder being written (study.json + frames/) or a folder receiving .dcm files")
    w.add_argument("-o", "--output", required=True, help="output folder for the reconstruct outputs (written at stop)")
    w.add_argument("--budget-s", type=float, default=0.35, help="latency budget per frame (s, default 0.35)")
    w.add_argument("--steps", type=int, default=0,
                   help="exactly this many fit steps per frame, whatever the budget (reproducible runs; 0: use the budget)")
    w.add_argument("--max-frames", type=int, default=0, help="stop after this many accepted frames (0: no limit)")
    w.add_argument("--idle-timeout-s", type=float, default=30.0, help="stop when no new file appeared for this long")
    w.add_argument("--poll-s", type=float, default=0.2, help="seconds between looks at DIR")
    w.add_argument("--estimate-every", type=int, default=10,
                   help="print Q, ΔP, FFR every N frames (each costs seconds; 0: only at the end)")
    w.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the fit (default: every core; 1 can be faster on a busy machine)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--snapshot", help="also write the fitter's state to this file at stop")
    w.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    w.set_defaults(func=cmd_watch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as err:
        print(f"pinngs: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
