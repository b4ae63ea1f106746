"""Decode the frames of one clip from a shard row, cropped and mirrored as they are decoded.

The row is a :class:`tristream.shards.row.RowView` (already read; the reading is
:mod:`tristream.shards.row_source`'s job: through a frame index only the frames
asked for are fetched). Each distinct frame of the clip is decoded once, straight
to RGB (:func:`tristream.shards.codec.decode_image`), and its crop window (mirrored
when flipped) is copied into the clip buffer's channel planes, so a frame costs one
decode and two copies of the crop (one to make it contiguous, one to split it). The results
are the stored values (uint8 levels, or float16 flow pixels widened to
float32), channels first; :mod:`tristream.shards.clip_transforms` normalises them.
"""

from __future__ import annotations

import numpy as np

from tristream.shards.clip_transforms import CropBox, crop_flip, crop_flip_into
from tristream.shards.codec import decode_image
from tristream.shards.row import RowView

__all__ = [
    "LAST_FLOW",
    "decode_flow",
    "decode_images",
    "decode_window",
    "distinct_frames",
    "flow_sources",
]

#: What a clip frame without a following frame in its row gets: the row's last flow or zero.
LAST_FLOW: tuple[str, ...] = ("repeat", "zero")


def distinct_frames(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(frames, gather)``: the sorted distinct frames of ``indices`` (int ``[T]``) and
    the positions (int ``[T]``) that rebuild ``indices`` from them
    (``frames[gather] == indices``), or None when ``frames`` already equals ``indices``."""
    frames, inverse = np.unique(indices, return_inverse=True)
    return frames, None if np.array_equal(frames, indices) else inverse


def decode_images(
    view: RowView,
    modality: str,
    frames: np.ndarray,
    box: CropBox,
    flip: bool,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``rgb`` or ``pose`` frames ``frames`` (row frame indices, int ``[N]``) of the row,
    cropped to ``box`` and mirrored when ``flip``: uint8 ``[3, N, box.height, box.width]``,
    RGB, written into ``out`` when given (e.g. a tensor's numpy view).

    Only those frames are fetched (all in one go, from a row read through a frame index)
    and decoded; each decoded frame is copied once, its crop window straight into
    ``out`` (HWC -> CHW, mirrored, channels in RGB order in that one copy)."""
    shape = (3, len(frames), box.height, box.width)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {list(shape)}, got {out.dtype} {list(out.shape)}")
    size = (view.height, view.width)
    for k, data in enumerate(view.iter_encoded(modality, frames)):
        decode_window(data, size, box, flip, out[:, k], f"{modality} frame {int(frames[k])}")
    return out


def decode_window(
    data: bytes | memoryview,
    size: tuple[int, int],
    box: CropBox,
    flip: bool,
    out: np.ndarray,
    what: str = "a frame",
) -> None:
    """Decode one encoded RGB frame (JPEG/PNG) of ``size`` (height, width) and copy its
    ``box`` window, mirrored when ``flip``, into ``out`` uint8 ``[3, box.height,
    box.width]`` (planes R, G, B). ValueError naming ``what`` when the frame has another
    size."""
    image = decode_image(data)
    if image.shape[:2] != tuple(size):
        raise ValueError(
            f"{what} is {image.shape[1]}x{image.shape[0]} in a row of {size[1]}x{size[0]}"
        )
    crop_flip_into(image, box, flip, out)


def flow_sources(frames: np.ndarray, num_flows: int, last_flow: str = "repeat") -> np.ndarray:
    """Which stored flow each frame takes: int64 ``[N]``, -1 for zero flow.

    Frame t takes flow t (frame t -> t + 1). A frame with no following frame
    (t >= ``num_flows``, the row's last) takes the last flow (``repeat``) or
    zero (``zero``); a row without flows (1 frame) always gives zero.
    """
    if last_flow not in LAST_FLOW:
        raise ValueError("last_flow must be 'repeat' or 'zero'")
    src = np.asarray(frames, np.int64).copy()
    late = src >= num_flows
    src[late] = num_flows - 1 if last_flow == "repeat" else -1
    src[src < 0] = -1
    return src


def decode_flow(
    view: RowView, frames: np.ndarray, box: CropBox, flip: bool, last_flow: str = "repeat"
) -> tuple[np.ndarray, np.ndarray]:
    """The flow at frames ``frames`` (int ``[N]``) of the row, cropped to ``box`` and
    mirrored as pixels when ``flip`` (the x sign is left to
    :func:`~tristream.shards.clip_transforms.negate_flow_x`).

    Returns ``(flow, zero)``: ``flow`` ``[2, N, box.height, box.width]``, planes (x, y),
    uint8 levels for ``jpeg``/``png`` rows, float32 pixels for ``f16`` rows; ``zero``
    bool ``[N]``, the frames that get zero flow (their planes are 0 here), see
    :func:`flow_sources`.
    """
    quantised = view.flow_encoding != "f16"
    src = flow_sources(frames, view.num_flows, last_flow)
    zero = src < 0
    out = np.zeros((2, len(frames), box.height, box.width), np.uint8 if quantised else np.float32)
    slots = np.flatnonzero(~zero)
    pairs = [int(j) for j in src[slots]]
    for k, (x, y) in zip(slots, view.iter_flow_planes(pairs), strict=True):
        out[0, k] = crop_flip(x, box, flip)
        out[1, k] = crop_flip(y, box, flip)
    return out, zero
