"""Inputs that are not regular files: a named pipe (FIFO) named like a video.

Opened for reading, a FIFO without a writer blocks forever, so ffmpeg (or ffprobe) on it
would hang a run. A folder or glob listing reports it as a failed video (stage
``probe``) without opening it, so the run's totals account for it; a manifest that
names one directly fails that video at its probe, before any ffmpeg starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ffmpeg
from tristream.config import RunConfig
from tristream.pipeline.inputs import InputFailure, list_tasks
from tristream.pipeline.run import run
from tristream.process import Models, VideoFailed, VideoTask, process_video


def _reason(fifo: Path) -> str:
    return f"not a regular file (a named pipe (FIFO); it could block the decode forever): {fifo}"


@contextlib.contextmanager
def _watched_fifo(path: Path) -> Iterator[list[bool]]:
    """Make a FIFO at ``path`` and watch it for the block: the list yielded gets True if
    anything opens it for reading. The watcher then opens it for writing and closes it at
    once, so that reader sees the end of the stream instead of hanging the test."""
    os.mkfifo(path)
    opened: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader: the expected case
                    continue
                raise
            opened.append(True)
            os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield opened
    finally:
        stop.set()
        thread.join(5)


@pytest.fixture
def folder(tmp_path, carphone) -> Path:
    """A folder with one real 1 s clip, ``good.mp4``."""
    d = tmp_path / "in"
    d.mkdir()
    ffmpeg("-i", carphone, "-t", "1", "-c", "copy", str(d / "good.mp4"))
    return d


@pytest.mark.parametrize("pattern", ["", "*.mp4"])
def test_listing_reports_a_named_pipe_as_a_failed_video(folder, pattern):
    fifo = folder / "hang.mp4"
    with _watched_fifo(fifo) as opened:
        tasks, rejected = list_tasks(input_path=str(folder / pattern) if pattern else str(folder))
    assert [t.video_id for t in tasks] == ["good"]
    assert rejected == [InputFailure("hang", str(fifo), "probe", _reason(fifo))]
    assert not opened


def test_a_run_counts_the_named_pipe_as_failed_and_writes_the_rest(folder, tmp_path):
    fifo = folder / "hang.mp4"
    out = tmp_path / "out"
    config = RunConfig.from_options(
        output=str(out), input=str(folder), short_side=32, flow="none", workers=1
    )
    with _watched_fifo(fifo) as opened:
        result = run(config)
    assert not opened
    totals = result.manifest["totals"]
    assert (totals["videos"], totals["videos_written"], totals["videos_failed"]) == (2, 1, 1)
    records = [json.loads(ln) for ln in (out / "failures.jsonl").read_text().splitlines()]
    assert [(r["video_id"], r["source"], r["stage"], r["error"]) for r in records] == [
        ("hang", str(fifo), "probe", _reason(fifo))
    ]


def test_a_manifest_naming_a_named_pipe_fails_at_probe_without_opening_it(tmp_path):
    fifo = tmp_path / "direct.mp4"
    config = RunConfig.from_options(output=str(tmp_path / "out"), input=str(fifo), flow="none")
    with _watched_fifo(fifo) as opened:
        # A manifest row is not looked at when listed (a stat per row of a huge manifest
        # on a network mount costs): the probe refuses it, before starting ffprobe.
        rows = process_video(VideoTask("direct", str(fifo), "train"), config, Models(config, "t"))
        with pytest.raises(VideoFailed) as failed:
            next(rows)
    assert not opened
    assert (failed.value.stage, failed.value.error) == ("probe", _reason(fifo))
