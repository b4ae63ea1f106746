"""What every TV-L1 kernel path shares: the interface, the stats, the unavailable error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from tristream.models.tvl1.params import TVL1Params

__all__ = ["KernelPath", "KernelUnavailable", "TVL1Stats"]


class KernelUnavailable(RuntimeError):
    """A kernel path cannot run here (compilation failed, Triton or numba missing, ...)."""


@dataclass
class TVL1Stats:
    """What the solver did; pass one in to read it back (counters add up over calls).

    Attributes:
        kernel_requested: the ``kernel`` argument (``auto`` or a name in :data:`KERNELS`).
        kernel: the path that actually ran (a name in :data:`KERNELS`).
        fallback_reason: why ``kernel`` is not the requested path, or ``None``.
        pairs: frame pairs solved.
        batches: batches solved (chunks of at most ``max_batch`` pairs, OOM halves included).
        outer_runs: runs of inner iterations (each after a median filtering) over all
            levels and warpings, counted once per batch.
        inner_iterations: batched inner iterations (one call of the fused iteration each; for
            the fused CPU path, per pair).
        host_syncs: times the host read the device-side convergence mask: at most one per
            outer run with ``sync_every >= inner_iterations`` (the default off the CPU).
        oom_splits: batches split in halves after running out of device memory.
    """

    kernel_requested: str = ""
    kernel: str = ""
    fallback_reason: str | None = None
    pairs: int = 0
    batches: int = 0
    outer_runs: int = 0
    inner_iterations: int = 0
    host_syncs: int = 0
    oom_splits: int = 0


class KernelPath(Protocol):
    """One way of running the solver (a name in ``KERNELS``); see :mod:`.paths`.

    ``unavailable`` says why the path cannot solve on ``device`` with ``params`` (``None``
    if it can); ``solve`` solves one batch: ``i0``, ``i1`` float32 [B, H, W] (0..255) on
    ``device``, ``initial_flow`` [B, H, W, 2] or ``None``; returns float32 [B, H, W, 2]
    pixels (x, y) on the same device. ``solve`` raises :class:`KernelUnavailable` when
    the path turns out not to work (a compiler failing at its first call).
    """

    name: str

    def unavailable(self, device: torch.device, params: TVL1Params) -> str | None: ...

    def solve(
        self,
        i0: torch.Tensor,
        i1: torch.Tensor,
        initial_flow: torch.Tensor | None,
        params: TVL1Params,
        stats: TVL1Stats,
        sync_every: int | None,
    ) -> torch.Tensor: ...
