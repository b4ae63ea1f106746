"""The per-video cache under ``OUT/cache/``: staged segment rows and completion markers.

An entry is keyed by the content hash of the source file, the time range and
the config hash, so a re-run (or a run after a crash) skips every video whose
entry is complete, and a renamed or re-labelled file is still found: the
identity columns (id, source, label) are set from the manifest when the shard
is written, not taken from the cache. Every file is written atomically, and an
entry counts as complete only once its ``done.json`` exists, which is written
after its last segment. On an object store (``s3://``, ``gs://``) each file is
one object written once complete, ``done.json`` last, and a video's content
key is the store's checksum metadata (:func:`tristream.pipeline.storage.content_id`).
"""

from __future__ import annotations

import hashlib
import json

from tristream.pipeline.storage import content_id
from tristream.shards import storage
from tristream.shards.atomic import write_text_atomic

DONE = "done.json"


def entry_dir(
    root: str, config_hash: str, source: str, start, end, video_id: str
) -> tuple[str, bool]:
    """The cache folder of one video, and whether it may be reused across runs.

    ``root`` is ``OUT/cache``. A regular file or an object is keyed by its content
    (:func:`~tristream.pipeline.storage.content_id`); anything else by its id and
    source, and is never reused (its content cannot be checked).
    """
    digest = content_id(source)
    if digest is None:
        key = hashlib.sha256(f"{video_id}\0{source}\0{start}\0{end}".encode()).hexdigest()
        return storage.join(root, config_hash, "uncached", key[:24]), False
    key = hashlib.sha256(f"{digest}\0{start}\0{end}".encode()).hexdigest()
    return storage.join(root, config_hash, key[:24]), True


def segment_path(entry: str, index: int) -> str:
    """Where segment ``index`` of an entry is staged (a one-row Parquet file)."""
    return storage.join(entry, f"seg-{index:05d}.parquet")


def mark_done(entry: str, segments: list[dict], video_id: str, source: str) -> None:
    """Record that the entry holds every segment (``[{index, num_frames}]``, in order)."""
    record = {"video_id": video_id, "source": source, "segments": segments}
    write_text_atomic(storage.join(entry, DONE), json.dumps(record, indent=1) + "\n")


def read_done(entry: str) -> list[dict] | None:
    """The segments of a complete entry, or None if it is not complete (or unreadable)."""
    try:
        segments = json.loads(storage.read_text(storage.join(entry, DONE)))["segments"]
    except (OSError, ValueError, KeyError):
        return None
    if not all(storage.isfile(segment_path(entry, s["index"])) for s in segments):
        return None
    return segments
