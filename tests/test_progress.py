"""Progress on long work: frames are counted as ffmpeg delivers them, not when a video ends."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator

from tristream.config import RunConfig
from tristream.pipeline import progress
from tristream.pipeline.run import run
from tristream.process import Models, VideoTask, process_video
from tristream.transforms.decode import decode_segments


def test_decode_reports_each_frame_as_it_arrives(carphone):
    seen: list[int] = []
    count = [0]

    def on_frame() -> None:
        count[0] += 1

    segments = decode_segments(carphone, short_side=32, max_frames=40, end=2.0, on_frame=on_frame)
    for seg in segments:
        seen.append(count[0])
        # Every frame of this segment was reported before the segment left, the
        # shared first frame only once (it was reported with the previous segment).
        assert count[0] == seg.start_frame + len(seg.frames)
    assert len(seen) == 2 and count[0] == 50  # 2 s at 25 fps: 40 + 11 (one shared)


def test_process_video_reports_frames_before_its_first_row(bikes, tmp_path):
    config = RunConfig.from_options(
        output=str(tmp_path), input=bikes, short_side=32, max_frames=300, flow="none"
    )
    calls: list[int] = []
    rows = process_video(VideoTask("bikes", bikes, "train", end=2.0), config,
                         Models(config, "test"), on_frames=calls.append)  # fmt: skip
    first = next(rows)
    assert calls == [1] * 50 and first.num_frames == 50  # one 50-frame segment
    assert next(rows, None) is None


def test_a_run_shows_frames_and_frames_per_second(carphone, tmp_path, monkeypatch, capsys):
    real_start = progress.start
    monkeypatch.setattr(progress, "start", lambda n, enabled=None: real_start(n, enabled=True))
    config = RunConfig.from_options(
        output=str(tmp_path), input=carphone, short_side=32, flow="none", workers=1
    )
    run(config)
    err = capsys.readouterr().err
    frames = [int(n) for n in re.findall(r"decoded: (\d+)frame", err)]
    assert frames and frames[-1] == 100  # carphone: 4 s at 25 fps
    assert re.search(r"decoded: 100frame \[[^\]]*frame/s\]", err)
    assert re.search(r"1/1 \[[^\]]*failed=0\]", err)


# --- Log records and warnings while the bars are shown --------------------------------------


def _screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: characters overwrite what is under the
    cursor, ``\\r`` goes to the line's start, ``\\n`` to the next line's, ``ESC [A`` one
    line up (all tqdm writes). Trailing spaces dropped."""
    rows: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[A|.|\n", text, re.S):
        if token == "\x1b[A":
            row = max(0, row - 1)
        elif token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
        else:
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = token
            col += 1
    return ["".join(line).rstrip() for line in rows]


@contextlib.contextmanager
def _console() -> Iterator[logging.Handler]:
    """A console log handler on the root logger (as ``logging.basicConfig`` sets up), on
    the stderr of the moment (pytest's capture); removed afterwards, with the bars closed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        progress.close()
        root.removeHandler(handler)


_VIDEOS_BAR = r" *\d+%\|[^|]*\| \d+/\d+ \[[^\]]*failed=\d+\]"
_FRAMES_BAR = r"decoded: \d+frame \[[^\]]*frame/s\]"


def test_a_log_record_while_the_bars_show_is_a_whole_line_above_them(capsys):
    root = logging.getLogger()
    with _console() as console:
        progress.start(2, enabled=True)
        progress.frames(7)
        logging.getLogger("tristream.transforms.decode").warning("clip.mp4: the size changes")
        assert console not in root.handlers  # it writes through its stand-in meanwhile
        progress.frames(3)
        progress.video_done()
        progress.close()
        assert console in root.handlers and not any(
            isinstance(h, progress._AboveBars) for h in root.handlers
        )
        logging.getLogger("tristream").warning("after the bars")
    screen = _screen(capsys.readouterr().err)
    assert screen[0] == "WARNING tristream.transforms.decode: clip.mp4: the size changes"
    assert re.fullmatch(_VIDEOS_BAR, screen[1]) and " 1/2 " in screen[1]
    assert re.fullmatch(_FRAMES_BAR, screen[2]) and "decoded: 10frame" in screen[2]
    assert screen[3:] == ["WARNING tristream: after the bars"]


def test_log_records_from_many_threads_never_break_a_bar(capsys):
    start = threading.Barrier(5)

    def worker(k: int) -> None:
        start.wait()
        for i in range(15):
            progress.frames(1)
            logging.getLogger(f"tristream.w{k}").warning("record %d of worker %d", i, k)
            time.sleep(0.01)  # past tqdm's 0.1 s between redraws, now and then
        progress.video_done()

    with _console():
        progress.start(4, enabled=True)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        start.wait()
        for t in threads:
            t.join()
    screen = _screen(capsys.readouterr().err)
    expected = {
        f"WARNING tristream.w{k}: record {i} of worker {k}" for k in range(4) for i in range(15)
    }
    assert sorted(screen[:60]) == sorted(expected)  # each record whole, on its own line
    assert re.fullmatch(_VIDEOS_BAR, screen[60]) and " 4/4 " in screen[60]
    assert re.fullmatch(_FRAMES_BAR, screen[61]) and "decoded: 60frame" in screen[61]
    assert len(screen) == 62


def test_a_python_warning_while_the_bars_show_is_written_above_them(capsys):
    def to_stderr(message, category, filename, lineno, file=None, line=None):
        # What Python's default does (to a stderr looked up when it writes).
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, ""))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = to_stderr
        try:
            progress.start(1, enabled=True)
            progress.frames(5)
            warnings.warn("a deprecated option", DeprecationWarning, stacklevel=1)
            progress.video_done()
        finally:
            progress.close()
        assert warnings.showwarning is to_stderr
    screen = _screen(capsys.readouterr().err)
    warning = rf"{re.escape(__file__)}:\d+: DeprecationWarning: a deprecated option"
    assert re.fullmatch(warning, screen[0]), screen[0]
    assert re.fullmatch(_VIDEOS_BAR, screen[1]) and re.fullmatch(_FRAMES_BAR, screen[2])
