"""TV-L1 optical flow between consecutive frames, behind one backend registry.

Backends are chosen by name (``opencv`` or ``torch``) from :data:`BACKENDS`;
all take the same TV-L1 parameter names, whose defaults are OpenCV
DualTVL1's (see :data:`TVL1_DEFAULTS` and DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from tristream.models.tvl1 import TVL1Stats

#: OpenCV DualTVL1 defaults, under the parameter names every backend accepts.
TVL1_DEFAULTS: dict[str, float | int | bool] = {
    "tau": 0.25,
    "lambda_": 0.15,
    "theta": 0.3,
    "nscales": 5,
    "warps": 5,
    "epsilon": 0.01,
    "inner_iterations": 30,
    "outer_iterations": 10,
    "scale_step": 0.8,
    "gamma": 0.0,
    "median_filtering": 5,
}

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


def tvl1_params(**overrides: float | int | bool) -> dict[str, float | int | bool]:
    """Return :data:`TVL1_DEFAULTS` updated with ``overrides``; unknown names raise ValueError."""
    unknown = set(overrides) - set(TVL1_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown TV-L1 parameter(s) {sorted(unknown)}; known: {sorted(TVL1_DEFAULTS)}"
        )
    return {**TVL1_DEFAULTS, **overrides}


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


def _torch_flow(
    gray: np.ndarray,
    device: str = "auto",
    batch_size: int = 16,
    kernel: str = "auto",
    stats: TVL1Stats | None = None,
    **params,
) -> np.ndarray:
    """The batched torch TV-L1 solver (``tristream.models.tvl1``) over consecutive pairs.

    ``batch_size``: pairs per ``tvl1_flow`` call; 0 picks what fills the free GPU memory on
    CUDA (``cuda_batch_size``) and 16 elsewhere. ``kernel``: a name of
    ``tvl1.KERNEL_CHOICES``. ``stats``: a ``tvl1.TVL1Stats`` that collects what ran (the
    kernel path actually used and why, if it is not the one asked for; batches, host syncs).
    """
    import torch

    from tristream.models.common import resolve_device
    from tristream.models.tvl1 import TVL1Params, TVL1Stats, cuda_batch_size, tvl1_flow

    dev = resolve_device(device)
    p = TVL1Params(**tvl1_params(**params))
    if stats is None:
        stats = TVL1Stats()
    if batch_size <= 0:
        h, w = gray.shape[1:]
        batch_size = cuda_batch_size(h, w, dev) if torch.device(dev).type == "cuda" else 16
    out = np.empty((len(gray) - 1, *gray.shape[1:], 2), np.float32)
    frames = torch.from_numpy(gray).to(dev, torch.float32)
    with torch.inference_mode():
        for b in range(0, len(gray) - 1, batch_size):
            e = min(b + batch_size, len(gray) - 1)
            flow = tvl1_flow(frames[b:e], frames[b + 1 : e + 1], p, kernel=kernel, stats=stats)
            out[b:e] = flow.cpu().numpy()
    return out


#: Flow backends by name: gray uint8 ``[T, H, W]`` in, float32 ``[T-1, H, W, 2]`` out.
BACKENDS: dict[str, Callable[..., np.ndarray]] = {
    "opencv": _opencv_flow,
    "torch": _torch_flow,
}


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


def compute_flow(frames: np.ndarray, backend: str = "opencv", **params) -> np.ndarray:
    """TV-L1 flow from each frame to the next.

    ``frames``: uint8 ``[T, H, W, 3]`` RGB or ``[T, H, W]`` gray (RGB is
    converted to gray first, as I3D does). ``backend``: a name in
    :data:`BACKENDS`. ``params``: TV-L1 parameters named as in
    :data:`TVL1_DEFAULTS`, plus ``device``/``batch_size`` for ``torch``.
    Returns float32 ``[T-1, H, W, 2]``: (x right, y down) displacement in
    pixels from frame t to frame t+1. Fewer than two frames give ``[0, H, W, 2]``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown flow backend {backend!r}; choose one of {sorted(BACKENDS)}")
    gray = to_gray(frames)
    if len(gray) < 2:
        return np.zeros((0, *gray.shape[1:], 2), np.float32)
    return BACKENDS[backend](gray, **params)
