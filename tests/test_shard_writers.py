"""Shard files: the format follows the suffix, and writers appear complete or not at all."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from tristream.shards.files import open_shard_writer, shard_files, shard_format, shard_suffix
from tristream.shards.parquet import ParquetShardWriter
from tristream.shards.schema import arrow_schema
from tristream.shards.tfrecord import TFRecordShardWriter

SCHEMA = arrow_schema(("rgb",))
FORMATS = ("parquet", "tfrecord")


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_publishes_on_success_and_leaves_nothing_on_error(tmp_path, fmt):
    path = str(tmp_path / f"train-00000-of-00001.{fmt}")
    published = sorted([os.path.basename(path), os.path.basename(path) + ".idx"])  # + index
    with open_shard_writer(path, SCHEMA) as writer:
        assert not os.path.exists(path)  # still under its temporary name
        assert os.path.dirname(writer.tmp_path) == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == published
    if fmt == "parquet":
        assert pq.read_table(path).schema.names == SCHEMA.names
    before = open(path, "rb").read()

    with pytest.raises(RuntimeError, match="stage failed"):
        with open_shard_writer(path, SCHEMA):
            raise RuntimeError("stage failed")
    # The earlier file is untouched and no temporary file is left behind.
    assert sorted(os.listdir(tmp_path)) == published
    assert open(path, "rb").read() == before

    other = str(tmp_path / f"other.{fmt}")
    writer = open_shard_writer(other, SCHEMA)
    writer.abort(ValueError("dropped"))
    assert sorted(os.listdir(tmp_path)) == published


def test_the_suffix_picks_the_format_and_nothing_else_is_a_shard(tmp_path):
    assert shard_format("out/train-00000-of-00002.parquet") == "parquet"
    assert shard_format(tmp_path / "x.tfrecord") == "tfrecord"
    assert (shard_suffix("parquet"), shard_suffix("tfrecord")) == (".parquet", ".tfrecord")
    for name in ("x.json", "x.parquet.tmp", "x.tfrecords", "x"):
        with pytest.raises(ValueError, match="not a shard file"):
            shard_format(name)
        with pytest.raises(ValueError, match="not a shard file"):
            open_shard_writer(str(tmp_path / name), SCHEMA)
    with pytest.raises(ValueError, match="unknown shard format"):
        shard_suffix("csv")
    assert os.listdir(tmp_path) == []  # a refused writer leaves no temporary file
    pq_writer = open_shard_writer(str(tmp_path / "a.parquet"), SCHEMA)
    tf_writer = open_shard_writer(str(tmp_path / "a.tfrecord"), SCHEMA)
    assert type(pq_writer) is ParquetShardWriter and type(tf_writer) is TFRecordShardWriter
    pq_writer.close()
    tf_writer.close()


def test_shard_files_lists_one_format_and_never_temporary_files(tmp_path):
    shards = tmp_path / "shards"
    for name in ("train-00001-of-00002.parquet", "train-00000-of-00002.parquet",
                 "train-00000-of-00001.tfrecord"):  # fmt: skip
        with open_shard_writer(str(shards / name), SCHEMA):
            pass
    (shards / ".train-00002-of-00002.parquet.1234.tmp").write_bytes(b"partial")
    (shards / "manifest.json").write_text("{}")
    assert [os.path.basename(f) for f in shard_files(tmp_path)] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    tf = shard_files(tmp_path, "tfrecord")
    assert [os.path.basename(f) for f in tf] == ["train-00000-of-00001.tfrecord"]
    with pytest.raises(ValueError, match="not a shard file"):
        shard_files(shards / "manifest.json")
