"""Top-down pose estimation helpers: person crops, heatmap decoding, a batched estimator.

Geometry follows Simple Baselines (Xiao et al. 2018, microsoft/human-pose-estimation.pytorch):

* a person box ``(x1, y1, x2, y2)`` becomes a centre ``((x1 + x2) / 2, (y1 + y2) / 2)`` and
  a size ``(w, h) = (x2 - x1, y2 - y1)`` enlarged along one axis so that ``w / h`` equals
  the model input's aspect ratio, then multiplied by 1.25. Here the size ("scale") is in
  frame pixels; the reference's ``scale`` is the same divided by ``pixel_std = 200``;
* the crop is ``cv2.warpAffine`` (bilinear, zero border) with the similarity transform that
  ``cv2.getAffineTransform`` computes from three point pairs: the centre goes to the crop's
  centre ``(W/2, H/2)``, the point half a box width above it goes to half a crop width
  above that, and a third point perpendicular to those two;
* heatmap pixel ``p`` stands for input pixel ``p * stride`` (stride 4); input pixels go back
  to frame pixels through the inverse affine transform.

Decoders (:func:`decode_heatmaps`), all returning ``(coords [N, K, 2] in heatmap pixels,
scores [N, K] = the heatmap maximum)``:

* ``"argmax"``: integer maximum, moved by a quarter pixel towards the higher neighbour along
  x and along y (Simple Baselines' post-processing, applied when ``1 < px < w - 1`` and
  ``1 < py < h - 1`` as in the reference);
* ``"soft-argmax"``: the expectation of pixel coordinates under ``softmax(beta * heatmap)``
  over the whole map (Luvizon et al. 2018), by default on each map divided by its maximum;
  ``beta`` sets how peaked the distribution is;
* ``"dark"``: distribution-aware refinement (Zhang et al., CVPR 2020): the heatmap is
  smoothed with a Gaussian (``blur_kernel`` x ``blur_kernel``, zero border), its log
  taken, and one Newton step ``-H^-1 g`` of the second-order Taylor expansion made from
  the integer maximum (central differences). The step is applied only where the Hessian
  is negative definite and is clamped to +-1 px.

Units: frames are uint8 ``[H, W, 3]`` RGB; boxes and keypoints are in frame pixels with
pixel centres at integer coordinates (the convention of the reference code and COCO).
No Beam here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tristream.models.pose_resnet import PoseModel
from tristream.shards.coco import FLIP_PAIRS, NUM_JOINTS
from tristream.transforms.pose_names import DECODERS

__all__ = [
    "DECODERS",
    "PRECISIONS",
    "Crops",
    "PoseEstimator",
    "box_to_center_scale",
    "get_affine_transform",
    "affine_matrices",
    "transform_points",
    "crop_persons",
    "decode_heatmaps",
    "flip_back",
    "heatmap_to_frame",
]

SCALE_FACTOR = 1.25  # box enlargement of Simple Baselines
DEFAULT_BETA = 16.0  # soft-argmax sharpness on max-normalised maps (see decode_heatmaps)
#: ``--pose-precision`` names -> the autocast dtype of a torch pose model (None: float32).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None, "float32": None, "fp16": torch.float16, "float16": torch.float16,
    "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}  # fmt: skip


# ------------------------------------------------------------------------------------------
# geometry


def box_to_center_scale(
    boxes: np.ndarray, aspect_ratio: float, scale_factor: float = SCALE_FACTOR
) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes -> crop centres and sizes with the model's aspect ratio.

    Args:
        boxes: ``[N, 4+]`` (x1, y1, x2, y2, ...) in frame pixels.
        aspect_ratio: crop width / height (192 / 256 for a 256x192 input).
        scale_factor: enlargement of the fitted box (1.25 in Simple Baselines).

    Returns:
        ``centers [N, 2]`` (x, y) and ``scales [N, 2]`` (w, h), float64 frame pixels, with
        ``w / h == aspect_ratio``. Box sides under 1 px count as 1 px.
    """
    boxes = _as_boxes(boxes)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    w, h = x2 - x1, y2 - y1
    centers = np.stack([x1 + 0.5 * w, y1 + 0.5 * h], axis=1)
    w, h = np.maximum(w, 1.0), np.maximum(h, 1.0)  # degenerate boxes: no singular transform
    wide = w > aspect_ratio * h
    h = np.where(wide, w / aspect_ratio, h)
    w = np.where(wide, w, h * aspect_ratio)
    scales = np.stack([w, h], axis=1) * scale_factor
    return centers, scales


def _as_boxes(boxes) -> np.ndarray:
    """float64 ``[N, C]`` (C >= 4); an empty input becomes ``[0, 4]``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"boxes must be [N, 4+] (x1, y1, x2, y2, ...), got {boxes.shape}")
    return boxes


def get_affine_transform(
    center: Sequence[float],
    scale: Sequence[float],
    output_size: tuple[int, int],
    rot: float = 0.0,
    inv: bool = False,
) -> np.ndarray:
    """The ``[2, 3]`` affine matrix that maps the box region of the frame onto the crop.

    Args:
        center: (x, y) in frame pixels.
        scale: (w, h) of the region in frame pixels; only ``w`` sets the zoom (``h`` follows
            from the aspect ratio, as in the reference).
        output_size: (H, W) of the crop in pixels.
        rot: rotation of the region in degrees, as the reference's ``rot``: the frame
            direction ``(sin rot, -cos rot)`` from the centre becomes "up" in the crop.
        inv: return the crop -> frame matrix instead.

    Returns:
        float64 ``[2, 3]``: ``[x', y'] = M @ [x, y, 1]``.
    """
    out_h, out_w = output_size
    cx, cy = float(center[0]), float(center[1])
    src_w = float(scale[0])
    a = math.radians(rot)
    # direction "half a width up", rotated; the third point is perpendicular to it
    sdx, sdy = src_w * 0.5 * math.sin(a), -src_w * 0.5 * math.cos(a)
    src = np.array([[cx, cy], [cx + sdx, cy + sdy], [cx + sdy, cy - sdx]], np.float32)
    ox, oy, half = out_w * 0.5, out_h * 0.5, out_w * 0.5
    dst = np.array([[ox, oy], [ox, oy - half], [ox - half, oy]], np.float32)
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def affine_matrices(
    centers: np.ndarray, scales: np.ndarray, output_size: tuple[int, int], inv: bool = False
) -> np.ndarray:
    """:func:`get_affine_transform` for ``N`` boxes -> float64 ``[N, 2, 3]``."""
    mats = [get_affine_transform(c, s, output_size, inv=inv) for c, s in zip(centers, scales)]
    return np.stack(mats) if mats else np.zeros((0, 2, 3))


def transform_points(points: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """Apply one ``[2, 3]`` affine matrix per instance: ``[N, K, 2]`` x ``[N, 2, 3]`` -> same."""
    points = np.asarray(points, dtype=np.float64)
    return points @ mats[:, :, :2].transpose(0, 2, 1) + mats[:, None, :, 2]


class Crops(NamedTuple):
    """Person crops of one frame.

    Attributes:
        images: uint8 ``[N, H, W, 3]`` crops (the frame's channel order).
        centers: float64 ``[N, 2]`` (x, y) frame pixels.
        scales: float64 ``[N, 2]`` (w, h) frame pixels of the cropped region.
        trans: float64 ``[N, 2, 3]`` frame -> crop pixels.
        inv_trans: float64 ``[N, 2, 3]`` crop -> frame pixels.
    """

    images: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    trans: np.ndarray
    inv_trans: np.ndarray


def crop_persons(
    frame: np.ndarray,
    boxes: np.ndarray,
    input_size: tuple[int, int] = (256, 192),
    scale_factor: float = SCALE_FACTOR,
) -> Crops:
    """Cut one aspect-fixed, 1.25x enlarged crop per box (bilinear, zero border).

    Args:
        frame: uint8 ``[H, W, 3]``.
        boxes: ``[N, 4+]`` (x1, y1, x2, y2, ...) frame pixels.
        input_size: (H, W) of the crops.
        scale_factor: box enlargement.
    """
    h, w = input_size
    centers, scales = box_to_center_scale(boxes, w / h, scale_factor)
    trans = affine_matrices(centers, scales, input_size)
    inv_trans = affine_matrices(centers, scales, input_size, inv=True)
    images = np.zeros((len(trans), h, w, frame.shape[2] if frame.ndim == 3 else 1), np.uint8)
    for i, m in enumerate(trans):
        out = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR)
        images[i] = out.reshape(h, w, -1)
    return Crops(images, centers, scales, trans, inv_trans)


def heatmap_to_frame(
    coords: np.ndarray, inv_trans: np.ndarray, stride: float | tuple[float, float] = 4.0
) -> np.ndarray:
    """Heatmap pixels ``[N, K, 2]`` -> input pixels (x ``stride``) -> frame pixels."""
    sx, sy = (stride, stride) if np.isscalar(stride) else stride
    return transform_points(np.asarray(coords, np.float64) * np.array([sx, sy]), inv_trans)


# ------------------------------------------------------------------------------------------
# decoders


def _gaussian_kernel1d(kernel: int, device, dtype) -> torch.Tensor:
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a given kernel size
    r = torch.arange(kernel, device=device, dtype=dtype) - (kernel - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _blurred_3x3(h: torch.Tensor, px: torch.Tensor, py: torch.Tensor, kernel: int):
    """The Gaussian-blurred maps (zero border) at the 3x3 pixels around (px, py).

    Only these nine values enter the Taylor step, so instead of blurring whole maps this
    gathers one ``(kernel + 2)``-square patch per map and blurs it in "valid" mode.
    Returns ``[N, K, 3, 3]`` indexed ``[dy + 1, dx + 1]``.
    """
    n, k, hh, ww = h.shape
    r = kernel // 2 + 1
    side = 2 * r + 1
    hp = F.pad(h, (r, r, r, r)).reshape(n * k, hh + 2 * r, ww + 2 * r)
    off = torch.arange(side, device=h.device)
    rows = py.reshape(-1, 1) + off  # padded coordinates: py - r + r = py
    cols = px.reshape(-1, 1) + off
    m = torch.arange(n * k, device=h.device).view(-1, 1, 1)
    patch = hp[m, rows[:, :, None], cols[:, None, :]]  # [M, side, side]
    g = _gaussian_kernel1d(kernel, h.device, h.dtype)
    tmp = patch.unfold(2, kernel, 1) @ g  # [M, side, 3]
    out = tmp.transpose(1, 2).unfold(2, kernel, 1) @ g  # [M, 3(x), 3(y)]
    return out.transpose(1, 2).reshape(n, k, 3, 3)


def _at(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Values of ``flat [N, K, h*w]`` at integer (x, y) ``[N, K]`` (clamped to the map)."""
    idx = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)
    return flat.gather(-1, idx.unsqueeze(-1)).squeeze(-1)


def decode_heatmaps(
    heatmaps: np.ndarray | torch.Tensor,
    method: str = "argmax",
    *,
    beta: float = DEFAULT_BETA,
    normalize: bool = True,
    blur_kernel: int = 11,
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """Joint positions and scores from heatmaps.

    Args:
        heatmaps: float ``[N, K, h, w]`` (numpy, or torch on any device).
        method: ``"argmax"`` (with the quarter-pixel shift), ``"soft-argmax"`` or ``"dark"``
            (see the module docstring).
        beta: soft-argmax sharpness: ``softmax(beta * heatmap / max)`` (``normalize``) or
            ``softmax(beta * heatmap)``. The default (16, with ``normalize``) gave the
            smallest error on sigma-2 Gaussian heatmaps (see tests/test_pose_decode.py).
        normalize: divide each map by its maximum before the softmax, so that ``beta`` does
            not depend on the heatmap's scale; False for logit maps trained through the
            softmax (Luvizon et al.), with ``beta=1``.
        blur_kernel: odd Gaussian kernel size of the DARK smoothing (11 for 64x48 heatmaps
            of sigma 2, as in the DARK paper; 0 or 1 disables smoothing).

    Returns:
        ``coords [N, K, 2]`` (x, y) in heatmap pixels (pixel centres at integers) and
        ``scores [N, K]`` (each map's maximum), float32; numpy for numpy input, torch on the
        input's device for torch input.
    """
    if method not in DECODERS:
        raise ValueError(f"unknown heatmap decoder {method!r}; expected one of {DECODERS}")
    if blur_kernel > 1 and blur_kernel % 2 == 0:
        raise ValueError(f"blur_kernel must be odd, got {blur_kernel}")
    is_numpy = not isinstance(heatmaps, torch.Tensor)
    h = torch.as_tensor(np.asarray(heatmaps) if is_numpy else heatmaps).float()
    if h.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, h, w], got shape {tuple(h.shape)}")
    n, k, hh, ww = h.shape
    flat = h.reshape(n, k, hh * ww)
    if flat.shape[-1] == 0 or n * k == 0:
        coords = torch.zeros(n, k, 2, device=h.device)
        scores = torch.zeros(n, k, device=h.device)
    else:
        scores, idx = flat.max(dim=-1)
        px, py = idx % ww, torch.div(idx, ww, rounding_mode="floor")
        if method == "argmax":
            coords = _quarter_shift(flat, px, py, ww, hh)
        elif method == "dark":
            coords = _dark(h, px, py, blur_kernel)
        else:
            logits = beta * flat
            if normalize:
                logits = logits / scores.abs().clamp_min(1e-12).unsqueeze(-1)
            p = torch.softmax(logits, dim=-1).reshape(n, k, hh, ww)
            xs = torch.arange(ww, device=h.device, dtype=h.dtype)
            ys = torch.arange(hh, device=h.device, dtype=h.dtype)
            coords = torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)
    coords, scores = coords.float(), scores.float()
    if is_numpy:
        return coords.cpu().numpy(), scores.cpu().numpy()
    return coords, scores


def _quarter_shift(flat, px, py, w: int, h: int) -> torch.Tensor:
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    dx = _at(flat, px + 1, py, w, h) - _at(flat, px - 1, py, w, h)
    dy = _at(flat, px, py + 1, w, h) - _at(flat, px, py - 1, w, h)
    x = px.to(flat.dtype) + 0.25 * torch.sign(dx) * inside
    y = py.to(flat.dtype) + 0.25 * torch.sign(dy) * inside
    return torch.stack([x, y], dim=-1)


def _dark(h: torch.Tensor, px, py, kernel: int) -> torch.Tensor:
    n, k, hh, ww = h.shape
    if kernel and kernel > 1:
        # DARK rescales the blurred map to keep its maximum; a constant factor only adds a
        # constant to the log, which the derivatives do not see, so it is left out here.
        nb = _blurred_3x3(h, px, py, kernel)
    else:
        flat = h.reshape(n, k, hh * ww)
        nb = torch.stack(
            [
                torch.stack([_at(flat, px + dx, py + dy, ww, hh) for dx in (-1, 0, 1)], -1)
                for dy in (-1, 0, 1)
            ],
            -2,
        )
    lg = torch.log(nb.clamp_min(1e-10))

    def v(ox: int, oy: int) -> torch.Tensor:
        return lg[..., oy + 1, ox + 1]

    c = v(0, 0)
    dx = 0.5 * (v(1, 0) - v(-1, 0))
    dy = 0.5 * (v(0, 1) - v(0, -1))
    dxx = v(1, 0) - 2 * c + v(-1, 0)
    dyy = v(0, 1) - 2 * c + v(0, -1)
    dxy = 0.25 * (v(1, 1) - v(1, -1) - v(-1, 1) + v(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = (px >= 1) & (px <= ww - 2) & (py >= 1) & (py <= hh - 2) & (dxx < 0) & (det > 1e-12)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(dxx * dy - dxy * dx) / safe
    ox = torch.where(ok, ox.clamp(-1, 1), torch.zeros_like(ox))
    oy = torch.where(ok, oy.clamp(-1, 1), torch.zeros_like(oy))
    return torch.stack([px.to(h.dtype) + ox, py.to(h.dtype) + oy], dim=-1)


def flip_back(
    heatmaps: torch.Tensor,
    flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS,
    shift: bool = True,
) -> torch.Tensor:
    """Heatmaps of a horizontally flipped crop -> heatmaps of the original crop.

    Mirrors along x, swaps left/right joints, and (``shift``) moves the maps one heatmap
    pixel to the right as the reference does (the exact misalignment is
    ``1 - 1 / stride`` px: 0.75 px at stride 4).
    """
    out = heatmaps.flip(-1)
    perm = list(range(out.shape[1]))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    out = out[:, perm]
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


# ------------------------------------------------------------------------------------------
# estimator


class PoseEstimator:
    """Top-down keypoints for the given person boxes, batched on the model's device.

    Args:
        model: a heatmap :class:`~tristream.models.pose_resnet.PoseModel` (see
            ``load_pose_model``) or an :class:`~tristream.models.pose_onnx.OnnxPoseModel`
            (BlazePose, heatmap or SimCC outputs).
        decoder: ``"dark"``, ``"argmax"`` or ``"soft-argmax"`` (heatmap models).
        flip_test: also run the mirrored crops and average the heatmaps (heatmap models).
        batch_size: crops per forward pass.
        dtype: ``torch.float16`` / ``torch.bfloat16`` (or their names) runs a torch model
            under autocast (meant for CUDA); None runs in float32. Decoding is always float32.
        flip_pairs: left/right joint pairs swapped by the flip test.
        shift_heatmap: shift the flipped heatmaps by one pixel (reference behaviour).
        scale_factor: box enlargement before cropping (None: the model's own, else 1.25).
        decoder_options: keyword arguments for :func:`decode_heatmaps` (``beta``,
            ``blur_kernel``).
        keypoints3d: also return each joint's 3D position (models with ``has_3d``:
            BlazePose's world landmarks); ValueError for a model without them.

    Every crop of one call goes through the model in chunks of ``batch_size``, whatever
    frame it comes from.
    """

    def __init__(
        self,
        model,
        decoder: str = "dark",
        flip_test: bool = False,
        batch_size: int = 64,
        dtype: torch.dtype | str | None = None,
        *,
        flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS,
        shift_heatmap: bool = True,
        scale_factor: float | None = None,
        decoder_options: dict | None = None,
        keypoints3d: bool = False,
    ):
        if keypoints3d and not getattr(model, "has_3d", False):
            raise ValueError(
                "3D keypoints need a pose model with 3D output (BlazePose's world landmarks); "
                f"{getattr(model, 'path', type(model).__name__)} has none"
            )
        self.keypoints3d = keypoints3d
        if decoder not in DECODERS:
            raise ValueError(f"unknown heatmap decoder {decoder!r}; expected one of {DECODERS}")
        if isinstance(dtype, str):
            if dtype not in PRECISIONS:
                raise ValueError(
                    f"unknown precision {dtype!r}; expected one of {tuple(PRECISIONS)}"
                )
            dtype = PRECISIONS[dtype]
        #: "heatmap" (decoded here), else the model's own keypoints (BlazePose, SimCC).
        self.family = getattr(model, "family", "heatmap")
        if flip_test and self.family != "heatmap":
            raise ValueError(f"the flip test averages heatmaps; this is a {self.family} model")
        if dtype is not None and not isinstance(model, PoseModel):
            raise ValueError("--pose-precision applies to torch (PoseResNet) models only")
        self.model = model
        self.decoder = decoder
        self.flip_test = flip_test
        self.batch_size = max(1, int(batch_size))
        self.dtype = dtype
        self.flip_pairs = tuple(flip_pairs)
        self.shift_heatmap = shift_heatmap
        self.scale_factor = float(
            scale_factor if scale_factor is not None
            else getattr(model, "scale_factor", SCALE_FACTOR)
        )  # fmt: skip
        self.decoder_options = dict(decoder_options or {})

    def heatmaps(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` RGB crops -> float32 heatmaps ``[N, K, h, w]`` (device)."""
        m = self.model
        if not isinstance(m, PoseModel):  # an ONNX heatmap model
            hm = m.heatmaps(crops)
            if self.flip_test:
                hf = m.heatmaps(np.ascontiguousarray(crops[:, :, ::-1]))
                hm = 0.5 * (hm + flip_back(hf, self.flip_pairs, self.shift_heatmap))
            return hm
        x = m.preprocess(torch.from_numpy(np.ascontiguousarray(crops)))
        with (
            torch.inference_mode(),
            torch.autocast(
                m.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
            ),
        ):
            hm = m(x)
            if self.flip_test:
                hf = m(x.flip(3))
                hm = 0.5 * (hm.float() + flip_back(hf.float(), self.flip_pairs, self.shift_heatmap))
        return hm.float()

    def _stride(self, hm_hw) -> tuple[float, float]:
        """(x, y) input pixels per heatmap pixel: the model's stride when the heatmap has
        the matching size, else measured from the shapes (e.g. TorchScript or ONNX models)."""
        in_h, in_w = self.model.input_size
        s = self.model.heatmap_stride
        if s and tuple(hm_hw) == (in_h // s, in_w // s):
            return float(s), float(s)
        return in_w / hm_hw[1], in_h / hm_hw[0]

    def keypoints(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``[N, H, W, 3]`` RGB crops -> ``(coords float64 [N, K, 2]`` in crop-input
        pixels (centres at integers), ``scores float32 [N, K]``, negatives clipped to 0)."""
        coords, scores, _ = self.landmarks(crops)
        return coords, scores

    def landmarks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """As :meth:`keypoints`, plus float32 ``[N, K, 3]`` 3D keypoints (metres) when
        ``keypoints3d`` is on, else None."""
        if self.family != "heatmap":
            if self.keypoints3d:
                coords, scores, world = self.model.landmarks(crops)
            else:
                (coords, scores), world = self.model.keypoints(crops), None
            return np.asarray(coords, np.float64), np.asarray(scores, np.float32), world
        hm = self.heatmaps(crops)
        coords, scores = decode_heatmaps(hm, self.decoder, **self.decoder_options)
        sx, sy = self._stride(hm.shape[-2:])
        xy = coords.cpu().numpy().astype(np.float64) * np.array([sx, sy])
        # A heatmap peak below zero is no evidence at all: score 0, which the
        # shard contract reads as "not seen".
        return xy, np.clip(scores.cpu().numpy(), 0.0, None).astype(np.float32), None

    def __call__(
        self, frames: np.ndarray | Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Keypoints of every box of every frame.

        Args:
            frames: uint8 ``[B, H, W, 3]`` RGB (or a list of B such frames).
            boxes: B float arrays ``[N_b, 4 or 5]`` (x1, y1, x2, y2[, score]) frame pixels.

        Returns:
            B float32 arrays ``[N_b, K, 3]``: (x, y) frame pixels and the joint's score
            (heatmap models: the peak's height, negatives clipped to 0; see the model for
            the others); ``[N_b, K, 6]`` with ``keypoints3d``, the joint's (x, y, z) in
            metres appended.
        """
        if len(frames) != len(boxes):
            raise ValueError(f"got {len(frames)} frames but {len(boxes)} box arrays")
        in_h, in_w = self.model.input_size
        crops, inv, counts = [], [], []
        for frame, bx in zip(frames, boxes):
            bx = _as_boxes(bx)
            c = crop_persons(np.asarray(frame), bx[:, :4], (in_h, in_w), self.scale_factor)
            crops.append(c.images)
            inv.append(c.inv_trans)
            counts.append(len(bx))
        total = sum(counts)
        k = self.model.num_joints or NUM_JOINTS
        width = 6 if self.keypoints3d else 3
        if total == 0:
            return [np.zeros((0, k, width), np.float32) for _ in counts]
        all_crops = np.concatenate(crops)
        all_inv = np.concatenate(inv)
        out = []
        for s in range(0, total, self.batch_size):
            xy, score, world = self.landmarks(all_crops[s : s + self.batch_size])
            xy = transform_points(xy, all_inv[s : s + len(xy)])
            parts = [xy, score[..., None]] + ([world] if self.keypoints3d else [])
            out.append(np.concatenate(parts, -1))
        kps = np.concatenate(out).astype(np.float32)
        return np.split(kps, np.cumsum(counts)[:-1])
