"""``pinngs batch``: a cohort of studies through ``reconstruct``, on this machine or a Ray cluster.

    jobs = read_manifest("cohort.csv", defaults={"flow": "fem"})
    rows = run_cohort(jobs, "out/cohort", executor="ray")          # or executor="local"

The manifest is a CSV with one study per row: ``path`` (a study folder or DICOM XA; relative paths
are relative to the manifest's folder), optionally ``id`` (the output subfolder; default the study
folder's name), ``truth`` (a simulator ``truth/`` folder: the study is then evaluated against it)
and any of the options in ``OPTIONS`` (an empty cell takes the batch's default). Other columns are
copied to the cohort table as they are. A folder works as a manifest too: its ``manifest.csv`` if it
has one (``pinngs simulate --cohort`` writes one), else every subfolder holding a study (with its
``truth/`` when there is one).

Each study runs the whole ``reconstruct`` into ``OUT/<id>/`` (written atomically, as always), then
``evaluate`` when it has a truth. ``OUT/<id>/batch.json`` is written last: a study whose
``batch.json`` says ``ok`` is finished and a rerun of the batch skips it. A study that fails leaves
``OUT/<id>/batch.json`` with its error and ``log.txt``, and the others go on; a rerun tries it again,
and a study that was killed in flight continues from its fit's checkpoint. ``OUT/cohort.csv`` (and
``cohort.parquet`` when pyarrow is installed) is rewritten after every study; ``OUT/cohort.png``
plots the studies against their truth where they have one.

Executors: ``ray`` (the default) runs one study per Ray task, each with ``threads`` cores, on a
local Ray runtime with the cores here, or on the cluster at ``address`` (``ray://host:10001``, or
``RAY_ADDRESS``): the nodes need pinngs installed and must see the studies and OUT at the same paths
(a shared file system). ``local`` runs the studies one after the other in this process (debugging,
CI, no Ray).
"""
from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .io.atomic import atomic_file, partial_dir

MARKER = "batch.json"  # OUT/batch.json: what this batch folder is; OUT/<id>/batch.json: the study's outcome
CHOICES = {"flow": ("pinn", "fem", "pinn-pure", "reduced", "none"), "lumen_level": ("auto", "projected", "density"),
           "device": ("cpu", "cuda", "auto"), "gate": ("auto", "none", "end-diastole")}
# the per-study options a manifest column (or the batch's command line) may set: name -> (type, lower bound)
OPTIONS: dict[str, tuple[type, float | None]] = {
    "flow": (str, None), "iters": (int, 1), "seed": (int, 0), "lumen_level": (str, None), "pa_mmhg": (float, 0.0),
    "cfd_resolution": (float, 0.5), "cfd_max_tets": (int, 0), "allow_single_view": (bool, None), "device": (str, None),
    "gate": (str, None),
}
DEFAULTS = {"flow": "pinn", "iters": 500, "seed": 0, "lumen_level": "auto", "pa_mmhg": 93.0, "cfd_resolution": 2.0,
            "cfd_max_tets": 18000, "allow_single_view": False, "device": "cpu", "gate": "auto"}
FAILPOINT_STUDY_ENV = "PINNGS_FAILPOINT_STUDY"  # fault tests: the failpoint applies to this study id only


class ManifestError(ValueError):
    """A manifest that cannot be used (missing column, bad value, duplicate id); names the line."""


@dataclass(frozen=True)
class Job:
    """One study of a cohort: its id (the output subfolder), the study path, its truth folder (or
    None), the options ``reconstruct`` gets, and the manifest's other columns (``meta``)."""

    id: str
    study: str
    truth: str | None = None
    options: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# the manifest
def _value(name: str, text: str, where: str):
    kind, lo = OPTIONS[name]
    try:
        if kind is bool:
            t = text.strip().lower()
            if t not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return t in ("1", "true", "yes")
        v = kind(text)
    except ValueError:
        raise ManifestError(f"{where}: {name} must be {'true or false' if kind is bool else kind.__name__}, "
                            f"got {text!r}") from None
    if name in CHOICES and v not in CHOICES[name]:
        raise ManifestError(f"{where}: {name} must be one of {', '.join(CHOICES[name])}, got {v!r}")
    if lo is not None and v < lo:
        raise ManifestError(f"{where}: {name} must be ≥ {lo:g}, got {v}")
    return v


def check_options(options: dict, where: str = "options") -> dict:
    """The batch's defaults merged with ``options`` (name -> value), each checked like a manifest cell."""
    out = dict(DEFAULTS)
    for k, v in options.items():
        if k not in OPTIONS:
            raise ManifestError(f"{where}: unknown option {k!r}; the options are {', '.join(OPTIONS)}")
        out[k] = _value(k, str(v), where)
    return out


def _is_study(p: Path) -> bool:
    return (p / "study.json").is_file() or any(p.glob("*.dcm"))


def read_manifest(path: str | os.PathLike, defaults: dict | None = None) -> list[Job]:
    """The jobs of a manifest CSV or a folder of studies (module docstring), every row checked.

    Raises:
        ManifestError: no such file; no ``path`` column; an unknown option, a bad value or a
            duplicate or unusable id (the message names the line). A study path that does not exist
            is not an error here: that study fails alone when the batch runs.
    """
    base = check_options(defaults or {}, "the batch's options")
    p = Path(path)
    if p.is_dir():
        if (p / "manifest.csv").is_file():
            p = p / "manifest.csv"
        else:
            subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".") and _is_study(d))
            if not subs:
                raise ManifestError(f"{path}: the folder has no manifest.csv and no subfolder holding a study "
                                    "(study.json or .dcm files)")
            return [Job(d.name, str(d.resolve()), str((d / "truth").resolve()) if (d / "truth" / "truth.json").is_file()
                        else None, dict(base)) for d in subs]
    if not p.is_file():
        raise ManifestError(f"{path}: no such manifest (a CSV with a 'path' column, or a folder of studies)")
    try:
        rows = list(csv.DictReader(io.StringIO(p.read_text())))
        header = list(rows[0].keys()) if rows else next(csv.reader(io.StringIO(p.read_text())), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{p}: not a readable CSV ({e})") from None
    header = [h.strip() for h in header if h is not None]
    if "path" not in header:
        raise ManifestError(f"{p}: no 'path' column (the header is {', '.join(header) or 'empty'}); one study per "
                            "row, its folder or DICOM file in 'path'")
    for h in header:
        near = difflib.get_close_matches(h, [*OPTIONS, "id", "truth"], n=1, cutoff=0.75)
        if h not in OPTIONS and h not in ("path", "id", "truth") and near:
            raise ManifestError(f"{p}: column {h!r} is not an option; did you mean {near[0]!r}? (other columns are "
                                "copied to the cohort table, so a misspelt option would be silently ignored)")
    jobs, seen = [], {}
    for n, row in enumerate(rows, start=2):
        where = f"{p}, line {n}"
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            raise ManifestError(f"{where}: empty path")
        study = Path(row["path"])
        study = study if study.is_absolute() else p.parent / study
        jid = row.get("id") or study.stem
        if "/" in jid or "\\" in jid or jid.startswith(".") or jid in ("cohort", MARKER):
            raise ManifestError(f"{where}: id {jid!r} cannot name an output folder (no '/', not starting with '.')")
        if jid in seen:
            raise ManifestError(f"{where}: id {jid!r} is also on line {seen[jid]}; every study needs its own id")
        seen[jid] = n
        opts = dict(base)
        opts.update({k: _value(k, v, where) for k, v in row.items() if k in OPTIONS and v != ""})
        truth = row.get("truth") or None
        if truth and not Path(truth).is_absolute():
            truth = str(p.parent / truth)
        meta = {k: v for k, v in row.items() if k not in OPTIONS and k not in ("path", "id", "truth")}
        jobs.append(Job(jid, str(study.resolve()), str(Path(truth).resolve()) if truth else None, opts, meta))
    if not jobs:
        raise ManifestError(f"{p}: no studies (only a header)")
    return jobs


# ------------------------------------------------------------------------------------------------
# one study (runs in a worker)
def outcome(out: Path, job: Job) -> dict | None:
    """``OUT/<id>/batch.json`` of a study (None when it has not run or the file is unreadable)."""
    try:
        return json.loads((out / job.id / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_done(out: Path, job: Job) -> bool:
    o = outcome(out, job)
    return bool(o) and o.get("status") == "ok"


@contextlib.contextmanager
def _failpoint_scope(job_id: str):
    """The fault tests' failpoint applies to one study only (``PINNGS_FAILPOINT_STUDY``)."""
    only, saved = os.environ.get(FAILPOINT_STUDY_ENV), None
    if only is not None and only != job_id:
        saved = os.environ.pop("PINNGS_FAILPOINT", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PINNGS_FAILPOINT"] = saved


def _write_outcome(dest: Path, doc: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest / MARKER) as fh:
        fh.write(json.dumps(doc, indent=1))


def run_study(job: Job, out: str | os.PathLike, threads: int | None = None, retries: int = 0) -> dict:
    """Reconstruct one study into ``OUT/<id>/`` (and evaluate it against its truth), its log in
    ``OUT/<id>/log.txt``; returns its outcome (also written to ``OUT/<id>/batch.json``). Never
    raises for a failing study: its error is the outcome. An exception is tried ``retries`` more
    times; a run killed in flight continues from its checkpoint the next time."""
    import dataclasses

    import torch

    from .analysis.evaluate import evaluate
    from .fit.batch import FitConfig
    from .flow.estimate import FlowConfig
    from .pinn.field import PinnConfig
    from .reconstruct import reconstruct

    out = Path(out)
    dest = out / job.id
    logs = out / ".logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{job.id}.txt"
    t0, attempt, error, stage = time.perf_counter(), 0, None, "reconstruct"
    o = job.options
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
            _failpoint_scope(job.id):
        print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.id} on {socket.gethostname()} (pid {os.getpid()}), "
              f"{threads or torch.get_num_threads()} threads: {job.study}\n   options {json.dumps(o)}", flush=True)
        while True:
            attempt += 1
            try:
                if not (dest / "summary.json").is_file():  # (after a failed evaluation only that is redone)
                    resume = (partial_dir(dest) / "checkpoint.pt").is_file()
                    if resume:
                        print("   continuing from the checkpoint of an interrupted run", flush=True)
                    cfg = dataclasses.replace(FitConfig(seed=o["seed"]), iters=o["iters"], threads=threads or 0,
                                              device=o["device"], lumen_level=o["lumen_level"], gate=o["gate"])
                    fcfg = FlowConfig(n_per_radius=o["cfd_resolution"], max_tets=o["cfd_max_tets"] or None,
                                      pinn=PinnConfig(device=o["device"]))
                    stage = "reconstruct"
                    reconstruct(job.study, dest, cfg, flow=o["flow"], flow_config=fcfg, pa_mmhg=o["pa_mmhg"],
                                overwrite=not resume, resume=resume, progress=False,
                                allow_single_view=o["allow_single_view"])
                if job.truth:
                    stage = "evaluate"
                    m = evaluate(dest, job.truth, n_surface_points=20_000)
                    with atomic_file(dest / "evaluation.json") as fh:
                        fh.write(json.dumps(m, indent=1, default=float))
                error = None
                break
            except Exception as e:  # noqa: BLE001 - a failing study is an outcome, not a crash of the batch
                error = " ".join(f"{type(e).__name__}: {e}".split())  # one line in the cohort table
                traceback.print_exc()
                if attempt > retries:
                    break
                print(f"   attempt {attempt} failed; trying again", flush=True)
        secs = time.perf_counter() - t0
        print(f"== {'ok' if error is None else 'failed'} after {secs:.1f} s", flush=True)
    doc = {"id": job.id, "status": "ok" if error is None else "failed", "error": error,
           "stage": None if error is None else stage, "attempts": attempt, "wall_s": secs,
           "host": socket.gethostname(), "threads": threads, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "log.txt").write_text(log_path.read_text())
    _write_outcome(dest, doc)
    return doc


# ------------------------------------------------------------------------------------------------
# the cohort table and figure
TABLE_FIRST = ["id", "status", "error", "study", "method", "flow_status", "mode", "n_views", "view_separation_deg",
               "n_gaussians", "lumen_volume_mm3", "n_lesions", "worst_stenosis_percent", "q_mm3_s", "dp_mmhg", "ffr"]
EVAL_COLUMNS = ["dice", "radius_mae_mm", "radius_bias_mm", "stenosis_percent_truth", "stenosis_error_points",
                "flow_q_truth_mm3_s", "flow_q_error_percent", "flow_dp_pa", "flow_dp_truth_pa", "flow_dp_error_percent",
                "flow_ffr", "flow_ffr_truth", "flow_ffr_abs_error"]


def study_row(job: Job, out: Path) -> dict:
    """One row of the cohort table from a study's outputs (what exists of them)."""
    row = {"id": job.id, "study": job.study}
    o = outcome(out, job)
    row["status"] = o["status"] if o else "pending"
    row["error"] = (o or {}).get("error") or ""
    try:
        s = json.loads((out / job.id / "summary.json").read_text()) if row["status"] == "ok" else None
    except (OSError, ValueError):
        s = None
    if s:
        f, les = s.get("flow") or {}, s.get("stenosis") or []
        row.update({"method": f.get("method") or "none", "flow_status": f.get("status", ""), "mode": s.get("mode"),
                    "n_views": s.get("n_views"), "view_separation_deg": s.get("view_separation_deg"),
                    "n_gaussians": s.get("n_gaussians"), "lumen_volume_mm3": s.get("lumen_volume_mm3"),
                    "n_lesions": len(les),
                    "worst_stenosis_percent": max((x["percent_diameter_stenosis"] for x in les), default=0.0),
                    "q_mm3_s": f.get("q_mm3_s"), "dp_mmhg": f.get("dp_mmhg"), "ffr": f.get("ffr"),
                    "n_warnings": len(s.get("warnings", [])), "seconds_reconstruct": s.get("seconds_total")})
        for k, x in enumerate(f.get("lesions") or [], start=1):
            row.update({f"lesion{k}_percent": x.get("percent_diameter_stenosis"),
                        f"lesion{k}_arc_mm": x.get("arc_from_inlet_mm"), f"lesion{k}_dp_mmhg": x.get("dp_mmhg"),
                        f"lesion{k}_ffr": x.get("ffr")})
        if not f.get("lesions"):
            for k, x in enumerate(les, start=1):
                row.update({f"lesion{k}_percent": x.get("percent_diameter_stenosis"),
                            f"lesion{k}_arc_mm": x.get("arc_from_inlet_mm")})
        try:
            ev = json.loads((out / job.id / "evaluation.json").read_text()) if job.truth else {}
        except (OSError, ValueError):
            ev = {}
        row.update({k: ev[k] for k in EVAL_COLUMNS if k in ev})
    if o:
        row.update({"wall_s": o.get("wall_s"), "attempts": o.get("attempts"), "host": o.get("host")})
    row.update({f"meta_{k}" if k in row else k: v for k, v in job.meta.items()})
    return row


def write_table(rows: list[dict], out: Path) -> Path:
    """``OUT/cohort.csv`` (atomically), and ``cohort.parquet`` when pyarrow is installed."""
    cols = [c for c in TABLE_FIRST if any(c in r for r in rows)]
    for r in rows:
        cols += [c for c in r if c not in cols]
    fmt = lambda v: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)  # noqa: E731
    with atomic_file(out / "cohort.csv") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: fmt(r.get(c)) for c in cols})
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return out / "cohort.csv"
    table = pa.table({c: [r.get(c) for r in rows] for c in cols})
    with atomic_file(out / "cohort.parquet", "wb") as fh:
        pq.write_table(table, fh)
    return out / "cohort.csv"


def cohort_figure(rows: list[dict], path: Path) -> Path | None:
    """Bland–Altman of FFR and ΔP against the truth and a Dice histogram, for the rows that have a
    truth (None, and no file, when none has)."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("dice") is not None]
    if not ok:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    for a, (est, ref, label) in zip(ax[:2], [("flow_ffr", "flow_ffr_truth", "FFR"),
                                              ("flow_dp_mmhg", "flow_dp_truth_mmhg", "ΔP (mmHg)")]):
        pairs = [(r[est], r[ref]) for r in ok if r.get(est) is not None and r.get(ref) is not None]
        if not pairs:
            a.set_title(f"{label}: no flow figures")
            continue
        e, t = np.array(pairs, float).T
        mean, diff = (e + t) / 2, e - t
        bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
        a.scatter(mean, diff, s=18)
        for y, ls in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
            a.axhline(y, color="k", ls=ls, lw=0.8)
        a.set_xlabel(f"mean of estimate and truth, {label}")
        a.set_ylabel(f"estimate − truth, {label}")
        a.set_title(f"{label}: bias {bias:+.3g}, limits ±{1.96 * sd:.3g} (n = {len(diff)})")
    d = np.array([r["dice"] for r in ok], float)
    ax[2].hist(d, bins=np.linspace(min(0.8, d.min()), 1.0, 21))
    ax[2].set_xlabel("lumen Dice")
    ax[2].set_ylabel("studies")
    ax[2].set_title(f"Dice: median {np.median(d):.3f}, min {d.min():.3f} (n = {len(d)})")
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


def _with_mmhg(rows: list[dict]) -> list[dict]:
    from .units import PA_PER_MMHG

    for r in rows:
        for k in ("flow_dp_pa", "flow_dp_truth_pa"):
            if r.get(k) is not None:
                r[k.replace("_pa", "_mmhg")] = float(r[k]) / PA_PER_MMHG
    return rows


def collect(jobs: list[Job], out: Path) -> list[dict]:
    """The cohort table's rows, and ``cohort.csv`` / ``cohort.png`` rewritten from the outputs."""
    rows = _with_mmhg([study_row(j, out) for j in jobs])
    write_table(rows, out)
    cohort_figure(rows, out / "cohort.png")
    return rows


# ------------------------------------------------------------------------------------------------
# the batch
def prepare_output(out: str | os.PathLike, manifest: str) -> Path:
    """OUT for a batch: a new or empty folder, or an earlier batch's (then the batch continues)."""
    from .io.atomic import check_output

    out = Path(out)
    check_output(out, [], allow_nonempty=True)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ManifestError(f"-o {out}: the folder is not empty and is not a `pinngs batch` output; choose another "
                            "(a batch's own output folder continues that batch)")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        with atomic_file(out / MARKER) as fh:
            fh.write(json.dumps({"format": "pinngs-batch", "version": 1, "manifest": str(Path(manifest).resolve()),
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    return out


def run_cohort(jobs: list[Job], out: str | os.PathLike, *, executor: str = "ray", address: str | None = None,
               threads: int | None = None, retries: int = 0, progress: bool = True) -> list[dict]:
    """Run every job not finished yet (module docstring) and return the cohort table's rows.

    Args:
        jobs: from ``read_manifest``.
        out: the batch folder (``prepare_output`` checks it).
        executor: "ray" or "local".
        address: a Ray cluster (``ray://host:10001``; None: ``RAY_ADDRESS`` if set, else a local
            runtime with this machine's cores).
        threads: CPU threads per study (None: 1 per Ray task, every core for ``local``); Ray runs as
            many studies at once as the cores allow.
        retries: how many more times a failing study is tried (an exception, or a Ray worker that died).
    """
    from tqdm import tqdm

    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', got {executor!r}")
    out = Path(out)
    todo = [j for j in jobs if not is_done(out, j)]
    counts = {"done": len(jobs) - len(todo), "failed": 0, "running": 0}
    bar = tqdm(total=len(jobs), initial=counts["done"], desc="cohort", unit="study", disable=not progress)

    def finished(doc: dict) -> None:
        counts["done" if doc["status"] == "ok" else "failed"] += 1
        counts["running"] = max(counts["running"] - 1, 0)
        bar.update()
        bar.set_postfix(counts)
        collect(jobs, out)

    collect(jobs, out)
    try:
        if executor == "local" or not todo:
            for j in todo:
                counts["running"] = 1
                bar.set_postfix(counts)
                finished(run_study(j, out, threads, retries))
        else:
            _run_ray(todo, out, address, threads, retries, counts, bar, finished)
    finally:
        bar.close()
    return collect(jobs, out)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """ConnectionError at once when nothing listens at a cluster address's host:port (Ray itself
    would keep trying for minutes); "auto" and addresses without a port are left to Ray."""
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port} ({e})") from None


def _run_ray(todo: list[Job], out: Path, address: str | None, threads: int | None, retries: int, counts: dict,
             bar, finished) -> None:
    try:
        import ray
    except ImportError:
        raise ManifestError("--executor ray needs Ray: pip install 'ray[client]>=2.9' (or run with --executor local)") from None
    address = address or os.environ.get("RAY_ADDRESS")
    per = max(int(threads or 1), 1)
    started = not ray.is_initialized()
    if started:
        if address:  # a cluster (ray://… through Ray Client, or host:port on a node of it): its own settings
            try:
                _check_reachable(address)
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
                raise ManifestError(
                    f"--address {address}: could not connect to the Ray cluster ({first}). Check that it runs "
                    "(`ray status` on its head node) and that this address reaches it (ray://HEAD:10001 through "
                    "Ray Client, HEAD:6379 from a node of the cluster); a cluster started by `ray start` uses "
                    "token authentication: set RAY_AUTH_MODE=token here, with its token in ~/.ray/auth_token or "
                    "RAY_AUTH_TOKEN") from None
        else:
            # "local": a new runtime for this batch, even where a `ray start` cluster runs on this machine
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
    try:
        biggest = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if per > biggest:  # Ray would wait forever for a node that large
            raise ManifestError(f"--threads {per}: no node of the Ray cluster has that many CPUs (the largest has "
                                f"{biggest:g}); use --threads {int(biggest)} or fewer")
        task = ray.remote(num_cpus=per, max_retries=retries)(run_study)
        refs = {task.remote(j, str(out.resolve()), per, retries): j for j in todo}
        counts["running"] = min(len(refs), max(int(ray.cluster_resources().get("CPU", 1)) // per, 1))
        bar.set_postfix(counts)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            job = refs[ready[0]]
            try:
                doc = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - the worker died (killed, out of memory): the study failed
                msg = f"{type(e).__name__}: the Ray worker running this study died ({str(e).splitlines()[0][:200]})"
                doc = {"id": job.id, "status": "failed", "error": msg, "stage": "reconstruct", "attempts": retries + 1,
                       "wall_s": None, "host": None, "threads": per, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
                _write_outcome(out / job.id, doc)
                log = out / ".logs" / f"{job.id}.txt"
                with open(log, "a") as fh:
                    fh.write(f"== {msg}\n")
                (out / job.id / "log.txt").write_text(log.read_text())
            finished(doc)
    finally:
        if started:
            ray.shutdown()
