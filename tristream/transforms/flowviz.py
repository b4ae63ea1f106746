"""Optical flow as colour: the Middlebury colour wheel (Baker et al., IJCV 2011).

Hue is the flow's direction and saturation its magnitude relative to
``max_radius``: zero flow is white, flow of ``max_radius`` pixels is the
fully saturated wheel colour, longer flow is the wheel colour darkened to
75 %. With x right and y down (image coordinates, as tristream's flow):
right is red, down yellow-orange, left cyan-green, up blue-violet.
The wheel is the reference one (colorcode.cpp of the Middlebury flow code):
55 hues in six ramps, red-yellow 15, yellow-green 6, green-cyan 4,
cyan-blue 11, blue-magenta 13, magenta-red 6.
"""

from __future__ import annotations

import numpy as np

_RAMPS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def color_wheel() -> np.ndarray:
    """The Middlebury colour wheel: float64 ``[55, 3]`` RGB in [0, 255], hue index 0 = red."""
    ry, yg, gc, cb, bm, mr = (n for _, n in _RAMPS)
    wheel = np.zeros((ry + yg + gc + cb + bm + mr, 3))
    col = 0
    wheel[col : col + ry, 0] = 255
    wheel[col : col + ry, 1] = np.floor(255 * np.arange(ry) / ry)
    col += ry
    wheel[col : col + yg, 0] = 255 - np.floor(255 * np.arange(yg) / yg)
    wheel[col : col + yg, 1] = 255
    col += yg
    wheel[col : col + gc, 1] = 255
    wheel[col : col + gc, 2] = np.floor(255 * np.arange(gc) / gc)
    col += gc
    wheel[col : col + cb, 1] = 255 - np.floor(255 * np.arange(cb) / cb)
    wheel[col : col + cb, 2] = 255
    col += cb
    wheel[col : col + bm, 2] = 255
    wheel[col : col + bm, 0] = np.floor(255 * np.arange(bm) / bm)
    col += bm
    wheel[col : col + mr, 2] = 255 - np.floor(255 * np.arange(mr) / mr)
    wheel[col : col + mr, 0] = 255
    return wheel


_WHEEL = color_wheel()


def _uv_to_color(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colour of normalised flow (radius 1 = full saturation): uint8 ``[..., 3]``."""
    n = len(_WHEEL)
    rad = np.sqrt(u * u + v * v)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = ((1 - f) * _WHEEL[k0 % n] + f * _WHEEL[k1]) / 255.0
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    return np.clip(np.floor(255 * col), 0, 255).astype(np.uint8)


def flow_to_color(flow: np.ndarray, max_radius: float | None = None) -> np.ndarray:
    """Colour-code a flow field with the Middlebury wheel.

    Args:
        flow: float ``[H, W, 2]`` (x right, y down), pixels. Non-finite values
            count as zero flow.
        max_radius: flow length (pixels) that maps to full saturation; None
            uses the field's largest length (all white when the flow is zero).

    Returns:
        uint8 ``[H, W, 3]`` RGB.
    """
    flow = np.asarray(flow, np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be [H, W, 2], got {flow.shape}")
    flow = np.where(np.isfinite(flow), flow, 0.0)
    u, v = flow[..., 0], flow[..., 1]
    if max_radius is None:
        max_radius = float(np.sqrt(u * u + v * v).max()) if u.size else 0.0
    scale = 1.0 / max(float(max_radius), np.finfo(np.float32).eps)
    return _uv_to_color(u * scale, v * scale)


def color_wheel_legend(size: int, background: int = 255) -> np.ndarray:
    """A legend of the wheel: the colour of every flow up to full saturation, in a disc.

    Args:
        size: side of the square image in pixels (>= 3).
        background: grey level outside the disc.

    Returns:
        uint8 ``[size, size, 3]`` RGB: the pixel at offset (dx, dy) from the
        centre shows the colour of flow (dx, dy) scaled so that the disc's edge
        is ``max_radius``; so the right edge is red and the top blue-violet.
    """
    if size < 3:
        raise ValueError("size must be >= 3")
    c = (size - 1) / 2.0
    grid = (np.arange(size) - c) / c
    u, v = np.meshgrid(grid, grid)
    out = _uv_to_color(u, v)
    out[np.sqrt(u * u + v * v) > 1.0] = background
    return out
