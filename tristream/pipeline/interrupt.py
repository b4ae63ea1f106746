"""Clean interruption of a local run: the first Ctrl-C (SIGINT) or SIGTERM stops it well,
a second one exits at once.

While :func:`signals_handled` is active (``tristream.pipeline.run.run`` holds it around a
local pipeline), the first signal sets a flag (and says so on stderr). The per-video DoFn
then starts no new video, stops the one it is decoding at the next frame (its ffmpeg is stopped, its
partial cache entry removed, and it is *not* reported failed), the shard writers and the
finaliser write nothing, and ``run`` raises :class:`RunInterrupted` with the number of
videos whose results are complete in the cache: re-running the same command resumes
from there. A second signal ends the process with status 130 at once.

The flag is process-wide, as a signal is: Beam's in-process runner unpickles its DoFns in
this process, so they read it here. Workers in other processes (``--direct_running_mode
multi_processing``, Dask, Dataflow) do not see it: those runners are stopped their own way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

#: Exit status of an interrupted run (128 + SIGINT), as shells use.
EXIT_INTERRUPTED = 130

_stop = threading.Event()


class Interrupted(BaseException):
    """Raised inside a video's work when the run was asked to stop. A BaseException, so that
    the per-video ``except Exception`` that turns errors into failures lets it through."""


class RunInterrupted(RuntimeError):
    """The run stopped on a signal; ``done`` videos are complete in the cache."""

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(
            f"interrupted: {done} of {total} videos done, re-run the same command to resume"
        )


def requested() -> bool:
    """Whether a stop was asked for (the first signal came)."""
    return _stop.is_set()


def check() -> None:
    """Raise :class:`Interrupted` if a stop was asked for."""
    if _stop.is_set():
        raise Interrupted


def check_run(done: int, total: int) -> None:
    """Raise :class:`RunInterrupted` (``done`` of ``total`` videos) if a stop was asked for."""
    if _stop.is_set():
        raise RunInterrupted(done, total)


def request() -> None:
    """Ask the run to stop (what the first signal does)."""
    _stop.set()


def _handler(signum, frame) -> None:
    if _stop.is_set():  # the second signal: at once
        sys.stderr.write("\ninterrupted again: exiting now\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    _stop.set()
    sys.stderr.write("\nstopping: no new videos, the current ones end; again to exit now\n")
    sys.stderr.flush()


@contextlib.contextmanager
def signals_handled() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as this module says for the block (main thread only; in
    another thread nothing changes). The flag is cleared on entry and on exit."""
    _stop.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop.clear()
