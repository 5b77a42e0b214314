"""Online fitting: one frame at a time, a bounded warm-started update per frame (issue 7).

    fitter = OnlineFitter(OnlineConfig(latency_budget_s=0.35))      # or OnlineFitter.from_batch(OUT)
    for image, view, t_s in frames:                                 # [H, W] line integrals, CArmView, s
        rep = fitter.add_frame(image, view, t_s)                    # FrameReport: accepted, steps, seconds
    est = fitter.estimate()                                         # OnlineEstimate: Q, ΔP, FFR, velocity
    fitter.snapshot("state.pt"); fitter = OnlineFitter.restore("state.pt")
    fitter.write_outputs("OUT")                                     # the files of `pinngs reconstruct`

``add_frame``, in order:

1. **Validate** (``_check``): a frame with a bad view, image or time, a duplicate or one out of order
   is skipped with an ``OnlineFrameWarning``, and the state is left exactly as it was.
2. **Append** the frame, background median removed (as ``fit.batch.frame_targets``).
3. **Initialise** (``_maybe_init``): Gaussians by back-projection once two views hold an opacified
   frame, re-initialised while the bolus still fills the vessel. ``from_batch`` starts from a batch
   result instead and never re-initialises.
4. **Update** (``_update``): Adam steps on the batch fit's loss at decaying learning rates
   (``_set_lr``), one frame per step, until ``latency_budget_s`` is spent; a failed step rolls the
   state back to where the frame found it.

The outputs use ``model()``, a running average of the iterates. ``estimate()`` runs
``flow.estimate.flow_on_lumen`` on its lumen: transit Q, Poiseuille + Young–Tsai ΔP, FFR with Pa =
``pa_mmhg``, a quasi-Poiseuille field (the PINN is not run online). That takes seconds, so it runs
outside the frame budget: in ``estimate()`` when stale, or every ``flow_every`` frames. Confidences
in [0, 1] are heuristics, **not calibrated** against errors: geometry clip(1 − data_rel_l2 / 0.5, 0,
1); Q's from the transit fit (``LumenFlow.summary``); velocity, ΔP and FFR Q's × geometry's.

Snapshots: the whole state in one ``torch.save`` file (a pickle: restore only snapshots you wrote);
a restored fitter continues bit-exactly. Measurements: docs/decisions.md, "Online fitter: ...".
"""
from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..backend import resolve_device
from ..field import GaussianField
from ..flow.estimate import LumenFlow, flow_on_lumen
from ..geometry import CArmView, pack_views
from ..io.study import VIEW_FIELDS, Frame, Study
from ..ops import project_gaussians, rasterize
from ..render import nuisance_fit
from ..report import write_outputs
from ..units import PA_AORTIC_MMHG
from .batch import (FitConfig, FitResult, Targets, backprojection_init, densify_prune, fitted_lumen,
                    make_optimizer, resolve_threads, targets_from_study)

SNAPSHOT_FORMAT = "pinngs-online"
SNAPSHOT_VERSION = 2  # 2: the flow estimate moved to pinngs.flow (version 1 snapshots pickled pinngs.online)


class OnlineFrameWarning(UserWarning):
    """A frame was skipped (bad shape, non-finite, duplicate, out of order...) or an update rolled back."""


@dataclass(frozen=True)
class OnlineConfig:
    """Knobs of ``OnlineFitter`` (see the module docstring). ``fit`` supplies the batch fit's learning
    rates, initial lattice, scale prior, round-vessel prior and densify/prune schedule (steps counted
    from the init). Measurements behind the defaults: docs/decisions.md, "Online fitter: ..."."""

    latency_budget_s: float = 0.35  # wall time per add_frame for the geometry update
    min_steps: int = 1  # steps per frame at least (none forced after a (re)initialisation)
    max_steps: int = 200  # ... and at most
    ema_frames: float = 4.0  # the outputs average the iterates of about this many frames (0: the raw iterate)
    ema_min_steps: int = 20  # ... and of at least this many steps (budgets of ~1 step per frame; see model())
    lr_decay_steps: int = 200  # learning rates x max(lr_floor, 1 / (1 + steps since init / this)); 0: constant
    lr_floor: float = 0.25
    rot_lr_decay_steps: int = 600  # lr_decay_steps of a rotational run, which initialises late (see _set_lr)
    batch_frames: int = 1  # frames rendered per step: the lead frame, then random opacified ones (see _update)
    lead_peak_frac: float = 0.5  # the new frame leads the steps while its mass >= this x its view's peak (0: always)
    frames_keep: float = 0.3  # a frame is a target when its mass >= this fraction of the brightest's
    init_snr: float = 20.0  # contrast-to-noise (p99.9 / 1.4826 MAD) for "opacified"
    reinit_growth: float = 1.3  # re-initialise when the smallest per-view net peak mass grew by this factor
    max_reinit: int = 10  # re-initialisations at most (see _maybe_init)
    rot_init_span_deg: float = 90.0  # rotational runs: the opacified views must span this arc before the init
    reinit_until_steps: int = 0  # re-initialise only within this many steps of the last init (0: any time)
    flow_every: int = 0  # frames between flow refreshes inside add_frame (0: only in estimate())
    lumen_mm: float = 0.1
    pa_mmhg: float = PA_AORTIC_MMHG
    threads: int = 0  # torch threads during add_frame (0: every core; 1 on a busy CPU, where 2 wait on each other)
    device: str = "cpu"  # "cpu", "cuda" or "auto": where the frames, the Gaussians and the steps live
    seed: int = 0
    fit: FitConfig = field(default_factory=FitConfig)

    def validate(self) -> None:
        if not self.latency_budget_s > 0:
            raise ValueError(f"latency_budget_s must be > 0, got {self.latency_budget_s}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.batch_frames < 1:
            raise ValueError(f"batch_frames must be >= 1, got {self.batch_frames}")
        if not 0 <= self.lead_peak_frac <= 1:
            raise ValueError(f"lead_peak_frac must be in [0, 1], got {self.lead_peak_frac}")
        if not 0 < self.frames_keep <= 1:
            raise ValueError(f"frames_keep must be in (0, 1], got {self.frames_keep}")
        if not self.pa_mmhg > 0:
            raise ValueError(f"pa_mmhg must be > 0, got {self.pa_mmhg}")
        if not self.ema_frames >= 0 or self.ema_min_steps < 0:
            raise ValueError(f"need ema_frames >= 0 (0: no averaging) and ema_min_steps >= 0, got "
                             f"{self.ema_frames} and {self.ema_min_steps}")
        if self.lr_decay_steps < 0 or self.rot_lr_decay_steps < 0 or not 0 < self.lr_floor <= 1:
            raise ValueError(f"need lr_decay_steps >= 0, rot_lr_decay_steps >= 0 and 0 < lr_floor <= 1, got "
                             f"{self.lr_decay_steps}, {self.rot_lr_decay_steps}, {self.lr_floor}")
        if self.max_reinit < 0 or self.reinit_until_steps < 0 or not self.reinit_growth > 1:
            raise ValueError(f"need max_reinit >= 0, reinit_until_steps >= 0 and reinit_growth > 1, got "
                             f"{self.max_reinit}, {self.reinit_until_steps}, {self.reinit_growth}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.flow_every < 0 or self.threads < 0:
            raise ValueError("flow_every and threads must be >= 0")
        self.fit.validate()


@dataclass
class FrameReport:
    """What ``add_frame`` did with one frame. ``seconds``: wall time of the whole call."""

    accepted: bool
    reason: str = ""  # why a frame was skipped or an update rolled back
    index: int = -1  # the frame's index in the fitter (accepted frames only)
    view: int = -1
    t_s: float = float("nan")
    steps: int = 0
    seconds: float = 0.0
    fit_seconds: float = 0.0
    flow_seconds: float = 0.0
    data_rel: float = float("nan")  # relative squared misfit of the last step's mini-batch
    n_gaussians: int = 0
    event: str = ""  # "init", "reinit", "" (or "rollback")


@dataclass
class OnlineEstimate:
    """The current estimates, units in the names; ``*_confidence`` in [0, 1], heuristic, not
    calibrated (module docstring). NaN where not available yet; ``status`` says why."""

    status: str
    n_frames: int
    t_latest_s: float
    n_gaussians: int = 0
    geometry_confidence: float = 0.0
    data_rel_l2: float = float("nan")
    lumen_volume_mm3: float = float("nan")
    stenosis: list = field(default_factory=list)  # grade_stenosis dicts of the flow's centerline
    lesions: list = field(default_factory=list)  # per lesion: grade, jet weight, translesional ΔP and FFR
    q_mm3_s: float = float("nan")
    q_confidence: float = 0.0
    velocity_mean_mm_s: float = float("nan")  # Q / inlet area
    velocity_max_mm_s: float = float("nan")  # 2 Q / smallest section area (Poiseuille centre line)
    velocity_confidence: float = 0.0
    dp_pa: float = float("nan")
    dp_mmhg: float = float("nan")
    dp_confidence: float = 0.0
    ffr: float = float("nan")
    ffr_confidence: float = 0.0
    pa_mmhg: float = PA_AORTIC_MMHG
    dp_section_arcs_mm: tuple = (float("nan"), float("nan"))
    # TransitFit.to_dict() + coverage, upstream_weight and branch_flows_mm3_s (the flows used, split_flows)
    transit: dict = field(default_factory=dict)
    seconds: float = 0.0
    note: str = "confidences are heuristics (pinngs.flow.estimate docstring), not calibrated against errors"

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line for a terminal."""
        if not math.isfinite(self.q_mm3_s):
            return f"[{self.status}] {self.n_frames} frames, {self.n_gaussians} Gaussians"
        tag = "[IMPLAUSIBLE] " if self.status.startswith("implausible") else ""
        return (f"{tag}Q {self.q_mm3_s:.0f} mm³/s ({self.q_confidence:.2f}) | v̄ {self.velocity_mean_mm_s:.0f} mm/s "
                f"| ΔP {self.dp_pa:.0f} Pa = {self.dp_mmhg:.2f} mmHg ({self.dp_confidence:.2f}) "
                f"| FFR {self.ffr:.3f} ({self.ffr_confidence:.2f}) | {self.n_frames} frames")


# ------------------------------------------------------------------------------------------------
def _clean_for_init(images: torch.Tensor) -> torch.Tensor:  # [T, H, W] -> [T, H, W]
    """Targets for the back-projection: minus a least-squares background plane, and 0 where within 3
    noise sigmas (1.4826 MAD) of it. Early in the bolus the peak is low, and the smooth subtraction
    residual and the noise would pass the hull's coarse threshold in every view and spread the fine
    lattice over most of the field of view (docs/decisions.md, "Online fitter: re-initialisation")."""
    T, H, W = images.shape
    dev = images.device
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, device=dev), torch.linspace(-1, 1, W, device=dev), indexing="ij")
    A = torch.stack([torch.ones_like(xx), xx, yy]).reshape(3, -1).T.double()  # [HW, 3]
    y = images.reshape(T, -1).double().T  # [HW, T]
    coef = torch.linalg.lstsq(A, y).solution  # [3, T]
    r = (y - A @ coef).T.float().reshape(T, H, W)
    flat = r.reshape(T, -1)
    sig = 1.4826 * (flat - flat.median(1, keepdim=True).values).abs().median(1).values
    return torch.where(r > 3 * sig[:, None, None], r, torch.zeros((), device=dev))


def _opacity_stats(img: np.ndarray) -> tuple[float, float]:
    """(mass, contrast-to-noise) of a median-removed image: Σ max(d, 0) and p99.9 / (1.4826 MAD)."""
    mass = float(np.clip(img, 0, None).sum())
    mad = float(np.median(np.abs(img - np.median(img))))
    snr = float(np.percentile(img, 99.9)) / max(1.4826 * mad, 1e-12)
    return mass, snr


def _mode(n_views: int, n_frames: int) -> str:
    """The study mode of ``n_views`` views (more than 6: a rotational run, one view per frame)."""
    if n_views > 6:
        return "rotational"
    return {1: "single", 2: "biplane"}.get(n_views, "multiview")


class OnlineFitter:
    """Gaussians (and flow) updated one frame at a time; see the module docstring.

    Args:
        config: OnlineConfig (defaults if None).
    """

    def __init__(self, config: OnlineConfig | None = None) -> None:
        self.config = config or OnlineConfig()
        self.config.validate()
        self.device = resolve_device(self.config.device)
        self.views: list[CArmView] = []
        self.images: list[torch.Tensor] = []  # T × [H, W] float32, background median removed
        self.frame_view: list[int] = []  # [T]
        self.frame_t_s: list[float] = []  # [T]
        self.frame_mass: list[float] = []  # [T] Σ max(d, 0)
        self.frame_snr: list[float] = []  # [T]
        self.field: GaussianField | None = None
        self.ema: list[torch.Tensor] | None = None  # running average of field.parameters()
        self.ema_n = 0  # iterates in it since it was (re)started
        self.steps_per_frame = 0.0  # running mean of the steps of the frames that took any
        self.opt: torch.optim.Adam | None = None
        self.steps_since_init = 0
        self.total_steps = 0
        self.source = "empty"  # "empty", "backprojection", "batch:<path>"
        self.init_state: dict = {}  # n_views, min_peak_mass at the last (re)initialisation
        self.history: list[dict] = []  # one dict per add_frame call
        self.gen = torch.Generator().manual_seed(self.config.seed)
        self.step_time_s = 0.0  # running mean of one step's wall time
        self._estimate: OnlineEstimate | None = None
        self._flow: LumenFlow | None = None
        self._flow_frames = -1  # frames the cached estimate was computed on
        self._packed: torch.Tensor | None = None
        # the first Adam() imports torch._dynamo (~2 s): pay it here, not in the first add_frame
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_batch(cls, out_dir: str | os.PathLike, config: OnlineConfig | None = None,
                   study: Study | None = None) -> "OnlineFitter":
        """Start from a ``pinngs reconstruct`` output (its gaussians.npz). With ``study`` its frames
        are loaded too (in time order, validated like added frames, without fitting steps), so
        that flow can be estimated from them and new frames join them."""
        p = Path(out_dir) / "gaussians.npz"
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: from_batch needs a `pinngs reconstruct` output folder")
        try:
            z = np.load(p)
            f = GaussianField(torch.from_numpy(z["means_mm"]), torch.from_numpy(z["scales_mm"]),
                              torch.from_numpy(z["quats_wxyz"]), torch.from_numpy(z["atten_per_mm"]))
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{p}: not a readable pinngs Gaussians file ({type(e).__name__}: {e}); expected "
                             f"means_mm, scales_mm, quats_wxyz, atten_per_mm") from None
        fitter = cls(config)
        fitter.field = f.to(fitter.device)
        f = fitter.field
        fitter.opt = make_optimizer(f, fitter.config.fit)
        fitter.source = f"batch:{Path(out_dir)}"
        # densify/prune already ran in the batch fit: start past its schedule
        fitter.steps_since_init = fitter.config.fit.densify_until + 1
        if study is not None:
            images = study.line_integrals()
            for k in sorted(range(len(study.frames)), key=lambda k: (study.frames[k].t_s, study.frames[k].view)):
                fr = study.frames[k]
                fitter.add_frame(images[k], study.views[fr.view], fr.t_s, fit=False)
        return fitter

    # ------------------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return len(self.images)

    def _check(self, image, view, t_s) -> tuple[np.ndarray | None, str]:
        if not isinstance(view, CArmView):
            return None, f"view must be a pinngs.geometry.CArmView, got {type(view).__name__}"
        try:
            t = float(t_s)
        except (TypeError, ValueError):
            return None, f"t_s must be a number (seconds), got {t_s!r}"
        if not math.isfinite(t):
            return None, f"t_s must be finite, got {t_s}"
        try:
            img = np.asarray(image, dtype=np.float32)
        except (TypeError, ValueError) as e:
            return None, f"image is not a numeric array ({e})"
        if img.ndim != 2:
            return None, f"image must be 2D [rows, cols], got shape {img.shape}"
        if img.shape != (view.rows, view.cols):
            return None, (f"image is {img.shape[0]}x{img.shape[1]} but its view's detector is "
                          f"{view.rows}x{view.cols} (rows x cols)")
        if self.views and (self.views[0].rows, self.views[0].cols) != img.shape:
            return None, (f"image is {img.shape[0]}x{img.shape[1]} but the views seen so far are "
                          f"{self.views[0].rows}x{self.views[0].cols}: one fit needs one detector size")
        bad = int((~np.isfinite(img)).sum())
        if bad:
            return None, f"image has {bad} NaN/inf pixel(s) (corrupt frame?)"
        vi = self._view_index(view)
        if vi is not None:
            ts = [tt for v, tt in zip(self.frame_view, self.frame_t_s) if v == vi]
            if ts and any(abs(tt - t) <= 1e-9 for tt in ts):
                return None, f"duplicate frame: view {vi} already has a frame at t = {t:.4f} s"
            if ts and t < max(ts):
                return None, (f"out of order: t = {t:.4f} s is earlier than view {vi}'s newest frame "
                              f"(t = {max(ts):.4f} s)")
        return img, ""

    def _view_index(self, view: CArmView) -> int | None:
        for k, v in enumerate(self.views):
            if v == view:
                return k
        return None

    def add_frame(self, image: np.ndarray, view: CArmView, t_s: float, *, fit: bool = True) -> FrameReport:
        """Absorb one frame: validate, append, then a warm-started update within the latency budget.

        Args:
            image: [H, W] line integrals d = -ln(I_fill / I_mask) (float; raw frames must be log-subtracted
                first, e.g. ``Study.line_integrals``).
            view: its C-arm geometry (frames of one view share one CArmView; equal geometry = one view).
            t_s: acquisition time (s); per view, frames must come in increasing time.
            fit: False stores the frame without any fitting step (used by ``from_batch``).

        Returns:
            FrameReport. Bad frames are skipped with an OnlineFrameWarning (accepted False), never raised.
        """
        t0 = time.perf_counter()
        img, why = self._check(image, view, t_s)
        if img is None:
            warnings.warn(f"frame skipped: {why}", OnlineFrameWarning, stacklevel=2)
            rep = FrameReport(False, why, seconds=time.perf_counter() - t0, n_gaussians=self._n_gauss())
            return rep  # the state, history included, is exactly as it was
        # --- append (the state changes from here on)
        vi = self._view_index(view)
        if vi is None:
            self.views.append(view)
            self._packed = None
            vi = len(self.views) - 1
        d = img - np.float32(np.median(img))
        mass, snr = _opacity_stats(d)
        self.images.append(torch.from_numpy(np.ascontiguousarray(d)).to(self.device))
        self.frame_view.append(vi)
        self.frame_t_s.append(float(t_s))
        self.frame_mass.append(mass)
        self.frame_snr.append(snr)
        rep = FrameReport(True, index=self.n_frames - 1, view=vi, t_s=float(t_s))
        if fit:
            prev = torch.get_num_threads()
            c = self.config
            torch.set_num_threads(resolve_threads(c.threads))
            try:
                self._update(rep, t0)
            finally:
                torch.set_num_threads(prev)
            rep.fit_seconds = time.perf_counter() - t0
            if self.config.flow_every and self.field is not None and self.n_frames % self.config.flow_every == 0:
                t1 = time.perf_counter()
                self.estimate()
                rep.flow_seconds = time.perf_counter() - t1
        rep.n_gaussians = self._n_gauss()
        rep.seconds = time.perf_counter() - t0
        self.history.append({k: v for k, v in asdict(rep).items()})
        return rep

    def _n_gauss(self) -> int:
        return 0 if self.field is None else len(self.field)

    # ------------------------------------------------------------------------------------------
    def _opacified_views(self) -> dict[int, int]:
        """view -> its brightest frame, for views with a frame of contrast-to-noise >= init_snr."""
        best: dict[int, int] = {}
        for k, (v, m, s) in enumerate(zip(self.frame_view, self.frame_mass, self.frame_snr)):
            if s >= self.config.init_snr and (v not in best or m > self.frame_mass[best[v]]):
                best[v] = k
        return best

    @property
    def _rotational(self) -> bool:
        """One view per frame (``_mode``: more than 6 views)."""
        return _mode(len(self.views), self.n_frames) == "rotational"

    def _net_masses(self) -> np.ndarray:
        """[T] each frame's mass above the noise floor: minus the smallest mass of its view (rotational:
        of all frames), i.e. of a frame before the contrast arrived."""
        m = np.asarray(self.frame_mass, float)
        if self._rotational or not len(m):
            return m - (m.min() if len(m) else 0.0)
        v = np.asarray(self.frame_view)
        floor = np.array([m[v == k].min() for k in range(len(self.views))])
        return m - floor[v]

    def _maybe_init(self) -> str:
        """(Re)initialise the field by back-projection when due; returns "init", "reinit" or "".

        Due once two views hold an opacified frame (contrast-to-noise p99.9 / (1.4826 MAD) >=
        ``init_snr``), and again while the bolus fills the vessel, so that the hull grows with it: when
        another view becomes opacified or the smallest per-view peak mass above the noise floor has
        grown by ``reinit_growth`` (1.3), at most ``max_reinit`` (10) times (with ``reinit_until_steps``
        > 0, only within that many steps of the last init). A rotational run (more than 6 views) waits
        until the opacified views span ``rot_init_span_deg`` (90°) of primary angle, and new views
        alone do not re-initialise it. The targets are the batch fit's composites of the frames so far
        (``fit.batch.targets_from_study``; rotational: each opacified view's brightest frame), cleaned
        by ``_clean_for_init``; on 2-4 views the hull is weighted by the round-vessel prior
        (``FitConfig.init_disc_window_mm``, 3 mm; ``fit.batch.disc_weights``). An initialisation may
        take longer than the frame's budget. Never after ``from_batch``. Measurements:
        docs/decisions.md, "Online fitter: re-initialisation"."""
        if self.source.startswith("batch"):
            return ""
        op = self._opacified_views()
        if len(op) < 2:
            return ""
        if len(op) > 16:  # the hull of 16 views spread over the run is as tight as of all
            keys = sorted(op)
            op = {k: op[k] for k in (keys[int(i)] for i in np.linspace(0, len(keys) - 1, 16))}
        rotational = self._rotational
        if rotational:  # one view per frame: wait until the opacified views span a wide arc (the hull
            # of two neighbouring angles is a long cylinder, tens of thousands of Gaussians)
            ang = [self.views[v].primary_deg for v in op]
            if max(ang) - min(ang) < self.config.rot_init_span_deg:
                return ""
        net = self._net_masses()
        peak = min(float(net[k]) for k in op.values())
        if self.field is not None:
            st = self.init_state
            more_views = len(op) > st["n_views"] and not rotational  # rotational: every frame adds a view
            grown = more_views or peak > self.config.reinit_growth * st["min_peak_mass"]
            if not (grown and st["reinits"] < self.config.max_reinit
                    and (not self.config.reinit_until_steps
                         or self.steps_since_init < self.config.reinit_until_steps)):
                return ""
        c = self.config.fit
        try:  # the batch fit's targets on the frames so far: per view a 3-frame running mean, then the max
            st = self.study()
            if st.mode != "rotational":
                keep = set(op)
                st = Study([st.views[v] for v in sorted(keep)],
                           [Frame(fr.image, sorted(keep).index(fr.view), fr.t_s) for fr in st.frames if fr.view in keep],
                           _mode(len(keep), 0), "line_integral")
                tg = targets_from_study(st)
            else:
                tg = Targets([self.views[v] for v in op], torch.stack([self.images[k] for k in op.values()]))
            tg = Targets(tg.views, _clean_for_init(tg.images.cpu()), tg.info)  # the init runs on the CPU (NumPy)
            f = backprojection_init(tg, c.init_spacing_mm, c.hull_frac, c.max_gaussians, c.disc_window_for(st.mode))
        except Exception as e:  # noqa: BLE001 - e.g. no common vessel in the views yet: wait for more frames
            warnings.warn(f"initialisation postponed ({type(e).__name__}: {e})", OnlineFrameWarning, stacklevel=3)
            return ""
        event = "init" if self.field is None else "reinit"
        f = f.to(self.device)
        self.field, self.opt, self.ema = f, make_optimizer(f, c), None
        self.steps_since_init = 0
        self.source = "backprojection"
        self.init_state = {"n_views": len(op), "min_peak_mass": peak, "frame": self.n_frames - 1,
                           "reinits": self.init_state.get("reinits", -1) + 1}
        return event

    def _targets(self) -> np.ndarray:
        """Indices of the opacified frames: mass above the noise floor >= frames_keep x the brightest's
        (``fit.batch.frame_targets`` uses the mass itself; with the floor, noise-only frames never pass)."""
        m = self._net_masses()
        if not len(m) or not m.max() > 0:
            return np.zeros(0, int)
        return np.nonzero(m >= self.config.frames_keep * m.max())[0]

    def _packed_views(self) -> torch.Tensor:
        if self._packed is None or len(self._packed) != len(self.views):
            self._packed = pack_views(self.views, device=self.device)
        return self._packed

    def _loss(self, sel: list[int], f: GaussianField | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f, c = f if f is not None else self.field, self.config.fit
        H, W = self.images[0].shape
        pk = self._packed_views()[torch.tensor([self.frame_view[k] for k in sel])]
        tgt = torch.stack([self.images[k] for k in sel])
        _, prec = f.covar_and_precision()
        params, rects = project_gaussians(pk, f.means, prec, W, H, 5.0)
        img = rasterize(pk, params, f.attenuation.expand(len(sel), -1), rects, W, H)
        data = ((nuisance_fit(img, tgt, True) - tgt) ** 2).sum() / (tgt ** 2).sum().clamp_min(1e-12)
        s = f.scales
        reg = (torch.relu(s - c.max_scale_mm) + torch.relu(c.min_scale_mm - s)).pow(2).sum(-1).mean()
        return data + c.scale_weight * reg, data

    def _update(self, rep: FrameReport, t0: float) -> None:
        """The frame's warm-started steps within the latency budget.

        Each step renders ``batch_frames`` (1) frames, each with its own contrast scale and background
        plane (``render.nuisance_fit``): first the new frame when it is opacified and near its view's
        peak (``_near_peak``), then random opacified frames; without that lead, random opacified frames
        near their own view's peak. So with one frame per step every step fits the new frame. A
        rotational run (one frame per angle) lets the new frame lead only the first step and then fits
        random frames of the whole sweep, as the batch fit does; fitted on the newest frames alone, its
        steps would see only the last arc of the sweep. The batch fit's densify/prune schedule runs,
        counted from the init. Another step is taken while the time spent plus the running mean step
        time fits in ``latency_budget_s`` (at least ``min_steps``, except after a (re)initialisation;
        at most ``max_steps``). A step that raises or leaves a non-finite parameter rolls the geometry,
        the optimiser, the average and the RNG back to where the frame found them. Measurements:
        docs/decisions.md, "Online fitter: frames per step" and "Online fitter: lead frame"."""
        rep.event = self._maybe_init()
        if self.field is None:
            return
        cand = self._targets()
        if len(cand) == 0:
            return
        c, fc = self.config, self.config.fit
        new = self.n_frames - 1
        # the lead and the pool, chosen once per frame (the masses do not change during the steps):
        # the new frame leads when opacified and near its view's peak; otherwise random frames near
        # their own view's peak (_near_peak)
        near = self._near_peak()
        if new in set(cand.tolist()) and near[new]:
            first, others = [new], [int(k) for k in cand if k != new]
        else:
            first = []
            others = [int(k) for k in cand if near[k]] or [int(k) for k in cand]
        lead_steps = 1 if self._rotational else c.max_steps  # rotational: the first step only (see above)
        backup = ([p.detach().clone() for p in self.field.parameters()], copy.deepcopy(self.opt.state_dict()),
                  self.steps_since_init, self.total_steps, self.gen.get_state(), self.step_time_s,
                  None if self.ema is None else [e.clone() for e in self.ema], self.ema_n)
        field_before = self.field
        try:
            while rep.steps < c.max_steps:
                spent = time.perf_counter() - t0
                # an (re)initialisation has spent its frame's time already: no minimum then
                floor = 0 if rep.event else c.min_steps
                if rep.steps >= floor and spent + self.step_time_s > c.latency_budget_s:
                    break
                ts = time.perf_counter()
                it = self.steps_since_init
                if fc.densify_every and it > 0 and it % fc.densify_every == 0 and it <= fc.densify_until:
                    self.field, _ = densify_prune(self.field, fc)
                    self.opt, self.ema = make_optimizer(self.field, fc), None
                lead, pool = (first, others) if rep.steps < lead_steps else ([], others + first)
                sel = (lead + [pool[int(i)] for i in torch.randperm(len(pool), generator=self.gen)])[:c.batch_frames]
                self.opt.zero_grad(set_to_none=True)
                self._set_lr()
                loss, data = self._loss(sel)
                loss.backward()
                self.opt.step()
                self._update_ema()
                rep.steps += 1
                self.steps_since_init += 1
                self.total_steps += 1
                rep.data_rel = float(data.detach())
                dt = time.perf_counter() - ts
                self.step_time_s = dt if self.step_time_s == 0 else 0.7 * self.step_time_s + 0.3 * dt
            ok = all(bool(torch.isfinite(p).all()) for p in self.field.parameters())
            why = "" if ok else "a parameter became NaN/inf"
        except Exception as e:  # noqa: BLE001 - never crash the stream: roll back and say why
            ok, why = False, f"{type(e).__name__}: {e}"
        if not ok:
            (params, opt_state, self.steps_since_init, self.total_steps, gen_state, self.step_time_s, self.ema,
             self.ema_n) = backup
            self.field = field_before
            with torch.no_grad():
                for p, q in zip(self.field.parameters(), params):
                    p.copy_(q)
            self.opt = make_optimizer(self.field, fc)
            self.opt.load_state_dict(opt_state)
            self.gen.set_state(gen_state)
            rep.event, rep.reason, rep.steps = "rollback", why, 0
            warnings.warn(f"update rolled back ({why}); the frame is kept, the geometry is unchanged",
                          OnlineFrameWarning, stacklevel=3)
        elif rep.steps:
            spf = self.steps_per_frame
            self.steps_per_frame = float(rep.steps) if spf == 0 else 0.8 * spf + 0.2 * rep.steps

    def _near_peak(self) -> np.ndarray:
        """[T] whether each frame so far is still near its view's peak: net mass at least
        ``lead_peak_frac`` (0.5) of the largest of its view so far (rotational runs: every frame is a
        new view, so all are). Only such a new frame leads every step's mini-batch; past that, the steps
        take random frames that are near their own view's peak. A washing-out frame (the contrast
        leaves from the inlet), fitted on its own for a whole frame's steps, erodes the proximal
        lumen. Measurements: docs/decisions.md, "Online fitter: lead frame"."""
        frac = self.config.lead_peak_frac
        m = self._net_masses()
        if frac <= 0 or self._rotational or not len(m):
            return np.ones(len(m), bool)
        v = np.asarray(self.frame_view)
        peak = np.full(len(self.views), -np.inf)
        np.maximum.at(peak, v, m)
        return m >= frac * peak[v]

    def _set_lr(self) -> None:
        """The batch fit's learning rates times max(``lr_floor``, 1 / (1 + steps since the
        (re)initialisation / ``lr_decay_steps``)): halved after 200 steps, a quarter from 600 on. One
        frame per step is a noisy gradient, and at the batch's constant rates the iterate keeps
        jittering about the optimum, which blurs the field. A rotational run decays over
        ``rot_lr_decay_steps`` (600): it initialises only once the sweep spans ``rot_init_span_deg``,
        so it gets fewer steps, and its throat is still opening at the last frame. Measurements:
        docs/decisions.md, "Online fitter: learning-rate decay"."""
        c, fc = self.config, self.config.fit
        n = c.rot_lr_decay_steps if self._rotational else c.lr_decay_steps
        k = 1.0 if not n else max(c.lr_floor, 1.0 / (1.0 + self.steps_since_init / n))
        for g, base in zip(self.opt.param_groups, (fc.lr_means, fc.lr_scales, fc.lr_quats, fc.lr_atten)):
            g["lr"] = base * k

    def _update_ema(self) -> None:
        if self.config.ema_frames == 0:
            d = 0.0
        elif self.steps_per_frame == 0:  # no frame's steps measured yet: the plain mean so far
            d = 1.0
        else:
            w = max(self.config.ema_frames * self.steps_per_frame, self.config.ema_min_steps)  # window in steps
            d = max(0.0, 1.0 - 1.0 / w)
        with torch.no_grad():
            if self.ema is None or d == 0:
                self.ema, self.ema_n = [p.detach().clone() for p in self.field.parameters()], 1
            else:
                # the plain mean of the iterates until it spans the window: a fixed decay from a
                # restart would weigh the restart point by d^n
                d = min(d, self.ema_n / (self.ema_n + 1))
                for e, p in zip(self.ema, self.field.parameters()):
                    e.mul_(d).add_(p.detach(), alpha=1 - d)
                self.ema_n += 1

    def model(self) -> GaussianField | None:
        """The field the outputs use: the running (Polyak) average of the iterates since the last
        (re)initialisation or densification, which removes the mini-batch jitter of the last iterate.
        Their plain mean until it spans the window W = max(``ema_frames`` (4) × the running mean of
        the steps per frame, ``ema_min_steps`` (20)) steps, then an exponential average with decay
        1 − 1/W per step: a window counted in frames lags the data by the same number of frames
        whatever the budget. The iterate itself with ema_frames 0. Measurements: docs/decisions.md,
        "Online fitter: running average"."""
        if self.field is None or self.ema is None:
            return self.field
        m, ls, q, ra = self.ema
        f = GaussianField(m, ls.exp(), q, torch.nn.functional.softplus(ra))
        with torch.no_grad():  # exact, not through the exp/log and softplus round trips
            f.log_scales.copy_(ls)
            f.raw_atten.copy_(ra)
        return f

    # ------------------------------------------------------------------------------------------
    def data_residual(self) -> float:
        """Relative L2 misfit ||model − data|| / ||data|| of the field over all opacified frames (each
        with its fitted contrast scale and background plane); NaN before the initialisation."""
        if self.field is None or not self.n_frames:
            return float("nan")
        num = den = 0.0
        f = self.model()
        with torch.no_grad():
            cand = self._targets().tolist()
            for i in range(0, len(cand), 8):
                sel = cand[i:i + 8]
                tgt = torch.stack([self.images[k] for k in sel])
                _, data = self._loss(sel, f)
                num += float(data) * float((tgt ** 2).sum())
                den += float((tgt ** 2).sum())
        return math.sqrt(num / max(den, 1e-30))

    def study(self) -> Study:
        """The frames seen so far as a Study (line integrals, background median removed)."""
        fr = [Frame(im.cpu().numpy(), v, t) for im, v, t in zip(self.images, self.frame_view, self.frame_t_s)]
        return Study(list(self.views), fr, _mode(len(self.views), len(fr)), "line_integral")

    def lumen(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(occupancy [X, Y, Z] in [0, 1], origin_mm [3], lumen level μ_c mm⁻¹) of the current field."""
        if self.field is None:
            raise RuntimeError("no geometry yet: the fitter initialises once two views hold an opacified frame")
        occ, origin, mu_c, _ = fitted_lumen(self.model(), list(self.views),
                                            replace(self.config.fit, lumen_mm=self.config.lumen_mm))
        return occ, origin, mu_c

    def estimate(self, refresh: bool = False) -> OnlineEstimate:
        """The current Q, velocity, ΔP and FFR with confidences (recomputed when frames arrived since the
        last estimate, or with ``refresh``). Never raises for a stage that cannot run yet: ``status``
        says which stage stopped and why."""
        if self._estimate is not None and self._flow_frames == self.n_frames and not refresh:
            return self._estimate
        t0 = time.perf_counter()
        c = self.config
        est = OnlineEstimate("waiting for contrast in two views", self.n_frames,
                             max(self.frame_t_s) if self.frame_t_s else float("nan"), self._n_gauss(),
                             pa_mmhg=c.pa_mmhg)
        flow = None
        if self.field is not None:
            try:
                occ, origin, _ = self.lumen()
                est.data_rel_l2 = self.data_residual()
                est.geometry_confidence = float(np.clip(1 - est.data_rel_l2 / 0.5, 0, 1)) if math.isfinite(
                    est.data_rel_l2) else 0.0
                est.lumen_volume_mm3 = float((occ > 0.5).sum() * c.lumen_mm ** 3)
                est.status = "geometry only"
                flow = flow_on_lumen(self.study(), occ, origin, c.lumen_mm)
                est.status = self._fill_flow(est, flow)
            except Exception as e:  # noqa: BLE001 - an estimate is best effort; the reason is reported
                est.status = f"{est.status}; flow not available ({type(e).__name__}: {e})"
        est.seconds = time.perf_counter() - t0
        self._estimate, self._flow, self._flow_frames = est, flow, self.n_frames
        return est

    def _fill_flow(self, est: OnlineEstimate, flow: LumenFlow) -> str:
        """Fill ``est`` from ``flow`` (``LumenFlow.summary``); returns its status ("ok", or why the
        figures are implausible)."""
        f = flow.summary(self.config.pa_mmhg, est.t_latest_s, est.geometry_confidence)
        for k in ("q_mm3_s", "q_confidence", "velocity_mean_mm_s", "velocity_max_mm_s", "velocity_confidence",
                  "dp_pa", "dp_mmhg", "dp_confidence", "ffr", "ffr_confidence", "lesions"):
            setattr(est, k, f[k])
        est.stenosis = flow.lesions
        est.dp_section_arcs_mm = flow.dp_arcs_mm
        est.transit = f["transit"] | {"branch_flows_mm3_s": f["branch_flows_mm3_s"]}
        return f["status"]

    def velocity_mm_s(self, points_mm: np.ndarray) -> np.ndarray:  # [P, 3] -> [P, 3]
        """Velocity (mm/s) at world points from the current estimate (quasi-Poiseuille, zero outside
        the lumen). Raises RuntimeError when no flow estimate is available (see ``estimate().status``)."""
        self.estimate()
        if self._flow is None:
            raise RuntimeError(f"no flow estimate: {self._estimate.status}")
        return self._flow.velocity_mm_s(points_mm)

    def pressure_pa(self, points_mm: np.ndarray) -> np.ndarray:  # [P, 3] -> [P]
        """Quasi-Poiseuille pressure (Pa, 0 at the outlet of branch 0; viscous, without the lesion loss
        that ``estimate().dp_pa`` includes)."""
        self.estimate()
        if self._flow is None:
            raise RuntimeError(f"no flow estimate: {self._estimate.status}")
        return self._flow.pressure_pa(points_mm)

    # ------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        f = self.field
        return {
            "format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION,
            "config": asdict(self.config),
            "views": [{k: getattr(v, k) for k in VIEW_FIELDS} | {"near_mm": v.near_mm} for v in self.views],
            "images": torch.stack(self.images).cpu() if self.images else None,
            "frame_view": list(self.frame_view), "frame_t_s": list(self.frame_t_s),
            "frame_mass": list(self.frame_mass), "frame_snr": list(self.frame_snr),
            "field": None if f is None else {"means": f.means.detach().cpu().clone(),
                                             "log_scales": f.log_scales.detach().cpu().clone(),
                                             "quats": f.quats.detach().cpu().clone(),
                                             "raw_atten": f.raw_atten.detach().cpu().clone()},
            "opt": None if self.opt is None else copy.deepcopy(self.opt.state_dict()),
            "ema": None if self.ema is None else [e.cpu().clone() for e in self.ema], "ema_n": self.ema_n,
            "steps_per_frame": self.steps_per_frame,
            "steps_since_init": self.steps_since_init, "total_steps": self.total_steps, "source": self.source,
            "init_state": dict(self.init_state), "history": list(self.history), "gen": self.gen.get_state(),
            "step_time_s": self.step_time_s,
            "estimate": self._estimate, "flow": self._flow, "flow_frames": self._flow_frames,
        }

    def snapshot(self, path: str | os.PathLike) -> Path:
        """Write the whole state to ``path`` atomically (temporary file, then rename): frames, views,
        Gaussians, their running average, Adam moments, RNG, counters, history, the cached estimate."""
        from ..io.atomic import atomic_file

        path = Path(path)
        with atomic_file(path, "wb") as fh:
            torch.save(self._state(), fh)
        return path

    @classmethod
    def restore(cls, path: str | os.PathLike) -> "OnlineFitter":
        """A fitter from a ``snapshot`` file; it continues exactly where the snapshot was taken."""
        path = Path(path)
        try:
            st = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"snapshot {path} cannot be read ({type(e).__name__}: {e})") from None
        if not isinstance(st, dict) or st.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"{path} is not a pinngs online snapshot (format {SNAPSHOT_FORMAT!r})")
        if st.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"{path}: snapshot version {st.get('version')!r}; this pinngs reads {SNAPSHOT_VERSION}")
        cd = dict(st["config"])
        cd["fit"] = FitConfig(**cd["fit"])
        cfg = OnlineConfig(**{k.name: cd[k.name] for k in fields(OnlineConfig) if k.name in cd})
        self = cls(cfg)
        self.views = [CArmView(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in vd.items()})
                      for vd in st["views"]]
        self.images = list(st["images"].unbind(0)) if st["images"] is not None else []
        self.images = [im.clone().to(self.device) for im in self.images]
        self.frame_view, self.frame_t_s = list(st["frame_view"]), list(st["frame_t_s"])
        self.frame_mass, self.frame_snr = list(st["frame_mass"]), list(st["frame_snr"])
        if st["field"] is not None:
            fd = st["field"]
            f = GaussianField(fd["means"], fd["log_scales"].exp(), fd["quats"],
                              torch.nn.functional.softplus(fd["raw_atten"]))
            with torch.no_grad():  # bit-exact, not through the exp/log and softplus round trips
                f.log_scales.copy_(fd["log_scales"])
                f.raw_atten.copy_(fd["raw_atten"])
            self.field = f = f.to(self.device)
            self.opt = make_optimizer(f, cfg.fit)
            self.opt.load_state_dict(st["opt"])
        self.ema = None if st["ema"] is None else [e.to(self.device) for e in st["ema"]]
        self.ema_n = int(st.get("ema_n", 10 ** 9))
        self.steps_per_frame = float(st.get("steps_per_frame", 0.0))
        self.steps_since_init, self.total_steps = st["steps_since_init"], st["total_steps"]
        self.source, self.init_state, self.history = st["source"], st["init_state"], st["history"]
        self.gen.set_state(st["gen"])
        self.step_time_s = st["step_time_s"]
        self._estimate, self._flow, self._flow_frames = st["estimate"], st["flow"], st["flow_frames"]
        return self

    # ------------------------------------------------------------------------------------------
    def write_outputs(self, out: str | os.PathLike, overwrite: bool = False, study_label: str = "online") -> dict:
        """Write the files of ``pinngs reconstruct`` (gaussians.ply/npz, lumen.npz/stl/obj,
        centerline.csv, summary.json, report.md/png) for the current state into ``out``, plus the
        online estimate in summary.json ("online"). Returns the summary."""
        if self.field is None:
            raise RuntimeError("nothing to write: no geometry yet (no two views with an opacified frame)")
        est = self.estimate()
        occ, origin, mu_c = self.lumen()
        model = copy.deepcopy(self.model()).cpu()  # the outputs are written from a CPU copy
        op = self._opacified_views()
        tg = Targets([self.views[v] for v in op], torch.stack([self.images[k] for k in op.values()]).cpu(),
                     {"kind": "online-brightest-frame-per-view"})
        info = {"n_targets": int(len(self._targets())), "targets": tg.info, "targets_mode": "frames",
                "n_gaussians": len(model), "n_init": None, "seconds_init": 0.0,
                "seconds_fit": float(sum(h.get("fit_seconds", 0.0) for h in self.history)),
                "steps": self.total_steps, "data_rel_l2": est.data_rel_l2, "config": asdict(self.config.fit)}
        res = FitResult(model, tg, mu_c, occ, origin, self.config.lumen_mm, [], info)
        extra = {"online": {"estimate": est.to_dict(), "source": self.source, "frames_accepted": self.n_frames,
                            "steps": self.total_steps, "config": asdict(self.config)}}
        return _write_outputs(out, res, self.study(), study_label, overwrite, extra, self._flow, est.status,
                              self.config.pa_mmhg)


def _write_outputs(out: str | os.PathLike, res: FitResult, study: Study, label: str, overwrite: bool,
                   extra: dict, flow: LumenFlow | None, status: str, pa_mmhg: float) -> dict:
    """The output files of ``pinngs reconstruct`` (``report.write_outputs``): built in a folder beside
    ``out`` and swapped in when complete; ``out`` must be empty unless ``overwrite``."""
    import shutil

    from ..io.atomic import check_output, replace_dir, temp_dir_beside

    out = check_output(out, overwrite=overwrite)
    tmp = temp_dir_beside(out)
    try:
        summary = write_outputs(tmp, res, study, label, flow=flow, flow_note=status, pa_mmhg=pa_mmhg, extra=extra)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
