"""A progress bar for local runs (videos done, frames decoded), fed by the stages.

The stages of one bundle run in one process, so a module-level bar works when
the pipeline runs in this process (the default local runner). Elsewhere (other
processes, cluster runners) the calls do nothing and Beam's metrics report
progress instead.
"""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

_lock = threading.Lock()
_bar: tqdm | None = None
_frames = 0
_failed = 0


def start(total_videos: int, enabled: bool | None = None) -> None:
    """Open the bar for ``total_videos`` videos; ``enabled`` None means "if stderr is a TTY"."""
    global _bar, _frames, _failed
    if enabled is None:
        enabled = sys.stderr.isatty()
    _frames = _failed = 0
    _bar = tqdm(total=total_videos, unit="video", disable=not enabled, dynamic_ncols=True)


def frames(n: int) -> None:
    """Count ``n`` newly decoded frames."""
    global _frames
    if _bar is not None:
        with _lock:
            _frames += n
            _bar.set_postfix(frames=_frames, failed=_failed, refresh=False)


def video_done(failed: bool = False) -> None:
    """Count one finished (or failed) video."""
    global _failed
    if _bar is not None:
        with _lock:
            _failed += int(failed)
            _bar.set_postfix(frames=_frames, failed=_failed, refresh=False)
            _bar.update(1)


def close() -> None:
    """Close the bar."""
    global _bar
    if _bar is not None:
        _bar.close()
        _bar = None
