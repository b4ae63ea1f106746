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
from apache_beam.utils import shared

from tristream.models.common import resolve_device, share_cpu_threads, usable_cpus
from tristream.pipeline import cache, progress
from tristream.pipeline.config import RunConfig
from tristream.pipeline.inputs import VideoTask
from tristream.shards.codec import encode_flow, encode_frames
from tristream.shards.parquet import write_parquet_rows
from tristream.shards.schema import arrow_schema
from tristream.transforms.decode import Segment, decode_segments, probe
from tristream.transforms.flow import compute_flow
from tristream.transforms.render import render_segment
from tristream.transforms.skeletons import load_skeletons, slice_for_segment
from tristream.transforms.tracking import FlowTracker, PersonTracks, tracks_from_keypoints

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
    persons: PersonTracks | None = None
    pose_frames: np.ndarray | None = None
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


def worker_threads(config: RunConfig) -> int:
    """Threads that run stages at once in one worker process: ``--workers``, else all CPUs.

    (On the Dask runner the real count is Dask's; all CPUs is the safe guess there: torch
    then runs single-threaded per call and never oversubscribes.)
    """
    return config.workers or usable_cpus()


class FlowFn(_Stage):
    """Adds TV-L1 flow to each segment (backend by name, see transforms.flow)."""

    stage = "flow"

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.pairs = Metrics.counter(NAMESPACE, "flow_pairs")

    def setup(self) -> None:
        self.params = dict(self.config.flow_params)
        self.torch_on_cpu = False
        if self.config.flow == "torch":
            device = resolve_device(self.config.device)
            self.torch_on_cpu = device == "cpu"
            self.params.update(device=device, batch_size=self.config.flow_batch_size)

    def run(self, work: SegmentWork) -> SegmentWork:
        if self.torch_on_cpu:  # in the calling thread: torch's thread count is per thread
            share_cpu_threads(worker_threads(self.config))
        flow = compute_flow(work.segment.frames, backend=self.config.flow, **self.params)
        self.pairs.inc(len(flow))
        return replace(work, flow=flow)


class _PersonModels:
    """The detector, pose estimator and imported skeletons of one run (loaded once)."""

    def __init__(self, c: RunConfig):
        self.skeletons = load_skeletons(c.skeletons) if c.skeletons else None
        self.detector = self.estimator = None
        self.pose_on_cpu = bool(c.pose_model) and resolve_device(c.device) == "cpu"
        if c.detector:
            from tristream.models.detector import load_detector

            self.detector = load_detector(
                c.detector, score_threshold=c.det_threshold, nms_threshold=c.det_nms,
                device=c.device,
            )  # fmt: skip
        if c.pose_model:
            from tristream.models.pose_resnet import load_pose_model
            from tristream.transforms.pose import PoseEstimator

            model = load_pose_model(c.pose_model, device=c.device)
            self.estimator = PoseEstimator(model, decoder=c.pose_decoder, flip_test=c.flip_test)


class PoseFn(_Stage):
    """Adds person tracks: detector + top-down pose + flow tracking, or imported skeletons.

    Models and annotation files load once per worker process: the DoFn
    instances of its threads share them through Beam's ``Shared`` handle
    (onnxruntime sessions and torch modules in eval mode are safe to call from
    several threads). A video's segments reach one instance in order (they are
    fused behind its decode), so one :class:`FlowTracker` per video keeps track
    ids across segments.
    """

    stage = "pose"

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.persons = Metrics.counter(NAMESPACE, "persons")
        self._shared = shared.Shared()

    def setup(self) -> None:
        self.trackers: dict[str, FlowTracker] = {}
        models = self._shared.acquire(lambda: _PersonModels(self.config))
        self.models = models  # keeps the shared object alive while this instance lives
        self.skeletons, self.detector, self.estimator = (
            models.skeletons,
            models.detector,
            models.estimator,
        )

    def process(self, work):
        if isinstance(work, Failure):
            self.trackers.pop(work.video_id, None)
        yield from super().process(work)

    def run(self, work: SegmentWork) -> SegmentWork:
        task, seg = work.task, work.segment
        if self.skeletons is not None:
            tracks = self._imported(work)
        else:
            if seg.index == 0:
                self.trackers[task.video_id] = FlowTracker(
                    self.detector, self.estimator, max_persons=self.config.max_persons
                )
            tracker = self.trackers[task.video_id]
            if self.models.pose_on_cpu:
                share_cpu_threads(worker_threads(self.config))  # as FlowFn.run
            tracks = tracker.process(seg.frames, work.flow, start_frame=seg.start_frame)
            if seg.is_last:
                self.trackers.pop(task.video_id, None)
        self.persons.inc(tracks.num_persons)
        return replace(work, persons=tracks)

    def _imported(self, work: SegmentWork) -> PersonTracks:
        """The video's imported skeletons for this segment, best ``max_persons`` first."""
        seg, t = work.segment, len(work.segment.frames)
        ann = self.skeletons.get(work.task.video_id)
        if ann is None:
            raise KeyError(
                f"no skeletons for video {work.task.video_id!r} in {self.config.skeletons}"
            )
        kps = slice_for_segment(ann, seg.start_frame, t, to_shape=seg.frames.shape[1:3])
        return tracks_from_keypoints(kps, self.config.max_persons)


class RenderFn(_Stage):
    """Renders the PERF-Net pose frames (pose drawn over RGB) from the person tracks."""

    stage = "render"

    def setup(self) -> None:
        self.style = self.config.render_style

    def run(self, work: SegmentWork) -> SegmentWork:
        frames = render_segment(work.segment.frames, work.persons.keypoints, self.style)
        return replace(work, pose_frames=frames)


class EncodeFn(_Stage):
    """Encodes frames (JPEG) and flow (as --flow-encoding says) into a shard row."""

    stage = "encode"

    def setup(self) -> None:
        self.meta = self.config.meta_json()  # the same for every row of the run

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
        if work.pose_frames is not None:
            row["pose"] = encode_frames(work.pose_frames, "jpeg", c.jpeg_quality)
        if work.persons is not None:
            p = work.persons
            row["keypoints"] = p.keypoints.astype(np.float32).ravel().tolist()
            row["boxes"] = p.boxes.astype(np.float32).ravel().tolist()
            row["track_ids"] = p.track_ids.astype(np.int32).tolist()
            row["num_persons"] = int(p.num_persons)
        row["meta"] = self.meta
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
