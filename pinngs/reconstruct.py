"""``pinngs reconstruct``: a study in, the vessel and its flow out, in one readable function.

    summary = reconstruct("out/sten50", "out/sten50-recon")      # a study folder or DICOM XA
    print(summary["stenosis"], summary["flow"]["ffr"])

Steps (``reconstruct``):

1. load the study (``io.load_any_study``);
2. fit the Gaussians to its frames (``fit.batch.fit_study``), checkpointing as it goes;
3. the lumen's centerline (``analysis.centerline``);
4. the flow on the lumen (``flow.estimate.flow_on_lumen``: transit Q, Poiseuille + Young–Tsai ΔP,
   FFR, quasi-Poiseuille fields), unless ``flow="none"``; a flow that cannot be computed is a line
   in the summary and the report, and the geometry is still written;
5. the outputs and the report (``report.write_outputs``; the file list is in ``pinngs.report``).

While it runs OUT holds ``checkpoint.pt`` (every ``checkpoint_every`` steps); ``resume=True``
continues from it. The checkpoint is removed once the outputs are in place.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Literal

from .analysis.centerline import extract_centerline
from .fit.batch import FitConfig, fit_study
from .flow.estimate import flow_on_lumen
from .io import StudyError, load_any_study
from .io.dicom import DicomError
from .report import write_outputs
from .units import PA_AORTIC_MMHG

FlowMethod = Literal["reduced", "none"]
FLOW_METHODS: tuple[str, ...] = ("reduced", "none")


class ReconstructError(ValueError):
    """A problem with the inputs or the output folder that the user can fix."""


def reconstruct(study_path: str | os.PathLike, out: str | os.PathLike, config: FitConfig | None = None, *,
                flow: FlowMethod = "reduced", pa_mmhg: float = PA_AORTIC_MMHG, overwrite: bool = False,
                resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict | None:
    """Run the whole batch reconstruction (module docstring).

    Args:
        study_path: a study folder or DICOM XA (a file or a folder of .dcm files).
        out: the output folder (must be empty unless ``overwrite`` or ``resume``).
        config: the fit's settings (defaults if None).
        flow: "reduced" (the flow estimate) or "none" (geometry only).
        pa_mmhg: mean aortic pressure for FFR (mmHg).
        stop_after: stop after that many fit steps without writing outputs (tests of the resume path).

    Returns:
        The summary written to summary.json, or None when ``stop_after`` stopped the fit.
    """
    t0 = time.perf_counter()
    if flow not in FLOW_METHODS:
        raise ReconstructError(f"flow must be one of {', '.join(FLOW_METHODS)}; got {flow!r}")
    out = Path(out)
    ckpt = out / "checkpoint.pt"
    _prepare_output(out, ckpt, overwrite, resume)
    # 1. the study
    try:
        study = load_any_study(study_path)
    except (StudyError, DicomError) as e:
        raise ReconstructError(str(e)) from None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # 2. the Gaussians
    try:
        res = fit_study(study, config or FitConfig(), checkpoint=ckpt, resume=resume, progress=progress,
                        stop_after=stop_after)
    except BaseException:
        # a run that fails before its first checkpoint leaves nothing behind; one with a checkpoint
        # keeps it for --resume
        if created and not ckpt.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    if res is None:
        return None
    # 3. the centerline
    branches = extract_centerline(res.occupancy, res.origin_mm, res.spacing_mm)
    # 4. the flow
    lumen_flow, note = None, "not requested (--flow none)"
    if flow == "reduced":
        try:
            lumen_flow = flow_on_lumen(study, res.occupancy, res.origin_mm, res.spacing_mm, branches=branches)
        except (ValueError, RuntimeError, FloatingPointError) as e:  # no inlet, no transit fit, too short
            note = f"{type(e).__name__}: {e}"
    # 5. outputs and report
    summary = write_outputs(out, res, study, str(study_path), branches=branches, flow=lumen_flow, flow_note=note,
                            pa_mmhg=pa_mmhg, t0=t0)
    if ckpt.exists():
        ckpt.unlink()
    return summary


def _prepare_output(out: Path, ckpt: Path, overwrite: bool, resume: bool) -> None:
    """Check the output folder: empty, or a checkpoint to resume, or allowed to be replaced."""
    if out.exists() and not out.is_dir():
        raise ReconstructError(f"output {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if resume and ckpt.exists():
            return
        if resume:
            raise ReconstructError(f"--resume: {out} holds no checkpoint.pt to resume from")
        if overwrite:
            shutil.rmtree(out)
            return
        raise ReconstructError(f"output folder {out} is not empty; choose another, pass --overwrite, "
                               f"or --resume an interrupted run")
