"""Progress bars for local runs: videos done (and failed), frames decoded with frames/s.

Fed by the per-video DoFn as it goes: frames are counted as they are decoded,
so a single long video shows its frames and rate moving, not ``0/1`` until it
ends. The calls work when the pipeline runs in this process (the default local
runner); elsewhere (other processes, cluster runners) they do nothing and
Beam's metrics report progress instead.

While the bars are shown, log records (and Python warnings) that would go to the
console are written above them the way ``tqdm.write`` writes: the bars are cleared,
the line is written, the bars are drawn again, all under tqdm's lock, so a warning
never lands inside a bar's line. The root logger's console handlers (stream handlers
on stdout or stderr) and :data:`logging.lastResort` are wrapped for that time and put
back by :func:`close`; other handlers (files, pytest's capture) are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Iterator

from tqdm import tqdm

_lock = threading.Lock()
_videos: tqdm | None = None
_frames: tqdm | None = None
_failed = 0
#: (warnings.showwarning as start() found it, the one standing in for it) while the bars show.
_showwarning: tuple | None = None


@contextlib.contextmanager
def _above_bars() -> Iterator[None]:
    """Clear the shown bars, let the caller write whole lines, draw the bars again.

    tqdm.write's own steps, done on these bars whatever stream the line goes to
    (tqdm.write clears only bars it takes for the same stream, and a run swaps
    ``sys.stderr`` for a wrapper after logging was set up).
    """
    with tqdm.get_lock():
        bars = [bar for bar in (_videos, _frames) if bar is not None and not bar.disable]
        for bar in bars:
            bar.clear(nolock=True)
        try:
            yield
        finally:
            for bar in bars:
                bar.refresh(nolock=True)


class _AboveBars(logging.Handler):
    """Stands in for a console handler while the bars are shown: the handler itself
    filters, formats and writes each record, between clearing and redrawing the bars."""

    def __init__(self, inner: logging.Handler):
        super().__init__(inner.level)
        self.inner = inner

    def handle(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.inner.level or not self.inner.filter(record):
            return False
        with _above_bars():
            self.inner.handle(record)
        return True


def _is_console(handler: logging.Handler) -> bool:
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    stream = getattr(handler, "stream", None)
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and any(stream is c for c in consoles if c is not None)
    )


def _write_logs_above_bars() -> None:
    global _showwarning
    root = logging.getLogger()
    root.handlers = [_AboveBars(h) if _is_console(h) else h for h in root.handlers]
    if logging.lastResort is not None and not isinstance(logging.lastResort, _AboveBars):
        logging.lastResort = _AboveBars(logging.lastResort)
    if _showwarning is None:
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            with _above_bars():
                original(message, category, filename, lineno, file, line)

        _showwarning = (original, show)
        warnings.showwarning = show


def _restore_logs() -> None:
    global _showwarning
    root = logging.getLogger()
    root.handlers = [h.inner if isinstance(h, _AboveBars) else h for h in root.handlers]
    if isinstance(logging.lastResort, _AboveBars):
        logging.lastResort = logging.lastResort.inner
    if _showwarning is not None:
        original, show = _showwarning
        if warnings.showwarning is show:  # else someone has set theirs since: keep that
            warnings.showwarning = original
        _showwarning = None


def start(total_videos: int, enabled: bool | None = None) -> None:
    """Open the bars for ``total_videos`` videos; ``enabled`` None means "if stderr is a TTY"."""
    global _videos, _frames, _failed
    if enabled is None:
        enabled = sys.stderr.isatty()
    _failed = 0
    _videos = tqdm(total=total_videos, unit="video", disable=not enabled, dynamic_ncols=True,
                   position=0, postfix={"failed": 0})  # fmt: skip
    _frames = tqdm(unit="frame", desc="decoded", disable=not enabled, dynamic_ncols=True,
                   position=1, smoothing=0.1)  # fmt: skip
    if enabled:
        _write_logs_above_bars()


def frames(n: int) -> None:
    """Count ``n`` newly decoded frames."""
    if _frames is not None:
        with _lock:
            _frames.update(n)


def video_done(failed: bool = False) -> None:
    """Count one finished (or failed) video."""
    global _failed
    if _videos is not None:
        with _lock:
            _failed += int(failed)
            _videos.set_postfix(failed=_failed, refresh=False)
            _videos.update(1)


def counts() -> tuple[int, int, int]:
    """(videos done, of which failed, frames decoded) so far; zeros when no bar is open."""
    with _lock:
        if _videos is None or _frames is None:
            return 0, 0, 0
        return int(_videos.n), _failed, int(_frames.n)


def close() -> None:
    """Close the bars (log records and warnings go straight to their streams again)."""
    global _videos, _frames
    _restore_logs()
    with _lock:
        for bar in (_videos, _frames):
            if bar is not None:
                bar.close()
        _videos = _frames = None
