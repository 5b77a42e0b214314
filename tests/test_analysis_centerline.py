"""Lumen post-processing on phantoms whose answer is known: surface mesh, centerline and radii,
stenosis grading, Murray's law at a bifurcation, and the VMTK-style CSV round trip.

The volumes are the simulator's partial-volume occupancies (pinngs.simulate.phantoms), not a
reconstruction, so every error here is the post-processing's own.
"""
from __future__ import annotations

import numpy as np
import pytest

from pinngs.analysis.centerline import branch_topology, extract_centerline
from pinngs.analysis.stenosis import grade_stenosis, murray_deviation
from pinngs.io.exports import read_centerline_csv, write_centerline_csv
from pinngs.analysis.surface import mask_to_mesh
from pinngs.io.exports import write_obj, write_stl
from pinngs.simulate.phantoms import bifurcation, cosine_stenosis_radius, straight_vessel

H = 0.15  # grid spacing (mm)


def _volume(ph, h=H):
    origin, shape = ph.grid(h, margin_mm=1.0)
    return ph.occupancy(origin, h, shape), origin


@pytest.fixture(scope="module")
def tube():
    # a straight tube cut by the grid on both ends (the grid margin is only radial: the ends are clipped)
    ph = straight_vessel("tube", radius_mm=1.5, length_mm=16.0, direction=(0.3, 0.2, 1.0))
    occ, origin = _volume(ph)
    return ph, occ, origin


def test_mesh_is_watertight_and_has_the_lumen_volume(tube, tmp_path):
    ph, occ, origin = tube
    mesh = mask_to_mesh(occ, origin, H)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    # the 0.5-level surface encloses the partial-volume integral (within a small fraction)
    voxel_volume = float(occ.sum()) * H ** 3
    assert mesh.volume == pytest.approx(voxel_volume, rel=0.02)
    # the mesh sits on the analytic wall: distance of vertices from the axis is the radius
    a, d = ph.axis_origin_mm, ph.axis_dir
    v = mesh.vertices - a
    r = np.linalg.norm(v - np.outer(v @ d, d), axis=1)
    side = np.abs(r - 1.5) < 0.5 * 1.5  # vertices on the side wall (not on the flat end caps)
    assert np.median(np.abs(r[side] - 1.5)) < 0.25 * H
    for writer, suffix in ((write_stl, ".stl"), (write_obj, ".obj")):
        p = writer(mesh, tmp_path / f"lumen{suffix}")
        assert p.exists() and p.stat().st_size > 0
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_mesh_rejects_an_empty_volume():
    with pytest.raises(ValueError, match="empty"):
        mask_to_mesh(np.zeros((8, 8, 8), np.float32), np.zeros(3), H)


def test_tube_centerline_radius_and_no_lesion(tube, tmp_path):
    ph, occ, origin = tube
    branches = extract_centerline(occ, origin, H)
    assert len(branches) == 1
    b = branches[0]
    # on the axis and of the right radius
    a, d = ph.axis_origin_mm, ph.axis_dir
    v = b[:, :3] - a
    off_axis = np.linalg.norm(v - np.outer(v @ d, d), axis=1)
    assert np.sqrt(np.mean(off_axis ** 2)) < 0.5 * H
    assert np.mean(np.abs(b[:, 3] - 1.5)) < 0.5 * H
    # covers the tube except about one radius at each clipped end
    span = (v @ d).max() - (v @ d).min()
    assert span > 16.0 - 2 * 1.5 - 2.0
    assert grade_stenosis(branches) == []
    assert murray_deviation(branches) == []
    # CSV round trip (VMTK column names)
    p = write_centerline_csv(tmp_path / "centerline.csv", branches)
    head = p.read_text().splitlines()[0]
    assert head.startswith("X,Y,Z,MaximumInscribedSphereRadius")
    back = read_centerline_csv(p)
    assert len(back) == 1 and np.allclose(back[0], b, atol=1e-5)


@pytest.mark.parametrize("severity", [0.5, 0.7])
def test_stenosis_is_graded_where_it_is(severity):
    L = 6.0
    ph = straight_vessel("sten", radius_mm=1.5, length_mm=24.0, direction=(0.3, 0.2, 1.0),
                         severity=severity, stenosis_length_mm=L)
    occ, origin = _volume(ph)
    branches = extract_centerline(occ, origin, H, inlet_hint_mm=ph.inlet[0])
    assert len(branches) == 1
    lesions = grade_stenosis(branches)
    assert len(lesions) == 1, lesions
    les = lesions[0]
    assert abs(les["percent_diameter_stenosis"] - 100 * severity) <= 3.0
    assert les["d_ref_mm"] == pytest.approx(3.0, abs=0.1)
    # location: the throat is at the middle of the tube (the branch starts about 1-2 mm in)
    throat = ph.axis_origin_mm + 12.0 * ph.axis_dir
    assert np.linalg.norm(np.asarray(les["xyz_mm"]) - throat) < 0.2
    # the half-depth length of the inscribed radius, which is what the centerline carries: the lumen is
    # made of sections of radius r(z), so on the axis at z the largest sphere has radius
    # min_s sqrt((z - s)² + r(s)²) <= r(z), and the dip it sees is wider than r's own L/2
    z = np.linspace(-12.0, 12.0, 4801)
    r = cosine_stenosis_radius(z, 1.5, severity, L)
    r_ins = np.sqrt((z[:, None] - z[None]) ** 2 + r[None] ** 2).min(axis=1)
    half_depth = (r_ins < (1.5 + r_ins.min()) / 2).sum() * (z[1] - z[0])  # 3.43 mm at 50 %, 3.50 at 70 %
    assert half_depth > L / 2 + 0.3  # the sections' own L/2 would not pass the check below
    assert les["length_half_depth_mm"] == pytest.approx(half_depth, abs=0.15)
    assert 0 < les["length_mm"] < L


def _two_dip_branch(bump: float) -> list[np.ndarray]:
    """A straight branch (d_ref 3 mm): a 55 % cosine stenosis 6 mm long and, behind it, a second
    milder dip, with the diameter between the two rising back to ``bump`` x d_ref (the shape an
    online fit of eccentric60-4view showed, bump 0.85-0.92)."""
    s = np.arange(0.0, 40.0, 0.1)

    def g(x, L):
        return np.where(np.abs(x) < L / 2, (1 + np.cos(2 * np.pi * x / L)) / 2, 0.0)

    lo, hi = 0.0, 0.5
    for _ in range(60):  # bisection on the second dip's depth: the maximum between the dips is `bump`
        B = (lo + hi) / 2
        r = 1 - 0.55 * g(s - 16, 6) - B * g(s - 20, 4.4)
        lo, hi = (B, hi) if r[(s > 16) & (s < 20)].max() > bump else (lo, B)
    return [np.column_stack([np.zeros_like(s), np.zeros_like(s), s, 1.5 * r])]


def test_lesion_length_is_continuous_where_a_shoulder_crosses_the_threshold():
    below, above = grade_stenosis(_two_dip_branch(0.895)), grade_stenosis(_two_dip_branch(0.905))
    assert len(below) == len(above) == 1
    # at the 0.9 threshold alone the length jumps by the second dip (7.5 -> 4.5 mm)...
    assert below[0]["length_at_threshold_mm"] - above[0]["length_at_threshold_mm"] > 2.0
    one = [grade_stenosis(_two_dip_branch(b), extent_band=0)[0]["length_mm"] for b in (0.895, 0.905)]
    assert one[0] - one[1] > 2.0
    # ...averaged over the thresholds 0.85-0.95 it moves by the bump's 1 %
    assert abs(below[0]["length_mm"] - above[0]["length_mm"]) < 0.4
    assert below[0]["percent_diameter_stenosis"] == pytest.approx(55.0, abs=0.5)
    # one clean cosine dip: the band length is the length at 0.9 (0.732 L for 55 %: arccos(-7/11) L / pi)
    s = np.arange(0.0, 40.0, 0.1)
    r = 1 - 0.55 * np.where(np.abs(s - 16) < 3, (1 + np.cos(2 * np.pi * (s - 16) / 6)) / 2, 0.0)
    (les,) = grade_stenosis([np.column_stack([0 * s, 0 * s, s, 1.5 * r])])
    assert les["length_mm"] == pytest.approx(les["length_at_threshold_mm"], abs=0.1)
    assert les["length_at_threshold_mm"] == pytest.approx(np.arccos(-7 / 11) / np.pi * 6, abs=0.05)


def test_an_end_cap_is_not_graded_a_lesion():
    """Within one radius of a branch end the inscribed sphere touches the end cap: a 40 mm tube of
    R 1.3 mm that ends in a 1.3 mm cone down to R 0.41 (curved-biplane's batch lumen, round-vessel
    prior, seed 0) has no lesion; the same cone at the inlet neither; a 50 % stenosis 4 mm from the outlet
    is still graded."""
    body = _segment([0, 0, 0], [0, 0, 40], 1.3, 1.3, n=401)
    cone = _segment([0, 0, 40.1], [0, 0, 41.4], 1.25, 0.41, n=14)
    assert grade_stenosis([np.vstack([body, cone])]) == []
    assert grade_stenosis([np.vstack([cone[::-1] - [0, 0, 41.5, 0], body])]) == []
    old = grade_stenosis([np.vstack([body, cone])], end_margin_radii=0.5)  # what the old margin did
    assert old and old[0]["percent_diameter_stenosis"] > 30
    sten = body.copy()
    s = sten[:, 2]
    sten[:, 3] *= 1 - 0.5 * np.where(np.abs(s - 36) < 2, (1 + np.cos(np.pi * (s - 36) / 2)) / 2, 0.0)
    (les,) = grade_stenosis([np.vstack([sten, cone])])
    assert les["percent_diameter_stenosis"] == pytest.approx(50.0, abs=1.0)


@pytest.mark.parametrize("band", [-0.01, 0.9, 0.2])
def test_grade_stenosis_rejects_a_bad_band(band):
    with pytest.raises(ValueError, match="extent_band"):
        grade_stenosis(_two_dip_branch(0.9), extent_band=band)


def test_bifurcation_topology_and_murray():
    ph = bifurcation(r0_mm=1.6, ratio=0.8, angle_deg=60.0, trunk_mm=12.0, branch_mm=12.0)
    occ, origin = _volume(ph)
    branches = extract_centerline(occ, origin, H, inlet_hint_mm=ph.inlet[0])
    assert len(branches) == 3
    parents, _ = branch_topology(branches)
    assert parents == [-1, 0, 0]
    assert grade_stenosis(branches) == []
    (j,) = murray_deviation(branches)
    r1, r2 = ph.meta["r1_mm"], ph.meta["r2_mm"]
    assert j["r_parent_mm"] == pytest.approx(1.6, abs=0.1)
    assert sorted(j["r_daughters_mm"]) == pytest.approx(sorted([r1, r2]), abs=0.05)
    # Murray's law holds in the phantom: deviation ~ 0, exponent ~ 3
    assert abs(j["deviation"]) < 0.05
    assert j["exponent_k"] == pytest.approx(3.0, abs=0.3)
    # the junction is where the phantom's daughters start (the origin)
    assert np.linalg.norm(j["junction_xyz_mm"]) < 1.6
def _segment(a, b, r0, r1, n=30):
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.column_stack([np.asarray(a, float) + t * (np.asarray(b, float) - a), r0 + t[:, 0] * (r1 - r0)])


def test_ghost_stubs_are_dropped_and_the_vessel_joined_to_its_outlet():
    """The frayed end of a 2-view reconstruction (curved-biplane's batch lumen, 8 branches): the
    vessel breaks into short pieces at sideways ghost stubs that taper to a quarter of a mm. Branch
    0 must run on to the real outlet, with the stubs gone; a true bifurcation stays."""
    from pinngs.polyline import arc_length as _arc
    from pinngs.analysis.centerline import prune_stubs

    main = _segment([0, 0, 0], [0, 0, 30], 1.2, 1.2)
    p1 = _segment([0, 0, 30], [0, 0, 32.5], 1.1, 1.1)
    ghost1 = _segment([0, 0, 32.5], [0, 2.5, 32.5], 1.0, 0.25)  # 2.5 mm sideways, tapering
    p2 = _segment([0, 0, 32.5], [0, 0, 35], 1.1, 1.1)
    ghost2 = _segment([0, 0, 35], [0, -2.6, 35], 1.0, 0.3)
    p3 = _segment([0, 0, 35], [0, 0, 37.5], 1.1, 1.1)
    ghost3 = _segment([0, 0, 37.5], [0, 2.4, 37.5], 1.0, 0.25)
    out = prune_stubs([main, p1, ghost1, p2, ghost2, p3, ghost3])
    assert len(out) == 1
    assert _arc(out[0][:, :3])[-1] == pytest.approx(37.5, abs=0.01)
    assert np.allclose(out[0][-1, :3], [0, 0, 37.5])
    # a needle: a 3.5 mm ghost tapering to 0.07 mm is longer than 3 parent radii (3.3 mm) but goes;
    # the 4.3 mm real continuation stays and is joined on
    needle = _segment([0, 0, 30], [0, 3.5, 30], 1.05, 0.07)
    cont = _segment([0, 0, 30], [0, 0, 34.3], 1.1, 1.1)
    main11 = _segment([0, 0, 0], [0, 0, 30], 1.1, 1.1)
    out = prune_stubs([main11, needle, cont])
    assert len(out) == 1 and np.allclose(out[0][-1, :3], [0, 0, 34.3])
    # a true bifurcation (two long daughters) is kept as it is
    d1, d2 = _segment([0, 0, 30], [8, 0, 45], 1.0, 1.0), _segment([0, 0, 30], [-8, 0, 45], 0.9, 0.9)
    kept = prune_stubs([main, d1, d2])
    assert len(kept) == 3
    # a ghost on a daughter goes, and the daughter's two pieces are joined
    d1a, d1b = _segment([0, 0, 30], [4, 0, 37.5], 1.0, 1.0), _segment([4, 0, 37.5], [8, 0, 45], 1.0, 1.0)
    g = _segment([4, 0, 37.5], [4, 2.5, 37.5], 0.9, 0.25)
    tree = prune_stubs([main, d1a, d1b, g, d2])
    assert len(tree) == 3 and max(_arc(b[:, :3])[-1] for b in tree[1:]) == pytest.approx(_arc(d1[:, :3])[-1], abs=0.01)
    # a stub at the root: branch 0 is 1.1 mm long and the vessel starts where it starts (the tube of
    # the reconstruct tests, traced from a junction one voxel inside its inlet); the vessel is branch 0
    spur = _segment([0, 0, 0], [0, 1.1, 0], 1.0, 0.5)
    out = prune_stubs([spur, main])
    assert len(out) == 1 and np.allclose(out[0][-1, :3], [0, 0, 30])
    with pytest.raises(ValueError, match="stub_radii"):
        prune_stubs([main, d1, d2], radii=0.0)



def test_extract_centerline_drops_a_ghost_stub_on_a_volume(tube):
    """A thin 3 mm spike off the tube wall (a ghost of a frayed 2-view fit) is traced as a branch
    (its end lies many of its own radii from the tree), but it is a stub: the default
    ``extract_centerline`` returns the tube as one branch, ``stub_radii=None`` keeps the spike."""
    ph, occ, origin = tube
    occ = occ.copy()
    a, d = ph.axis_origin_mm, ph.axis_dir
    side = np.cross(d, [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in occ.shape], indexing="ij"), -1).reshape(-1, 3)
    x = origin + H * idx
    base = a + 8.0 * d  # the middle of the tube
    t = np.clip((x - base) @ side, 0.0, 4.5)  # from the axis out to 3 mm beyond the 1.5 mm wall
    dist = np.linalg.norm(x - base - t[:, None] * side, axis=1)
    spike = (dist < 0.45 - 0.05 * t).reshape(occ.shape)
    occ[spike] = 1.0
    raw = extract_centerline(occ, origin, H, stub_radii=None)
    assert len(raw) >= 2  # the spike is traced
    clean = extract_centerline(occ, origin, H)
    assert len(clean) == 1
    v = clean[0][:, :3] - a
    assert (v @ d).max() - (v @ d).min() > 16.0 - 2 * 1.5 - 2.0  # the whole tube, one branch


def _voxel_graph_by_coo(mask, spacing):
    """The obviously right twin of ``_VoxelGraph``: the whole-box distance transform and the matrices
    from (row, col) pairs over the 13 forward offsets and their mirror (what it was before)."""
    from scipy import ndimage as ndi
    from scipy.sparse import csr_matrix

    edt = ndi.distance_transform_edt(mask, sampling=spacing)[mask]
    padded = np.pad(mask, 1)
    flat = np.flatnonzero(padded)
    node = np.full(padded.size, -1, np.int64)
    node[flat] = np.arange(flat.size)
    sy, sz = padded.shape[1] * padded.shape[2], padded.shape[2]
    r, c, ln = [], [], []
    for off in [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) > (0, 0, 0)]:
        nb = node[flat + off[0] * sy + off[1] * sz + off[2]]
        ok = nb >= 0
        r.append(np.nonzero(ok)[0]), c.append(nb[ok]), ln.append(np.full(int(ok.sum()), spacing * np.linalg.norm(off)))
    r, c, ln = (np.concatenate(a) for a in (r, c, ln))
    inv = 1.0 / np.maximum(edt, 0.5 * spacing) ** 2
    cost = ln * 0.5 * (inv[r] + inv[c])
    rr, cc, n = np.concatenate([r, c]), np.concatenate([c, r]), flat.size
    return edt, csr_matrix((np.concatenate([ln, ln]), (rr, cc)), shape=(n, n)), \
        csr_matrix((np.concatenate([cost, cost]), (rr, cc)), shape=(n, n))


def test_voxel_graph_matches_the_coo_construction():
    from pinngs.analysis.centerline import _VoxelGraph

    # long enough along its axis (300 voxels) for the distance transform to go in slabs
    for ph in (straight_vessel("t", radius_mm=0.6, length_mm=30.0, direction=(0.3, 0.2, 1.0)),
               bifurcation("b", r0_mm=0.8, trunk_mm=12.0, branch_mm=12.0)):
        occ, _ = _volume(ph, 0.1)
        mask = occ >= 0.5
        g = _VoxelGraph(mask, 0.1)
        edt, length, cost = _voxel_graph_by_coo(mask, 0.1)
        np.testing.assert_allclose(g.edt, edt, rtol=1e-13, atol=0)
        for new, old in ((g.length, length), (g.cost, cost)):
            assert new.shape == old.shape
            np.testing.assert_array_equal(new.indptr, old.indptr)
            np.testing.assert_array_equal(new.indices, old.indices)
            np.testing.assert_allclose(new.data, old.data, rtol=1e-13, atol=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_edt_in_slabs_matches_the_whole_transform(axis):
    """Slabs, an empty slab between two pieces, a crop at the array's edge, and a ball too thick for
    the slab's reach (the fall-back), each along every axis."""
    from scipy import ndimage as ndi

    from pinngs.analysis.centerline import _edt_on_mask

    n = 120
    x, y, z = np.meshgrid(np.arange(n), np.arange(30), np.arange(26), indexing="ij")
    rod = ((y - 10 - 0.1 * x) ** 2 + (z - 12) ** 2 <= 16) & ((x < 50) | (x > 70))  # gap: empty slabs
    rod |= (x > 100) & (y >= 27) & (z < 10)  # a piece flush with the array's edges
    ball = (x - 60) ** 2 + (y - 15) ** 2 + (z - 13) ** 2 <= 144  # radius 12 voxels > reach - 1
    for mask, fallback in ((rod, False), (rod | ball, True)):
        m = np.moveaxis(mask, 0, axis).copy()
        want = ndi.distance_transform_edt(m, sampling=0.2)[m]
        got = _edt_on_mask(m, 0.2, slab=8, reach=6)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
        assert (want.max() >= 5 * 0.2) == fallback  # the ball does reach past the slabs' margin


def test_ghost_tails_past_the_free_ends_are_trimmed_and_a_stenosis_is_not():
    """A sparse-view fit can run on past a vessel's end as a thin tail (aneurisk-4view online: 4 mm of
    R 0.16-0.36 mm past a 40 mm vessel of R ~1.8 mm), which grading read as a 93 % "lesion". The tail
    goes at the outlet and at the inlet; a severe mid-vessel stenosis, a mild end taper and a
    junction stay."""
    from pinngs.polyline import arc_length as _arc
    from pinngs.analysis.centerline import trim_ghost_ends

    body = _segment([0, 0, 0], [0, 0, 40], 1.8, 1.8, n=81)
    tail = _segment([0, 0, 40.25], [0, 0, 44], 0.6, 0.2, n=16)
    lead = _segment([0, 0, -3], [0, 0, -0.5], 0.3, 0.5, n=6)
    (out,) = trim_ghost_ends([np.vstack([lead, body, tail])])
    assert np.allclose(out, body)
    assert not [x for x in grade_stenosis([out]) if x["percent_diameter_stenosis"] >= 30]
    graded = grade_stenosis([np.vstack([body, tail])])  # what the tail did untrimmed
    assert max(x["percent_diameter_stenosis"] for x in graded) > 70  # 77 % (the tail's last R not graded)
    # a 70 % stenosis mid-vessel (R 0.54 of 1.8, below half) stays, and so does a taper to 0.6 x R at the end
    sten = body.copy()
    sten[35:46, 3] = 0.54
    taper = _segment([0, 0, 40.5], [0, 0, 42], 1.5, 1.1, n=4)
    (kept,) = trim_ghost_ends([np.vstack([sten, taper])])
    assert np.array_equal(kept, np.vstack([sten, taper]))
    # a parent's end at a junction is never cut, the daughters' free ends are
    main = _segment([0, 0, 0], [0, 0, 30], 1.2, 0.5, n=31)  # narrowing into the junction: kept
    d1 = np.vstack([_segment([0, 0, 30], [8, 0, 45], 1.0, 1.0), _segment([8.2, 0, 45.4], [9, 0, 47], 0.3, 0.2, n=5)])
    d2 = _segment([0, 0, 30], [-8, 0, 45], 0.9, 0.9)
    t = trim_ghost_ends([main, d1, d2])
    assert np.array_equal(t[0], main) and np.array_equal(t[2], d2) and len(t[1]) == 30
    assert _arc(t[1][:, :3])[-1] == pytest.approx(_arc(d1[:30, :3])[-1])
    # at most (P - 2) // 2 points per end: a branch that is thin all along is not emptied
    thin = _segment([0, 0, 0], [0, 0, 10], 0.2, 0.2, n=10)
    thin[:, 3] = np.r_[[0.1] * 5, [1.0] * 5]  # 5 thin points at the inlet; the cap is 4
    assert np.array_equal(trim_ghost_ends([thin])[0], thin[4:])
    with pytest.raises(ValueError, match="frac"):
        trim_ghost_ends([body], frac=1.5)
