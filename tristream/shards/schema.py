"""The shard contract, version 1: columns, their types and their TFRecord keys.

The writer (the pipeline) and the reader both build their schema from
:data:`COLUMNS`; nothing else in the project spells a column type. One row is
one segment of one video (DESIGN.md, "Shard contract"). The row layout is
built and read in :mod:`tristream.shards.row`, the COCO-17 facts (joint
count and order) live in :mod:`tristream.shards.coco`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    """One column of the contract.

    ``modality`` is None for columns every row has, else the modality that
    brings it (absent modalities are absent columns). ``tf_key`` is its key in
    the TFRecord SequenceExample, ``tf_kind`` one of ``bytes``/``int``/``float``,
    ``sequence`` says whether it is a per-frame feature list (else context).
    """

    name: str
    type: pa.DataType
    modality: str | None
    tf_key: str
    tf_kind: str
    sequence: bool = False
    nullable: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("video_id", pa.string(), None, "example/id", "bytes"),
    Column("source", pa.string(), None, "clip/data_path", "bytes"),
    Column("label", pa.string(), None, "clip/label/string", "bytes", nullable=True),
    Column("label_index", pa.int32(), None, "clip/label/index", "int", nullable=True),
    Column("segment", pa.int32(), None, "clip/segment/index", "int"),
    Column("start_frame", pa.int32(), None, "clip/start/frame", "int"),
    Column("num_frames", pa.int32(), None, "clip/frames", "int"),
    Column("fps", pa.float32(), None, "image/frame_rate", "float"),
    Column("height", pa.int32(), None, "image/height", "int"),
    Column("width", pa.int32(), None, "image/width", "int"),
    Column("rgb", pa.list_(pa.binary()), "rgb", "image/encoded", "bytes", sequence=True),
    Column(
        "flow_x", pa.list_(pa.binary()), "flow", "FORWARD_FLOW/x/encoded", "bytes", sequence=True
    ),
    Column(
        "flow_y", pa.list_(pa.binary()), "flow", "FORWARD_FLOW/y/encoded", "bytes", sequence=True
    ),
    Column("pose", pa.list_(pa.binary()), "pose", "POSE/image/encoded", "bytes", sequence=True),
    Column("keypoints", pa.list_(pa.float32()), "keypoints", "region/keypoints", "float"),
    Column("boxes", pa.list_(pa.float32()), "keypoints", "region/boxes", "float"),
    Column("track_ids", pa.list_(pa.int32()), "keypoints", "region/track_ids", "int"),
    Column("num_persons", pa.int32(), "keypoints", "region/num_persons", "int"),
    # The source video's frame size (before resizing), for skeleton files' original_shape.
    Column("source_height", pa.int32(), "keypoints", "clip/source/height", "int", nullable=True),
    Column("source_width", pa.int32(), "keypoints", "clip/source/width", "int", nullable=True),
    # [M, T, 17, 3] (x, y, z) metres, root-relative, the persons of ``keypoints``.
    Column("keypoints3d", pa.list_(pa.float32()), "keypoints3d", "region/keypoints3d", "float"),
    Column("meta", pa.string(), None, "example/meta", "bytes"),
)

#: Modalities a run can write, in column order.
MODALITIES: tuple[str, ...] = ("rgb", "flow", "pose", "keypoints", "keypoints3d")

COLUMNS_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}


def columns_for(modalities: tuple[str, ...] | list[str]) -> list[Column]:
    """The columns a run with these ``modalities`` writes, in contract order."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {MODALITIES}")
    return [c for c in COLUMNS if c.modality is None or c.modality in modalities]


def arrow_schema(modalities: tuple[str, ...] | list[str]) -> pa.Schema:
    """The Arrow/Parquet schema for a run with these ``modalities``.

    The schema metadata carries ``tristream.schema_version``.
    """
    fields = [pa.field(c.name, c.type, nullable=c.nullable) for c in columns_for(modalities)]
    return pa.schema(fields, metadata={"tristream.schema_version": str(SCHEMA_VERSION)})


def modalities_of(column_names: list[str] | set[str]) -> tuple[str, ...]:
    """Which modalities a set of column names holds (the inverse of :func:`columns_for`)."""
    names = set(column_names)
    return tuple(m for m in MODALITIES if any(c.modality == m and c.name in names for c in COLUMNS))
