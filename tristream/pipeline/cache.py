"""The per-video cache under ``OUT/cache/``: staged segment rows and completion markers.

An entry is keyed by the content identity of the video, its time range and
the config hash, so a re-run (or a run after a crash) skips every video whose
entry is complete, and a renamed or re-labelled file is still found: the
identity columns (id, source, label) are set from the manifest when the shard
is written, not taken from the cache. Every file is written atomically, and an
entry counts as complete only once its ``done.json`` exists, which is written
after its last segment. On an object store (``s3://``, ``gs://``) each file is
one object written once complete, ``done.json`` last.

The content identity is one rule for local files and objects alike
(:mod:`tristream.shards.storage`): the SHA-256 of the video's bytes, computed
once per video while it is made ready to decode
(:func:`tristream.pipeline.storage.staged_video`: an object is hashed as it is
staged, so a video is downloaded once) and handed to :func:`entry_dir`. A
video with no identity (a pipe, a device, another URL) gets an entry that is
never reused. The same bytes at another path or in another bucket find the same
entry.

Every function here takes the run's ``store`` (a
:class:`~tristream.shards.storage.Store` or its config; None: the environment's).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable

from tristream.config import RunConfig
from tristream.shards import storage
from tristream.shards.atomic import write_text_atomic
from tristream.shards.schema import SCHEMA_VERSION
from tristream.shards.storage import StoreLike

DONE = "done.json"


# --------------------------------------------------------------------------- config identity


def affecting_output(config: RunConfig, file_id: Callable[[str], str | None]) -> dict:
    """The settings that change shard contents (what the config hash covers); model and
    skeleton files by ``file_id(path)`` (their content). Keys and values are those of
    every earlier release, so equal settings keep their hash (and their cache)."""
    flow, persons = config.flow, config.persons
    return {
        "fps": config.decode.fps,
        "short_side": config.decode.short_side,
        "max_frames": config.decode.max_frames,
        "flow": flow.backend,
        "flow_encoding": flow.encoding if flow.enabled else None,
        "flow_params": flow.tvl1() if flow.enabled else None,
        "jpeg_quality": config.output.jpeg_quality,
        "schema_version": SCHEMA_VERSION,
        "persons": _persons_identity(config, file_id) if persons.enabled else None,
    }


def _persons_identity(config: RunConfig, file_id: Callable[[str], str | None]) -> dict:
    p, style = config.persons, config.render_style
    files = {"detector": p.detector, "pose_model": p.pose_model, "skeletons": p.skeletons}
    ids = {name: file_id(path) if path else None for name, path in files.items()}
    extra: dict = {"keypoints3d": True} if p.keypoints3d else {}  # absent: earlier hashes hold
    if p.skeletons3d:
        extra["skeletons3d"] = file_id(p.skeletons3d)
    pose = bool(p.pose_model)
    return (
        extra
        | ids
        | {
            "pose_decoder": p.pose_decoder if pose else None,
            "flip_test": p.flip_test if pose else None,
            "pose_format": p.pose_format if pose else None,
            "pose_precision": p.pose_precision if pose else None,
            "max_persons": p.max_persons,
            "det_threshold": p.det_threshold if p.detector else None,
            "det_nms": p.det_nms if p.detector else None,
            "render": str(style) if style else None,
        }
    )


def config_hash(config: RunConfig, file_id: Callable[[str], str | None] | None = None) -> str:
    """A short stable hash (16 hex digits) of :func:`affecting_output`: the first key of
    every cache entry and the ``config_hash`` of each row's ``meta``. Model and skeleton
    files count by their content (``file_id``; default: the SHA-256 of their bytes on the
    run's store, ``config.run.store``, so the same bytes local or on a bucket hash alike).
    Reads those files: compute it once per run."""
    if file_id is None:
        file_id = functools.partial(storage.content_hash, store=config.run.store)
    text = json.dumps(affecting_output(config, file_id), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_dir(
    root: str,
    config_hash: str,
    content_id: str | None,
    source: str,
    start,
    end,
    video_id: str,
) -> tuple[str, bool]:
    """The cache folder of one video, and whether it may be reused across runs.

    ``root`` is ``OUT/cache``; ``content_id`` the video's identity
    (:func:`tristream.shards.storage.content_hash`, as
    :func:`~tristream.pipeline.storage.staged_video` gives it). A video with an
    identity is keyed by it and its time range; one without (None) by its id and
    source, and is never reused (its content cannot be checked).
    """
    if content_id is None:
        key = hashlib.sha256(f"{video_id}\0{source}\0{start}\0{end}".encode()).hexdigest()
        return storage.join(root, config_hash, "uncached", key[:24]), False
    key = hashlib.sha256(f"{content_id}\0{start}\0{end}".encode()).hexdigest()
    return storage.join(root, config_hash, key[:24]), True


def segment_path(entry: str, index: int) -> str:
    """Where segment ``index`` of an entry is staged (a one-row Parquet file)."""
    return storage.join(entry, f"seg-{index:05d}.parquet")


def mark_done(
    entry: str, segments: list[dict], video_id: str, source: str, store: StoreLike = None
) -> None:
    """Record that the entry holds every segment (``[{index, num_frames}]``, in order)."""
    record = {"video_id": video_id, "source": source, "segments": segments}
    write_text_atomic(storage.join(entry, DONE), json.dumps(record, indent=1) + "\n", store)


def read_done(entry: str, store: StoreLike = None) -> list[dict] | None:
    """The segments of a complete entry, or None if it is not complete (or unreadable)."""
    store = storage.get_store(store)
    try:
        segments = json.loads(store.read_text(storage.join(entry, DONE)))["segments"]
    except (OSError, ValueError, KeyError):
        return None
    if not all(store.isfile(segment_path(entry, s["index"])) for s in segments):
        return None
    return segments
