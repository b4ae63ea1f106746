"""The shard row codec (encode_row / RowView) and the COCO-17 facts, against independent references.

References: OpenCV's own JPEG/PNG encoder and decoder called directly, the
quantisation formula of the contract written out here, pyarrow reading the
Parquet file, the ``tfrecord`` package reading the TFRecord file, and the
COCO annotation format's published joint names, skeleton and OKS sigmas.
Frames are real: the first frames of carphone_pristine.mp4 decoded by the
ffmpeg CLI (tests.helpers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from tfrecord.reader import sequence_loader

from tests.helpers import reference_frames
from tristream.shards import read_rows
from tristream.shards.coco import (
    FLIP,
    FLIP_PAIRS,
    JOINT_NAMES,
    NUM_JOINTS,
    OKS_SIGMAS,
    SKELETON,
)
from tristream.shards.files import iter_raw_rows, write_rows
from tristream.shards.reader import decode_row
from tristream.shards.row import RowView, encode_row
from tristream.shards.schema import arrow_schema

T, H, W = 4, 72, 88
ALL = ("rgb", "flow", "pose", "keypoints")
#: The contract's column order (DESIGN.md "Shard contract, version 1").
CONTRACT_ORDER = [
    "video_id", "source", "label", "label_index", "segment", "start_frame", "num_frames",
    "fps", "height", "width", "rgb", "flow_x", "flow_y", "pose", "keypoints", "boxes",
    "track_ids", "num_persons", "source_height", "source_width", "meta",
]  # fmt: skip
#: The TFRecord key of each column (README "Shard schema"), spelled here, not taken from code.
TF_CONTEXT = {
    "example/id": ("video_id", "str"), "clip/data_path": ("source", "str"),
    "clip/label/string": ("label", "str"), "clip/label/index": ("label_index", "int"),
    "clip/segment/index": ("segment", "int"), "clip/start/frame": ("start_frame", "int"),
    "clip/source/height": ("source_height", "int"), "clip/source/width": ("source_width", "int"),
    "clip/frames": ("num_frames", "int"), "image/frame_rate": ("fps", "float"),
    "image/height": ("height", "int"), "image/width": ("width", "int"),
    "region/keypoints": ("keypoints", "list"), "region/boxes": ("boxes", "list"),
    "region/track_ids": ("track_ids", "list"), "region/num_persons": ("num_persons", "int"),
    "example/meta": ("meta", "str"),
}  # fmt: skip
TF_LISTS = {
    "image/encoded": "rgb", "FORWARD_FLOW/x/encoded": "flow_x",
    "FORWARD_FLOW/y/encoded": "flow_y", "POSE/image/encoded": "pose",
}  # fmt: skip


# ----------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def frames(carphone) -> np.ndarray:
    """uint8 [4, 72, 88, 3]: real frames, decoded by the ffmpeg CLI."""
    out = reference_frames(carphone, 25, H, W)[10 : 10 + T]
    assert out.shape == (T, H, W, 3)
    return np.ascontiguousarray(out)


def smooth_flow(n: int = T - 1) -> np.ndarray:
    """float32 [n, H, W, 2] pixels, up to +-26 px (beyond the +-20 px bound in places)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    x = np.stack([np.sin(xx / 11 + k) * 26 + yy / H for k in range(n)])
    return np.stack([x, np.cos(yy / 7) * 9 - 0.5 * x / 26], -1).astype(np.float32)


def persons() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    kp = rng.uniform(0, [W, H, 1], (2, T, NUM_JOINTS, 3)).astype(np.float32)
    boxes = rng.uniform(0, 60, (2, T, 5)).astype(np.float32)
    return kp, boxes, np.array([7, 3])


def meta(**extra) -> str:
    return json.dumps({"schema_version": 1, "flow_encoding": "jpeg", **extra})


def row_args(frames: np.ndarray, flow_encoding: str = "jpeg") -> dict:
    """encode_row's arguments for a row with every modality."""
    kp, boxes, ids = persons()
    return dict(
        video_id="cars/carphone", source="/videos/carphone.mp4", label="talk", label_index=2,
        segment=1, start_frame=299, fps=25.0, frames=frames, flow=smooth_flow(),
        pose_frames=np.ascontiguousarray(255 - frames), keypoints=kp, boxes=boxes,
        track_ids=ids, source_size=(144, 176), meta=meta(flow_encoding=flow_encoding),
        flow_encoding=flow_encoding,
    )  # fmt: skip


def full_row(frames: np.ndarray, flow_encoding: str = "jpeg", **kw) -> dict:
    return encode_row(**{**row_args(frames, flow_encoding), **kw})


def cv2_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def cv2_jpeg_gray(plane: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", plane, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def cv2_decode(data: bytes, gray: bool = False) -> np.ndarray:
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    return image if gray else image[..., ::-1]


def levels(flow: np.ndarray) -> np.ndarray:
    """The contract's quantisation: q = round(255 * (clip(f, -20, 20) + 20) / 40)."""
    return np.round(255 * (np.clip(flow.astype(np.float64), -20, 20) + 20) / 40).astype(np.uint8)


def pixels(q: np.ndarray) -> np.ndarray:
    return q.astype(np.float64) * 40 / 255 - 20


class Spy(Mapping):
    """A raw row that records which columns, and which items of list columns, are read."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.columns: set[str] = set()
        self.items: dict[str, set[int]] = {}

    def __getitem__(self, key):
        self.columns.add(key)
        value = self.raw[key]
        if isinstance(value, list):
            seen = self.items.setdefault(key, set())

            class Tracked(list):
                def __getitem__(inner, i):
                    seen.add(i)
                    return list.__getitem__(inner, i)

            return Tracked(value)
        return value

    def __iter__(self):
        return iter(self.raw)

    def __len__(self):
        return len(self.raw)


# ----------------------------------------------------------------------------- encode


def test_encode_row_lays_out_the_contract_byte_for_byte(frames):
    flow = smooth_flow()
    pose = np.ascontiguousarray(255 - frames)
    kp, boxes, ids = persons()
    row = full_row(frames)
    assert list(row) == CONTRACT_ORDER
    assert row["video_id"] == "cars/carphone" and row["source"] == "/videos/carphone.mp4"
    assert (row["label"], row["label_index"], row["segment"], row["start_frame"]) == (
        "talk", 2, 1, 299,
    )  # fmt: skip
    assert (row["num_frames"], row["height"], row["width"], row["num_persons"]) == (T, H, W, 2)
    for key in ("label_index", "segment", "start_frame", "num_frames", "height", "width",
                "num_persons"):  # fmt: skip
        assert type(row[key]) is int, key
    assert type(row["fps"]) is float and row["fps"] == 25.0
    # RGB and pose: OpenCV's JPEG at quality 95 of the RGB frames, byte for byte.
    assert row["rgb"] == [cv2_jpeg(f) for f in frames]
    assert row["pose"] == [cv2_jpeg(f) for f in pose]
    # Flow: each component quantised by the contract's formula, as a grayscale JPEG.
    q = levels(flow)
    assert row["flow_x"] == [cv2_jpeg_gray(p) for p in q[..., 0]]
    assert row["flow_y"] == [cv2_jpeg_gray(p) for p in q[..., 1]]
    # Persons: flat float32 / int lists, row-major [M, T, 17, 3], [M, T, 5], [M].
    assert all(type(v) is float for v in row["keypoints"][:5])
    assert np.array_equal(np.asarray(row["keypoints"], np.float32), kp.ravel())
    assert np.array_equal(np.asarray(row["boxes"], np.float32), boxes.ravel())
    assert row["track_ids"] == [7, 3] and all(type(v) is int for v in row["track_ids"])
    assert json.loads(row["meta"]) == {"schema_version": 1, "flow_encoding": "jpeg"}


def test_absent_modalities_are_absent_keys_and_options_reach_the_bytes(frames):
    row = encode_row(
        video_id="v", source="s", label=None, label_index=None, segment=0, start_frame=0,
        fps=29.97, frames=frames, meta=meta(), jpeg_quality=60,
    )  # fmt: skip
    assert list(row) == CONTRACT_ORDER[:11] + ["meta"]
    assert row["label"] is None and row["label_index"] is None
    assert row["rgb"] == [cv2_jpeg(f, 60) for f in frames]
    png = full_row(frames, "png", image_format="png")
    for data, frame in zip(png["rgb"], frames):
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and np.array_equal(cv2_decode(data), frame)
    q = levels(smooth_flow())
    assert np.array_equal(np.stack([cv2_decode(d, gray=True) for d in png["flow_x"]]), q[..., 0])
    f16 = full_row(frames, "f16")
    expected = smooth_flow().astype("<f2")
    assert f16["flow_x"] == [p.tobytes() for p in expected[..., 0]]
    assert f16["flow_y"] == [np.ascontiguousarray(p).tobytes() for p in expected[..., 1]]


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(flow=np.zeros((T, H, W, 2), np.float32)), ValueError, "flow must have shape"),
        (dict(flow=np.zeros((T - 1, H, W, 2), np.uint8)), TypeError, "flow must be float"),
        (dict(pose_frames=np.zeros((T, H, W - 2, 3), np.uint8)), ValueError, "pose_frames"),
        (dict(boxes=None), ValueError, "all three or none"),
        (dict(keypoints=np.zeros((2, T, 18, 3), np.float32)), ValueError, "keypoints must"),
        (dict(boxes=np.zeros((2, T, 4), np.float32)), ValueError, "boxes must"),
        (dict(track_ids=np.array([1, 2, 3])), ValueError, "keypoints must"),
        (dict(flow_encoding="webp"), ValueError, "unknown flow encoding"),
        (dict(meta=meta(flow_encoding="png")), ValueError, "meta names flow encoding"),
        (dict(meta="not json"), ValueError, "meta is not JSON"),
        (dict(frames=np.zeros((T, H, W, 3), np.float32)), TypeError, "frames must be uint8"),
        (dict(frames=np.zeros((T, H, W), np.uint8)), ValueError, "frames must have shape"),
        (dict(frames=np.zeros((0, H, W, 3), np.uint8)), ValueError, "at least one frame"),
        (dict(image_format="webp"), ValueError, "unknown image format"),
    ],
)
def test_encode_row_rejects_what_does_not_fit(frames, change, error, match):
    with pytest.raises(error, match=match):
        encode_row(**{**row_args(frames), **change})


# ----------------------------------------------------------------------------- files


def _tf_raw(context: dict, lists: dict) -> dict:
    """A raw row from the tfrecord package's parse, with the README's key names."""
    raw: dict = {}
    for key, (name, kind) in TF_CONTEXT.items():
        if key not in context:
            continue
        value = context[key]
        if kind == "str":
            raw[name] = bytes(value).decode("utf-8")
        elif kind == "int":
            raw[name] = int(value[0])
        elif kind == "float":
            raw[name] = float(value[0])
        else:
            raw[name] = value.tolist()
    for key, name in TF_LISTS.items():
        if key in lists:
            raw[name] = [bytes(b) for b in lists[key]]
    return raw


@pytest.mark.parametrize("flow_encoding", ["jpeg", "png", "f16"])
def test_rows_read_back_by_pyarrow_and_tfrecord_decode_to_the_references(
    tmp_path, frames, flow_encoding
):
    light = full_row(frames[:2], flow_encoding, segment=2, flow=smooth_flow(1), keypoints=None,
                     boxes=None, track_ids=None, pose_frames=None)  # fmt: skip
    from_parquet, from_tfrecord = [], []
    for rows, modalities, name in (([full_row(frames, flow_encoding)], ALL, "a"),
                                   ([light], ("rgb", "flow"), "b")):  # fmt: skip
        write_rows(str(tmp_path / f"{name}.parquet"), rows, arrow_schema(modalities))
        write_rows(str(tmp_path / f"{name}.tfrecord"), rows, arrow_schema(modalities))
        from_parquet += pq.read_table(tmp_path / f"{name}.parquet").to_pylist()
        from_tfrecord += [
            _tf_raw(c, f) for c, f in sequence_loader(str(tmp_path / f"{name}.tfrecord"), None)
        ]
    assert len(from_parquet) == len(from_tfrecord) == 2
    kp, boxes, ids = persons()
    flow = smooth_flow()
    for raw in (from_parquet[0], from_tfrecord[0]):
        view = RowView(raw)
        assert view.modalities == ALL and view["video_id"] == "cars/carphone"
        assert view.meta == {"schema_version": 1, "flow_encoding": flow_encoding}
        rgb = view.rgb()
        assert rgb.dtype == np.uint8 and rgb.shape == (T, H, W, 3)
        assert np.array_equal(rgb, np.stack([cv2_decode(d) for d in raw["rgb"]]))
        assert np.abs(rgb.astype(int) - frames).mean() < 3  # JPEG 95 of real frames
        assert np.array_equal(view.pose(), np.stack([cv2_decode(d) for d in raw["pose"]]))
        got = view.flow()
        assert got.dtype == np.float32 and got.shape == (T - 1, H, W, 2)
        if flow_encoding == "f16":
            assert np.array_equal(got, flow.astype(np.float16).astype(np.float32))
        else:
            stored = np.stack(
                [np.stack([cv2_decode(x, True), cv2_decode(y, True)], -1)
                 for x, y in zip(raw["flow_x"], raw["flow_y"])]
            )  # fmt: skip
            assert np.allclose(got, pixels(stored), atol=1e-5)
            assert np.array_equal(view.flow_levels(), stored)
            if flow_encoding == "png":
                assert np.array_equal(stored, levels(flow))
        assert np.array_equal(view.keypoints(), kp) and view.keypoints().dtype == np.float32
        assert np.array_equal(view.boxes(), boxes) and np.array_equal(view.track_ids(), ids)
        assert view.track_ids().dtype == np.int32 and view.num_persons == 2
    for raw in (from_parquet[1], from_tfrecord[1]):
        view = RowView(raw)
        assert view.modalities == ("rgb", "flow") and view.num_frames == 2
        with pytest.raises(KeyError, match="'keypoints'"):
            view.keypoints()
        with pytest.raises(KeyError, match="'pose'"):
            view.pose()
        assert "keypoints" not in view.decode() and view.decode()["flow"].shape == (1, H, W, 2)
    # The reader gives the same arrays from both files (its documented keys, shapes, dtypes).
    a = list(read_rows(tmp_path, fmt="parquet"))
    b = list(read_rows(tmp_path, fmt="tfrecord"))
    assert len(a) == len(b) == 2
    for x, y, raw in zip(a, b, from_parquet):
        assert list(x) == list(y)
        for key in x:
            if isinstance(x[key], np.ndarray):
                assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), key
            else:
                assert x[key] == pytest.approx(y[key]), key
        assert np.array_equal(x["rgb"], np.stack([cv2_decode(d) for d in raw["rgb"]]))
    assert list(a[0]) == CONTRACT_ORDER[:10] + [
        "meta", "rgb", "flow", "pose", "num_persons", "keypoints", "boxes", "track_ids",
        "source_size",
    ]  # fmt: skip
    assert a[0]["source_size"] == (144, 176)


def test_iter_raw_rows_selects_columns_alike_in_both_formats(tmp_path, frames):
    rows = [full_row(frames), full_row(frames, label=None, label_index=None, segment=2)]
    for fmt in ("parquet", "tfrecord"):
        path = str(tmp_path / f"s.{fmt}")
        write_rows(path, rows, arrow_schema(ALL))
        assert list(iter_raw_rows(path)) == rows  # the raw row round-trips exactly
        picked = list(iter_raw_rows(path, ["video_id", "label", "segment", "pose"]))
        assert picked == [
            {"video_id": r["video_id"], "label": r["label"], "segment": r["segment"],
             "pose": r["pose"]} for r in rows
        ]  # fmt: skip
        with pytest.raises(ValueError, match="unknown shard columns"):
            list(iter_raw_rows(path, ["depth"]))
    # Columns a file lacks (a modality the run did not write) are absent, not None.
    light = [{k: v for k, v in rows[0].items() if k not in ("pose", "flow_x", "flow_y")}]
    for fmt in ("parquet", "tfrecord"):
        path = str(tmp_path / f"light.{fmt}")
        write_rows(path, light, arrow_schema(("rgb", "keypoints")))
        assert list(iter_raw_rows(path, ["video_id", "pose"])) == [{"video_id": "cars/carphone"}]


# ----------------------------------------------------------------------------- laziness


def test_rowview_reads_and_decodes_only_what_is_asked(frames):
    row = full_row(frames)
    spy = Spy(row)
    view = RowView(spy)
    assert view["video_id"] == "cars/carphone" and spy.columns == {"video_id"}
    picked = view.rgb([3, 0, 3])
    assert spy.columns <= {"video_id", "rgb", "meta", "num_frames", "height", "width"}
    assert spy.items == {"rgb": {0, 3}}
    assert np.array_equal(picked, np.stack([cv2_decode(row["rgb"][i]) for i in (3, 0, 3)]))
    flow = view.flow([2])
    assert spy.items["flow_x"] == {2} and spy.items["flow_y"] == {2}
    assert "pose" not in spy.columns and "keypoints" not in spy.columns
    assert np.array_equal(flow, RowView(row).flow()[[2]])
    with pytest.raises(IndexError, match="out of range"):
        view.rgb([T])


def test_corrupt_flow_bytes_leave_the_other_modalities_readable(frames):
    row = full_row(frames)
    row["flow_x"] = [row["flow_x"][0], b"not an image", row["flow_x"][2]]
    view = RowView(row)
    assert np.array_equal(view.rgb(), np.stack([cv2_decode(d) for d in row["rgb"]]))
    assert view.pose().shape == (T, H, W, 3) and view.keypoints().shape == (2, T, 17, 3)
    assert view.flow([0]).shape == (1, H, W, 2)  # the good pairs still decode
    with pytest.raises(ValueError, match="decodable"):
        view.flow()
    with pytest.raises(ValueError, match="decodable"):
        view.decode()
    decoded = view.decode(("rgb", "keypoints"))
    assert "flow" not in decoded and "pose" not in decoded
    assert decoded["rgb"].shape == (T, H, W, 3) and decoded["keypoints"].shape == (2, T, 17, 3)
    # Bytes of another size are caught, not reshaped into garbage.
    row["rgb"] = [cv2_jpeg(frames[0][:, :40])] + row["rgb"][1:]
    with pytest.raises(ValueError, match="rgb frame 0 is 40x72 in a row of 88x72"):
        RowView(row).rgb()


def test_a_newer_schema_version_is_refused_before_anything_is_decoded(tmp_path, frames):
    row = full_row(frames, meta=json.dumps({"schema_version": 2, "flow_encoding": "jpeg"}))
    view = RowView(row)
    assert view["video_id"] == "cars/carphone"  # raw columns stay readable
    for read in (lambda: view.meta, view.rgb, view.flow, view.keypoints, view.decode,
                 lambda: decode_row(row)):  # fmt: skip
        with pytest.raises(ValueError, match="schema version 2 is newer"):
            read()
    write_rows(str(tmp_path / "new.parquet"), [row], arrow_schema(ALL))
    with pytest.raises(ValueError, match="newer"):
        next(read_rows(tmp_path / "new.parquet"))
    assert RowView(dict(row, meta=json.dumps({"schema_version": 1}))).meta["schema_version"] == 1
    assert RowView(dict(row, meta="")).meta == {}
    with pytest.raises(ValueError, match="JSON object"):
        RowView(dict(row, meta="[1]")).meta  # noqa: B018
    with pytest.raises(ValueError, match="unknown flow encoding 'webp'"):
        RowView(dict(row, meta=json.dumps({"flow_encoding": "webp"}))).flow()


# ----------------------------------------------------------------------------- COCO-17

#: The COCO person category as the annotation files publish it.
PUBLISHED_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
PUBLISHED_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
    [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip
#: cocoeval's kpt_oks_sigmas.
PUBLISHED_SIGMAS = [
    .26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89,
]  # fmt: skip


def test_coco_joints_skeleton_and_sigmas_are_the_published_ones():
    assert NUM_JOINTS == 17 and list(JOINT_NAMES) == PUBLISHED_KEYPOINTS
    assert [list(limb) for limb in SKELETON] == [[a - 1, b - 1] for a, b in PUBLISHED_SKELETON]
    assert np.array_equal(OKS_SIGMAS, np.array(PUBLISHED_SIGMAS) / 10.0)
    assert OKS_SIGMAS.dtype == np.float64 and not OKS_SIGMAS.flags.writeable


def test_flip_swaps_each_left_joint_with_its_right_twin():
    assert sorted(FLIP) == list(range(NUM_JOINTS))
    assert [FLIP[FLIP[j]] for j in range(NUM_JOINTS)] == list(range(NUM_JOINTS))  # involution
    for j, name in enumerate(JOINT_NAMES):
        side, _, part = name.partition("_")
        if side == "left":
            assert JOINT_NAMES[FLIP[j]] == f"right_{part}"
        elif side == "right":
            assert JOINT_NAMES[FLIP[j]] == f"left_{part}"
        else:
            assert FLIP[j] == j
    assert len(FLIP_PAIRS) == 8
    for a, b in FLIP_PAIRS:
        assert (
            JOINT_NAMES[a].startswith("left_") and JOINT_NAMES[b] == "right_" + JOINT_NAMES[a][5:]
        )
    # A flipped skeleton is the skeleton again (limbs map to limbs).
    limbs = {frozenset(limb) for limb in SKELETON}
    assert {frozenset((FLIP[a], FLIP[b])) for a, b in SKELETON} == limbs


def test_shards_import_no_beam_no_transforms_no_pipeline():
    code = (
        "import sys\n"
        "sys.modules['apache_beam'] = None  # importing it now fails\n"
        "import tristream.shards, tristream.shards.row, tristream.shards.files\n"
        "import tristream.shards.coco, tristream.shards.reader, tristream.shards.dataset\n"
        "bad = [m for m in sys.modules if m.startswith(('tristream.transforms', "
        "'tristream.pipeline', 'tristream.models', 'tristream.process'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
