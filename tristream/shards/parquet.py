"""Parquet shard files: one row per segment, one row group per row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tristream.shards.atomic import AtomicRowWriter


class ParquetShardWriter(AtomicRowWriter):
    """Write raw shard rows (dicts of column -> Python value) to one Parquet file.

    The file appears at ``path`` only when :meth:`close` succeeds. Use as a
    context manager; an exception inside the block leaves no file behind.
    """

    def __init__(self, path: str, schema: pa.Schema, compression: str = "snappy"):
        super().__init__(path)
        self.schema = schema
        self._writer = pq.ParquetWriter(self.tmp_path, schema, compression=compression)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (its own row group, so readers can stream row by row)."""
        self._writer.write_table(pa.Table.from_pylist([row], schema=self.schema))
        self.rows += 1

    def _close_output(self) -> None:
        self._writer.close()


def iter_parquet_rows(path: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the raw rows of a Parquet shard one at a time (``columns`` selects a subset)."""
    pf = pq.ParquetFile(path)
    for group in range(pf.num_row_groups):
        table = pf.read_row_group(group, columns=columns)
        yield from table.to_pylist()
