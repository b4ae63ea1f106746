"""Decoding real videos with ffmpeg: frame counts, sizes, ranges, segments, errors.

The size and pixel tests run under both ffmpeg builds (the ``ffmpeg_build``
fixture): the distribution's (Debian 5.1) and the imageio-ffmpeg wheel's (9.0).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import FFMPEG, ffmpeg, ffmpeg_scale_minus2_size, reference_frames
from tristream.transforms import decode
from tristream.transforms.decode import (
    DecodeError,
    VideoInfo,
    decode_command,
    decode_segments,
    decode_video,
    output_size,
    probe,
)


@pytest.mark.parametrize(
    ("width", "height", "short_side", "expected"),
    [
        (640, 272, 256, (602, 256)),  # 602.35 -> 602
        (640, 272, 64, (150, 64)),  # 150.59 -> 150 (ffmpeg 5.1's aspect options gave 152)
        (640, 272, 48, (112, 48)),  # 112.94 -> 112 (5.1: 114)
        (176, 144, 64, (78, 64)),  # 78.22 -> 78
        (176, 144, 32, (40, 32)),  # 39.11 -> 40
        (640, 480, 256, (342, 256)),  # 341.33 -> 342 (0.67 away; 340 is 1.33 away)
        (1920, 1080, 256, (456, 256)),  # 455.11 -> 456
        (300, 200, 198, (298, 198)),  # exactly 297, halfway: the larger even integer
        (200, 300, 198, (198, 298)),  # portrait: the same, sides swapped
        (176, 144, 45, (56, 45)),  # an odd short side is kept; 55 is halfway -> 56
        (100, 100, 45, (45, 45)),  # a square stays square
    ],
)
def test_output_size_rule(width, height, short_side, expected):
    assert output_size(width, height, short_side) == expected


def test_output_size_is_ffmpeg_scale_minus_2_for_even_short_sides():
    cases = [(640, 272, s) for s in (16, 48, 64, 112, 200, 320, 512)]
    cases += [(176, 144, s) for s in (48, 112, 256)]
    cases += [(300, 200, 198), (200, 300, 198), (300, 200, 202), (1080, 1920, 256)]
    cases += [(354, 200, 100), (640, 480, 256)]
    for w, h, s in cases:
        assert output_size(w, h, s) == ffmpeg_scale_minus2_size(w, h, s), (w, h, s)


def test_output_size_rejects_unknown_sizes():
    with pytest.raises(DecodeError, match="unknown frame size"):
        output_size(0, 144, 64)
    with pytest.raises(ValueError, match="short_side"):
        output_size(176, 144, 0)


@pytest.mark.parametrize(
    ("video", "short_side", "shape"),
    [
        # 10 s at 25 fps; 640x272: 640*256/272 = 602.35 -> 602, 640*64/272 = 150.59 -> 150.
        ("bikes", 256, (250, 256, 602, 3)),
        ("bikes", 64, (250, 64, 150, 3)),
        # 120 frames at 29.97 fps = 4.004 s -> 100 frames at 25 fps;
        # 176x144: 176*256/144 = 312.89 -> 312, 176*64/144 = 78.22 -> 78.
        ("carphone", 256, (100, 256, 312, 3)),
        ("carphone", 64, (100, 64, 78, 3)),
    ],
)
def test_same_sizes_and_pixels_under_every_ffmpeg(video, short_side, shape, ffmpeg_build, request):
    """Under either build, tristream's frames equal the wheel's CLI with an explicit scale.

    Under the system build this compares Debian's ffmpeg with the wheel's, pixel for pixel.
    """
    path = request.getfixturevalue(video)
    frames = decode_video(path, short_side=short_side)
    assert frames.shape == shape and frames.dtype == np.uint8
    ref = reference_frames(path, 25, shape[1], shape[2])
    assert np.array_equal(frames, ref)


def test_given_info_sets_the_size_without_probing(carphone):
    info = probe(carphone)
    assert "scale=78:64:flags=bilinear" in " ".join(decode_command(carphone, 25, 64, info=info))
    # A (wrong) square info is taken at its word: the frames come out square.
    square = VideoInfo(width=100, height=100, fps=info.fps, duration=None, codec="h264")
    frames = decode_video(carphone, short_side=64, info=square, end=1)
    assert frames.shape == (25, 64, 64, 3)


def test_fps_zero_keeps_source_rate_and_short_side_zero_keeps_size(carphone):
    frames = decode_video(carphone, fps=0, short_side=0)
    assert frames.shape == (120, 144, 176, 3)


def test_time_range_matches_the_same_frames_of_a_full_decode(bikes):
    full = decode_video(bikes, short_side=64)
    part = decode_video(bikes, short_side=64, start=1.0, end=3.0)
    assert len(part) == 50
    # Frames 25..74 of the full decode; seeking may land one frame off, not more.
    errors = [
        np.abs(part.astype(int) - full[25 + k : 75 + k].astype(int)).mean() for k in (-1, 0, 1)
    ]
    assert min(errors) < 1.0


def test_segments_overlap_by_one_frame_and_cover_the_video(bikes):
    full = decode_video(bikes, short_side=32)
    segments = list(decode_segments(bikes, short_side=32, max_frames=100))
    assert [(s.index, s.start_frame, len(s.frames), s.is_last) for s in segments] == [
        (0, 0, 100, False),
        (1, 99, 100, False),
        (2, 198, 52, True),
    ]
    for a, b in zip(segments, segments[1:]):
        assert np.array_equal(a.frames[-1], b.frames[0])
    for s in segments:
        assert np.array_equal(s.frames, full[s.start_frame : s.start_frame + len(s.frames)])


def test_segment_boundary_exactly_at_the_end(carphone):
    # 100 frames with max_frames 100: one segment, not a trailing one-frame segment.
    segments = list(decode_segments(carphone, short_side=32, max_frames=100))
    assert [(len(s.frames), s.is_last) for s in segments] == [(100, True)]


def test_probe_with_and_without_ffprobe(carphone, monkeypatch):
    monkeypatch.setenv("TRISTREAM_FFPROBE", "")  # forces parsing `ffmpeg -i`
    info = probe(carphone)
    assert (info.width, info.height, info.codec) == (176, 144, "h264")
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.duration == pytest.approx(4.0, abs=0.05)


def test_imageio_ffmpeg_binary_is_used_when_asked(carphone, monkeypatch):
    monkeypatch.setenv("TRISTREAM_FFMPEG", FFMPEG)
    assert decode.ffmpeg_exe() == FFMPEG
    assert decode_video(carphone, short_side=32).shape[0] == 100


def test_unreadable_inputs_raise_readable_errors(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        list(decode_segments(str(tmp_path / "missing.mp4")))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty file"):
        probe(str(empty))
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(DecodeError, match="not a readable video"):
        probe(str(text))
    # A resize probes first; without one, ffmpeg itself is the first to fail.
    with pytest.raises(DecodeError, match="not a readable video"):
        list(decode_segments(str(text)))
    with pytest.raises(DecodeError, match="ffmpeg exit"):
        list(decode_segments(str(text), short_side=0))


def test_truncated_file_fails_before_its_last_segment(bikes, tmp_path):
    fast = tmp_path / "fast.mp4"
    ffmpeg("-i", bikes, "-c", "copy", "-movflags", "+faststart", str(fast))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 3])
    # The index (moov) now comes first, so ffmpeg decodes the frames that are
    # there and only logs an error; tristream must call the video truncated,
    # and never hand out a segment marked last. (Cut before its index, a file
    # fails at open: the corpus test covers that.)
    seen = []
    with pytest.raises(DecodeError, match="truncated"):
        for seg in decode_segments(str(cut), short_side=32, max_frames=20):
            seen.append(seg)
    assert seen and not any(s.is_last for s in seen)


def test_too_few_frames_is_an_error(bikes, tmp_path):
    one = tmp_path / "one.mp4"
    ffmpeg("-i", bikes, "-frames:v", "1", str(one))
    assert len(decode_video(str(one), short_side=32)) == 1
    with pytest.raises(DecodeError, match="only 1 frame"):
        list(decode_segments(str(one), short_side=32, min_frames=2))


def test_rotated_video_is_decoded_upright_with_its_short_side_resized(
    carphone, tmp_path, ffmpeg_build
):
    rotated = str(tmp_path / "rotated.mp4")
    # Same stream, with a display matrix saying "rotate by 90 degrees".
    ffmpeg("-display_rotation", "90", "-i", carphone, "-t", "1", "-c", "copy", rotated)
    info = probe(rotated)
    assert abs(info.rotation) == 90 and (info.width, info.height) == (176, 144)
    assert info.display_size == (144, 176)
    frames = decode_video(rotated, short_side=64)
    upright = decode_video(carphone, short_side=64, end=1)
    # Portrait now: 144x176 -> 64x78 (width x height), and the picture is the
    # source turned by a quarter (which way depends on the matrix's sign).
    assert frames.shape[1:] == (78, 64, 3) and len(frames) >= 25  # copy cuts at packets
    turned = [np.rot90(upright, k, axes=(1, 2)) for k in (1, -1)]
    assert min(np.abs(frames[:25].astype(int) - t.astype(int)).mean() for t in turned) < 3
