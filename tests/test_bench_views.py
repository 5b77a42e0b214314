"""The view-geometry sweep's cases are the geometries their names say (benchmarks/bench_views.py)."""
import pytest

from benchmarks.bench_views import CASES, GEOMETRIES, _phantom
from pinngs.geometry import CArmView, view_separation_deg


@pytest.mark.parametrize("name", [g for g in GEOMETRIES if g.startswith("biplane-")])
def test_biplane_separation_is_the_named_angle(name):
    _, angles = GEOMETRIES[name]
    sep = view_separation_deg([CArmView(p, s) for p, s in angles])
    assert sep == pytest.approx(float(name.split("-")[1]), abs=1e-6)


def test_oblique_pair_is_narrow_and_tilted():
    _, angles = GEOMETRIES["oblique-35"]
    assert 30.0 <= view_separation_deg([CArmView(p, s) for p, s in angles]) <= 40.0
    assert all(25.0 <= s <= 30.0 for _, s in angles)  # both cranial, as in coronary working views


def test_cases_name_known_phantoms_and_geometries():
    for c in CASES:
        ph, g = c.split("/")
        assert g in GEOMETRIES
        if not ph.startswith("aneurisk"):
            assert _phantom(ph).name == ph
    with pytest.raises(ValueError, match="unknown phantom"):
        _phantom("nope")
