"""Lazy access to the compiled module ``pinngs._C``.

``import pinngs`` never needs the compiled module. The first op that would use it tries to import it;
if that fails, every op falls back to its pure-torch twin and one warning says so and how to fix it.
Set ``PINNGS_FORCE_TORCH=1`` to use the twins even when the module is present (tests, debugging).
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_C: ModuleType | None = None
_tried = False


def get_C() -> ModuleType | None:
    """The compiled module, or None (after one warning) when it is unavailable or disabled."""
    global _C, _tried
    if os.environ.get("PINNGS_FORCE_TORCH", "0") == "1":
        return None
    if not _tried:
        _tried = True
        try:
            from pinngs import _C as mod  # type: ignore[attr-defined]

            _C = mod
        except ImportError as err:
            warnings.warn(
                "pinngs._C is not built, so pinngs runs on its pure-torch twins, which are correct but "
                "orders of magnitude slower and memory-hungry. Build it with "
                "`pip install --no-build-isolation -e .` in the pinngs checkout. "
                f"(import error: {err})",
                RuntimeWarning,
                stacklevel=3,
            )
    return _C


def has_compiled() -> bool:
    return get_C() is not None


def has_cuda_kernels() -> bool:
    C = get_C()
    return C is not None and bool(C.has_cuda())


Device = str  # "auto", "cpu" or "cuda" (also "cuda:N")


def resolve_device(name: str) -> "torch.device":
    """The torch device a ``--device`` setting means: "auto" is CUDA when a GPU is visible and
    pinngs._C has CUDA kernels, else the CPU; "cuda" without either is a ValueError that says so."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and has_cuda_kernels() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is visible to torch {torch.__version__} on this machine; "
                             "use --device cpu (or auto)")
        if not has_cuda_kernels():
            raise ValueError(f"--device {name}: pinngs._C was built without CUDA kernels; rebuild it on a machine "
                             "with nvcc and a CUDA torch (pip install --no-build-isolation -e .), or use --device cpu")
        return torch.device(name)
    raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
