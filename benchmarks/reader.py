"""Read throughput of :class:`tristream.shards.ShardDataset` against a plain decode loop.

Run from the repository root::

    python benchmarks/reader.py                       # synthetic shards in a temp dir
    python benchmarks/reader.py --shards OUT/shards   # a run's shards
    python benchmarks/reader.py --rows 8 --frames 48 --clip-len 32 --repeat 3

Without ``--shards`` it writes ``--rows`` rows of ``--frames`` synthetic
256x340 frames (smooth moving textures, so JPEG sizes are realistic) with the
project's writers, as the pipeline builds rows (``tristream.shards.row.encode_row``): RGB as JPEG,
flow as two grayscale JPEG planes per frame pair, in ``--files`` Parquet (or
``--format tfrecord``) shards.

Measured on the same rows, one clip of ``--clip-len`` frames per row per epoch:

- ``baseline``: pyarrow reads the row (``read_row_group`` of the modality
  columns; TFRecord: the project's record parser) and ``cv2.imdecode`` decodes
  the clip's frames of every requested modality (centre clip; flow planes as
  grayscale). No crop, no normalisation, no tensors: the floor of the work.
- ``read_rows``: :func:`tristream.shards.read_rows`, which decodes every frame
  of every row (what a reader without clip sampling pays), plus the same clip slice.
- ``ShardDataset DTYPE, N workers``: ``ShardDataset(train=True, dtype=DTYPE)``
  (random clip, random ``--crop`` crop, flip; float tensors in [-1, 1], or
  ``uint8`` levels to normalise on the GPU) through a
  ``DataLoader(batch_size=--batch-size, num_workers=N)``, worker start-up
  included (workers are forked anew each epoch, as ``set_epoch`` needs).

clips/s = clips / wall seconds; frames/s = clips/s x clip_len (each frame with
all requested modalities); ``vs baseline`` = clips/s over the baseline's.
``cpu s`` is user+system CPU time of this process and its finished children
(the DataLoader workers), less sensitive to other load on the machine; ``to
1st clip s`` the time from the start of each epoch to its first clip (batch),
summed over the epochs (worker start-up and the first batch). Each figure is
the median of ``--repeat`` rounds of ``--epochs`` epochs, the rounds
interleaving the configurations.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from tristream.shards import ShardDataset, read_rows, shard_files
from tristream.shards.files import iter_raw_rows, shard_format, write_rows
from tristream.shards.row import encode_row
from tristream.shards.schema import arrow_schema

HEIGHT, WIDTH = 256, 340
IMAGE_COLUMNS = {"rgb": ("rgb",), "flow": ("flow_x", "flow_y"), "pose": ("pose",)}


# --------------------------------------------------------------------------- synthetic shards


def _texture(rng: np.random.Generator, channels: int, pad: int) -> np.ndarray:
    small = rng.integers(0, 256, (24, 32, channels), dtype=np.uint8)
    big = cv2.resize(small, (WIDTH + 2 * pad, HEIGHT + 2 * pad), interpolation=cv2.INTER_CUBIC)
    return big.reshape(HEIGHT + 2 * pad, WIDTH + 2 * pad, channels)


def synthetic_row(index: int, frames: int, modalities: tuple[str, ...]) -> dict:
    """One shard row of moving textures, encoded as the pipeline encodes it."""
    rng = np.random.default_rng(index)
    pad = frames + 8
    tex = _texture(rng, 3, pad)
    rgb = np.stack([tex[pad - t : pad - t + HEIGHT, pad : pad + WIDTH] for t in range(frames)])
    flow = pose = kp = None
    if "flow" in modalities:
        field = (_texture(rng, 2, 0).astype(np.float32) - 128.0) / 16.0  # about +-8 px
        flow = np.stack([np.roll(field, t, axis=0) for t in range(frames - 1)])
    if "pose" in modalities:
        pose = np.ascontiguousarray(rgb[..., ::-1])
    m = 2
    if "keypoints" in modalities:
        kp = rng.uniform(0, [WIDTH, HEIGHT, 1], (m, frames, 17, 3)).astype(np.float32)
    return encode_row(
        video_id=f"synthetic{index:04d}",
        source=f"synthetic://{index}",
        label="class0",
        label_index=index % 10,
        segment=0,
        start_frame=0,
        fps=25.0,
        frames=rgb,
        flow=flow,
        pose_frames=pose,
        keypoints=kp,
        boxes=None if kp is None else np.zeros((m, frames, 5), np.float32),
        track_ids=None if kp is None else np.arange(m),
        meta='{"flow_encoding": "jpeg", "schema_version": 1}',
        flow_encoding="jpeg",
        jpeg_quality=95,
    )


def write_synthetic(
    folder: str, rows: int, frames: int, files: int, fmt: str, modalities: tuple[str, ...]
) -> str:
    all_rows = [synthetic_row(i, frames, modalities) for i in range(rows)]
    for k in range(files):
        part = all_rows[k::files]
        path = os.path.join(folder, f"train-{k:05d}-of-{files:05d}.{fmt}")
        write_rows(path, part, arrow_schema(tuple(modalities)))
    return folder


# --------------------------------------------------------------------------- measured loops


def _centre(n: int, clip_len: int) -> range:
    start = max(0, (n - clip_len) // 2)
    return range(start, min(n, start + clip_len))


def _decode_clip(row: dict, modalities: tuple[str, ...], clip_len: int) -> None:
    """cv2.imdecode the centre clip's frames of each image modality of ``row``."""
    for m in modalities:
        for col in IMAGE_COLUMNS.get(m, ()):
            frames = row[col]
            flag = cv2.IMREAD_GRAYSCALE if col.startswith("flow") else cv2.IMREAD_COLOR
            for t in _centre(len(frames), clip_len):
                cv2.imdecode(np.frombuffer(frames[t], np.uint8), flag)


def baseline(files: list[str], modalities: tuple[str, ...], clip_len: int) -> Iterator[int]:
    """pyarrow (or the TFRecord parser) + cv2.imdecode of one centre clip per row."""
    columns = ["num_frames"] + [c for m in modalities for c in IMAGE_COLUMNS.get(m, ())]
    for path in files:
        for row in iter_raw_rows(path, columns):
            _decode_clip(row, modalities, clip_len)
            yield 1


def whole_rows(files: list[str], modalities: tuple[str, ...], clip_len: int) -> Iterator[int]:
    """tristream.shards.read_rows (decodes every frame), then the centre clip's slice."""
    for path in files:
        for row in read_rows(path, modalities=modalities):
            sl = _centre(int(row["num_frames"]), clip_len)
            for m in modalities:
                if m in row and m != "keypoints":
                    np.ascontiguousarray(row[m][sl.start : sl.stop])
            yield 1


def dataset_loop(
    ds: ShardDataset, workers: int, batch_size: int | None, epoch: int
) -> Iterator[int]:
    """ShardDataset through a DataLoader (workers forked anew for the epoch); yields batch sizes."""
    ds.set_epoch(epoch)
    for sample in DataLoader(ds, batch_size=batch_size, num_workers=workers):
        assert sample["rgb"].dtype == ds.dtype
        yield 1 if batch_size is None else len(sample["rgb"])


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Result:
    name: str
    clips: int = 0
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)

    def run(self, loop: Callable[[int], Iterator[int]], epochs: int) -> None:
        """One round: ``epochs`` epochs; records wall, cpu and time to each epoch's first clip."""
        c0, t0 = _cpu(), time.perf_counter()
        clips, first = 0, 0.0
        for epoch in range(epochs):
            e0 = time.perf_counter()
            for k, n in enumerate(loop(epoch)):
                if k == 0:
                    first += time.perf_counter() - e0
                clips += n
        self.walls.append(time.perf_counter() - t0)
        self.cpus.append(_cpu() - c0)
        self.firsts.append(first)
        self.clips = clips


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", help="shard file/folder/output dir (default: synthetic)")
    ap.add_argument("--format", choices=("parquet", "tfrecord"), default="parquet")
    ap.add_argument("--rows", type=int, default=12, help="synthetic rows")
    ap.add_argument("--frames", type=int, default=40, help="frames per synthetic row")
    ap.add_argument("--files", type=int, default=2, help="synthetic shard files")
    ap.add_argument("--modalities", nargs="+", default=["rgb", "flow"])
    ap.add_argument("--clip-len", type=int, default=32)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--dtypes", nargs="+", default=["float32", "uint8"], choices=("float32", "float16", "uint8")
    )
    ap.add_argument("--batch-size", type=int, default=4, help="DataLoader batch size, 0: None")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per round")
    ap.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    args = ap.parse_args(argv)
    args.batch_size = args.batch_size or None
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    modalities = tuple(args.modalities)

    with tempfile.TemporaryDirectory(prefix="tristream-bench-") as tmp:
        if args.shards:
            path = args.shards
        else:
            t0 = time.perf_counter()
            path = write_synthetic(tmp, args.rows, args.frames, args.files, args.format, modalities)
            print(f"wrote {args.rows} rows x {args.frames} frames of {HEIGHT}x{WIDTH} "
                  f"({args.format}) in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        files = shard_files(path, None if args.shards else args.format)
        size = sum(os.path.getsize(f) for f in files)
        ds_kw = dict(modalities=modalities, clip_len=args.clip_len, crop=args.crop, seed=0)
        ds = ShardDataset(files, **ds_kw)
        print(f"{len(files)} files, {ds.num_rows} rows, {size / 2**20:.1f} MiB; "
              f"modalities {ds.available}; clip_len {args.clip_len}, crop {args.crop}; "
              f"batch size {args.batch_size}; {args.epochs} epochs x median of {args.repeat}; "
              f"{os.cpu_count()} cpus, {torch.get_num_threads()} torch threads, "
              f"load {os.getloadavg()[0]:.1f}; "
              f"python {platform.python_version()}, torch {torch.__version__}, "
              f"opencv {cv2.__version__}")  # fmt: skip

        reader_name = "pyarrow" if shard_format(files[0]) == "parquet" else "TFRecord parser"
        configs: list[tuple[Result, Callable[[int], Iterator[int]]]] = [
            (
                Result(f"baseline: {reader_name} + cv2.imdecode (clip frames)"),
                lambda e: baseline(files, modalities, args.clip_len),
            ),
            (
                Result("read_rows (decodes whole rows)"),
                lambda e: whole_rows(files, modalities, args.clip_len),
            ),
        ]
        for dtype in args.dtypes:
            ds = ShardDataset(files, dtype=getattr(torch, dtype), **ds_kw)
            for workers in args.workers:
                configs.append(
                    (
                        Result(f"ShardDataset {dtype}, {workers} workers"),
                        lambda e, w=workers, d=ds: dataset_loop(d, w, args.batch_size, e),
                    )
                )
        # rounds interleave the configurations, so load changes hit them alike
        for _ in range(args.repeat):
            for result, loop in configs:
                result.run(loop, args.epochs)

    med = statistics.median
    base = configs[0][0]
    base_rate = base.clips / med(base.walls)
    print()
    print("| reader | clips | wall s | cpu s | to 1st clip s | clips/s | frames/s | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r, _ in configs:
        wall, first = med(r.walls), med(r.firsts)
        rate = r.clips / wall
        print(f"| {r.name} | {r.clips} | {wall:.2f} | {med(r.cpus):.2f} | {first:.2f} | "
              f"{rate:.1f} | {rate * args.clip_len:.0f} | {rate / base_rate:.2f}x |")  # fmt: skip
    print(f"\nload average after the run: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
