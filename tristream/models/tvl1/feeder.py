"""One flow feeder per worker process: the frame pairs of all its threads in shared batches.

A Beam worker runs several threads, each on one video segment at a time. Each thread
hands its segment's grey frames to the process's :class:`FlowFeeder` and waits; the
feeder's own thread cuts the pairs of everything queued (all threads, videos and
segments of one frame size) into batches of ``batch_size`` pairs, solves each batch in one
solver call (in parallel over pairs on the CPU, one large batch on a GPU) and hands each
segment its flow, in order. Pairs are independent, so a segment's flow does not depend
on what it was batched with.

A batch that fails is solved again segment by segment, so an error fails only the
segment (video) it belongs to; the others get their flow. On the CPU the default (fused)
path runs here without any torch operation (see ``TVL1Solver.solve_arrays``).
"""

from __future__ import annotations

import collections
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from tristream.models.tvl1.base import TVL1Stats
from tristream.models.tvl1.solver import TVL1Solver, cuda_batch_size

__all__ = ["CPU_BATCH", "FlowFeeder", "FlowResult"]

_log = logging.getLogger(__name__)

#: Pairs per solver call on the CPU when no batch size is given: enough for every core to
#: take pairs as it frees up (pairs differ in cost by up to ~2x) without long waits.
CPU_BATCH = 16


@dataclass
class FlowResult:
    """The flow of one submitted segment and how it was computed.

    Attributes:
        flow: float32 [T - 1, H, W, 2] pixels (x, y) from frame t to t + 1.
        kernels: kernel path -> pairs of this segment it solved.
        fallbacks: why a requested path did not run (one entry per reason).
    """

    flow: np.ndarray
    kernels: dict[str, int] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)


@dataclass
class _Request:
    frames: np.ndarray  # [T, H, W] grey levels
    result: FlowResult
    future: Future
    next_pair: int = 0
    failed: bool = False

    @property
    def pairs(self) -> int:
        return self.frames.shape[0] - 1

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:])  # type: ignore[return-value]


class FlowFeeder:
    """Batches the TV-L1 work of all threads of a process into calls of one solver.

    Args:
        solver: the process's :class:`TVL1Solver` (its kernel path, fallbacks, threads).
        device: torch device of the solver's input (``cpu``, ``cuda``, ``cuda:N``).
        batch_size: pairs per solver call; 0 picks :data:`CPU_BATCH` on the CPU and what
            fills the free memory on CUDA (``cuda_batch_size``).

    Thread-safe: :meth:`flow` may be called from any number of threads. The feeder's
    thread starts at the first call and ends with :meth:`close` (or the process).
    """

    def __init__(self, solver: TVL1Solver, device: str = "cpu", batch_size: int = 0) -> None:
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0 (0: automatic), got {batch_size}")
        self.solver = solver
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.batches = 0  # solver calls made (for tests and metrics)
        self._queue: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def flow(self, gray: np.ndarray) -> FlowResult:
        """TV-L1 flow between consecutive frames of uint8 grey ``gray`` [T, H, W] (T >= 2):
        blocks until the feeder has solved all T - 1 pairs (or raises what failed them)."""
        return self.submit(gray).result()

    def submit(self, gray: np.ndarray) -> Future:
        """Queue a segment; the future gives its :class:`FlowResult`."""
        gray = np.asarray(gray)
        if gray.ndim != 3:
            raise ValueError(f"frames must be grey [T, H, W], got {gray.shape}")
        t, h, w = gray.shape
        future: Future = Future()
        flow = np.empty((max(t - 1, 0), h, w, 2), np.float32)
        if t < 2:
            future.set_result(FlowResult(flow))
            return future
        request = _Request(np.ascontiguousarray(gray), FlowResult(flow), future)
        with self._cond:
            if self._closed:
                raise RuntimeError("the flow feeder is closed")
            self._queue.append(request)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tristream-flow-feeder", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return future

    def close(self) -> None:
        """Stop the feeder thread once the queued work is done."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    # ----------------------------------------------------------------------------------

    def _batch_limit(self, h: int, w: int) -> int:
        if self.batch_size > 0:
            return self.batch_size
        if self.device.type == "cuda":
            return cuda_batch_size(h, w, self.device)
        return CPU_BATCH

    def _take(self) -> list[tuple[_Request, int, int]] | None:
        """The next batch: (request, first pair, end pair) parts of one frame size."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            size = self._queue[0].size
            limit = self._batch_limit(*size)
            parts: list[tuple[_Request, int, int]] = []
            room = limit
            for request in list(self._queue):
                if room == 0:
                    break
                if request.size != size:
                    continue
                start = request.next_pair
                end = min(request.pairs, start + room)
                parts.append((request, start, end))
                room -= end - start
                request.next_pair = end
                if end == request.pairs:
                    self._queue.remove(request)
            return parts

    def _run(self) -> None:
        while True:
            parts = self._take()
            if parts is None:
                return
            try:
                self._solve(parts)
            except BaseException as exc:  # never leave a caller waiting
                for request, _, _ in parts:
                    self._fail(request, exc)
                if not isinstance(exc, Exception):
                    raise

    def _solve(self, parts: list[tuple[_Request, int, int]]) -> None:
        live = [p for p in parts if not p[0].failed]
        if not live:
            return
        try:
            self._solve_together(live)
        except Exception as exc:
            if len(live) == 1:
                self._fail(live[0][0], exc)
            else:
                _log.warning(
                    "TV-L1: a batch of %d segments failed (%s); solving them one by one",
                    len(live), exc,
                )  # fmt: skip
                for part in live:
                    try:
                        self._solve_together([part])
                    except Exception as one:
                        self._fail(part[0], one)
        for request, _, end in live:
            if end == request.pairs and not request.failed and not request.future.done():
                request.future.set_result(request.result)

    def _solve_together(self, parts: list[tuple[_Request, int, int]]) -> None:
        i0 = np.concatenate([r.frames[s:e] for r, s, e in parts])
        i1 = np.concatenate([r.frames[s + 1 : e + 1] for r, s, e in parts])
        stats = TVL1Stats()
        flow = self.solver.solve_arrays(i0, i1, self.device, stats)
        self.batches += 1
        k = 0
        for request, s, e in parts:
            request.result.flow[s:e] = flow[k : k + e - s]
            k += e - s
            kernels = request.result.kernels
            kernels[stats.kernel] = kernels.get(stats.kernel, 0) + (e - s)
            reason = stats.fallback_reason
            if reason and reason not in request.result.fallbacks:
                request.result.fallbacks.append(reason)

    def _fail(self, request: _Request, exc: BaseException) -> None:
        request.failed = True
        with self._cond:
            if request in self._queue:
                self._queue.remove(request)
        if not request.future.done():
            request.future.set_exception(exc)
