"""numba for the fused CPU kernels, set up once: the compile cache in a user folder and
numba's own thread pool. :mod:`.cpu` and :mod:`.cpu_median` take ``njit`` from here.

The one place in :mod:`tristream.models.tvl1` that reads the environment at import, and
why it must: numba reads its own configuration (``NUMBA_*``, e.g. ``NUMBA_NUM_THREADS``)
when it is imported, and both settings made here have to be in place before any kernel
exists:

* the cache folder (``numba.config.CACHE_DIR``): an ``njit(cache=True)`` function picks
  where its cache lives when it is decorated, i.e. when :mod:`.cpu` and :mod:`.cpu_median`
  are imported. ``$NUMBA_CACHE_DIR`` (numba's own variable) wins; otherwise
  :func:`cache_dir` (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``tristream/numba``) is
  set here, never site-packages;
* the threading layer (``numba.config.THREADING_LAYER``): fixed by numba at the first
  parallel launch, for the whole process. ``$NUMBA_THREADING_LAYER`` wins; otherwise
  numba's ``workqueue`` pool (see below).

So these variables must be set before this module is first imported in a process (a
worker's environment, not a later ``os.environ`` change). Both are numba's process-wide
settings by nature; nothing else in the package keeps the environment: the solver, the
paths and their caches read nothing from it, and the Triton kernels ask their kernel
objects whether they are interpreted (``triton_kernels.interpreted``).
"""

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
