"""Progress bars for local runs: videos done (and failed), frames decoded with frames/s.

Fed by the per-video DoFn as it goes: frames are counted as they are decoded,
so a single long video shows its frames and rate moving, not ``0/1`` until it
ends. The calls work when the pipeline runs in this process (the default local
runner); elsewhere (other processes, cluster runners) they do nothing and
Beam's metrics report progress instead.
"""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

_lock = threading.Lock()
_videos: tqdm | None = None
_frames: tqdm | None = None
_failed = 0


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
    """Close the bars."""
    global _videos, _frames
    with _lock:
        for bar in (_frames, _videos):
            if bar is not None:
                bar.close()
        _videos = _frames = None
