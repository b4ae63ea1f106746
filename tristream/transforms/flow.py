"""TV-L1 optical flow between consecutive frames, behind one backend registry.

A backend (``--flow``) is named in one of two ways, both resolved by
:func:`resolve_backend`:

* a built-in name of :data:`BACKENDS`: ``tvl1`` (tristream's exact solver, fused CPU
  kernels or Triton; the default) and ``opencv`` (contrib's DualTVL1, the reference);
* an import path ``package.module:function`` (any importable module, e.g. one installed
  in the worker image): every process resolves it itself by importing the module, so the
  name alone travels in the pickled configuration and a remote worker (Dask, Dataflow,
  Flink, Spark) finds the same function.

:func:`register_backend` adds a name to :data:`BACKENDS` in this process only: it serves
in-process runners and tests, never a remote worker (which imports this module fresh);
anything that runs distributed is named by import path.

All backends take the same TV-L1 parameter names, whose defaults are OpenCV DualTVL1's
(see :data:`TVL1_DEFAULTS` and DESIGN.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from tristream.models.tvl1.params import DEFAULTS, PARAM_TYPES, TVL1Params

if TYPE_CHECKING:
    from tristream.models.tvl1 import FlowFeeder, TVL1Stats

#: OpenCV DualTVL1 defaults, under the parameter names every backend accepts (their one
#: home is ``tristream.models.tvl1.params``).
TVL1_DEFAULTS: dict[str, float | int] = DEFAULTS

_OPENCV_SETTERS = {
    "tau": "setTau",
    "lambda_": "setLambda",
    "theta": "setTheta",
    "nscales": "setScalesNumber",
    "warps": "setWarpingsNumber",
    "epsilon": "setEpsilon",
    "inner_iterations": "setInnerIterations",
    "outer_iterations": "setOuterIterations",
    "scale_step": "setScaleStep",
    "gamma": "setGamma",
    "median_filtering": "setMedianFiltering",
}


def tvl1_params(**overrides: float | int) -> dict[str, float | int]:
    """Return :data:`TVL1_DEFAULTS` updated with ``overrides``.

    Raises ValueError for an unknown name, a value of the wrong type (``nscales=5.0``: the
    integer parameters take integers) or out of range, so that a bad parameter fails
    before any work and equal settings always give equal dicts (and config hashes)."""
    unknown = set(overrides) - set(TVL1_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown TV-L1 parameter(s) {sorted(unknown)}; known: {sorted(TVL1_DEFAULTS)}"
        )
    merged = {**TVL1_DEFAULTS, **overrides}
    TVL1Params(**merged)  # types and ranges
    # Floats given as ints (tau=1) are stored as floats: one spelling, one hash.
    return {k: float(v) if PARAM_TYPES[k] is float else v for k, v in merged.items()}


def to_gray(frames: np.ndarray) -> np.ndarray:
    """Convert uint8 RGB ``[T, H, W, 3]`` (or gray ``[T, H, W]``) to uint8 gray ``[T, H, W]``.

    Uses OpenCV's BT.601 weights (the grayscale that OpenCV-based flow tools use).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim == 3:
        return frames
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] or [T, H, W], got {frames.shape}")
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def _opencv_flow(gray: np.ndarray, **params) -> np.ndarray:
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    for name, value in tvl1_params(**params).items():
        getattr(tvl1, _OPENCV_SETTERS[name])(value)
    out = np.empty((len(gray) - 1, *gray.shape[1:], 2), np.float32)
    for t in range(len(gray) - 1):
        out[t] = tvl1.calc(gray[t], gray[t + 1], None)
    return out


def _tvl1_flow(
    gray: np.ndarray,
    device: str = "auto",
    batch_size: int = 0,
    kernel: str = "auto",
    stats: TVL1Stats | None = None,
    feeder: FlowFeeder | None = None,
    **params,
) -> np.ndarray:
    """tristream's TV-L1 solver (``tristream.models.tvl1``) over consecutive pairs.

    ``feeder``: the worker process's :class:`~tristream.models.tvl1.FlowFeeder`, which
    batches the pairs of all its threads (the pipeline passes it; ``device``,
    ``batch_size``, ``kernel`` and ``params`` are then the feeder's). Without one, a
    solver is made for this call: ``device`` (``auto``, ``cpu``, ``cuda[:N]``), ``kernel``
    (a name of ``tvl1.KERNEL_CHOICES``: ``auto`` is the fused CPU kernels on the CPU and
    Triton on CUDA), ``batch_size`` pairs per solver call (0: 16 on the CPU, what fills the
    free memory on CUDA). ``stats``: a ``tvl1.TVL1Stats`` told which path ran and why
    another did not. A solver and feeder made for the call are closed with it (its
    fallbacks and caches are forgotten: repeated callers pass a ``feeder``).
    """
    from tristream.models.tvl1 import FlowFeeder, TVL1Params, TVL1Solver

    own = feeder is None
    if feeder is None:
        from tristream.models.common import resolve_device

        dev = resolve_device(device)
        solver = TVL1Solver(TVL1Params(**tvl1_params(**params)), kernel)
        feeder = FlowFeeder(solver, dev, batch_size)
    try:
        result = feeder.flow(gray)
    finally:
        if own:
            feeder.close()  # its thread ends: nothing of this call outlives it
    if stats is not None:
        for name, pairs in result.kernels.items():
            stats.kernel = name
            stats.pairs += pairs
        stats.kernel_requested = feeder.solver.kernel
        if result.fallbacks:
            stats.fallback_reason = result.fallbacks[-1]
    return result.flow


#: Flow backends by name: gray uint8 ``[T, H, W]`` in, float32 ``[T-1, H, W, 2]`` out. The
#: built-in ones, plus what :func:`register_backend` added in this process.
BACKENDS: dict[str, Callable[..., np.ndarray]] = {
    "opencv": _opencv_flow,
    "tvl1": _tvl1_flow,
}


#: Backends that were renamed: old name -> new name (named in the error for the old one).
RENAMED: dict[str, str] = {"torch": "tvl1"}

#: What separates the module from the function in a backend's import path.
IMPORT_PATH_SEPARATOR = ":"


def unknown_backend_error(name: str) -> ValueError:
    """The error for a ``--flow`` name that is not a backend (naming a renamed one's new name)."""
    hint = f" ('{name}' is now '{RENAMED[name]}')" if name in RENAMED else ""
    return ValueError(
        f"--flow: unknown flow backend {name!r}{hint}; choose one of {sorted(BACKENDS)}, "
        "an import path package.module:function, or 'none'"
    )


def is_import_path(name: str) -> bool:
    """Whether ``name`` is written as an import path (``package.module:function``), not as a
    registered name (which never contains ``:``)."""
    return IMPORT_PATH_SEPARATOR in name


def _import_backend(name: str) -> Callable[..., np.ndarray]:
    """The callable that import path ``name`` names; ValueError (naming ``--flow``) if none."""
    module_name, _, attr = name.partition(IMPORT_PATH_SEPARATOR)
    if not module_name or not attr or IMPORT_PATH_SEPARATOR in attr:
        raise ValueError(f"--flow: {name!r} is not an import path: write package.module:function")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # ModuleNotFoundError, or the module failing as it imports
        raise ValueError(
            f"--flow {name!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            where = ".".join([module_name, *attr.split(".")[:i]])
            raise ValueError(f"--flow {name!r}: {where!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(
            f"--flow {name!r}: {attr!r} is a {type(obj).__name__}, not a callable flow backend"
        )
    return obj  # type: ignore[return-value]


def resolve_backend(name: str) -> Callable[..., np.ndarray]:
    """The flow backend function that ``name`` (a ``--flow`` value) names.

    A name of :data:`BACKENDS` gives its function; an import path
    ``package.module:function`` (``function`` may be dotted: ``module:Class.method``)
    imports the module in this process (Python keeps it imported: later calls cost a
    look-up) and gives the attribute. The function is not called. Raises ValueError,
    naming ``--flow``, for an unknown name, a malformed path, a module that cannot be
    imported, a missing attribute, or one that is not callable.
    """
    if not isinstance(name, str):
        raise ValueError(f"--flow: a backend name is a string, got {type(name).__name__}")
    fn = BACKENDS.get(name)
    if fn is not None:
        return fn
    if is_import_path(name):
        return _import_backend(name)
    raise unknown_backend_error(name)


def is_backend(name: str) -> bool:
    """Whether ``name`` names a flow backend here (see :func:`resolve_backend`, whose error
    says why not). ``none`` (no flow) is not a backend."""
    try:
        resolve_backend(name)
    except ValueError:
        return False
    return True


def register_backend(name: str, fn: Callable[..., np.ndarray]) -> None:
    """Register flow backend ``fn`` under ``name`` in THIS process (``--flow NAME`` then
    selects it here).

    ``fn(gray, **params)`` takes uint8 gray ``[T, H, W]`` (T >= 2) and the
    ``--flow-param`` values and returns float32 ``[T-1, H, W, 2]`` pixels. A name already
    registered is replaced.

    Local to the process: for in-process runners (Beam's local runner with threads, tests)
    only. A remote worker (Dask, Dataflow, Flink, Spark, or the local runner with
    processes) imports this module fresh and never sees the registration; there, name the
    function by import path instead (``--flow package.module:function``), which every
    worker resolves itself.
    """
    if not name or name == "none" or is_import_path(name):
        raise ValueError(
            f"invalid flow backend name {name!r} (not empty, not 'none', no "
            f"{IMPORT_PATH_SEPARATOR!r}: import paths need no registering)"
        )
    if not callable(fn):
        raise ValueError(f"flow backend {name!r} must be callable, got {type(fn).__name__}")
    BACKENDS[name] = fn


def compute_flow(frames: np.ndarray, backend: str = "tvl1", **params) -> np.ndarray:
    """TV-L1 flow from each frame to the next.

    ``frames``: uint8 ``[T, H, W, 3]`` RGB or ``[T, H, W]`` gray (RGB is
    converted to gray first, as I3D does). ``backend``: a name in
    :data:`BACKENDS` or an import path ``package.module:function``
    (:func:`resolve_backend`). ``params``: TV-L1 parameters named as in
    :data:`TVL1_DEFAULTS`, plus ``device``/``batch_size``/``kernel``/``feeder`` for
    ``tvl1``.
    Returns float32 ``[T-1, H, W, 2]``: (x right, y down) displacement in
    pixels from frame t to frame t+1. Fewer than two frames give ``[0, H, W, 2]``.
    """
    fn = resolve_backend(backend)
    gray = to_gray(frames)
    if len(gray) < 2:
        return np.zeros((0, *gray.shape[1:], 2), np.float32)
    return fn(gray, **params)
