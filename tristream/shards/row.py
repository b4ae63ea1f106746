"""The shard row codec: :func:`encode_row` builds a raw row, :class:`RowView` reads one back.

A *raw row* is a dict column -> Python value, exactly what goes into (and
comes out of) a Parquet or TFRecord shard (DESIGN.md, "Shard contract"):
scalars as ``str``/``int``/``float``/None, ``rgb``/``pose``/``flow_x``/``flow_y``
as lists of encoded bytes, ``keypoints``/``boxes`` as flat float lists,
``track_ids`` as an int list and ``meta`` as a JSON string. A modality a run
did not compute is absent keys, never empty ones.

These are the only places that lay a row out and take one apart: the pipeline,
the benchmarks and the tests write rows with :func:`encode_row`; the reader,
the Dataset and ``tristream inspect`` read them with :class:`RowView`, which
decodes only the columns (and frames) asked for.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from tristream.shards.coco import NUM_JOINTS
from tristream.shards.codec import (
    FLOW_ENCODINGS,
    JPEG_QUALITY,
    decode_image,
    dequantize_flow,
    encode_flow,
    encode_frames,
    quantize_flow,
)
from tristream.shards.schema import COLUMNS, MODALITIES, SCHEMA_VERSION, modalities_of

#: Scalar columns every row has, in contract order (``meta`` aside: it is JSON).
SCALAR_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in COLUMNS if c.modality is None and c.name != "meta"
)
#: Image formats of the ``rgb`` and ``pose`` frames.
IMAGE_FORMATS: tuple[str, ...] = ("jpeg", "png")
#: The per-frame image columns: modality -> column.
_IMAGE_COLUMNS: dict[str, str] = {"rgb": "rgb", "pose": "pose"}


# --------------------------------------------------------------------------- encode


def _shape_error(name: str, expected: str, array: np.ndarray) -> ValueError:
    return ValueError(f"{name} must have shape {expected}, got {tuple(array.shape)}")


def _check_images(name: str, images: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise _shape_error(name, "[T, H, W, 3]", images)
    if shape is not None and images.shape != shape:
        raise _shape_error(name, f"{list(shape)} (the frames' [T, H, W, 3])", images)
    if images.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8, got {images.dtype}")
    return images


def encode_row(
    *,
    video_id: str,
    source: str,
    label: str | None,
    label_index: int | None,
    segment: int,
    start_frame: int,
    fps: float,
    frames: np.ndarray,
    flow: np.ndarray | None = None,
    pose_frames: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    track_ids: np.ndarray | None = None,
    keypoints3d: np.ndarray | None = None,
    source_size: tuple[int, int] | None = None,
    meta: str,
    flow_encoding: str = "jpeg",
    jpeg_quality: int = JPEG_QUALITY,
    image_format: str = "jpeg",
) -> dict[str, Any]:
    """Encode one segment of one video as a raw shard row (column -> Python value).

    Args:
        video_id, source, label, label_index, segment, start_frame: the row's
            identity (``label``/``label_index`` None when the video has none).
        fps: frame rate of ``frames`` (frames per second).
        frames: uint8 ``[T, H, W, 3]`` RGB, T >= 1; stored as ``rgb``, one
            ``image_format`` image each (``num_frames``/``height``/``width`` come from it).
        flow: float ``[T-1, H, W, 2]`` (x, y) in pixels, frame t to t+1; stored as
            ``flow_x``/``flow_y`` in ``flow_encoding`` (``jpeg``/``png``: uint8
            quantised over +-20 px; ``f16``: raw float16). None: no flow columns.
        pose_frames: uint8 ``[T, H, W, 3]`` rendered pose frames (``pose``), as ``image_format``.
        keypoints, boxes, track_ids: float ``[M, T, 17, 3]`` (x, y, score) and
            ``[M, T, 5]`` (x1, y1, x2, y2, score) in pixels of ``frames``, and int
            ``[M]`` track ids; all three or none. Stored as flat float32 /
            int32 lists with ``num_persons`` = M.
        keypoints3d: float ``[M, T, 17, 3]`` (x, y, z) metres of the same persons (needs
            the three above); None: no ``keypoints3d`` column.
        source_size: the source video's (height, width) before resizing, stored with the
            persons (``source_height``/``source_width``; null when None).
        meta: the ``meta`` column, a JSON object; when flow is given, its
            ``flow_encoding`` (default ``jpeg``) must be ``flow_encoding``.
        jpeg_quality: quality of every JPEG (frames, pose frames, ``jpeg`` flow).
        image_format: ``jpeg`` (the pipeline's) or ``png`` (lossless) for ``rgb`` and ``pose``.

    Returns:
        The raw row, keys in contract order; absent modalities are absent keys.

    Raises:
        ValueError: a shape that does not fit the frames, an unknown encoding,
            a partial person set, or a ``meta`` that is not JSON or names another
            flow encoding. TypeError: a non-array or an array of the wrong dtype.
    """
    frames = _check_images("frames", frames, None)
    t, h, w = (int(s) for s in frames.shape[:3])
    if t < 1:
        raise ValueError("frames must hold at least one frame")
    if flow_encoding not in FLOW_ENCODINGS:
        raise ValueError(f"unknown flow encoding {flow_encoding!r}; choose one of {FLOW_ENCODINGS}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {image_format!r}; choose one of {IMAGE_FORMATS}")
    if not 0 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in [0, 100], got {jpeg_quality}")
    for name, value in (("video_id", video_id), ("source", source), ("meta", meta)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    try:
        meta_dict = json.loads(meta)
    except json.JSONDecodeError as exc:
        raise ValueError(f"meta is not JSON: {exc}") from None
    if not isinstance(meta_dict, dict):
        raise ValueError(f"meta must be a JSON object, got {type(meta_dict).__name__}")
    if flow is not None:
        flow = np.asarray(flow)
        if flow.shape != (t - 1, h, w, 2):
            raise _shape_error("flow", f"[T-1, H, W, 2] = {[t - 1, h, w, 2]}", flow)
        if not np.issubdtype(flow.dtype, np.floating):
            raise TypeError(f"flow must be float (pixels), got {flow.dtype}")
        declared = meta_dict.get("flow_encoding") or "jpeg"
        if declared != flow_encoding:
            raise ValueError(
                f"meta names flow encoding {declared!r} but the flow is encoded as "
                f"{flow_encoding!r}; a reader would misread it"
            )
    if pose_frames is not None:
        _check_images("pose_frames", pose_frames, frames.shape)
    persons = (keypoints, boxes, track_ids)
    if any(p is not None for p in persons) and any(p is None for p in persons):
        raise ValueError("keypoints, boxes and track_ids come together: give all three or none")
    if track_ids is not None:
        ids = np.asarray(track_ids)
        if ids.ndim != 1:
            raise _shape_error("track_ids", "[M]", ids)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"track_ids must be integers, got {ids.dtype}")
        info = np.iinfo(np.int32)
        if ids.size and (ids.min() < info.min or ids.max() > info.max):
            raise ValueError("track_ids must fit in int32")
        m = len(ids)
        kps, bxs = np.asarray(keypoints), np.asarray(boxes)
        if kps.shape != (m, t, NUM_JOINTS, 3):
            raise _shape_error("keypoints", f"[M, T, 17, 3] = {[m, t, NUM_JOINTS, 3]}", kps)
        if bxs.shape != (m, t, 5):
            raise _shape_error("boxes", f"[M, T, 5] = {[m, t, 5]}", bxs)
        if keypoints3d is not None:
            k3 = np.asarray(keypoints3d)
            if k3.shape != (m, t, NUM_JOINTS, 3):
                raise _shape_error("keypoints3d", f"[M, T, 17, 3] = {[m, t, NUM_JOINTS, 3]}", k3)
    elif keypoints3d is not None:
        raise ValueError("keypoints3d needs keypoints, boxes and track_ids")

    row: dict[str, Any] = {
        "video_id": video_id,
        "source": source,
        "label": label,
        "label_index": None if label_index is None else int(label_index),
        "segment": int(segment),
        "start_frame": int(start_frame),
        "num_frames": t,
        "fps": float(fps),
        "height": h,
        "width": w,
        "rgb": encode_frames(frames, image_format, jpeg_quality),
    }
    if flow is not None:
        row["flow_x"], row["flow_y"] = encode_flow(flow, flow_encoding, jpeg_quality)
    if pose_frames is not None:
        row["pose"] = encode_frames(pose_frames, image_format, jpeg_quality)
    if track_ids is not None:
        row["keypoints"] = kps.astype(np.float32).ravel().tolist()
        row["boxes"] = bxs.astype(np.float32).ravel().tolist()
        row["track_ids"] = ids.astype(np.int32).tolist()
        row["num_persons"] = m
        if source_size is not None:  # a shard file stores null where a row has none
            row["source_height"], row["source_width"] = (int(v) for v in source_size)
        if keypoints3d is not None:
            row["keypoints3d"] = k3.astype(np.float32).ravel().tolist()
    row["meta"] = meta
    return row


# --------------------------------------------------------------------------- decode


def _prefetch(frames: Any, indices: list[int]) -> None:
    """Ask a lazy frame column (one with ``prefetch``, e.g.
    :class:`tristream.shards.row_source.LazyFrames`) for ``indices`` in one go."""
    prefetch = getattr(frames, "prefetch", None)
    if prefetch is not None:
        prefetch(indices)


def parse_meta_json(text: str | None) -> dict[str, Any]:
    """A row's ``meta`` JSON as a dict (``{}`` when empty or None).

    Raises ValueError when it is not a JSON object, or names a schema version
    newer than this reader's :data:`~tristream.shards.schema.SCHEMA_VERSION`.
    """
    meta = json.loads(text) if text else {}
    if not isinstance(meta, dict):
        raise ValueError(f"row meta must be a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"row meta has a schema_version that is not an int: {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"shard schema version {version} is newer than this reader ({SCHEMA_VERSION}); "
            "upgrade tristream"
        )
    return meta


class RowView(Mapping[str, Any]):
    """A lazy view over one raw shard row: decodes only what is asked for.

    ``raw`` is a mapping column -> Python value as read from Parquet or
    TFRecord (it may hold a subset of the columns); a frame column may be a lazy
    sequence of encoded frames with a ``prefetch(indices)`` method, which is called
    with the frames about to be decoded. ``view[column]`` is the raw
    value (scalars: ``view["video_id"]``, ``view["segment"]``, ...). Decoding
    methods check the row's schema version first (:attr:`meta`) and raise
    ``KeyError`` when the row lacks the modality, ``ValueError`` on bytes that
    do not decode to the row's ``height`` x ``width``. ``indices`` select frames
    (``rgb``/``pose``: 0..T-1) or frame pairs (flow: 0..T-2) in the given order,
    repeats allowed; None means all of them. Nothing is cached but :attr:`meta`.
    """

    __slots__ = ("_meta", "_raw")

    def __init__(self, raw: Mapping[str, Any]):
        self._raw = raw
        self._meta: dict[str, Any] | None = None

    # ------------------------------------------------------------------ mapping

    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __repr__(self) -> str:
        ident = f"{self._raw.get('video_id')!r} segment {self._raw.get('segment')}"
        return f"RowView({ident}, modalities={self.modalities})"

    @property
    def raw(self) -> Mapping[str, Any]:
        """The underlying raw row."""
        return self._raw

    # ------------------------------------------------------------------ scalars

    @property
    def meta(self) -> dict[str, Any]:
        """The ``meta`` column parsed (see :func:`parse_meta_json`); parsed once."""
        if self._meta is None:
            self._meta = parse_meta_json(self._raw.get("meta"))
        return self._meta

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities whose columns the row holds, in contract order."""
        return modalities_of(list(self._raw))

    def has(self, modality: str) -> bool:
        """Whether the row holds ``modality`` (``rgb``, ``flow``, ``pose``, ``keypoints``)."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; known: {MODALITIES}")
        return modality in self.modalities

    @property
    def num_frames(self) -> int:
        """T, frames in the row."""
        return int(self._raw["num_frames"])

    @property
    def height(self) -> int:
        """H of the stored frames, pixels."""
        return int(self._raw["height"])

    @property
    def width(self) -> int:
        """W of the stored frames, pixels."""
        return int(self._raw["width"])

    @property
    def num_persons(self) -> int:
        """M, person tracks in the row (KeyError without the keypoints modality)."""
        return int(self._column("num_persons", "keypoints"))

    @property
    def flow_encoding(self) -> str:
        """How ``flow_x``/``flow_y`` are stored: ``meta.flow_encoding``, ``jpeg`` when unset."""
        encoding = self.meta.get("flow_encoding") or "jpeg"
        if encoding not in FLOW_ENCODINGS:
            raise ValueError(f"unknown flow encoding {encoding!r} in the row meta")
        return encoding

    # ------------------------------------------------------------------ helpers

    def _column(self, name: str, modality: str) -> Any:
        if name not in self._raw:
            raise KeyError(
                f"row {self._raw.get('video_id')!r} segment {self._raw.get('segment')} "
                f"has no {modality!r} (column {name!r} absent)"
            )
        return self._raw[name]

    @staticmethod
    def _indices(n: int, indices: Iterable[int] | None, what: str) -> list[int]:
        if indices is None:
            return list(range(n))
        out = [operator.index(i) for i in np.asarray(indices).ravel()]
        for i in out:
            if not 0 <= i < n:
                raise IndexError(f"{what} index {i} out of range [0, {n})")
        return out

    # ------------------------------------------------------------------ images

    def iter_encoded(
        self, modality: str, indices: Iterable[int] | None = None
    ) -> Iterator[bytes | memoryview]:
        """The ``rgb`` or ``pose`` frames ``indices`` as stored (JPEG/PNG bytes), one by one;
        a lazy frame column fetches them all first, in one go."""
        if modality not in _IMAGE_COLUMNS:
            raise ValueError(f"{modality!r} is not an image modality; use rgb or pose")
        self.meta  # noqa: B018 - a newer schema raises before anything is decoded
        data = self._column(_IMAGE_COLUMNS[modality], modality)
        if len(data) != self.num_frames:
            raise ValueError(
                f"row has {len(data)} {modality} frames but num_frames {self.num_frames}"
            )
        picked = self._indices(len(data), indices, f"{modality} frame")
        _prefetch(data, picked)
        for i in picked:
            yield data[i]

    def iter_images(
        self, modality: str, indices: Iterable[int] | None = None
    ) -> Iterator[np.ndarray]:
        """Decode ``rgb`` or ``pose`` frames ``indices`` one by one: uint8 ``[H, W, 3]`` RGB."""
        size = (self.height, self.width)
        picked = None if indices is None else list(indices)
        for k, data in enumerate(self.iter_encoded(modality, picked)):
            image = decode_image(data)
            if image.shape[:2] != size:
                i = k if picked is None else picked[k]
                raise ValueError(
                    f"{modality} frame {i} is {image.shape[1]}x{image.shape[0]} in a row of "
                    f"{size[1]}x{size[0]}"
                )
            yield image

    def _images(self, modality: str, indices: Iterable[int] | None) -> np.ndarray:
        picked = self._indices(len(self._column(modality, modality)), indices, modality)
        out = np.empty((len(picked), self.height, self.width, 3), np.uint8)
        for k, image in enumerate(self.iter_images(modality, picked)):
            out[k] = image
        return out

    def rgb(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """RGB frames: uint8 ``[N, H, W, 3]`` (N = len(indices), else T)."""
        return self._images("rgb", indices)

    def pose(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Rendered pose frames: uint8 ``[N, H, W, 3]`` RGB (N = len(indices), else T)."""
        return self._images("pose", indices)

    # ------------------------------------------------------------------ flow

    @property
    def num_flows(self) -> int:
        """Stored flow fields (T - 1); KeyError without flow."""
        return len(self._column("flow_x", "flow"))

    def iter_flow_planes(
        self, indices: Iterable[int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The stored flow of pairs ``indices`` one at a time, as ``(x, y)`` planes ``[H, W]``.

        ``jpeg``/``png`` rows give the uint8 levels ``q`` (pixels = ``q * 40 / 255 - 20``),
        ``f16`` rows the float16 pixels, as stored.
        """
        encoding = self.flow_encoding
        xs, ys = self._column("flow_x", "flow"), self._column("flow_y", "flow")
        if len(xs) != len(ys) or len(xs) != max(self.num_frames - 1, 0):
            raise ValueError(
                f"row has {len(xs)} flow_x and {len(ys)} flow_y planes for "
                f"{self.num_frames} frames (expected num_frames - 1 of each)"
            )
        h, w = self.height, self.width
        picked = self._indices(len(xs), indices, "flow pair")
        _prefetch(xs, picked)
        _prefetch(ys, picked)
        for i in picked:
            planes = []
            for data in (xs[i], ys[i]):
                if encoding == "f16":
                    if len(data) != 2 * h * w:
                        raise ValueError(
                            f"f16 flow plane {i} has {len(data)} bytes, not {2 * h * w} for {w}x{h}"
                        )
                    plane = np.frombuffer(data, "<f2").reshape(h, w)
                else:
                    plane = decode_image(data, gray=True)
                    if plane.shape != (h, w):
                        raise ValueError(
                            f"flow plane {i} is {plane.shape[1]}x{plane.shape[0]} in a row of "
                            f"{w}x{h}"
                        )
                planes.append(plane)
            yield planes[0], planes[1]

    def flow(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Flow in pixels: float32 ``[N, H, W, 2]`` (x right, y down), pair t = frame t -> t+1.

        Dequantised (``q * 40 / 255 - 20``) for ``jpeg``/``png``, float16 widened for ``f16``.
        """
        picked = self._indices(self.num_flows, indices, "flow pair")
        out = np.empty((len(picked), self.height, self.width, 2), np.float32)
        quantised = self.flow_encoding != "f16"
        for k, (x, y) in enumerate(self.iter_flow_planes(picked)):
            out[k, ..., 0] = dequantize_flow(x) if quantised else x
            out[k, ..., 1] = dequantize_flow(y) if quantised else y
        return out

    def flow_levels(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Flow as uint8 levels ``q``: ``[N, H, W, 2]``, pixels = ``q * 40 / 255 - 20``.

        The stored levels for ``jpeg``/``png``; ``f16`` flow is quantised here
        (clipped to +-20 px).
        """
        picked = self._indices(self.num_flows, indices, "flow pair")
        out = np.empty((len(picked), self.height, self.width, 2), np.uint8)
        quantised = self.flow_encoding != "f16"
        for k, (x, y) in enumerate(self.iter_flow_planes(picked)):
            out[k, ..., 0] = x if quantised else quantize_flow(x)
            out[k, ..., 1] = y if quantised else quantize_flow(y)
        return out

    # ------------------------------------------------------------------ persons

    def keypoints(self) -> np.ndarray:
        """float32 ``[M, T, 17, 3]``: COCO-17 (x, y, score) in pixels; score 0 where absent."""
        self.meta  # noqa: B018 - schema check
        values = self._column("keypoints", "keypoints")
        shape = (self.num_persons, self.num_frames, NUM_JOINTS, 3)
        return self._reshape(values, np.float32, shape, "keypoints")

    def boxes(self) -> np.ndarray:
        """float32 ``[M, T, 5]``: (x1, y1, x2, y2, score) in pixels."""
        self.meta  # noqa: B018 - schema check
        shape = (self.num_persons, self.num_frames, 5)
        return self._reshape(self._column("boxes", "keypoints"), np.float32, shape, "boxes")

    def track_ids(self) -> np.ndarray:
        """int32 ``[M]``: the track id of each person slot (stable within a video)."""
        self.meta  # noqa: B018 - schema check
        values = self._column("track_ids", "keypoints")
        return self._reshape(values, np.int32, (self.num_persons,), "track_ids")

    def keypoints3d(self) -> np.ndarray:
        """float32 ``[M, T, 17, 3]``: COCO-17 (x, y, z) in metres, root-relative, same
        persons and frames as :meth:`keypoints` (zeros where absent)."""
        self.meta  # noqa: B018 - schema check
        values = self._column("keypoints3d", "keypoints3d")
        shape = (self.num_persons, self.num_frames, NUM_JOINTS, 3)
        return self._reshape(values, np.float32, shape, "keypoints3d")

    @property
    def source_size(self) -> tuple[int, int] | None:
        """The source video's (height, width) before resizing, or None when unknown."""
        h, w = self._raw.get("source_height"), self._raw.get("source_width")
        return None if h is None or w is None else (int(h), int(w))

    @staticmethod
    def _reshape(values: Any, dtype: type, shape: tuple[int, ...], name: str) -> np.ndarray:
        array = np.asarray(values, dtype)
        if array.size != int(np.prod(shape)):
            raise ValueError(f"{name} holds {array.size} values, not {list(shape)}")
        return array.reshape(shape)

    # ------------------------------------------------------------------ all

    def decode(self, modalities: Iterable[str] | None = None) -> dict[str, Any]:
        """The row as arrays (what :func:`tristream.shards.read_rows` yields).

        Scalar columns as Python values, ``meta`` as a dict, and for the
        modalities present (and in ``modalities`` when given): ``rgb`` and
        ``pose`` uint8 ``[T, H, W, 3]``; ``flow`` float32 ``[T-1, H, W, 2]`` in
        pixels; ``num_persons`` int, ``keypoints`` float32 ``[M, T, 17, 3]``,
        ``boxes`` float32 ``[M, T, 5]``, ``track_ids`` int32 ``[M]``, ``source_size``
        (h, w) or None; ``keypoints3d`` float32 ``[M, T, 17, 3]`` metres.
        """
        wanted = None if modalities is None else set(modalities)
        raw = self._raw
        meta = self.meta
        row: dict[str, Any] = {k: raw[k] for k in SCALAR_COLUMNS if k in raw}
        row["meta"] = dict(meta)

        def want(m: str) -> bool:
            return wanted is None or m in wanted

        if "rgb" in raw and want("rgb"):
            row["rgb"] = self.rgb()
        if "flow_x" in raw and want("flow"):
            row["flow"] = self.flow()
        if "pose" in raw and want("pose"):
            row["pose"] = self.pose()
        if "keypoints" in raw and want("keypoints"):
            row["num_persons"] = self.num_persons
            row["keypoints"] = self.keypoints()
            row["boxes"] = self.boxes()
            row["track_ids"] = self.track_ids()
            row["source_size"] = self.source_size
        if "keypoints3d" in raw and want("keypoints3d"):
            row["keypoints3d"] = self.keypoints3d()
        return row
