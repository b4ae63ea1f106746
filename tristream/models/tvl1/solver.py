"""The TV-L1 solver: a kernel path chosen by name, batches, out-of-memory splits, fallbacks.

:class:`TVL1Solver` owns what it learns while it runs (paths that turned out unusable,
warnings already given, the path objects with their compiled code), so a worker's models
hold one solver and nothing is process-wide. :func:`tvl1_flow` is the one-call form.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from tristream.models.tvl1.base import KernelPath, KernelUnavailable, TVL1Stats
from tristream.models.tvl1.params import TVL1Params
from tristream.models.tvl1.paths import AUTO_KERNELS, KERNEL_CHOICES, KERNELS, make_path

__all__ = [
    "CPU_MAX_BATCH",
    "TVL1",
    "TVL1Solver",
    "cuda_batch_size",
    "pair_bytes",
    "resolve_kernel",
    "tvl1_flow",
]

_log = logging.getLogger("tristream.models.tvl1")

#: Pairs the eager path solves together on the CPU when no ``max_batch`` is given (see
#: ``paths.EagerPath``); the fused path takes whole batches.
CPU_MAX_BATCH = 2


#: Device memory of one 256x340 pair: ~17.5 MiB (issue 11's estimate). Per pixel of the
#: finest level that is ~53 float32 planes: the pyramids of both frames (2 x 1 / (1 -
#: 0.8^2) = 5.6), the state (6) and its masked copy (6), the warp's padded input and
#: output (3 x 1.5 + 3), the constants (4 + 3 gradients), the iteration's temporaries
#: (~16) and the output (2). ``benchmarks/gpu_check.py`` prints the measured peak.
PLANES_PER_PAIR = 53

#: Fraction of the free device memory a default CUDA batch may fill.
CUDA_MEMORY_FRACTION = 0.8

#: Largest default CUDA batch (more pairs add little once the GPU is full).
CUDA_MAX_BATCH = 256


def pair_bytes(height: int, width: int) -> int:
    """Estimated peak device memory (bytes) of one ``height`` x ``width`` pair."""
    return PLANES_PER_PAIR * 4 * height * width


def cuda_batch_size(height: int, width: int, device: torch.device | str = "cuda") -> int:
    """Pairs per CUDA batch: what fits in :data:`CUDA_MEMORY_FRACTION` of the free memory.

    Between 1 and :data:`CUDA_MAX_BATCH`; ~17.5 MiB per 256x340 pair (:func:`pair_bytes`),
    so 140 GiB free gives 256, 1 GiB free gives 46.
    """
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    fit = int(free * CUDA_MEMORY_FRACTION) // pair_bytes(height, width)
    return max(1, min(CUDA_MAX_BATCH, fit))


class TVL1Solver:
    """TV-L1 flow, OpenCV's DualTVL1, with a kernel path chosen by name.

    Args:
        params: solver parameters; ``None`` means OpenCV's defaults (``TVL1Params()``).
        kernel: a name in ``KERNEL_CHOICES``: a path of ``KERNELS`` or ``auto`` (the
            fastest exact path of the device: ``fused`` on the CPU, ``triton`` on CUDA;
            ``AUTO_KERNELS``). A path that cannot run here is replaced by ``eager`` with
            one logged warning per reason, and the stats say so.
        max_batch: most pairs solved together; a larger batch is solved in consecutive
            chunks (pairs are independent: the flow is the same). ``None``: the whole
            batch for the fused path, 2 pairs for eager/compiled on the CPU, what fits
            in the free memory on CUDA (:func:`cuda_batch_size`).
        sync_every: inner iterations between two host reads of the device-side
            convergence mask (torch paths). ``None``: 1 on the CPU, else
            ``inner_iterations``. The flow does not depend on it.
        threads: CPU threads of the fused path (``None``: all cores).

    Attributes:
        before_batch: test hook called with each batch's size before it is solved
            (tests raise ``torch.OutOfMemoryError`` there to check the split-and-retry).
    """

    def __init__(
        self,
        params: TVL1Params | None = None,
        kernel: str = "auto",
        *,
        max_batch: int | None = None,
        sync_every: int | None = None,
        threads: int | None = None,
    ) -> None:
        if kernel not in KERNEL_CHOICES:
            raise ValueError(f"unknown TV-L1 kernel {kernel!r}; choose one of {KERNEL_CHOICES}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if sync_every is not None and sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.params = TVL1Params() if params is None else params
        self.kernel = kernel
        self.max_batch = max_batch
        self.sync_every = sync_every
        self.threads = threads
        self.before_batch: Callable[[int], None] | None = None
        self._unavailable: dict[str, str] = {}  # paths found unusable (name -> reason)
        self._warned: set[tuple[str, str]] = set()
        self._paths: dict[str, KernelPath] = {}

    def path(self, name: str) -> KernelPath:
        """The path object of ``name`` (made once per solver)."""
        if name not in self._paths:
            self._paths[name] = make_path(name, self.threads)
        return self._paths[name]

    def unavailable(self, name: str, device: torch.device | str) -> str | None:
        """Why kernel path ``name`` cannot run on ``device`` with this solver's params."""
        if name not in KERNELS:
            raise ValueError(f"unknown TV-L1 kernel {name!r}; choose one of {KERNEL_CHOICES}")
        if name in self._unavailable:
            return self._unavailable[name]
        return self.path(name).unavailable(torch.device(device), self.params)

    def resolve(self, device: torch.device | str) -> tuple[str, str | None]:
        """The path that runs on ``device``, and why it is not the requested one (or None).

        ``auto`` takes the first path of ``AUTO_KERNELS`` for the device type that can run
        (eager where none is listed); a named path that cannot run gives
        ``("eager", reason)``.
        """
        device = torch.device(device)
        if self.kernel == "auto":
            for name in AUTO_KERNELS.get(device.type, ("eager",)):
                if self.unavailable(name, device) is None:
                    return name, None
            return "eager", None
        reason = self.unavailable(self.kernel, device)
        return ("eager", reason) if reason is not None else (self.kernel, None)

    def _warn_fallback(self, reason: str) -> None:
        if (self.kernel, reason) in self._warned:
            return
        self._warned.add((self.kernel, reason))
        _log.warning("TV-L1 kernel %r cannot run (%s); using the eager kernel", self.kernel, reason)

    def __call__(
        self,
        i0: torch.Tensor,
        i1: torch.Tensor,
        initial_flow: torch.Tensor | None = None,
        stats: TVL1Stats | None = None,
    ) -> torch.Tensor:
        """Flow from each ``i0[b]`` to ``i1[b]``: see :func:`tvl1_flow` (same arguments)."""
        params = self.params
        stats = TVL1Stats() if stats is None else stats
        if i0.dim() != 3 or i0.shape != i1.shape:
            raise ValueError(
                f"i0 and i1 must both be [B, H, W] with equal shapes, got {tuple(i0.shape)} "
                f"and {tuple(i1.shape)}"
            )
        if i0.device != i1.device:
            raise ValueError(f"i0 is on {i0.device} but i1 is on {i1.device}")
        b, h, w = i0.shape
        if params.use_initial_flow:
            if initial_flow is None:
                raise ValueError("params.use_initial_flow is set but no initial_flow was given")
            if tuple(initial_flow.shape) != (b, h, w, 2):
                raise ValueError(
                    f"initial_flow must be [B, H, W, 2] = {(b, h, w, 2)}, "
                    f"got {tuple(initial_flow.shape)}"
                )
        elif initial_flow is not None:
            raise ValueError("initial_flow was given but params.use_initial_flow is False")
        name, reason = self.resolve(i0.device)
        stats.kernel_requested, stats.kernel, stats.fallback_reason = self.kernel, name, reason
        if reason is not None:
            self._warn_fallback(reason)
        if b == 0 or h == 0 or w == 0:
            return torch.zeros((b, h, w, 2), dtype=torch.float32, device=i0.device)
        stats.pairs += b
        out = []
        with torch.no_grad():
            s = 0
            while s < b:
                max_batch = self._max_batch(name, b, h, w, i0.device)
                e = min(s + max_batch, b)
                init = None if initial_flow is None else initial_flow[s:e]
                try:
                    flow = self._solve_batch(i0[s:e], i1[s:e], init, self.path(name), stats)
                except KernelUnavailable as exc:
                    self._unavailable[name] = str(exc)
                    stats.fallback_reason = str(exc)
                    self._warn_fallback(str(exc))
                    name = stats.kernel = "eager"
                    continue
                out.append(flow)
                s = e
        return out[0] if len(out) == 1 else torch.cat(out)

    def solve_arrays(
        self,
        i0: np.ndarray,
        i1: np.ndarray,
        device: torch.device | str = "cpu",
        stats: TVL1Stats | None = None,
    ) -> np.ndarray:
        """As calling the solver, with numpy in and out: ``i0``, ``i1`` [B, H, W] grey levels
        (uint8 or float32), solved on ``device``; returns float32 [B, H, W, 2].

        On the CPU the fused path runs without any torch operation: an idle thread that has
        run torch's OpenMP-parallel operations slows every other thread's (measured: eager
        torch at 0.9 instead of 3.3 pairs/s), so the feeder's thread stays clear of them.
        """
        stats = TVL1Stats() if stats is None else stats
        device = torch.device(device)
        if i0.ndim != 3 or i0.shape != i1.shape:
            raise ValueError(
                f"i0 and i1 must both be [B, H, W] with equal shapes, got {i0.shape} and {i1.shape}"
            )
        name, reason = self.resolve(device)
        if device.type == "cpu" and name == "fused" and not self.params.use_initial_flow:
            stats.kernel_requested, stats.kernel, stats.fallback_reason = self.kernel, name, None
            b = i0.shape[0]
            stats.pairs += b
            out, s = [], 0
            try:
                while s < b:
                    e = min(s + self._max_batch(name, b, *i0.shape[1:], device), b)
                    out.append(self._solve_batch(i0[s:e], i1[s:e], None, self.path(name), stats))
                    s = e
            except KernelUnavailable as exc:
                self._unavailable[name] = str(exc)
                stats.pairs -= b
            else:
                return out[0] if len(out) == 1 else np.concatenate(out)
        a = torch.from_numpy(np.ascontiguousarray(i0)).to(device, torch.float32)
        c = torch.from_numpy(np.ascontiguousarray(i1)).to(device, torch.float32)
        return self(a, c, stats=stats).cpu().numpy()

    def _max_batch(self, name: str, b: int, h: int, w: int, device: torch.device) -> int:
        if self.max_batch is not None:
            return self.max_batch
        if device.type == "cuda":
            return cuda_batch_size(h, w, device)
        if device.type == "cpu" and self.path(name).cpu_max_batch is not None:
            return self.path(name).cpu_max_batch  # type: ignore[return-value]
        return b

    def _solve_batch(
        self,
        i0: torch.Tensor,
        i1: torch.Tensor,
        initial_flow: torch.Tensor | None,
        path: KernelPath,
        stats: TVL1Stats,
    ) -> torch.Tensor:
        """Solve one batch; out of device memory, solve its halves instead (down to one pair)."""
        b = i0.shape[0]
        try:
            if self.before_batch is not None:
                self.before_batch(b)
            return path.solve(i0, i1, initial_flow, self.params, stats, self.sync_every)
        except torch.OutOfMemoryError:
            if b == 1:
                raise
            # Leave the except block first: its traceback holds the failed batch's tensors.
        stats.oom_splits += 1
        _log.warning("TV-L1: out of memory on a batch of %d pairs; solving it in halves", b)
        if i0.device.type == "cuda":
            torch.cuda.empty_cache()
        half = (b + 1) // 2
        parts = [
            self._solve_batch(
                i0[s:e],
                i1[s:e],
                None if initial_flow is None else initial_flow[s:e],
                path,
                stats,
            )
            for s, e in ((0, half), (half, b))
        ]
        return torch.cat(parts)


def resolve_kernel(
    kernel: str, device: torch.device | str, params: TVL1Params | None = None
) -> tuple[str, str | None]:
    """The kernel path that runs for ``kernel`` on ``device``, and why it differs, if it does
    (see :meth:`TVL1Solver.resolve`). Raises ValueError for a name not in KERNEL_CHOICES."""
    return TVL1Solver(params, kernel).resolve(device)


def tvl1_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    params: TVL1Params | None = None,
    initial_flow: torch.Tensor | None = None,
    *,
    kernel: str = "auto",
    max_batch: int | None = None,
    sync_every: int | None = None,
    threads: int | None = None,
    stats: TVL1Stats | None = None,
) -> torch.Tensor:
    """Dense TV-L1 optical flow from each ``i0[b]`` to ``i1[b]``, as OpenCV's DualTVL1.

    Args:
        i0: first frames, float tensor [B, H, W], grayscale on the 0..255 scale (uint8 is
            accepted and converted); any device.
        i1: second frames, same shape, dtype and device as ``i0``.
        params: solver parameters; ``None`` means OpenCV's defaults (``TVL1Params()``).
        initial_flow: [B, H, W, 2] flow in pixels to start from; required when
            ``params.use_initial_flow`` is true and rejected otherwise.
        kernel, max_batch, sync_every, threads: see :class:`TVL1Solver`. Paths differ
            only by float32 rounding (which the median filter and the stopping rule can
            amplify, as they do between OpenCV builds).
        stats: a :class:`TVL1Stats` to fill in (kernel used, batches, host syncs, ...).

    Returns:
        float32 tensor [B, H, W, 2] on the input's device: per pixel (dx, dy) in pixels,
        x to the right and y down, such that ``i0[y, x]`` matches ``i1[y + dy, x + dx]``.

    A solver made for one call forgets its fallbacks afterwards: code that calls often
    keeps a :class:`TVL1Solver`.
    """
    solver = TVL1Solver(params, kernel, max_batch=max_batch, sync_every=sync_every, threads=threads)
    return solver(i0, i1, initial_flow, stats)


class TVL1(torch.nn.Module):
    """``torch.nn.Module`` around a :class:`TVL1Solver` (no learnable parameters).

    Args:
        params: solver parameters (OpenCV defaults when ``None``).
        kernel: kernel path, a name in ``KERNEL_CHOICES`` (see :class:`TVL1Solver`).
        max_batch: most pairs solved together (see :class:`TVL1Solver`).

    After each call, ``last_stats`` is the :class:`TVL1Stats` of that call (which kernel
    path actually ran, batches, host syncs).
    """

    def __init__(
        self,
        params: TVL1Params | None = None,
        kernel: str = "auto",
        max_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.solver = TVL1Solver(params, kernel, max_batch=max_batch)
        self.params = self.solver.params
        self.kernel = kernel
        self.max_batch = max_batch
        self.last_stats: TVL1Stats | None = None

    def forward(
        self, i0: torch.Tensor, i1: torch.Tensor, initial_flow: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Flow [B, H, W, 2] float32 in pixels from ``i0`` to ``i1`` (both [B, H, W], 0..255)."""
        stats = TVL1Stats()
        out = self.solver(i0, i1, initial_flow, stats)
        self.last_stats = stats
        return out
