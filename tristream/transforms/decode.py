"""Decode videos into RGB frames with ffmpeg, streamed in bounded segments.

ffmpeg-python builds the command line; the binary is, in order: the path in
``$TRISTREAM_FFMPEG``, ``ffmpeg`` on ``PATH``, or the one bundled with the
``imageio-ffmpeg`` wheel. Frames come through a pipe as a PPM image stream,
and memory holds one segment at a time.

The output size is computed here, by :func:`output_size`, from the probed size
after display rotation, and handed to ffmpeg as an explicit ``scale=W:H``:
ffmpeg's own aspect-keeping options round differently from one release to the
next (Debian's 5.1 makes bikes.mp4 152x64 at short side 64, the 9.0 wheel
150x64), and the shards must not depend on which binary decoded them. Given the
size, the pixels agree too: ffmpeg 5.1 and 9.0 give byte-identical rgb24 frames
for the sample videos (see ``docs/decoding.md``).
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import ffmpeg
import numpy as np


class DecodeError(RuntimeError):
    """A video could not be decoded; the message says why in words a user can act on."""


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video's first video stream.

    ``width``/``height`` are the coded size in pixels (before rotation),
    ``rotation`` the display rotation in degrees, ``fps`` the stream's frame
    rate (frames per second), ``duration`` seconds (None when unknown).
    """

    width: int
    height: int
    fps: float
    duration: float | None
    codec: str
    rotation: int = 0

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) in pixels as displayed: swapped for a 90 or 270 degree rotation.

        ffmpeg rotates the frames upright before any filter, so this is the
        size the resize starts from.
        """
        if abs(self.rotation) % 180 == 90:
            return self.height, self.width
        return self.width, self.height


@dataclass(frozen=True)
class Segment:
    """A run of consecutive decoded frames.

    ``index`` counts segments from 0 within the video, ``start_frame`` is the
    index of ``frames[0]`` among all decoded frames, ``frames`` is uint8
    ``[T, H, W, 3]`` RGB, and ``is_last`` is True for the video's final segment.
    """

    index: int
    start_frame: int
    frames: np.ndarray
    is_last: bool


def ffmpeg_exe() -> str:
    """Return the path of the ffmpeg binary to use (see the module docstring)."""
    env = os.environ.get("TRISTREAM_FFMPEG")
    if env:
        return env
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DecodeError(
            "no ffmpeg binary: install ffmpeg, or `pip install imageio-ffmpeg`, "
            "or set TRISTREAM_FFMPEG"
        ) from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffprobe_exe() -> str | None:
    """Return an ffprobe binary that goes with :func:`ffmpeg_exe`, or None.

    ``$TRISTREAM_FFPROBE`` wins; an empty value disables ffprobe. The
    imageio-ffmpeg wheel ships no ffprobe, in which case :func:`probe` parses
    ``ffmpeg -i`` instead.
    """
    if "TRISTREAM_FFPROBE" in os.environ:
        return os.environ["TRISTREAM_FFPROBE"] or None
    sibling = os.path.join(os.path.dirname(ffmpeg_exe()), "ffprobe")
    if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
        return sibling
    return None


def _check_readable(path: str) -> None:
    if "://" in path:
        return  # a URL: let ffmpeg tell
    if not os.path.exists(path):
        raise DecodeError(f"file not found: {path}")
    if os.path.isdir(path):
        raise DecodeError(f"is a directory, not a video: {path}")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise DecodeError(f"empty file (0 bytes): {path}")


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "N/A"):
        return 0.0
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return 0.0


def _stderr_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message from ffmpeg"


def _probe_ffprobe(path: str, exe: str, timeout: float | None) -> VideoInfo:
    cmd = [exe, "-v", "error", "-show_streams", "-show_format", "-of", "json", path]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        reason = _stderr_reason(proc.stderr.decode("utf-8", "replace"))
        raise DecodeError(f"not a readable video ({reason})")
    data = json.loads(proc.stdout or b"{}")
    videos = [s for s in data.get("streams", []) if s.get("codec_type") == "video"]
    videos = [s for s in videos if not s.get("disposition", {}).get("attached_pic")]
    if not videos:
        raise DecodeError("no video stream in file")
    s = videos[0]
    rotation = 0
    for side in s.get("side_data_list", []):
        if "rotation" in side:
            rotation = int(round(float(side["rotation"])))
    if "rotate" in s.get("tags", {}):
        rotation = int(s["tags"]["rotate"])
    fps = _rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate"))
    duration = s.get("duration") or data.get("format", {}).get("duration")
    return VideoInfo(
        width=int(s.get("width", 0)),
        height=int(s.get("height", 0)),
        fps=fps,
        duration=float(duration) if duration not in (None, "N/A") else None,
        codec=str(s.get("codec_name", "")),
        rotation=rotation,
    )


_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<codec>[\w-]+).*?, (?P<w>\d+)x(?P<h>\d+)")
_FPS_RE = re.compile(r"(?P<v>[\d.]+k?) (?P<unit>fps|tbr)")
_DUR_RE = re.compile(r"Duration: (?P<h>\d+):(?P<m>\d+):(?P<s>[\d.]+)")
_ROT_RE = re.compile(r"rotation of (?P<deg>-?[\d.]+) degrees|rotate\s*:\s*(?P<tag>-?\d+)")


def _probe_ffmpeg(path: str, exe: str, timeout: float | None) -> VideoInfo:
    cmd = [exe, "-hide_banner", "-nostdin", "-i", path]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    text = proc.stderr.decode("utf-8", "replace")
    if "Input #0" not in text:
        raise DecodeError(f"not a readable video ({_stderr_reason(text)})")
    video_lines = [ln for ln in text.splitlines() if "Video:" in ln and "attached pic" not in ln]
    match = _STREAM_RE.search(video_lines[0]) if video_lines else None
    if match is None:
        raise DecodeError("no video stream in file")
    rates = {m["unit"]: m["v"] for m in _FPS_RE.finditer(video_lines[0])}
    fps_text = rates.get("fps") or rates.get("tbr") or "0"
    fps = float(fps_text[:-1]) * 1000 if fps_text.endswith("k") else float(fps_text)
    dur = _DUR_RE.search(text)
    duration = None
    if dur:
        duration = int(dur["h"]) * 3600 + int(dur["m"]) * 60 + float(dur["s"])
    rot = _ROT_RE.search(text)
    rotation = 0
    if rot:
        rotation = int(round(float(rot["deg"] if rot["deg"] is not None else rot["tag"])))
    return VideoInfo(
        width=int(match["w"]),
        height=int(match["h"]),
        fps=fps,
        duration=duration,
        codec=match["codec"],
        rotation=rotation,
    )


def probe(path: str, timeout: float | None = 60.0) -> VideoInfo:
    """Probe ``path`` (a file path or URL) for its first video stream.

    Uses ffprobe when one is available next to ffmpeg, else parses
    ``ffmpeg -i``. Raises :class:`DecodeError` with a readable reason for a
    missing, empty or unreadable file, or a file with no video stream.
    """
    _check_readable(path)
    exe = ffprobe_exe()
    try:
        if exe:
            return _probe_ffprobe(path, exe, timeout)
        return _probe_ffmpeg(path, ffmpeg_exe(), timeout)
    except subprocess.TimeoutExpired as exc:
        raise DecodeError(f"probe timed out after {timeout:.1f} s") from exc


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Size ``(width, height)`` in pixels of frames resized to ``short_side``, aspect kept.

    The rule, in exact rational arithmetic (no floating point):

    - the short side becomes ``short_side`` exactly;
    - the long side becomes the even integer nearest to
      ``long * short_side / short``; a value exactly halfway between two even
      integers (an odd integer) goes to the larger one;
    - a square source stays square: ``(short_side, short_side)``.

    For an even ``short_side`` this is what ``ffmpeg -vf scale=-2:S`` (``S:-2``
    for portrait) gives, e.g. 640x272 -> 602x256 at 256 and 150x64 at 64,
    640x480 -> 342x256. ``width``/``height`` are the displayed size (after rotation,
    see :attr:`VideoInfo.display_size`); pixels are taken as square (the sample
    aspect ratio is ignored, as ffmpeg's scale filter does).
    """
    if width <= 0 or height <= 0:
        raise DecodeError(f"unknown frame size {width}x{height}: cannot resize")
    if short_side <= 0:
        raise ValueError(f"short_side must be positive, got {short_side}")
    if width == height:
        return short_side, short_side
    long, short = max(width, height), min(width, height)
    # Nearest even integer to x = long * S / short: 2 * floor(x / 2 + 1/2).
    half = Fraction(long * short_side, 2 * short)
    long_out = 2 * math.floor(half + Fraction(1, 2))
    return (long_out, short_side) if width > height else (short_side, long_out)


def decode_command(
    path: str,
    fps: float = 25.0,
    short_side: int = 256,
    start: float | None = None,
    end: float | None = None,
    info: VideoInfo | None = None,
) -> list[str]:
    """Build the ffmpeg command line that writes RGB PPM frames to stdout.

    ``fps`` > 0 resamples with ffmpeg's fps filter (0 keeps the source rate);
    ``short_side`` > 0 resizes bilinearly (``scale=W:H:flags=bilinear``) to the
    size :func:`output_size` gives for the displayed size of ``info`` (the
    video is probed when ``info`` is None); 0 keeps the decoded size.
    ``start``/``end`` (seconds) select a time range.
    """
    input_kwargs: dict[str, float] = {}
    if start is not None and start > 0:
        input_kwargs["ss"] = float(start)
    if end is not None:
        duration = float(end) - float(start or 0.0)
        if duration <= 0:
            raise DecodeError(f"empty time range: start={start} end={end}")
        input_kwargs["t"] = duration
    stream = ffmpeg.input(path, **input_kwargs).video
    if fps and fps > 0:
        stream = stream.filter("fps", fps=fps)
    if short_side and short_side > 0:
        if info is None:
            info = probe(path)
        width, height = output_size(*info.display_size, short_side)
        stream = stream.filter("scale", width, height, flags="bilinear")
    out = ffmpeg.output(stream, "pipe:", format="image2pipe", vcodec="ppm", pix_fmt="rgb24")
    out = out.global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    return out.compile(cmd=ffmpeg_exe())


def _read_ppm(pipe) -> np.ndarray | None:
    """Read one binary PPM (P6) frame from ``pipe``; None at a clean end of stream."""
    header: list[bytes] = []
    while len(header) < 4:
        line = pipe.readline()
        if not line:
            if header:
                raise DecodeError("stream ended inside a frame header")
            return None
        header.extend(line.split())
    magic, w, h, maxval = header[:4]
    if magic != b"P6" or maxval != b"255":
        raise DecodeError(f"unexpected frame header from ffmpeg: {b' '.join(header)!r}")
    width, height = int(w), int(h)
    frame = np.empty((height, width, 3), dtype=np.uint8)
    view = memoryview(frame).cast("B")
    got = 0
    while got < len(view):
        n = pipe.readinto(view[got:])
        if not n:
            raise DecodeError(f"stream ended inside a frame ({got} of {len(view)} bytes)")
        got += n
    return frame


def decode_segments(
    path: str,
    fps: float = 25.0,
    short_side: int = 256,
    max_frames: int = 300,
    start: float | None = None,
    end: float | None = None,
    timeout: float | None = None,
    min_frames: int = 1,
    info: VideoInfo | None = None,
    on_frame: Callable[[], None] | None = None,
) -> Iterator[Segment]:
    """Decode ``path`` and yield :class:`Segment` s of at most ``max_frames`` frames.

    Consecutive segments overlap by one frame (the last frame of segment k is
    the first of segment k+1), so each pair of consecutive frames lies in
    exactly one segment. Frames are uint8 ``[T, H, W, 3]`` RGB after ffmpeg's
    rotation, the fps filter and the resize (see :func:`decode_command`; the
    size comes from :func:`output_size`). ``info`` is the video's
    :func:`probe` result, when the caller has it; without it a resize probes
    the video first (within ``timeout``). Memory holds at most one segment.
    ``timeout`` (seconds) kills a hung decode. Raises :class:`DecodeError`
    with ffmpeg's reason on failure (with the probe's for an unreadable file),
    when fewer than ``min_frames`` frames are decoded, and for a truncated file
    (ffmpeg's demuxer reports a partial file) — always before the segment
    marked ``is_last`` is yielded, so a consumer never takes a failed video
    for a complete one. ``on_frame()`` is called as each frame arrives from
    ffmpeg (each once, the overlap not again), for progress on long videos.
    """
    if max_frames < 2:
        raise ValueError("max_frames must be at least 2 (segments overlap by one frame)")
    _check_readable(path)
    if info is None and short_side and short_side > 0:
        info = probe(path, timeout=timeout)
    cmd = decode_command(path, fps=fps, short_side=short_side, start=start, end=end, info=info)
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stderr_tail: collections.deque[bytes] = collections.deque(maxlen=50)
    drain = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr), daemon=True)
    drain.start()
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, _kill) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()

    def _fail(message: str) -> DecodeError:
        if timed_out.is_set():
            return DecodeError(f"decode timed out after {timeout:.1f} s")
        proc.wait()
        drain.join(timeout=5)
        reason = _stderr_reason(b"".join(stderr_tail).decode("utf-8", "replace"))
        return DecodeError(f"{message} (ffmpeg exit {proc.returncode}: {reason})")

    def _finish(total: int) -> None:
        """At end of stream: raise unless ffmpeg ended cleanly on a whole file."""
        proc.stdout.close()
        rc = proc.wait()
        drain.join(timeout=5)
        if rc != 0 or timed_out.is_set():
            raise _fail("ffmpeg failed")
        log = b"".join(stderr_tail).decode("utf-8", "replace")
        if "partial file" in log:
            raise DecodeError(f"truncated file: data ends early after {total} frame(s)")
        if total == 0:
            raise _fail("no frames decoded")
        if total < min_frames:
            raise DecodeError(f"only {total} frame(s) decoded, at least {min_frames} needed")

    try:
        buffer: list[np.ndarray] = []
        index = 0
        start_frame = 0
        pending = _read_ppm(proc.stdout)
        if pending is None:
            _finish(0)
        while pending is not None:
            buffer.append(pending)
            if on_frame is not None:
                on_frame()
            pending = _read_ppm(proc.stdout)
            if len(buffer) == max_frames or pending is None:
                if pending is None:
                    # Check the whole decode before the last segment leaves: a
                    # consumer that saw is_last may treat the video as complete.
                    _finish(start_frame + len(buffer))
                yield Segment(index, start_frame, np.stack(buffer), is_last=pending is None)
                if pending is None:
                    break
                index += 1
                start_frame += len(buffer) - 1
                buffer = [buffer[-1]]
    except DecodeError as exc:
        if "(ffmpeg exit" in str(exc) or any(
            word in str(exc) for word in ("timed out", "truncated", "only ")
        ):
            raise
        raise _fail(str(exc)) from exc
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def decode_video(path: str, **kwargs) -> np.ndarray:
    """Decode a whole (short) video to uint8 ``[T, H, W, 3]``; see :func:`decode_segments`.

    Holds every frame in memory: meant for tests and small clips.
    """
    kwargs["max_frames"] = 1 << 30
    frames = [seg.frames for seg in decode_segments(path, **kwargs)]
    return np.concatenate(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
