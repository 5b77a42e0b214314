"""Writes that never lose what was there: a file or a folder is built under a temporary name beside
its target and moved into place only when complete.

    with atomic_file(path, "wb") as fh: ...          # the file, completely or not at all
    replace_dir(new_folder, out)                      # out becomes new_folder; the old out is gone
    check_output(out, inputs=[study])                 # before any work: writable, not a file, not an input

Files and folders get the permissions the user's umask allows (0644 / 0755 with the usual 022),
not the 0600 / 0700 of Python's ``tempfile``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


FAILPOINT_ENV = "PINNGS_FAILPOINT"  # fault tests: "<name>[:<n>]" stops at the n-th hit (default 1) of failpoint(name)


def failpoint(name: str) -> None:
    """A named moment at which the fault tests kill the process: when ``PINNGS_FAILPOINT`` is
    ``name`` (or ``name:n``, the n-th time it is reached), write ``<name>.reached`` into the folder
    ``PINNGS_FAILPOINT_DIR`` and wait to be killed. Does nothing otherwise (one dict lookup)."""
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    want, _, n = spec.partition(":")
    if want != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(n or 1):
        return
    import time

    Path(os.environ.get("PINNGS_FAILPOINT_DIR", ".")).joinpath(f"{name}.reached").write_text(str(os.getpid()))
    time.sleep(3600)


_hits: dict[str, int] = {}


class OutputError(ValueError):
    """An output path that cannot be used (a file, under a file, an input, not writable)."""


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    m = os.umask(0o022)
    os.umask(m)
    return m


def _chmod_default(path: str | os.PathLike, is_dir: bool) -> None:
    os.chmod(path, (0o777 if is_dir else 0o666) & ~umask())


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w"):
    """``with atomic_file(p, "wb") as fh: ...`` writes p completely or not at all (the temporary
    ``.p.*.tmp`` is removed on any error); p gets the umask's permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        _chmod_default(tmp, False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def temp_dir_beside(target: str | os.PathLike, tag: str = "tmp") -> Path:
    """A new empty folder next to ``target`` (same filesystem, so a rename can move it into place),
    with the umask's permissions."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}.", dir=target.parent))
    _chmod_default(tmp, True)
    return tmp


def partial_dir(out: str | os.PathLike) -> Path:
    """Where an interrupted run of a command that writes ``out`` keeps its work (checkpoint, state)
    until it completes: ``.OUT.partial`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make the complete folder ``new`` be ``target``: a rename when ``target`` does not exist, else an
    atomic exchange of the two (then the old one is deleted). At every moment ``target`` is either
    the old folder or the new one. Where the exchange is not supported, the old folder is renamed
    aside first and restored if the second rename fails."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    if target.is_dir() and _exchange(new, target):
        shutil.rmtree(new)  # the old one, now under the temporary name
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.rmdir(aside)
    os.replace(target, aside)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside) if aside.is_dir() else aside.unlink()


def _inside(a: Path, b: Path) -> bool:
    """a is b or lies inside b (resolved paths)."""
    return a == b or b in a.parents


def check_output(out: str | os.PathLike, inputs: list[str | os.PathLike] = (), option: str = "-o",
                 overwrite: bool = False, allow_nonempty: bool = False) -> Path:
    """Check an output folder before any work is done, and return it.

    Raises OutputError when ``out`` is a file; lies under a file; is, contains or lies inside one of
    ``inputs``; is a non-empty folder and neither ``overwrite`` nor ``allow_nonempty``; or its
    nearest existing ancestor is not writable. Nothing is created or changed.
    """
    out = Path(out)
    res = out.resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out}: exists and is a file, not a folder; choose a folder")
    anc = res
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"{option} {out}: {anc} is a file, so no folder can be made under it; choose another path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {out}: {anc} is not writable; choose a folder you can write to")
    for x in inputs:
        xr = Path(x).resolve()
        if _inside(res, xr) or _inside(xr, res):
            rel = "is" if res == xr else "is inside" if _inside(res, xr) else "contains"
            raise OutputError(f"{option} {out}: {rel} the input {x}; write the outputs somewhere else")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or allow_nonempty):
        raise OutputError(f"{option} {out}: the folder is not empty; choose another, or pass --overwrite "
                          "(the old contents are replaced only once the new ones are complete)")
    return out
