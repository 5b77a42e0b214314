"""Builds pinngs._C from csrc/.

The C++ CPU kernels (OpenMP) are always built. The CUDA kernels are added when the installed torch
has CUDA and ``PINNGS_NO_CUDA`` is not set to 1. ``PINNGS_NO_NATIVE=1`` drops ``-march=native``
(use it when building a binary for another machine).

Install against the torch you already have:  pip install --no-build-isolation -e .
"""
import glob
import os

from setuptools import find_packages, setup


def build_flags(with_cuda: bool) -> dict:
    """Compiler flags for the extension, in one place."""
    # -ffast-math lets gcc call the vector expf of libmvec; inputs are finite by construction
    cxx = ["-O3", "-std=c++17", "-fopenmp", "-ffast-math"]
    if os.environ.get("PINNGS_NO_NATIVE", "0") != "1":
        cxx.append("-march=native")
    flags = {"cxx": cxx + (["-DPINNGS_WITH_CUDA"] if with_cuda else [])}
    if with_cuda:
        flags["nvcc"] = ["-O3", "-std=c++17", "--use_fast_math", "-DPINNGS_WITH_CUDA"]
    return flags


def ext_modules():
    try:
        import torch
        from torch.utils.cpp_extension import CppExtension, CUDAExtension
    except ImportError:  # metadata-only invocations (e.g. `setup.py --version`)
        return [], {}
    from torch.utils.cpp_extension import BuildExtension

    with_cuda = torch.version.cuda is not None and os.environ.get("PINNGS_NO_CUDA", "0") != "1"
    sources = sorted(glob.glob("csrc/*.cpp")) + (sorted(glob.glob("csrc/*.cu")) if with_cuda else [])
    Ext = CUDAExtension if with_cuda else CppExtension
    ext = Ext(
        name="pinngs._C",
        sources=sources,
        include_dirs=[os.path.abspath("csrc")],
        extra_compile_args=build_flags(with_cuda),
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


modules, cmdclass = ext_modules()
setup(
    name="pinngs",
    version="0.1.0",
    description="Vessel and blood-flow reconstruction from X-ray angiography with Gaussians and a PINN",
    packages=find_packages(include=["pinngs", "pinngs.*"]),
    package_data={"pinngs.simulate": ["data/aneurisk/*"]},
    python_requires=">=3.10",
    install_requires=["numpy", "imageio", "tqdm", "tifffile", "pydicom", "scipy", "scikit-fem", "warp-lang",
                      "matplotlib", "trimesh",
                      "scikit-image", "gmsh", "pypardiso", "meshio", "ray[client]>=2.9"],
    ext_modules=modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["pinngs=pinngs.cli:main"]},
)
