"""The per-process flow feeder: the pairs of all threads in shared solver calls, each
segment's flow handed back in order, a failure kept to its own segment."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tristream.models.tvl1 import FlowFeeder, TVL1Params, TVL1Solver
from tristream.transforms.decode import decode_video
from tristream.transforms.flow import to_gray

PARAMS = TVL1Params(nscales=2, warps=2, outer_iterations=3)


@pytest.fixture(scope="module")
def segments(bikes, carphone) -> list[np.ndarray]:
    """Four real grey segments of 4-6 frames at short side 32 (two frame sizes)."""
    a = to_gray(decode_video(bikes, short_side=32, start=2.0, end=2.24))
    b = to_gray(decode_video(bikes, short_side=32, start=6.0, end=6.16))
    c = to_gray(decode_video(carphone, short_side=32, start=1.0, end=1.2))
    d = to_gray(decode_video(carphone, short_side=32, start=3.0, end=3.16))
    assert a.shape[1:] == b.shape[1:] != c.shape[1:] == d.shape[1:]
    return [a, b, c, d]


def _alone(gray: np.ndarray) -> np.ndarray:
    """The segment's flow from its own solver call (no feeder)."""
    t = torch.from_numpy(gray).float()
    return TVL1Solver(PARAMS)(t[:-1], t[1:]).numpy()  # the tensor entry point


def test_threads_share_batches_and_get_their_own_flow_back(segments) -> None:
    solver = TVL1Solver(PARAMS)
    sizes: list[int] = []
    solver.before_batch = sizes.append  # the solver's test hook: each call's pair count
    feeder = FlowFeeder(solver, "cpu", batch_size=6)
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(segments))

    def worker(k: int) -> None:
        start.wait()
        results[k] = feeder.flow(segments[k]).flow

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(segments))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    feeder.close()
    for k, gray in enumerate(segments):
        assert results[k].shape == (len(gray) - 1, *gray.shape[1:], 2)
        assert np.array_equal(results[k], _alone(gray)), k
    pairs = sum(len(g) - 1 for g in segments)
    assert sum(sizes) == pairs and max(sizes) <= 6
    # Batches mix segments of one frame size: fewer calls than one per segment and size.
    assert feeder.batches == len(sizes) < pairs


def test_batch_size_is_the_solvers_batch(segments) -> None:
    """``--flow-batch-size`` means pairs per solver call: 5 pairs at 2 a call are 2 + 2 + 1."""
    solver = TVL1Solver(PARAMS)
    sizes: list[int] = []
    solver.before_batch = sizes.append
    gray = segments[0]
    assert len(gray) == 6
    got = FlowFeeder(solver, "cpu", batch_size=2).flow(gray)
    assert sizes == [2, 2, 1]
    assert np.array_equal(got.flow, _alone(gray))
    assert got.kernels == {"fused": 5} and got.fallbacks == []
    with pytest.raises(ValueError, match="batch_size"):
        FlowFeeder(solver, "cpu", batch_size=-1)


class _FailsOnWhiteFrames(TVL1Solver):
    """A solver that fails every call whose frames include an all-white frame."""

    def solve_arrays(self, i0, i1, device="cpu", stats=None):
        if (i0.reshape(len(i0), -1) == 255).all(axis=1).any():
            raise RuntimeError("cannot solve a white frame (injected)")
        return super().solve_arrays(i0, i1, device, stats)


def test_a_failing_segment_fails_alone(segments) -> None:
    good, bad = segments[0], segments[1].copy()
    bad[2] = 255
    feeder = FlowFeeder(_FailsOnWhiteFrames(PARAMS), "cpu", batch_size=16)
    with feeder._cond:  # queue both before the feeder takes any: one shared batch first
        futures = [feeder.submit(good), feeder.submit(bad)]
    assert np.array_equal(futures[0].result().flow, _alone(good))
    with pytest.raises(RuntimeError, match="white frame"):
        futures[1].result()
    # The feeder goes on: a later segment is solved.
    assert np.array_equal(feeder.flow(segments[2]).flow, _alone(segments[2]))
    feeder.close()


def test_short_segments_and_a_closed_feeder(segments) -> None:
    feeder = FlowFeeder(TVL1Solver(PARAMS), "cpu")
    one = feeder.flow(segments[0][:1])
    assert one.flow.shape == (0, *segments[0].shape[1:], 2)
    feeder.close()
    with pytest.raises(RuntimeError, match="closed"):
        feeder.flow(segments[0])
