"""``pinngs reconstruct``: a study in, the vessel and its flow out, in one readable function.

    summary = reconstruct("out/sten50", "out/sten50-recon")      # a study folder or DICOM XA
    print(summary["stenosis"], summary["flow"]["ffr"])

Steps (``reconstruct``):

1. check the output folder (not a file, not the input, writable; empty unless ``overwrite``) and
   load the study (``io.load_any_study``); refuse a study whose views cannot resolve depth (fewer
   than two directions ``MIN_VIEW_SEPARATION_DEG`` apart) unless ``allow_single_view``;
2. fit the Gaussians to its frames (``fit.batch.fit_study``), checkpointing as it goes;
3. the lumen's centerline (``analysis.centerline``);
4. the flow on the lumen (``flow.estimate.estimate_flow``: the transit Q, then by default 3D CFD on
   the lofted lumen and a PINN anchored on it at the Gaussian centres), unless ``flow="none"``; a
   flow that cannot be computed (no inlet, no bolus passage, the CFD diverged) is a line in the
   summary and the report, and the geometry is still written;
5. the outputs and the report (``report.write_outputs``; the file list is in ``pinngs.report``).

Nothing in OUT changes until the end: the work (checkpoint, then the outputs) happens in
``.OUT.partial`` beside it, which then replaces OUT in one rename. An interrupted run (Ctrl-C,
SIGTERM, a crash, kill -9) leaves OUT as it was and its checkpoint in ``.OUT.partial``;
``resume=True`` continues from there, and refuses a checkpoint of another study.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch

from .analysis.centerline import extract_centerline
from .fit.batch import FitConfig, Interrupted, fit_study, read_checkpoint_step
from .flow.estimate import FlowConfig, estimate_flow
from .geometry import view_separation_deg
from .io import StudyError, load_any_study
from .io.atomic import OutputError, check_output, failpoint, partial_dir, replace_dir
from .io.dicom import DicomError
from .io.ecg import gate_study
from .report import write_outputs
from .units import PA_AORTIC_MMHG

FlowMethod = Literal["pinn", "fem", "pinn-pure", "reduced", "none"]
FLOW_METHODS: tuple[str, ...] = ("pinn", "fem", "pinn-pure", "reduced", "none")
MIN_VIEW_SEPARATION_DEG = 5.0  # views closer than this (projection axes) give no usable depth
# below this separation the view sweep (benchmarks/results/views.md) has not shown a lumen at Dice >= 0.90:
# the report warns
NARROW_VIEW_SEPARATION_DEG = 30.0
# fit.batch.fitted_lumen's depth_spread above this: the field is spread along the rays (a sheet of low
# density that the views cannot place), and the report warns. The view sweep: 1.4 on the stenosis
# phantoms 30° apart (their lumen is then right at the projected level), 3.2-3.6 on a tortuous real
# vessel in biplane (Dice 0.52-0.59)
DEPTH_SPREAD_WARN = 1.6
DEPTH_SPREAD_WARNING = ("the fitted field is spread along the rays: its density implies {spread:.1f} times the lumen "
                        "volume its projections across the vessel do (a vessel that the views cannot place in depth, "
                        "often a tortuous one seen by two views); the lumen's shape, radii and grades are unreliable. "
                        "Add a view if the study has one")
NARROW_VIEW_WARNING = ("the views are at most {sep:.0f}° apart: below {min:.0f}° the lumen's extent along the viewing "
                       "direction is poorly resolved (no view pair that close reached Dice 0.90 in the view sweep, "
                       "benchmarks/results/views.md); its volume, radii and grades are less certain")
SINGLE_VIEW_WARNING = ("depth is not observable: the study has no two views {min:.0f}° or more apart (largest "
                       "separation {sep:.1f}°); the lumen's extent along the viewing direction is a guess")


class ReconstructError(ValueError):
    """A problem with the inputs or the output folder that the user can fix."""


def reconstruct(study_path: str | os.PathLike, out: str | os.PathLike, config: FitConfig | None = None, *,
                flow: FlowMethod = "pinn", flow_config: FlowConfig | None = None, pa_mmhg: float = PA_AORTIC_MMHG,
                overwrite: bool = False,
                resume: bool = False, progress: bool = True, stop_after: int | None = None,
                allow_single_view: bool = False, force_merge: bool = False) -> dict | None:
    """Run the whole batch reconstruction (module docstring).

    Args:
        study_path: a study folder or DICOM XA (a file or a folder of .dcm files).
        out: the output folder (must be empty unless ``overwrite``; replaced only once complete).
        config: the fit's settings (defaults if None).
        flow: "pinn" (a PINN anchored on 3D CFD of the lofted lumen, the default), "fem" (the CFD
            itself), "pinn-pure" (a PINN without CFD), "reduced" (transit Q, Poiseuille + Young–Tsai,
            quasi-Poiseuille field) or "none" (geometry only).
        flow_config: the CFD and PINN settings (``flow.estimate.FlowConfig``; its method is ``flow``).
        pa_mmhg: mean aortic pressure for FFR (mmHg).
        resume: continue an interrupted run from its checkpoint in ``.OUT.partial``.
        stop_after: stop after that many fit steps without writing outputs (tests of the resume path).
        allow_single_view: reconstruct a study without two distinct view directions (the summary and
            the report then say that depth is not observable).
        force_merge: read DICOM files of different patients/studies as one (see ``io.dicom.read_xa``).

    Returns:
        The summary written to summary.json, or None when ``stop_after`` stopped the fit.

    Raises:
        ReconstructError: bad input or output, before any work; Interrupted: Ctrl-C or SIGTERM during
            the fit (its checkpoint is saved; ``resume`` continues it).
    """
    t0 = time.perf_counter()
    cfg = config or FitConfig()
    # 1. check everything before any work
    if flow not in FLOW_METHODS:
        raise ReconstructError(f"flow must be one of {', '.join(FLOW_METHODS)}; got {flow!r}")
    out, work = Path(out), partial_dir(out)
    ckpt = work / "checkpoint.pt"
    try:
        cfg.validate()
        check_output(work, [study_path], option="-o (its work folder)", allow_nonempty=True)
        _check_resume(work, ckpt, resume, overwrite, cfg)
        check_output(out, [study_path], overwrite=overwrite or resume)  # a resumed run was allowed to write OUT
    except (OutputError, ValueError) as e:
        raise ReconstructError(str(e)) from None
    try:
        study = load_any_study(study_path, force_merge=force_merge)
    except (StudyError, DicomError) as e:
        raise ReconstructError(str(e)) from None
    warnings = _check_views(study, allow_single_view)
    try:  # "end-diastole" on a study without cardiac timing: refused before any work
        gate_study(study, cfg.gate, cfg.gate_width)
    except ValueError as e:
        raise ReconstructError(f"--gate {cfg.gate}: {e}") from None
    if resume:
        _check_checkpoint_study(ckpt, study)
    elif work.exists():
        shutil.rmtree(work)  # --overwrite of an interrupted run: start again
    work.mkdir(parents=True, exist_ok=True)
    # 2. the Gaussians
    try:
        res = fit_study(study, cfg, checkpoint=ckpt, resume=resume, progress=progress, stop_after=stop_after,
                        study_fingerprint=study.fingerprint())
    except Interrupted:
        raise
    except BaseException:
        if not ckpt.exists():  # nothing worth resuming: leave no trace
            shutil.rmtree(work, ignore_errors=True)
        raise
    if res is None:
        return None
    spread = res.info.get("depth_spread", float("nan"))
    if spread > DEPTH_SPREAD_WARN:  # NaN (no projected level) compares False
        warnings.append(DEPTH_SPREAD_WARNING.format(spread=spread))
    # 3. the centerline
    branches = res.centerline if res.centerline is not None else extract_centerline(res.occupancy, res.origin_mm,
                                                                                   res.spacing_mm)
    # 4. the flow
    lumen_flow, note = None, "not requested (--flow none)"
    if flow != "none":
        fcfg = replace(flow_config or FlowConfig(), method=flow)
        with torch.no_grad():
            centres = res.field.means.numpy().astype(float)
            sigma = float(res.field.scales.mean())
        try:
            lumen_flow = estimate_flow(study, res.occupancy, res.origin_mm, res.spacing_mm, fcfg, branches=branches,
                                       centres_mm=centres, sigma_mm=sigma, progress=progress, fallback=True)
            if "fallback" in lumen_flow.solver:  # the CFD did not converge: the reduced estimate, said so
                warnings.append(f"--flow {flow}: the 3D CFD did not converge; the reduced estimate is reported")
            elif (un := lumen_flow.solver.get("fem", {}).get("unsteady")):
                warnings.append(f"--flow {flow}: the 3D CFD did not settle to a steady flow; its mean over "
                                f"{un['states']} pseudo-time steps is reported (ΔP {un['dp_min_pa']:.0f}–"
                                f"{un['dp_max_pa']:.0f} Pa over them)")
        except (ValueError, RuntimeError, FloatingPointError) as e:  # no inlet, no transit fit
            note = f"{type(e).__name__}: {e}"
    # 5. outputs and report, then the swap
    summary = write_outputs(work, res, study, str(study_path), branches=branches, flow=lumen_flow, flow_note=note,
                            pa_mmhg=pa_mmhg, t0=t0, warnings=warnings)
    failpoint("swap")
    replace_dir(work, out)
    (out / ckpt.name).unlink()  # the checkpoint travelled with the outputs: a crash before this line leaves it there
    return summary


def _check_resume(work: Path, ckpt: Path, resume: bool, overwrite: bool, cfg: FitConfig) -> None:
    """An interrupted run's checkpoint is continued (``resume``), replaced (``overwrite``) or, else,
    never silently thrown away."""
    if resume:
        if not ckpt.exists():
            raise ReconstructError(f"--resume: there is no interrupted run to continue ({ckpt} not found)")
        step = read_checkpoint_step(ckpt)
        if step > cfg.iters:
            raise ReconstructError(f"--resume: the checkpoint is at step {step}, past --iters {cfg.iters}; "
                                   f"resume with --iters {step} or more, or start again with --overwrite")
    elif ckpt.exists() and not overwrite:
        raise ReconstructError(f"an interrupted run of this output is in {work} (checkpoint at step "
                               f"{read_checkpoint_step(ckpt)}); continue it with --resume, or start again with "
                               f"--overwrite")


def _check_checkpoint_study(ckpt: Path, study) -> None:
    from .fit.batch import read_checkpoint_fingerprint

    fp = read_checkpoint_fingerprint(ckpt)
    if fp != study.fingerprint():
        raise ReconstructError(f"--resume: {ckpt} is a checkpoint of another study (or of this one before its "
                               f"frames changed); start again with --overwrite")


def _check_views(study, allow_single_view: bool) -> list[str]:
    """[] when the views resolve depth well; a warning when they are less than
    ``NARROW_VIEW_SEPARATION_DEG`` apart; under ``MIN_VIEW_SEPARATION_DEG`` the single-view warning
    (``allow_single_view``) or ReconstructError."""
    sep = view_separation_deg(study.views)
    if sep >= NARROW_VIEW_SEPARATION_DEG:
        return []
    if sep >= MIN_VIEW_SEPARATION_DEG:
        return [NARROW_VIEW_WARNING.format(sep=sep, min=NARROW_VIEW_SEPARATION_DEG)]
    msg = SINGLE_VIEW_WARNING.format(min=MIN_VIEW_SEPARATION_DEG, sep=sep)
    if not allow_single_view:
        raise ReconstructError(f"{msg}. pinngs needs at least two views {MIN_VIEW_SEPARATION_DEG:.0f}° or more "
                               "apart for a 3D lumen; pass --allow-single-view to reconstruct anyway")
    return [msg]
