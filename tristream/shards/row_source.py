"""The reader's I/O: find the shard files, index their rows, read one row at a time.

Everything :class:`tristream.shards.ShardDataset` does with files goes through
:class:`RowSource` (built once, pickled to the DataLoader workers) and the
:class:`RowSourceReader` each worker opens: listing and indexing the files, choosing
the columns of the asked modalities, opening and closing them, and reading a row
as a :class:`tristream.shards.row.RowView`.

A shard with a frame index beside it (``<shard>.idx``, :mod:`tristream.shards.frame_index`)
is read frame by frame: a row's view holds its columns that are not per-frame (for
TFRecord one positional read of the record's context, for Parquet those columns of
its row group), and its frame columns fetch only the frames a clip decodes
(:class:`LazyFrames`: one positional read, or ranged GET on ``s3://`` / ``gs://``,
per run of nearby frames). A shard without an index (written before it existed) is
read whole, row by row, as before. Either way a worker keeps at most
``max_open_files`` files open, and Arrow's buffers are released after each row, so
its memory does not grow with the number of shard files.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from tristream.shards import storage
from tristream.shards.files import (
    MAX_OPEN_FILES,
    HandleCache,
    ShardFileInfo,
    ShardRowReader,
    index_shard,
    open_parquet,
    release_arrow_memory,
    shard_files,
    shard_format,
)
from tristream.shards.frame_index import (
    FRAME_COLUMNS,
    FrameIndex,
    IndexMismatch,
    index_path,
    read_index,
)
from tristream.shards.row import RowView
from tristream.shards.schema import COLUMNS, MODALITIES
from tristream.shards.storage import StoreLike
from tristream.shards.tfrecord import context_to_row, masked_crc

__all__ = ["FRAME_INDEX_MODES", "LazyFrames", "RowSource", "RowSourceReader"]

LOG = logging.getLogger(__name__)

#: How a :class:`RowSource` uses frame indexes: ``auto`` (use a matching one, read a shard
#: without one, or with one that does not match it, whole: the latter with a warning),
#: ``require`` (a missing or mismatched index raises ValueError), ``off`` (read rows whole).
FRAME_INDEX_MODES: tuple[str, ...] = ("auto", "require", "off")
#: Default gap (bytes) under which two frame ranges are read as one: local files, object stores.
COALESCE_LOCAL, COALESCE_REMOTE = 4 << 10, 1 << 20

#: Columns each modality needs from a shard row.
_MODALITY_COLUMNS: dict[str, tuple[str, ...]] = {
    m: tuple(c.name for c in COLUMNS if c.modality == m) for m in MODALITIES
}
_SCALAR_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.modality is None)

PathArg = str | os.PathLike | Sequence[str | os.PathLike]


class RowSource:
    """The rows of a set of shard files, indexed for random access.

    Args:
        path: a shard file, a folder of shards, a run's output directory (its
            ``shards/`` folder), an object-store URI of any of these, or a list of
            them (:func:`tristream.shards.files.shard_files`).
        modalities: the modalities to read; a file holding none of them (and some
            rows) raises ``ValueError``. ``keypoints3d`` reads ``keypoints`` too (the
            3D joints' scores and person count).
        num_frames: also know every row's ``num_frames`` (for clip counts): from the
            frame index when a file has one, else one scalar column (Parquet reads only
            that column, TFRecord parses every record).
        fmt: ``parquet`` or ``tfrecord`` in a directory holding both.
        frame_index: see :data:`FRAME_INDEX_MODES` (default ``auto``).
        store: where URIs are read (:func:`tristream.shards.storage.get_store`; None: the
            environment's).
        max_open_files: files a reader keeps open at most (least recently used closed first).
        coalesce_bytes: frame ranges of one row closer than this are fetched with one read;
            None: 4 KiB for local files (only neighbouring frames), 1 MiB on object stores
            (fewer ranged GETs, at most about twice the bytes for a clip with a frame stride of 2).

    Rows are numbered 0..N-1 in file order, then row order within a file.
    """

    def __init__(
        self,
        path: PathArg,
        modalities: Sequence[str],
        num_frames: bool = False,
        fmt: str | None = None,
        frame_index: str = "auto",
        store: StoreLike = None,
        max_open_files: int = MAX_OPEN_FILES,
        coalesce_bytes: int | None = None,
    ):
        if frame_index not in FRAME_INDEX_MODES:
            raise ValueError(f"frame_index must be one of {FRAME_INDEX_MODES}, got {frame_index!r}")
        if max_open_files < 1:
            raise ValueError("max_open_files must be >= 1")
        self.modalities = tuple(modalities)
        self.frame_index = frame_index
        self.store = store
        self.max_open_files = int(max_open_files)
        self.coalesce_bytes = coalesce_bytes
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        files = [f for p in paths for f in shard_files(p, fmt, store)]
        if not files:
            raise ValueError(f"no .parquet or .tfrecord shard files under {path}")
        #: One :class:`ShardFileInfo` per file (path, format, modalities it holds).
        self.files: list[ShardFileInfo] = []
        #: Per file, its :class:`~tristream.shards.frame_index.FrameIndex`, or None (read whole).
        self.indexes: list[FrameIndex | None] = []
        self._columns: list[list[str]] = []
        row_file, row_group, row_pos, row_frames = [], [], [], []
        for i, file in enumerate(files):
            findex = self._load_index(file) if frame_index != "off" else None
            if findex is not None:
                info = ShardFileInfo(file, findex.format, findex.modalities)
                count = len(findex)
                if findex.format == "parquet":
                    groups = findex.rows["locator"].astype(np.int64)
                    positions = np.zeros(count, np.int64)
                else:
                    groups = np.zeros(count, np.int64)
                    positions = findex.rows["locator"].astype(np.int64)
                frames = findex.num_frames
            else:
                index = index_shard(file, ("num_frames",) if num_frames else (), store)
                info, count = index.info, len(index)
                groups, positions = index.groups, index.positions
                frames = np.asarray(index.values.get("num_frames", []), np.int64)
            present = [m for m in self.modalities if m in info.modalities]
            if count and not present:
                raise ValueError(
                    f"none of the requested modalities {self.modalities} is in {file} "
                    f"(it holds {info.modalities})"
                )
            self.files.append(info)
            self.indexes.append(findex)
            read = list(present)
            if "keypoints3d" in read and "keypoints" not in read:
                read.append("keypoints")  # the 3D joints' scores and person count
            self._columns.append(
                list(_SCALAR_COLUMNS) + [c for m in read for c in _MODALITY_COLUMNS[m]]
            )
            row_file.append(np.full(count, i, np.int64))
            row_group.append(groups)
            row_pos.append(positions)
            if num_frames:
                row_frames.append(frames)
        self._row_file = np.concatenate(row_file)
        self._row_group = np.concatenate(row_group)
        self._row_pos = np.concatenate(row_pos)
        #: Row number within its file, for each row.
        self._row_local = np.concatenate([np.arange(len(r), dtype=np.int64) for r in row_file])
        #: int64 ``[N]``: frames of each row, when indexed with ``num_frames=True``; else None.
        self.num_frames: np.ndarray | None = (
            np.concatenate(row_frames).astype(np.int64) if num_frames else None
        )
        #: The asked modalities that at least one file holds, in the asked order.
        self.available: tuple[str, ...] = tuple(
            m for m in self.modalities if any(m in f.modalities for f in self.files)
        )

    def _load_index(self, file: str) -> FrameIndex | None:
        """``file``'s frame index when it has one that matches it; None (read the file
        whole) when it has none, or, under ``auto``, one that does not match (warned)."""
        path = index_path(file)
        try:
            findex = read_index(path, self.store)
            findex.check(file, storage.getsize(file, self.store))
            if findex.format != shard_format(file):
                raise IndexMismatch(f"{path} indexes a {findex.format} file, not {file}")
        except FileNotFoundError:
            if self.frame_index == "require":
                raise ValueError(
                    f"{file} has no frame index ({path}); write one with "
                    "`python -m tristream.shards.reindex`, or use frame_index='auto'"
                ) from None
            LOG.debug("%s has no frame index: its rows are read whole", file)
            return None
        except IndexMismatch as exc:
            if self.frame_index == "require":
                raise
            warnings.warn(f"{exc}; reading its rows whole", stacklevel=3)
            return None
        return findex

    @property
    def num_rows(self) -> int:
        """N, the rows in all files."""
        return len(self._row_file)

    @property
    def indexed(self) -> list[bool]:
        """Per file, whether it is read frame by frame (it has a matching frame index)."""
        return [i is not None for i in self.indexes]

    def open(self) -> RowSourceReader:
        """A reader of these rows (one per DataLoader worker; close it, or use ``with``)."""
        return RowSourceReader(self)


class LazyFrames(Sequence[bytes]):
    """The encoded frames of one column of one row, fetched when asked for.

    A sequence of ``len(offsets)`` byte strings; :meth:`prefetch` reads the frames of
    a list of indices with as few reads as their layout allows (``fetch`` gets
    ``[(offset, length)]`` and returns one bytes-like per range), item access reads one
    frame if it is not fetched yet. Fetched frames are kept for the row's lifetime.
    """

    __slots__ = ("_fetch", "_frames", "_lengths", "_offsets")

    def __init__(
        self,
        fetch: Callable[[list[tuple[int, int]]], list[memoryview]],
        offsets: np.ndarray,
        lengths: np.ndarray,
    ):
        self._fetch = fetch
        self._offsets = offsets
        self._lengths = lengths
        self._frames: dict[int, memoryview] = {}

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i: int) -> memoryview:  # type: ignore[override]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range [0, {len(self)})")
        if i not in self._frames:
            self.prefetch([i])
        return self._frames[i]

    def prefetch(self, indices: Iterable[int]) -> None:
        """Fetch the frames ``indices`` (any order, repeats allowed) that are not fetched yet."""
        need = sorted({int(i) for i in indices} - self._frames.keys())
        if not need:
            return
        ranges = [(int(self._offsets[i]), int(self._lengths[i])) for i in need]
        for i, data in zip(need, self._fetch(ranges), strict=True):
            self._frames[i] = data

    @property
    def fetched(self) -> int:
        """Frames fetched so far."""
        return len(self._frames)


class _RangeFile:
    """Positional reads of one file: ``os.pread`` locally, ``read_at`` (a ranged GET) on
    an object store. ``size``: the file's size in bytes."""

    def __init__(self, path: str, store: StoreLike):
        self.path = path
        self._fd: int | None = None
        self._file: Any = None
        if storage.is_uri(path):
            self._file = storage.open_input(path, store=store)
            self.size = int(self._file.size())
        else:
            self._fd = os.open(path, os.O_RDONLY)
            self.size = os.fstat(self._fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; :class:`IndexMismatch` past the end of the file."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IndexMismatch(
                f"{self.path}: bytes {offset}..{offset + length} lie past its end ({self.size})"
            )
        if self._fd is not None:
            data = os.pread(self._fd, length, offset)
            while len(data) < length:  # short reads are legal
                more = os.pread(self._fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
        else:
            data = self._file.read_at(length, offset)
        if len(data) != length:
            raise IndexMismatch(f"{self.path}: short read of {length} bytes at {offset}")
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._file is not None:
            self._file.close()
            self._file = None


class _ParquetHandle:
    """An open Parquet file and where each column is (leaf index by top-level name)."""

    def __init__(self, pf: Any):
        self.file = pf
        schema = pf.metadata.schema
        self.where = {schema.column(i).path.split(".")[0]: i for i in range(len(schema))}

    def close(self) -> None:
        self.file.close()


def coalesce(ranges: Sequence[tuple[int, int]], gap: int) -> list[tuple[int, int, list[int]]]:
    """Merge byte ranges ``[(offset, length)]`` whose gap is at most ``gap`` bytes:
    ``[(offset, length, members)]`` in offset order, ``members`` the input positions each
    merged read covers."""
    order = sorted(range(len(ranges)), key=lambda k: ranges[k][0])
    out: list[tuple[int, int, list[int]]] = []
    for k in order:
        offset, length = ranges[k]
        if out and offset - (out[-1][0] + out[-1][1]) <= gap:
            start, size, members = out[-1]
            out[-1] = (start, max(size, offset + length - start), members + [k])
        else:
            out.append((offset, length, [k]))
    return out


class RowSourceReader:
    """Reads rows of a :class:`RowSource` by number. Keeps at most ``max_open_files`` files
    open, until :meth:`close`.

    Not thread-safe; consecutive reads of one row read it once. :attr:`bytes_read`
    counts the bytes of frame-index reads (index entries, record contexts, frames).
    """

    def __init__(self, source: RowSource):
        self._source = source
        whole = [i is None for i in source.indexes]
        self._reader = ShardRowReader(
            source.files,
            [c if w else [] for c, w in zip(source._columns, whole, strict=True)],
            source.store,
            source.max_open_files,
        )
        self._files = HandleCache(source.max_open_files)
        self._parquet = HandleCache(source.max_open_files)
        self._last: tuple[int, dict[str, Any]] | None = None
        #: Bytes read through frame indexes so far (entries, heads and frames).
        self.bytes_read = 0

    @property
    def open_files(self) -> int:
        """Files open now, over every kind of handle."""
        return self._reader.open_files + len(self._files) + len(self._parquet)

    def read(self, row: int) -> RowView:
        """Row number ``row`` (0..N-1) as a lazy :class:`RowView` of the asked modalities' columns.

        Raises ValueError when the row's schema is newer than this reader, and
        :class:`~tristream.shards.frame_index.IndexMismatch` (a ValueError) when the
        row is not where its frame index says.
        """
        s = self._source
        file = int(s._row_file[row])
        if s.indexes[file] is None:
            raw = self._reader.read(file, int(s._row_group[row]), int(s._row_pos[row]))
        elif self._last is not None and self._last[0] == row:
            raw = self._last[1]
        else:
            self._last = None
            raw = self._indexed_row(file, int(s._row_local[row]))
            self._last = (row, raw)
        view = RowView(raw)
        view.meta  # noqa: B018 - a schema newer than this reader raises here
        return view

    # ------------------------------------------------------------------ frame index

    def _file(self, key: tuple[str, int], path: str, size: int | None) -> _RangeFile:
        def opener() -> _RangeFile:
            try:
                f = _RangeFile(path, self._source.store)
            except FileNotFoundError:
                raise IndexMismatch(
                    f"{path} is gone: the shards changed after the dataset was made"
                ) from None
            if size is not None and f.size != size:
                f.close()
                raise IndexMismatch(
                    f"{path} has {f.size} bytes, its frame index says {size}: the shard "
                    "changed after the dataset was made"
                )
            return f

        return self._files.get(key, opener)

    def _read(self, key: tuple[str, int], path: str, offset: int, length: int, size=None):
        data = self._file(key, path, size).read(offset, length)
        self.bytes_read += length
        return data

    def _fetcher(self, file: int) -> Callable[[list[tuple[int, int]]], list[memoryview]]:
        s = self._source
        info, findex = s.files[file], s.indexes[file]
        gap = s.coalesce_bytes
        if gap is None:
            gap = COALESCE_REMOTE if storage.is_uri(info.path) else COALESCE_LOCAL

        def fetch(ranges: list[tuple[int, int]]) -> list[memoryview]:
            out: list[memoryview | None] = [None] * len(ranges)
            for start, size, members in coalesce(ranges, gap):
                buf = memoryview(self._read(("shard", file), info.path, start, size,
                                            findex.shard_bytes))  # fmt: skip
                for k in members:
                    offset, length = ranges[k]
                    out[k] = buf[offset - start : offset - start + length]
            return out  # type: ignore[return-value]

        return fetch

    def _indexed_row(self, file: int, local: int) -> dict[str, Any]:
        """The raw row ``local`` of ``file`` through its frame index: the columns that are
        not per-frame read now, the frame columns as :class:`LazyFrames`."""
        s = self._source
        info, findex = s.files[file], s.indexes[file]
        assert findex is not None
        rec = findex.rows[local]
        wanted = s._columns[file]
        self._file(("shard", file), info.path, findex.shard_bytes)  # still the indexed file?
        offset, length = findex.entry_range(local)
        entry = findex.parse_entry(local, self._read(("index", file), findex.path, offset, length))
        if info.format == "tfrecord":
            head = self._tfrecord_head(file, rec)
        else:
            head = self._parquet_head(file, rec, entry, wanted)
        if int(head.get("num_frames", -1)) != int(rec["num_frames"]):
            raise IndexMismatch(
                f"{info.path}: row {local} has {head.get('num_frames')} frames, its frame "
                f"index says {int(rec['num_frames'])}"
            )
        fetch = self._fetcher(file)
        raw: dict[str, Any] = {}
        for c in COLUMNS:
            if c.name not in wanted:
                continue
            if c.name in FRAME_COLUMNS:
                if c.name in entry:
                    raw[c.name] = LazyFrames(fetch, *entry[c.name])
            elif c.name in head:
                raw[c.name] = head[c.name]
        return raw

    def _tfrecord_head(self, file: int, rec: np.void) -> dict[str, Any]:
        """The context columns of the record at ``rec`` (one read from the record's header
        to the end of its context; the header is checked against the index)."""
        s = self._source
        info, findex = s.files[file], s.indexes[file]
        start = int(rec["locator"])
        head_end = int(rec["head_offset"]) + int(rec["head_length"])
        if (
            not start + 12
            <= int(rec["head_offset"])
            <= head_end
            <= start + 12 + int(rec["record_length"])
        ):
            raise IndexMismatch(f"{info.path}: the frame index names a context outside its record")
        data = self._read(("shard", file), info.path, start, head_end - start, findex.shard_bytes)
        length = data[:8]
        if struct.unpack("<Q", length)[0] != int(rec["record_length"]) or struct.unpack(
            "<I", data[8:12]
        )[0] != masked_crc(length):
            raise IndexMismatch(
                f"{info.path}: the record at byte {start} is not the one its frame index names"
            )
        return context_to_row(data[int(rec["head_offset"]) - start :])

    def _parquet_head(
        self, file: int, rec: np.void, entry: dict[str, tuple[np.ndarray, np.ndarray]], wanted
    ) -> dict[str, Any]:
        """The asked columns that are not per-frame of the row group at ``rec``; checks that
        the frames the index names lie in that row group's uncompressed column chunks."""
        s = self._source
        info = s.files[file]

        def opener() -> _ParquetHandle:
            return _ParquetHandle(open_parquet(info.path, s.store, storage.is_uri(info.path)))

        handle = self._parquet.get(file, opener)
        pf, where = handle.file, handle.where
        group = int(rec["locator"])
        md = pf.metadata
        if not 0 <= group < md.num_row_groups or md.row_group(group).num_rows != 1:
            raise IndexMismatch(f"{info.path}: no one-row row group {group} as its index says")
        rg = md.row_group(group)
        for name, (offsets, lengths) in entry.items():
            cc = rg.column(where[name]) if name in where else None
            if cc is None or cc.compression != "UNCOMPRESSED":
                raise IndexMismatch(f"{info.path}: column {name} is not stored as indexed")
            lo, hi = cc.data_page_offset, cc.data_page_offset + cc.total_compressed_size
            if len(offsets) and (offsets.min() < lo or (offsets + lengths).max() > hi):
                raise IndexMismatch(
                    f"{info.path}: frames of {name} lie outside row group {group}'s column"
                )
        names = set(pf.schema_arrow.names)
        columns = [c for c in wanted if c not in FRAME_COLUMNS and c in names]
        table = pf.read_row_group(group, columns=columns, use_threads=False)
        head = table.to_pylist()[0]
        del table
        release_arrow_memory()
        return head

    def close(self) -> None:
        """Close the files."""
        self._reader.close()
        self._files.close()
        self._parquet.close()
        self._last = None

    def __enter__(self) -> RowSourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
