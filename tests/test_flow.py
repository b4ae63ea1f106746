"""TV-L1 flow backends (tvl1, the default, and OpenCV) on real images: known shifts are
recovered, parameters are checked, the backends agree."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from tristream.transforms.flow import BACKENDS, compute_flow, to_gray, tvl1_params


def _real_image(h=64, w=80):
    img = cv2.resize(data.astronaut(), (w * 2, h * 2), interpolation=cv2.INTER_AREA)
    return img[h // 2 : h // 2 + h, w // 2 : w // 2 + w]


def _shifted(img, dx, dy):
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)  # fmt: skip


@pytest.mark.parametrize("backend", ["tvl1", "opencv"])
@pytest.mark.parametrize("dx,dy", [(2.0, -1.0), (-1.5, 2.5)])
def test_known_shift_of_a_real_image_is_recovered(dx, dy, backend):
    img = _real_image()
    frames = np.stack([img, _shifted(img, dx, dy)])
    flow = compute_flow(frames, backend=backend)
    assert flow.shape == (1, 64, 80, 2) and flow.dtype == np.float32
    inner = flow[0, 10:-10, 10:-10]
    assert np.median(inner[..., 0]) == pytest.approx(dx, abs=0.2)
    assert np.median(inner[..., 1]) == pytest.approx(dy, abs=0.2)


def test_gray_and_rgb_inputs_agree_and_short_inputs_are_empty():
    img = _real_image()
    frames = np.stack([img, _shifted(img, 1, 0)])
    assert np.array_equal(compute_flow(frames), compute_flow(to_gray(frames)))
    assert compute_flow(frames[:1]).shape == (0, 64, 80, 2)


@pytest.mark.parametrize("backend", ["tvl1", "opencv"])
def test_parameters_reach_the_backend_and_are_checked(backend):
    img = _real_image()
    frames = np.stack([img, _shifted(img, 3, 0)])
    coarse = compute_flow(
        frames, backend, nscales=1, warps=1, outer_iterations=1, inner_iterations=2
    )
    assert not np.allclose(coarse, compute_flow(frames, backend))
    with pytest.raises(ValueError, match="unknown TV-L1 parameter"):
        tvl1_params(lamda=0.1)
    with pytest.raises(ValueError, match="nscales must be an int"):
        tvl1_params(nscales=5.0)  # 5.0 would fail every video at the flow stage
    with pytest.raises(ValueError, match="tau must be a finite float"):
        tvl1_params(tau=float("nan"))
    assert tvl1_params(tau=1) == tvl1_params(tau=1.0)  # one spelling, one config hash
    with pytest.raises(ValueError, match="unknown flow backend 'farneback'"):
        compute_flow(frames, backend="farneback")
    with pytest.raises(ValueError, match="'torch' is now 'tvl1'"):
        compute_flow(frames, backend="torch")
    assert {"opencv", "tvl1"} <= set(BACKENDS)


def test_tvl1_backend_matches_opencv_on_real_frames_and_falls_back_to_cpu(bikes, caplog):
    from tristream.transforms.decode import decode_video

    frames = decode_video(bikes, short_side=48, start=2.0, end=2.2)  # 5 frames, 4 pairs
    ref = compute_flow(frames, backend="opencv")
    with caplog.at_level("WARNING"):
        got = compute_flow(frames, backend="tvl1", device="cuda", batch_size=3)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.linalg.norm(got - ref, axis=-1).mean() < 0.05
    import torch

    if not torch.cuda.is_available():
        assert "using the CPU" in caplog.text


def test_tvl1_backend_batch_size_sets_the_pairs_per_solver_call(bikes, monkeypatch):
    """``batch_size`` reaches the solver: every solver call is counted with its pairs.

    batch_size 0 (the CLI's default) picks the batch: the GPU's free memory on CUDA, 16
    pairs on the CPU, so the 4 pairs go in one call. Pairs are solved independently, so
    the flow is the same whatever the batching.
    """
    from tristream.models.tvl1.solver import TVL1Solver
    from tristream.transforms.decode import decode_video

    calls: list[int] = []
    solve_arrays = TVL1Solver.solve_arrays

    def counted(self, i0, i1, *args, **kwargs):
        calls.append(len(i0))
        return solve_arrays(self, i0, i1, *args, **kwargs)

    monkeypatch.setattr(TVL1Solver, "solve_arrays", counted)
    frames = decode_video(bikes, short_side=32, start=2.0, end=2.2)  # 5 frames, 4 pairs
    flows, per_call = {}, {}
    for batch_size in (0, 3):
        calls.clear()
        flows[batch_size] = compute_flow(frames, backend="tvl1", device="cpu",
                                         batch_size=batch_size)  # fmt: skip
        per_call[batch_size] = list(calls)
    assert per_call == {0: [4], 3: [3, 1]}
    assert flows[0].shape == (4, 32, 76, 2)
    assert np.array_equal(flows[0], flows[3])
