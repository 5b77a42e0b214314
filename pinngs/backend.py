"""Lazy access to the compiled module ``pinngs._C``.

``import pinngs`` never needs the compiled module. The first op that would use it tries to import it;
if that fails, every op falls back to its pure-torch twin and one warning says so and how to fix it.
Set ``PINNGS_FORCE_TORCH=1`` to use the twins even when the module is present (tests, debugging).
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType

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
