"""Batch lumen reconstruction from a DSA study (issue 4).

    fit.py        Gaussians fitted to the frames with the rasterizer (init, densify/prune, lumen level)
    pipeline.py   reconstruct(study, out): fit -> lumen mask -> mesh -> centerline -> grading -> report
    surface.py    watertight marching-cubes mesh, atomic STL/OBJ writers
    centerline.py geodesic centerline with inscribed-sphere radii, stenosis grading, Murray's law
    evaluate.py   Dice, surface distances, radius/centerline errors, % stenosis error against truth
"""

__all__ = ["reconstruct"]


def __getattr__(name):  # the pipeline pulls in torch, trimesh and scikit-image: import on first use
    if name == "reconstruct":
        from .pipeline import reconstruct

        return reconstruct
    raise AttributeError(name)
