"""The simulation pipeline: phantom -> true flow -> contrast transport -> projections -> noise.

    sim = simulate(get_preset("stenosis50-biplane"), seed=0)
    write_simulation(sim, "out/sten50")      # study folder + truth/ + preview.png, atomically

Grids: the lumen is voxelized at ``lumen_mm`` (0.1 mm) for the projector; flow and arrival times
live on a ``flow_mm`` (0.2 mm) grid. Everything random comes from one numpy Generator seeded by
``seed``, so a run is deterministic.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..geometry import CArmView
from ..io.study import AtomicFolder, Frame, Study, write_study_files
from ..units import PA_PER_MMHG
from .flowfield import FlowTruth, axisymmetric_fem, centerline_poiseuille, tet_fem
from .motion import CardiacMotion, splat
from .presets import Preset
from .transport import concentration, fill_unreached, travel_time



@dataclass
class Simulation:
    preset: Preset
    seed: int
    study: Study
    flow: FlowTruth
    flow_origin: np.ndarray
    flow_mm: float
    occupancy: np.ndarray
    lumen_origin: np.ndarray
    lumen_mm: float
    tau_flow: np.ndarray  # arrival time on the flow grid (s), inf where contrast never arrives
    centerline: np.ndarray  # [P, 4] X, Y, Z, R
    summary: dict
    # cardiac motion: frame_times_s [F] and centerline_displacement_mm [F, P, 3] (truth/motion.npz)
    motion_arrays: dict | None = None


def _views(pre: Preset, extent_mm: float) -> tuple[list[CArmView], list[tuple[int, float]]]:
    """Views and (view index, t_s) per frame. Values are rounded (1e-4 deg, 1 µs, 1e-4 mm) so the
    study round-trips exactly through DICOM decimal strings."""
    a = pre.acquisition
    fov = 1.15 * extent_mm
    sp = round(fov * a.sid_mm / a.sod_mm / a.detector_px, 4)
    common = dict(sid_mm=a.sid_mm, sod_mm=a.sod_mm, rows=a.detector_px, cols=a.detector_px, pixel_spacing_mm=(sp, sp))
    if a.mode == "rotational":
        n = a.n_frames
        views = [CArmView(round(a.sweep_start_deg + k * a.sweep_deg / (n - 1), 4), a.secondary_deg, **common)
                 for k in range(n)]
        return views, [(k, round(k * a.sweep_s / (n - 1), 6)) for k in range(n)]
    views = [CArmView(p, s, **common) for p, s in a.angles_deg]
    n = int(round(a.fps * a.duration_s))
    return views, [(v, round(k / a.fps, 6)) for k in range(n) for v in range(len(views))]


def simulate(pre: Preset, seed: int = 0, lumen_mm: float = 0.1, flow_mm: float = 0.2,
             progress: bool = True, d_mix: float = 10.0) -> Simulation:
    from .projector import add_noise, project_volume

    rng = np.random.default_rng(seed)
    steps = tqdm(total=5, desc=f"simulate {pre.name}", unit="step", disable=not progress)
    ph = pre.phantom()
    # 1. lumen on the fine grid
    steps.set_postfix_str("lumen")
    lo, lshape = ph.grid(lumen_mm)
    occ = ph.occupancy(lo, lumen_mm, lshape)
    steps.update()
    # 2. true flow on the flow grid
    steps.set_postfix_str("flow")
    fo, fshape = ph.grid(flow_mm)
    if pre.flow == "fem":
        flow = axisymmetric_fem(ph, fo, flow_mm, fshape, pre.q_mm3_s)
    elif pre.flow == "tet":
        flow = tet_fem(ph, fo, flow_mm, fshape, pre.q_mm3_s, n_per_radius=pre.tet_n_per_radius)
    else:
        flow = centerline_poiseuille(ph, fo, flow_mm, fshape, pre.q_mm3_s)
    steps.update()
    # 3. arrival times: at every lumen voxel (for the projector) and on the flow grid (truth)
    steps.set_postfix_str("transport")
    inlet_p, inlet_d, _ = ph.inlet
    idx = np.nonzero(occ > 0)
    pts = np.stack([lo[k] + lumen_mm * idx[k] for k in range(3)], 1)
    tau, n_fill = fill_unreached(pts, travel_time(flow.vel, fo, flow_mm, pts, inlet_p, inlet_d), d_mix)
    tau_flow = flow_grid_arrival(tau, idx, lshape, lumen_mm, lo, flow.vel, flow_mm, fo)
    steps.update()
    # 4. projections, frame by frame (all views sharing a time in one call)
    steps.set_postfix_str("project")
    extent = float(np.linalg.norm(ph.bounds_mm(1.0)[1] - ph.bounds_mm(1.0)[0]))
    views, frame_list = _views(pre, extent)
    times = sorted({t for _, t in frame_list})
    images: dict[tuple[int, float], np.ndarray] = {}
    occ_in = occ[idx]
    motion = CardiacMotion(**pre.motion) if pre.motion else None
    if motion is None:
        plo, pshape = lo, lshape
    else:  # the moving lumen is splatted onto a grid padded by its largest displacement
        pad = int(np.ceil((motion.max_displacement_mm() + 0.5) / lumen_mm))
        plo, pshape = lo - pad * lumen_mm, tuple(n + 2 * pad for n in lshape)
        centre = 0.5 * np.add(*ph.bounds_mm(0.0))
        axis = ph.axis_dir if ph.axis_dir is not None else ph.branches[0].points_mm[-1] - ph.branches[0].points_mm[0]
    mu = np.zeros(pshape, np.float32)
    for t in tqdm(times, desc="frames", unit="frame", leave=False, disable=not progress):
        vis = [v for v, tt in frame_list if tt == t]
        vals = pre.mu_peak_per_mm * occ_in * concentration(tau, t, pre.bolus)
        if motion is None:
            mu[idx] = vals
        else:
            mu = splat(vals, pts + motion.displacement(pts, t, centre, axis), plo, lumen_mm, pshape)
        proj = project_volume(mu, plo, (lumen_mm,) * 3, [views[v] for v in vis])
        for v, img in zip(vis, proj):
            images[(v, t)] = img
    steps.update()
    # 5. noise (one generator, frames in acquisition order: deterministic)
    steps.set_postfix_str("noise")
    frames = [Frame(add_noise(images[(v, t)], rng, **pre.noise).astype(np.float32), v, t) for v, t in frame_list]
    steps.update()
    steps.close()
    mode = pre.acquisition.mode
    meta = {"simulated": True, "preset": pre.name, "seed": seed, "description": pre.description}
    motion_truth = None
    if motion is not None:
        t_ecg, lead = motion.ecg(min(times) - 0.5, max(times) + 0.5, rng=rng)
        meta["ecg"] = {"t_s": [round(float(x), 6) for x in t_ecg], "signal": [round(float(x), 5) for x in lead],
                       "source": "simulated lead II"}
        cl = ph.centerline_table()
        motion_truth = {**motion.as_dict(), "r_waves_s": motion.r_waves(min(times) - 0.5, max(times) + 0.5).tolist(),
                        "reference": "end-diastole (the R waves): truth/lumen.npz, centerline.csv, flow.npz",
                        "frame_times_s": times,
                        "centerline_displacement_mm": np.stack([motion.displacement(cl[:, :3], t, centre, axis)
                                                                for t in times]),
                        "centre_mm": centre.tolist(), "axis": (np.asarray(axis) / np.linalg.norm(axis)).tolist()}
    study = Study(views, frames, mode, "line_integral", meta=meta)
    study.validate(f"simulate({pre.name})")
    summary = {
        "preset": pre.name, "seed": seed, "description": pre.description, "flow_model": flow.model,
        "q_mm3_s": pre.q_mm3_s, "q_ml_s": pre.q_mm3_s / 1000.0,
        "dp_pa": flow.dp_pa, "dp_mmhg": flow.dp_pa / PA_PER_MMHG,
        "stenosis": ph.stenosis, "phantom": {"name": ph.name, **{k: v for k, v in ph.meta.items()}},
        "bolus": pre.bolus, "mu_peak_per_mm": pre.mu_peak_per_mm, "noise": pre.noise,
        "diffusion_mm2_s": 0.0,
        "diffusion_note": "pure advection by characteristics; numerical smoothing ~1 flow voxel "
                          f"({flow_mm} mm) from trilinear velocity interpolation",
        "mixing_mm2_s": d_mix,
        "mixing_note": "fluid on closed streamlines (recirculation, stagnant wall layer) is filled by an effective "
                       "mixing diffusivity: tau = min over reached neighbours of tau + d^2/(2 D_mix)",
        "lumen_voxels_filled_by_mixing": n_fill, "lumen_voxels": int(len(pts)),
        "grids": {"lumen_mm": lumen_mm, "lumen_shape": list(lshape), "flow_mm": flow_mm, "flow_shape": list(fshape)},
        "flow_info": flow.info, "n_frames": len(frames), "n_views": len(views), "mode": mode,
        "motion": None if motion_truth is None else {k: v for k, v in motion_truth.items()
                                                      if k != "centerline_displacement_mm"},
    }
    arrays = None if motion_truth is None else {"frame_times_s": np.asarray(times),
                                                "centerline_displacement_mm": motion_truth["centerline_displacement_mm"]}
    return Simulation(pre, seed, study, flow, fo, flow_mm, occ, lo, lumen_mm, tau_flow, ph.centerline_table(), summary,
                      arrays)


def flow_grid_arrival(tau: np.ndarray, idx: tuple, lshape, lumen_mm: float, lumen_origin, vel: np.ndarray,
                      flow_mm: float, flow_origin) -> np.ndarray:
    """Arrival times on the flow grid [X, Y, Z] (s, inf where never reached or not fluid): the
    lumen-grid times the projector used, taken at the coincident nodes, so the stored truth c(x, t)
    is the contrast the frames show.

    (A second tracing on the coarser flow grid is not the same field: its mixing fill of
    recirculation zones differs, by 0.07 s in median arrival behind the 50 % stenosis preset.)
    The two grids share their origin and flow_mm is a whole multiple of lumen_mm (simulate's grids).
    """
    ratio = flow_mm / lumen_mm
    k = int(round(ratio))
    if abs(ratio - k) > 1e-6 or not np.allclose(flow_origin, lumen_origin, atol=1e-9):
        raise ValueError(f"flow grid ({flow_mm} mm) must be a whole multiple of the lumen grid ({lumen_mm} mm) "
                         "with the same origin")
    full = np.full(lshape, np.inf, np.float32)
    full[idx] = tau
    fshape = vel.shape[:3]
    out = np.full(fshape, np.inf, np.float32)
    sub = full[::k, ::k, ::k]
    n = [min(a, b) for a, b in zip(fshape, sub.shape)]
    out[:n[0], :n[1], :n[2]] = sub[:n[0], :n[1], :n[2]]
    out[np.linalg.norm(vel, axis=-1) == 0] = np.inf
    return out


def truth_concentration(tau_s: np.ndarray, bolus: dict, t_s: float) -> np.ndarray:
    """c(x, t) from the stored arrival times (truth/concentration.npz) and bolus."""
    return concentration(tau_s, t_s, bolus)


def write_simulation(sim: Simulation, folder: str | Path, overwrite: bool = False) -> Path:
    """Study folder + truth/ + preview.png, built in a temporary sibling and renamed into place."""
    with AtomicFolder(folder, overwrite) as tmp:
        write_study_files(sim.study, tmp)
        t = tmp / "truth"
        t.mkdir()
        np.savez_compressed(t / "lumen.npz", occupancy=(np.round(sim.occupancy * 255)).astype(np.uint8),
                            origin_mm=sim.lumen_origin, spacing_mm=sim.lumen_mm,
                            note="occupancy/255 = lumen fraction of each voxel; origin = centre of voxel (0,0,0)")
        np.savetxt(t / "centerline.csv", sim.centerline, delimiter=",", fmt="%.6f",
                   header="X,Y,Z,MaximumInscribedSphereRadius", comments="")
        np.savez_compressed(t / "flow.npz", velocity_mm_s=sim.flow.vel, pressure_pa=sim.flow.p,
                            origin_mm=sim.flow_origin, spacing_mm=sim.flow_mm)
        np.savez_compressed(t / "concentration.npz", arrival_time_s=sim.tau_flow, origin_mm=sim.flow_origin,
                            spacing_mm=sim.flow_mm, bolus=json.dumps(sim.summary["bolus"]),
                            note="c(x, t) = gamma_variate(t - arrival_time_s, **bolus); inf = never reached")
        (t / "truth.json").write_text(json.dumps(sim.summary, indent=1, default=float))
        if sim.motion_arrays is not None:  # the per-frame displaced lumen: x + d(x, t) (simulate.motion)
            np.savez_compressed(t / "motion.npz", **sim.motion_arrays,
                                note="truth/centerline.csv points displaced at each frame time; the lumen and the "
                                     "flow move with pinngs.simulate.motion.CardiacMotion(**truth.json motion)")
        _preview(sim, tmp / "preview.png")
    return Path(folder)


def _preview(sim: Simulation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = sim.study
    if st.mode == "rotational":
        picks = [st.frames[k] for k in np.linspace(0, len(st.frames) - 1, 4).astype(int)]
    else:
        # per view, the frame of peak opacification
        picks = [max((f for f in st.frames if f.view == v), key=lambda f: float(f.image.sum()))
                 for v in range(len(st.views))][:4]
    fig, ax = plt.subplots(1, len(picks) + 2, figsize=(3.2 * (len(picks) + 2), 3.4))
    vmax = max(float(np.percentile(f.image, 99.9)) for f in picks)
    for a, f in zip(ax, picks):
        v = st.views[f.view]
        a.imshow(f.image, cmap="gray_r", vmin=0, vmax=vmax)
        a.set_title(f"{v.primary_deg:+.0f}°/{v.secondary_deg:+.0f}°  t={f.t_s:.2f}s", fontsize=8)
        a.axis("off")
    ext = sim.occupancy.shape
    ax_mip = int(np.argmin(ext))
    ax[-2].imshow(sim.occupancy.max(axis=ax_mip).T, cmap="gray", origin="lower")
    ax[-2].set_title(f"truth lumen MIP (axis {'xyz'[ax_mip]})", fontsize=8)
    ax[-2].axis("off")
    thin = int(np.argmin(sim.flow.vel.shape[:3]))  # project along the thinnest axis
    speed = np.linalg.norm(sim.flow.vel, axis=-1).max(axis=thin)
    im = ax[-1].imshow(speed.T, cmap="inferno", origin="lower")
    ax[-1].set_title(f"max |u| (mm/s), {sim.flow.model}", fontsize=8)
    ax[-1].axis("off")
    fig.colorbar(im, ax=ax[-1], fraction=0.046)
    s = sim.summary
    fig.suptitle(f"{s['preset']}  seed {s['seed']}   Q = {s['q_ml_s']:.2f} ml/s   ΔP = {s['dp_mmhg']:.2f} mmHg",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
