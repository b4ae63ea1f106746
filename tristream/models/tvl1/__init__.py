"""Batched TV-L1 optical flow in PyTorch, numerically following OpenCV contrib's DualTVL1.

The solver is the duality-based TV-L1 scheme of Zach, Pock and Bischof (2007) in the form
described by Sanchez, Meinhardt-Llopis and Facciolo (IPOL 2013), with the choices that
``cv::optflow::DualTVL1OpticalFlow`` (modules/optflow/src/tvl1flow.cpp) makes:

* pyramid: level ``s`` is the bilinear resize (pixel-centre aligned, edge replicated, no
  Gaussian pre-filter) of level ``s - 1`` by ``scale_step``; sizes are rounded to the
  nearest integer; construction stops early once a level would be narrower or shorter than
  16 pixels;
* per level: ``warps`` warpings; each warps I1 and its centred-difference gradient with
  bicubic interpolation (Keys kernel, a = -0.75, zero outside the image) at ``x + u``;
* per warping: up to ``outer_iterations`` x ``inner_iterations`` primal-dual iterations
  (thresholding step, primal update, forward-difference gradient, dual update), with a
  ``median_filtering`` x ``median_filtering`` median filter (edge replicated) of the flow
  before each run of inner iterations; a pair stops iterating within the current warping
  once the sum over pixels of the squared flow update is at most
  ``epsilon**2 * height * width`` of the level;
* the flow is bilinearly upsampled to the next finer level and multiplied by
  ``1 / scale_step``; dual variables restart from zero at each level;
* optional ``gamma`` term (third primal variable for illumination change) and
  ``use_initial_flow``.

The package, one module per concern:

* :mod:`.params`: the parameters, their types and OpenCV's defaults (no torch);
* :mod:`.networks`: the sorting networks of the exact median (pure Python);
* :mod:`.ops`: OpenCV's operations as batched torch ops; :mod:`.torch_solver`: the
  pyramid and OpenCV's per-pair stopping rule kept on the device, over a path's ops;
* :mod:`.paths`: the kernel paths by name (:data:`KERNELS`): ``eager`` (torch ops),
  ``compiled`` (``torch.compile``), ``triton`` (:mod:`.triton_kernels`, CUDA) and
  ``fused`` (:mod:`.cpu`, numba: the CPU default);
* :mod:`.solver`: :class:`TVL1Solver` (path resolution with fallbacks it owns, batches,
  out-of-memory splits), :func:`tvl1_flow`, the :class:`TVL1` module;
* :mod:`.feeder`: one flow feeder per worker process, batching the pairs of all its
  threads into solver calls.

A path that cannot run is replaced by eager with a warning and reported in
:class:`TVL1Stats`. Needs torch; numba for ``fused``, Triton for ``triton``; no OpenCV,
no Apache Beam.

Agreement with OpenCV is to float rounding in each step. The stopping rule and the
median filter can amplify rounding differences, so the flows differ by a mean end-point
error of about 0.01 px on real frames, and by ~0.4 px where the motion is beyond TV-L1's
capture range; OpenCV differs from itself by as much between CPUs with and without AVX2,
or builds with and without Intel IPP (see ``benchmarks/RESULTS.md``). On CPU, eager mode
is fastest at small batches, so a large batch is solved ``CPU_MAX_BATCH`` pairs at a
time there; the fused path and GPUs take the whole batch.

Units: images are grayscale intensities on the 0..255 scale (OpenCV's 8-bit input
converted to float); flow is in pixels of the input, channel 0 = x (right), channel 1 =
y (down), from ``i0`` to ``i1``: ``i0[y, x] ~ i1[y + flow[..., 1], x + flow[..., 0]]``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The parameters need no torch: the CLI and the config read them without importing it.
from tristream.models.tvl1.params import DEFAULTS, PARAM_TYPES, TVL1Params, level_sizes

if TYPE_CHECKING:
    from tristream.models.tvl1.base import KernelPath, KernelUnavailable, TVL1Stats
    from tristream.models.tvl1.feeder import FlowFeeder, FlowResult
    from tristream.models.tvl1.paths import AUTO_KERNELS, KERNEL_CHOICES, KERNELS
    from tristream.models.tvl1.solver import (
        CPU_MAX_BATCH,
        TVL1,
        TVL1Solver,
        cuda_batch_size,
        pair_bytes,
        resolve_kernel,
        tvl1_flow,
    )

_LAZY = {
    "KernelPath": "base",
    "KernelUnavailable": "base",
    "TVL1Stats": "base",
    "FlowFeeder": "feeder",
    "FlowResult": "feeder",
    "AUTO_KERNELS": "paths",
    "KERNEL_CHOICES": "paths",
    "KERNELS": "paths",
    "CPU_MAX_BATCH": "solver",
    "TVL1": "solver",
    "TVL1Solver": "solver",
    "cuda_batch_size": "solver",
    "pair_bytes": "solver",
    "resolve_kernel": "solver",
    "tvl1_flow": "solver",
}


def __getattr__(name: str) -> Any:
    """The solver's names, imported (with torch) at first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUTO_KERNELS",
    "CPU_MAX_BATCH",
    "DEFAULTS",
    "FlowFeeder",
    "FlowResult",
    "KERNELS",
    "KERNEL_CHOICES",
    "PARAM_TYPES",
    "TVL1",
    "KernelPath",
    "KernelUnavailable",
    "TVL1Params",
    "TVL1Solver",
    "TVL1Stats",
    "cuda_batch_size",
    "level_sizes",
    "pair_bytes",
    "resolve_kernel",
    "tvl1_flow",
]
