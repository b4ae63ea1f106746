"""Frame indexes (``<shard>.idx``) and the reader that fetches only a clip's frames.

Shards come from the project's own writers (``write_rows``); the oracles never use the
reader under test:

- where the index says a frame is, plain ``open``/``seek``/``read`` of the shard finds the
  very bytes ``encode_row`` made for it;
- the index changes no shard byte (the same rows written without it), and plain pyarrow
  still reads the Parquet rows whole;
- samples read through the index equal samples of the whole-row reader (``frame_index="off"``,
  the path every earlier release used) for the same seed;
- bytes and open files are counted outside the reader: by a TCP relay between the client and
  the S3 server (bytes on the wire) and by ``/proc/self/fd`` (open descriptors), memory by
  ``/proc/self/statm`` in the DataLoader worker.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from tests.test_dataset import make_row, write_shards
from tristream.shards import ShardDataset
from tristream.shards import example_proto as pb
from tristream.shards.device import DeviceDecoder, EncodedClip, collate, normalize
from tristream.shards.files import index_shard, write_rows
from tristream.shards.frame_index import (
    FRAME_COLUMNS,
    IndexMismatch,
    build_index,
    index_path,
    read_index,
)
from tristream.shards.row_source import RowSource, coalesce
from tristream.shards.schema import MODALITIES, arrow_schema
from tristream.shards.storage import StoreConfig

FORMATS = ("parquet", "tfrecord")
SHARD = "train-00000-of-00001"


def noise_row(video_id: str, n: int, size: tuple[int, int] = (48, 64), seed: int = 0) -> dict:
    """A row of ``n`` random-noise JPEG frames (large, incompressible frames) with flow."""
    from tristream.shards.row import encode_row

    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    flow = rng.uniform(-20, 20, (n - 1, *size, 2)).astype(np.float32)
    return encode_row(
        video_id=video_id, source=f"/v/{video_id}.mp4", label="a", label_index=0, segment=0,
        start_frame=0, fps=25.0, frames=frames, flow=flow,
        meta=json.dumps({"schema_version": 1, "flow_encoding": "jpeg"}),
    )  # fmt: skip


def samples(ds) -> list[dict]:
    return list(ds)


def assert_same_samples(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


# ----------------------------------------------------------------------------- the index


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("encoding", ["png", "jpeg", "f16"])
def test_the_index_points_at_every_frame_as_encoded(tmp_path, fmt, encoding):
    rows = [
        make_row(f"v{i}", n=n, flow_encoding=encoding, image_fmt="jpeg")
        for i, n in enumerate((5, 1, 3))  # a 1-frame row has no flow planes
    ]
    path = str(write_shards(tmp_path, fmt, [rows]) / f"{SHARD}.{fmt}")
    index = read_index(index_path(path))
    assert index.format == fmt and index.shard == os.path.basename(path)
    assert index.shard_bytes == os.path.getsize(path) and len(index) == 3
    assert set(index.modalities) == set(MODALITIES)
    assert index.num_frames.tolist() == [5, 1, 3]
    raw_index = Path(index_path(path)).read_bytes()
    with open(path, "rb") as f:
        for k, row in enumerate(rows):
            offset, length = index.entry_range(k)
            entry = index.parse_entry(k, raw_index[offset : offset + length])
            assert sorted(entry) == sorted(FRAME_COLUMNS)
            for column in FRAME_COLUMNS:
                offsets, lengths = entry[column]
                assert len(offsets) == len(row[column])
                for i, data in enumerate(row[column]):
                    f.seek(int(offsets[i]))
                    assert f.read(int(lengths[i])) == data, (column, i)
            if fmt == "tfrecord":  # the head is the record's context, a tf.train.Features
                rec = index.rows[k]
                f.seek(int(rec["head_offset"]))
                context = pb.Features()
                context.ParseFromString(f.read(int(rec["head_length"])))
                assert context.feature["example/id"].bytes_list.value == [row["video_id"].encode()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_index_changes_no_shard_byte_and_plain_readers_read_whole_rows(tmp_path, fmt):
    """TFRecord: the index changes no byte of the shard. Parquet: an indexed shard stores
    its frame columns uncompressed (another file, the same rows); without an index the
    file is the layout of before (every column compressed), byte for byte what pyarrow's
    default writer makes of the rows."""
    rows = [make_row(f"v{i}", n=4 + i, image_fmt="jpeg") for i in range(3)]
    schema = arrow_schema(MODALITIES)
    with_index, without = str(tmp_path / f"a.{fmt}"), str(tmp_path / f"b.{fmt}")
    write_rows(with_index, rows, schema)
    write_rows(without, rows, schema, index=False)
    if fmt == "tfrecord":
        assert Path(with_index).read_bytes() == Path(without).read_bytes()
    else:
        plain = str(tmp_path / "plain.parquet")
        with pq.ParquetWriter(plain, schema, compression="snappy") as w:
            for row in rows:
                w.write_table(pa.Table.from_pylist([row], schema=schema))
        assert Path(without).read_bytes() == Path(plain).read_bytes()
        assert pq.read_table(without).to_pylist() == pq.read_table(with_index).to_pylist()
    assert os.path.exists(index_path(with_index)) and not os.path.exists(index_path(without))
    # Written again with an index (the same rows): the index appears.
    write_rows(without, rows, schema)
    assert Path(index_path(without)).read_bytes()[:8] == b"TRSTIDX1"
    if fmt == "parquet":
        assert pq.read_table(with_index).to_pylist() == [
            {c: r.get(c) for c in schema.names} for r in rows
        ]
        # frame columns verbatim: uncompressed, no dictionary; the rest as before
        md = pq.ParquetFile(with_index).metadata.row_group(0)
        for i in range(md.num_columns):
            column = md.column(i)
            if column.path_in_schema.split(".")[0] in FRAME_COLUMNS:
                assert column.compression == "UNCOMPRESSED" and not column.has_dictionary_page
            else:
                assert column.compression == "SNAPPY"


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_index_built_later_equals_the_written_one(tmp_path, fmt):
    rows = [make_row(f"v{i}", n=3 + i, image_fmt="jpeg") for i in range(2)]
    path = str(write_shards(tmp_path, fmt, [rows]) / f"{SHARD}.{fmt}")
    assert build_index(path) == Path(index_path(path)).read_bytes()


def test_coalesce_merges_ranges_closer_than_the_gap():
    ranges = [(100, 10), (0, 10), (12, 5), (200, 1), (113, 2)]
    assert coalesce(ranges, 3) == [(0, 17, [1, 2]), (100, 15, [0, 4]), (200, 1, [3])]
    assert coalesce(ranges, 0) == [(0, 10, [1]), (12, 5, [2]), (100, 10, [0]),
                                   (113, 2, [4]), (200, 1, [3])]  # fmt: skip


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_samples_through_the_index_equal_whole_row_samples(tmp_path, fmt, dtype):
    rows = [make_row(f"v{i}", n=n, segment=i % 2) for i, n in enumerate((12, 3, 9, 1))]
    rows[0]["label"] = rows[0]["label_index"] = None
    folder = write_shards(tmp_path, fmt, [rows[:2], rows[2:]])
    kw = dict(modalities=MODALITIES, clip_len=5, frame_stride=2, crop=(12, 16), seed=5,
              dtype=dtype, max_persons=3)  # fmt: skip
    fast = ShardDataset(folder, frame_index="require", **kw)
    slow = ShardDataset(folder, frame_index="off", **kw)
    assert fast.source.indexed == [True, True] and slow.source.indexed == [False, False]
    for epoch in (0, 1):
        fast.set_epoch(epoch)
        slow.set_epoch(epoch)
        assert_same_samples(samples(fast), samples(slow))
    for sampling in ("all", "uniform"):
        a = ShardDataset(folder, frame_index="auto", sampling=sampling, **kw)
        b = ShardDataset(folder, frame_index="off", sampling=sampling, **kw)
        assert np.array_equal(a.source.num_frames, b.source.num_frames)  # from the index
        assert_same_samples(samples(a), samples(b))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_clip_reads_its_frames_not_the_row(tmp_path, fmt):
    rows = [noise_row(f"n{i}", 40, seed=i) for i in range(2)]
    folder = write_shards(tmp_path, fmt, [rows], ("rgb", "flow"))
    row_bytes = sum(len(b) for c in ("rgb", "flow_x", "flow_y") for b in rows[0][c])
    clip_bytes = sum(len(rows[0][c][t]) for c in ("rgb", "flow_x", "flow_y") for t in range(4))
    source = RowSource(folder, ("rgb", "flow"), frame_index="require")
    with source.open() as reader:
        view = reader.read(0)
        frames = np.array([10, 12, 14, 16])
        got = list(view.iter_encoded("rgb", frames))
        assert [bytes(g) for g in got] == [rows[0]["rgb"][t] for t in frames]
        flow = list(view.iter_flow_planes(frames))
        assert len(flow) == 4
        # entry + head + the 4 frames of 3 columns, the stride-2 holes read with them
        assert reader.bytes_read < 3 * clip_bytes < row_bytes / 3
        assert view.raw["rgb"].fetched == 4 and view.raw["flow_x"].fetched == 4


def test_shards_written_before_the_index_are_read_whole(tmp_path):
    rows = [make_row(f"v{i}", n=6) for i in range(3)]
    for fmt in FORMATS:
        folder = tmp_path / fmt
        folder.mkdir()
        write_rows(str(folder / f"{SHARD}.{fmt}"), rows, arrow_schema(MODALITIES), index=False)
        kw = dict(clip_len=4, crop=(12, 16), seed=1)
        old = ShardDataset(folder, **kw)
        assert old.source.indexed == [False]
        with pytest.raises(ValueError, match="has no frame index"):
            ShardDataset(folder, frame_index="require", **kw)
        new = tmp_path / f"{fmt}-new"
        write_shards(new, fmt, [rows])
        assert_same_samples(samples(old), samples(ShardDataset(new, **kw)))


def test_an_older_parquet_layout_gets_no_index_and_is_read_whole(tmp_path):
    rows = [make_row("v0", n=4)]
    schema = arrow_schema(MODALITIES)
    path = str(tmp_path / f"{SHARD}.parquet")
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:  # the old writer
        import pyarrow as pa

        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    from tristream.shards.frame_index import NotIndexable

    with pytest.raises(NotIndexable):
        build_index(path)
    assert ShardDataset(path, clip_len=2, crop=None).source.indexed == [False]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_index_that_does_not_match_its_shard_is_refused(tmp_path, fmt):
    a = write_shards(tmp_path / "a", fmt, [[make_row("a", n=6)]])
    b = write_shards(tmp_path / "b", fmt, [[make_row("b1", n=3), make_row("b2", n=9)]])
    # the shard replaced by another one (another size), its old index left beside it
    shutil.copy(b / f"{SHARD}.{fmt}", a / f"{SHARD}.{fmt}")
    kw = dict(clip_len=2, crop=None, train=False)
    with pytest.warns(UserWarning, match="the shard was rewritten after its index"):
        ds = ShardDataset(a, **kw)
    assert ds.source.indexed == [False]
    assert [s["video_id"] for s in ds] == ["b1", "b2"]  # read whole: still right
    with pytest.raises(IndexMismatch, match="rewritten after its index"):
        ShardDataset(a, frame_index="require", **kw)
    # an index of another shard name, or not an index at all
    shutil.copy(index_path(b / f"{SHARD}.{fmt}"), index_path(b / f"other.{fmt}"))
    shutil.copy(b / f"{SHARD}.{fmt}", b / f"other.{fmt}")
    with pytest.raises(IndexMismatch, match="indexes 'train-00000-of-00001"):
        ShardDataset(b / f"other.{fmt}", frame_index="require", **kw)
    Path(index_path(b / f"other.{fmt}")).write_bytes(b"garbage")
    with pytest.raises(IndexMismatch, match="bad magic"):
        ShardDataset(b / f"other.{fmt}", frame_index="require", **kw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_row_that_is_not_where_its_index_says_fails_loudly(tmp_path, fmt):
    folder = write_shards(tmp_path, fmt, [[make_row("a", n=6), make_row("b", n=6)]])
    idx = Path(index_path(folder / f"{SHARD}.{fmt}"))
    data = bytearray(idx.read_bytes())
    index = read_index(str(idx))
    (header_len,) = struct.unpack_from("<I", data, 8)
    table = 12 + header_len + (-(12 + header_len) % 8)
    size = index.rows.dtype.itemsize
    if fmt == "tfrecord":  # row 0 sent to the middle of row 1's record
        wrong = int(index.rows[1]["locator"]) + 7
        struct.pack_into("<Q", data, table, wrong)
    else:  # row 0's first rgb frame sent outside its row group's column
        entry = int(index.rows[0]["entry_offset"])
        struct.pack_into("<Q", data, entry, int(index.rows[1]["entry_offset"]) + 10**6)
    assert size > 0
    idx.write_bytes(bytes(data))
    ds = ShardDataset(folder, clip_len=2, crop=None, train=False, shuffle=False)
    with pytest.raises(IndexMismatch):
        list(ds)


def test_a_shard_changed_after_the_dataset_was_made_fails_loudly(tmp_path):
    folder = write_shards(tmp_path, "tfrecord", [[make_row("a", n=6)]])
    ds = ShardDataset(folder, clip_len=2, crop=None)
    write_rows(str(folder / f"{SHARD}.tfrecord"), [make_row("a", n=8)],
               arrow_schema(MODALITIES), index=False)  # fmt: skip
    with pytest.raises(IndexMismatch, match="changed after the dataset was made"):
        list(ds)


def test_tfrecord_rows_without_persons_do_not_claim_keypoints(tmp_path):
    folder = write_shards(tmp_path, "tfrecord", [[make_row("a", n=4, modalities=("rgb",))]],
                          ("rgb",))  # fmt: skip
    path = str(folder / f"{SHARD}.tfrecord")
    assert index_shard(path).info.modalities == ("rgb",)
    for mode in ("auto", "off"):  # as for Parquet: an error naming it, not a KeyError
        with pytest.raises(ValueError, match=r"modalities \['keypoints'\] are in none"):
            ShardDataset(folder, modalities=("rgb", "keypoints"), clip_len=2, crop=None,
                         frame_index=mode)  # fmt: skip
        got = list(ShardDataset(folder, clip_len=2, crop=None, frame_index=mode))
        assert len(got) == 1 and "keypoints" not in got[0]


# ----------------------------------------------------------------------------- memory


def _probe(sample: dict) -> dict:
    """Runs in the DataLoader worker: its open descriptors after this sample, and every 50th
    sample (``v0049``, ``v0099``, ...) its resident memory in bytes (else -1), both read
    from ``/proc/self``."""
    sample["fds"] = len(os.listdir("/proc/self/fd"))
    sample["rss"] = -1
    if int(sample["video_id"][1:]) % 50 == 49:
        with open("/proc/self/statm") as f:
            sample["rss"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return sample


@pytest.fixture(scope="module")
def thousand_shards(tmp_path_factory) -> dict[str, list[str]]:
    """1,000 small shard files per format (one 8-frame row each, noise JPEGs)."""
    root = tmp_path_factory.mktemp("thousand")
    out = {}
    schema = arrow_schema(("rgb", "flow"))
    rows = [noise_row(f"r{k}", 8, size=(32, 40), seed=k) for k in range(10)]
    for fmt in FORMATS:
        paths = []
        for k in range(1000):
            p = str(root / f"train-{k:05d}-of-01000.{fmt}")
            row = dict(rows[k % 10], video_id=f"v{k:04d}")
            write_rows(p, [row], schema)
            paths.append(p)
        out[fmt] = paths
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["auto", "off"])
def test_worker_memory_and_open_files_stay_flat_over_1000_shard_files(thousand_shards, fmt, mode):
    ds = ShardDataset(thousand_shards[fmt], modalities=("rgb", "flow"), clip_len=4, crop=24,
                      shuffle=False, seed=0, frame_index=mode, transform=_probe)  # fmt: skip
    assert ds.source.indexed == [mode == "auto"] * 1000
    seen = [(s["rss"], s["fds"]) for s in DataLoader(ds, batch_size=None, num_workers=1)]
    assert len(seen) == 1000
    rss = np.array([s[0] for s in seen], np.float64)
    fds = np.array([s[1] for s in seen])
    # after the first 100 files, resident memory does not grow with the files visited
    at_100, at_1000 = rss[99], rss[-1]
    assert at_100 > 0 and at_1000 <= 1.10 * at_100, (at_100 / 2**20, at_1000 / 2**20)
    assert np.max(rss[100:]) <= 1.10 * at_100
    # a bounded set of open files: what the worker had after its first file, plus at most
    # the reader's bound, never one per file visited
    assert fds.max() - fds.min() <= 3 * ds.source.max_open_files


# ----------------------------------------------------------------------------- object store


class Relay:
    """A TCP relay on 127.0.0.1 in front of ``target`` (host, port) that counts the bytes
    the server sends back: what crosses the wire, whatever the client asks."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.received = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with self._lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if count:  # the server-to-client pipe closes both sockets once it ends
            src.close()
            dst.close()

    def close(self) -> None:
        self._sock.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_object_store_shards_are_read_with_ranged_requests(s3_server, tmp_path, monkeypatch, fmt):
    env, client = s3_server
    rows = [noise_row(f"n{i}", 60, size=(96, 128), seed=i) for i in range(4)]
    local = write_shards(tmp_path, fmt, [rows[:2], rows[2:]], ("rgb", "flow"))
    prefix = f"ranged-{fmt}/shards"
    for p in sorted(local.iterdir()):
        client.upload_file(str(p), "tristream-out", f"{prefix}/{p.name}")
    host, port = env["AWS_ENDPOINT_URL"].split("://", 1)[1].rsplit(":", 1)
    relay = Relay((host, int(port)))
    store = StoreConfig(s3_endpoint=f"http://127.0.0.1:{relay.port}", s3_region="us-east-1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, env[key])
    kw = dict(modalities=("rgb", "flow"), clip_len=8, crop=64, seed=2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every index matches: no whole-row fallback
            remote = ShardDataset(f"s3://tristream-out/{prefix}", frame_index="require",
                                  store=store, **kw)  # fmt: skip
        made = relay.received
        got = samples(remote)
        per_clip = (relay.received - made) / len(got)
    finally:
        relay.close()
    assert_same_samples(got, samples(ShardDataset(local, frame_index="off", **kw)))
    row_bytes = np.mean([sum(len(b) for c in ("rgb", "flow_x", "flow_y") for b in r[c])
                         for r in rows])  # fmt: skip
    # 8 of 60 frames, with the default 1 MiB coalescing on object stores and HTTP overhead
    print(f"{fmt}: {per_clip / 1e3:.0f} kB on the wire per clip, rows of {row_bytes / 1e3:.0f} kB")
    assert per_clip < 0.3 * row_bytes, (per_clip, row_bytes)


# ----------------------------------------------------------------------------- GPU helpers


def test_normalize_turns_uint8_batches_into_the_float_output(tmp_path):
    folder = write_shards(tmp_path, "parquet", [[make_row(f"v{i}", n=8) for i in range(4)]])
    kw = dict(clip_len=4, crop=(12, 16), seed=3, last_flow="repeat")
    floats = next(iter(DataLoader(ShardDataset(folder, **kw), batch_size=4)))
    levels = next(iter(DataLoader(ShardDataset(folder, dtype=torch.uint8, **kw), batch_size=4)))
    out = normalize(levels, "cpu")
    for key in ("rgb", "flow", "pose"):
        assert levels[key].dtype == torch.uint8 and out[key].dtype == torch.float32
    assert torch.equal(out["rgb"], floats["rgb"]) and torch.equal(out["pose"], floats["pose"])
    # flipped flow x: (255 - q) / 127.5 - 1 vs -(q / 127.5 - 1), one float32 rounding apart
    assert torch.allclose(out["flow"], floats["flow"], rtol=0, atol=1e-6)
    assert any(levels["flipped"]) and not torch.equal(out["flow"][:, 0], out["flow"][:, 0] * 0)
    assert torch.equal(out["keypoints"], floats["keypoints"])
    assert normalize(levels, dtype=torch.float16)["rgb"].dtype == torch.float16


@pytest.mark.parametrize("image_fmt", ["jpeg", "png"])
def test_device_decode_falls_back_to_the_cpu_with_a_warning_and_gives_the_cpu_clips(
    tmp_path, image_fmt
):
    rows = [make_row(f"v{i}", n=n, image_fmt=image_fmt) for i, n in enumerate((9, 3, 7, 5))]
    folder = write_shards(tmp_path, "tfrecord", [rows])
    kw = dict(modalities=("rgb", "pose", "flow"), clip_len=5, crop=(12, 16), seed=4,
              dtype=torch.uint8)  # fmt: skip
    ds = ShardDataset(folder, decode="device", **kw)
    sample = next(iter(ds))
    assert isinstance(sample["rgb"], EncodedClip) and isinstance(sample["flow"], torch.Tensor)
    with pytest.warns(UserWarning, match="decoding on the CPU"):
        decoder = DeviceDecoder("cuda")
    assert decoder.fallback is not None
    cpu = DataLoader(ShardDataset(folder, **kw), batch_size=2)
    dev = DataLoader(ds, batch_size=2, collate_fn=collate)
    for a, b in zip(cpu, dev, strict=True):
        b = decoder(b)
        for key in ("rgb", "pose", "flow"):
            assert b[key].dtype == torch.uint8 and torch.equal(a[key], b[key]), key
        assert a["video_id"] == b["video_id"]


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("fmt", FORMATS)
def test_batches_made_in_the_dataset_equal_the_dataloader_batches(tmp_path, dtype, fmt):
    rows = [make_row(f"v{i}", n=n, segment=i % 3) for i, n in enumerate((9, 3, 7, 5, 8, 2, 6))]
    folder = write_shards(tmp_path, fmt, [rows[:4], rows[4:]])
    kw = dict(modalities=MODALITIES, clip_len=4, crop=(12, 16), seed=6, dtype=dtype,
              max_persons=2)  # fmt: skip
    for workers in (0, 2):
        plain = DataLoader(ShardDataset(folder, **kw), batch_size=3, num_workers=workers)
        batched = DataLoader(ShardDataset(folder, batch_size=3, **kw), batch_size=None,
                             num_workers=workers)  # fmt: skip
        a, b = list(plain), list(batched)
        assert [len(x["video_id"]) for x in a] == [len(x["video_id"]) for x in b]
        assert sorted(v for x in b for v in x["video_id"]) == sorted(r["video_id"] for r in rows)
        assert_same_samples(a, b)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_with_more_columns_than_the_schema_are_indexed(tmp_path, fmt):
    """A row holding modalities its shard's schema leaves out (written without them) still
    gets its frame index: the Parquet writer once counted the left-out frames and gave up."""
    folder = write_shards(tmp_path, fmt, [[make_row("a", 6), make_row("b", 5)]], ("rgb",))
    (shard,) = folder.glob(f"*.{fmt}")
    columns = read_index(index_path(shard)).frame_columns
    # Parquet keeps the schema's columns; a TFRecord record holds what the row holds.
    assert columns == (("rgb",) if fmt == "parquet" else FRAME_COLUMNS)
    clips = list(ShardDataset(folder, modalities=("rgb",), clip_len=4, crop=16,
                              frame_index="require", shuffle=False))  # fmt: skip
    assert [c["video_id"] for c in clips] == ["a", "b"]
