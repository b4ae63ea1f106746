"""Read shard rows back as arrays: the trainer's side of the shard contract.

Needs numpy, pyarrow, OpenCV (image decoding) and protobuf only: no Beam, no
ffmpeg, no torch.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from tristream.shards.codec import decode_flow, decode_frames
from tristream.shards.parquet import iter_parquet_rows
from tristream.shards.schema import NUM_JOINTS, SCHEMA_VERSION
from tristream.shards.tfrecord import iter_tfrecord_rows

SHARD_SUFFIXES = (".parquet", ".tfrecord")


def shard_files(path: str | os.PathLike, fmt: str | None = None) -> list[str]:
    """The shard files under ``path``, sorted.

    ``path`` is a shard file, an output directory (its ``shards/`` folder is
    searched) or a folder of shards. ``fmt`` (``parquet`` or ``tfrecord``)
    restricts the suffix; when None and a directory holds both formats (a
    ``--format both`` run), the Parquet files are returned, so each row is
    read once.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no shard file or directory at {path}")
    folder = os.path.join(path, "shards") if os.path.isdir(os.path.join(path, "shards")) else path
    suffixes = (f".{fmt}",) if fmt else SHARD_SUFFIXES
    for suffix in suffixes:
        files = sorted(glob.glob(os.path.join(glob.escape(folder), f"*{suffix}")))
        if files:
            return files
    return []


def iter_raw_rows(path: str | os.PathLike, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield the undecoded rows (column -> Python value) of every shard under ``path``."""
    for file in shard_files(path, fmt):
        if file.endswith(".parquet"):
            yield from iter_parquet_rows(file)
        elif file.endswith(".tfrecord"):
            yield from iter_tfrecord_rows(file)
        else:
            raise ValueError(f"not a shard file (expected .parquet or .tfrecord): {file}")


def parse_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """The row's ``meta`` JSON as a dict; raises ValueError for a schema newer than this reader."""
    meta = json.loads(raw["meta"]) if raw.get("meta") else {}
    version = meta.get("schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"shard schema version {version} is newer than this reader ({SCHEMA_VERSION}); "
            "upgrade tristream"
        )
    return meta


def decode_row(raw: dict[str, Any], modalities: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Turn a raw row into arrays.

    Returns scalar columns as Python values, ``meta`` as a dict, and, for the
    modalities present (and in ``modalities`` when given): ``rgb`` and
    ``pose`` uint8 ``[T, H, W, 3]``; ``flow`` float32 ``[T-1, H, W, 2]`` in
    pixels (dequantised); ``keypoints`` float32 ``[M, T, 17, 3]``, ``boxes``
    float32 ``[M, T, 5]``, ``track_ids`` int32 ``[M]``.
    """
    meta = parse_meta(raw)

    def wanted(m: str) -> bool:
        return modalities is None or m in modalities

    row: dict[str, Any] = {}
    for key in ("video_id", "source", "label", "label_index", "segment", "start_frame",
                "num_frames", "fps", "height", "width"):  # fmt: skip
        if key in raw:
            row[key] = raw[key]
    row["meta"] = meta
    t, h, w = raw["num_frames"], raw["height"], raw["width"]
    if "rgb" in raw and wanted("rgb"):
        row["rgb"] = decode_frames(raw["rgb"]).reshape(t, h, w, 3)
    if "flow_x" in raw and wanted("flow"):
        encoding = meta.get("flow_encoding", "jpeg")
        row["flow"] = decode_flow(raw["flow_x"], raw["flow_y"], encoding, h, w)
    if "pose" in raw and wanted("pose"):
        row["pose"] = decode_frames(raw["pose"]).reshape(t, h, w, 3)
    if "keypoints" in raw and wanted("keypoints"):
        m = int(raw["num_persons"])
        row["num_persons"] = m
        row["keypoints"] = np.asarray(raw["keypoints"], np.float32).reshape(m, t, NUM_JOINTS, 3)
        row["boxes"] = np.asarray(raw["boxes"], np.float32).reshape(m, t, 5)
        row["track_ids"] = np.asarray(raw["track_ids"], np.int32).reshape(m)
    return row


def read_rows(
    path: str | os.PathLike, modalities: tuple[str, ...] | None = None, fmt: str | None = None
) -> Iterator[dict[str, Any]]:
    """Iterate the rows of a shard file or output directory as dicts of arrays.

    See :func:`decode_row` for the keys, shapes and dtypes. ``modalities``
    limits which modalities are decoded (all present ones by default); ``fmt``
    picks ``parquet`` or ``tfrecord`` in a directory that has both. Parquet
    and TFRecord shards give identical rows.
    """
    for raw in iter_raw_rows(path, fmt):
        yield decode_row(raw, modalities)
