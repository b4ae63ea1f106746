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
    """float32 ``[N, 1, h, w]`` maps, peak 1 at sub-pixel (x, y) ``points [N, 2]``.

    Convention: pixel centres at integers, so map pixel ``[j, i]`` holds the Gaussian's
    value at (x, y) = (i, j); a point at (4.5, 7.0) lies half-way between two columns.
    """
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


def _correlated_gaussian(h, w, x, y, sx, sy, rho):
    """An anisotropic, tilted 2D Gaussian (peak 1) centred at sub-pixel (x, y); pixel
    centres at integers. Its log is an exact quadratic in (x, y)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = (xx - x) / sx, (yy - y) / sy
    return np.exp(-(dx * dx - 2 * rho * dx * dy + dy * dy) / (2 * (1 - rho * rho)))


def test_dark_without_smoothing_is_exact_on_a_gaussian():
    """The log of a Gaussian is quadratic, so the DARK Taylor step (one Newton step on the
    log) lands exactly on its centre, whatever the covariance: the hand-written centres."""
    centres = [(6.3, 8.6), (7.0, 7.49), (5.55, 10.1)]
    maps = np.stack(
        [_correlated_gaussian(17, 15, x, y, 1.7, 2.3, rho) for (x, y), rho in
         zip(centres, (0.4, -0.6, 0.0))]
    )[None].astype(np.float32)  # fmt: skip
    coords, _ = decode_heatmaps(maps, "dark", blur_kernel=1)
    assert np.allclose(coords[0], centres, atol=2e-3)


def _dark_by_the_paper(hm: np.ndarray, kernel: int) -> np.ndarray:
    """DARK (Zhang et al., CVPR 2020, eq. 2-5) on one ``[h, w]`` map, written from the paper.

    Smooth with OpenCV's Gaussian (``kernel`` square, OpenCV's own sigma for that size, as
    the DARK authors' code calls it) on the map padded with zeros, take the log, and from
    the integer maximum m of the raw map make the Taylor step ``mu = m - H^-1 g`` with g and
    H the first and second derivatives of the log by central differences.
    """
    r = kernel // 2
    blurred = cv2.GaussianBlur(np.pad(hm, r), (kernel, kernel), 0)[r:-r, r:-r] if r else hm
    lg = np.log(np.maximum(blurred.astype(np.float64), 1e-10))
    my, mx = np.unravel_index(np.argmax(hm), hm.shape)
    g = np.array([(lg[my, mx + 1] - lg[my, mx - 1]) / 2, (lg[my + 1, mx] - lg[my - 1, mx]) / 2])
    dxx = lg[my, mx + 1] - 2 * lg[my, mx] + lg[my, mx - 1]
    dyy = lg[my + 1, mx] - 2 * lg[my, mx] + lg[my - 1, mx]
    dxy = (lg[my + 1, mx + 1] - lg[my - 1, mx + 1] - lg[my + 1, mx - 1] + lg[my - 1, mx - 1]) / 4
    hessian = np.array([[dxx, dxy], [dxy, dyy]])
    return np.array([mx, my], np.float64) - np.linalg.solve(hessian, g)


@pytest.mark.parametrize("kernel", [11, 13])
def test_dark_matches_the_papers_taylor_step_on_noisy_maps(kernel):
    """Small noisy maps, so the smoothing, its zero border and the Hessian all matter.

    Kernel 11 is DARK's for 64x48 maps. (Below 11 OpenCV's sigma-0 kernels are fixed
    tables rather than sampled Gaussians, e.g. 9: [1, 3.25, 7.5, 12.75, 15, ...] / 64, so
    there tristream's sampled Gaussian differs from ``cv2.GaussianBlur`` by ~3e-3.)"""
    rng = np.random.default_rng(7)
    centres = [(6.3, 8.6), (3.2, 4.7), (9.8, 12.4), (7.5, 2.6)]
    maps = np.stack([_correlated_gaussian(15, 13, x, y, 1.6, 2.1, 0.3) for x, y in centres])
    maps = (maps + rng.normal(0, 0.03, maps.shape)).astype(np.float32)[None]  # [1, 4, 15, 13]
    coords, _ = decode_heatmaps(maps, "dark", blur_kernel=kernel)
    expected = np.stack([_dark_by_the_paper(m, kernel) for m in maps[0]])
    # the step is not clamped here (|step| < 1 px on these maps) and not trivially zero
    steps = expected - np.stack([np.unravel_index(np.argmax(m), m.shape)[::-1] for m in maps[0]])
    assert (np.abs(steps) < 1).all() and (np.abs(steps) > 0.01).any()
    assert np.allclose(coords[0], expected, atol=1e-4)


def test_soft_argmax_by_hand_on_a_tiny_map():
    """One row [0, 1, 0.5] (max 1, beta 2): weights e^0, e^2, e^1 over x = 0, 1, 2."""
    hm = np.array([[[[0.0, 1.0, 0.5]]]], np.float32)
    coords, scores = decode_heatmaps(hm, "soft-argmax", beta=2.0)
    w = np.exp([0.0, 2.0, 1.0])
    assert np.allclose(coords[0, 0], [(w * [0, 1, 2]).sum() / w.sum(), 0.0], atol=1e-6)
    assert scores[0, 0] == 1.0
    coords, _ = decode_heatmaps(2 * hm, "soft-argmax", beta=2.0)  # normalised: same answer
    assert np.allclose(coords[0, 0, 0], (w * [0, 1, 2]).sum() / w.sum(), atol=1e-6)


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
# Hand geometry of each box for a 256x192 (H x W) input, aspect w/h = 0.75 (Simple
# Baselines): centre c = box centre; the box grows along one axis to aspect 0.75, then
# x 1.25; only the width s_w matters. Worked out by hand:
#   tall   80 x 210: w -> 0.75 * 210 = 157.5;  s_w = 1.25 * 157.5 = 196.875
#   wide  280 x  80: h -> 280 / 0.75 (w stays 280); s_w = 1.25 * 280 = 350
#   square 120 x 120: h -> 160 (w stays 120);   s_w = 1.25 * 120 = 150
#   outside 90 x 140: w -> 0.75 * 140 = 105;   s_w = 1.25 * 105 = 131.25
BOX_CENTRES = np.array([[140.0, 145.0], [160.0, 140.0], [460.0, 70.0], [15.0, 220.0]])
BOX_WIDTHS = np.array([196.875, 350.0, 150.0, 131.25])


def frame_to_crop_by_hand(p: np.ndarray, i: int) -> np.ndarray:
    """Frame pixel -> 256x192 crop pixel for BOXES[i]: a zoom of 192 / s_w about the box
    centre, which lands on the crop centre (96, 128) (the reference's W/2, H/2)."""
    return (p - BOX_CENTRES[i]) * (192 / BOX_WIDTHS[i]) + np.array([96.0, 128.0])


def hm_to_frame_by_hand(q: np.ndarray, i: int) -> np.ndarray:
    """Heatmap pixel (64x48, stride 4) -> frame pixel for BOXES[i]: heatmap pixel q stands
    for input pixel 4 q (the reference's training targets, pixel centres at integers),
    then the inverse of :func:`frame_to_crop_by_hand`."""
    return (4 * q - np.array([96.0, 128.0])) * (BOX_WIDTHS[i] / 192) + BOX_CENTRES[i]


def test_crop_pixels_land_where_the_hand_geometry_says():
    """A blob drawn at frame point p shows up in the crop at the hand-computed position."""
    frame = np.zeros((256, 602, 3), np.uint8)
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:256, 0:602]
    for i, box in enumerate(BOXES):
        x1, y1, x2, y2 = box
        p = np.array([rng.uniform(max(x1, 5) + 5, x2 - 10), rng.uniform(y1 + 10, y2 - 10)])
        blob = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 6.0**2))
        frame[:] = 0
        frame[..., 1] = np.round(255 * blob).astype(np.uint8)
        crops = crop_persons(frame, box[None], (256, 192))
        assert crops.images.shape == (1, 256, 192, 3) and crops.images.dtype == np.uint8
        assert np.allclose(crops.centers[0], BOX_CENTRES[i])
        assert np.isclose(crops.scales[0, 0], BOX_WIDTHS[i])
        img = crops.images[0, ..., 1].astype(np.float64)
        img[img < 0.2 * img.max()] = 0
        cy, cx = np.argwhere(img > 0).T
        w = img[cy, cx]
        centroid = np.array([(cx * w).sum() / w.sum(), (cy * w).sum() / w.sum()])
        zoom = 192 / BOX_WIDTHS[i]  # crop px per frame px
        assert np.linalg.norm(centroid - frame_to_crop_by_hand(p, i)) < 0.1 * max(zoom, 1.0)


def test_affine_matrices_match_the_hand_geometry():
    crops = crop_persons(np.zeros((8, 8, 3), np.uint8), BOXES, (256, 192))
    pts = np.array([[0.0, 0.0], [37.5, -12.25], [300.0, 200.0]])
    for i in range(len(BOXES)):
        fwd = transform_points(pts[None], crops.trans[i : i + 1])[0]
        assert np.allclose(fwd, frame_to_crop_by_hand(pts, i), atol=1e-6)
        q = np.array([[0.0, 0.0], [10.3, 20.6], [47.0, 63.0]])
        back = heatmap_to_frame(q[None], crops.inv_trans[i : i + 1], 4)[0]
        assert np.allclose(back, hm_to_frame_by_hand(q, i), atol=1e-6)


class FixedMaps(nn.Module):
    """A stand-in pose network that returns the same hand-built heatmaps for every crop."""

    def __init__(self, maps: np.ndarray):
        super().__init__()
        self.maps = torch.from_numpy(maps)  # [K, 64, 48]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps[None].expand(len(x), -1, -1, -1).clone()


# Sub-pixel joint positions in heatmap pixels (64x48 map; x in [0, 47], y in [0, 63]).
HM_POINTS = np.array(
    [[10.3, 20.6], [24.0, 32.0], [5.75, 8.2], [40.1, 55.9], [17.5, 12.5], [33.33, 44.44]]
)


def test_estimator_keypoints_for_the_identity_crop_are_four_times_the_heatmap_peak():
    """Box [0, 0, 192, 256] with no enlargement is exactly the 192x256 input: frame = crop
    pixels, and heatmap pixel q is frame pixel 4 q. With the usual 1.25 enlargement the
    region is 240 x 320 about (96, 128): frame = 1.25 * 4 q - 0.25 * (96, 128) = 5 q - (24, 32).
    """
    maps = gaussian_maps(HM_POINTS)[:, 0]
    model = PoseModel.from_module(FixedMaps(maps), device="cpu", num_joints=len(HM_POINTS))
    frame = np.zeros((1, 256, 192, 3), np.uint8)
    box = [np.array([[0.0, 0.0, 192.0, 256.0, 0.9]])]
    exact = PoseEstimator(model, decoder="dark", scale_factor=1.0)(frame, box)[0][0]
    assert np.abs(exact[:, :2] - 4 * HM_POINTS).max() < 0.01
    assert np.allclose(exact[:2, :2], [[41.2, 82.4], [96.0, 128.0]], atol=0.01)
    enlarged = PoseEstimator(model, decoder="dark")(frame, box)[0][0]
    assert np.abs(enlarged[:, :2] - (5 * HM_POINTS - [24, 32])).max() < 0.01
    assert np.allclose(enlarged[:2, :2], [[27.5, 71.0], [96.0, 128.0]], atol=0.01)
    # score: the map's value at the nearest pixel centre, exp(-d^2 / (2 sigma^2))
    d2 = ((HM_POINTS - np.round(HM_POINTS)) ** 2).sum(1)
    assert np.allclose(enlarged[:, 2], np.exp(-d2 / (2 * SIGMA**2)), atol=1e-6)
    assert np.isclose(enlarged[0, 2], np.exp(-0.25 / 8), atol=1e-6)  # (10.3, 20.6): d^2 = 0.25


@pytest.mark.parametrize("method,bound", [("dark", 0.01), ("soft-argmax", 0.06), ("argmax", 0.25)])
def test_estimator_keypoints_land_on_the_hand_known_frame_points(method, bound):
    """Hand-built heatmaps (Gaussians at HM_POINTS) for each box -> frame pixels, against
    :func:`hm_to_frame_by_hand`. ``bound``: per-axis error in heatmap pixels (the quarter
    shift leaves at most 1/4 px per axis; dark and soft-argmax measured below 0.002 / 0.03)."""
    maps = gaussian_maps(HM_POINTS)[:, 0]
    model = PoseModel.from_module(FixedMaps(maps), device="cpu", num_joints=len(HM_POINTS))
    est = PoseEstimator(model, decoder=method)
    frame = np.zeros((256, 602, 3), np.uint8)
    for i, box in enumerate(BOXES):
        kps = est(frame[None], [box[None]])[0][0]
        frame_px_per_hm_px = 4 * BOX_WIDTHS[i] / 192
        err = np.abs(kps[:, :2] - hm_to_frame_by_hand(HM_POINTS, i)) / frame_px_per_hm_px
        assert err.max() <= bound + 1e-4, (box, err)


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
