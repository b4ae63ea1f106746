"""The whole job as a user sees it: ``tristream run`` (defaults) against a lab's usual script.

Run from the repository root::

    python benchmarks/job.py                 # four real clips, 4 s each, short side 256
    python benchmarks/job.py --flow opencv   # tristream with OpenCV's TV-L1 instead

Both sides turn the same four real clips (two from each sample video in
``$TRISTREAM_DATA/videos`` or ``../shared/data/videos``) into 25 fps RGB frames
at short side 256 and TV-L1 flow between consecutive frames, stored as JPEG:

- **the lab's script** (what ``denseflow``-style tools do, on the same CPUs):
  OpenCV decodes each clip (``cv2.VideoCapture``), frames are taken at 25 fps
  (nearest source frame) and resized bilinearly with ``cv2.resize``, OpenCV's
  ``DualTVL1OpticalFlow`` at its defaults runs pair by pair on the gray frames,
  and every RGB frame and every flow plane (quantised as tristream does) is
  written as a JPEG file; once as one process (OpenCV's own threads), and once as a
  process pool with one clip per task and one OpenCV thread per process, as mmaction2's
  ``build_rawframes.py`` runs its extractor (``--num-worker`` = the CPUs);
- **tristream**: the ``tristream run`` command in a new process (start-up,
  Beam, the cache, the shards and the manifest included), ``--workers 0``
  (one worker thread per CPU).

It prints the wall seconds, the flow pairs and pairs/s of each side, their
ratio, and (from tristream's ``manifest.json``) how tristream's time divides
into start-up and the per-video work, measured in the same run. Both sides see
the same number of pairs (checked). Times are wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
from pipeline import default_videos  # benchmarks/pipeline.py: where the sample videos are

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS = 25.0
SHORT_SIDE = 256


def clips(videos: str, seconds: float) -> list[tuple[str, str, float, float]]:
    """(id, path, start, end): two clips of ``seconds`` from each sample video."""
    bikes = os.path.join(videos, "bikes.mp4")
    phone = os.path.join(videos, "carphone_pristine.mp4")
    return [
        ("bikes_a", bikes, 0.0, seconds),
        ("bikes_b", bikes, 5.0, 5.0 + seconds),
        ("phone_a", phone, 0.0, seconds),
        ("phone_b", phone, 2.0, 2.0 + seconds),
    ]


def lab_frames(path: str, start: float, end: float) -> list[np.ndarray]:
    """RGB frames of ``[start, end)`` at 25 fps, short side 256, decoded by OpenCV."""
    cap = cv2.VideoCapture(path)
    src_fps = cap.get(cv2.CAP_PROP_FPS) or FPS
    frames, index, want = [], 0, start
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        t = index / src_fps
        index += 1
        if t + 0.5 / src_fps < want:
            continue
        if t >= end:
            break
        h, w = bgr.shape[:2]
        scale = SHORT_SIDE / min(h, w)
        size = (round(w * scale / 2) * 2, round(h * scale / 2) * 2)
        frames.append(cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR))
        want += 1 / FPS
    cap.release()
    return frames


def lab_job(items: list[tuple[str, str, float, float]], out: str) -> tuple[float, int]:
    """The lab's script over every clip; returns (wall seconds, flow pairs)."""
    t0 = time.perf_counter()
    pairs = 0
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    for vid, path, start, end in items:
        folder = os.path.join(out, vid)
        os.makedirs(folder, exist_ok=True)
        frames = lab_frames(path, start, end)
        gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        for t, f in enumerate(frames):
            cv2.imwrite(os.path.join(folder, f"img_{t:05d}.jpg"), f,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])  # fmt: skip
        for t in range(len(gray) - 1):
            flow = tvl1.calc(gray[t], gray[t + 1], None)
            q = np.round(255 * (np.clip(flow, -20, 20) + 20) / 40).astype(np.uint8)
            for c, axis in enumerate("xy"):
                cv2.imwrite(os.path.join(folder, f"flow_{axis}_{t:05d}.jpg"), q[..., c],
                            [cv2.IMWRITE_JPEG_QUALITY, 95])  # fmt: skip
            pairs += 1
    return time.perf_counter() - t0, pairs


def _lab_clip(args: tuple[tuple[str, str, float, float], str]) -> int:
    """One clip of the lab's script in a pool worker (one OpenCV thread); its flow pairs."""
    item, out = args
    cv2.setNumThreads(1)
    return lab_job([item], out)[1]


def lab_pool_job(items: list[tuple[str, str, float, float]], out: str) -> tuple[float, int]:
    """The lab's script as a process pool over the clips (``build_rawframes.py`` style)."""
    import multiprocessing

    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        pairs = sum(pool.map(_lab_clip, [(item, out) for item in items]))
    return time.perf_counter() - t0, pairs


def tristream_job(
    items: list[tuple[str, str, float, float]], out: str, flow: str | None, workers: int
) -> tuple[float, dict]:
    """``tristream run`` over the same clips in a new process; (wall seconds, manifest)."""
    os.makedirs(out, exist_ok=True)
    manifest = os.path.join(out, "clips.csv")
    with open(manifest, "w", encoding="utf-8") as f:
        f.write("id,path,start,end\n")
        for vid, path, start, end in items:
            f.write(f"{vid},{path},{start},{end}\n")
    cmd = [sys.executable, "-m", "tristream.cli", "run", "--manifest", manifest,
           "--output", os.path.join(out, "out"), "--workers", str(workers),
           "--short-side", str(SHORT_SIDE)]  # fmt: skip
    if flow is not None:
        cmd += ["--flow", flow]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, "out", "manifest.json"), encoding="utf-8") as f:
        return wall, json.load(f)


def startup_seconds() -> float:
    """Wall seconds of a new Python importing the pipeline, torch and OpenCV (no work)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tristream.pipeline.run, torch, cv2"],
                   check=True, cwd=REPO)  # fmt: skip
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", default=default_videos(), help="folder with the sample videos")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each of the 4 clips")
    p.add_argument("--flow", default=None, help="tristream's --flow (default: its default)")
    p.add_argument("--workers", type=int, default=0, help="tristream's --workers")
    args = p.parse_args(argv)
    items = clips(args.videos, args.seconds)
    print("## The whole job: tristream run against a lab's OpenCV script\n")
    print("Command: `python " + " ".join(["benchmarks/job.py", *sys.argv[1:]]) + "`\n")
    print(f"- {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"opencv {cv2.__version__}, OpenCV threads {cv2.getNumThreads()}")  # fmt: skip
    print("- load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"- clips: {', '.join(f'{v} {s:g}-{e:g} s' for v, _, s, e in items)}\n")
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="tristream-job-") as tmp:
        lab_s, lab_pairs = lab_job(items, os.path.join(tmp, "lab"))
        pool_s, pool_pairs = lab_pool_job(items, os.path.join(tmp, "pool"))
        tri_s, manifest = tristream_job(items, os.path.join(tmp, "tri"), args.flow, args.workers)
        start_s = startup_seconds()
    totals = manifest["totals"]
    if totals["videos_written"] != totals["videos"]:
        raise SystemExit(f"tristream failed videos: {totals} (see its failures.jsonl)")
    pairs = manifest["metrics"].get("flow_pairs", 0)
    if pairs != lab_pairs:
        print(f"note: tristream solved {pairs} pairs, the lab's script {lab_pairs}")
    print("| job | seconds | flow pairs | pairs/s | vs the lab's script |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| lab's script (OpenCV decode, DualTVL1, JPEG files) | {lab_s:.1f} | {lab_pairs} "
          f"| {lab_pairs / lab_s:.2f} | 1.00x |")  # fmt: skip
    print(f"| lab's script as a process pool ({os.cpu_count()} processes, 1 OpenCV thread "
          f"each) | {pool_s:.1f} | {pool_pairs} | {pool_pairs / pool_s:.2f} "
          f"| {lab_s / pool_s:.2f}x |")  # fmt: skip
    flag = f"--flow {args.flow} " if args.flow else ""
    print(f"| `tristream run {flag}--workers {args.workers}` | {tri_s:.1f} "
          f"| {pairs} | {pairs / tri_s:.2f} | **{lab_s / tri_s:.2f}x** "
          f"({pool_s / tri_s:.2f}x the pool) |")  # fmt: skip
    print(f"\nOf tristream's {tri_s:.1f} s, {start_s:.1f} s is starting Python and importing "
          f"Beam, torch and OpenCV (measured alone); kernel paths: "
          + ", ".join(f"{k} {v}" for k, v in manifest["metrics"].items()
                      if k.startswith("flow_kernel")))  # fmt: skip
    print("Load average at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
