"""The reader's I/O: find the shard files, index their rows, read one row at a time.

Everything :class:`tristream.shards.ShardDataset` does with files goes through
:class:`RowSource` (built once, pickled to the DataLoader workers) and the
:class:`RowSourceReader` each worker opens: listing and indexing the files, choosing
the columns of the asked modalities, opening and closing them, and reading a row
as a :class:`tristream.shards.row.RowView`. A reader that fetches less than a
whole row (e.g. only a clip's frames through a frame-offset index, DESIGN.md
"Shard contract") replaces this module and leaves sampling, partitioning and the
clip transforms as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from tristream.shards.files import ShardFileInfo, ShardRowReader, index_shard, shard_files
from tristream.shards.row import RowView
from tristream.shards.schema import COLUMNS, MODALITIES

__all__ = ["RowSource", "RowSourceReader"]

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
        num_frames: also read every row's ``num_frames`` while indexing (one
            scalar column; Parquet reads only that column, TFRecord parses every record).
        fmt: ``parquet`` or ``tfrecord`` in a directory holding both.

    Rows are numbered 0..N-1 in file order, then row order within a file.
    """

    def __init__(
        self,
        path: PathArg,
        modalities: Sequence[str],
        num_frames: bool = False,
        fmt: str | None = None,
    ):
        self.modalities = tuple(modalities)
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        files = [f for p in paths for f in shard_files(p, fmt)]
        if not files:
            raise ValueError(f"no .parquet or .tfrecord shard files under {path}")
        #: One :class:`ShardFileInfo` per file (path, format, modalities it holds).
        self.files: list[ShardFileInfo] = []
        self._columns: list[list[str]] = []
        row_file, row_group, row_pos, row_frames = [], [], [], []
        for i, file in enumerate(files):
            index = index_shard(file, ("num_frames",) if num_frames else ())
            info = index.info
            present = [m for m in self.modalities if m in info.modalities]
            if len(index) and not present:
                raise ValueError(
                    f"none of the requested modalities {self.modalities} is in {file} "
                    f"(it holds {info.modalities})"
                )
            self.files.append(info)
            read = list(present)
            if "keypoints3d" in read and "keypoints" not in read:
                read.append("keypoints")  # the 3D joints' scores and person count
            self._columns.append(
                list(_SCALAR_COLUMNS) + [c for m in read for c in _MODALITY_COLUMNS[m]]
            )
            row_file.append(np.full(len(index), i, np.int64))
            row_group.append(index.groups)
            row_pos.append(index.positions)
            if num_frames:
                row_frames.extend(int(n) for n in index.values["num_frames"])
        self._row_file = np.concatenate(row_file)
        self._row_group = np.concatenate(row_group)
        self._row_pos = np.concatenate(row_pos)
        #: int64 ``[N]``: frames of each row, when indexed with ``num_frames=True``; else None.
        self.num_frames: np.ndarray | None = (
            np.asarray(row_frames, np.int64) if num_frames else None
        )
        #: The asked modalities that at least one file holds, in the asked order.
        self.available: tuple[str, ...] = tuple(
            m for m in self.modalities if any(m in f.modalities for f in self.files)
        )

    @property
    def num_rows(self) -> int:
        """N, the rows in all files."""
        return len(self._row_file)

    def open(self) -> RowSourceReader:
        """A reader of these rows (one per DataLoader worker; close it, or use ``with``)."""
        return RowSourceReader(self)


class RowSourceReader:
    """Reads rows of a :class:`RowSource` by number. Keeps its files open until :meth:`close`.

    Not thread-safe; consecutive reads of one row read it once.
    """

    def __init__(self, source: RowSource):
        self._source = source
        self._reader = ShardRowReader(source.files, source._columns)

    def read(self, row: int) -> RowView:
        """Row number ``row`` (0..N-1) as a lazy :class:`RowView` of the asked modalities' columns.

        Raises ValueError when the row's schema is newer than this reader.
        """
        s = self._source
        raw = self._reader.read(int(s._row_file[row]), int(s._row_group[row]), int(s._row_pos[row]))
        view = RowView(raw)
        view.meta  # noqa: B018 - a schema newer than this reader raises here
        return view

    def close(self) -> None:
        """Close the files."""
        self._reader.close()

    def __enter__(self) -> RowSourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
