"""TV-L1 optical flow between consecutive frames, behind one backend registry.

Backends are chosen by name from :data:`BACKENDS`: ``tvl1`` (tristream's exact
solver, fused CPU kernels or Triton; the default) and ``opencv`` (contrib's DualTVL1,
the reference). All take the same TV-L1 parameter names, whose defaults are OpenCV
DualTVL1's (see :data:`TVL1_DEFAULTS` and DESIGN.md).
"""

from __future__ import annotations

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
    another did not.
    """
    from tristream.models.tvl1 import FlowFeeder, TVL1Params, TVL1Solver

    if feeder is None:
        from tristream.models.common import resolve_device

        dev = resolve_device(device)
        solver = TVL1Solver(TVL1Params(**tvl1_params(**params)), kernel)
        feeder = FlowFeeder(solver, dev, batch_size)
    result = feeder.flow(gray)
    if stats is not None:
        for name, pairs in result.kernels.items():
            stats.kernel = name
            stats.pairs += pairs
        stats.kernel_requested = feeder.solver.kernel
        if result.fallbacks:
            stats.fallback_reason = result.fallbacks[-1]
    return result.flow


#: Flow backends by name: gray uint8 ``[T, H, W]`` in, float32 ``[T-1, H, W, 2]`` out.
BACKENDS: dict[str, Callable[..., np.ndarray]] = {
    "opencv": _opencv_flow,
    "tvl1": _tvl1_flow,
}


#: Backends that were renamed: old name -> new name (named in the error for the old one).
RENAMED: dict[str, str] = {"torch": "tvl1"}


def unknown_backend_error(name: str) -> ValueError:
    """The error for a ``--flow`` name that is not a backend (naming a renamed one's new name)."""
    hint = f" ('{name}' is now '{RENAMED[name]}')" if name in RENAMED else ""
    return ValueError(
        f"unknown flow backend {name!r}{hint}; choose one of {sorted(BACKENDS)} or 'none'"
    )


def register_backend(name: str, fn: Callable[..., np.ndarray]) -> None:
    """Register flow backend ``fn`` under ``name`` (``--flow NAME`` then selects it).

    ``fn(gray, **params)`` takes uint8 gray ``[T, H, W]`` (T >= 2) and the
    ``--flow-param`` values and returns float32 ``[T-1, H, W, 2]`` pixels. A
    name already registered is replaced. The CLI, the config and the pipeline
    all read :data:`BACKENDS`, so a registered backend needs nothing else
    (in-process runners; other workers must register it at import too).
    """
    if not name or name == "none":
        raise ValueError(f"invalid flow backend name {name!r}")
    BACKENDS[name] = fn


def compute_flow(frames: np.ndarray, backend: str = "tvl1", **params) -> np.ndarray:
    """TV-L1 flow from each frame to the next.

    ``frames``: uint8 ``[T, H, W, 3]`` RGB or ``[T, H, W]`` gray (RGB is
    converted to gray first, as I3D does). ``backend``: a name in
    :data:`BACKENDS`. ``params``: TV-L1 parameters named as in
    :data:`TVL1_DEFAULTS`, plus ``device``/``batch_size``/``kernel``/``feeder`` for
    ``tvl1``.
    Returns float32 ``[T-1, H, W, 2]``: (x right, y down) displacement in
    pixels from frame t to frame t+1. Fewer than two frames give ``[0, H, W, 2]``.
    """
    if backend not in BACKENDS:
        raise unknown_backend_error(backend)
    gray = to_gray(frames)
    if len(gray) < 2:
        return np.zeros((0, *gray.shape[1:], 2), np.float32)
    return BACKENDS[backend](gray, **params)
