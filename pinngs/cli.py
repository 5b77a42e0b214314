"""The pinngs command line.

    pinngs simulate PRESET -o DIR          a synthetic DSA study with full ground truth
    pinngs reconstruct STUDY -o OUT        Gaussians, lumen, mesh, centerline, grading, flow, report
    pinngs batch MANIFEST -o OUT           many studies (a CSV or a folder) on this machine or a Ray cluster
    pinngs evaluate OUT --truth DIR        metrics of a reconstruction against a simulated truth
    pinngs watch DIR -o OUT                online fit of frames as they appear in DIR
    pinngs demo -o OUT                     render the built-in Gaussian scene

Every command checks its options and its output path before any work and reports a problem as one
line, ``pinngs: error: ...``, with exit status 2 (argparse's own usage errors too). Outputs are built
beside their target and moved into place when complete, so an interrupted or failed run leaves
what was there before. Ctrl-C or SIGTERM stops cleanly with exit status 130 and one line that says
how to continue.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM: printed as one line (how to continue), exit status 130."""


# ------------------------------------------------------------------------------------------------
# option types: ranges checked at parse time, the valid range in the message
def _int_in(lo: int, hi: int | None = None):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {lo}..{hi}, got {v}" if hi is not None else f"must be ≥ {lo}, got {v}")
        return v
    return conv


def _float_in(lo: float, hi: float | None = None, lo_open: bool = True):
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not np.isfinite(v) or (v <= lo if lo_open else v < lo) or (hi is not None and v > hi)
        if bad:
            rng = f"{'>' if lo_open else '≥'} {lo:g}" + (f" and ≤ {hi:g}" if hi is not None else "")
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text}")
        return v
    return conv


def _threads(args: argparse.Namespace) -> int | None:
    """--threads, capped at the machine's cores with a warning (more threads than cores only wait)."""
    n = getattr(args, "threads", None)
    cores = os.cpu_count() or 1
    if n is not None and n > cores:
        print(f"pinngs: warning: --threads {n} is more than the {cores} cores here; using {cores}", file=sys.stderr)
        return cores
    return n


def _to_png(img: np.ndarray) -> np.ndarray:
    """Line-integral image -> 8-bit, contrast as on an angiography monitor (dark vessels)."""
    hi = float(np.percentile(img, 99.9)) or 1.0
    return (255 * (1 - np.clip(img / hi, 0, 1))).astype(np.uint8)


def _output(path: str, inputs: list[str] = (), overwrite: bool = False) -> Path:
    from .io.atomic import OutputError, check_output

    try:
        return check_output(path, inputs, overwrite=overwrite)
    except OutputError as e:
        raise UserError(str(e)) from None


def _output_file(path: str) -> Path:
    """An output *file* (evaluate -o): not a folder, not under a file, its folder writable."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"-o {p}: is a folder; give a file name (e.g. {p / 'metrics.json'})")
    anc = p.parent.resolve()
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"-o {p}: {anc} is a file, so {p} cannot be written; choose another path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UserError(f"-o {p}: {anc} is not writable")
    return p


# ------------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> None:
    import imageio.v3 as iio
    import torch
    from tqdm import tqdm

    from .geometry import orbit
    from .io.atomic import replace_dir, temp_dir_beside
    from .render import render_views
    from .scenes import vessel_tree

    out = _output(args.output, overwrite=args.overwrite)
    field = vessel_tree(args.gaussians, seed=args.seed)
    # a 100 mm field of view at the isocentre, whatever the detector size
    spacing = 100.0 * 1200.0 / 800.0 / args.size
    views = orbit(args.views, start_deg=-60, span_deg=120, secondary_deg=15, rows=args.size, cols=args.size,
                  pixel_spacing_mm=(spacing, spacing))
    tmp = temp_dir_beside(out)
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
        iio.imwrite(tmp / "montage.png", np.concatenate([_to_png(i) for i in images], axis=1))
        (tmp / "render.json").write_text(json.dumps(meta, indent=2))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"rendered {len(field)} Gaussians through {len(views)} views of {args.size}x{args.size} "
          f"in {dt:.2f} s -> {out}/montage.png")


def cmd_simulate(args: argparse.Namespace) -> None:
    from .simulate import PRESETS, get_preset

    if args.cohort:
        if args.preset:
            raise UserError(f"simulate: give a PRESET or --cohort N, not both (got {args.preset!r} and --cohort {args.cohort})")
        if args.output is None:
            raise UserError("simulate --cohort needs an output folder: -o DIR")
        from .io.atomic import OutputError
        from .simulate.cohort import write_cohort

        t0 = time.perf_counter()
        try:
            manifest = write_cohort(args.cohort, args.output, seed=args.seed, overwrite=args.overwrite)
        except OutputError as e:
            raise UserError(str(e)) from None
        except KeyboardInterrupt:
            raise Stopped("simulate --cohort interrupted; the studies written so far are kept: run the same command "
                          "to continue") from None
        print(f"cohort of {args.cohort} studies in {time.perf_counter() - t0:.0f} s -> {manifest} "
              f"(next: pinngs batch {args.output} -o OUT)")
        return
    if args.list or not args.preset:
        if not args.list:
            raise UserError("simulate needs a PRESET (see `pinngs simulate --list`)")
        w = max(len(n) for n in PRESETS) + 1
        for p in PRESETS.values():
            print(f"{p.name:{w}s} {p.description}")
        return
    if args.output is None:
        raise UserError("simulate needs an output folder: -o DIR")
    try:
        pre = get_preset(args.preset)
    except KeyError as err:
        raise UserError(str(err.args[0])) from None
    out = _output(args.output, overwrite=args.overwrite)
    from .simulate import simulate, write_simulation

    t0 = time.perf_counter()
    try:
        sim = simulate(pre, seed=args.seed)
        write_simulation(sim, out, overwrite=args.overwrite)
    except KeyboardInterrupt:
        raise Stopped(f"simulate interrupted; nothing was written to {out}") from None
    s = sim.summary
    print(f"{pre.name}: {s['n_frames']} frames, {s['n_views']} views, Q = {s['q_ml_s']:.2f} ml/s, "
          f"ΔP = {s['dp_mmhg']:.2f} mmHg ({s['flow_model']}) in {time.perf_counter() - t0:.1f} s -> {out}/preview.png")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import dataclasses

    from .fit.batch import FitConfig, Interrupted
    from .reconstruct import ReconstructError, reconstruct

    given = {"iters": args.iters, "checkpoint_every": args.checkpoint_every, "threads": _threads(args),
             "device": args.device, "lumen_level": args.lumen_level, "gate": args.gate}
    flow = "none" if args.no_flow else args.flow
    try:
        from .backend import resolve_device
        from .flow.estimate import FlowConfig
        from .pinn.field import PinnConfig

        resolve_device(args.device)  # one clear error before any work when the device is not there
        cfg = dataclasses.replace(FitConfig(seed=args.seed), **given)
        fcfg = FlowConfig(n_per_radius=args.cfd_resolution, max_tets=args.cfd_max_tets or None,
                          pinn=PinnConfig(device=args.device))
        s = reconstruct(args.study, args.output, cfg, flow=flow, flow_config=fcfg, pa_mmhg=args.pa_mmhg,
                        overwrite=args.overwrite,
                        resume=args.resume, allow_single_view=args.allow_single_view, force_merge=args.force_merge)
    except (ReconstructError, ValueError) as e:
        raise UserError(str(e)) from None
    except Interrupted as e:
        raise Stopped(f"reconstruct interrupted at step {e.step}; {args.output} is unchanged and the fit is "
                      f"checkpointed in {e.checkpoint.parent}. Continue with: pinngs reconstruct {args.study} -o "
                      f"{args.output} --resume") from None
    les = ", ".join(f"{x['percent_diameter_stenosis']:.0f} % at {x['arc_from_inlet_mm']:.1f} mm" for x in s["stenosis"]) or "none"
    f = s["flow"]
    fl = (f"Q {f['q_mm3_s']:.0f} mm³/s, ΔP {f['dp_mmhg']:.2f} mmHg, FFR {f['ffr']:.3f}" if f.get("method")
          else f"flow {f['status']}")
    if f.get("method") and f["status"] != "ok":
        fl += f" [{f['status'].split(':')[0]}]"
    for w in s.get("warnings", []):
        print(f"pinngs: warning: {w}", file=sys.stderr)
    print(f"reconstructed {s['n_gaussians']} Gaussians, lumen {s['lumen_volume_mm3']:.0f} mm³, stenoses: {les}; "
          f"{fl}; {s['seconds_total']:.0f} s -> {args.output}/report.md")


def cmd_batch(args: argparse.Namespace) -> None:
    from .cohort import ManifestError, prepare_output, read_manifest, run_cohort
    from .io.atomic import OutputError

    opts = {"flow": "none" if args.no_flow else args.flow, "iters": args.iters, "seed": args.seed,
            "lumen_level": args.lumen_level, "pa_mmhg": args.pa_mmhg, "cfd_resolution": args.cfd_resolution,
            "cfd_max_tets": args.cfd_max_tets, "device": args.device, "gate": args.gate}
    try:
        jobs = read_manifest(args.manifest, opts)
        out = prepare_output(args.output, args.manifest)
    except (ManifestError, OutputError) as e:
        raise UserError(str(e)) from None
    if args.address and args.executor != "ray":
        raise UserError(f"--address needs --executor ray (got --executor {args.executor})")
    threads = _threads(args) or None
    t0 = time.perf_counter()
    try:
        rows = run_cohort(jobs, out, executor=args.executor, address=args.address, threads=threads,
                          retries=args.retries)
    except ManifestError as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        raise Stopped(f"batch interrupted; finished studies are kept in {out} (see cohort.csv). Run the same command "
                      "to continue: it skips them and resumes the ones in flight from their checkpoints") from None
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows) - len(failed)} of {len(rows)} studies done in {time.perf_counter() - t0:.0f} s -> "
          f"{out}/cohort.csv" + (" (+ cohort.png)" if (out / "cohort.png").is_file() else ""))
    for r in failed:
        print(f"pinngs: failed: {r['id']}: {r['error'] or r['status']} (log: {out / r['id'] / 'log.txt'})",
              file=sys.stderr)
    if failed:
        raise _PartialFailure(len(failed))


class _PartialFailure(Exception):
    """Some studies of a batch failed (exit status 1; each was printed with its error)."""


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .analysis.evaluate import evaluate
    from .io.atomic import atomic_file

    out = _output_file(args.output) if args.output else None
    try:
        m = evaluate(args.recon, args.truth)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise UserError(str(e).strip("'\"")) from None
    text = json.dumps(m, indent=1, default=float)
    if out is not None:
        with atomic_file(out) as fh:
            fh.write(text)
    print(text)


def cmd_watch(args: argparse.Namespace) -> None:
    from .watch import WatchError, WatchSettings, WatchStopped, watch

    s = WatchSettings(args.dir, args.output, args.budget_s, args.steps, args.max_frames, args.idle_timeout_s,
                      args.poll_s, args.estimate_every, _threads(args), args.seed, args.snapshot, args.snapshot_every,
                      args.resume, args.overwrite, args.device)
    try:
        watch(s)
    except WatchError as e:
        raise UserError(str(e)) from None
    except WatchStopped as e:
        raise Stopped(str(e)) from None


# ------------------------------------------------------------------------------------------------
def _version() -> str:
    from . import __version__

    return __version__


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default value, except for required options and on/off flags."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = _Help
    p = argparse.ArgumentParser(prog="pinngs", description=__doc__.split("\n")[0], formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"pinngs {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="render the built-in vessel-like scene from several C-arm views", formatter_class=fmt)
    d.add_argument("-o", "--output", required=True, help="output folder (created; must be empty)")
    d.add_argument("--views", type=_int_in(1, 32), default=4, help="number of views, 1..32")
    d.add_argument("--size", type=_int_in(16, 2048), default=256, help="detector rows = cols (pixels), 16..2048")
    d.add_argument("--gaussians", type=_int_in(30, 1_000_000), default=3000,
                   help="approximate number of Gaussians, 30..1000000")
    d.add_argument("--seed", type=_int_in(0), default=0, help="random seed of the scene (≥ 0)")
    d.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder (once the new one is complete)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("simulate", help="write a synthetic DSA study with full ground truth", formatter_class=fmt)
    s.add_argument("preset", nargs="?", help="preset name (see --list)")
    s.add_argument("-o", "--output", help="output folder (created; must be empty)")
    s.add_argument("--seed", type=_int_in(0), default=0, help="random seed of the noise (≥ 0); runs are deterministic")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder (once the new one is complete)")
    s.add_argument("--list", action="store_true", help="list the presets and exit")
    s.add_argument("--cohort", type=_int_in(1, 10_000), default=0, metavar="N",
                   help="instead of a preset: N studies with sampled stenosis grades, views and noise, and their "
                        "manifest.csv for `pinngs batch` (an interrupted cohort continues)")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("reconstruct", help="a study in: lumen, surface, centerline, stenoses, flow and report out",
                       formatter_class=fmt)
    r.add_argument("study", help="study folder (study.json) or DICOM XA file / folder of .dcm files")
    r.add_argument("-o", "--output", required=True, help="output folder (created; must be empty unless --overwrite)")
    r.add_argument("--flow", choices=["pinn", "fem", "pinn-pure", "reduced", "none"], default="pinn",
                   help="flow method: pinn = a PINN anchored on 3D CFD of the lumen; fem = the CFD itself; pinn-pure = "
                        "a PINN without CFD; reduced = Poiseuille + Young-Tsai with a quasi-Poiseuille field; none")
    r.add_argument("--no-flow", action="store_true", help="geometry only (the same as --flow none)")
    r.add_argument("--cfd-resolution", type=_float_in(0.5, 8.0), default=2.0,
                   help="CFD tetrahedra per local vessel radius (fem and pinn); a lesion's jet core gets 3 per throat "
                        "radius on top. Finer meshes cost time (a tight lesion's CFD far more)")
    r.add_argument("--cfd-max-tets", type=_int_in(0), default=18000,
                   help="a CFD jet mesh of more tetrahedra than this (a tight lesion) is replaced by the plain mesh at "
                        "1.5 per radius, which fits the 2-core CPU budget; 0 = no limit (a GPU, or time to spare)")
    r.add_argument("--pa-mmhg", type=_float_in(0.0, 300.0), default=93.0,
                   help="mean aortic pressure for FFR (mmHg), > 0 and ≤ 300")
    r.add_argument("--iters", type=_int_in(1, 1_000_000), default=500, help="fit steps, 1..1000000")
    r.add_argument("--seed", type=_int_in(0), default=0, help="random seed of the fit (≥ 0)")
    r.add_argument("--lumen-level", choices=("auto", "projected", "density"), default="auto",
                   help="the filled lumen's attenuation, which sets the lumen volume: read from the projections across "
                        "the vessel (projected), or the fitted field's density (density); auto: projected when no two "
                        "views are 60° or more apart (close views stretch the field in depth)")
    r.add_argument("--gate", choices=("auto", "none", "end-diastole"), default="auto",
                   help="ECG gating of the fit: auto fits only the frames near end-diastole (the R wave) when the "
                        "study carries an ECG, R-wave pointers or trigger delays, every frame otherwise")
    r.add_argument("--threads", type=_int_in(0), default=0,
                   help="CPU threads for the fit, capped at the cores (0: every core; 1 is faster on a busy machine)")
    r.add_argument("--checkpoint-every", type=_int_in(1), default=50, help="fit steps between checkpoints, ≥ 1")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    r.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty output folder (once the new one is complete), or start an interrupted run again")
    r.add_argument("--device", default="cpu", help="where the fit and the PINN run: cpu, cuda or auto (CUDA when a "
                   "GPU and CUDA kernels are there)")
    r.add_argument("--allow-single-view", action="store_true",
                   help="reconstruct even without two views ≥ 5° apart (depth is then not observable; the report says so)")
    r.add_argument("--force-merge", action="store_true",
                   help="read DICOM files of different PatientID / StudyInstanceUID / FrameOfReferenceUID as one study")
    r.set_defaults(func=cmd_reconstruct)

    b = sub.add_parser("batch", help="reconstruct many studies (a manifest CSV or a folder of studies), resumable",
                       formatter_class=fmt)
    b.add_argument("manifest", help="a CSV with one study per row (column path; optional id, truth and per-study "
                                    "options) or a folder of studies (its manifest.csv, else its subfolders)")
    b.add_argument("-o", "--output", required=True, help="batch folder: OUT/<id>/ per study, OUT/cohort.csv; "
                                                          "rerunning into it continues the batch")
    b.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray: one study per Ray task (a local runtime, or the cluster of --address); local: one "
                        "after the other in this process")
    b.add_argument("--address", default=None, help="a Ray cluster, e.g. ray://head:10001 (default: RAY_ADDRESS if "
                                                   "set, else a local runtime with the cores here)")
    b.add_argument("--threads", type=_int_in(0), default=0,
                   help="CPU threads per study (0: 1 per Ray task, so as many studies run as there are cores; every "
                        "core with --executor local)")
    b.add_argument("--retries", type=_int_in(0, 10), default=0, help="tries more per failing study, 0..10")
    b.add_argument("--flow", choices=["pinn", "fem", "pinn-pure", "reduced", "none"], default="pinn",
                   help="flow method of every study (a manifest column 'flow' overrides it per study)")
    b.add_argument("--no-flow", action="store_true", help="geometry only (the same as --flow none)")
    b.add_argument("--iters", type=_int_in(1, 1_000_000), default=500, help="fit steps, 1..1000000")
    b.add_argument("--seed", type=_int_in(0), default=0, help="random seed of each fit (≥ 0)")
    b.add_argument("--lumen-level", choices=("auto", "projected", "density"), default="auto",
                   help="the lumen's level rule (as in reconstruct)")
    b.add_argument("--pa-mmhg", type=_float_in(0.0, 300.0), default=93.0, help="mean aortic pressure for FFR (mmHg)")
    b.add_argument("--cfd-resolution", type=_float_in(0.5, 8.0), default=2.0, help="CFD tetrahedra per radius")
    b.add_argument("--cfd-max-tets", type=_int_in(0), default=18000, help="cap on the CFD mesh (0: none)")
    b.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where each study's fit runs")
    b.add_argument("--gate", choices=("auto", "none", "end-diastole"), default="auto",
                   help="ECG gating of each fit (as in reconstruct)")
    b.set_defaults(func=cmd_batch)

    e = sub.add_parser("evaluate", help="compare a reconstruction with a simulator truth folder", formatter_class=fmt)
    e.add_argument("recon", help="a `pinngs reconstruct` output folder")
    e.add_argument("--truth", required=True, help="the truth/ folder of a simulated study")
    e.add_argument("-o", "--output", default=None, help="also write the metrics to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    w = sub.add_parser("watch", help="online fit: process frames as their files appear in DIR", formatter_class=fmt)
    w.add_argument("dir", help="a study folder being written (study.json + frames/) or a folder receiving .dcm files")
    w.add_argument("-o", "--output", required=True, help="output folder for the reconstruct outputs (written at stop)")
    w.add_argument("--budget-s", type=_float_in(0.0, 60.0), default=0.35, help="latency budget per frame (s), > 0 and ≤ 60")
    w.add_argument("--steps", type=_int_in(0, 10_000), default=0,
                   help="exactly this many fit steps per frame, whatever the budget (reproducible runs; 0: use the budget)")
    w.add_argument("--max-frames", type=_int_in(0), default=0, help="stop after this many accepted frames (0: no limit)")
    w.add_argument("--idle-timeout-s", type=_float_in(0.0), default=30.0, help="stop when no new file appeared for this long (s)")
    w.add_argument("--poll-s", type=_float_in(0.0, 60.0), default=0.2, help="seconds between looks at DIR")
    w.add_argument("--estimate-every", type=_int_in(0), default=10,
                   help="print Q, ΔP, FFR every N frames (each costs seconds; 0: only at the end)")
    w.add_argument("--threads", type=_int_in(0), default=0, help="CPU threads for the fit, capped at the cores (0: every core)")
    w.add_argument("--seed", type=_int_in(0), default=0, help="random seed of the fitter (≥ 0)")
    w.add_argument("--snapshot", default=None, help="also write the fitter's state to this file at stop")
    w.add_argument("--snapshot-every", type=_int_in(0), default=0,
                   help="save the fit every N accepted frames, so that a killed run can --resume (0: only at stop)")
    w.add_argument("--resume", action="store_true", help="continue an interrupted watch from its saved state")
    w.add_argument("--device", default="cpu", help="where the online fit runs: cpu, cuda or auto")
    w.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder (once the new one is complete)")
    w.set_defaults(func=cmd_watch)
    return p


def _sigterm_as_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse printed its usage and the error (2), or --help/--version (0)
        return int(e.code or 0)
    prev = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        args.func(args)
    except UserError as err:
        print(f"pinngs: error: {err}", file=sys.stderr)
        return 2
    except Stopped as err:
        print(f"pinngs: stopped: {err}", file=sys.stderr)
        return 130
    except _PartialFailure:
        return 1
    except KeyboardInterrupt:
        print(f"pinngs: stopped: {args.command} interrupted; its output was not changed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, prev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
