"""The shard contract shared by writer and reader: schema, codecs, Parquet/TFRecord I/O.

Importable without Beam, ffmpeg or torch (``ShardDataset`` needs torch and is
imported on first use).
"""

from tristream.shards.reader import read_rows, shard_files
from tristream.shards.row import RowView, encode_row
from tristream.shards.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "RowView", "ShardDataset", "encode_row", "read_rows", "shard_files"]


def __getattr__(name: str):
    if name == "ShardDataset":
        from tristream.shards.dataset import ShardDataset

        return ShardDataset
    raise AttributeError(f"module 'tristream.shards' has no attribute {name!r}")
