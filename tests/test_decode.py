"""Decoding real videos with ffmpeg: frame counts, sizes, ranges, segments, errors.

The size and pixel tests run under both ffmpeg builds (the ``ffmpeg_build``
fixture): the distribution's (Debian 5.1) and the imageio-ffmpeg wheel's (9.0).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    FFMPEG,
    SYSTEM_FFPROBE,
    ffmpeg,
    ffmpeg_scale_minus2_size,
    reference_frames,
)
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


def test_given_info_sets_the_size_without_probing(carphone, caplog):
    info = probe(carphone)
    assert "scale=78:64:flags=bilinear" in " ".join(decode_command(carphone, 25, 64, info=info))
    # A (wrong) square info is taken at its word: the frames come out square, with a
    # warning that they are not the size it gave.
    square = VideoInfo(width=100, height=100, fps=info.fps, duration=None, codec="h264")
    caplog.set_level(logging.WARNING, logger="tristream.transforms.decode")
    frames = decode_video(carphone, short_side=64, info=square, end=1)
    assert frames.shape == (25, 64, 64, 3)
    assert [r.getMessage() for r in caplog.records] == [
        f"{carphone}: the frames are 176x144, but the probe found 100x100; all frames are "
        "stored at 64x64 (from the probed size), stretched to it"
    ]


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


# --- The stall guard, non-regular files, a frame size that changes midway ------------------


@contextlib.contextmanager
def _tcp_feed(data: bytes, head: int | None = None, chunks: int = 1, pause: float = 0.0,
              hold: bool = False) -> Iterator[str]:  # fmt: skip
    """Serve ``data`` to the first client of a local TCP port, whose ``tcp://`` URL is
    yielded: the first ``head`` bytes (default: all) at once, the rest in ``chunks``
    pieces ``pause`` seconds apart; then close the connection, or with ``hold`` keep it
    open without sending anything until the block ends (a source that stalls)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)
    release = threading.Event()
    head = len(data) if head is None else head

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            try:
                conn.sendall(data[:head])
                rest = data[head:]
                step = max(1, -(-len(rest) // chunks))
                for i in range(0, len(rest), step):
                    time.sleep(pause)
                    conn.sendall(rest[i : i + step])
            except OSError:
                return  # the client went away (ffmpeg was killed)
            if hold:
                release.wait(60)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        release.set()  # unblocks a decode that the guard failed to stop: no hung test
        server.close()
        thread.join(10)


def _within(seconds: float, work: Callable[[], object]) -> BaseException | None:
    """Run ``work()`` in a thread and return what it raised (None: nothing). Only a safety
    net against a hung test: failing to finish within ``seconds`` fails the test."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: hung")
    return raised[0] if raised else None


def _stitch(segments) -> np.ndarray:
    """The frames of overlapping segments, each frame once."""
    return np.concatenate([s.frames if i == 0 else s.frames[1:] for i, s in enumerate(segments)])


@pytest.fixture(scope="module")
def bikes_ts(bikes, tmp_path_factory) -> str:
    """bikes.mp4's stream copied into MPEG-TS, a format ffmpeg reads from a socket."""
    path = str(tmp_path_factory.mktemp("ts") / "bikes.ts")
    ffmpeg("-i", bikes, "-c", "copy", "-f", "mpegts", path)
    return path


def test_stall_guard_stops_a_decode_that_gets_no_new_frame(bikes_ts, ffmpeg_build):
    data = Path(bikes_ts).read_bytes()
    info = probe(bikes_ts)
    seen: list = []

    def decode() -> None:
        for seg in decode_segments(url, short_side=32, max_frames=20, timeout=1.5, info=info):
            seen.append(seg)

    # A third of the stream, then an open connection that sends nothing more.
    with _tcp_feed(data, head=len(data) // 3, hold=True) as url:
        error = _within(60, decode)
    assert isinstance(error, DecodeError), error
    assert str(error) == "no frame from ffmpeg for 1.5 s (stalled decode)"
    # The frames that came before the stall were handed out, none as the last.
    assert len(seen) >= 2 and not any(s.is_last for s in seen)
    got = _stitch(seen)
    assert np.array_equal(got, decode_video(bikes_ts, short_side=32)[: len(got)])


def test_stall_guard_restarts_with_every_frame(bikes_ts, ffmpeg_build):
    """A source that trickles: the decode takes longer than the guard's seconds in all, but a
    new frame always comes sooner, so it completes (a deadline for the whole decode fails)."""
    data = Path(bikes_ts).read_bytes()
    # 60% at once (ffmpeg reads ahead before its first frame), then 16 pieces 0.2 s apart:
    # more than twice the guard's 1.5 s in all, about 0.4 s at most between two frames.
    with _tcp_feed(data, head=len(data) * 6 // 10, chunks=16, pause=0.2) as url:
        segments = []
        error = _within(60, lambda: segments.extend(decode_segments(
            url, short_side=32, max_frames=100, timeout=1.5, info=probe(bikes_ts))))  # fmt: skip
    assert error is None, error
    assert np.array_equal(_stitch(segments), decode_video(bikes_ts, short_side=32))


def test_time_a_segment_is_out_with_the_consumer_does_not_count(bikes, ffmpeg_build):
    segments = []
    for seg in decode_segments(bikes, short_side=32, max_frames=20, end=1.2, timeout=1.5):
        segments.append(seg)
        time.sleep(2.0)  # flow and pose on this segment, longer than the guard's 1.5 s
    assert [(s.start_frame, len(s.frames), s.is_last) for s in segments] == [
        (0, 20, False),
        (19, 11, True),
    ]
    assert np.array_equal(_stitch(segments), decode_video(bikes, short_side=32, end=1.2))


def test_probe_that_gets_no_answer_is_stopped(ffmpeg_build):
    tool = "ffprobe" if ffmpeg_build == "system" else "ffmpeg"
    with _tcp_feed(b"", hold=True) as url:
        error = _within(60, lambda: probe(url, timeout=1))
    assert isinstance(error, DecodeError), error
    assert str(error) == f"no answer from {tool} for 1 s (stalled probe)"


def test_a_named_pipe_or_device_is_refused_before_ffmpeg_starts(tmp_path, monkeypatch):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # no writer ever opens it: ffmpeg would wait on it forever

    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("ffmpeg was started")

    monkeypatch.setattr(decode.subprocess, "Popen", no_ffmpeg)
    monkeypatch.setattr(decode.subprocess, "run", no_ffmpeg)
    expected = (
        f"not a regular file (a named pipe (FIFO); it could block the decode forever): {fifo}"
    )
    for work in (lambda: probe(str(fifo)), lambda: list(decode_segments(str(fifo))),
                 lambda: list(decode_segments(str(fifo), short_side=0))):  # fmt: skip
        error = _within(30, work)
        assert isinstance(error, DecodeError) and str(error) == expected, error
    error = _within(30, lambda: list(decode_segments("/dev/null", short_side=0)))
    assert isinstance(error, DecodeError) and "(a character device;" in str(error), error


@pytest.fixture(scope="module")
def two_sizes(bikes, tmp_path_factory) -> tuple[str, str, str]:
    """One H.264 stream in MPEG-TS whose frame size changes after 1 s: 1 s of bikes at
    320x136, then 1 s at 160x120 (4:3, square pixels), joined by the concat demuxer
    without re-encoding. Returns (joined, first part, second part)."""
    d = tmp_path_factory.mktemp("two_sizes")
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"]
    ffmpeg("-i", bikes, "-t", "1", "-vf", "scale=320:136", *x264, str(d / "a.ts"))
    ffmpeg("-ss", "2", "-i", bikes, "-t", "1", "-vf", "scale=160:120,setsar=1", *x264,
           str(d / "b.ts"))  # fmt: skip
    (d / "list.txt").write_text("file 'a.ts'\nfile 'b.ts'\n")
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(d / "list.txt"), "-c", "copy", str(d / "ab.ts"))
    return str(d / "ab.ts"), str(d / "a.ts"), str(d / "b.ts")


def test_a_size_change_midway_keeps_the_first_size_and_warns_once(two_sizes, ffmpeg_build, caplog):
    joined, first, second = two_sizes
    # The stream really changes size: ffprobe sees 25 frames of each; the probe, the first.
    sizes = subprocess.run(
        [SYSTEM_FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "frame=width,height", "-of", "csv=p=0", joined],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    sizes = [s.rstrip(",") for s in sizes]  # a frame with side data ends in a comma
    assert sizes == ["320,136"] * 25 + ["160,120"] * 25
    info = probe(joined)
    assert (info.width, info.height) == (320, 136)

    caplog.set_level(logging.WARNING, logger="tristream.transforms.decode")
    frames = decode_video(joined, short_side=64)
    # All 50 frames at the size the first part gives (320x136 -> 150x64).
    assert frames.shape == (50, 64, 150, 3)
    # The first part's frames are its own decode's, to the pixel. ffmpeg sets its filter
    # graph up anew at the change: the fps filter drops the first part's last frame and
    # repeats the second part's first, and the new graph converts to RGB after resizing
    # (the same size), so the second part matches its own decode, stretched from 4:3 to
    # 150x64 by the scale filter, within about one grey level.
    assert np.array_equal(frames[:24], reference_frames(first, 25, 64, 150)[:24])
    stretched = reference_frames(second, 25, 64, 150)
    assert np.abs(frames[26:].astype(int) - stretched[1:]).mean() < 2.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{joined}: the frame size changes within the video, from 320x136 to 160x120; all "
        "frames are stored at 150x64 (from the first size), those of the other size "
        "stretched to it"
    ]

    # short_side 0 keeps the first decoded size for every frame, with the same warning.
    caplog.clear()
    kept = decode_video(joined, short_side=0)
    assert kept.shape == (50, 136, 320, 3)
    assert len(caplog.records) == 1 and "stored at 320x136" in caplog.records[0].getMessage()


def test_videos_of_one_size_decode_without_a_warning(bikes, carphone, tmp_path, caplog):
    rotated = str(tmp_path / "rotated.mp4")
    ffmpeg("-display_rotation", "90", "-i", carphone, "-t", "1", "-c", "copy", rotated)
    caplog.set_level(logging.DEBUG, logger="tristream.transforms.decode")
    for path in (bikes, carphone, rotated):
        for short_side in (64, 0):
            decode_video(path, short_side=short_side, end=1)
    assert not caplog.records


def test_process_video_gives_the_stall_guard_and_no_deadline(bikes, tmp_path):
    """``--timeout`` reaches the decode as the stall guard: a video whose rows take longer
    to consume than the timeout (slow flow or pose) is processed whole."""
    from tristream.config import RunConfig
    from tristream.process import Models, VideoTask, process_video

    config = RunConfig.from_options(
        output=str(tmp_path), input=bikes, short_side=32, max_frames=20, flow="none", timeout=1.0
    )
    rows = []
    for row in process_video(VideoTask("bikes", bikes, "train", end=1.2), config,
                             Models(config, "test")):  # fmt: skip
        rows.append(row)
        time.sleep(1.5)  # the work on a row, as a slow flow backend would take
    assert [(r.index, r.num_frames, r.is_last) for r in rows] == [(0, 20, False), (1, 11, True)]
