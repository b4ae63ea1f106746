"""Encodings of frames and flow inside a shard (part of the shard contract).

Flow is stored per frame pair as two grayscale images, x then y. With the
``jpeg`` and ``png`` encodings each value is quantised to uint8 as
``q = round(255 * (clip(f, -20, 20) + 20) / 40)`` (I3D, denseflow) and read
back as ``f = q * 40 / 255 - 20`` (one level is 0.157 px). ``f16`` stores the
unclipped float16 values, little-endian, row-major ``[H, W]``.
"""

from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

FLOW_BOUND = 20.0
FLOW_ENCODINGS = ("jpeg", "png", "f16")
JPEG_QUALITY = 95

_JPEG_START = b"\xff\xd8"
#: OpenCV's straight-to-RGB decode flag (OpenCV >= 4.11); without it BGR, reversed.
_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)


def quantize_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Quantise flow in pixels (any shape, float) to uint8 levels over ``[-bound, bound]``."""
    clipped = np.clip(np.asarray(flow, np.float32), -bound, bound)
    return np.round(255.0 * (clipped + bound) / (2 * bound)).astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Map uint8 levels back to float32 pixels: ``q * 2 * bound / 255 - bound``."""
    return np.asarray(q, np.float32) * np.float32(2 * bound / 255.0) - np.float32(bound)


def encode_image(image: np.ndarray, fmt: str = "jpeg", quality: int = JPEG_QUALITY) -> bytes:
    """Encode uint8 ``[H, W, 3]`` RGB or ``[H, W]`` gray as JPEG or PNG bytes."""
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"unknown image format {fmt!r}; use jpeg or png")
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def is_jpeg(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts like a JPEG (the SOI marker ``FF D8``)."""
    return bytes(data[:2]) == _JPEG_START


def decode_image(data: bytes | memoryview, gray: bool = False) -> np.ndarray:
    """Decode JPEG/PNG bytes to uint8 ``[H, W, 3]`` RGB, or ``[H, W]`` when ``gray`` (the
    luma of a colour JPEG, the gray of a colour PNG, as OpenCV's ``IMREAD_GRAYSCALE``).

    JPEG goes through simplejpeg (libjpeg-turbo's TurboJPEG API, straight to RGB, with the
    accurate IDCT and fancy upsampling that OpenCV uses: the same pixels, in about 5 % less
    time than ``cv2.imdecode`` in the reader's loop); PNG through OpenCV. A damaged JPEG
    (truncated, corrupt entropy data) is a ValueError rather than a partly grey frame.
    """
    if is_jpeg(data):
        try:
            image = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB")
        except ValueError as e:
            raise ValueError(f"bytes are not a decodable JPEG image: {e}") from None
        return image[..., 0] if gray else image
    flag = cv2.IMREAD_GRAYSCALE if gray else (cv2.IMREAD_COLOR if _RGB is None else _RGB)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ValueError("bytes are not a decodable JPEG/PNG image")
    return image if gray or _RGB is not None else image[..., ::-1]


def encode_frames(
    frames: np.ndarray, fmt: str = "jpeg", quality: int = JPEG_QUALITY
) -> list[bytes]:
    """Encode uint8 ``[T, H, W, 3]`` frames, one JPEG/PNG each."""
    return [encode_image(f, fmt, quality) for f in frames]


def decode_frames(data: list[bytes]) -> np.ndarray:
    """Decode a list of T JPEG/PNG frames to uint8 ``[T, H, W, 3]`` RGB."""
    return np.stack([decode_image(d) for d in data]) if data else np.zeros((0, 0, 0, 3), np.uint8)


def encode_flow(
    flow: np.ndarray, encoding: str = "jpeg", quality: int = JPEG_QUALITY
) -> tuple[list[bytes], list[bytes]]:
    """Encode float32 flow ``[N, H, W, 2]`` (pixels) as two lists of N images: x, then y."""
    if encoding not in FLOW_ENCODINGS:
        raise ValueError(f"unknown flow encoding {encoding!r}; choose one of {FLOW_ENCODINGS}")
    if encoding == "f16":
        planes = np.ascontiguousarray(flow.astype("<f2").transpose(3, 0, 1, 2))
        return [p.tobytes() for p in planes[0]], [p.tobytes() for p in planes[1]]
    q = quantize_flow(flow)
    return (
        [encode_image(np.ascontiguousarray(f[..., 0]), encoding, quality) for f in q],
        [encode_image(np.ascontiguousarray(f[..., 1]), encoding, quality) for f in q],
    )


def decode_flow(
    xs: list[bytes], ys: list[bytes], encoding: str, height: int, width: int
) -> np.ndarray:
    """Decode two lists of N encoded flow planes to float32 ``[N, H, W, 2]`` in pixels."""
    if encoding not in FLOW_ENCODINGS:
        raise ValueError(f"unknown flow encoding {encoding!r}; choose one of {FLOW_ENCODINGS}")
    out = np.empty((len(xs), height, width, 2), np.float32)
    for t, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if encoding == "f16":
            out[t, ..., 0] = np.frombuffer(x, "<f2").reshape(height, width)
            out[t, ..., 1] = np.frombuffer(y, "<f2").reshape(height, width)
        else:
            out[t, ..., 0] = dequantize_flow(decode_image(x, gray=True))
            out[t, ..., 1] = dequantize_flow(decode_image(y, gray=True))
    return out
