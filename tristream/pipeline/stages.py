"""One thin Beam DoFn per stage: decode -> flow -> encode -> stage to cache.

Each DoFn calls a plain function from ``transforms``/``shards`` and adds only
wiring: a failure becomes a tagged ``failures`` output naming the video and the
stage, and the run goes on. Elements between stages are :class:`SegmentWork`
(one segment of one video); the stages are fused, so a segment's frames pass
from decode to the cache writer in memory and only one segment per worker
thread is alive at a time.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from tristream.pipeline import cache, progress
from tristream.pipeline.config import RunConfig
from tristream.pipeline.inputs import VideoTask
from tristream.shards.codec import encode_flow, encode_frames
from tristream.shards.parquet import write_parquet_rows
from tristream.shards.schema import arrow_schema
from tristream.transforms.decode import Segment, decode_segments, probe
from tristream.transforms.flow import compute_flow

LOG = logging.getLogger(__name__)
NAMESPACE = "tristream"

# Videos that failed in a stage after decode, while decode is still reading
# them: fused stages run in the decoding thread's process, so decode sees this
# and stops reading a video that is already lost.
_FAILED_VIDEOS: set[str] = set()


@dataclass(frozen=True)
class Failure:
    """One failed video: which stage failed and why (a line of failures.jsonl)."""

    video_id: str
    source: str
    stage: str
    error: str
    segment: int | None = None

    def to_json(self) -> dict:
        return {
            "video_id": self.video_id,
            "source": self.source,
            "stage": self.stage,
            "error": self.error,
            "segment": self.segment,
        }


@dataclass(frozen=True)
class SegmentWork:
    """A segment on its way through the stages; later stages fill the later fields.

    ``fps`` is the stored frame rate; ``flow`` float32 ``[T-1, H, W, 2]`` pixels;
    ``row`` the encoded shard row (column -> value).
    """

    task: VideoTask
    segment: Segment
    fps: float
    entry: str
    flow: np.ndarray | None = None
    row: dict[str, Any] | None = None


@dataclass(frozen=True)
class StagedSegment:
    """A segment row written to the cache: where, and whether it closes the video."""

    task: VideoTask
    index: int
    is_last: bool
    path: str
    num_frames: int


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return (
        text
        if isinstance(exc, (RuntimeError, ValueError, OSError))
        else f"{type(exc).__name__}: {text}"
    )


class _Stage(beam.DoFn):
    """Base for per-segment stages: ``run`` does the work, failures go to ``failures``."""

    stage = "stage"

    def __init__(self, config: RunConfig):
        self.config = config
        self.failed = Metrics.counter(NAMESPACE, f"{self.stage}_failures")

    def run(self, work: SegmentWork) -> SegmentWork:  # pragma: no cover - abstract
        raise NotImplementedError

    def process(self, work):
        if not isinstance(work, SegmentWork):
            yield work  # a Failure or StagedSegment from an earlier stage: pass it on
            return
        try:
            yield self.run(work)
        except Exception as exc:  # noqa: BLE001 - a bad video must not stop the run
            self.failed.inc()
            _FAILED_VIDEOS.add(work.task.video_id)
            LOG.warning("%s failed at %s: %s", work.task.video_id, self.stage, exc)
            yield (
                Failure(
                    work.task.video_id,
                    work.task.source,
                    self.stage,
                    _error_text(exc),
                    work.segment.index,
                ),  # fmt: skip
            )


class DecodeFn(beam.DoFn):
    """VideoTask -> SegmentWork per segment (cache look-up, probe, then ffmpeg decode).

    A video whose cache entry is complete is not decoded: its
    :class:`StagedSegment` s are emitted at once and pass the later stages.
    Failures are emitted as :class:`Failure` elements in the same stream
    (one output per DoFn, which every runner supports; Dask's runner mixes up
    tagged outputs).
    ``--timeout`` bounds the probe and the decode of one video together.
    """

    def __init__(self, config: RunConfig):
        self.config = config
        self.frames = Metrics.counter(NAMESPACE, "frames")
        self.failed = Metrics.counter(NAMESPACE, "decode_failures")
        self.cached = Metrics.counter(NAMESPACE, "videos_cached")

    def setup(self) -> None:
        self.cache_root = os.path.join(self.config.output, "cache")

    def process(self, task: VideoTask):
        c = self.config
        stage = "probe"
        index = None
        deadline = time.monotonic() + c.timeout if c.timeout else None

        def remaining() -> float | None:
            return None if deadline is None else max(0.1, deadline - time.monotonic())

        try:
            entry, reusable = cache.entry_dir(
                self.cache_root, c.config_hash, task.source, task.start, task.end, task.video_id
            )
            done = cache.read_done(entry) if reusable else None
            if done is not None:
                self.cached.inc()
                for s in done:
                    path = cache.segment_path(entry, s["index"])
                    last = s is done[-1]
                    staged = StagedSegment(task, s["index"], last, path, s["num_frames"])
                    yield staged
                return
            info = probe(task.source, timeout=remaining())
            fps = c.fps if c.fps > 0 else info.fps
            stage = "decode"
            for seg in decode_segments(
                task.source,
                fps=c.fps,
                short_side=c.short_side,
                max_frames=c.max_frames,
                start=task.start,
                end=task.end,
                timeout=remaining(),
                min_frames=2,  # flow needs a pair; a one-frame video is a failure
            ):
                index = seg.index
                new_frames = len(seg.frames) - (1 if seg.index else 0)
                self.frames.inc(new_frames)
                progress.frames(new_frames)
                yield SegmentWork(task, seg, fps, entry)
                if task.video_id in _FAILED_VIDEOS:
                    break  # a later stage failed on this video: its failure is reported
        except Exception as exc:  # noqa: BLE001
            self.failed.inc()
            LOG.warning("%s failed at %s: %s", task.video_id, stage, exc)
            _FAILED_VIDEOS.add(task.video_id)
            yield Failure(task.video_id, task.source, stage, _error_text(exc), index)
        finally:
            failed = task.video_id in _FAILED_VIDEOS
            _FAILED_VIDEOS.discard(task.video_id)
            progress.video_done(failed)


class FlowFn(_Stage):
    """Adds TV-L1 flow to each segment (backend by name, see transforms.flow)."""

    stage = "flow"

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.pairs = Metrics.counter(NAMESPACE, "flow_pairs")

    def setup(self) -> None:
        self.params = dict(self.config.flow_params)
        if self.config.flow == "torch":
            self.params.update(device=self.config.device, batch_size=self.config.flow_batch_size)

    def run(self, work: SegmentWork) -> SegmentWork:
        flow = compute_flow(work.segment.frames, backend=self.config.flow, **self.params)
        self.pairs.inc(len(flow))
        return replace(work, flow=flow)


class EncodeFn(_Stage):
    """Encodes frames (JPEG) and flow (as --flow-encoding says) into a shard row."""

    stage = "encode"

    def run(self, work: SegmentWork) -> SegmentWork:
        c, t, seg = self.config, work.task, work.segment
        frames = seg.frames
        row: dict[str, Any] = {
            "video_id": t.video_id,
            "source": t.source,
            "label": t.label,
            "label_index": t.label_index,
            "segment": seg.index,
            "start_frame": seg.start_frame,
            "num_frames": len(frames),
            "fps": float(work.fps),
            "height": int(frames.shape[1]),
            "width": int(frames.shape[2]),
            "rgb": encode_frames(frames, "jpeg", c.jpeg_quality),
        }
        if work.flow is not None:
            row["flow_x"], row["flow_y"] = encode_flow(work.flow, c.flow_encoding, c.jpeg_quality)
        row["meta"] = c.meta_json()
        return replace(work, row=row)


class StageFn(_Stage):
    """Writes each encoded row to the video's cache entry (atomically).

    Emits a :class:`StagedSegment`: only small references travel to the
    shard writer, so grouping never holds frames in memory. After a video's
    last segment it marks the entry complete, so a re-run skips the video.
    """

    stage = "write"

    def setup(self) -> None:
        self.schema = arrow_schema(self.config.modalities)
        self.segments: dict[str, list[dict]] = {}

    def process(self, work):
        for out in super().process(work):
            if isinstance(out, Failure):
                self.segments.pop(out.video_id, None)
            yield out

    def run(self, work: SegmentWork) -> StagedSegment:  # type: ignore[override]
        task, seg = work.task, work.segment
        path = cache.segment_path(work.entry, seg.index)
        write_parquet_rows(path, [work.row], self.schema)
        done = self.segments.setdefault(task.video_id, [])
        if seg.index == 0:
            done.clear()
        done.append({"index": seg.index, "num_frames": work.row["num_frames"]})
        if seg.is_last:
            cache.mark_done(
                work.entry, self.segments.pop(task.video_id), task.video_id, task.source
            )
        return StagedSegment(task, seg.index, seg.is_last, path, work.row["num_frames"])
