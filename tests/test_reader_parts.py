"""The reader's parts one by one, each against an oracle that does not use the part itself.

- ClipSampler: frame indices worked out by hand on small rows.
- UnitIndex / Partitioner: the exactly-once property over ranks x workers, by counting.
- CropBox / flips: small hand-made arrays read pixel by pixel, keypoint coordinates
  worked out by hand, and the COCO keypoint order written out below (not the module's table).
- normalisation: the formulas ``v / 127.5 - 1`` and ``clip(px / 20, -1, 1)`` in float64.
- the user ``transform`` hook of ShardDataset.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.test_dataset import make_row, write_shards
from tristream.shards import ShardDataset
from tristream.shards.clip_decode import (
    decode_flow,
    decode_images,
    distinct_frames,
    flow_sources,
)
from tristream.shards.clip_transforms import (
    CropBox,
    CropFlip,
    crop_flip,
    crop_flip_into,
    flow_to_tensor,
    hflip_image,
    hflip_keypoints,
    hflip_keypoints3d,
    images_to_tensor,
    negate_flow_x,
    pad_persons,
    zero_absent,
)
from tristream.shards.partition import (
    Partitioner,
    UnitIndex,
    resolve_rank,
    shuffle_buffer,
)
from tristream.shards.row import encode_row
from tristream.shards.row_source import RowSource
from tristream.shards.sampling import ClipSampler, sample_rng
from tristream.shards.schema import arrow_schema

#: The COCO person keypoint order, as the COCO annotation files list it.
COCO_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip


def mirrored(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


class StubRng:
    """Hands out prescribed draws and records the calls (stands in for numpy's Generator)."""

    def __init__(self, integers=(), floats=()):
        self._integers = list(integers)
        self._floats = list(floats)
        self.calls: list[tuple] = []

    def integers(self, low, high=None):
        self.calls.append(("integers", low, high))
        return self._integers.pop(0)

    def random(self, size=None):
        self.calls.append(("random", size))
        if size is None:
            return self._floats.pop(0)
        out, self._floats = np.array(self._floats[:size]), self._floats[size:]
        return out


# ----------------------------------------------------------------------------- sampler


@pytest.mark.parametrize(
    ("n", "clip_len", "stride", "expected"),
    [
        (10, 3, 2, [2, 4, 6]),  # span 5, start (10 - 5) // 2 = 2
        (12, 4, 1, [4, 5, 6, 7]),  # span 4, start 4
        (11, 3, 3, [2, 5, 8]),  # span 7, start (11 - 7) // 2 = 2
        (7, 7, 1, [0, 1, 2, 3, 4, 5, 6]),  # the whole row
        (3, 8, 1, [0, 1, 2, 0, 1, 2, 0, 1]),  # short row: loops
        (5, 3, 3, [0, 3, 1]),  # span 7 > 5: start 0, 6 % 5 = 1
        (1, 3, 1, [0, 0, 0]),
    ],
)
def test_center_sampling_by_hand(n, clip_len, stride, expected):
    sampler = ClipSampler(clip_len, stride, "center", train=False)
    got = sampler.indices(n)
    assert got.dtype == np.int64 and got.tolist() == expected


def test_random_sampling_draws_the_start_among_the_fitting_ones():
    sampler = ClipSampler(3, 3, "random")  # span 7
    rng = StubRng(integers=[2])
    assert sampler.indices(10, rng=rng).tolist() == [2, 5, 8]
    assert rng.calls == [("integers", 0, 4)]  # starts 0..3 fit a 10-frame row
    rng = StubRng()
    assert sampler.indices(5, rng=rng).tolist() == [0, 3, 1]  # too short: no draw, loops
    assert rng.calls == []
    # a real generator: inside the row, and fixed by (seed, epoch, unit)
    starts = set()
    for unit in range(40):
        idx = sampler.indices(10, rng=sample_rng(3, 0, unit))
        assert idx[0] in range(4) and np.diff(idx).tolist() == [3, 3]
        assert np.array_equal(idx, sampler.indices(10, rng=sample_rng(3, 0, unit)))
        starts.add(int(idx[0]))
    assert starts == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="random generator"):
        sampler.indices(10)


def test_uniform_sampling_by_hand():
    ev = ClipSampler(5, 4, "uniform", train=False)  # the stride is ignored
    assert ev.indices(10).tolist() == [1, 3, 5, 7, 9]  # floor((t + 0.5) * 2)
    assert ClipSampler(3, 1, "uniform", train=False).indices(7).tolist() == [1, 3, 5]
    # floor((t + .5) * 7 / 3) = floor(1.17), floor(3.5), floor(5.83)
    assert ev.indices(3).tolist() == [0, 1, 2, 0, 1]  # shorter than the clip: loops
    train = ClipSampler(5, 1, "uniform", train=True)
    rng = StubRng(floats=[0.0, 0.99, 0.5, 0.25, 0.999])
    # floor((t + u) * 10 / 5): 0, 3.98, 5, 6.5, 9.998
    assert train.indices(10, rng=rng).tolist() == [0, 3, 5, 6, 9]
    assert rng.calls == [("random", 5)]


def test_all_sampling_tiles_the_row_by_hand():
    sampler = ClipSampler(4, 1, "all", train=False)
    assert sampler.clips_per_row(np.array([10, 3, 4, 5, 8])).tolist() == [3, 1, 1, 2, 2]
    assert [sampler.indices(10, c).tolist() for c in range(3)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 0, 1],  # the tail loops
    ]
    strided = ClipSampler(2, 2, "all", train=False)  # clips start every 4 frames
    assert strided.clips_per_row(np.array([1, 4, 5, 8, 9])).tolist() == [1, 1, 2, 2, 3]
    assert [strided.indices(10, c).tolist() for c in range(3)] == [[0, 2], [4, 6], [8, 0]]
    assert ClipSampler(4, 1, "center").clips_per_row(np.array([10, 30])).tolist() == [1, 1]


def test_sampler_rejects_bad_arguments():
    for kw in ({"clip_len": 0}, {"clip_len": 2, "frame_stride": 0}, {"clip_len": 2, "mode": "x"}):
        with pytest.raises(ValueError):
            ClipSampler(**kw)
    with pytest.raises(ValueError):
        ClipSampler(2, mode="center").indices(0)


# ----------------------------------------------------------------------------- partition


def test_unit_index_by_hand():
    units = UnitIndex(np.array([1, 3, 2]))
    assert units.num_units == 6 and units.num_rows == 3
    assert [units.locate(u) for u in range(6)] == [
        (0, 0), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1),
    ]  # fmt: skip
    assert units.epoch_order(False, 0, 0).tolist() == [0, 1, 2, 3, 4, 5]
    for epoch in range(5):
        order = units.epoch_order(True, 1, epoch).tolist()
        assert sorted(order) == list(range(6))
        rows = [units.locate(u) for u in order]
        # the clips of a row stay together and in order
        for row, count in enumerate([1, 3, 2]):
            at = [i for i, (r, _) in enumerate(rows) if r == row]
            assert at == list(range(at[0], at[0] + count))
            assert [rows[i][1] for i in at] == list(range(count))
    with pytest.raises(ValueError):
        UnitIndex(np.array([1, 0]))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_unit_exactly_once_over_ranks_and_workers(world, workers):
    rng = np.random.default_rng(world * 10 + workers)
    for n_rows, shuffle, epoch in itertools.product((0, 1, 5, 13), (False, True), (0, 1)):
        units = UnitIndex(rng.integers(1, 4, n_rows))
        order = units.epoch_order(shuffle, 7, epoch)
        total = units.num_units

        plain = Partitioner()
        parts = {}
        for rank in range(world):
            got = [plain.assign(order, rank, world, w, workers) for w in range(workers)]
            assert sum(len(u) for u, _ in got) == plain.rank_length(total, rank, world)
            for w, (u, p) in enumerate(got):
                assert not p.any()
                parts[rank, w] = set(u.tolist())
        seen = Counter(u for part in parts.values() for u in part)
        assert seen == Counter(range(total))  # each unit exactly once
        for a, b in itertools.combinations(parts.values(), 2):
            assert not a & b  # disjoint
        lengths = [plain.rank_length(total, r, world) for r in range(world)]
        assert max(lengths) - min(lengths) <= 1

        per = -(-total // world)
        pad = Partitioner(pad=True)
        flat, flags = [], []
        for rank in range(world):
            got = [pad.assign(order, rank, world, w, workers) for w in range(workers)]
            assert sum(len(u) for u, _ in got) == per == pad.rank_length(total, rank, world)
            for u, p in got:
                flat += u.tolist()
                flags += p.tolist()
        assert Counter(u for u, p in zip(flat, flags) if not p) == Counter(range(total))
        assert sum(flags) == per * world - total

        drop = Partitioner(drop_last=True)
        kept = []
        for rank in range(world):
            got = [drop.assign(order, rank, world, w, workers) for w in range(workers)]
            assert sum(len(u) for u, _ in got) == total // world
            kept += [x for u, _ in got for x in u.tolist()]
        assert len(set(kept)) == len(kept) == (total // world) * world


def test_rank_resolution_and_bad_arguments():
    assert resolve_rank(1, 3) == (1, 3)
    assert resolve_rank(None, None) == (0, 1)
    assert resolve_rank(None, None, frozen=(2, 4)) == (2, 4)
    with pytest.raises(ValueError):
        resolve_rank(3, 3)
    with pytest.raises(ValueError):
        Partitioner(drop_last=True, pad=True)
    with pytest.raises(ValueError):
        Partitioner().assign(np.arange(4), 0, 1, worker=2, num_workers=2)


def test_shuffle_buffer_yields_every_item_once_in_a_seeded_order():
    items = list(range(20))
    a = list(shuffle_buffer(iter(items), 4, np.random.default_rng(1)))
    assert sorted(a) == items and a != items
    assert a == list(shuffle_buffer(iter(items), 4, np.random.default_rng(1)))
    assert sorted(shuffle_buffer([1, 2], 5, np.random.default_rng(0))) == [1, 2]


# ----------------------------------------------------------------------------- crop and flip


def test_crop_and_flip_read_pixel_by_pixel():
    image = np.arange(5 * 6 * 2).reshape(5, 6, 2)
    box = CropBox(top=1, left=2, height=3, width=4)
    cropped, flipped = crop_flip(image, box, False), crop_flip(image, box, True)
    assert cropped.shape == flipped.shape == (3, 4, 2)
    for i, j in itertools.product(range(3), range(4)):
        assert cropped[i, j].tolist() == image[1 + i, 2 + j].tolist()
        assert flipped[i, j].tolist() == image[1 + i, 2 + 3 - j].tolist()
    assert np.array_equal(box.crop(image), image[1:4, 2:6])
    assert np.array_equal(hflip_image(image)[:, 0], image[:, 5])
    with pytest.raises(ValueError):
        CropBox(-1, 0, 2, 2)


@pytest.mark.parametrize("flip", [False, True])
def test_crop_flip_into_copies_the_window_channels_first(flip):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    box = CropBox(top=2, left=3, height=5, width=6)
    clip = np.zeros((3, 2, 5, 6), np.uint8)
    crop_flip_into(image, box, flip, clip[:, 1])  # planes of a [C, T, h, w] clip
    assert not clip[:, 0].any()
    for c, i, j in itertools.product(range(3), range(5), range(6)):
        col = 3 + (5 - j if flip else j)
        assert clip[c, 1, i, j] == image[2 + i, col, c]
    # planes that are not contiguous, other dtypes and gray frames: the same values
    wide = np.zeros((3, 5, 12), np.uint8)
    crop_flip_into(image, box, flip, wide[:, :, ::2])
    assert np.array_equal(wide[:, :, ::2], clip[:, 1])
    floats = np.zeros((3, 5, 6), np.float32)
    crop_flip_into(image.astype(np.float32), box, flip, floats)
    assert np.array_equal(floats, clip[:, 1])
    plane = np.zeros((5, 6), np.uint8)
    crop_flip_into(image[..., 0], box, flip, plane)
    assert np.array_equal(plane, clip[0, 1])


def test_crop_box_positions():
    assert CropBox.centred((20, 28), (12, 16)) == CropBox(4, 6, 12, 16)
    assert CropBox.centred((5, 5), (2, 2)) == CropBox(1, 1, 2, 2)
    assert CropBox.full(20, 28) == CropBox(0, 0, 20, 28)
    rng = StubRng(integers=[3, 7])
    assert CropBox.random((20, 28), (12, 16), rng) == CropBox(3, 7, 12, 16)
    assert rng.calls == [("integers", 0, 9), ("integers", 0, 13)]  # tops 0..8, lefts 0..12
    with pytest.raises(ValueError, match="larger than"):
        CropBox.centred((10, 10), (11, 4))


def test_crop_flip_policy():
    assert CropFlip((4, 4), train=False).draw(10, 12) == (CropBox(3, 4, 4, 4), False)
    assert CropFlip(None, train=False).draw(10, 12) == (CropBox(0, 0, 10, 12), False)
    rng = StubRng(integers=[1, 2], floats=[0.3])
    assert CropFlip((4, 4), True, hflip=0.5).draw(10, 12, rng) == (CropBox(1, 2, 4, 4), True)
    rng = StubRng(integers=[1, 2], floats=[0.7])
    assert CropFlip((4, 4), True, hflip=0.5).draw(10, 12, rng)[1] is False
    for bad in ({"size": (0, 3)}, {"size": (3,)}, {"hflip": 1.5}):
        with pytest.raises(ValueError):
            CropFlip(**bad)


def test_keypoints_in_the_crop_by_hand():
    kp = np.zeros((1, 1, 17, 3), np.float32)
    kp[0, 0, 0] = (3, 2, 0.9)  # nose at x=3, y=2
    kp[0, 0, 5] = (5.5, 4, 0.8)  # left shoulder
    box = CropBox(top=1, left=2, height=3, width=4)
    moved = box.apply_to_keypoints(kp)
    assert moved[0, 0, 0].tolist() == [1, 1, pytest.approx(0.9)]
    assert moved[0, 0, 5].tolist() == [3.5, 3, pytest.approx(0.8)]
    assert kp[0, 0, 0, 0] == 3  # the input is left alone
    flipped = hflip_keypoints(moved, box.width)
    assert flipped[0, 0, 0, :2].tolist() == [2, 1]  # x -> 4 - 1 - 1
    # the left shoulder's point is now the right shoulder's (index 6)
    assert flipped[0, 0, 6, :2].tolist() == [-0.5, 3]  # x -> 3 - 3.5
    assert flipped[0, 0, 6, 2] == pytest.approx(0.8) and flipped[0, 0, 5, 2] == 0


def test_flip_swaps_joints_as_the_coco_names_say():
    kp = np.zeros((2, 3, 17, 3), np.float32)
    kp[..., 0] = np.arange(17) * 1.0  # x = joint number
    kp[..., 1] = 100 + np.arange(17)
    kp[..., 2] = 1
    out = hflip_keypoints(kp, width=40)
    for j, name in enumerate(COCO_KEYPOINTS):
        src = COCO_KEYPOINTS.index(mirrored(name))
        assert (out[..., j, 0] == 39 - src).all(), name
        assert (out[..., j, 1] == 100 + src).all(), name
    k3 = np.stack([np.arange(17.0), np.arange(17.0) + 50, -np.arange(17.0)], -1)[None, None]
    out3 = hflip_keypoints3d(k3)
    for j, name in enumerate(COCO_KEYPOINTS):
        src = COCO_KEYPOINTS.index(mirrored(name))
        assert out3[0, 0, j].tolist() == [-src, src + 50, -src], name


def test_keypoints_land_on_the_pixel_that_shows_them():
    """A point drawn at its pixel of the frame is at its keypoint in the cropped, flipped frame."""
    h, w = 9, 11
    box = CropBox(2, 3, 5, 6)
    rng = np.random.default_rng(0)
    for flip in (False, True):
        for _ in range(20):
            x, y = int(rng.integers(3, 9)), int(rng.integers(2, 7))  # inside the box
            frame = np.zeros((h, w), np.uint8)
            frame[y, x] = 255
            kp = np.zeros((1, 1, 17, 3), np.float32)
            kp[0, 0, 0] = (x, y, 1)
            out = box.apply_to_keypoints(kp)
            if flip:
                out = hflip_keypoints(out, box.width)
            window = crop_flip(frame, box, flip)
            ky, kx = np.argwhere(window == 255)[0]
            assert out[0, 0, 0, :2].tolist() == [kx, ky]


def test_zero_absent_and_pad_persons():
    kp = np.ones((2, 1, 17, 3), np.float32)
    kp[1, 0, 4, 2] = 0
    zero_absent(kp, kp[..., 2])
    assert kp[1, 0, 4].tolist() == [0, 0, 0] and kp[0, 0, 4].tolist() == [1, 1, 1]
    padded, m = pad_persons(kp, 3)
    assert m == 2 and padded.shape == (3, 1, 17, 3) and padded.dtype == torch.float32
    assert (padded[2] == 0).all() and torch.equal(padded[:2], torch.from_numpy(kp))
    cut, m = pad_persons(kp, 1)
    assert m == 1 and torch.equal(cut, torch.from_numpy(kp[:1]))
    same, m = pad_persons(kp, None)
    assert m == 2 and torch.equal(same, torch.from_numpy(kp))


# ----------------------------------------------------------------------------- normalise


def test_images_normalise_to_the_unit_range():
    levels = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    expected = levels.astype(np.float64) / 127.5 - 1
    out = images_to_tensor(levels, torch.float32)
    assert out.dtype == torch.float32 and out.shape == levels.shape
    assert np.abs(out.numpy() - expected).max() < 1e-6
    assert out.min() == -1 and out.max() == 1
    assert torch.equal(images_to_tensor(levels, torch.uint8), torch.from_numpy(levels))
    half = images_to_tensor(levels, torch.float16)
    assert half.dtype == torch.float16 and np.abs(half.double().numpy() - expected).max() < 1e-3


def test_flow_normalises_as_i3d_says():
    q = np.arange(256, dtype=np.uint8).reshape(2, 2, 8, 8)  # [2, T=2, 8, 8] levels
    pixels = q.astype(np.float64) * 40 / 255 - 20  # the stored quantisation
    zero = np.array([False, True])
    out = flow_to_tensor(q, zero, quantised=True, flip=False, dtype=torch.float32).numpy()
    assert np.abs(out[:, 0] - pixels[:, 0] / 20).max() < 1e-6
    assert (out[:, 1] == 0).all()
    flipped = flow_to_tensor(q, zero, quantised=True, flip=True, dtype=torch.float32).numpy()
    assert np.abs(flipped[0, 0] + pixels[0, 0] / 20).max() < 1e-6  # x changes sign
    assert np.abs(flipped[1, 0] - pixels[1, 0] / 20).max() < 1e-6  # y does not
    lv = flow_to_tensor(q, zero, quantised=True, flip=True, dtype=torch.uint8).numpy()
    assert (lv[0, 0] == 255 - q[0, 0]).all() and (lv[1, 0] == q[1, 0]).all()
    assert (lv[1, 1] == 128).all() and (lv[0, 1] == 127).all()  # zero flow, x mirrored

    px = np.array([-30, -20, -5, 0, 7.5, 20, 25], np.float32).reshape(1, 1, 1, 7)
    px = np.concatenate([px, -px])
    got = flow_to_tensor(px, np.array([False]), False, False, torch.float32).numpy()
    assert np.allclose(got, np.clip(px.astype(np.float64) / 20, -1, 1), atol=1e-7, rtol=0)


def test_negate_flow_x_in_place():
    levels = np.array([[0, 128, 255], [1, 2, 3]], np.uint8)
    negate_flow_x(levels, levels=True)
    assert levels.tolist() == [[255, 127, 0], [1, 2, 3]]
    values = np.array([[0.5, -1.0], [0.25, 0.75]], np.float32)
    negate_flow_x(values, levels=False)
    assert values.tolist() == [[-0.5, 1.0], [0.25, 0.75]]


# ----------------------------------------------------------------------------- decode and I/O


H, W, N = 6, 8, 4


def small_row(video_id: str = "d", flow_encoding: str = "png") -> dict:
    """A row: rgb pixel (y, x) of frame t is (10t, 20y, 20x), flow j's levels (10j + x, 10j + y)."""
    t, y, x = np.meshgrid(np.arange(N), np.arange(H), np.arange(W), indexing="ij")
    frames = np.stack([10 * t, 20 * y, 20 * x], -1).astype(np.uint8)
    j = t[:-1]
    q = np.stack([10 * j + x[:-1], 10 * j + y[:-1]], -1)
    flow = (q * 40 / 255 - 20).astype(np.float32)  # quantises back to q
    return encode_row(
        video_id=video_id, source="s", label=None, label_index=None, segment=0,
        start_frame=0, fps=25.0, frames=frames, flow=flow, pose_frames=None, keypoints=None,
        boxes=None, track_ids=None,
        meta=json.dumps({"schema_version": 1, "flow_encoding": flow_encoding}),
        flow_encoding=flow_encoding, image_format="png",
    )  # fmt: skip


def test_decode_gives_the_cropped_mirrored_frames(tmp_path):
    from tristream.shards.files import write_rows

    path = str(tmp_path / "train-00000-of-00001.parquet")
    write_rows(path, [small_row()], arrow_schema(("rgb", "flow")))
    source = RowSource(path, ("rgb", "flow"))
    box = CropBox(1, 2, 3, 4)
    with source.open() as reader:
        view = reader.read(0)
        frames = np.array([0, 2, 3])
        for flip in (False, True):
            rgb = decode_images(view, "rgb", frames, box, flip)
            assert rgb.shape == (3, 3, 3, 4) and rgb.dtype == np.uint8
            flow, zero = decode_flow(view, frames, box, flip, "repeat")
            assert flow.shape == (2, 3, 3, 4) and not zero.any()
            for k, t in enumerate(frames):
                for i, jj in itertools.product(range(3), range(4)):
                    y, x = 1 + i, 2 + (3 - jj if flip else jj)
                    assert rgb[:, k, i, jj].tolist() == [10 * t, 20 * y, 20 * x]
                    f = min(t, N - 2)  # the last frame repeats the last flow
                    assert flow[:, k, i, jj].tolist() == [10 * f + x, 10 * f + y]
        flow, zero = decode_flow(view, frames, box, False, "zero")
        assert zero.tolist() == [False, False, True] and (flow[:, 2] == 0).all()


def test_distinct_frames_and_flow_sources():
    frames, gather = distinct_frames(np.array([0, 1, 2, 0, 1]))
    assert frames.tolist() == [0, 1, 2] and gather.tolist() == [0, 1, 2, 0, 1]
    frames, gather = distinct_frames(np.array([2, 4, 6]))
    assert frames.tolist() == [2, 4, 6] and gather is None
    assert flow_sources(np.array([0, 1, 2]), 2, "repeat").tolist() == [0, 1, 1]
    assert flow_sources(np.array([0, 1, 2]), 2, "zero").tolist() == [0, 1, -1]
    assert flow_sources(np.array([0, 0]), 0, "repeat").tolist() == [-1, -1]
    with pytest.raises(ValueError):
        flow_sources(np.array([0]), 1, "nearest")


def test_row_source_numbers_rows_in_file_order_and_reads_only_the_asked_columns(tmp_path):
    rows = [make_row(f"r{i}", n=3 + i, modalities=("rgb", "keypoints")) for i in range(5)]
    folder = write_shards(tmp_path, "tfrecord", [rows[:2], rows[2:]], ("rgb", "keypoints"))
    source = RowSource(folder, ("keypoints",), num_frames=True)
    assert source.num_rows == 5 and source.num_frames.tolist() == [3, 4, 5, 6, 7]
    assert source.available == ("keypoints",)
    with source.open() as reader:
        views = [reader.read(i) for i in range(5)]
    assert [v["video_id"] for v in views] == [f"r{i}" for i in range(5)]
    assert all("rgb" not in v.modalities and "keypoints" in v.modalities for v in views)
    with pytest.raises(ValueError, match="none of the requested"):
        RowSource(folder, ("flow",))


# ----------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    data = [make_row(f"t{i}", n=6 + i) for i in range(5)]
    return write_shards(tmp_path_factory.mktemp("hook"), "parquet", [data])


def add_mean(sample: dict) -> dict:
    """A user transform: one more key, and the rgb clip cut to its first two frames."""
    sample = dict(sample)
    sample["rgb_mean"] = sample["rgb"].mean()
    sample["rgb"] = sample["rgb"][:, :2]
    return sample


def test_user_transform_runs_on_every_sample_after_the_built_in_steps(rows):
    kw = {"clip_len": 4, "crop": (8, 12), "seed": 2}
    plain = list(ShardDataset(rows, **kw))
    hooked = ShardDataset(rows, transform=add_mean, **kw)
    got = list(hooked)
    assert len(got) == len(plain) == 5
    for p, g in zip(plain, got):
        want = add_mean(p)
        assert want.keys() == g.keys()
        for key in want:
            if isinstance(want[key], torch.Tensor):
                assert torch.equal(want[key], g[key]), key
            else:
                assert want[key] == g[key], key
        assert g["rgb"].shape == (3, 2, 8, 12)
    # in DataLoader workers too, and it batches
    batches = list(DataLoader(hooked, batch_size=5, num_workers=2))
    assert sum(len(b["video_id"]) for b in batches) == 5
    assert all(b["rgb"].shape[2] == 2 and "rgb_mean" in b for b in batches)
    with pytest.raises(TypeError):
        ShardDataset(rows, transform="not callable")


def test_part_attributes_stay_settable(rows):
    ds = ShardDataset(rows, clip_len=4, crop=(8, 12), seed=2, modalities=("rgb",))
    ds.train = False
    assert ds.crop_flip.train is False and ds.sampler.train is False
    s = next(iter(ds))
    assert not s["flipped"] and s["rgb"].shape == (3, 4, 8, 12)
    ds.crop, ds.clip_len = 6, 3
    assert next(iter(ds))["rgb"].shape == (3, 3, 6, 6)
    with pytest.raises(ValueError):
        ds.hflip = 2.0
    with pytest.raises(ValueError, match="sampling='all'"):
        ds.sampling = "all"
    assert ds.sampling == "random"  # unchanged after the refusal
    every = ShardDataset(rows, clip_len=4, sampling="all", train=False, modalities=("rgb",))
    assert every.num_units == sum(-(-(6 + i) // 4) for i in range(5))
    every.clip_len = 2
    assert every.num_units == sum(-(-(6 + i) // 2) for i in range(5))


# ----------------------------------------------------------------------------- batch memory


def _resident_pages(tensor: torch.Tensor) -> tuple[int, int]:
    """(resident, total) pages of ``tensor``'s memory, from ``mincore(2)``."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    start = tensor.data_ptr() // page * page
    end = -(-(tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page) * page
    vec = ctypes.create_string_buffer((end - start) // page)
    assert libc.mincore(start, end - start, vec) == 0, ctypes.get_errno()
    return sum(b & 1 for b in vec.raw), len(vec.raw)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise populate is Linux's")
def test_batch_buffers_in_shared_memory_are_populated_in_one_call():
    """A batch buffer made in a DataLoader worker is shared memory whose pages are all
    present before any clip is written (one madvise), not faulted in page by page."""
    from tristream.shards.dataset import _populate

    storage = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(3 << 20)
    tensor = torch.empty(0, dtype=torch.uint8).new(storage)
    resident, total = _resident_pages(tensor)
    assert total >= 768 and resident < total // 2  # fresh shared memory: not there yet
    assert _populate(tensor) is True
    assert _resident_pages(tensor) == (total, total)
    assert not tensor.any()  # present and zero: the clips then overwrite it


class _PoolName:
    """A transform that records pyarrow's default memory pool where the sample is made."""

    def __call__(self, sample: dict) -> dict:
        import pyarrow as pa

        sample["pool"] = pa.default_memory_pool().backend_name
        return sample


def test_workers_read_with_the_system_memory_pool(tmp_path, monkeypatch):
    """In a DataLoader worker ShardDataset makes the system allocator Arrow's pool (mimalloc
    kept what a Parquet-reading worker allocated); the main process keeps its own, and
    ``ARROW_DEFAULT_MEMORY_POOL`` is the user's choice."""
    import pyarrow as pa

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    folder = write_shards(tmp_path / "s", "parquet", [[make_row("a", 6)]], ("rgb",))
    before = pa.default_memory_pool().backend_name
    ds = ShardDataset(
        folder, modalities=("rgb",), clip_len=2, crop=16, transform=_PoolName(), seed=0
    )
    (sample,) = DataLoader(ds, batch_size=None, num_workers=1)
    assert sample["pool"] == "system"
    assert pa.default_memory_pool().backend_name == before
    (sample,) = DataLoader(ds, batch_size=None, num_workers=0)
    assert sample["pool"] == before
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", before)
    (sample,) = DataLoader(ds, batch_size=None, num_workers=1)
    assert sample["pool"] == before


class _RecordingPool:
    def __init__(self, name: str):
        self.backend_name, self.releases = name, 0

    def release_unused(self) -> None:
        self.releases += 1


@pytest.mark.parametrize("name", ["system", "mimalloc"])
def test_arrow_memory_release_cadence(monkeypatch, name):
    """mimalloc/jemalloc pools release after every row; the system pool's release is a
    malloc_trim of the whole heap (the next clip's buffers fault in again), so one in
    SYSTEM_TRIM_EVERY rows."""
    import pyarrow as pa

    from tristream.shards import files

    pool = _RecordingPool(name)
    monkeypatch.setattr(pa, "default_memory_pool", lambda: pool)
    monkeypatch.setattr(files, "_release_calls", 0)
    for _ in range(3 * files.SYSTEM_TRIM_EVERY):
        files.release_arrow_memory()
    assert pool.releases == (3 if name == "system" else 3 * files.SYSTEM_TRIM_EVERY)
