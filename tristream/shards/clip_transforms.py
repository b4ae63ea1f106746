"""Per-clip geometry and value steps: crop, horizontal flip, normalise, person padding.

Plain functions on numpy arrays (plus the tensor conversions at the end), so
each step can be tested, reused or replaced on its own.
:class:`tristream.shards.ShardDataset` applies them in this order: decode (in
:mod:`tristream.shards.clip_decode`, which crops and mirrors each frame as it
is decoded) -> normalise -> flip the sign of flow x -> keypoints into the crop,
flipped -> pad persons.

Geometry: pixel (i, j) of a frame is the point x = j, y = i (pixel centres at
integer coordinates, as the keypoints are stored). A :class:`CropBox` at
``(top, left)`` maps x -> x - left, y -> y - top; a flip of a W-wide image
maps x -> W - 1 - x, mirrors the pixels, negates flow x and swaps the
left/right COCO-17 joints (:data:`tristream.shards.coco.FLIP`). 3D keypoints
(root-relative metres) flip as x -> -x with the same joint swap.

Values: image levels ``v`` (uint8) normalise to ``v / 127.5 - 1`` in [-1, 1];
quantised flow levels ``q`` (``pixels = q * 40 / 255 - 20``) to the same
``q / 127.5 - 1`` = pixels / 20; float16 flow pixels to ``clip(pixels / 20, -1, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from tristream.shards.coco import FLIP
from tristream.shards.codec import FLOW_BOUND, quantize_flow

__all__ = [
    "FLOAT_DTYPES",
    "ZERO_FLOW_LEVEL",
    "CropBox",
    "CropFlip",
    "crop_flip",
    "crop_flip_into",
    "flow_to_levels",
    "flow_to_unit",
    "hflip_image",
    "hflip_keypoints",
    "hflip_keypoints3d",
    "images_to_tensor",
    "levels_to_unit",
    "negate_flow_x",
    "pad_persons",
    "to_dtype",
    "zero_absent",
]

#: Output dtypes of the image and flow tensors besides ``torch.uint8`` (raw levels).
FLOAT_DTYPES: tuple[torch.dtype, ...] = (
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
)

#: The flow level nearest to zero motion (+0.08 px): what a clip frame without flow gets.
ZERO_FLOW_LEVEL = 128


# --------------------------------------------------------------------------- crop


@dataclass(frozen=True)
class CropBox:
    """A crop window of a frame, in pixels: rows ``top .. top + height - 1``, columns
    ``left .. left + width - 1``."""

    top: int
    left: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.top < 0 or self.left < 0 or self.height < 1 or self.width < 1:
            raise ValueError(f"not a crop box: {self}")

    @classmethod
    def full(cls, height: int, width: int) -> CropBox:
        """The whole ``height`` x ``width`` frame."""
        return cls(0, 0, int(height), int(width))

    @classmethod
    def centred(cls, frame: tuple[int, int], size: tuple[int, int]) -> CropBox:
        """The ``size`` = (h, w) window in the centre of a ``frame`` = (H, W) frame
        (top ``(H - h) // 2``, left ``(W - w) // 2``)."""
        _check_fits(frame, size)
        (fh, fw), (h, w) = frame, size
        return cls((fh - h) // 2, (fw - w) // 2, h, w)

    @classmethod
    def random(
        cls, frame: tuple[int, int], size: tuple[int, int], rng: np.random.Generator
    ) -> CropBox:
        """A ``size`` window at a uniformly drawn position in a ``frame`` = (H, W) frame.

        Draws the top, then the left, as one integer each from ``rng``.
        """
        _check_fits(frame, size)
        (fh, fw), (h, w) = frame, size
        top = int(rng.integers(0, fh - h + 1))
        left = int(rng.integers(0, fw - w + 1))
        return cls(top, left, h, w)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The window of ``image`` ``[H, W, ...]`` -> ``[height, width, ...]`` (a view)."""
        return image[self.top : self.top + self.height, self.left : self.left + self.width]

    def apply_to_keypoints(self, keypoints: np.ndarray) -> np.ndarray:
        """Keypoints ``[..., >= 2]`` (x, y, ... in frame pixels) in the window's pixels: a copy
        with x - left, y - top (other channels, e.g. the score, kept). Points may
        fall outside ``[0, width) x [0, height)``."""
        out = keypoints.copy()
        out[..., 0] -= self.left
        out[..., 1] -= self.top
        return out


def _check_fits(frame: tuple[int, int], size: tuple[int, int]) -> None:
    (fh, fw), (h, w) = frame, size
    if h > fh or w > fw:
        raise ValueError(f"crop {h}x{w} is larger than the {fh}x{fw} frames")


@dataclass(frozen=True)
class CropFlip:
    """How a clip's one crop and flip are chosen (shared by all its modalities and frames).

    Args:
        size: crop ``(h, w)`` in pixels; None keeps the whole frame.
        train: random crop position and a flip with probability ``hflip``; else
            the centre crop and no flip.
        hflip: flip probability in [0, 1] (train only).
    """

    size: tuple[int, int] | None = None
    train: bool = True
    hflip: float = 0.5

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"crop must be a positive int, (H, W) or None, got {self.size!r}")
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError("hflip is a probability in [0, 1]")

    def draw(
        self, height: int, width: int, rng: np.random.Generator | None = None
    ) -> tuple[CropBox, bool]:
        """(box, flip) for a clip of ``height`` x ``width`` frames.

        In train, draws from ``rng`` the top, the left (:meth:`CropBox.random`),
        then one float for the flip. ValueError when the crop is larger than the frames.
        """
        size = self.size or (height, width)
        if not self.train:
            return CropBox.centred((height, width), size), False
        if rng is None:
            raise ValueError("a training crop needs a random generator")
        box = CropBox.random((height, width), size, rng)
        return box, bool(rng.random() < self.hflip)


# --------------------------------------------------------------------------- flip


def hflip_image(image: np.ndarray) -> np.ndarray:
    """``image`` ``[H, W, ...]`` mirrored left-right (a view)."""
    return image[:, ::-1]


def crop_flip(image: np.ndarray, box: CropBox, flip: bool) -> np.ndarray:
    """``image`` ``[H, W, ...]`` cropped to ``box``, then mirrored when ``flip`` (a view)."""
    window = box.crop(image)
    return hflip_image(window) if flip else window


def crop_flip_into(image: np.ndarray, box: CropBox, flip: bool, out: np.ndarray) -> None:
    """Copy ``image``'s ``box`` window, mirrored when ``flip``, into ``out``, channels first:
    ``image`` uint8 ``[H, W, C]`` into ``out`` ``[C, box.height, box.width]`` (each plane
    ``out[c]`` C-contiguous, e.g. ``clip[:, t]`` of a ``[C, T, h, w]`` clip), or ``[H, W]``
    into ``[box.height, box.width]``.

    The window is made contiguous (mirrored on the way with ``cv2.flip``), then split into
    the planes with ``cv2.split``: about a third of the time of numpy's strided HWC -> CHW
    copy. Other layouts or dtypes take numpy's copy (the same values)."""
    if image.ndim == 2 or out.dtype != np.uint8 or image.dtype != np.uint8:
        view = crop_flip(image, box, flip)
        out[...] = view if image.ndim == 2 else view.transpose(2, 0, 1)
        return
    planes = list(out)
    window = box.crop(image)
    src = cv2.flip(window, 1) if flip else np.ascontiguousarray(window)
    if all(p.flags.c_contiguous for p in planes) and len(planes) == src.shape[2]:
        done = cv2.split(src, planes)
        if all(np.shares_memory(d, p) for d, p in zip(done, planes, strict=True)):
            return
    out[...] = src.transpose(2, 0, 1)


def hflip_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """COCO-17 keypoints ``[..., 17, >= 2]`` of a ``width``-pixel-wide image, mirrored:
    x -> ``width - 1 - x``, and output joint j is input joint ``FLIP[j]``. A copy."""
    out = keypoints.copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out[..., list(FLIP), :]


def hflip_keypoints3d(keypoints3d: np.ndarray) -> np.ndarray:
    """COCO-17 3D keypoints ``[..., 17, 3]`` (x, y, z metres, root-relative) mirrored with
    the image: x -> -x, output joint j is input joint ``FLIP[j]``. A copy."""
    out = keypoints3d.copy()
    out[..., 0] = -out[..., 0]
    return out[..., list(FLIP), :]


def negate_flow_x(flow: np.ndarray, levels: bool) -> np.ndarray:
    """Flip the sign of the x plane of ``flow`` ``[2, ...]`` in place (what a mirror does to
    motion): ``255 - q`` for uint8 levels, ``-v`` for values. Returns ``flow``."""
    if levels:
        np.subtract(255, flow[0], out=flow[0])
    else:
        np.negative(flow[0], out=flow[0])
    return flow


def zero_absent(values: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Set ``values[..., :]`` to 0 where ``score <= 0`` (an absent joint), in place.

    ``values`` ``[..., C]``, ``score`` of shape ``values.shape[:-1]``. Returns ``values``.
    """
    values[score <= 0] = 0.0
    return values


# --------------------------------------------------------------------------- normalise


def levels_to_unit(levels: np.ndarray, out: np.ndarray) -> np.ndarray:
    """uint8 levels -> ``out`` (float32, same shape) = ``v / 127.5 - 1`` in [-1, 1].

    Done in numpy (single-threaded), so the cost does not depend on torch's
    intra-op thread pool, which in a busy main process mostly adds contention.
    """
    np.multiply(levels, np.float32(1 / 127.5), out=out, dtype=np.float32)
    out -= np.float32(1.0)
    return out


def flow_to_unit(flow: np.ndarray, quantised: bool, out: np.ndarray) -> np.ndarray:
    """Stored flow -> ``out`` (float32, same shape) = pixels / 20 in [-1, 1].

    ``flow``: uint8 levels when ``quantised`` (``q / 127.5 - 1``, already within
    [-1, 1]), else float pixels (divided by 20 and clipped).
    """
    if quantised:
        return levels_to_unit(flow, out)
    np.divide(flow, np.float32(FLOW_BOUND), out=out)
    np.clip(out, -1.0, 1.0, out=out)
    return out


def flow_to_levels(flow: np.ndarray, quantised: bool, out: np.ndarray) -> np.ndarray:
    """Stored flow -> ``out`` (uint8, same shape): levels ``q`` with ``q / 127.5 - 1`` =
    pixels / 20 (float pixels are quantised, clipped to +-20 px)."""
    out[...] = flow if quantised else quantize_flow(flow)
    return out


def _buffer(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray]:
    """An uninitialised tensor and its numpy view (written in place by numpy)."""
    tensor = torch.empty(shape, dtype=dtype)
    return tensor, tensor.numpy()


def to_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` (float32) as ``dtype``; no copy when it is float32 already."""
    return tensor if dtype == torch.float32 else tensor.to(dtype)


def images_to_tensor(levels: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """uint8 image levels (any shape, e.g. ``[3, T, H, W]``) -> a tensor of ``dtype``:
    the levels themselves for ``torch.uint8``, else ``v / 127.5 - 1`` in [-1, 1]."""
    if dtype == torch.uint8:
        tensor, out = _buffer(levels.shape, torch.uint8)
        out[...] = levels
        return tensor
    tensor, out = _buffer(levels.shape, torch.float32)
    levels_to_unit(levels, out)
    return to_dtype(tensor, dtype)


def flow_to_tensor(
    flow: np.ndarray, zero: np.ndarray, quantised: bool, flip: bool, dtype: torch.dtype
) -> torch.Tensor:
    """Stored flow ``[2, T, H, W]`` (uint8 levels when ``quantised``, else float pixels) ->
    a tensor of ``dtype``.

    Float dtypes: pixels / 20 in [-1, 1] (:func:`flow_to_unit`); ``torch.uint8``:
    levels (:func:`flow_to_levels`). Frames where ``zero`` (bool ``[T]``) get zero
    flow (level :data:`ZERO_FLOW_LEVEL`); when ``flip``, x changes sign after that.
    """
    if dtype == torch.uint8:
        tensor, levels = _buffer(flow.shape, torch.uint8)
        flow_to_levels(flow, quantised, levels)
        levels[:, zero] = ZERO_FLOW_LEVEL
        if flip:
            negate_flow_x(levels, levels=True)
        return tensor
    tensor, out = _buffer(flow.shape, torch.float32)
    flow_to_unit(flow, quantised, out)
    out[:, zero] = 0.0
    if flip:
        negate_flow_x(out, levels=False)
    return to_dtype(tensor, dtype)


# --------------------------------------------------------------------------- persons


def pad_persons(persons: np.ndarray, max_persons: int | None) -> tuple[torch.Tensor, int]:
    """Per-person values ``[M, ...]`` as a float32 tensor with ``max_persons`` slots.

    Cut to the first ``max_persons`` (rows keep persons ordered by mean score,
    so this drops the weakest) or padded with zeros (score-0 persons); None
    keeps M. Returns (tensor, real persons kept).
    """
    m = persons.shape[0]
    if max_persons is not None:
        m = min(m, max_persons)
        out = np.zeros((max_persons,) + persons.shape[1:], np.float32)
        out[:m] = persons[:m]
        persons = out
    return torch.from_numpy(np.ascontiguousarray(persons, np.float32)), m
