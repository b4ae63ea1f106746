"""TFRecord shard files: one ``tf.train.SequenceExample`` per segment row.

Scalar and array columns go in the context, per-frame lists (``rgb``,
``flow_x``/``flow_y``, ``pose``) in the feature lists, under the MediaSequence
style keys of :mod:`tristream.shards.schema`. Records use TFRecord framing
(length, masked CRC32C of the length, data, masked CRC32C of the data), so
TensorFlow, the ``tfrecord`` package or any other TFRecord reader opens them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import google_crc32c
import pyarrow as pa

from tristream.shards import example_proto as example_pb2
from tristream.shards import frame_index, storage
from tristream.shards.atomic import AtomicRowWriter
from tristream.shards.schema import COLUMNS, COLUMNS_BY_NAME, Column, modalities_of

_MASK_DELTA = 0xA282EAD8
#: The context columns of each modality that a row holding it always has.
_REQUIRED: dict[str, tuple[Column, ...]] = {
    m: tuple(c for c in COLUMNS if c.modality == m and not c.nullable and not c.sequence)
    for m in {c.modality for c in COLUMNS if c.modality}
}


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data`` (what a record stores after its length and data)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


_masked_crc = masked_crc


def write_record(f: BinaryIO, data: bytes) -> None:
    """Append one TFRecord record holding ``data`` to the binary file ``f``."""
    length = struct.pack("<Q", len(data))
    f.write(length)
    f.write(struct.pack("<I", _masked_crc(length)))
    f.write(data)
    f.write(struct.pack("<I", _masked_crc(data)))


def read_record_at(f: BinaryIO, offset: int | None = None, check_crc: bool = True) -> bytes | None:
    """The payload of the record at ``offset`` (the current position when None).

    Returns None at a clean end of file; raises ValueError on a truncated or
    corrupt record.
    """
    if offset is not None:
        f.seek(offset)
    pos = f.tell()
    head = f.read(12)
    if not head:
        return None
    name = getattr(f, "name", None) or getattr(f, "path", None) or "TFRecord file"
    if len(head) < 12:
        raise ValueError(f"{name}: truncated record header at byte {pos}")
    length_bytes, length_crc = head[:8], struct.unpack("<I", head[8:])[0]
    if check_crc and _masked_crc(length_bytes) != length_crc:
        raise ValueError(f"{name}: corrupt record length at byte {pos}")
    (length,) = struct.unpack("<Q", length_bytes)
    data = f.read(length)
    tail = f.read(4)
    if len(data) < length or len(tail) < 4:
        raise ValueError(f"{name}: truncated record at byte {pos}")
    if check_crc and _masked_crc(data) != struct.unpack("<I", tail)[0]:
        raise ValueError(f"{name}: corrupt record data at byte {pos}")
    return data


def record_offsets(path: str, store: storage.StoreLike = None) -> list[int]:
    """Byte offsets of every record of a TFRecord file (reads and checks the headers only).

    ``path``: a local path or an object-store URI (:mod:`tristream.shards.storage`, read
    from ``store``: None is the environment's).
    """
    offsets: list[int] = []
    size = storage.getsize(path, store)
    with storage.open_input(path, store=store) as f:
        pos = 0
        while pos < size:
            head = f.read(12)
            if len(head) < 12:
                raise ValueError(f"{path}: truncated record header at byte {pos}")
            if _masked_crc(head[:8]) != struct.unpack("<I", head[8:])[0]:
                raise ValueError(f"{path}: corrupt record length at byte {pos}")
            (length,) = struct.unpack("<Q", head[:8])
            offsets.append(pos)
            pos += 12 + length + 4
            if pos > size:
                raise ValueError(f"{path}: truncated record at byte {offsets[-1]}")
            f.seek(pos)
    return offsets


def iter_records(
    path: str, check_crc: bool = True, store: storage.StoreLike = None
) -> Iterator[bytes]:
    """Yield the payload of each record of a TFRecord file (a local path or a URI, read
    from ``store``: None is the environment's); raise ValueError on corruption."""
    with storage.open_input(path, seekable=False, store=store) as f:
        while (data := read_record_at(f, check_crc=check_crc)) is not None:
            yield data


def _set_feature(feature: example_pb2.Feature, col: Column, values: list) -> None:
    if col.tf_kind == "bytes":
        feature.bytes_list.value.extend(values)
    elif col.tf_kind == "int":
        feature.int64_list.value.extend(int(v) for v in values)
    else:
        feature.float_list.value.extend(float(v) for v in values)


def _get_feature(feature: example_pb2.Feature, col: Column) -> list:
    if col.tf_kind == "bytes":
        return list(feature.bytes_list.value)
    if col.tf_kind == "int":
        return list(feature.int64_list.value)
    return list(feature.float_list.value)


def row_to_example(row: dict[str, Any]) -> bytes:
    """Serialise a raw shard row (column -> Python value) to SequenceExample bytes.

    A None value (e.g. no label) leaves its key out. Strings are UTF-8.
    """
    ex = example_pb2.SequenceExample()
    for name, value in row.items():
        col = COLUMNS_BY_NAME[name]
        if value is None:
            continue
        if col.sequence:
            flist = ex.feature_lists.feature_list[col.tf_key]
            for item in value:
                flist.feature.add().bytes_list.value.append(item)
            continue
        values = value if isinstance(value, list) else [value]
        if col.tf_kind == "bytes":
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        _set_feature(ex.context.feature[col.tf_key], col, values)
    return ex.SerializeToString(deterministic=True)


def _context_columns(context: example_pb2.Features, row: dict[str, Any]) -> None:
    """Fill ``row`` with the context columns of ``context`` (see :func:`example_to_row`).

    An absent nullable column is None when its modality is in the record (or it has
    none: ``label``), and left out with the modality otherwise (``source_height`` of a
    run without persons), as a Parquet file without the modality's columns gives it.
    """
    keys = context.feature
    for col in COLUMNS:
        if col.sequence:
            continue
        if col.tf_key not in keys:
            if col.nullable and (col.modality is None or _has_modality(keys, col.modality)):
                row[col.name] = None
            continue
        values = _get_feature(context.feature[col.tf_key], col)
        if pa.types.is_list(col.type):
            row[col.name] = values
        else:
            value = values[0]
            if pa.types.is_string(col.type):
                value = value.decode("utf-8")
            row[col.name] = value


def _has_modality(keys: Any, modality: str) -> bool:
    """Whether a context holds a required column of ``modality``."""
    return any(c.tf_key in keys for c in _REQUIRED.get(modality, ()))


def example_to_row(data: bytes) -> dict[str, Any]:
    """Parse SequenceExample bytes back to a raw shard row (the inverse of :func:`row_to_example`).

    Columns whose key is absent come back as None when nullable and are left
    out otherwise (a modality the run did not write).
    """
    ex = example_pb2.SequenceExample()
    ex.ParseFromString(data)
    row: dict[str, Any] = {}
    for col in COLUMNS:
        if col.sequence and col.tf_key in ex.feature_lists.feature_list:
            flist = ex.feature_lists.feature_list[col.tf_key]
            row[col.name] = [f.bytes_list.value[0] for f in flist.feature]
    _context_columns(ex.context, row)
    return {c.name: row[c.name] for c in COLUMNS if c.name in row}  # contract order


def context_to_row(data: bytes) -> dict[str, Any]:
    """Parse a record's context alone (a serialized ``tf.train.Features``, the range a frame
    index names) to the raw row's columns that are not per-frame, as :func:`example_to_row`
    gives them."""
    context = example_pb2.Features()
    context.ParseFromString(data)
    row: dict[str, Any] = {}
    _context_columns(context, row)
    return row


class TFRecordShardWriter(AtomicRowWriter):
    """Write raw shard rows as SequenceExamples to one TFRecord file.

    The same interface as :class:`tristream.shards.parquet.ParquetShardWriter`:
    ``write(row)``; the file appears at ``path`` only when the ``with`` block
    (or :meth:`close`) ends without an exception, with its frame index
    ``<path>.idx`` (:mod:`tristream.shards.frame_index`, written first) when ``index``.
    The index does not change the file's bytes.
    """

    def __init__(self, path: str, schema=None, index: bool = True):
        super().__init__(path)
        self.index = index
        self._file = open(self.tmp_path, "wb")  # closed by close() or abort()
        self._pos = 0
        self._crc = 0
        self._names: set[str] = set()
        self._builder = frame_index.IndexBuilder("tfrecord")

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        data = row_to_example(row)
        length = struct.pack("<Q", len(data))
        parts = (length, struct.pack("<I", _masked_crc(length)), data,
                 struct.pack("<I", _masked_crc(data)))  # fmt: skip
        for part in parts:
            self._file.write(part)
            self._crc = google_crc32c.extend(self._crc, part)
        if self.index:
            self._builder.add(frame_index.tfrecord_entry(data, self._pos))
            self._names.update(k for k, v in row.items() if v is not None)
        self._pos += 16 + len(data)
        self.rows += 1

    def _close_output(self) -> None:
        self._file.close()

    def close(self) -> None:
        """Finish the file, write its frame index, then move the file to ``path``."""
        self._close_output()
        data = None
        if self.index:
            name = os.path.basename(self.path.rstrip("/"))
            data = self._builder.to_bytes(name, self._pos, self._crc, modalities_of(self._names))
        frame_index.finish_with_index(self, data)


def write_tfrecord_rows(path: str, rows: Iterable[dict[str, Any]], index: bool = True) -> int:
    """Write ``rows`` as SequenceExamples to ``path`` atomically (with its frame index when
    ``index``); return the row count."""
    with TFRecordShardWriter(path, index=index) as writer:
        for row in rows:
            writer.write(row)
    return writer.rows


def iter_tfrecord_rows(path: str) -> Iterator[dict[str, Any]]:
    """Yield the raw rows of a TFRecord shard one at a time."""
    for data in iter_records(path):
        yield example_to_row(data)
