"""Per-case figures: velocity profiles at sections, pressure along the centerline, error maps.

Everything is sampled from callables ``f(pts [N, 3] mm) -> (vel [N, 3] mm/s, p [N] Pa)`` (NaN
pressure outside the lumen), so the same code serves the analytic, axisymmetric and tetrahedral
references and the PINN. Sections and the centerline come from the true phantom (branch 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

STYLES = {"reference": dict(color="k", lw=2.0), "pinngs 2-view": dict(color="tab:red", ls="--", lw=1.5),
          "pinngs 4-view": dict(color="tab:blue", ls=":", lw=1.8), "mesh level 2": dict(color="tab:green", ls="-.")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def centerline(ph, step_mm: float = 0.1):
    """Branch 0 of the phantom resampled: (arc [P], points [P, 3], unit tangents [P, 3], radii [P])."""
    b = ph.branches[0].resampled(step_mm)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(b.points_mm, axis=0), axis=1))])
    t = np.gradient(b.points_mm, s, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return s, b.points_mm, t, b.radii_mm


def _perp(t: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
    a = hint if hint is not None else (np.array([1.0, 0, 0]) if abs(t[0]) < 0.9 else np.array([0, 1.0, 0]))
    n = a - (a @ t) * t
    if np.linalg.norm(n) < 1e-6:
        a = np.array([0, 1.0, 0]) if abs(t[1]) < 0.9 else np.array([0, 0, 1.0])
        n = a - (a @ t) * t
    return n / np.linalg.norm(n)


def mid_plane(ph):
    """(centre [3], e1 [3], e2 [3]) of the plane through the centerlines (PCA; any perpendicular for a
    straight tube)."""
    pts = np.concatenate([b.points_mm for b in ph.branches])
    c = pts.mean(0)
    _, sv, vt = np.linalg.svd(pts - c, full_matrices=False)
    e1 = vt[0]
    b0 = ph.branches[0].points_mm
    if (b0[-1] - b0[0]) @ e1 < 0:  # inlet -> outlet reads left to right
        e1 = -e1
    e2 = vt[1] if sv[1] > 1e-3 * sv[0] else _perp(e1)
    return c, e1, e2 - (e2 @ e1) * e1


def section_arcs(case, length_mm: float) -> list[float]:
    if case.key == "fda_nozzle":
        from benchmarks.cfd.cases import fda_profile

        z_exp = fda_profile()[2]
        return [z_exp + d for d in (-88.0, -20.0, 0.0, 16.0, 32.0, 80.0)]
    return [f * length_mm for f in (0.15, 0.35, 0.5, 0.6, 0.75, 0.9)]


def profile_figure(case, ph, fields: dict, path: Path, arc_label: str = "arc from inlet") -> None:
    """Axial velocity u·t along a diameter (in the mid-plane) at six sections."""
    plt = _plt()
    s, P, T, R = centerline(ph)
    _, _, e2 = mid_plane(ph)
    arcs = section_arcs(case, s[-1])
    fig, axes = plt.subplots(1, len(arcs), figsize=(2.6 * len(arcs), 3.2), sharey=True)
    for ax, sa in zip(axes, arcs):
        k = int(np.argmin(np.abs(s - sa)))
        n = _perp(T[k], e2)
        xi = np.linspace(-1.15 * R.max(), 1.15 * R.max(), 241)
        pts = P[k] + xi[:, None] * n
        for name, f in fields.items():
            u, p = f(pts)
            ua = u @ T[k]
            ua[~np.isfinite(p)] = np.nan
            ax.plot(ua, xi, label=name, **STYLES.get(name, {}))
        ax.set_title(f"{arc_label} {sa - (fda_offset(case)):.0f} mm", fontsize=9)
        ax.set_xlabel("u axial (mm/s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("position across the lumen (mm)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{case.title}: velocity profiles", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fda_offset(case) -> float:
    if case.key == "fda_nozzle":
        from benchmarks.cfd.cases import fda_profile

        return fda_profile()[2]
    return 0.0


def pressure_figure(case, ph, fields: dict, path: Path, dp_labels: dict | None = None) -> None:
    """Pressure on the centerline of branch 0; other fields shifted to the reference's mean over the
    points where both are defined (pressure is known up to a constant)."""
    plt = _plt()
    s, P, _, _ = centerline(ph, 0.2 if s_len(ph) < 100 else 0.5)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    p_ref = None
    for name, f in fields.items():
        _, p = f(P)
        if p_ref is None:
            p_ref = p
        else:
            ok = np.isfinite(p) & np.isfinite(p_ref)
            if ok.any():
                p = p - p[ok].mean() + p_ref[ok].mean()
        lab = name + (f" (ΔP {dp_labels[name]})" if dp_labels and name in dp_labels else "")
        ax.plot(s - fda_offset(case), p, label=lab, **STYLES.get(name, {}))
    ax.set_xlabel("arc from inlet (mm)" if case.key != "fda_nozzle" else "z from the sudden expansion (mm)")
    ax.set_ylabel("pressure on the centerline (Pa)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{case.key}: centerline pressure", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def s_len(ph) -> float:
    return ph.branches[0].length_mm


def plane_grid(ph, n_a: int = 700, crop=None, offset_mm: float = 0.0):
    """World points of a grid on the mid-plane: (pts [M, 3], shape, extent (a0, a1, b0, b1)); the
    in-plane axial coordinate a is measured from the inlet minus ``offset_mm``, and ``crop`` = (a0, a1)
    is in that coordinate."""
    c, e1, e2 = mid_plane(ph)
    shift = float((c - ph.branches[0].points_mm[0]) @ e1) - offset_mm  # a = (x - c)·e1 + shift
    pts = np.concatenate([b.points_mm for b in ph.branches])
    rmax = max(float(b.radii_mm.max()) for b in ph.branches)
    a = (pts - c) @ e1 + shift
    bb = (pts - c) @ e2
    a0, a1 = a.min() - rmax, a.max() + rmax
    if crop is not None:
        a0, a1 = max(a0, crop[0]), min(a1, crop[1])
    b0, b1 = bb.min() - 1.1 * rmax, bb.max() + 1.1 * rmax
    h = (a1 - a0) / n_a
    A = np.arange(a0, a1, h)
    B = np.arange(b0, b1, h)
    AA, BB = np.meshgrid(A, B, indexing="ij")
    return c + (AA.reshape(-1, 1) - shift) * e1 + BB.reshape(-1, 1) * e2, AA.shape, (a0, a1, b0, b1)


def error_map_figure(case, ph, reference, others: dict, path: Path, crop=None) -> None:
    """|u_ref| on the mid-plane, then |u - u_ref| / max|u_ref| for each other field."""
    plt = _plt()
    pts, shape, ext = plane_grid(ph, crop=crop, offset_mm=fda_offset(case))
    u_ref, p_ref = reference(pts)
    inside = np.isfinite(p_ref)
    mag = np.where(inside, np.linalg.norm(u_ref, axis=1), np.nan).reshape(shape)
    umax = np.nanmax(mag)
    n = 1 + len(others)
    aspect = (ext[1] - ext[0]) / (ext[3] - ext[2])
    fig, axes = plt.subplots(n, 1, figsize=(9, min(1.2 + 9 * n / aspect, 12)), squeeze=False)
    im = axes[0, 0].imshow(mag.T, origin="lower", extent=ext, cmap="viridis", aspect="auto")
    axes[0, 0].set_title("reference |u| (mm/s)", fontsize=9)
    fig.colorbar(im, ax=axes[0, 0])
    for ax, (name, f) in zip(axes[1:, 0], others.items()):
        u, _ = f(pts)
        err = np.where(inside, np.linalg.norm(u - u_ref, axis=1) / umax, np.nan).reshape(shape)
        im = ax.imshow(err.T, origin="lower", extent=ext, cmap="magma", aspect="auto", vmin=0,
                       vmax=max(0.05, float(np.nanpercentile(err, 99))))
        ax.set_title(f"{name}: |u - u_ref| / max|u_ref|", fontsize=9)
        fig.colorbar(im, ax=ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("mm")
    axes[-1, 0].set_xlabel("z from the sudden expansion (mm)" if case.key == "fda_nozzle"
                           else "mm along the mid-plane, from the inlet")
    fig.suptitle(f"{case.title}: error maps (mid-plane)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def womersley_figures(ref, out: Path, key: str) -> list[str]:
    """Profiles over one period (analytic vs FD), Q(t) (analytic, FD, quasi-steady Poiseuille) and
    the FD error map in (r, t)."""
    from benchmarks.cfd.cases import womersley_exact, womersley_fd, womersley_q_exact

    plt = _plt()
    s = ref.extra
    n = ref.convergence[-1]["n_radial"]
    rc, t, us, q = womersley_fd(s, n)
    T = s["period_s"]
    files = []
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, ph in enumerate(np.linspace(0, 1, 8, endpoint=False)):
        i = int(round(ph * (len(t) - 1)))
        col = plt.cm.viridis(k / 8)
        ax.plot(rc, womersley_exact(rc, t[i], s), color=col, lw=2, label=f"t/T={ph:.2f}")
        ax.plot(rc, us[i], "k:", lw=1)
    ax.set_xlabel("r (mm)")
    ax.set_ylabel("u (mm/s)")
    ax.set_title(f"α = {s['alpha']:.1f}: analytic (colour) vs FD {n} cells (dotted)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    qe = womersley_q_exact(t, s)
    g = s["g0_pa_mm"] + s["g1_pa_mm"] * np.cos(s["omega_rad_s"] * t)
    q_qs = np.pi * s["radius_mm"] ** 4 * g / (8 * s["mu"])
    ax2.plot(t / T, qe, "k", lw=2, label="Womersley (analytic)")
    ax2.plot(t / T, q, "r--", label=f"FD {n} cells")
    ax2.plot(t / T, q_qs, "b:", label="quasi-steady Poiseuille")
    ax2.set_xlabel("t / T")
    ax2.set_ylabel("Q (mm³/s)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{key}_profiles.png", dpi=110)
    plt.close(fig)
    files.append(f"{key}_profiles.png")
    ue = womersley_exact(rc[None, :], t[:, None], s)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    im = ax.imshow((us - ue).T / np.abs(ue).max(), origin="lower", aspect="auto", cmap="RdBu_r",
                   extent=(0, 1, 0, s["radius_mm"]))
    fig.colorbar(im, ax=ax, label="(u_FD - u_exact) / max|u|")
    ax.set_xlabel("t / T")
    ax.set_ylabel("r (mm)")
    ax.set_title("Womersley: FD error map", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"{key}_error_map.png", dpi=110)
    plt.close(fig)
    files.append(f"{key}_error_map.png")
    return files


def convergence_figure(case, ref, path: Path) -> None:
    plt = _plt()
    conv = [c for c in ref.convergence if c.get("n_dofs")]
    if len(conv) < 2:
        return
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.semilogx([c["n_dofs"] for c in conv], [c["dp_pa"] for c in conv], "o-")
    ax.set_xlabel("DOFs")
    ax.set_ylabel("ΔP inlet-outlet (Pa)")
    ax.set_title(f"{case.key}: mesh convergence ({ref.change_percent:.2f} % last step)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def case_figures(case, ref, evaluators: dict, out: Path) -> list[str]:
    """All figures of one case (``evaluators``: name -> callable, besides the reference)."""
    out.mkdir(parents=True, exist_ok=True)
    if case.reference == "womersley":
        return womersley_figures(ref, out, case.key)
    ph = case.phantom()
    fields = {"reference": ref.sample, **evaluators}
    others = dict(evaluators)
    if not others and ref.extra.get("prev_sample") is not None:
        others = {"mesh level 2": ref.extra["prev_sample"]}
    files = []
    profile_figure(case, ph, {**fields, **({} if evaluators else others)}, out / f"{case.key}_profiles.png",
                   "z" if case.key == "fda_nozzle" else "arc")
    files.append(f"{case.key}_profiles.png")
    pressure_figure(case, ph, fields, out / f"{case.key}_pressure.png")
    files.append(f"{case.key}_pressure.png")
    crop = (-95.0, 120.0) if case.key == "fda_nozzle" else None
    error_map_figure(case, ph, ref.sample, others, out / f"{case.key}_error_map.png", crop=crop)
    files.append(f"{case.key}_error_map.png")
    if len(ref.convergence) >= 2:
        convergence_figure(case, ref, out / f"{case.key}_convergence.png")
        files.append(f"{case.key}_convergence.png")
    return files
