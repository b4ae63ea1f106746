"""Shard sinks: gather each video's staged segments, write shard files, then the manifest.

Beam's own file sinks are not used: our shard writer streams rows from the
cache into one file per (split, shard), written to a temporary name and
renamed (on an object store: uploaded as one object once complete), so a shard
appears complete or not at all, its rows are sorted by (video id, segment)
whatever the number of workers, and memory holds one row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator

import apache_beam as beam

from tristream import __version__
from tristream.config import RunConfig
from tristream.pipeline import interrupt
from tristream.pipeline.videos import Failure, VideoOutcome
from tristream.process import VideoTask
from tristream.shards import storage
from tristream.shards.atomic import write_text_atomic
from tristream.shards.files import (
    SHARD_SUFFIXES,
    iter_raw_rows,
    open_shard_writer,
    shard_format,
    shard_name,
)
from tristream.shards.frame_index import INDEX_SUFFIX, index_path
from tristream.shards.schema import SCHEMA_VERSION, arrow_schema
from tristream.shards.storage import StoreLike

LOG = logging.getLogger(__name__)


def shard_key(outcome: VideoOutcome) -> tuple[tuple[str, int, int], VideoOutcome]:
    """``((split, shard, num_shards), outcome)``: the shard a written video goes to."""
    t = outcome.task
    return (t.split, t.shard, t.num_shards), outcome


class WriteShard(beam.DoFn):
    """``((split, shard, n), [VideoOutcome])`` -> shard files; emits a summary dict per shard.

    Only videos whose every row is staged reach it. A failure here (a full disk)
    is a fault of the run, not of a video: it propagates, the run stops with an
    error, and a re-run rewrites the shard from the cache.
    """

    def __init__(self, config: RunConfig):
        self.config = config

    def setup(self) -> None:
        self.schema = arrow_schema(self.config.modalities)
        self.folder = storage.join(self.config.output.path, "shards")

    def process(self, element):
        if interrupt.requested():  # a stopped run writes no shards (its videos are cached)
            return
        (split, shard, num_shards), videos = element
        videos = sorted(videos, key=lambda v: v.task.video_id)
        yield write_shard(self.config, self.schema, self.folder, split, shard, num_shards,
                          shard_rows(videos, self.config.run.store), videos)  # fmt: skip


def shard_rows(videos: list[VideoOutcome], store: StoreLike = None) -> Iterator[dict]:
    """The staged rows of ``videos`` in order, their identity columns (id, source, label)
    set from this run's tasks: the cache is keyed by content, so a renamed or
    relabelled video is found there under its old identity."""
    for video in videos:
        t = video.task
        identity = {"video_id": t.video_id, "source": t.source, "label": t.label,
                    "label_index": t.label_index}  # fmt: skip
        for path in video.paths:
            for row in iter_raw_rows(path, store=store):
                row.update(identity)
                yield row


def _indexed(path: str, config: RunConfig) -> bool:
    """Whether the shard file ``path`` gets a frame index: TFRecord always (its bytes do not
    change), Parquet unless ``--no-parquet-frame-index`` (the index comes with its frame layout)."""
    return shard_format(path) == "tfrecord" or config.output.parquet_frame_index


def write_shard(config, schema, folder, split, shard, num_shards, rows, videos) -> dict:
    """Write one shard in every configured format in a single pass over ``rows``; returns
    its summary for ``manifest.json``: each file's path (relative to the output), bytes and
    SHA-256, its rows, videos and frames."""
    formats = config.output.formats
    paths = [storage.join(folder, shard_name(split, shard, num_shards, f)) for f in formats]
    stored_frames = count = 0
    store = config.run.store  # the run's StoreConfig (None: the environment's)
    with contextlib.ExitStack() as stack:
        writers = [
            stack.enter_context(open_shard_writer(p, schema, store, index=_indexed(p, config)))
            for p in paths
        ]  # published (and hashed) as the block ends
        for row in rows:
            for writer in writers:
                writer.write(row)
            stored_frames += row["num_frames"]
            count += 1
    files = [
        {
            "path": storage.relative(p, config.output.path),
            "bytes": storage.getsize(p, store),
            "sha256": w.sha256,  # hashed before publishing: no read-back of an upload
        }
        | (
            {"index": storage.relative(index_path(p), config.output.path)}
            if _indexed(p, config)
            else {}
        )  # fmt: skip
        for p, w in zip(paths, writers, strict=True)
    ]
    return {
        "split": split,
        "shard": shard,
        "num_shards": num_shards,
        "files": files,
        "rows": count,
        "videos": len(videos),
        "frames": stored_frames,
        "video_frames": sum(v.frames for v in videos),
        "video_ids": [v.task.video_id for v in videos],  # for the finaliser's accounting
    }


def account(
    tasks: list[VideoTask], pre_failures: list[Failure], written: set[str], failures: list[Failure]
) -> list[Failure]:
    """One failure record per video that is not written, checked so that written + failed
    = total.

    ``tasks`` are the videos the run took on, ``pre_failures`` the manifest rows
    rejected before it (duplicate ids), ``written`` the ids in the shards, and
    ``failures`` what the workers reported (possibly several for one video: the
    earliest segment's is kept). A task in neither ``written`` nor ``failures``
    was lost by a bug or a runner: it gets a record of stage ``lost``. A video
    both written and reported failed keeps its rows and drops the report.
    Returns the records sorted by video id, rejected rows included.
    """
    first: dict[str, Failure] = {}
    for f in sorted(failures, key=lambda f: (f.video_id, f.segment or 0)):
        if f.video_id not in written:
            first.setdefault(f.video_id, f)
    for t in tasks:
        if t.video_id not in written and t.video_id not in first:
            LOG.error("%s was neither written nor reported as failed", t.video_id)
            first[t.video_id] = Failure(
                t.video_id, t.source, "lost",
                "neither written nor reported as failed (a bug, or a runner that dropped work)",
            )  # fmt: skip
    records = sorted(first.values(), key=lambda f: f.video_id)
    # Rejected rows repeat an id that a task holds, so they are listed besides them.
    records = sorted([*pre_failures, *records], key=lambda f: f.video_id)
    if len(written) + len(first) != len(tasks):
        raise AssertionError(
            f"accounting: {len(written)} written + {len(first)} failed != {len(tasks)} videos"
        )
    return records


def finalize(
    element,
    config: RunConfig,
    config_hash: str,
    tasks: list[VideoTask],
    pre_failures: list[Failure],
) -> dict:
    """Write empty shards for shards no video reached, ``failures.jsonl`` and ``manifest.json``.

    ``element`` is ``(None, {"shards": [...], "failures": [...], ...})`` from a
    CoGroupByKey on one constant key, so this runs once, after every shard is
    written, on any runner (no side inputs). Accounts for every video
    (:func:`account`). Returns the manifest dict; its ``totals`` add up:
    ``videos = videos_written + videos_failed``, ``videos_lost`` of the failed
    ones were lost.
    """
    if interrupt.requested():  # a stopped run writes no manifest: its output is not done
        return {}
    _, grouped = element
    shards, failures = list(grouped["shards"]), list(grouped["failures"])
    schema = arrow_schema(config.modalities)
    folder = storage.join(config.output.path, "shards")
    store = config.run.store  # the run's StoreConfig (None: the environment's)
    storage.makedirs(folder, store)
    have = {(s["split"], s["shard"]) for s in shards}
    # Every shard of every split, empty ones too: --num-shards N gives N files named -of-N.
    expected = {(t.split, i, t.num_shards) for t in tasks for i in range(t.num_shards)}
    for split, shard, num_shards in sorted(expected):
        if (split, shard) not in have:
            shards.append(write_shard(config, schema, folder, split, shard, num_shards,
                                      [], []))  # fmt: skip
    shards.sort(key=lambda s: (s["split"], s["shard"]))
    # Shard files of an earlier run into the same folder (another shard count or
    # format) would be read as part of this one: remove them.
    current = {os.path.basename(f["path"]) for s in shards for f in s["files"]}
    for name in storage.list_dir(folder, store):
        if name.endswith(tuple(SHARD_SUFFIXES.values())) and name not in current:
            LOG.warning("removing stale shard from an earlier run: %s", name)
            storage.remove(storage.join(folder, name), store)
    # Frame indexes that no shard file of this run has (an earlier run's, or of a Parquet
    # shard now written without one) would describe other bytes: remove them.
    indexes = {os.path.basename(f["index"]) for s in shards for f in s["files"] if "index" in f}
    for name in storage.list_dir(folder, store):
        if name.endswith(INDEX_SUFFIX) and name not in indexes:
            storage.remove(storage.join(folder, name), store)

    written = {vid for s in shards for vid in s.pop("video_ids")}
    records = account(tasks, pre_failures, written, failures)
    lines = [json.dumps(f.to_json(), ensure_ascii=False) for f in records]
    write_text_atomic(
        storage.join(config.output.path, "failures.jsonl"),
        "".join(ln + "\n" for ln in lines),
        store,
    )

    labels = sorted({(t.label, t.label_index) for t in tasks if t.label is not None})
    splits: dict[str, dict] = {}
    for s in shards:
        agg = splits.setdefault(s["split"], {"shards": 0, "videos": 0, "rows": 0, "frames": 0})
        agg["shards"] += 1
        for key in ("videos", "rows"):
            agg[key] += s[key]
        agg["frames"] += s["video_frames"]
    manifest = {
        "tristream_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "config_hash": config_hash,
        "config": config.options(),
        "modalities": list(config.modalities),
        "formats": list(config.output.formats),
        "labels": {label: index for label, index in labels},
        "totals": {
            "videos": len(tasks) + len(pre_failures),
            "videos_written": len(written),
            "videos_failed": len(records),
            "videos_lost": sum(f.stage == "lost" for f in records),
            "rows": sum(s["rows"] for s in shards),
            "frames": sum(s["video_frames"] for s in shards),
            "stored_frames": sum(s["frames"] for s in shards),
            "bytes": sum(f["bytes"] for s in shards for f in s["files"]),
        },
        "splits": splits,
        "shards": shards,
    }
    write_text_atomic(
        storage.join(config.output.path, "manifest.json"),
        json.dumps(manifest, indent=2) + "\n",
        store,
    )
    return manifest
