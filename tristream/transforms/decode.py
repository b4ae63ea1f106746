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

A decode's ``timeout`` is a stall guard (no new frame from ffmpeg for that long),
not a budget for the video; a local path that is not a regular file (a named pipe,
a device) is refused before ffmpeg starts; a stream whose frame size changes
midway keeps its first size, with one warning (all in ``docs/decoding.md``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import ffmpeg
import numpy as np

LOG = logging.getLogger(__name__)


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


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_file_reason(path: str) -> str | None:
    """Why the local ``path`` is refused as a video when it is neither a regular file nor
    a folder (a named pipe, device or socket, on which ffmpeg could wait forever), else None.

    Only looks (``os.stat``, following links); never opens the file. The reason is the
    error that :func:`probe` and :func:`decode_segments` raise for it.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return _special_reason(path, mode)


def _special_reason(path: str, mode: int) -> str | None:
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
    return f"not a regular file ({kind}; it could block the decode forever): {path}"


def _check_readable(path: str) -> None:
    """Raise :class:`DecodeError` for a local path that ffmpeg must not be started on:
    missing, a folder, not a regular file (see :func:`special_file_reason`), or empty."""
    if "://" in path:
        return  # a URL: let ffmpeg tell
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DecodeError(f"file not found: {path}") from None
    except OSError as exc:
        raise DecodeError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DecodeError(f"is a directory, not a video: {path}")
    special = _special_reason(path, info.st_mode)
    if special:
        raise DecodeError(special)
    if info.st_size == 0:
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
    missing, empty or unreadable file, a local path that is not a regular file
    (a named pipe, a device: refused before any ffmpeg starts), or a file with no
    video stream. ``timeout`` (seconds; None or 0: none) bounds this one probe: a
    probe that has not answered by then is stopped and raises a "stalled probe" error.
    """
    _check_readable(path)
    timeout = timeout or None
    exe = ffprobe_exe()
    try:
        if exe:
            return _probe_ffprobe(path, exe, timeout)
        return _probe_ffmpeg(path, ffmpeg_exe(), timeout)
    except subprocess.TimeoutExpired as exc:
        tool = "ffprobe" if exe else "ffmpeg"
        raise DecodeError(f"no answer from {tool} for {timeout:g} s (stalled probe)") from exc


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
    # Verbose, each line tagged with its level: decode_segments keeps the errors (a
    # failure's reason) and reads the frame sizes entering the filter graph from it.
    out = out.global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+verbose")
    return out.compile(cmd=ffmpeg_exe())


class _StreamError(DecodeError):
    """ffmpeg's frame stream broke off; :func:`decode_segments` adds ffmpeg's reason."""


def _read_ppm(pipe) -> np.ndarray | None:
    """Read one binary PPM (P6) frame from ``pipe``; None at a clean end of stream."""
    header: list[bytes] = []
    while len(header) < 4:
        line = pipe.readline()
        if not line:
            if header:
                raise _StreamError("stream ended inside a frame header")
            return None
        header.extend(line.split())
    magic, w, h, maxval = header[:4]
    if magic != b"P6" or maxval != b"255":
        raise _StreamError(f"unexpected frame header from ffmpeg: {b' '.join(header)!r}")
    width, height = int(w), int(h)
    frame = np.empty((height, width, 3), dtype=np.uint8)
    view = memoryview(frame).cast("B")
    got = 0
    while got < len(view):
        n = pipe.readinto(view[got:])
        if not n:
            raise _StreamError(f"stream ended inside a frame ({got} of {len(view)} bytes)")
        got += n
    return frame


#: A line's level tag under ``-loglevel level+...``, after its ``[context @ 0x..]`` prefixes.
_LEVEL_RE = re.compile(
    r"^((?:\[[^\[\]]*\] )*)\[(trace|debug|verbose|info|warning|error|fatal|panic)\](?: |$)"
)
#: The filter graph's input (the ``buffer`` source) logs, at verbose level, the size of
#: the decoded frames it is set up for: once at the start, and again whenever ffmpeg sets
#: the graph up anew because the frames changed (both 5.1 and 9.0 log it this way).
_GRAPH_INPUT_RE = re.compile(r"input from stream[^\]]*\].*?\bw:(\d+) h:(\d+) pixfmt:")


class _FfmpegLog:
    """ffmpeg's stderr, read line by line in a thread as ffmpeg writes it: the last error
    lines (a failure's reason), whether a demuxer reported a partial file, and the
    distinct sizes of the decoded frames entering the filter graph, in order."""

    def __init__(self, stream):
        self.errors: collections.deque[str] = collections.deque(maxlen=50)
        self.partial = False
        self.sizes: list[tuple[int, int]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            size = _GRAPH_INPUT_RE.search(line)
            if size:
                wh = (int(size[1]), int(size[2]))
                if wh not in self.sizes and len(self.sizes) < 16:
                    self.sizes.append(wh)
                continue
            level = _LEVEL_RE.match(line)
            if level is None:
                self.errors.append(line)  # a message's continuation line
            elif level[2] in ("error", "fatal", "panic"):
                self.errors.append(level[1] + line[level.end() :])
                # The MP4 demuxer's "stream 0, offset 0x..: partial file".
                self.partial = self.partial or line.endswith("partial file")

    def join(self) -> None:
        self._thread.join(timeout=5)

    def reason(self) -> str:
        return _stderr_reason("\n".join(self.errors))


class _StallGuard:
    """Kills ``proc`` when one wait on it (a ``with guard.waiting():`` block) lasts
    ``seconds``. Time outside those blocks (the consumer holding a segment) never counts.

    One watcher thread per decode; it sleeps without a deadline while nobody waits on
    ffmpeg, and while frames flow it wakes about once every ``seconds``, not per frame.
    """

    def __init__(self, proc: subprocess.Popen, seconds: float):
        self.seconds = seconds
        self.fired = False
        self._proc = proc
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._idle = True  # the watcher waits without a deadline: it must be woken
        self._closed = False
        self._thread = threading.Thread(target=self._watch, daemon=True, name="ffmpeg-stall")
        self._thread.start()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        with self._cond:
            self._deadline = time.monotonic() + self.seconds
            if self._idle:
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._deadline = None

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self.fired = True
                self._proc.kill()
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


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
    the video first (that probe within ``timeout``). Memory holds at most one segment.

    ``timeout`` (seconds; None or 0: none) is a stall guard: when ffmpeg delivers no
    new frame for that long while this function waits for one (the first frame
    included, and ffmpeg's exit after the last), ffmpeg is killed and a "stalled
    decode" :class:`DecodeError` raised. The clock restarts with every frame and stops
    while a segment is out with the caller, so slow work between segments (flow, pose)
    never counts, however long the video.

    Every frame has the first frames' size: a stream whose frame size changes midway
    is resized to the size computed from ``info`` (or kept at its first decoded
    size, for ``short_side`` 0), so frames of another size are stretched to it, and one
    warning per video names both sizes (see ``docs/decoding.md``).

    Raises :class:`DecodeError` with ffmpeg's reason on failure (with the probe's for
    an unreadable file), for a local path that is not a regular file (before starting
    ffmpeg), when fewer than ``min_frames`` frames are decoded, and for a truncated file
    (ffmpeg's demuxer reports a partial file) — always before the segment
    marked ``is_last`` is yielded, so a consumer never takes a failed video
    for a complete one. ``on_frame()`` is called as each frame arrives from
    ffmpeg (each once, the overlap not again), for progress on long videos.
    """
    if max_frames < 2:
        raise ValueError("max_frames must be at least 2 (segments overlap by one frame)")
    _check_readable(path)
    timeout = timeout or None
    if info is None and short_side and short_side > 0:
        info = probe(path, timeout=timeout)
    cmd = decode_command(path, fps=fps, short_side=short_side, start=start, end=end, info=info)
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    log = _FfmpegLog(proc.stderr)
    guard = _StallGuard(proc, timeout) if timeout else None
    waiting = guard.waiting if guard else contextlib.nullcontext
    # The size every frame is resized from: the probed one when the size comes from it.
    resized = info is not None and bool(short_side) and short_side > 0
    expected = (info.width, info.height) if resized else None
    warned = False

    def _stall_error() -> DecodeError | None:
        if guard is not None and guard.fired:
            return DecodeError(f"no frame from ffmpeg for {timeout:g} s (stalled decode)")
        return None

    def _fail(message: str) -> DecodeError:
        stalled = _stall_error()
        if stalled:
            return stalled
        with waiting():
            proc.wait()
        log.join()
        reason = log.reason()
        return _stall_error() or DecodeError(f"{message} (ffmpeg exit {proc.returncode}: {reason})")

    def _warn_on_size_change(out: np.ndarray) -> None:
        nonlocal warned
        sizes = log.sizes
        first = expected or (sizes[0] if sizes else None)
        other = next((s for s in sizes if s != first), None)
        if warned or other is None:
            return
        warned = True
        stored = f"{out.shape[1]}x{out.shape[0]}"
        if other == sizes[0]:  # not a change: the frames are not the size the probe found
            LOG.warning("%s: the frames are %dx%d, but the probe found %dx%d; all frames are "
                        "stored at %s (from the probed size), stretched to it",
                        path, *other, *first, stored)  # fmt: skip
            return
        LOG.warning(
            "%s: the frame size changes within the video, from %dx%d to %dx%d; all frames "
            "are stored at %s (from the first size), those of the other size stretched "
            "to it", path, *first, *other, stored,
        )  # fmt: skip

    def _next_frame() -> np.ndarray | None:
        with waiting():
            return _read_ppm(proc.stdout)

    def _finish(total: int) -> None:
        """At end of stream: raise unless ffmpeg ended cleanly on a whole file."""
        proc.stdout.close()
        with waiting():
            rc = proc.wait()
        log.join()
        if rc != 0 or _stall_error():
            raise _fail("ffmpeg failed")
        if log.partial:
            raise DecodeError(f"truncated file: data ends early after {total} frame(s)")
        if total == 0:
            raise _fail("no frames decoded")
        if total < min_frames:
            raise DecodeError(f"only {total} frame(s) decoded, at least {min_frames} needed")

    try:
        buffer: list[np.ndarray] = []
        index = 0
        start_frame = 0
        pending = _next_frame()
        if pending is None:
            _finish(0)
        while pending is not None:
            buffer.append(pending)
            if on_frame is not None:
                on_frame()
            if not warned and log.sizes:
                _warn_on_size_change(pending)
            pending = _next_frame()
            if len(buffer) == max_frames or pending is None:
                if pending is None:
                    # Check the whole decode before the last segment leaves: a
                    # consumer that saw is_last may treat the video as complete.
                    _finish(start_frame + len(buffer))
                    _warn_on_size_change(buffer[-1])
                yield Segment(index, start_frame, np.stack(buffer), is_last=pending is None)
                if pending is None:
                    break
                index += 1
                start_frame += len(buffer) - 1
                buffer = [buffer[-1]]
    except _StreamError as exc:
        raise _fail(str(exc)) from exc
    finally:
        if guard:
            guard.close()
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
