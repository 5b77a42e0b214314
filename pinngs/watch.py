"""``pinngs watch``: the frames of a folder, as they appear, through the online fitter, then the
outputs of ``pinngs reconstruct``.

    watch(WatchSettings(folder="incoming", out="OUT"))

Steps (``watch``):

1. check the folder and the output before any work (as ``reconstruct`` does); with ``resume``,
   restore the fitter and the list of files already taken from ``.OUT.partial``;
2. poll the folder (``io.watch.FolderWatcher``: a study folder being written, or .dcm files) and
   feed each new frame to ``OnlineFitter.add_frame``; print a running estimate every
   ``estimate_every`` frames; save the state every ``snapshot_every`` frames;
3. stop on the idle timeout, ``max_frames`` or Ctrl-C/SIGTERM;
4. save the state first (the fitter and the files taken), so that a second signal while the outputs
   are being written cannot lose the fit, then write the outputs (built beside OUT and swapped in),
   then remove the saved state.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fit.online import OnlineConfig, OnlineFitter, OnlineFrameWarning
from .io.atomic import OutputError, atomic_file, check_output, failpoint, partial_dir
from .io.watch import FolderWatcher, WatchWarning


class WatchError(ValueError):
    """A problem with the watched folder, the output or the saved state that the user can fix."""


class WatchStopped(Exception):
    """Ctrl-C or SIGTERM; ``str()`` says what was kept and how to continue."""


@dataclass(frozen=True)
class WatchSettings:
    """What ``pinngs watch`` is asked to do (the CLI's options)."""

    folder: str
    out: str
    budget_s: float = 0.35
    steps: int = 0  # fixed fit steps per frame (0: the budget decides)
    max_frames: int = 0
    idle_timeout_s: float = 30.0
    poll_s: float = 0.2
    estimate_every: int = 10
    threads: int = 0  # 0: every core
    seed: int = 0
    snapshot: str | None = None  # also copy the fitter's state here at stop
    snapshot_every: int = 0  # save the state every N accepted frames (0: at stop only)
    resume: bool = False
    overwrite: bool = False
    device: str = "cpu"  # where the online fit runs (OnlineConfig.device)


def watch(s: WatchSettings, log=print) -> dict:
    """Run ``pinngs watch`` (module docstring); returns the summary written to OUT/summary.json.

    Raises:
        WatchError: bad folder, output or saved state (before any work), or outputs that cannot be
            written (the state is kept then); WatchStopped: interrupted (the state is kept).
    """
    from tqdm import tqdm

    d, out = Path(s.folder), Path(s.out)
    state = partial_dir(out)
    if not d.is_dir():
        raise WatchError(f"{d} is not a folder to watch (a study folder or a folder receiving .dcm files)")
    try:
        check_output(out, [d], overwrite=s.overwrite)
        check_output(state, [d], option="-o (its state folder)", allow_nonempty=True)
    except OutputError as e:
        raise WatchError(str(e)) from None
    fitter, src, accepted = _start(s, d, state)
    last_new = time.monotonic()
    bar = tqdm(desc="frames", unit="frame", total=s.max_frames or None, initial=accepted)

    def flush(caught: list) -> None:  # warnings (skipped frames, files) as one line each, above the bar
        for w in caught:
            tqdm.write(f"pinngs: warning: {w.message}", file=sys.stderr)
        caught.clear()

    stop, pending = "idle", []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OnlineFrameWarning)
        warnings.simplefilter("always", WatchWarning)
        try:
            while not (s.max_frames and accepted >= s.max_frames):
                new = src.poll()
                flush(caught)
                pending = [x[3] for x in new]  # polled (so marked done) but not yet fed: not saved as done
                for img, view, t, label in new:
                    pending.remove(label)
                    rep = fitter.add_frame(img, view, t)
                    flush(caught)
                    if not rep.accepted:
                        continue
                    accepted += 1
                    bar.update(1)
                    bar.set_postfix(t_s=f"{t:.3f}", ms=f"{1000 * rep.seconds:.0f}", steps=rep.steps,
                                    gaussians=rep.n_gaussians)
                    if s.estimate_every and accepted % s.estimate_every == 0 and fitter.field is not None:
                        tqdm.write(f"[{accepted} frames, t {t:.3f} s] {fitter.estimate().line()}")
                    if s.snapshot_every and accepted % s.snapshot_every == 0:
                        _save_state(state, fitter, src, accepted, pending)
                        failpoint("watch-state")
                    if s.max_frames and accepted >= s.max_frames:
                        break
                if s.max_frames and accepted >= s.max_frames:
                    stop = "max-frames"
                    break
                if new:  # idle time counts from the end of the last work, not from when it arrived
                    last_new = time.monotonic()
                elif time.monotonic() - last_new > s.idle_timeout_s:
                    break
                else:
                    time.sleep(s.poll_s)
        except KeyboardInterrupt:
            stop = "interrupted"
        flush(caught)
    bar.close()
    return _finish(s, fitter, src, accepted, stop, out, state, log, pending)


def _start(s: WatchSettings, d: Path, state: Path) -> tuple[OnlineFitter, FolderWatcher, int]:
    """A new fitter and watcher, or those saved in ``state`` (``resume``)."""
    src = FolderWatcher(d)
    if s.resume:
        if not (state / "fitter.pt").exists():
            raise WatchError(f"--resume: there is no interrupted watch to continue ({state / 'fitter.pt'} not found)")
        try:
            fitter = OnlineFitter.restore(state / "fitter.pt")
            w = json.loads((state / "watcher.json").read_text())
            src.done, src.fails, src.sizes = set(w["done"]), dict(w["fails"]), dict(w["sizes"])
            return fitter, src, int(w["accepted"])
        except (ValueError, KeyError, OSError) as e:
            raise WatchError(f"--resume: the saved state in {state} cannot be read ({e}); start again with "
                             "--overwrite") from None
    if (state / "fitter.pt").exists() and not s.overwrite:
        raise WatchError(f"an interrupted watch of this output is saved in {state}; continue it with --resume, or "
                         "start again with --overwrite")
    shutil.rmtree(state, ignore_errors=True)
    cfg = OnlineConfig(latency_budget_s=s.budget_s, seed=s.seed, device=s.device)
    if s.threads:
        cfg = dataclasses.replace(cfg, threads=s.threads)
    if s.steps:  # a fixed amount of work per frame: reproducible, whatever the machine's speed
        cfg = dataclasses.replace(cfg, min_steps=s.steps, max_steps=s.steps)
    try:
        return OnlineFitter(cfg), src, 0
    except ValueError as e:  # a bad setting, or a device that is not there
        raise WatchError(str(e)) from None


def _save_state(state: Path, fitter: OnlineFitter, src: FolderWatcher, accepted: int, pending: list[str]) -> None:
    """The fitter (a snapshot) and the files taken, each file written atomically, fitter first: a
    watcher list older than the fitter only makes the fitter see a frame again, which it refuses as
    a duplicate. Files with a frame polled but not yet fed (``pending`` labels) are not saved as
    taken, so a resume reads them again."""
    fitter.snapshot(state / "fitter.pt")
    done = src.done - {src.key_of(x) for x in pending}
    with atomic_file(state / "watcher.json") as fh:
        json.dump({"done": sorted(done), "fails": src.fails, "sizes": src.sizes, "accepted": accepted}, fh)


def _finish(s: WatchSettings, fitter: OnlineFitter, src: FolderWatcher, accepted: int, stop: str, out: Path,
            state: Path, log, pending: list[str]) -> dict:
    if accepted:
        _save_state(state, fitter, src, accepted, pending)  # first: a signal from here on cannot lose the fit
    resume = f"pinngs watch {s.folder} -o {s.out} --resume"
    if fitter.field is None:
        raise WatchError(f"stopped ({stop}) after {accepted} frame(s) without geometry: the fitter needs two views "
                         f"with an opacified frame; nothing written to {out}"
                         + (f" (the frames taken are saved in {state}: {resume})" if accepted else ""))
    try:
        est = fitter.estimate()
        log(f"stopped ({stop}) after {accepted} frames: {est.line()}")
        summary = fitter.write_outputs(out, overwrite=True, study_label=str(s.folder))
    except KeyboardInterrupt:
        raise WatchStopped(f"interrupted while writing the outputs; {out} is unchanged and the fit is saved in "
                           f"{state}. Finish with: {resume}") from None
    except (FileExistsError, ValueError, RuntimeError) as e:  # e.g. a lumen too small to trace
        raise WatchError(f"could not write the outputs to {out}: {e} (the fit is saved in {state})") from None
    if s.snapshot:
        shutil.copyfile(state / "fitter.pt", s.snapshot)
    shutil.rmtree(state, ignore_errors=True)
    lat = [h["seconds"] for h in fitter.history if h.get("accepted") and h.get("steps")]
    p = np.percentile(lat, [50, 95]) if lat else [float("nan")] * 2
    log(f"per-frame latency p50 {1000 * p[0]:.0f} ms, p95 {1000 * p[1]:.0f} ms (budget "
        f"{1000 * fitter.config.latency_budget_s:.0f} ms) -> {out}/summary.json")
    return summary
