"""Heatmap decoders, crop geometry and the top-down estimator on synthetic heatmaps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from tristream.models.pose_resnet import PoseModel
from tristream.shards.coco import FLIP_PAIRS
from tristream.transforms.pose import (
    PoseEstimator,
    box_to_center_scale,
    crop_persons,
    decode_heatmaps,
    flip_back,
    get_affine_transform,
    heatmap_to_frame,
    transform_points,
)

HM_H, HM_W, SIGMA = 64, 48, 2.0  # 256x192 input, stride 4, the usual target sigma


def gaussian_maps(points: np.ndarray, h: int = HM_H, w: int = HM_W, sigma: float = SIGMA):
    """float32 ``[N, 1, h, w]`` maps, peak 1 at sub-pixel (x, y) ``points [N, 2]``."""
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (xx[None] - points[:, 0, None, None]) ** 2 + (yy[None] - points[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def inner_points():
    rng = np.random.default_rng(0)
    n = 400
    return np.stack([rng.uniform(8, HM_W - 9, n), rng.uniform(8, HM_H - 9, n)], 1)


def _errors(points, maps, method, **kw):
    coords, scores = decode_heatmaps(maps, method, **kw)
    assert coords.shape == (len(points), 1, 2) and coords.dtype == np.float32
    assert scores.shape == (len(points), 1)
    return np.linalg.norm(coords[:, 0] - points, axis=1)


def test_decoder_errors_on_subpixel_gaussians(inner_points):
    """Mean error of each decoder in heatmap pixels (printed; run with -s to see it).

    Measured here (400 sigma-2 Gaussians, peak 1, 64x48): plain argmax 0.381, argmax +
    quarter shift 0.181, soft-argmax (beta 16) 0.024, dark 0.0000; with N(0, 0.02) noise:
    argmax 0.21, soft-argmax 0.08, dark 0.020. The bounds leave margin.
    """
    maps = gaussian_maps(inner_points)
    rng = np.random.default_rng(1)
    noisy = maps + rng.normal(0, 0.02, maps.shape).astype(np.float32)
    flat = maps.reshape(len(maps), -1).argmax(1)
    plain = np.linalg.norm(np.stack([flat % HM_W, flat // HM_W], 1) - inner_points, axis=1)
    table = {"argmax (no shift)": (plain, None)}
    for method in ("argmax", "soft-argmax", "dark"):
        table[method] = (_errors(inner_points, maps, method), _errors(inner_points, noisy, method))
    print("\n| decoder | mean err px | max err px | mean err px, noise 0.02 |")
    for name, (clean, noise) in table.items():
        noise_s = f"{noise.mean():.4f}" if noise is not None else "-"
        print(f"| {name} | {clean.mean():.4f} | {clean.max():.4f} | {noise_s} |")
    assert table["argmax"][0].mean() < 0.25 < plain.mean()
    assert table["argmax"][0].max() <= 0.25 * np.sqrt(2) + 1e-4  # 1/4 px per axis at most
    assert table["dark"][0].mean() < 0.01
    assert table["dark"][1].mean() < 0.05
    assert table["soft-argmax"][0].mean() < 0.05
    assert table["soft-argmax"][1].mean() < 0.15


def test_soft_argmax_normalisation_makes_beta_scale_free(inner_points):
    maps = gaussian_maps(inner_points[:50])
    e1 = _errors(inner_points[:50], maps, "soft-argmax")
    e2 = _errors(inner_points[:50], 0.3 * maps, "soft-argmax")
    assert np.allclose(e1, e2, atol=1e-4)
    raw = _errors(inner_points[:50], 0.3 * maps, "soft-argmax", normalize=False)
    assert raw.mean() > 10 * e1.mean()  # beta 16 on a 0.3 peak: background dominates


def test_quarter_shift_follows_the_reference_rule():
    hm = np.zeros((1, 2, 10, 10), np.float32)
    hm[0, 0, 5, 4] = 1.0  # max at x=4, y=5; right and lower neighbours higher
    hm[0, 0, 5, 5] = 0.5
    hm[0, 0, 6, 4] = 0.4
    hm[0, 0, 4, 4] = 0.1
    hm[0, 1, 5, 1] = 1.0  # x == 1: no shift (reference needs 1 < x < w - 1)
    hm[0, 1, 5, 2] = 0.5
    coords, scores = decode_heatmaps(hm, "argmax")
    assert coords[0, 0].tolist() == [4.25, 5.25]
    assert coords[0, 1].tolist() == [1.0, 5.0]
    assert scores[0].tolist() == [1.0, 1.0]


def test_torch_input_stays_torch_and_bad_arguments_fail(inner_points):
    maps = torch.from_numpy(gaussian_maps(inner_points[:4]))
    coords, scores = decode_heatmaps(maps, "dark")
    assert isinstance(coords, torch.Tensor) and coords.shape == (4, 1, 2)
    ref, _ = decode_heatmaps(maps.numpy(), "dark")
    assert np.allclose(coords.numpy(), ref)
    with pytest.raises(ValueError, match="unknown heatmap decoder"):
        decode_heatmaps(maps, "median")
    with pytest.raises(ValueError, match=r"\[N, K, h, w\]"):
        decode_heatmaps(maps[0], "argmax")
    with pytest.raises(ValueError, match="odd"):
        decode_heatmaps(maps, "dark", blur_kernel=10)


def test_dark_stays_put_at_the_border_and_on_flat_maps():
    hm = np.zeros((1, 2, 16, 12), np.float32)
    hm[0, 0, 0, 5] = 1.0  # on the top row: no Taylor step possible
    coords, scores = decode_heatmaps(hm, "dark")
    assert coords[0, 0].tolist() == [5.0, 0.0]
    assert scores[0, 1] == 0.0 and np.isfinite(coords).all()


# ------------------------------------------------------------------------------------------
# geometry


def test_box_to_center_scale_fixes_the_aspect_ratio_and_enlarges():
    boxes = np.array([[10, 20, 110, 220], [0, 0, 300, 100], [50, 50, 125, 150]], float)
    centers, scales = box_to_center_scale(boxes, 192 / 256)
    assert np.allclose(centers, [[60, 120], [150, 50], [87.5, 100]])
    assert np.allclose(scales[:, 0] / scales[:, 1], 0.75)
    assert np.allclose(scales, 1.25 * np.array([[150, 200], [300, 400], [75, 100]]))


def test_affine_transform_maps_the_box_onto_the_crop():
    center, scale, size = (300.0, 140.0), (120.0, 160.0), (256, 192)
    m = get_affine_transform(center, scale, size)
    inv = get_affine_transform(center, scale, size, inv=True)
    pts = np.array([[[300.0, 140.0], [240.0, 60.0], [360.0, 220.0]]])
    out = transform_points(pts, m[None])
    assert np.allclose(out, [[[96, 128], [0, 0], [192, 256]]], atol=1e-4)
    assert np.allclose(transform_points(out, inv[None]), pts, atol=1e-4)
    rot = get_affine_transform(center, scale, size, rot=90)
    # rot=90 (reference convention): frame direction (sin r, -cos r) = +x is crop "up"
    assert np.allclose(transform_points(np.array([[[360.0, 140.0]]]), rot[None]), [[[96, 32]]])


BOXES = np.array(
    [
        [100, 40, 180, 250],  # tall
        [20, 100, 300, 180],  # wide
        [400, 10, 520, 130],  # square
        [-30, 150, 60, 290],  # partly outside the frame
    ],
    float,
)


def test_crop_pixels_agree_with_the_transform():
    """A blob drawn at frame point p shows up in the crop at trans @ p."""
    frame = np.zeros((256, 602, 3), np.uint8)
    rng = np.random.default_rng(2)
    for box in BOXES:
        x1, y1, x2, y2 = box
        p = np.array([rng.uniform(max(x1, 5) + 5, x2 - 10), rng.uniform(y1 + 10, y2 - 10)])
        frame[:] = 0
        yy, xx = np.mgrid[0:256, 0:602]
        blob = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 6.0**2))
        frame[..., 1] = np.round(255 * blob).astype(np.uint8)
        crops = crop_persons(frame, box[None], (256, 192))
        assert crops.images.shape == (1, 256, 192, 3) and crops.images.dtype == np.uint8
        img = crops.images[0, ..., 1].astype(np.float64)
        img[img < 0.2 * img.max()] = 0
        cy, cx = np.argwhere(img > 0).T
        w = img[cy, cx]
        centroid = np.array([(cx * w).sum() / w.sum(), (cy * w).sum() / w.sum()])
        expected = transform_points(p[None, None], crops.trans)[0, 0]
        zoom = 192 / crops.scales[0, 0]  # crop px per frame px
        assert np.linalg.norm(centroid - expected) < 0.1 * max(zoom, 1.0)


@pytest.mark.parametrize("method,bound", [("dark", 0.02), ("soft-argmax", 0.06), ("argmax", 0.36)])
def test_frame_point_survives_crop_heatmap_decode_and_back(method, bound):
    """Frame point -> input (affine) -> heatmap (/4) -> Gaussian -> decode -> frame."""
    rng = np.random.default_rng(3)
    frame = np.zeros((256, 602, 3), np.uint8)
    crops = crop_persons(frame, BOXES, (256, 192))
    for i, box in enumerate(BOXES):
        x1, y1, x2, y2 = box
        pts = np.stack([rng.uniform(x1, x2, 20), rng.uniform(y1, y2, 20)], 1)
        hm_pts = transform_points(pts[None], crops.trans[i : i + 1])[0] / 4.0
        maps = gaussian_maps(hm_pts)[:, 0][None]  # [1, 20, 64, 48]: 20 "joints"
        coords, _ = decode_heatmaps(maps, method)
        back = heatmap_to_frame(coords, crops.inv_trans[i : i + 1], 4)[0]
        frame_px_per_hm_px = 4 * crops.scales[i, 0] / 192
        err = np.linalg.norm(back - pts, axis=1) / frame_px_per_hm_px
        assert err.mean() < bound, (box, err)


def test_flip_back_mirrors_swaps_and_shifts():
    rng = np.random.default_rng(4)
    hm = torch.from_numpy(rng.random((2, 17, 8, 6)).astype(np.float32))
    perm = list(range(17))
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    flipped = hm.flip(-1)[:, perm]  # what a perfect model would see on the mirrored crop
    assert torch.equal(flip_back(flipped, shift=False), hm)
    shifted = flip_back(flipped)
    assert torch.equal(shifted[..., 1:], hm[..., :-1])
    assert torch.equal(shifted[..., 0], hm[..., 0])


# ------------------------------------------------------------------------------------------
# estimator


class DotModel(nn.Module):
    """A stand-in pose network whose heatmaps follow bright dots in the crop.

    Joint 5 (left shoulder) marks the centroid of the bright pixels in the left half of
    the crop, joint 6 (right shoulder) those in the right half, every other joint the
    centroid of all of them; each as a sigma-2 Gaussian with peak 0.9 on the stride-4
    heatmap. The rule is mirror-symmetric, so a flip test must swap joints 5 and 6 to
    give back the same keypoints.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        v = (x.mean(1) > 1.0).float()  # normalised brightness
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        left = (xs < w / 2).float()

        def centroid(mask):
            m = v * mask
            s = m.sum((1, 2)).clamp_min(1e-6)
            return (m * xs).sum((1, 2)) / s, (m * ys).sum((1, 2)) / s

        pts = [centroid(torch.ones_like(left)), centroid(left), centroid(1 - left)]
        hh, ww = h // 4, w // 4
        gy, gx = torch.meshgrid(torch.arange(hh), torch.arange(ww), indexing="ij")
        maps = []
        for k in range(17):
            cx, cy = pts[1] if k == 5 else pts[2] if k == 6 else pts[0]
            cx, cy = cx / 4, cy / 4
            d2 = (gx - cx[:, None, None]) ** 2 + (gy - cy[:, None, None]) ** 2
            maps.append(0.9 * torch.exp(-d2 / (2 * SIGMA**2)))
        return torch.stack(maps, 1)


def _dot_frames():
    """Two frames with two white dots per person box; returns frames, boxes, dot positions."""
    frames = np.zeros((2, 256, 602, 3), np.uint8)
    # tall + wide, square + partly outside; no crop reaches another box's dots
    boxes = [
        np.array([[30, 20, 90, 240, 0.9], [300, 150, 560, 230, 0.8]]),
        np.array([[400, 10, 520, 130], [-20, 120, 70, 300]], float),
    ]
    dots = []
    for f, bx in zip(frames, boxes):
        per = []
        for x1, y1, x2, y2 in bx[:, :4]:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            left = (cx - 0.2 * (x2 - x1), cy - 0.1 * (y2 - y1))
            right = (cx + 0.25 * (x2 - x1), cy + 0.05 * (y2 - y1))
            for p in (left, right):
                cv2.circle(f, (round(p[0] * 16), round(p[1] * 16)), 3 * 16, (255,) * 3, -1,
                           lineType=cv2.LINE_AA, shift=4)  # fmt: skip
            per.append((left, right))
        dots.append(np.array(per))
    return frames, boxes, dots


@pytest.mark.parametrize("flip_test", [False, True])
@pytest.mark.parametrize("decoder", ["dark", "argmax"])
def test_estimator_returns_frame_keypoints_per_box(flip_test, decoder):
    frames, boxes, dots = _dot_frames()
    model = PoseModel.from_module(DotModel(), device="cpu", num_joints=17)
    est = PoseEstimator(model, decoder=decoder, flip_test=flip_test, batch_size=2)
    out = est(frames, boxes)
    assert [o.shape for o in out] == [(2, 17, 3), (2, 17, 3)]
    assert all(o.dtype == np.float32 for o in out)
    # frame px (one heatmap px is 1.6-6.8 frame px here). Measured max errors: dark 0.28,
    # dark + flip 1.02 (the reference's 1-px shift leaves 1/4 heatmap px, halved by the
    # average), argmax 1.08, argmax + flip 1.23.
    tol = {("dark", False): 0.6, ("dark", True): 1.5}.get((decoder, flip_test), 2.0)
    for o, d in zip(out, dots):
        assert ((o[:, :, 2] > 0.8) & (o[:, :, 2] <= 0.9)).all()  # peak 0.9 between pixels
        assert np.abs(o[:, 5, :2] - d[:, 0]).max() < tol
        assert np.abs(o[:, 6, :2] - d[:, 1]).max() < tol
        # the other joints: the centroid of all bright pixels, weighted by each dot's pixel count
        assert np.abs(o[:, 0, :2] - d.mean(1)).max() < 4.0


def test_estimator_handles_frames_without_boxes_and_checks_arguments():
    model = PoseModel.from_module(DotModel(), device="cpu", num_joints=17)
    est = PoseEstimator(model, batch_size=1)
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    out = est(frames, [np.zeros((0, 5)), np.zeros((0, 4))])
    assert [o.shape for o in out] == [(0, 17, 3), (0, 17, 3)]
    with pytest.raises(ValueError, match="2 frames but 1"):
        est(frames, [np.zeros((0, 4))])
    with pytest.raises(ValueError, match="unknown heatmap decoder"):
        PoseEstimator(model, decoder="mean")
