"""The kernel paths of the TV-L1 solver (registered by name in :mod:`.names` only).

* ``eager``: plain torch ops (:mod:`.ops`) under the torch driver (:mod:`.torch_solver`);
  the reference, runs anywhere torch runs.
* ``compiled``: the same warp, median and masked iteration through ``torch.compile``
  (``fullgraph=True``; a C++ compiler on CPU, Triton on CUDA).
* ``triton``: hand-written fused Triton kernels for one inner iteration and the median
  (:mod:`.triton_kernels`; CUDA, or the CPU under ``TRITON_INTERPRET=1``).
* ``fused``: the whole solver as fused CPU kernels compiled with numba (:mod:`.cpu`),
  parallel over pairs; the CPU default.

Each path is a class named by import path in :data:`~.names.PATHS` (the registry, in
:mod:`.names`, importable without torch), so a worker process has every path (nothing is
registered at run time).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import torch

from tristream.models.tvl1 import ops, torch_solver
from tristream.models.tvl1.base import KernelPath, KernelUnavailable, TVL1Stats
from tristream.models.tvl1.names import AUTO_KERNELS, KERNEL_CHOICES, KERNELS, PATHS
from tristream.models.tvl1.params import TVL1Params

__all__ = ["AUTO_KERNELS", "KERNELS", "KERNEL_CHOICES", "PATHS", "make_path"]


def make_path(name: str, threads: int | None = None) -> KernelPath:
    """A new kernel path object of ``name`` (see :data:`PATHS`); ``threads``: CPU threads
    for paths that manage their own (``fused``), ``None`` for all cores."""
    module, cls = PATHS[name].split(":")
    return getattr(importlib.import_module(module), cls)(threads)


class EagerPath:
    """The reference: plain torch ops. Skips the mask when every row is known to be live.

    :attr:`ops_cache` (an :class:`~.ops.OpsCache`) remembers the resize taps and median
    networks of this path object's solves: it belongs to the path, so to the solver that
    made it.

    On the CPU a batch is solved :attr:`cpu_max_batch` pairs at a time when the caller
    gives no ``max_batch``: each eager op streams whole [B, H, W] tensors, and 2 pairs of
    256x340 (0.7 MiB a plane) stay in the caches where 64 pairs (22 MiB) are memory-bound
    (``benchmarks/RESULTS.md``).
    """

    name = "eager"
    cpu_max_batch: int | None = 2

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.ops_cache = ops.OpsCache()

    def unavailable(self, device: torch.device, params: TVL1Params) -> str | None:
        return None

    def solve(
        self,
        i0: torch.Tensor,
        i1: torch.Tensor,
        initial_flow: torch.Tensor | None,
        params: TVL1Params,
        stats: TVL1Stats,
        sync_every: int | None,
    ) -> torch.Tensor:
        return torch_solver.solve(i0, i1, initial_flow, params, self, stats, sync_every)

    def warp(self, images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return ops.warp_bicubic(images, u1, u2)

    def median(self, u: torch.Tensor, k: int) -> torch.Tensor:
        return ops.median_filter(u, k, None if k == 5 else self.ops_cache.median_plan(k))

    def iterate(
        self,
        state: list[torch.Tensor],
        consts: list[torch.Tensor],
        live: torch.Tensor,
        all_live: bool,
        eps: torch.Tensor,
        coefs: tuple[float, ...],
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One iteration of the ``live`` pairs; returns the new state and live mask."""
        fn: Callable[..., tuple[torch.Tensor, ...]] = (
            ops.iteration_gamma if len(state) == 9 else ops.iteration
        )
        *new, error = fn(*state, *consts, *coefs)
        if all_live:
            return list(new), error > eps
        *out, live = ops.keep_live(new, state, live, error, eps)
        return out, live


class CompiledPath(EagerPath):
    """``torch.compile`` (fullgraph, dynamic shapes) of the warp, median and masked iteration.

    A compilation failure at a function's first call raises :class:`KernelUnavailable`
    (the solver solves the batch again with the eager path and reports it).
    """

    name = "compiled"

    def __init__(self, threads: int | None = None) -> None:
        super().__init__(threads)
        self._fns: dict[str, Callable[..., object]] = {}
        self._checked: set[str] = set()

    def _call(self, name: str, fn: Callable[..., object], *args: object) -> object:
        if name not in self._fns:
            self._fns[name] = torch.compile(fn, dynamic=True, fullgraph=True)
        if name in self._checked:
            return self._fns[name](*args)
        try:
            out = self._fns[name](*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # compiler missing or failing
            raise KernelUnavailable(
                f"torch.compile failed for {name}: {type(exc).__name__}: {exc}".splitlines()[0]
            ) from exc
        self._checked.add(name)
        return out

    def warp(self, images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return self._call("warp", ops.warp_bicubic, images, u1, u2)  # type: ignore[return-value]

    def median(self, u: torch.Tensor, k: int) -> torch.Tensor:
        plan = None if k == 5 else self.ops_cache.median_plan(k)
        return self._call(f"median{k}", ops.median_filter, u, k, plan)  # type: ignore[return-value]

    def iterate(
        self,
        state: list[torch.Tensor],
        consts: list[torch.Tensor],
        live: torch.Tensor,
        all_live: bool,
        eps: torch.Tensor,
        coefs: tuple[float, ...],
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if len(state) == 9:
            out = self._call(
                "iter_gamma", ops.masked_iteration_gamma, *state, *consts, live, eps, *coefs
            )
        else:
            out = self._call("iter", ops.masked_iteration, *state, *consts, live, eps, *coefs)
        *new, live = out  # type: ignore[misc]
        return list(new), live


class FusedCpuPath:
    """The fused CPU kernels (:mod:`.cpu`, numba): the whole batch in one call, parallel
    over pairs on :attr:`threads` threads (all cores when ``None``). A compilation
    failure at the first call raises :class:`KernelUnavailable`."""

    name = "fused"
    cpu_max_batch: int | None = None

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._checked = False

    def unavailable(self, device: torch.device, params: TVL1Params) -> str | None:
        if device.type != "cpu":
            return f"the fused kernels run on the CPU, not on {device.type}"
        try:
            from tristream.models.tvl1 import cpu
        except ImportError as exc:
            return f"numba is not installed ({exc}; pip install 'tristream[pipeline]')"
        return cpu.unavailable(params)

    def solve(
        self,
        i0: torch.Tensor,
        i1: torch.Tensor,
        initial_flow: torch.Tensor | None,
        params: TVL1Params,
        stats: TVL1Stats,
        sync_every: int | None,
    ) -> torch.Tensor:
        from tristream.models.tvl1 import cpu

        stats.batches += 1
        arrays = isinstance(i0, np.ndarray)  # numpy in, numpy out (TVL1Solver.solve_arrays)
        a, b, init = (_numpy(t) for t in (i0, i1, initial_flow))
        try:
            flow = cpu.solve(a, b, params, init, threads=self.threads)
        except (ValueError, MemoryError):
            raise
        except Exception as exc:
            if self._checked:
                raise
            raise KernelUnavailable(
                f"the fused CPU kernels failed: {type(exc).__name__}: {exc}".splitlines()[0]
            ) from exc
        self._checked = True
        return flow if arrays else torch.from_numpy(flow)


def _numpy(t: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
    """float32 numpy view (or copy) of a CPU tensor or array; no torch op runs."""
    if t is None or isinstance(t, np.ndarray):
        return t
    return t.detach().numpy()
