"""The fused CPU kernels (``kernel="fused"``, numba): OpenCV's steps, OpenCV's flow, and the
same flow whatever the batch, thread count or order.

Oracles: OpenCV itself (``medianBlur``, ``resize``, ``remap``, ``DualTVL1``, and DualTVL1
with Intel IPP switched off as the measure of how far OpenCV moves by itself), numpy
formulas written here, and numpy's sequential float32 ``cumsum``. Frames are small (64x96)
so the file runs in seconds once the kernels are compiled (numba's on-disk cache).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tristream.models.tvl1 import TVL1Params, TVL1Stats, cpu, cpu_median, tvl1_flow

DATA = Path(os.environ.get("TRISTREAM_DATA", Path(__file__).resolve().parents[2] / "shared/data"))

#: (video, first frame) of the real consecutive pairs checked against OpenCV: large
#: motion (bikes 70: a passing car), a still scene (bikes 150), a talking head.
PAIRS = [
    ("bikes.mp4", 30),
    ("bikes.mp4", 70),
    ("bikes.mp4", 150),
    ("carphone_pristine.mp4", 30),
    ("carphone_pristine.mp4", 80),
]


def _frames(name: str, start: int, count: int, size=(64, 96)) -> list[np.ndarray]:
    path = DATA / "videos" / name
    if not path.exists():
        raise FileNotFoundError(f"test video {path} not found (set TRISTREAM_DATA)")
    cap = cv2.VideoCapture(str(path))
    out, index = [], 0
    while len(out) < count:
        ok, frame = cap.read()
        assert ok, f"could not decode {count} frames from {path}"
        if index >= start:
            small = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            out.append(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        index += 1
    cap.release()
    return out


@pytest.fixture(scope="module")
def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    return [tuple(_frames(name, start, 2)) for name, start in PAIRS]  # type: ignore[misc]


def _epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def _fused(i0: np.ndarray, i1: np.ndarray, threads: int | None = 2, **params) -> np.ndarray:
    return cpu.solve(i0, i1, TVL1Params(**params), threads=threads)


# ------------------------------------------------------------------------------------------
# OpenCV's steps


def test_median_is_opencvs_exactly() -> None:
    rng = np.random.default_rng(0)
    for u in (
        rng.normal(0, 3, (37, 53)).astype(np.float32),
        rng.integers(0, 3, (20, 30)).astype(np.float32),  # ties
    ):
        pad = np.zeros((u.shape[0] + 8) * (u.shape[1] + 8), np.float32)
        for k in (3, 5, 7):
            got = u.copy()
            cpu_median.median(got, pad, k)
            assert np.array_equal(got, cv2.medianBlur(u, k) if k < 7 else _median_numpy(u, k))


def _median_numpy(u: np.ndarray, k: int) -> np.ndarray:
    r = k // 2
    p = np.pad(u, r, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(p, (k, k))
    return np.median(windows.reshape(*u.shape, k * k), axis=-1).astype(np.float32)


def test_generated_median_block_is_current() -> None:
    text = Path(cpu_median.__file__).read_text()
    block = text.split("# BEGIN GENERATED median 5\n")[1].split("# END GENERATED")[0]
    lines = [line.strip() for line in block.splitlines()][:-1]
    assert lines == cpu_median.median_network_source()


def test_pyramid_gradient_and_warp_are_opencvs() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (37, 53)).astype(np.float32)  # an 8-bit frame, as the solver gets
    h, w = round(37 * 0.8), round(53 * 0.8)
    down = np.zeros((h, w), np.float32)
    cpu._resize(img, down, np.zeros((37, w), np.float32), 1 / 0.8, 1 / 0.8)
    ref = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(down, ref)  # the first pyramid level, bit for bit
    up = np.zeros((37, 53), np.float32)
    cpu._resize(down, up, np.zeros((h, 53), np.float32), h / 37, w / 53)
    cv2.ipp.setUseIPP(False)  # IPP's float upscaling rounds its own way (3e-5 relative)
    try:
        ref = cv2.resize(down, (53, 37), interpolation=cv2.INTER_LINEAR)
    finally:
        cv2.ipp.setUseIPP(True)
    np.testing.assert_allclose(up, ref, rtol=0, atol=1e-4)
    # Centred differences, half the one-sided difference at the borders (OpenCV's).
    dx, dy = np.zeros_like(img), np.zeros_like(img)
    cpu._centered_gradient(img, dx, dy)
    p = np.pad(img, 1, mode="edge")
    assert np.array_equal(dx, 0.5 * (p[1:-1, 2:] - p[1:-1, :-2]))
    assert np.array_equal(dy, 0.5 * (p[2:, 1:-1] - p[:-2, 1:-1]))
    # The warp of I1 and its gradients: remap INTER_CUBIC with a zero border.
    u1 = rng.uniform(-6, 6, img.shape).astype(np.float32)
    u2 = rng.uniform(-6, 6, img.shape).astype(np.float32)
    i0 = rng.integers(0, 256, img.shape).astype(np.float32)
    wx, wy, rho = (np.zeros_like(img) for _ in range(3))
    for y in range(img.shape[0]):
        cpu._warp_row(y, i0, img, dx, dy, u1, u2, wx[y], wy[y], rho[y])
    mx = np.arange(53, dtype=np.float32)[None] + u1
    my = np.arange(37, dtype=np.float32)[:, None] + u2
    ref = [cv2.remap(a, mx, my, cv2.INTER_CUBIC) for a in (img, dx, dy)]
    np.testing.assert_allclose(wx, ref[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(wy, ref[2], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rho, ref[0] - ref[1] * u1 - ref[2] * u2 - i0, rtol=0, atol=2e-3)
    assert (ref[0] == 0).sum() > 20  # taps outside the frame were exercised


def test_stopping_rule_sums_like_opencv() -> None:
    """OpenCV sums the squared updates into a float32, pixel by pixel: 1 + 100000 * 1e-8 is 1
    there (each 1e-8 is below half an ulp of 1), 1.001 exactly. The decision follows
    OpenCV's sum, also where a float64 sum would decide otherwise."""
    err = np.full(100_001, 1e-8, np.float32)
    err[0] = 1.0
    err = err.reshape(1, -1)
    opencv = np.cumsum(err.ravel(), dtype=np.float32)[-1]  # numpy's sequential float32 sum
    assert opencv == np.float32(1.0)
    assert not cpu._above(err, np.float32(1.0005))  # float64 would say 1.001 > 1.0005
    assert not cpu._above(err, np.float32(1.0))
    assert cpu._above(err, np.float32(0.9999))
    rng = np.random.default_rng(2)
    for _ in range(20):  # away from the threshold the fast sum decides; same answers
        e = rng.random((60, 70)).astype(np.float32) ** 4
        total = np.cumsum(e.ravel(), dtype=np.float32)[-1]
        for eps in (total * np.float32(0.999), total, total * np.float32(1.001)):
            assert cpu._above(e, np.float32(eps)) == bool(total > np.float32(eps))


# ------------------------------------------------------------------------------------------
# OpenCV's flow


def test_flow_is_as_close_to_opencv_as_opencv_is_to_itself(pairs) -> None:
    """On real pairs the fused flow's distance from OpenCV is OpenCV's own distance from
    itself when its float resize runs without Intel IPP (as on builds without it):
    measured 0.0167 vs 0.0163 px mean EPE here, every pair >= 98.9% within 0.5 px."""
    tv = cv2.optflow.DualTVL1OpticalFlow_create()
    got = _fused(np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs]))
    ours, floor = [], []
    for (i0, i1), g in zip(pairs, got):
        ref = tv.calc(i0, i1, None)
        cv2.ipp.setUseIPP(False)
        try:
            other = tv.calc(i0, i1, None)
        finally:
            cv2.ipp.setUseIPP(True)
        e = _epe(g, ref)
        assert e.mean() < 0.05 and np.mean(e < 0.5) >= 0.985, (e.mean(), np.mean(e < 0.5))
        ours.append(e.mean())
        floor.append(_epe(other, ref).mean())
    assert np.mean(ours) <= 1.3 * np.mean(floor) + 0.002, (ours, floor)
    assert max(np.linalg.norm(tv.calc(a, b, None), axis=-1).mean() for a, b in pairs) > 1.0


def test_gamma_falls_back_to_eager_with_the_reason() -> None:
    i0, i1 = _frames("bikes.mp4", 30, 2, (24, 32))
    stats = TVL1Stats()
    t0, t1 = (torch.from_numpy(f).float()[None] for f in (i0, i1))
    tvl1_flow(t0, t1, TVL1Params(gamma=0.5, nscales=1, warps=1), kernel="fused", stats=stats)
    assert stats.kernel == "eager" and "gamma" in stats.fallback_reason
    with pytest.raises(ValueError, match="gamma"):
        _fused(i0[None], i1[None], gamma=0.5)


# ------------------------------------------------------------------------------------------
# the same flow whatever the batch


def test_flow_is_identical_across_batches_threads_and_orders(pairs) -> None:
    """Pairs in parallel (a batch), one pair with its rows split over threads, one thread:
    bit-identical flows, whatever the order of the batch."""
    i0 = np.stack([a for a, _ in pairs])
    i1 = np.stack([b for _, b in pairs])
    batch = _fused(i0, i1, threads=2)
    assert np.array_equal(batch, _fused(i0, i1, threads=1))
    assert np.array_equal(batch[::-1], _fused(i0[::-1], i1[::-1], threads=2))
    for k in range(len(pairs)):
        alone = _fused(i0[k : k + 1], i1[k : k + 1], threads=2)  # row-parallel
        assert np.array_equal(alone[0], batch[k])
    uint8 = _fused(i0.astype(np.uint8), i1.astype(np.uint8))
    assert np.array_equal(uint8, batch)


def test_initial_flow_is_used_per_pair(pairs) -> None:
    i0 = np.stack([a for a, _ in pairs[:2]])
    i1 = np.stack([b for _, b in pairs[:2]])
    init = np.zeros((*i0.shape, 2), np.float32)
    init[1, ..., 0] = 3.0
    params = dict(use_initial_flow=True, nscales=2, warps=2)
    both = cpu.solve(i0, i1, TVL1Params(**params), init, threads=2)
    alone = cpu.solve(i0[1:], i1[1:], TVL1Params(**params), init[1:], threads=1)
    assert np.array_equal(both[1], alone[0])
    zero = cpu.solve(i0[1:], i1[1:], TVL1Params(**params), init[:1], threads=1)
    assert np.abs(zero[0] - alone[0]).max() > 0.1


def test_compile_cache_is_a_user_folder(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cpu.cache_dir() == tmp_path / "tristream" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "own"))
    assert cpu.cache_dir() == tmp_path / "own"
    assert "site-packages" not in str(cpu.cache_dir())
