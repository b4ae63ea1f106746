"""The one Beam DoFn around the per-video function: cache, staging, failures, metrics.

:class:`ProcessVideo` takes a :class:`~tristream.process.VideoTask` and emits
exactly one :class:`VideoOutcome` for it: either the cache files that hold its
rows (complete, last segment marked) or the :class:`Failure` that ends it. The
work itself is :func:`tristream.process.process_video`; this module adds only
what belongs to the Beam layer: models loaded once per worker process (Beam's
``Shared``), torch threads shared among worker threads, rows staged in the
cache (``OUT/cache``) as they come, metrics and the progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from tristream.config import RunConfig
from tristream.models.common import share_cpu_threads, usable_cpus
from tristream.pipeline import cache, interrupt, progress, storage
from tristream.process import Models, Stats, VideoFailed, VideoTask, error_text, process_video
from tristream.shards.files import write_rows
from tristream.shards.schema import arrow_schema
from tristream.shards.storage import StoreLike, get_store, remove_tree

LOG = logging.getLogger(__name__)
NAMESPACE = "tristream"


@dataclass(frozen=True)
class Failure:
    """One failed video: which stage failed and why (a line of ``failures.jsonl``)."""

    video_id: str
    source: str
    stage: str
    error: str
    segment: int | None = None

    def to_json(self) -> dict:
        """The ``failures.jsonl`` record: video_id, source, stage, error, segment."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class VideoOutcome:
    """What became of one video: its staged rows (``paths``, in segment order, and
    ``frames``, the video's frame count) or its ``failure``; ``cached`` when the rows
    came from an earlier run's cache entry; ``interrupted`` when the run was stopped
    before the video was done (neither written nor failed: a re-run does it)."""

    task: VideoTask
    paths: tuple[str, ...] = ()
    frames: int = 0
    failure: Failure | None = None
    cached: bool = False
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """Whether the video's rows are staged (not failed, not interrupted)."""
        return self.failure is None and not self.interrupted


def _frames_or_stop(n: int) -> None:
    """Count decoded frames on the progress bar; stop the video when the run is stopping."""
    interrupt.check()
    progress.frames(n)


def worker_threads(config: RunConfig) -> int:
    """Threads that run videos at once in one worker process: ``--workers``, else all CPUs.

    (On the Dask runner the real count is Dask's; all CPUs is the safe guess there: torch
    then runs single-threaded per call and never oversubscribes.)
    """
    return config.run.workers or usable_cpus()


class ProcessVideo(beam.DoFn):
    """``VideoTask`` -> one :class:`VideoOutcome` (see the module docstring).

    A video whose cache entry is complete is not decoded again. Rows are staged
    one at a time (a one-row Parquet file per segment) and the entry is marked
    complete after the last one, so memory holds one segment per thread and a
    killed run resumes where it stopped. A failed video's partial entry is
    removed, so nothing half-written is ever trusted.
    """

    def __init__(self, config: RunConfig, config_hash: str):
        self.config = config
        self.config_hash = config_hash
        self._shared = shared.Shared()
        self.frames = Metrics.counter(NAMESPACE, "frames")
        self.pairs = Metrics.counter(NAMESPACE, "flow_pairs")
        self.persons = Metrics.counter(NAMESPACE, "persons")
        self.done = Metrics.counter(NAMESPACE, "videos_done")
        self.cached = Metrics.counter(NAMESPACE, "videos_cached")

    def setup(self) -> None:
        self.models = self._shared.acquire(lambda: Models(self.config, self.config_hash))
        self.schema = arrow_schema(self.config.modalities)
        self.cache_root = storage.join(self.config.output.path, "cache")
        self.store = get_store(self.config.run.store)  # the launcher's StoreConfig (None: env)

    def process(self, task: VideoTask):
        if interrupt.requested():  # stopping: start nothing new
            yield VideoOutcome(task, interrupted=True)
            return
        try:
            outcome = self._outcome(task)
        except interrupt.Interrupted:
            outcome = VideoOutcome(task, interrupted=True)
        except Exception as exc:  # noqa: BLE001 - a bug here must still account for the video
            LOG.exception("%s: unexpected error", task.video_id)
            outcome = VideoOutcome(task, failure=Failure(
                task.video_id, task.source, "internal", error_text(exc)))  # fmt: skip
        if outcome.failure is not None and interrupt.requested():
            # Stopped under it (its ffmpeg got the signal too): not the video's fault.
            outcome = VideoOutcome(task, interrupted=True)
        if outcome.interrupted:
            yield outcome
            return
        if outcome.failure is not None:
            f = outcome.failure
            Metrics.counter(NAMESPACE, f"{f.stage}_failures").inc()
            LOG.warning("%s failed at %s: %s", f.video_id, f.stage, f.error)
        else:
            self.done.inc()
        progress.video_done(not outcome.ok)
        yield outcome

    def _outcome(self, task: VideoTask) -> VideoOutcome:
        if self.models.torch_on_cpu:  # torch's thread count is per calling thread
            share_cpu_threads(worker_threads(self.config))
        stats = Stats()
        try:
            outcome = stage_video(task, self.config, self.models, self.cache_root, self.schema,
                                  stats, on_frames=_frames_or_stop, store=self.store)  # fmt: skip
        finally:
            self.frames.inc(stats.frames)
            self.pairs.inc(stats.pairs)
            self.persons.inc(stats.persons)
            # Which TV-L1 kernel path ran, per segment: manifest.json's metrics say it.
            for kernel, segments in stats.flow_kernels.items():
                Metrics.counter(NAMESPACE, f"flow_kernel_{kernel}").inc(segments)
            if stats.flow_fallbacks:
                Metrics.counter(NAMESPACE, "flow_kernel_fallbacks").inc(len(stats.flow_fallbacks))
        if outcome.cached:
            self.cached.inc()
        return outcome


def stage_video(
    task: VideoTask,
    config: RunConfig,
    models: Models,
    cache_root: str,
    schema: pa.Schema,
    stats: Stats | None = None,
    on_frames: Callable[[int], None] | None = None,
    store: StoreLike = None,
) -> VideoOutcome:
    """One video from its task to its cache entry under ``cache_root`` (``OUT/cache``).

    The video is first made ready to decode (:func:`~tristream.pipeline.storage.staged_video`:
    an object is copied to a temporary file and hashed in the same pass, a local file
    hashed in place), which gives its content identity, the cache key, once; a failure
    there is the ``probe`` stage's. A complete entry is reused without decoding; else
    :func:`~tristream.process.process_video` runs on the staged copy and each row is
    written as a one-row Parquet file of ``schema``, then the entry's ``done.json``. Any
    failure (a :class:`~tristream.process.VideoFailed`, or the ``write`` of a row)
    removes the partial entry and is returned as the outcome's ``failure``. ``stats``
    gets the per-stage seconds, ``write`` included. ``store``: the run's store (a
    :class:`~tristream.shards.storage.Store` or its config; None: the environment's).
    Plain Python: the DoFn and the pipeline benchmark both call it.
    """
    stats = stats if stats is not None else Stats()
    store = get_store(store)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as staging:  # the staged copy is removed when it closes
        try:
            staged = staging.enter_context(storage.staged_video(task.source, store))
        except Exception as exc:  # noqa: BLE001 - a missing or oversized object, a store fault
            return VideoOutcome(task, failure=Failure(
                task.video_id, task.source, "probe", error_text(exc)))  # fmt: skip
        stats.add_time("probe", time.perf_counter() - t0)
        return _stage_staged(task, config, models, cache_root, schema, stats, on_frames,
                             staged, store)  # fmt: skip


def _stage_staged(task, config, models, cache_root, schema, stats, on_frames, staged, store):
    """:func:`stage_video` once the video is staged (``staged``: its local path and content
    identity)."""
    try:
        entry, reusable = cache.entry_dir(
            cache_root, models.config_hash, staged.content_id, task.source, task.start,
            task.end, task.video_id,
        )  # fmt: skip
        done = cache.read_done(entry, store) if reusable else None
    except OSError as exc:
        return VideoOutcome(task, failure=Failure(
            task.video_id, task.source, "cache", error_text(exc)))  # fmt: skip
    if done is not None:
        paths = tuple(cache.segment_path(entry, s["index"]) for s in done)
        frames = sum(s["num_frames"] for s in done) - (len(done) - 1)
        return VideoOutcome(task, paths, frames, cached=True)

    segments: list[dict] = []
    complete = False
    try:
        local = lambda _: contextlib.nullcontext(staged.path)  # noqa: E731 - already staged
        rows = process_video(task, config, models, stats, on_frames, local_source=local)
        with contextlib.closing(rows):
            for seg in rows:
                t0 = time.perf_counter()
                try:
                    write_rows(cache.segment_path(entry, seg.index), [seg.row], schema, store,
                               index=False)  # fmt: skip
                    segments.append({"index": seg.index, "num_frames": seg.num_frames})
                    if seg.is_last:
                        cache.mark_done(entry, segments, task.video_id, task.source, store)
                        complete = True
                except Exception as exc:  # noqa: BLE001
                    raise VideoFailed("write", error_text(exc), seg.index) from exc
                stats.add_time("write", time.perf_counter() - t0)
    except interrupt.Interrupted:
        remove_tree(entry, store)  # stopped midway: nothing half-written stays
        raise
    except VideoFailed as exc:
        remove_tree(entry, store)  # a partial entry is never reused
        return VideoOutcome(task, failure=Failure(
            task.video_id, task.source, exc.stage, exc.error, exc.segment))  # fmt: skip
    if not complete:  # process_video ends with the row marked is_last, or raises
        raise AssertionError(f"rows ended before the last segment: {segments}")
    paths = tuple(cache.segment_path(entry, s["index"]) for s in segments)
    return VideoOutcome(task, paths, stats.frames)
