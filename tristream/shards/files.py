"""Shard files behind one interface: the format is picked once, from the file's suffix.

``.parquet`` files hold one row group per row (:mod:`tristream.shards.parquet`),
``.tfrecord`` files one ``tf.train.SequenceExample`` record per row
(:mod:`tristream.shards.tfrecord`). Everything else in the project that writes,
lists, streams or randomly reads shard files goes through this module, so no
other module tests a suffix.

Rows here are *raw* rows (column -> Python value); decode them with
:class:`tristream.shards.row.RowView`. Paths are local paths or ``s3://`` /
``gs://`` URIs (:mod:`tristream.shards.storage`).
"""

from __future__ import annotations

import glob
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tristream.shards import storage
from tristream.shards.atomic import AtomicRowWriter
from tristream.shards.parquet import ParquetShardWriter
from tristream.shards.schema import COLUMNS_BY_NAME, modalities_of
from tristream.shards.storage import StoreLike
from tristream.shards.tfrecord import (
    TFRecordShardWriter,
    example_to_row,
    iter_records,
    read_record_at,
    record_offsets,
)

#: Shard formats and their file suffixes.
SHARD_SUFFIXES: dict[str, str] = {"parquet": ".parquet", "tfrecord": ".tfrecord"}
#: Shard formats, in the order a folder holding several is read (Parquet first).
SHARD_FORMATS: tuple[str, ...] = tuple(SHARD_SUFFIXES)

_WRITERS: dict[str, type[AtomicRowWriter]] = {
    "parquet": ParquetShardWriter,
    "tfrecord": TFRecordShardWriter,
}


def shard_suffix(fmt: str) -> str:
    """The file suffix (with its dot) of shard format ``fmt``; ValueError for an unknown one."""
    try:
        return SHARD_SUFFIXES[fmt]
    except KeyError:
        raise ValueError(f"unknown shard format {fmt!r}; choose one of {SHARD_FORMATS}") from None


def shard_name(split: str, shard: int, num_shards: int, fmt: str) -> str:
    """``<split>-<shard:05d>-of-<num_shards:05d>.<suffix>``: a shard file's name."""
    return f"{split}-{shard:05d}-of-{num_shards:05d}{shard_suffix(fmt)}"


def split_of(path: str) -> str:
    """The split a shard file belongs to, from its name (:func:`shard_name`)."""
    name = os.path.basename(path.rstrip("/"))
    head, sep, _ = name.rpartition("-of-")
    split, dash, _ = head.rpartition("-")
    if not sep or not dash or not split:
        raise ValueError(f"{path}: not a shard file name (<split>-NNNNN-of-NNNNN.<suffix>)")
    return split


def shard_format(path: str | os.PathLike) -> str:
    """``parquet`` or ``tfrecord``, from the suffix of ``path``; ValueError for any other."""
    name = os.fspath(path)
    for fmt, suffix in SHARD_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"not a shard file (expected .parquet or .tfrecord): {name}")


def shard_files(
    path: str | os.PathLike, fmt: str | None = None, store: StoreLike = None
) -> list[str]:
    """The shard files under ``path``, sorted.

    ``path`` is a shard file, an output directory (its ``shards/`` folder is
    searched) or a folder of shards. ``fmt`` (``parquet`` or ``tfrecord``)
    restricts the suffix; when None and a directory holds both formats (a
    ``--format both`` run), the Parquet files are returned, so each row is
    read once. Temporary files (``.name.tmp``) never match. An object-store
    URI is listed the same way (a prefix holding objects is its folder), on ``store``
    (:func:`tristream.shards.storage.get_store`: None is the environment's).
    """
    path = os.fspath(path)
    if storage.is_uri(path):
        return _stored_shard_files(path, fmt, storage.get_store(store))
    if os.path.isfile(path):
        shard_format(path)  # raises for a file that is not a shard
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no shard file or directory at {path}")
    folder = os.path.join(path, "shards") if os.path.isdir(os.path.join(path, "shards")) else path
    formats = (fmt,) if fmt else SHARD_FORMATS
    for f in formats:
        pattern = os.path.join(glob.escape(folder), f"*{shard_suffix(f)}")
        files = sorted(glob.glob(pattern))
        if files:
            return files
    return []


def _stored_shard_files(uri: str, fmt: str | None, store: storage.Store) -> list[str]:
    """:func:`shard_files` for an object-store URI."""
    store.check_bucket(uri)
    if store.isfile(uri):
        shard_format(uri)
        return [uri]
    if not store.isdir(uri):
        raise FileNotFoundError(f"no shard file or directory at {uri}")
    nested = storage.join(uri, "shards")
    folder = nested if store.isdir(nested) else uri
    names = [n for n in store.list_dir(folder) if not n.startswith(".")]
    for f in (fmt,) if fmt else SHARD_FORMATS:
        files = [storage.join(folder, n) for n in names if n.endswith(shard_suffix(f))]
        if files:
            return files
    return []


def open_parquet(
    path: str, store: StoreLike = None, pre_buffer: bool | None = None
) -> pq.ParquetFile:
    """A :class:`pyarrow.parquet.ParquetFile` on a local path or an object-store URI
    (on ``store``: None is the environment's). ``pre_buffer``: pyarrow's option (coalesced
    background reads: fewer requests on an object store, but 3-5x the CPU of plain reads
    for a few small columns of a local file); None keeps pyarrow's default."""
    fs, inner = storage.resolve(path, store)
    options = {} if pre_buffer is None else {"pre_buffer": pre_buffer}
    try:
        return pq.ParquetFile(inner, filesystem=fs, **options)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:  # truncated or damaged: name the file
        raise ShardReadError(f"{path}: unreadable parquet shard ({exc})") from exc


# --------------------------------------------------------------------------- writing


def open_shard_writer(
    path: str, schema: pa.Schema, store: StoreLike = None, index: bool = True
) -> AtomicRowWriter:
    """A writer of raw rows for the shard file ``path``, by its suffix.

    A :class:`~tristream.shards.parquet.ParquetShardWriter` or a
    :class:`~tristream.shards.tfrecord.TFRecordShardWriter` (both
    :class:`~tristream.shards.atomic.AtomicRowWriter`): ``write(row)``, and the
    file appears at ``path`` only when the ``with`` block (or ``close()``)
    ends without an exception. ``schema`` is the run's Arrow schema
    (:func:`~tristream.shards.schema.arrow_schema`). A URI ``path`` is uploaded to
    ``store`` (None: the environment's). With ``index`` the frame index
    ``<path>.idx`` (:func:`tristream.shards.frame_index.index_path`) is written just
    before the shard appears; without, an index of that name is removed.
    """
    writer = _WRITERS[shard_format(path)](path, schema, index=index)
    writer.store = store
    return writer


def write_rows(
    path: str,
    rows: Iterable[dict[str, Any]],
    schema: pa.Schema,
    store: StoreLike = None,
    index: bool = True,
) -> int:
    """Write raw ``rows`` to the shard file ``path`` (format by suffix) atomically; the count.
    A URI ``path`` is written to ``store`` (None: the environment's); ``index``: as
    :func:`open_shard_writer`."""
    with open_shard_writer(path, schema, store, index) as writer:
        for row in rows:
            writer.write(row)
    return writer.rows


# --------------------------------------------------------------------------- streaming


def _select(row: dict[str, Any], columns: Sequence[str] | None) -> dict[str, Any]:
    if columns is None:
        return row
    return {c: row[c] for c in columns if c in row}


def _parquet_columns(pf: pq.ParquetFile, columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    names = set(pf.schema_arrow.names)
    return [c for c in columns if c in names]


def _check_columns(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    unknown = [c for c in columns if c not in COLUMNS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown shard columns {unknown}")
    return list(columns)


class ShardReadError(ValueError):
    """A shard file that exists but cannot be read (truncated, damaged); names the file."""


def iter_raw_rows(
    file: str | os.PathLike, columns: Sequence[str] | None = None, store: StoreLike = None
) -> Iterator[dict[str, Any]]:
    """Yield the raw rows of one shard file (column -> Python value), one at a time.

    ``columns`` selects a subset (Parquet reads only those; TFRecord parses
    whole records and drops the rest). Columns the file lacks (a modality the
    run did not write) are absent keys in both formats; a null label is None. A URI is
    read from ``store`` (None: the environment's).
    """
    path = os.fspath(file)
    columns = _check_columns(columns)
    fmt = shard_format(path)
    try:
        if fmt == "parquet":
            pf = open_parquet(path, store)
            read = _parquet_columns(pf, columns)
            for group in range(pf.num_row_groups):
                yield from pf.read_row_group(group, columns=read).to_pylist()
        else:
            for data in iter_records(path, store=store):
                yield _select(example_to_row(data), columns)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:  # truncated, damaged: name it
        if path in str(exc):
            raise
        raise ShardReadError(f"{path}: unreadable {fmt} shard ({exc})") from exc


# --------------------------------------------------------------------------- random access


@dataclass(frozen=True)
class ShardFileInfo:
    """One shard file: its path, format and the modalities its rows hold."""

    path: str
    format: str  # "parquet" | "tfrecord"
    modalities: tuple[str, ...]


@dataclass
class ShardIndex:
    """Where each row of one shard file is, for random access with :class:`ShardRowReader`.

    Row ``k`` is at ``(groups[k], positions[k])``: Parquet (row group, row
    within it), TFRecord (0, byte offset of its record); both int64 ``[N]``.
    ``values`` holds the scalar columns asked of :func:`index_shard`, one list
    of N Python values per column.
    """

    info: ShardFileInfo
    groups: np.ndarray
    positions: np.ndarray
    values: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.groups)


def index_shard(
    path: str | os.PathLike, columns: Sequence[str] = (), store: StoreLike = None
) -> ShardIndex:
    """Index the rows of one shard file, reading ``columns`` (scalar columns) of every row.

    Parquet reads the footer and those columns only; TFRecord reads every
    record header (and, when ``columns`` is not empty, parses every record).
    A URI is read from ``store`` (None: the environment's).
    """
    path = os.fspath(path)
    columns = _check_columns(list(columns)) or []
    empty = np.zeros(0, np.int64)
    if shard_format(path) == "parquet":
        pf = open_parquet(path, store)
        md = pf.metadata
        groups = [np.full(md.row_group(g).num_rows, g, np.int64) for g in range(md.num_row_groups)]
        positions = [np.arange(len(g), dtype=np.int64) for g in groups]
        values: dict[str, list] = {c: [] for c in columns}
        if columns and md.num_rows:
            table = pf.read(columns=_parquet_columns(pf, columns))
            values.update({name: table.column(name).to_pylist() for name in table.column_names})
        info = ShardFileInfo(path, "parquet", modalities_of(pf.schema_arrow.names))
        return ShardIndex(
            info,
            np.concatenate(groups) if groups else empty,
            np.concatenate(positions) if positions else empty,
            values,
        )
    offsets = record_offsets(path, store)
    modalities: tuple[str, ...] = ()
    values = {c: [] for c in columns}
    if offsets:
        with storage.open_input(path, store=store) as f:
            first = example_to_row(read_record_at(f, offsets[0]))
            modalities = modalities_of(list(first))
            if columns:
                for o in offsets:
                    row = first if o == offsets[0] else example_to_row(read_record_at(f, o))
                    for c in columns:
                        values[c].append(row.get(c))
    pos = np.asarray(offsets, np.int64)
    info = ShardFileInfo(path, "tfrecord", modalities)
    return ShardIndex(info, np.zeros(len(pos), np.int64), pos, values)


#: Files a :class:`ShardRowReader` (and the frame-index reader) keeps open at most.
MAX_OPEN_FILES = 4


class HandleCache:
    """At most ``max_open`` open files, the least recently used closed first.

    ``get(key, opener)`` returns the handle of ``key``, opening it with ``opener()``
    when it is not open. Memory and file descriptors stay bounded whatever the number
    of shard files a reader visits.
    """

    def __init__(self, max_open: int = MAX_OPEN_FILES):
        if max_open < 1:
            raise ValueError("max_open must be >= 1")
        self.max_open = max_open
        self._handles: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, opener: Callable[[], Any]) -> Any:
        handle = self._handles.get(key)
        if handle is not None:
            self._handles.move_to_end(key)
            return handle
        handle = opener()
        self._handles[key] = handle
        while len(self._handles) > self.max_open:
            _, old = self._handles.popitem(last=False)
            _close(old)
        return handle

    def __len__(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        """Close every open handle."""
        while self._handles:
            _, handle = self._handles.popitem(last=False)
            _close(handle)


def _close(handle: Any) -> None:
    close = getattr(handle, "close", None)
    if close is not None:
        close()


#: With the system pool, how many calls of :func:`release_arrow_memory` share one trim.
SYSTEM_TRIM_EVERY = 64
_release_calls = 0


def release_arrow_memory() -> None:
    """Give memory that Arrow's allocator holds for reuse back to the system (after a row's
    buffers are dropped), so a reader's resident size does not grow with the rows it read.

    With the system pool, Arrow's ``release_unused`` is glibc's ``malloc_trim(0)``: it
    returns the whole process's free heap, so the next clip's buffers fault in anew (5 ms
    a float32 clip when done for every row); it is done every
    :data:`SYSTEM_TRIM_EVERY` calls instead."""
    global _release_calls
    pool = pa.default_memory_pool()
    if pool.backend_name != "system":
        pool.release_unused()
        return
    _release_calls += 1
    if _release_calls % SYSTEM_TRIM_EVERY == 0:
        pool.release_unused()


def use_system_memory_pool() -> bool:
    """Make the system allocator pyarrow's default memory pool in this process, unless
    ``ARROW_DEFAULT_MEMORY_POOL`` chooses one; returns whether the pool is the system's now.

    For processes that only read shards (``ShardDataset`` calls it in its DataLoader
    workers). What grows in a worker that reads Parquet clips is glibc's heap (row heads
    through pyarrow between the clips' large buffers fragment it); with the system pool,
    :func:`release_arrow_memory` trims it from time to time (``malloc_trim``), which
    mimalloc's ``release_unused`` does not: a worker then stayed at 195-257 MiB instead of
    340-410 MiB (``benchmarks/reader.py --memory``, RESULTS.md). A process-wide setting,
    hence only there; buffers made before the switch are freed to the pool that made them.
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return pa.default_memory_pool().backend_name == "system"
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())
    return True


class ShardRowReader:
    """Random access to raw rows of several shard files (one reader per DataLoader worker).

    ``files``: the files' :class:`ShardFileInfo`; ``columns``: per file, the
    columns to read (None: all). Keeps at most ``max_open`` files open (the least
    recently used is closed first) and the last row in memory, so consecutive reads of
    one row read it once; a Parquet row's Arrow buffers are released once it is turned
    into Python values. Not thread-safe; :meth:`close` (or a ``with`` block) closes the files.
    """

    def __init__(
        self,
        files: Sequence[ShardFileInfo],
        columns: Sequence[Sequence[str] | None] | None = None,
        store: StoreLike = None,
        max_open: int = MAX_OPEN_FILES,
    ):
        self.files = list(files)
        self.store = store  # where URIs are read (None: the environment's)
        self.columns = [None] * len(self.files) if columns is None else list(columns)
        if len(self.columns) != len(self.files):
            raise ValueError(f"{len(self.columns)} column lists for {len(self.files)} files")
        self._handles = HandleCache(max_open)
        self._row_key: tuple[int, int, int] | None = None
        self._row: dict[str, Any] | None = None

    @property
    def open_files(self) -> int:
        """Files open now (at most ``max_open``)."""
        return len(self._handles)

    def read(self, file: int, group: int, pos: int) -> dict[str, Any]:
        """The raw row at ``(group, pos)`` (see :class:`ShardIndex`) of file number ``file``."""
        key = (file, group, pos)
        if key == self._row_key and self._row is not None:
            return self._row
        info = self.files[file]
        columns = self.columns[file]
        self._row = None  # drop the last row before reading the next
        if info.format == "parquet":
            pf = self._handles.get(file, lambda: open_parquet(info.path, self.store))
            read = _parquet_columns(pf, columns)
            # on the calling thread, so that releasing Arrow's unused memory reaches it
            table = pf.read_row_group(group, columns=read, use_threads=False)
            row = table.slice(pos, 1).to_pylist()[0]
            del table
            release_arrow_memory()
        else:
            f = self._handles.get(file, lambda: storage.open_input(info.path, store=self.store))
            data = read_record_at(f, pos)
            if data is None:
                raise ValueError(f"{info.path}: no record at byte {pos}")
            row = _select(example_to_row(data), columns)
        self._row_key, self._row = key, row
        return row

    def close(self) -> None:
        """Close the open files and drop the cached row."""
        self._handles.close()
        self._row = None
        self._row_key = None

    def __enter__(self) -> ShardRowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
