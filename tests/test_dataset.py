"""ShardDataset on real shards written by the project's own Parquet and TFRecord writers.

Synthetic frames encode their coordinates and frame index in their pixels, so
crops, flips and temporal sampling can be read back from the output tensors:

- rgb  pixel (y, x) of frame t = (8x, 12y, 10t)
- pose pixel (y, x) of frame t = (12y, 8x, 250 - 10t)
- flow j (frame j -> j+1), quantised levels: qx = 8x + j % 8, qy = 12y + j // 8
- keypoint (m, t, j) at integer pixels; some joints have score 0.
PNG is used where pixels are checked exactly (decode_image reads PNG and JPEG).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tristream.shards import ShardDataset
from tristream.shards.coco import FLIP, NUM_JOINTS
from tristream.shards.codec import dequantize_flow
from tristream.shards.files import write_rows
from tristream.shards.row import encode_row
from tristream.shards.schema import MODALITIES, arrow_schema

H, W = 20, 28
CROP = (12, 16)
FORMATS = ("parquet", "tfrecord")


# ----------------------------------------------------------------------------- writing


def coords(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, y, x = np.meshgrid(np.arange(n), np.arange(H), np.arange(W), indexing="ij")
    return t, y, x


def rgb_frames(n: int) -> np.ndarray:
    t, y, x = coords(n)
    return np.stack([8 * x, 12 * y, 10 * t], -1).astype(np.uint8)


def pose_frames(n: int) -> np.ndarray:
    t, y, x = coords(n)
    return np.stack([12 * y, 8 * x, 250 - 10 * t], -1).astype(np.uint8)


def flow_fields(n: int) -> np.ndarray:
    """float32 [n-1, H, W, 2] pixels whose quantised levels are qx = 8x + j%8, qy = 12y + j//8."""
    j, y, x = coords(max(n - 1, 0))
    q = np.stack([8 * x + j % 8, 12 * y + j // 8], -1).astype(np.uint8)
    return dequantize_flow(q)


def keypoints(m: int, n: int) -> np.ndarray:
    """float32 [m, n, 17, 3] at integer pixels; score 0 where (j + p + t) % 4 == 0."""
    p, t, j = np.meshgrid(np.arange(m), np.arange(n), np.arange(NUM_JOINTS), indexing="ij")
    x = (3 * j + 5 * p + t) % W
    y = (2 * j + 3 * p + t) % H
    score = np.where((j + p + t) % 4 == 0, 0.0, 0.5 + 0.01 * j)
    kp = np.stack([x, y, score], -1).astype(np.float32)
    kp[score == 0, :2] = 0.0  # absent joints are stored as (0, 0, 0)
    return kp


def make_row(
    video_id: str,
    n: int,
    segment: int = 0,
    label_index: int | None = 3,
    modalities: tuple[str, ...] = MODALITIES,
    image_fmt: str = "png",
    flow_encoding: str = "png",
    flow: np.ndarray | None = None,
    persons: int = 2,
) -> dict:
    """One shard row, encoded by the shard row codec as the pipeline encodes it."""
    kp = keypoints(persons, n) if "keypoints" in modalities else None
    return encode_row(
        video_id=video_id,
        source=f"/videos/{video_id}.mp4",
        label=None if label_index is None else f"class{label_index}",
        label_index=label_index,
        segment=segment,
        start_frame=segment * 100,
        fps=25.0,
        frames=rgb_frames(n),
        flow=(flow_fields(n) if flow is None else flow) if "flow" in modalities else None,
        pose_frames=pose_frames(n) if "pose" in modalities else None,
        keypoints=kp,
        boxes=None if kp is None else np.zeros((persons, n, 5), np.float32),
        track_ids=None if kp is None else np.arange(persons),
        keypoints3d=None
        if kp is None or "keypoints3d" not in modalities
        else np.linspace(-1, 1, kp[..., 0].size * 3, dtype=np.float32).reshape(*kp.shape[:3], 3),
        meta=json.dumps({"schema_version": 1, "flow_encoding": flow_encoding}),
        flow_encoding=flow_encoding,
        image_format=image_fmt,
    )


def write_shards(
    folder: Path, fmt: str, files: list[list[dict]], modalities: tuple[str, ...] = MODALITIES
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(files):
        write_rows(str(folder / f"train-{i:05d}-of-{len(files):05d}.{fmt}"), rows,
                   arrow_schema(modalities))  # fmt: skip
    return folder


def to_levels(t: torch.Tensor) -> np.ndarray:
    """[-1, 1] floats back to the uint8 levels they came from."""
    return np.rint((t.numpy().astype(np.float64) + 1.0) * 127.5).astype(np.int64)


# ----------------------------------------------------------------------------- fixtures

LIGHT = ("rgb", "keypoints")


@pytest.fixture(scope="module")
def many_rows(tmp_path_factory) -> dict[str, Path]:
    """15 rows (videos v0..v4 x 3 segments) over 3 files, both formats, rgb + keypoints."""
    rows = [
        make_row(f"v{v}", n=4 + (v + s) % 3, segment=s, modalities=LIGHT)
        for v in range(5)
        for s in range(3)
    ]
    files = [rows[0:5], rows[5:10], rows[10:15]]
    root = tmp_path_factory.mktemp("many")
    return {fmt: write_shards(root / fmt, fmt, files, LIGHT) for fmt in FORMATS}


@pytest.fixture(scope="module")
def pattern_rows(tmp_path_factory) -> Path:
    """6 rows of 12 PNG frames with all modalities (Parquet)."""
    rows = [make_row(f"p{i}", n=12, label_index=i) for i in range(6)]
    return write_shards(tmp_path_factory.mktemp("pattern"), "parquet", [rows])


ALL_ROWS = Counter((f"v{v}", s) for v in range(5) for s in range(3))


def ids(samples) -> list[tuple[str, int]]:
    return [(s["video_id"], int(s["segment"])) for s in samples]


def light(path: Path, **kw) -> ShardDataset:
    kw = {"modalities": LIGHT, "clip_len": 4, "crop": CROP, "seed": 7, **kw}
    return ShardDataset(path, **kw)


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("frame_index", ["auto", "off"])  # clip frames only / whole rows
@pytest.mark.parametrize("batch_size", [None, 3])  # samples, or batches made in the dataset
def test_exactly_once_over_two_ranks_and_two_workers(many_rows, fmt, frame_index, batch_size):
    seen: list[tuple[str, int]] = []
    per_rank = []
    for rank in range(2):
        ds = light(many_rows[fmt], rank=rank, world_size=2, frame_index=frame_index,
                   batch_size=batch_size)  # fmt: skip
        assert ds.source.indexed == [frame_index == "auto"] * 3
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        if batch_size is None:
            got = ids(loader)
        else:
            got = [(v, int(s)) for b in loader for v, s in zip(b["video_id"], b["segment"])]
        assert len(got) == len(ds)
        per_rank.append(set(got))
        seen += got
    assert Counter(seen) == ALL_ROWS  # every row once, none twice
    assert not per_rank[0] & per_rank[1]
    assert {len(r) for r in per_rank} == {7, 8}


def test_equal_counts_per_rank_with_drop_last_and_pad(many_rows):
    path = many_rows["parquet"]
    for world in (2, 4):
        dropped = [ids(light(path, rank=r, world_size=world, drop_last=True)) for r in range(world)]
        assert {len(d) for d in dropped} == {15 // world}
        flat = [i for d in dropped for i in d]
        assert len(set(flat)) == len(flat) == (15 // world) * world  # no repeats

        samples = [list(light(path, rank=r, world_size=world, pad=True)) for r in range(world)]
        per = -(-15 // world)
        assert {len(s) for s in samples} == {per}
        flat_s = [s for rank in samples for s in rank]
        assert Counter(ids(s for s in flat_s if not s["padded"])) == ALL_ROWS
        assert sum(s["padded"] for s in flat_s) == per * world - 15
        assert len(light(path, rank=0, world_size=world, pad=True)) == per


def test_sampling_all_pads_clip_counts_across_ranks(many_rows):
    # rows have 4..6 frames; clip_len 2 -> 2 or 3 clips per row: 38 clips in all
    kw = {"sampling": "all", "clip_len": 2, "train": False}
    ds = light(many_rows["parquet"], **kw)
    assert ds.num_units == sum(-(-(4 + (v + s) % 3) // 2) for v in range(5) for s in range(3))
    ranks = [
        list(light(many_rows["parquet"], rank=r, world_size=3, pad=True, **kw)) for r in range(3)
    ]
    assert len({len(r) for r in ranks}) == 1
    clips = Counter(
        (s["video_id"], s["segment"], s["clip_index"]) for r in ranks for s in r if not s["padded"]
    )
    assert sum(clips.values()) == len(clips) == ds.num_units


def test_rank_and_world_size_come_from_torch_distributed(many_rows, monkeypatch):
    import pickle

    import torch.distributed as dist

    explicit = ids(light(many_rows["parquet"], rank=1, world_size=2))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    ds = light(many_rows["parquet"])
    assert ids(ds) == explicit
    assert len(ds) == len(explicit)
    # a worker started by spawn has no process group: the pickled copy keeps the rank
    copy = pickle.loads(pickle.dumps(ds))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert ids(copy) == explicit


def test_seed_fixes_order_and_augmentation_and_set_epoch_changes_them(many_rows):
    path = many_rows["parquet"]

    def run(ds):
        return [(s["video_id"], s["segment"], s["flipped"], s["rgb"]) for s in ds]

    a, b = run(light(path, seed=5)), run(light(path, seed=5))
    assert [x[:3] for x in a] == [x[:3] for x in b]
    assert all(torch.equal(x[3], y[3]) for x, y in zip(a, b))
    # the augmentation of a row does not depend on how the work is split
    loader = DataLoader(light(path, seed=5), batch_size=None, num_workers=2)
    by_row = {x[:2]: x for x in a}
    for s in loader:
        assert torch.equal(s["rgb"], by_row[s["video_id"], s["segment"]][3])

    later = light(path, seed=5)
    later.set_epoch(1)
    c = run(later)
    assert [x[:2] for x in c] != [x[:2] for x in a]  # new row order
    by_row_c = {x[:2]: x for x in c}
    assert any(not torch.equal(by_row_c[k][3], v[3]) for k, v in by_row.items())  # new crops
    assert [x[:2] for x in run(light(path, seed=6))] != [x[:2] for x in a]
    assert ids(light(path, shuffle=False)) == sorted(ALL_ROWS, key=lambda r: (r[0], r[1]))


def test_shuffle_buffer_mixes_order_deterministically(many_rows):
    path = many_rows["parquet"]
    base = ids(light(path, modalities=("keypoints",)))
    buffered = ids(light(path, modalities=("keypoints",), shuffle_buffer=4))
    assert Counter(buffered) == Counter(base) == ALL_ROWS
    assert buffered != base
    assert buffered == ids(light(path, modalities=("keypoints",), shuffle_buffer=4))


# ----------------------------------------------------------------------------- augmentation


def read_back(sample: dict) -> dict[str, np.ndarray]:
    """Per-modality (x, y, t) source coordinates of every output pixel, [T, h, w] each."""
    out = {}
    r, g, b = to_levels(sample["rgb"])
    out["rgb"] = np.stack([r // 8, g // 12, b // 10])
    r, g, b = to_levels(sample["pose"])
    out["pose"] = np.stack([g // 8, r // 12, (250 - b) // 10])
    qx, qy = to_levels(sample["flow"])
    if sample["flipped"]:
        qx = 255 - qx  # flow x changed sign under the flip
    out["flow"] = np.stack([qx // 8, qy // 12, (qy % 12) * 8 + qx % 8])  # t = flow index
    return out


def test_one_crop_and_flip_for_every_modality(pattern_rows):
    ds = ShardDataset(pattern_rows, clip_len=5, frame_stride=2, crop=CROP, seed=1, max_persons=3)
    offsets, flips = set(), Counter()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for s in ds:
            assert s["rgb"].shape == s["pose"].shape == (3, 5, *CROP)
            assert s["flow"].shape == (2, 5, *CROP)
            assert s["rgb"].dtype == torch.float32
            assert s["rgb"].min() >= -1 and s["rgb"].max() <= 1
            back = read_back(s)
            x, y, t = back["rgb"]
            idx = s["frame_indices"].numpy()
            assert (t == idx[:, None, None]).all()
            assert np.array_equal(np.diff(idx), [2, 2, 2, 2])
            # a crop window: rows and columns are consecutive source pixels
            assert (np.diff(y, axis=1) == 1).all()
            step = -1 if s["flipped"] else 1
            assert (np.diff(x, axis=2) == step).all()
            x0, y0 = int(x.min()), int(y.min())
            assert 0 <= x0 <= W - CROP[1] and 0 <= y0 <= H - CROP[0]
            offsets.add((x0, y0))
            flips[s["flipped"]] += 1
            # pose and flow hold the very same window and flip
            assert np.array_equal(back["pose"], back["rgb"])
            fx, fy, ft = back["flow"]
            assert np.array_equal(fx, x) and np.array_equal(fy, y)
            assert (ft == np.minimum(idx, 12 - 2)[:, None, None]).all()  # flow t: t -> t+1
            check_keypoints(s, x, y, idx)
    assert flips[True] >= 3 and flips[False] >= 3
    assert len(offsets) >= 5


def check_keypoints(s: dict, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> None:
    """Visible joints land on the pixel that shows the same joint of the source frame."""
    kp = s["keypoints"].numpy()
    assert kp.shape == (3, 5, NUM_JOINTS, 3) and s["num_persons"] == 2
    assert (kp[2] == 0).all()  # padding person
    src = keypoints(2, 12)[:, idx]
    joints = list(FLIP) if s["flipped"] else list(range(NUM_JOINTS))
    src = src[:, :, joints]  # output joint j shows source joint FLIP[j] when flipped
    ch, cw = CROP
    inside = 0
    for p, k, j in zip(*np.nonzero(kp[:2, ..., 2] >= 0)):
        kx, ky, score = kp[p, k, j]
        assert score == src[p, k, j, 2]
        if score == 0:
            assert kx == ky == 0
            continue
        if 0 <= kx < cw and 0 <= ky < ch:
            inside += 1
            px, py = int(kx), int(ky)
            assert (kx, ky) == (px, py)
            assert (x[k, py, px], y[k, py, px]) == tuple(src[p, k, j, :2])
    assert inside > 0


def test_flow_x_changes_sign_under_flip(tmp_path):
    n = 4
    flow = np.zeros((n - 1, H, W, 2), np.float32)
    flow[..., 0], flow[..., 1] = 5.0, -3.0
    flow[:, :, W // 2 :, 0] = 30.0  # beyond the I3D bound: clipped to 1
    rows = [make_row(f"f{i}", n, flow_encoding="f16", flow=flow) for i in range(8)]
    path = write_shards(tmp_path, "parquet", [rows])
    ds = ShardDataset(path, modalities=("flow",), clip_len=3, crop=None, seed=0)
    flips = Counter()
    for s in ds:
        fx, fy = s["flow"].numpy()
        sign = -1.0 if s["flipped"] else 1.0
        # without the flip the right half moves at 30 px; mirrored it is the left half
        fast = fx[:, :, : W // 2] if s["flipped"] else fx[:, :, W // 2 :]
        slow = fx[:, :, W // 2 :] if s["flipped"] else fx[:, :, : W // 2]
        assert np.allclose(slow, sign * 0.25) and np.allclose(fast, sign * 1.0)
        assert np.allclose(fy, -0.15)
        flips[s["flipped"]] += 1
    assert flips[True] and flips[False]


def test_eval_is_centre_crop_without_flip(pattern_rows):
    ds = ShardDataset(pattern_rows, clip_len=4, crop=CROP, train=False, modalities=("rgb",))
    assert ds.sampling == "center"
    for s in ds:
        x, y, t = read_back_rgb(s)
        assert not s["flipped"]
        assert (x[:, :, 0] == (W - CROP[1]) // 2).all()
        assert (y[:, 0, :] == (H - CROP[0]) // 2).all()
        assert (np.diff(x, axis=2) == 1).all()
        assert s["frame_indices"].tolist() == [4, 5, 6, 7]


def read_back_rgb(s: dict) -> np.ndarray:
    r, g, b = to_levels(s["rgb"])
    return np.stack([r // 8, g // 12, b // 10])


@pytest.mark.parametrize("flow_encoding", ["png", "f16"])
def test_uint8_levels_and_float16_match_float32(tmp_path, flow_encoding):
    rows = [make_row(f"u{i}", 6, flow_encoding=flow_encoding) for i in range(6)]
    path = write_shards(tmp_path, "parquet", [rows])
    kw = {"clip_len": 8, "crop": CROP, "seed": 1, "modalities": ("rgb", "flow", "pose")}
    ref = list(ShardDataset(path, **kw))
    assert {s["flipped"] for s in ref} == {True, False}
    levels = list(ShardDataset(path, dtype=torch.uint8, **kw))
    half = list(ShardDataset(path, dtype=torch.float16, **kw))
    for r, q, f in zip(ref, levels, half):
        for m in ("rgb", "flow", "pose"):
            assert q[m].dtype == torch.uint8 and f[m].dtype == torch.float16
            # f16 flow is quantised to levels here: within half a level
            tol = 0.5 / 127.5 if (m, flow_encoding) == ("flow", "f16") else 1e-6
            assert torch.allclose(q[m].double() / 127.5 - 1, r[m].double(), atol=tol), m
            assert torch.allclose(f[m].float(), r[m], atol=1e-3), m


# ----------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def short_rows(tmp_path_factory) -> Path:
    rows = [make_row("short", 3), make_row("ten", 10)]
    return write_shards(tmp_path_factory.mktemp("short"), "parquet", [rows])


def test_short_rows_are_padded_by_looping(short_rows):
    ds = ShardDataset(short_rows, clip_len=8, crop=None, train=False, shuffle=False)
    short = next(s for s in ds if s["video_id"] == "short")
    assert short["frame_indices"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    x, y, t = read_back(short)["rgb"]
    assert t[:, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert read_back(short)["pose"][2, :, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    # frame 2 is the row's last: it repeats the last flow (1 -> 2)
    assert read_back(short)["flow"][2, :, 0, 0].tolist() == [0, 1, 1, 0, 1, 1, 0, 1]
    loop = [0, 1, 2, 0, 1, 2, 0, 1]
    assert np.array_equal(short["keypoints"][:2].numpy(), keypoints(2, 3)[:, loop])
    zero = ShardDataset(short_rows, clip_len=8, crop=None, train=False, last_flow="zero")
    short = next(s for s in zero if s["video_id"] == "short")
    assert (short["flow"][:, 2] == 0).all() and (short["flow"][:, 5] == 0).all()
    assert (short["flow"][:, 1] != 0).any()


def test_sampling_all_tiles_the_row_and_loops_the_tail(short_rows):
    ds = ShardDataset(short_rows, clip_len=4, sampling="all", crop=None, train=False, shuffle=False)
    clips = [(s["video_id"], s["clip_index"], s["frame_indices"].tolist()) for s in ds]
    assert clips == [
        ("short", 0, [0, 1, 2, 0]),
        ("ten", 0, [0, 1, 2, 3]),
        ("ten", 1, [4, 5, 6, 7]),
        ("ten", 2, [8, 9, 0, 1]),
    ]
    assert len(ds) == 4
    t = [read_back_rgb(s)[2, :, 0, 0].tolist() for s in ds]
    assert t[-1] == [8, 9, 0, 1]


def test_uniform_sampling_spreads_the_clip_over_the_row(short_rows):
    ds = ShardDataset(short_rows, clip_len=5, sampling="uniform", crop=None, train=False)
    ten = next(s for s in ds if s["video_id"] == "ten")
    assert ten["frame_indices"].tolist() == [1, 3, 5, 7, 9]
    train = ShardDataset(short_rows, clip_len=5, sampling="uniform", crop=None, seed=2)
    seen = set()
    for epoch in range(4):
        train.set_epoch(epoch)
        idx = next(s for s in train if s["video_id"] == "ten")["frame_indices"].numpy()
        assert ((idx // 2) == np.arange(5)).all()  # one frame from each fifth
        seen.add(tuple(idx))
    assert len(seen) > 1


def test_random_sampling_stays_inside_the_row(short_rows):
    ds = ShardDataset(short_rows, clip_len=3, frame_stride=3, crop=None, seed=4)
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        idx = next(s for s in ds if s["video_id"] == "ten")["frame_indices"].numpy()
        assert (np.diff(idx) == 3).all() and idx[0] >= 0 and idx[-1] <= 9
        starts.add(int(idx[0]))
    assert len(starts) > 1


# ----------------------------------------------------------------------------- formats


def test_parquet_and_tfrecord_give_identical_tensors(tmp_path):
    rows = [
        make_row(f"j{i}", n=5 + i, segment=i % 2, image_fmt="jpeg", flow_encoding="jpeg")
        for i in range(4)
    ]
    rows[1]["label_index"], rows[1]["label"] = None, None
    files = [rows[:2], rows[2:]]
    kw = {"clip_len": 6, "crop": CROP, "seed": 3, "max_persons": 2}
    pq_ds = ShardDataset(write_shards(tmp_path / "pq", "parquet", files), **kw)
    tf_ds = ShardDataset(write_shards(tmp_path / "tf", "tfrecord", files), **kw)
    assert [f.format for f in pq_ds.files] == ["parquet"] * 2
    assert [f.format for f in tf_ds.files] == ["tfrecord"] * 2
    a, b = list(pq_ds), list(tf_ds)
    assert len(a) == len(b) == 4
    assert -1 in [s["label_index"] for s in a]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        assert set(pq_ds.modalities) <= x.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key
    # a list of files reads like the folder
    files_list = [f.path for f in tf_ds.files]
    assert ids(ShardDataset(files_list, **kw)) == ids(b)


# ----------------------------------------------------------------------------- modalities


def test_asking_for_a_modality_the_shards_lack_is_an_error(many_rows):
    """#20: ShardDataset(modalities=("rgb", "flow")) on RGB-only shards returned no flow and
    no error. Asked for explicitly, a missing modality is an error naming it; left out, the
    default modalities are those the shards hold."""
    for fmt in FORMATS:
        with pytest.raises(ValueError, match=r"modalities \['flow'\] are in none of the shards"):
            light(many_rows[fmt], modalities=("rgb", "flow"))
        with pytest.raises(ValueError, match="none of the requested modalities"):
            light(many_rows[fmt], modalities=("flow", "pose"))
    ds = ShardDataset(many_rows["tfrecord"], clip_len=4, crop=CROP, seed=7)
    assert ds.available == ("rgb", "keypoints")  # the default ones the shards hold
    s = next(iter(ds))
    assert "rgb" in s and "keypoints" in s and "flow" not in s and "pose" not in s


def test_batches_stack_in_a_dataloader(pattern_rows):
    ds = ShardDataset(pattern_rows, clip_len=4, crop=CROP, seed=0, max_persons=5)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["rgb"].shape == (3, 3, 4, *CROP)
    assert batch["flow"].shape == (3, 2, 4, *CROP)
    assert batch["keypoints"].shape == (3, 5, 4, NUM_JOINTS, 3)
    assert batch["label_index"].dtype == torch.int64 and len(batch["video_id"]) == 3


def test_invalid_arguments_raise(pattern_rows, tmp_path):
    with pytest.raises(ValueError):
        ShardDataset(pattern_rows, modalities=("depth",))
    with pytest.raises(ValueError):
        ShardDataset(pattern_rows, pad=True, drop_last=True)
    with pytest.raises(ValueError):
        ShardDataset(pattern_rows, sampling="dense")
    with pytest.raises(ValueError, match="no .parquet"):
        ShardDataset(tmp_path)
    with pytest.raises(ValueError, match="larger than"):
        next(iter(ShardDataset(pattern_rows, crop=64)))


def test_reader_needs_no_beam_ffmpeg_or_pipeline():
    code = (
        "import sys\n"
        "for m in ('apache_beam', 'ffmpeg', 'tristream.pipeline', 'tristream.transforms'):\n"
        "    sys.modules[m] = None  # importing any of them now fails\n"
        "from tristream.shards import ShardDataset\n"
        "import tristream.shards.dataset\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_read_rows_needs_no_torch_tensorflow_or_tfrecord_package():
    code = (
        "import sys\n"
        "for m in ('torch', 'tensorflow', 'tfrecord', 'apache_beam', 'ffmpeg'):\n"
        "    sys.modules[m] = None  # importing any of them now fails\n"
        "from tristream.shards import read_rows\n"
        "from tristream.shards.tfrecord import row_to_example, example_to_row\n"
        "row = {'video_id': 'v', 'num_frames': 2, 'keypoints': [1.5, 2.0], 'label': None}\n"
        "back = example_to_row(row_to_example(row))\n"
        "assert back['video_id'] == 'v' and back['keypoints'] == [1.5, 2.0], back\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
