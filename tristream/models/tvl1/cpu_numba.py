"""numba for the fused CPU kernels, set up once: the compile cache in a user folder and
numba's own thread pool. :mod:`.cpu` and :mod:`.cpu_median` take ``njit`` from here."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["JIT", "cache_dir", "njit", "numba", "prange"]


def cache_dir() -> Path:
    """Where numba keeps the compiled kernels: ``$NUMBA_CACHE_DIR`` if set, else the user's
    cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/tristream/numba``; never
    site-packages."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tristream" / "numba"


def _import_numba():
    import numba

    if not os.environ.get("NUMBA_CACHE_DIR"):
        path = cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        numba.config.CACHE_DIR = str(path)
    if not os.environ.get("NUMBA_THREADING_LAYER"):
        # numba's own thread pool, not OpenMP: a thread that keeps an OpenMP team alive
        # (the flow feeder's) slows torch's OpenMP operations in every other thread 3.5x
        # (measured). The pool is not reentrant; solve() serialises its calls.
        numba.config.THREADING_LAYER = "workqueue"
    return numba


numba = _import_numba()
njit = numba.njit
prange = numba.prange

JIT = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)
