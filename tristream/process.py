"""The whole per-video chain as one plain function: task + config + models -> shard rows.

:func:`process_video` probes and decodes one video segment by segment and,
for each segment, computes flow, persons (detector + pose + flow tracking, or
imported skeletons), pose frames, and encodes the shard row
(:func:`tristream.shards.row.encode_row`). No Beam: the pipeline's one DoFn,
the benchmarks and the tests call this same function. Per-video state (the
person tracker) lives inside the call; what is loaded once per worker process
(models, flow parameters, the row ``meta``) is a :class:`Models`.

Any exception, in any stage, leaves as one :class:`VideoFailed` naming the
stage and the segment, so the caller can account for every video.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tristream import __version__
from tristream.config import RunConfig
from tristream.models.common import resolve_device
from tristream.shards.row import encode_row
from tristream.shards.schema import SCHEMA_VERSION
from tristream.transforms.decode import decode_segments, probe
from tristream.transforms.flow import compute_flow
from tristream.transforms.render import render_segment
from tristream.transforms.skeletons import (
    load_skeletons,
    load_skeletons_3d,
    slice_for_segment,
    slice_frames,
)
from tristream.transforms.tracking import FlowTracker, PersonTracks, tracks_from_keypoints

LOG = logging.getLogger(__name__)

#: The stages of the chain, in order, as they appear in ``failures.jsonl``
#: (``write`` is the caller's: staging a row to the cache; ``lost`` is the finaliser's).
STAGES: tuple[str, ...] = ("probe", "decode", "flow", "pose", "render", "encode")


@dataclass(frozen=True)
class VideoTask:
    """One video to process.

    ``start``/``end`` are seconds inside the source (None: whole video);
    ``shard`` / ``num_shards`` place it in ``<split>-<shard>-of-<num_shards>``.
    """

    video_id: str
    source: str
    split: str
    label: str | None = None
    label_index: int | None = None
    start: float | None = None
    end: float | None = None
    shard: int = 0
    num_shards: int = 1


def error_text(exc: BaseException) -> str:
    """A one-line readable reason for ``exc`` (its type is named unless it is an I/O,
    runtime or value error, whose messages already read as reasons)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (RuntimeError, ValueError, OSError)):
        return text
    return f"{type(exc).__name__}: {text}"


class VideoFailed(Exception):
    """One video failed: at ``stage`` (see :data:`STAGES`), in segment ``segment``
    (None before the first segment), because of ``error`` (one readable line)."""

    def __init__(self, stage: str, error: str, segment: int | None = None):
        super().__init__(f"{stage} failed" + ("" if segment is None else f" in segment {segment}")
                         + f": {error}")  # fmt: skip
        self.stage = stage
        self.error = error
        self.segment = segment


@dataclass
class Stats:
    """What :func:`process_video` did: frames decoded (new ones, the overlap counted once),
    flow pairs, person tracks over all rows, and wall seconds spent per stage."""

    frames: int = 0
    pairs: int = 0
    persons: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    #: torch TV-L1 only: segments per kernel path that actually ran, and the reasons a
    #: requested path fell back to another (see ``tristream.models.tvl1.TVL1Stats``).
    flow_kernels: dict[str, int] = field(default_factory=dict)
    flow_fallbacks: list[str] = field(default_factory=list)

    def add_time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass(frozen=True)
class SegmentRow:
    """One encoded shard row (column -> value) of segment ``index`` of a video."""

    index: int
    is_last: bool
    num_frames: int
    row: dict[str, Any]


class Models:
    """What one worker process loads once for a run and shares among its threads.

    Holds the flow backend's parameters (device resolved), the person detector,
    the pose estimator, imported skeletons and the row ``meta`` JSON.
    onnxruntime sessions and torch modules in eval mode are safe to call from
    several threads; per-video state is never kept here.
    """

    def __init__(self, config: RunConfig, config_hash: str):
        self.config = config
        #: :func:`tristream.pipeline.cache.config_hash` of ``config`` (the cache's first key).
        self.config_hash = config_hash
        self.meta = row_meta(config, config_hash)
        self.flow_params: dict[str, Any] = dict(config.flow.params)
        device = resolve_device(config.run.device)
        p = config.persons
        #: torch runs on this process's CPUs (callers then share the cores among threads).
        self.torch_on_cpu = device == "cpu" and bool(p.pose_model)
        if config.flow.backend == "tvl1":
            # One feeder per worker process: the pairs of all its threads go through one
            # solver (parallel over pairs on the CPU, large batches on a GPU).
            from tristream.models.tvl1 import FlowFeeder, TVL1Params, TVL1Solver

            solver = TVL1Solver(TVL1Params(**config.flow.tvl1()), config.flow.kernel)
            self.flow_params = {"feeder": FlowFeeder(solver, device, config.flow.batch_size)}
        self.skeletons = None
        self.detector = self.estimator = None
        self.skeletons3d = None
        if p.skeletons:
            self.skeletons = load_skeletons(p.skeletons, store=config.run.store)
        if p.skeletons3d:
            self.skeletons3d = load_skeletons_3d(p.skeletons3d, store=config.run.store)
        if p.detector:
            from tristream.models.detector import load_detector

            self.detector = load_detector(
                p.detector, score_threshold=p.det_threshold,
                nms_threshold=p.det_nms, device=config.run.device,
            )  # fmt: skip
        if p.pose_model:
            from tristream.models.pose_resnet import PoseModel
            from tristream.models.zoo import load_pose
            from tristream.transforms.pose import PRECISIONS, PoseEstimator

            model = load_pose(p.pose_model, device=config.run.device, pose_format=p.pose_format,
                              trust_checkpoint=p.trust_checkpoint)  # fmt: skip
            dtype = PRECISIONS[p.pose_precision]
            if dtype is not None and isinstance(model, PoseModel) and model.device.type != "cuda":
                LOG.warning("--pose-precision %s applies on CUDA only; the pose model runs "
                            "in float32 on the CPU", p.pose_precision)  # fmt: skip
                dtype = None
            self.estimator = PoseEstimator(
                model, decoder=p.pose_decoder, flip_test=p.flip_test, dtype=dtype,
                keypoints3d=p.keypoints3d,
            )  # fmt: skip


def row_meta(config: RunConfig, config_hash: str) -> str:
    """The ``meta`` column of every row (JSON): schema version, flow encoding and backend,
    render style, ``config_hash`` (:func:`tristream.pipeline.cache.config_hash`) and the
    tristream version."""
    style = config.render_style
    meta = {
        "schema_version": SCHEMA_VERSION,
        "flow_encoding": config.flow.encoding if config.flow.enabled else None,
        "flow_backend": config.flow.backend if config.flow.enabled else None,
        "render": str(style) if style else None,
        "config_hash": config_hash,
        "tristream_version": __version__,
    }
    return json.dumps(meta, sort_keys=True)


def check_files(config: RunConfig) -> None:
    """The I/O checks that validation leaves out, run once before any work: a ``--flow``
    import path imports and names a callable, every file the persons options name exists
    (``--skeletons`` / ``--skeletons3d`` may be object-store URIs), and the detector and
    pose model load (:func:`check_models`).
    Raises FileNotFoundError or ValueError, one line naming the flag."""
    from tristream.shards import storage

    if config.flow.enabled:
        from tristream.transforms.flow import resolve_backend

        resolve_backend(config.flow.backend)  # an import path imports here: ValueError if not
    for flag, path in config.persons.files.items():
        remote = flag.startswith("--skeletons") and storage.is_store_uri(path)
        if not (storage.isfile(path, config.run.store) if remote else os.path.isfile(path)):
            raise FileNotFoundError(f"{flag} {path}: no such file")
    check_models(config)


def check_models(config: RunConfig) -> None:
    """Open the run's detector and pose model once on the CPU and let them go, so that a
    file of the wrong kind fails the run up front with a ValueError that says what was
    expected, instead of failing every video on every worker."""
    p = config.persons
    if p.detector:
        from tristream.models.detector import load_detector

        load_detector(p.detector, device="cpu")
    if p.pose_model:
        from tristream.models.zoo import load_pose
        from tristream.transforms.pose import PoseEstimator

        model = load_pose(p.pose_model, device="cpu", pose_format=p.pose_format,
                          trust_checkpoint=p.trust_checkpoint)  # fmt: skip
        PoseEstimator(
            model, decoder=p.pose_decoder, flip_test=p.flip_test, keypoints3d=p.keypoints3d
        )


def process_video(
    task: VideoTask,
    config: RunConfig,
    models: Models,
    stats: Stats | None = None,
    on_frames: Callable[[int], None] | None = None,
    local_source: Callable[[str], contextlib.AbstractContextManager[str]] | None = None,
) -> Iterator[SegmentRow]:
    """Process one video, segment by segment, and yield its encoded shard rows.

    ``task`` names the video (and its time range), ``config`` the run's
    settings, ``models`` what the worker loaded once. Rows come in segment
    order; the last has ``is_last``. ``stats`` (when given) is filled as the
    work goes; ``on_frames(n)`` is called as ``n`` new frames are decoded (frame by
    frame, as ffmpeg delivers them).
    ``config.decode.timeout`` seconds (0: none) is the stall guard: each probe gets that
    long, and the decode fails when ffmpeg delivers no new frame for that long while it is
    awaited (time spent on a segment's flow, pose and encoding does not count).
    ``local_source(task.source)``, when given, is a context manager that gives
    the local path to decode, held open around probe and decode (the pipeline
    stages an object-store video to a temporary file that way); a failure there
    is the ``probe`` stage's.

    Raises :class:`VideoFailed` (stage, segment, readable error) for any
    failure, before the last row is yielded whenever the failure is known by
    then (decode checks the whole stream first), so a caller that saw
    ``is_last`` has a complete video.
    """
    stats = stats if stats is not None else Stats()
    stage, index = "probe", None
    tracker = segments = None
    source, staging = task.source, contextlib.ExitStack()
    try:
        t0 = time.perf_counter()
        source = staging.enter_context(local_source(task.source)) if local_source else task.source
        dec = config.decode
        stall = dec.timeout or None  # per probe, and per frame awaited from ffmpeg
        info = probe(source, timeout=stall)
        stats.add_time("probe", time.perf_counter() - t0)
        fps = float(dec.fps if dec.fps > 0 else info.fps)
        stage = "decode"
        segments = decode_segments(
            source, fps=dec.fps, short_side=dec.short_side,
            max_frames=dec.max_frames, start=task.start, end=task.end,
            timeout=stall, min_frames=2,  # flow needs a pair: one frame is a failure
            info=info, on_frame=None if on_frames is None else lambda: on_frames(1),
        )  # fmt: skip
        while True:
            stage = "decode"
            t0 = time.perf_counter()
            seg = next(segments, None)
            stats.add_time("decode", time.perf_counter() - t0)
            if seg is None:
                return
            index, frames = seg.index, seg.frames
            stats.frames += len(frames) - (1 if seg.index else 0)

            flow = None
            if config.flow.enabled:
                stage = "flow"
                t0 = time.perf_counter()
                flow = _flow(frames, config, models, stats)
                stats.add_time("flow", time.perf_counter() - t0)
                stats.pairs += len(flow)

            tracks = pose_frames = None
            if config.persons.enabled:
                stage = "pose"
                t0 = time.perf_counter()
                if models.skeletons is not None:
                    tracks = _imported_tracks(task, config, models, seg.start_frame, frames)
                else:
                    if tracker is None:
                        tracker = FlowTracker(
                            models.detector,
                            models.estimator,
                            max_persons=config.persons.max_persons,
                        )
                    tracks = tracker.process(frames, flow, start_frame=seg.start_frame)
                stats.add_time("pose", time.perf_counter() - t0)
                stats.persons += tracks.num_persons
                style = config.render_style
                if style is not None:
                    stage = "render"
                    t0 = time.perf_counter()
                    pose_frames = render_segment(frames, tracks.keypoints, style)
                    stats.add_time("render", time.perf_counter() - t0)

            stage = "encode"
            t0 = time.perf_counter()
            row = encode_row(
                video_id=task.video_id, source=task.source, label=task.label,
                label_index=task.label_index, segment=seg.index, start_frame=seg.start_frame,
                fps=fps, frames=frames, flow=flow, pose_frames=pose_frames,
                keypoints=None if tracks is None else tracks.keypoints,
                boxes=None if tracks is None else tracks.boxes,
                track_ids=None if tracks is None else tracks.track_ids,
                keypoints3d=None if tracks is None else tracks.keypoints3d,
                source_size=info.display_size[::-1],
                meta=models.meta, flow_encoding=config.flow.encoding,
                jpeg_quality=config.output.jpeg_quality,
            )  # fmt: skip
            stats.add_time("encode", time.perf_counter() - t0)
            yield SegmentRow(seg.index, seg.is_last, len(frames), row)
    except VideoFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one VideoFailed
        error = error_text(exc).replace(source, task.source)  # a staged copy's name: the source
        raise VideoFailed(stage, error, index) from exc
    finally:
        if segments is not None:
            segments.close()  # stops ffmpeg when the caller stops early
        staging.close()  # removes a staged copy


def _flow(frames: np.ndarray, config: RunConfig, models: Models, stats: Stats) -> np.ndarray:
    """Flow of one segment by the configured backend; the tvl1 solver reports its kernel path."""
    if config.flow.backend != "tvl1":
        return compute_flow(frames, backend=config.flow.backend, **models.flow_params)
    from tristream.models.tvl1 import TVL1Stats

    solver = TVL1Stats()
    flow = compute_flow(frames, backend="tvl1", stats=solver, **models.flow_params)
    stats.flow_kernels[solver.kernel] = stats.flow_kernels.get(solver.kernel, 0) + 1
    if solver.fallback_reason:
        stats.flow_fallbacks.append(solver.fallback_reason)
    return flow


def _imported_tracks(
    task: VideoTask, config: RunConfig, models: Models, start_frame: int, frames: np.ndarray
) -> PersonTracks:
    """The video's imported skeletons for one segment, best ``max_persons`` first; with
    ``--skeletons3d`` the same persons' 3D joints beside them."""
    ann = models.skeletons.get(task.video_id)
    if ann is None:
        raise ValueError(f"no skeletons for video {task.video_id!r} in {config.persons.skeletons}")
    kps = slice_for_segment(ann, start_frame, len(frames), to_shape=frames.shape[1:3])
    if models.skeletons3d is not None:
        k3 = models.skeletons3d.get(task.video_id)
        if k3 is None:
            raise ValueError(
                f"no 3D skeletons for video {task.video_id!r} in {config.persons.skeletons3d}"
            )
        if k3.shape[:2] != ann.keypoints.shape[:2]:
            raise ValueError(
                f"video {task.video_id!r}: the 3D skeletons have [M, T] = {list(k3.shape[:2])} "
                f"but the 2D ones {list(ann.keypoints.shape[:2])}; person m must be the same "
                "in both files"
            )
        kps = np.concatenate([kps, slice_frames(k3, start_frame, len(frames))], axis=-1)
    return tracks_from_keypoints(kps, config.persons.max_persons)
