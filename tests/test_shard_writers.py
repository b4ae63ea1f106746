"""Shard writers appear complete or not at all (tristream.shards.atomic.AtomicRowWriter)."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from tristream.shards.parquet import ParquetShardWriter
from tristream.shards.schema import arrow_schema
from tristream.shards.tfrecord import TFRecordShardWriter

SCHEMA = arrow_schema(("rgb",))
WRITERS = {
    "parquet": lambda path: ParquetShardWriter(path, SCHEMA),
    "tfrecord": lambda path: TFRecordShardWriter(path, SCHEMA),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_writer_publishes_on_success_and_leaves_nothing_on_error(tmp_path, fmt):
    path = str(tmp_path / f"train-00000-of-00001.{fmt}")
    with WRITERS[fmt](path) as writer:
        assert not os.path.exists(path)  # still under its temporary name
        assert os.path.dirname(writer.tmp_path) == str(tmp_path)
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    if fmt == "parquet":
        assert pq.read_table(path).schema.names == SCHEMA.names
    before = open(path, "rb").read()

    with pytest.raises(RuntimeError, match="stage failed"):
        with WRITERS[fmt](path):
            raise RuntimeError("stage failed")
    # The earlier file is untouched and no temporary file is left behind.
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    assert open(path, "rb").read() == before

    other = str(tmp_path / f"other.{fmt}")
    writer = WRITERS[fmt](other)
    writer.abort(ValueError("dropped"))
    assert os.listdir(tmp_path) == [os.path.basename(path)]
