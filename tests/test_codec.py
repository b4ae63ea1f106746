"""Flow quantisation and frame/flow encodings of the shard contract."""

from __future__ import annotations

import numpy as np
import pytest

from tristream.shards.codec import (
    decode_flow,
    decode_image,
    dequantize_flow,
    encode_flow,
    encode_image,
    quantize_flow,
)

LEVEL = 40.0 / 255.0


def test_quantisation_levels_match_the_i3d_formula():
    f = np.array([-25.0, -20.0, 0.0, 20.0, 30.0, 10.0], np.float32)
    q = quantize_flow(f)
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 0, 128, 255, 255, round(255 * 30 / 40)]


def test_quantisation_round_trip_error_is_at_most_half_a_level():
    f = np.linspace(-20, 20, 10001, dtype=np.float32)
    back = dequantize_flow(quantize_flow(f))
    assert back.dtype == np.float32
    assert np.abs(back - f).max() <= LEVEL / 2 + 1e-5
    # Values beyond the bound saturate at the bound.
    assert dequantize_flow(quantize_flow(np.float32(55.0))) == pytest.approx(20.0)


def _smooth_flow(n=3, h=48, w=64):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    flow = np.stack([np.sin(xx / 9 + k) * 12 + yy / h for k in range(n)])
    return np.stack([flow, -flow * 0.5], axis=-1).astype(np.float32)


def test_flow_png_is_exact_up_to_quantisation_and_jpeg_close():
    flow = _smooth_flow()
    xs, ys = encode_flow(flow, "png")
    assert len(xs) == len(ys) == 3
    png = decode_flow(xs, ys, "png", 48, 64)
    assert np.abs(png - flow).max() <= LEVEL / 2 + 1e-5
    xs, ys = encode_flow(flow, "jpeg")
    jpg = decode_flow(xs, ys, "jpeg", 48, 64)
    assert np.abs(jpg - flow).mean() < 2 * LEVEL


def test_flow_f16_keeps_unclipped_values():
    flow = _smooth_flow() * 3  # up to +-36 px: beyond the JPEG/PNG bound
    xs, ys = encode_flow(flow, "f16")
    back = decode_flow(xs, ys, "f16", 48, 64)
    assert np.array_equal(back, flow.astype(np.float16).astype(np.float32))


def test_images_keep_rgb_order():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 200  # red
    img[:4, :, 2] = 90
    assert np.array_equal(decode_image(encode_image(img, "png")), img)
    jpg = decode_image(encode_image(img, "jpeg"))
    # Away from the colour edge (chroma is subsampled), JPEG keeps the colours.
    for rows in (slice(0, 2), slice(6, 8)):
        assert np.abs(jpg[rows].astype(int) - img[rows]).max() < 8


def test_unknown_encodings_are_rejected():
    with pytest.raises(ValueError, match="flow encoding"):
        encode_flow(_smooth_flow(), "webp")
    with pytest.raises(ValueError, match="image format"):
        encode_image(np.zeros((2, 2, 3), np.uint8), "gif")


def _real_frames(path: str, count: int = 6) -> np.ndarray:
    """``count`` real frames (uint8 [T, H, W, 3] RGB) from the ffmpeg CLI, 2 s apart."""
    from tests.helpers import reference_frames

    return reference_frames(path, 0.5, 272, 640)[:count]


@pytest.mark.parametrize("quality", [95, 75])
def test_jpeg_decode_gives_opencvs_pixels(bikes, quality):
    """decode_image (simplejpeg for JPEG) against OpenCV's own decode of the same bytes,
    for colour frames, flow-like gray planes and the luma of a colour frame."""
    import cv2

    for frame in _real_frames(bikes):
        data = encode_image(frame, "jpeg", quality)
        buf = np.frombuffer(data, np.uint8)
        want = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        got = decode_image(data)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        assert np.array_equal(got, want)
        assert np.array_equal(decode_image(memoryview(data)), want)  # index reads: views
        assert np.array_equal(decode_image(data, gray=True), cv2.imdecode(buf, 0))
        gray = np.ascontiguousarray(frame[..., 1])
        data = encode_image(gray, "jpeg", quality)
        got = decode_image(data, gray=True)
        assert got.shape == gray.shape
        assert np.array_equal(got, cv2.imdecode(np.frombuffer(data, np.uint8), 0))


def test_png_frames_decode_exactly(bikes):
    frame = _real_frames(bikes, 1)[0]
    assert np.array_equal(decode_image(encode_image(frame, "png")), frame)
    gray = np.ascontiguousarray(frame[..., 0])
    assert np.array_equal(decode_image(encode_image(gray, "png"), gray=True), gray)


def test_damaged_jpeg_is_an_error_not_a_grey_frame(bikes):
    data = encode_image(_real_frames(bikes, 1)[0], "jpeg")
    with pytest.raises(ValueError, match="not a decodable JPEG"):
        decode_image(data[: len(data) // 2])  # cut mid-scan
    with pytest.raises(ValueError, match="not a decodable"):
        decode_image(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match="not a decodable"):
        decode_image(b"neither jpeg nor png")
