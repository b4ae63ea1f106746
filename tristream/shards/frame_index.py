"""The frame index: a sidecar file beside each shard that says where every frame's bytes are.

A trainer needs a clip's 16 or 64 frames of a 250-frame row, not the row. The
shard writers (:mod:`tristream.shards.tfrecord`, :mod:`tristream.shards.parquet`)
write ``<shard>.idx`` beside ``<shard>`` (:func:`index_path`) when they close the
shard, with the byte offset and length of every encoded frame inside the shard
file, so that :mod:`tristream.shards.row_source` fetches just those bytes with
positional reads (ranged GETs on ``s3://`` / ``gs://``), as DALI's TFRecord reader
does with its index files. The shard bytes do not depend on the index, and
plain pyarrow and TFRecord readers still read whole rows. The layout is part of
the shard contract (``docs/shards.md``, "Frame index").

File layout (version 1, all integers little-endian)::

    bytes 0-7     MAGIC  b"TRSTIDX1"
    bytes 8-11    u32    H, length of the header
    bytes 12..    header, H bytes of UTF-8 JSON (keys sorted, see IndexHeader), then
                  zero padding to a multiple of 8
    row table     rows x ROW_DTYPE (:func:`row_dtype`), one record per shard row
    entries       per row, for each frame column c of the header, in order:
                  u64 offsets[count_c] then u32 lengths[count_c]
                  (absolute byte offsets in the shard file; entry_offset of the row
                  record says where the row's entry starts)

A row record holds ``locator`` (TFRecord: byte offset of the record; Parquet: its
row group, one row per group), ``record_length`` (TFRecord: payload bytes; Parquet: 0),
``head_offset``/``head_length`` (TFRecord: the byte range of the record's context, a
serialized ``tf.train.Features`` with every column that is not per-frame; Parquet:
0, 0: those columns are read through Parquet), ``entry_offset`` (in this file),
``num_frames`` (T), ``columns`` (bit k set: the row holds frame column k of the
header) and ``count_<column>`` per frame column (T for ``rgb``/``pose``, T - 1 for
flow; 0 for a column the row lacks).

Where frame bytes lie verbatim: in TFRecord, always (a ``BytesList`` value is the
bytes); in Parquet, in the layout the writer uses since the index exists: the
frame columns (``rgb``, ``flow_x``, ``flow_y``, ``pose``) are stored PLAIN,
uncompressed, without a dictionary (JPEG and PNG do not compress further: measured
+0.2 % in file size), so each value is a 4-byte length and the bytes. A Parquet
shard in another layout (an older tristream's: snappy and a dictionary page) gets
no index (:class:`NotIndexable`) and is read whole.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import google_crc32c
import numpy as np

from tristream.shards import storage
from tristream.shards.schema import COLUMNS
from tristream.shards.storage import StoreLike

if TYPE_CHECKING:
    from tristream.shards.atomic import AtomicRowWriter

__all__ = [
    "FRAME_COLUMNS",
    "INDEX_SUFFIX",
    "INDEX_VERSION",
    "MAGIC",
    "FrameIndex",
    "IndexBuilder",
    "IndexMismatch",
    "NotIndexable",
    "RowEntry",
    "build_index",
    "index_path",
    "parquet_entries",
    "read_index",
    "tfrecord_entry",
    "write_index",
]

#: First bytes of an index file; the digit is the layout version.
MAGIC = b"TRSTIDX1"
#: Layout version this module writes and reads.
INDEX_VERSION = 1
#: An index is ``<shard file name><INDEX_SUFFIX>`` in the shard's folder.
INDEX_SUFFIX = ".idx"
#: The per-frame columns an index locates, in contract order.
FRAME_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.sequence)
_TF_KEY_COLUMN = {c.tf_key: c.name for c in COLUMNS if c.sequence}
_FIXED_FIELDS = [
    ("locator", "<u8"),
    ("record_length", "<u8"),
    ("head_offset", "<u8"),
    ("head_length", "<u8"),
    ("entry_offset", "<u8"),
    ("num_frames", "<u4"),
    ("columns", "<u4"),
]


class NotIndexable(ValueError):
    """A shard whose frames are not stored verbatim (e.g. a compressed Parquet column)."""


class IndexMismatch(ValueError):
    """An index that does not describe the shard beside it (another size or file name, a
    record or row group that is not where the index says), or that cannot be parsed."""


def index_path(shard: str | os.PathLike) -> str:
    """The index file of shard ``shard`` (a path or URI): ``<shard>.idx``."""
    return os.fspath(shard) + INDEX_SUFFIX


def row_dtype(frame_columns: Sequence[str]) -> np.dtype:
    """The numpy dtype of one row record (packed, little-endian) for these frame columns."""
    return np.dtype(_FIXED_FIELDS + [(f"count_{c}", "<u4") for c in frame_columns])


# --------------------------------------------------------------------------- building


@dataclass
class RowEntry:
    """Where one row is in its shard (see the module docstring for the fields).

    ``frames``: column -> (offsets int ``[n]``, lengths int ``[n]``), absolute in the shard.
    """

    locator: int
    record_length: int
    head_offset: int
    head_length: int
    num_frames: int
    frames: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)


class IndexBuilder:
    """Collects :class:`RowEntry` s of one shard and serialises its index (:meth:`to_bytes`)."""

    def __init__(self, fmt: str):
        self.format = fmt
        self.entries: list[RowEntry] = []

    def add(self, entry: RowEntry) -> None:
        """Append the next row's entry."""
        self.entries.append(entry)

    def to_bytes(
        self, shard_name: str, shard_bytes: int, shard_crc32c: int, modalities: Iterable[str]
    ) -> bytes:
        """The index file for the shard ``shard_name`` (its base name) of ``shard_bytes``
        bytes with CRC32C ``shard_crc32c`` whose rows hold ``modalities``."""
        present = {c for e in self.entries for c in e.frames}
        columns = [c for c in FRAME_COLUMNS if c in present]
        header = {
            "index_version": INDEX_VERSION,
            "shard": shard_name,
            "format": self.format,
            "shard_bytes": int(shard_bytes),
            "shard_crc32c": int(shard_crc32c),
            "rows": len(self.entries),
            "modalities": list(modalities),
            "frame_columns": columns,
        }
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        head = MAGIC + struct.pack("<I", len(text)) + text
        head += b"\0" * (-len(head) % 8)
        dtype = row_dtype(columns)
        table = np.zeros(len(self.entries), dtype)
        pos = len(head) + table.nbytes
        blobs = []
        for k, e in enumerate(self.entries):
            rec = table[k]
            rec["locator"], rec["record_length"] = e.locator, e.record_length
            rec["head_offset"], rec["head_length"] = e.head_offset, e.head_length
            rec["entry_offset"], rec["num_frames"] = pos, e.num_frames
            rec["columns"] = sum(1 << k for k, c in enumerate(columns) if c in e.frames)
            for c in columns:
                offsets, lengths = e.frames.get(c, ([], []))
                rec[f"count_{c}"] = len(offsets)
                blob = np.asarray(offsets, "<u8").tobytes() + np.asarray(lengths, "<u4").tobytes()
                blobs.append(blob)
                pos += len(blob)
        return head + table.tobytes() + b"".join(blobs)


# --------------------------------------------------------------------------- reading


@dataclass
class FrameIndex:
    """A shard's index as loaded: the header and the row table (the entries stay in the
    file and are read per row, :meth:`entry_range` / :meth:`parse_entry`). Small and
    picklable: one per shard file travels to the DataLoader workers."""

    path: str
    shard: str
    format: str
    shard_bytes: int
    shard_crc32c: int
    modalities: tuple[str, ...]
    frame_columns: tuple[str, ...]
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_frames(self) -> np.ndarray:
        """int64 ``[N]``: T of each row."""
        return self.rows["num_frames"].astype(np.int64)

    def entry_range(self, row: int) -> tuple[int, int]:
        """``(offset, length)`` in the index file of row ``row``'s frame entry."""
        rec = self.rows[row]
        n = sum(int(rec[f"count_{c}"]) for c in self.frame_columns)
        return int(rec["entry_offset"]), 12 * n

    def parse_entry(self, row: int, data: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Row ``row``'s entry bytes (:meth:`entry_range`) as column -> (offsets int64 ``[n]``,
        lengths int64 ``[n]``), absolute byte ranges in the shard."""
        rec = self.rows[row]
        if len(data) != self.entry_range(row)[1]:
            raise IndexMismatch(f"{self.path}: truncated entry of row {row}")
        present = int(rec["columns"])
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        pos = 0
        for k, c in enumerate(self.frame_columns):
            n = int(rec[f"count_{c}"])
            if present >> k & 1:
                offsets = np.frombuffer(data, "<u8", n, pos).astype(np.int64)
                lengths = np.frombuffer(data, "<u4", n, pos + 8 * n).astype(np.int64)
                out[c] = (offsets, lengths)
            pos += 12 * n
        return out

    def check(self, shard_path: str, shard_size: int) -> None:
        """Raise :class:`IndexMismatch` unless this index names ``shard_path``'s file and size."""
        name = os.path.basename(shard_path.rstrip("/"))
        if self.shard != name:
            raise IndexMismatch(f"{self.path} indexes {self.shard!r}, not {name!r}")
        if self.shard_bytes != shard_size:
            raise IndexMismatch(
                f"{self.path} indexes {self.shard_bytes} bytes but {shard_path} has "
                f"{shard_size}: the shard was rewritten after its index"
            )


def parse_index(data: bytes, path: str) -> FrameIndex:
    """The :class:`FrameIndex` in ``data`` (the index file's first bytes: at least its
    header and row table). :class:`IndexMismatch` when it is not a version-1 index."""
    if len(data) < 12 or data[:8] != MAGIC:
        raise IndexMismatch(f"{path}: not a tristream frame index (bad magic)")
    (n,) = struct.unpack_from("<I", data, 8)
    try:
        header = json.loads(bytes(data[12 : 12 + n]).decode("utf-8"))
        if header["index_version"] != INDEX_VERSION:
            raise IndexMismatch(
                f"{path}: frame index version {header['index_version']}, this reader "
                f"reads {INDEX_VERSION}"
            )
        columns = tuple(header["frame_columns"])
        unknown = set(columns) - set(FRAME_COLUMNS)
        if unknown:
            raise IndexMismatch(f"{path}: unknown frame columns {sorted(unknown)}")
        dtype = row_dtype(columns)
        start = 12 + n + (-(12 + n) % 8)
        rows = int(header["rows"])
        if len(data) < start + rows * dtype.itemsize:
            raise IndexMismatch(f"{path}: truncated frame index")
        table = np.frombuffer(data, dtype, rows, start).copy()
        return FrameIndex(
            path=path,
            shard=str(header["shard"]),
            format=str(header["format"]),
            shard_bytes=int(header["shard_bytes"]),
            shard_crc32c=int(header["shard_crc32c"]),
            modalities=tuple(header["modalities"]),
            frame_columns=columns,
            rows=table,
        )
    except IndexMismatch:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise IndexMismatch(f"{path}: unreadable frame index header ({exc})") from None


def read_index(path: str, store: StoreLike = None) -> FrameIndex:
    """Load the index file ``path`` (header and row table; a URI is read from ``store``).

    FileNotFoundError when there is none; :class:`IndexMismatch` when it is not an index.
    """
    with storage.open_input(path, store=store) as f:
        head = f.read(12)
        if len(head) < 12 or head[:8] != MAGIC:
            raise IndexMismatch(f"{path}: not a tristream frame index (bad magic)")
        (n,) = struct.unpack_from("<I", head, 8)
        text = f.read(n)
        try:
            header = json.loads(text.decode("utf-8"))
            size = int(header["rows"]) * row_dtype(header["frame_columns"]).itemsize
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise IndexMismatch(f"{path}: unreadable frame index header ({exc})") from None
        pad = f.read(-(12 + n) % 8)
        table = f.read(size)
    return parse_index(head + text + pad + table, path)


# --------------------------------------------------------------------------- TFRecord


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes | memoryview, start: int, end: int):
    """Yield ``(field number, wire type, value start, value end)`` of a protobuf message
    in ``buf[start:end]`` (length-delimited values: their payload)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            n, pos = _varint(buf, pos)
            yield number, wire, pos, pos + n
            pos += n
        elif wire == 0:
            _, after = _varint(buf, pos)
            yield number, wire, pos, after
            pos = after
        elif wire == 1:
            yield number, wire, pos, pos + 8
            pos += 8
        elif wire == 5:
            yield number, wire, pos, pos + 4
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if pos != end:
        raise ValueError("protobuf message overruns its length")


def tfrecord_entry(data: bytes, record_offset: int) -> RowEntry:
    """The :class:`RowEntry` of one TFRecord record: ``data`` is its payload (a serialized
    ``SequenceExample``), ``record_offset`` the byte offset of the record in the file (its
    12-byte header comes first)."""
    base = record_offset + 12
    buf = memoryview(data)
    entry = RowEntry(record_offset, len(data), base, 0, 0)
    for number, wire, start, end in _proto_fields(buf, 0, len(buf)):
        if wire != 2:
            continue
        if number == 1:  # context: Features
            entry.head_offset, entry.head_length = base + start, end - start
        elif number == 2:  # feature_lists: map<string, FeatureList>
            for _, _, es, ee in _proto_fields(buf, start, end):
                key, value = None, None
                for n2, _, ks, ke in _proto_fields(buf, es, ee):
                    if n2 == 1:
                        key = bytes(buf[ks:ke]).decode("utf-8")
                    elif n2 == 2:
                        value = (ks, ke)
                column = _TF_KEY_COLUMN.get(key or "")
                if column is None:
                    continue
                offsets: list[int] = []
                lengths: list[int] = []
                if value is not None:
                    for _, _, fs, fe in _proto_fields(buf, *value):  # FeatureList.feature
                        got = 0
                        for n3, _, bs, be in _proto_fields(buf, fs, fe):  # Feature.kind
                            if n3 != 1:
                                continue
                            for _, _, vs, ve in _proto_fields(buf, bs, be):  # BytesList.value
                                offsets.append(base + vs)
                                lengths.append(ve - vs)
                                got += 1
                        if got != 1:
                            raise NotIndexable(f"a {column} feature holds {got} values, not 1")
                entry.frames[column] = (offsets, lengths)
    if "rgb" in entry.frames:
        entry.num_frames = len(entry.frames["rgb"][0])
    elif "pose" in entry.frames:
        entry.num_frames = len(entry.frames["pose"][0])
    return entry


# --------------------------------------------------------------------------- Parquet


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _thrift_value(buf: bytes, pos: int, kind: int) -> tuple[object, int]:
    """One value of Thrift compact type ``kind`` at ``buf[pos]``."""
    if kind in (1, 2):  # a bool field: the value is in the type
        return kind == 1, pos
    if kind == 3:
        return buf[pos], pos + 1
    if kind in (4, 5, 6):
        v, pos = _varint(buf, pos)
        return _zigzag(v), pos
    if kind == 7:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if kind == 8:
        n, pos = _varint(buf, pos)
        return bytes(buf[pos : pos + n]), pos + n
    if kind in (9, 10):
        head = buf[pos]
        pos += 1
        size, elem = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            if elem in (1, 2):  # bools in a list: one byte each
                items.append(buf[pos] == 1)
                pos += 1
            else:
                v, pos = _thrift_value(buf, pos, elem)
                items.append(v)
        return items, pos
    if kind == 11:
        size, pos = _varint(buf, pos)
        out = {}
        if size:
            kv = buf[pos]
            pos += 1
            for _ in range(size):
                k, pos = _thrift_value(buf, pos, kv >> 4)
                v, pos = _thrift_value(buf, pos, kv & 0x0F)
                out[k] = v
        return out, pos
    if kind == 12:
        return _thrift_struct(buf, pos)
    raise ValueError(f"unknown Thrift compact type {kind}")


def _thrift_struct(buf: bytes, pos: int) -> tuple[dict[int, object], int]:
    """A Thrift compact-protocol struct at ``buf[pos]`` as {field id: value}, and the end."""
    fields: dict[int, object] = {}
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        delta, kind = head >> 4, head & 0x0F
        if delta:
            fid = last + delta
        else:
            v, pos = _varint(buf, pos)
            fid = _zigzag(v)
        last = fid
        fields[fid], pos = _thrift_value(buf, pos, kind)


_PLAIN, _DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 0, 2, 3


def _plain_values(chunk: bytes, max_rep: int, max_def: int, what: str) -> list[tuple[int, int]]:
    """``(offset, length)`` within ``chunk`` (an uncompressed column chunk) of every
    PLAIN BYTE_ARRAY value, walking its page headers (Parquet's Thrift ``PageHeader``)."""
    values: list[tuple[int, int]] = []
    pos = 0
    while pos < len(chunk):
        header, body = _thrift_struct(chunk, pos)
        page_type, size = header.get(1), header.get(3)
        if not isinstance(size, int):
            raise NotIndexable(f"{what}: a page header without its size")
        end = body + size
        if page_type == _DICTIONARY_PAGE:
            raise NotIndexable(f"{what}: dictionary-encoded")
        if page_type == _DATA_PAGE:
            dph = header.get(5) or {}
            if dph.get(2) != _PLAIN:
                raise NotIndexable(f"{what}: encoding {dph.get(2)}, not PLAIN")
            p = body
            for present in (max_rep > 0, max_def > 0):  # v1: levels, each with a u32 length
                if present:
                    (n,) = struct.unpack_from("<I", chunk, p)
                    p += 4 + n
        elif page_type == _DATA_PAGE_V2:
            dph = header.get(8) or {}
            if dph.get(4) != _PLAIN:
                raise NotIndexable(f"{what}: encoding {dph.get(4)}, not PLAIN")
            p = body + int(dph.get(5, 0)) + int(dph.get(6, 0))
        else:
            pos = end  # an index page: nothing of ours
            continue
        while p < end:
            (n,) = struct.unpack_from("<I", chunk, p)
            values.append((p + 4, n))
            p += 4 + n
        if p != end:
            raise NotIndexable(f"{what}: values overrun their page")
        pos = end
    return values


def parquet_entries(
    path: str, expected: Sequence[dict[str, list[int]]] | None = None
) -> list[RowEntry]:
    """The :class:`RowEntry` of every row of a local Parquet shard (one row per row group).

    ``expected``: per row, column -> the lengths of its frames as written; the walk must
    find exactly those (the writer passes what it wrote). :class:`NotIndexable` when a frame
    column is compressed, dictionary-encoded or not PLAIN, or a row group holds several rows.
    """
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    schema = md.schema
    where = {}
    for i in range(md.num_columns):
        col = schema.column(i)
        name = col.path.split(".")[0]
        if name in FRAME_COLUMNS:
            where[name] = (i, col.max_repetition_level, col.max_definition_level)
    entries = []
    with open(path, "rb") as f:
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            if rg.num_rows != 1:
                raise NotIndexable(f"{path}: row group {g} holds {rg.num_rows} rows, not 1")
            entry = RowEntry(g, 0, 0, 0, 0)
            for name in FRAME_COLUMNS:
                if name not in where:
                    continue
                i, max_rep, max_def = where[name]
                cc = rg.column(i)
                what = f"{path}: column {name} of row group {g}"
                if cc.compression != "UNCOMPRESSED":
                    raise NotIndexable(f"{what}: compressed ({cc.compression})")
                if cc.has_dictionary_page:
                    raise NotIndexable(f"{what}: dictionary-encoded")
                start = cc.data_page_offset
                f.seek(start)
                chunk = f.read(cc.total_compressed_size)
                found = _plain_values(chunk, max_rep, max_def, what)
                entry.frames[name] = ([start + o for o, _ in found], [n for _, n in found])
            if expected is not None:
                want = expected[g]
                got = {c: v[1] for c, v in entry.frames.items()}
                if got != {c: list(v) for c, v in want.items()}:
                    raise NotIndexable(f"{path}: row group {g}'s values are not the frames written")
            frames = entry.frames.get("rgb") or entry.frames.get("pose")
            entry.num_frames = len(frames[0]) if frames else 0
            entries.append(entry)
    return entries


# --------------------------------------------------------------------------- files


def file_crc32c(path: str, chunk: int = 8 << 20) -> tuple[int, int]:
    """``(size, CRC32C)`` of a local file's bytes."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while data := f.read(chunk):
            crc = google_crc32c.extend(crc, data)
            size += len(data)
    return size, crc


def build_index(path: str, modalities: Iterable[str] | None = None) -> bytes:
    """The index file bytes of an existing local shard ``path`` (a shard written before the
    index existed, or whose index was lost). :class:`NotIndexable` for a Parquet shard whose
    frames are not stored verbatim (older tristream shards: rewrite them)."""
    from tristream.shards.files import shard_format
    from tristream.shards.schema import modalities_of
    from tristream.shards.tfrecord import read_record_at, record_offsets

    fmt = shard_format(path)
    builder = IndexBuilder(fmt)
    names: set[str] = set()
    if fmt == "tfrecord":
        with open(path, "rb") as f:
            for offset in record_offsets(path):
                data = read_record_at(f, offset)
                entry = tfrecord_entry(data, offset)
                builder.add(entry)
                if not names:
                    from tristream.shards.tfrecord import example_to_row

                    names = {k for k, v in example_to_row(data).items() if v is not None}
    else:
        import pyarrow.parquet as pq

        for entry in parquet_entries(path):
            builder.add(entry)
        names = set(pq.ParquetFile(path).schema_arrow.names)
    size, crc = file_crc32c(path)
    mods = modalities_of(names) if modalities is None else tuple(modalities)
    return builder.to_bytes(os.path.basename(path), size, crc, mods)


def write_index(path: str, store: StoreLike = None) -> str:
    """Build and write the index of the existing shard ``path`` (local) atomically as
    :func:`index_path`; returns that path."""
    from tristream.shards.atomic import atomic_path

    data = build_index(path)
    out = index_path(path)
    with atomic_path(out, store) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return out


def finish_with_index(writer: AtomicRowWriter, data: bytes | None) -> None:
    """Move a shard writer's finished temporary file to its path, its index first.

    ``data``: the index (:meth:`IndexBuilder.to_bytes`), written atomically to
    :func:`index_path` before the shard appears; None removes an index left there by an
    earlier shard of that name instead (a shard without an index is read whole, one with
    a stale index would be refused). If that step fails, the shard is dropped too.
    """
    from tristream.shards.atomic import atomic_path

    path = index_path(writer.path)
    try:
        if data is None:
            storage.remove(path, writer.store)
        else:
            with atomic_path(path, lambda: writer.store) as tmp, open(tmp, "wb") as f:
                f.write(data)
    except BaseException as exc:
        writer._atomic.__exit__(type(exc), exc, exc.__traceback__)
        raise
    writer.publish()


def main(argv: list[str] | None = None) -> int:
    """``python -m tristream.shards.reindex SHARD_OR_FOLDER...``: (re)build the index of
    local shards written without one. Prints one line per shard; exit status 1 when a
    shard cannot be indexed (an older Parquet layout)."""
    import argparse

    from tristream.shards.files import shard_files

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="shard files or folders (local)")
    args = ap.parse_args(argv)
    status = 0
    for p in args.paths:
        shards = [p]
        if os.path.isdir(p):
            shards = sorted(set(shard_files(p, "parquet") + shard_files(p, "tfrecord")))
        for shard in shards:
            try:
                print(f"{write_index(shard)}")
            except NotIndexable as exc:
                print(f"{shard}: not indexable: {exc}")
                status = 1
    return status
