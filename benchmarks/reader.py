"""The trainer's read path: ShardDataset (Parquet, TFRecord) against rawframes and decord.

Run from the repository root (decord: ``pip install decord``, benchmarks only)::

    python benchmarks/reader.py                      # the table, both dtypes
    python benchmarks/reader.py --memory             # also worker memory over 100..1000 shards
    python benchmarks/reader.py --epochs 2 --dtypes uint8

The clips: the real sample videos (``scripts/samples.py``: bikes, carphone, Big Buck
Bunny), each looped to 10 s from two start points (0 s and 2 s) and re-encoded
(H.264, libx264 defaults, 25 fps, a keyframe every 2 s), so six real 10 s clips.
tristream's decode (25 fps, short side 256) makes one 250-frame row of each (RGB
JPEG q95, as ``tristream run``); the rows go into Parquet and TFRecord shards (3 rows
per file, with their frame indexes) and, as the very same JPEG bytes, into mmaction2's
"rawframes" layout (``<video>/img_00001.jpg`` ...).

Every reader makes the same clips: ``--clip-len`` frames (16) at ``--stride`` (2),
a random ``--crop`` (224) crop and a flip, from the same frame indices, crops and
flips (``ClipSampler``/``CropFlip``/``sample_rng`` of ``tristream.shards``, seeded
alike), through a ``DataLoader(num_workers=--workers, batch_size=--batch-size)``,
as ``float32`` in [-1, 1] or ``uint8`` levels (``--dtypes``):

- ``ShardDataset parquet`` / ``tfrecord``: frame indexes on (the default: only the
  clip's frames are read), and ``frame_index="off"`` (whole rows, the old path).
- ``rawframes (mmaction2 style)``, the reference: ``cv2.imread`` of the clip's 16 files,
  ``cvtColor`` to RGB, crop and flip views, ``np.stack`` and a transpose to
  ``[3, T, H, W]``, as mmaction2's RawFrameDecode / RandomCrop / Flip / FormatShape do.
- ``rawframes, crop-first decode``: the same files read with tristream's clip decode
  (straight to RGB, one copy of the crop): what is left is only the file layout.
- ``decord``: the source clips, ``VideoReader(num_threads=1)`` resizing to the rows'
  size while decoding, ``get_batch`` (it seeks to the keyframe and decodes forward);
  one open reader per video and worker.

Figures (each the median of ``--rounds`` rounds of ``--epochs`` epochs over the
clips repeated ``--repeat`` times per epoch, rounds interleaving the readers):
clips/s (wall); CPU ms per clip (user + system of the main process and its workers,
robust to other load); MB read per clip (the workers' ``rchar``, bytes passed to
``read``/``pread``, page cache hits included); worker private memory (the largest
``USS`` of a worker, sampled every 32 clips; ``psutil``; it includes the batches in
shared memory a worker has made and not yet handed over, 19 MB each for uint8, so the
median over the samples is given too in the memory table). The memory table
(``--memory``) starts its one worker with ``spawn`` and has it read ``--memory-clips``
clips whatever the number of shard paths (cycling epochs): a forked worker's USS also
counts the pages of its parent's heap that it happens to write, which moved by up to
40 MiB between two runs of one configuration on this VM. Ratios are against the
rawframes reference of the same run. cv2 and torch run one thread per worker.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.samples import video  # noqa: E402
from tristream.shards import ShardDataset  # noqa: E402
from tristream.shards.clip_decode import decode_window  # noqa: E402
from tristream.shards.clip_transforms import CropFlip, images_to_tensor  # noqa: E402
from tristream.shards.files import write_rows  # noqa: E402
from tristream.shards.frame_index import index_path  # noqa: E402
from tristream.shards.partition import current_worker  # noqa: E402
from tristream.shards.row import encode_row  # noqa: E402
from tristream.shards.sampling import ClipSampler, sample_rng  # noqa: E402
from tristream.shards.schema import arrow_schema  # noqa: E402

SOURCES = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")
STARTS = (0.0, 2.0)


# --------------------------------------------------------------------------- data


def make_data(work: Path) -> dict:
    """The source clips, the shards and the rawframes under ``work`` (made once, kept)."""
    import imageio_ffmpeg

    from tristream.transforms.decode import decode_segments

    done = work / "data.json"
    if done.is_file():
        return json.loads(done.read_text())
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    (work / "clips").mkdir(parents=True, exist_ok=True)
    rows, clips = [], []
    for name in SOURCES:
        for k, start in enumerate(STARTS):
            vid = f"{Path(name).stem}{k}"
            clip = work / "clips" / f"{vid}.mp4"
            subprocess.run(
                [ffmpeg, "-y", "-nostdin", "-loglevel", "error", "-stream_loop", "-1",
                 "-ss", str(start), "-i", str(video(name)), "-t", "10", "-r", "25",
                 "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p", "-an", str(clip)],
                check=True,
            )  # fmt: skip
            seg = next(decode_segments(str(clip), fps=25.0, short_side=256, max_frames=300))
            rows.append(encode_row(
                video_id=vid, source=str(clip), label=name, label_index=len(rows), segment=0,
                start_frame=0, fps=25.0, frames=seg.frames,
                meta=json.dumps({"schema_version": 1}),
            ))  # fmt: skip
            clips.append(str(clip))
            folder = work / "rawframes" / vid
            folder.mkdir(parents=True, exist_ok=True)
            for t, data in enumerate(rows[-1]["rgb"]):
                (folder / f"img_{t + 1:05d}.jpg").write_bytes(data)
    schema = arrow_schema(("rgb",))
    shards: dict[str, list[str]] = {}
    for fmt in ("parquet", "tfrecord"):
        (work / fmt).mkdir(exist_ok=True)
        shards[fmt] = []
        for k in range(2):
            path = work / fmt / f"train-{k:05d}-of-00002.{fmt}"
            write_rows(str(path), rows[k * 3 : k * 3 + 3], schema)
            shards[fmt].append(str(path))
    data = {
        "clips": clips,
        "videos": [r["video_id"] for r in rows],
        "sizes": [[r["height"], r["width"]] for r in rows],
        "frames": [r["num_frames"] for r in rows],
        "row_bytes": [sum(len(b) for b in r["rgb"]) for r in rows],
        "shards": shards,
        "rawframes": str(work / "rawframes"),
    }
    done.write_text(json.dumps(data, indent=1))
    return data


def linked_shards(src: list[str], folder: Path, count: int) -> list[str]:
    """``count`` shard paths (hard links to ``src`` in turn), each with its own frame index
    (the source's, renamed: the names have the same length)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(count):
        s = src[k % len(src)]
        fmt = s.rsplit(".", 1)[1]
        dst = folder / f"train-{k:05d}-of-{count:05d}.{fmt}"
        if not dst.exists():
            os.link(s, dst)
            data = Path(index_path(s)).read_bytes()
            old, new = os.path.basename(s).encode(), dst.name.encode()
            assert len(old) == len(new)
            Path(index_path(dst)).write_bytes(data.replace(old, new, 1))
        out.append(str(dst))
    return out


# --------------------------------------------------------------------------- readers


class ClipReader(IterableDataset):
    """rawframes or decord clips: the same units, sampling, crops and flips as
    ``ShardDataset(shuffle=False, train=True)`` over the same rows."""

    def __init__(self, kind: str, data: dict, repeat: int, args, dtype: torch.dtype):
        self.kind, self.data, self.repeat, self.dtype = kind, data, repeat, dtype
        self.sampler = ClipSampler(args.clip_len, args.stride, "random", True)
        self.crop_flip = CropFlip((args.crop, args.crop), True, 0.5)
        self.seed, self.epoch = 0, 0
        self._readers: dict[int, object] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        worker, workers = current_worker()
        units = len(self.data["videos"]) * self.repeat
        for unit in range(worker, units, workers):  # any fixed split: the clips are the same
            v = unit % len(self.data["videos"])
            rng = sample_rng(self.seed, self.epoch, unit)
            idx = self.sampler.indices(self.data["frames"][v], 0, rng)
            h, w = self.data["sizes"][v]
            box, flip = self.crop_flip.draw(h, w, rng)
            yield {"rgb": self._clip(v, idx, box, flip), "video_id": self.data["videos"][v]}

    def _clip(self, v: int, idx: np.ndarray, box, flip: bool) -> torch.Tensor:
        if self.kind == "decord":
            return self._decord(v, idx, box, flip)
        folder = os.path.join(self.data["rawframes"], self.data["videos"][v])
        paths = [os.path.join(folder, f"img_{t + 1:05d}.jpg") for t in idx]
        if self.kind == "rawframes-crop-first":
            out = np.empty((3, len(idx), box.height, box.width), np.uint8)
            for k, p in enumerate(paths):
                with open(p, "rb") as f:
                    decode_window(f.read(), self.data["sizes"][v], box, flip, out[:, k])
            return images_to_tensor(out, self.dtype)
        frames = []  # mmaction2: RawFrameDecode (rgb), RandomCrop, Flip, FormatShape
        for p in paths:
            image = cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)
            window = box.crop(image)
            frames.append(window[:, ::-1] if flip else window)
        clip = np.stack(frames).transpose(3, 0, 1, 2)
        if self.dtype == torch.uint8:
            return torch.from_numpy(np.ascontiguousarray(clip))
        return images_to_tensor(clip, self.dtype)

    def _decord(self, v: int, idx: np.ndarray, box, flip: bool) -> torch.Tensor:
        import decord

        reader = self._readers.get(v)
        if reader is None:
            h, w = self.data["sizes"][v]
            reader = decord.VideoReader(self.data["clips"][v], width=w, height=h, num_threads=1)
            self._readers[v] = reader
        frames = reader.get_batch(sorted(set(int(i) for i in idx))).asnumpy()
        pos = {t: k for k, t in enumerate(sorted(set(int(i) for i in idx)))}
        clip = np.stack([frames[pos[int(t)]] for t in idx])
        window = clip[:, box.top : box.top + box.height, box.left : box.left + box.width]
        window = window[:, :, ::-1] if flip else window
        return images_to_tensor(np.ascontiguousarray(window.transpose(3, 0, 1, 2)), self.dtype)


class Measured(IterableDataset):
    """Wraps a dataset; each DataLoader worker writes what it read and held to ``folder``."""

    def __init__(self, inner: IterableDataset, folder: str):
        self.inner, self.folder = inner, folder

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        import psutil

        proc = psutil.Process()
        rchar0 = _rchar()
        cpu0 = sum(proc.cpu_times()[:2])
        clips, uss = 0, [proc.memory_full_info().uss]
        try:
            for sample in self.inner:  # a clip, or a batch of them
                ids = sample["video_id"]
                before, clips = clips, clips + (len(ids) if isinstance(ids, list) else 1)
                if clips // 32 != before // 32:
                    uss.append(proc.memory_full_info().uss)
                yield sample
        finally:
            uss.append(proc.memory_full_info().uss)
            record = {"clips": clips, "rchar": _rchar() - rchar0, "uss": max(uss),
                      "uss_median": statistics.median(uss),
                      "cpu": sum(proc.cpu_times()[:2]) - cpu0}  # fmt: skip
            with open(os.path.join(self.folder, f"{os.getpid()}-{time.time_ns()}.json"), "w") as f:
                json.dump(record, f)


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("rchar"))


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Result:
    name: str
    make: Callable[[], IterableDataset]
    batched: bool = False  # the dataset yields batches: DataLoader(batch_size=None)
    context: str | None = None  # the DataLoader's multiprocessing context (None: fork)
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)
    uss: list[float] = field(default_factory=list)
    uss_median: list[float] = field(default_factory=list)
    clips: int = 0

    def run(self, args, epochs: int) -> None:
        ds = self.make()
        with tempfile.TemporaryDirectory() as folder:
            measured = Measured(ds, folder)
            c0, t0, clips = _cpu(), time.perf_counter(), 0
            for epoch in range(epochs):
                measured.set_epoch(epoch)
                size = None if self.batched else args.batch_size
                loader = DataLoader(measured, batch_size=size, num_workers=args.workers,
                                    worker_init_fn=_worker_init,
                                    multiprocessing_context=self.context)  # fmt: skip
                for batch in loader:
                    clips += len(batch["rgb"])
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            records = [json.loads(p.read_text()) for p in Path(folder).glob("*.json")]
        assert sum(r["clips"] for r in records) == clips, (self.name, clips)
        self.clips = clips
        self.walls.append(wall / clips)
        self.cpus.append(cpu / clips)
        self.reads.append(sum(r["rchar"] for r in records) / clips)
        self.uss.append(max(r["uss"] for r in records))
        self.uss_median.append(max(r["uss_median"] for r in records))


# --------------------------------------------------------------------------- memory


class Cycled(IterableDataset):
    """The first ``clips`` samples of ``inner``'s epochs 0, 1, 2, ... in turn (so that a
    worker reads the same number of clips whatever the number of shard paths)."""

    def __init__(self, inner: ShardDataset, clips: int):
        self.inner, self.clips = inner, clips

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self) -> Iterator[dict]:
        def epochs() -> Iterator[dict]:
            for epoch in range(self.clips + 1):
                self.inner.set_epoch(epoch)
                yield from self.inner

        for n, sample in enumerate(epochs()):
            if n == self.clips:
                return
            yield sample


def memory_probe(data: dict, work: Path, args, fmt: str, mode: str, count: int) -> dict:
    """One DataLoader worker (started with ``spawn``) reads ``--memory-clips`` uint8 clips
    from ``count`` shard paths; its largest and median USS, and the clips. Run in a fresh
    process (``--memory-probe``)."""
    paths = linked_shards(data["shards"][fmt], work / f"linked-{fmt}-{count}", count)
    ds = ShardDataset(paths, modalities=("rgb",), clip_len=args.clip_len, frame_stride=args.stride,
                      crop=args.crop, dtype=torch.uint8, frame_index=mode, seed=0)  # fmt: skip
    result = Result(f"{fmt} {mode} {count}", lambda: Cycled(ds, args.memory_clips),
                    context="spawn")  # fmt: skip
    args.workers = 1
    result.run(args, 1)
    return {"uss": result.uss[0], "uss_median": result.uss_median[0], "clips": result.clips}


def memory_table(work: Path, args) -> list[str]:
    """Largest worker USS while a worker reads clips from lists of N shard paths."""
    lines = ["| format | frame index | shard paths | clips read | worker USS MiB, largest "
             "| worker USS MiB, median | median vs 100 paths |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for fmt in ("parquet", "tfrecord"):
        for mode in ("auto", "off"):
            base = None
            for count in (100, 120, 1000):
                cmd = [sys.executable, __file__, "--work", str(work), "--clip-len",
                       str(args.clip_len), "--stride", str(args.stride), "--crop", str(args.crop),
                       "--batch-size", str(args.batch_size), "--memory-clips",
                       str(args.memory_clips), "--memory-probe", fmt, mode, str(count)]  # fmt: skip
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                probe = json.loads(out.strip().splitlines()[-1])
                mib, med = probe["uss"] / 2**20, probe["uss_median"] / 2**20
                base = base or med
                lines.append(f"| {fmt} | {mode} | {count} | {probe['clips']} | {mib:.0f} | "
                             f"{med:.0f} | {med / base:.2f}x |")  # fmt: skip
                print(lines[-1], flush=True)
            for count in (100, 120, 1000):
                shutil.rmtree(work / f"linked-{fmt}-{count}", ignore_errors=True)
    return lines


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(REPO / ".cache" / "reader-bench"),
                    help="where the clips, shards and rawframes are made (kept)")  # fmt: skip
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=48, help="each row's clips per epoch")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "uint8"],
                    choices=("float32", "uint8"))  # fmt: skip
    ap.add_argument("--no-decord", action="store_true", help="leave decord out")
    ap.add_argument("--memory", action="store_true", help="also the worker memory table")
    ap.add_argument("--memory-only", action="store_true", help="only the worker memory table")
    ap.add_argument("--memory-clips", type=int, default=3000,
                    help="clips each worker of the memory table reads")  # fmt: skip
    ap.add_argument(
        "--memory-probe", nargs=3, metavar=("FMT", "MODE", "COUNT"), help=argparse.SUPPRESS
    )  # one row of the memory table, in a fresh process
    args = ap.parse_args(argv)
    # One thread for OpenCV here too: a worker forked from a process whose OpenCV thread
    # pool has run can hang in it.
    cv2.setNumThreads(1)
    work = Path(args.work)
    t0 = time.perf_counter()
    data = make_data(work)
    if args.memory_probe:
        fmt, mode, count = args.memory_probe
        print(json.dumps(memory_probe(data, work, args, fmt, mode, int(count))))
        return 0
    load0 = os.getloadavg()[0]
    print(f"data in {work} ({time.perf_counter() - t0:.0f} s): {len(data['videos'])} rows of "
          f"{data['frames']} frames, {np.mean(data['row_bytes']) / 1e6:.2f} MB of JPEG per row; "
          f"{os.cpu_count()} cpus, load {load0:.1f}; python {platform.python_version()}, "
          f"torch {torch.__version__}, opencv {cv2.__version__}", flush=True)  # fmt: skip
    if args.memory_only:
        print("\n".join(memory_table(work, args)))
        return 0
    have_decord = not args.no_decord
    if have_decord:
        try:
            import decord  # noqa: F401
        except ImportError:
            print("decord is not installed: pip install decord (its row is left out)")
            have_decord = False

    results: list[tuple[str, Result]] = []
    for name in args.dtypes:
        dtype = getattr(torch, name)
        kw = dict(modalities=("rgb",), clip_len=args.clip_len, frame_stride=args.stride,
                  crop=args.crop, dtype=dtype, shuffle=False, seed=0)  # fmt: skip
        runs = [("rawframes (mmaction2 style), reference", lambda d=dtype: ClipReader(
                    "rawframes", data, args.repeat, args, d), False)]  # fmt: skip
        runs.append(("rawframes, crop-first decode", lambda d=dtype: ClipReader(
            "rawframes-crop-first", data, args.repeat, args, d), False))  # fmt: skip
        for fmt in ("parquet", "tfrecord"):
            for mode, label, batch in (
                ("auto", "frame index", None),
                ("auto", "frame index, batch_size=8 in the dataset", args.batch_size),
                ("off", "whole rows", None),
            ):
                paths = data["shards"][fmt] * args.repeat

                def make(p=paths, m=mode, k=kw, b=batch) -> ShardDataset:
                    return ShardDataset(p, frame_index=m, batch_size=b, **k)

                runs.append((f"ShardDataset {fmt}, {label}", make, batch is not None))
        if have_decord:
            runs.append(("decord on the source clips", lambda d=dtype: ClipReader(
                "decord", data, args.repeat, args, d), False))  # fmt: skip
        for label, make, batched in runs:
            results.append((name, Result(label, make, batched)))
    # the same clips from every reader (the shards and rawframes hold the same bytes)
    check = [r for n, r in results if n == args.dtypes[0] and "decord" not in r.name]
    first = [
        next(iter(DataLoader(r.make(), batch_size=None if r.batched else args.batch_size)))["rgb"]
        for r in check
    ]
    assert all(torch.equal(first[0], x) for x in first[1:]), "readers disagree"
    for _ in range(args.rounds):
        for _, r in results:
            r.run(args, args.epochs)
            print(f"  {r.name} ({_name(results, r)}): {1 / r.walls[-1]:.1f} clips/s, "
                  f"{r.cpus[-1] * 1e3:.1f} ms CPU", flush=True)  # fmt: skip

    med = statistics.median
    print(f"\nload average: {load0:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print(
        "| dtype | reader | clips/s | CPU ms per clip | MB read per clip | worker USS MiB "
        "| CPU vs rawframes | bytes vs rawframes |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.dtypes:
        rows = [r for n, r in results if n == name]
        ref = rows[0]
        for r in rows:
            cpu, reads = med(r.cpus), med(r.reads)
            print(f"| {name} | {r.name} | {1 / med(r.walls):.1f} | {cpu * 1e3:.1f} | "
                  f"{reads / 1e6:.2f} | {max(r.uss) / 2**20:.0f} | "
                  f"{cpu / med(ref.cpus):.2f} | {reads / med(ref.reads):.2f} |")  # fmt: skip
    print(f"\n{results[0][1].clips} clips per round and reader, median of {args.rounds} rounds")
    if args.memory:
        print(
            f"\nworker memory: one DataLoader worker (spawn), {args.memory_clips} uint8 clips "
            "each, each row in a fresh process (shard paths: hard links to the 2 shard files, "
            "each with its own index)\n"
        )
        lines = memory_table(work, args)
        print("\n".join(lines))
    return 0


def _name(results: list[tuple[str, Result]], r: Result) -> str:
    return next(n for n, x in results if x is r)


if __name__ == "__main__":
    sys.exit(main())
