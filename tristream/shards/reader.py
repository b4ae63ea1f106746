"""Read shard rows back as arrays: the trainer's side of the shard contract.

Needs numpy, pyarrow, OpenCV (image decoding) and protobuf only: no Beam, no
ffmpeg, no torch. The files come from :mod:`tristream.shards.files`, the
decoding from :class:`tristream.shards.row.RowView`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from tristream.shards.files import SHARD_SUFFIXES as _SUFFIXES
from tristream.shards.files import iter_raw_rows as iter_file_rows
from tristream.shards.files import shard_files
from tristream.shards.row import RowView
from tristream.shards.schema import COLUMNS

#: Shard file suffixes, Parquet first.
SHARD_SUFFIXES: tuple[str, ...] = tuple(_SUFFIXES.values())

__all__ = [
    "SHARD_SUFFIXES",
    "decode_row",
    "iter_raw_rows",
    "parse_meta",
    "read_rows",
    "shard_files",
]


def iter_raw_rows(
    path: str | os.PathLike, fmt: str | None = None, columns: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the undecoded rows (column -> Python value) of every shard under ``path``.

    ``path``, ``fmt``: as :func:`shard_files`; ``columns``: as
    :func:`tristream.shards.files.iter_raw_rows`.
    """
    for file in shard_files(path, fmt):
        yield from iter_file_rows(file, columns)


def parse_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """The row's ``meta`` JSON as a dict; raises ValueError for a schema newer than this reader."""
    return RowView(raw).meta


def decode_row(raw: dict[str, Any], modalities: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Turn a raw row into arrays (:meth:`tristream.shards.row.RowView.decode`).

    Returns scalar columns as Python values, ``meta`` as a dict, and, for the
    modalities present (and in ``modalities`` when given): ``rgb`` and
    ``pose`` uint8 ``[T, H, W, 3]``; ``flow`` float32 ``[T-1, H, W, 2]`` in
    pixels (dequantised); ``keypoints`` float32 ``[M, T, 17, 3]``, ``boxes``
    float32 ``[M, T, 5]``, ``track_ids`` int32 ``[M]``.
    """
    return RowView(raw).decode(modalities)


def read_rows(
    path: str | os.PathLike, modalities: tuple[str, ...] | None = None, fmt: str | None = None
) -> Iterator[dict[str, Any]]:
    """Iterate the rows of a shard file or output directory as dicts of arrays.

    See :func:`decode_row` for the keys, shapes and dtypes. ``modalities``
    limits which modalities are decoded (all present ones by default); ``fmt``
    picks ``parquet`` or ``tfrecord`` in a directory that has both. Parquet
    and TFRecord shards give identical rows. Parquet reads only the columns
    of the asked modalities.
    """
    columns = None
    if modalities is not None:
        columns = [c.name for c in COLUMNS if c.modality is None or c.modality in modalities]
    for raw in iter_raw_rows(path, fmt, columns):
        yield decode_row(raw, modalities)
