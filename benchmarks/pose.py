"""Benchmark: person detection (YOLOX-nano, ONNX Runtime) and PoseResNet-50 keypoints.

Measures, on real frames of ``bikes.mp4`` (decoded at 25 fps, short side 256: 602x256):

* detector frames/s: ``YoloxOnnxDetector`` end to end (letterbox + RGB->BGR on the CPU,
  the network, grid decoding, NMS), and the network alone (``session.run`` on prepared
  416x416 inputs), batch 1 as the shared model's batch dimension is fixed;
* PoseResNet-50 crops/s at 256x192 with random weights for each batch size: the network
  alone (normalised input already on the device) and the whole ``PoseEstimator`` call
  (affine crops from real frames, normalisation, network, DARK decoding, mapping back),
  in float32 and, on CUDA, under float16 autocast (``--dtype``).

Every figure is the median of ``--repeats`` timed runs after one warm-up run; on CUDA the
timings synchronise the device. Prints markdown tables and the machine.

Usage::

    python benchmarks/pose.py [--device cpu|cuda|auto] [--frames 16] [--crops 32]
        [--batch-sizes 1,8,32] [--repeats 3] [--threads T] [--dtype float16]

Data: ``$TRISTREAM_DATA/videos/bikes.mp4`` and ``$TRISTREAM_DATA/models/
yolox_nano_416x416.onnx`` (default ``<repo>/../shared/data``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tristream.models.detector import YoloxOnnxDetector  # noqa: E402
from tristream.models.pose_resnet import PoseModel, PoseResNet, resolve_device  # noqa: E402
from tristream.transforms.decode import decode_video  # noqa: E402
from tristream.transforms.pose import PoseEstimator  # noqa: E402

DATA = Path(os.environ.get("TRISTREAM_DATA", REPO.parent / "shared" / "data"))


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none used"
    try:
        load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    return (
        f"- CPU: {cpu}, {os.cpu_count()} logical cores visible, torch threads "
        f"{torch.get_num_threads()}, load average at start {load}\n"
        f"- GPU: {gpu}\n"
        f"- python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
        f"{ort.__version__} (providers {ort.get_available_providers()}), numpy "
        f"{np.__version__}"
    )


def timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def bench_detector(frames: np.ndarray, device: str, repeats: int, threads: int | None):
    det = YoloxOnnxDetector(
        DATA / "models" / "yolox_nano_416x416.onnx", device=device, threads=threads
    )
    batch, _ = det.preprocess(frames)
    n = len(frames)
    found = sum(len(b) for b in det(frames))
    lines = [
        "| detector | provider | frames | s | frames/s | ms/frame |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, fn in (
        ("YOLOX-nano 416, end to end", lambda: det(frames)),
        ("YOLOX-nano 416, network only", lambda: det.raw(batch)),
    ):
        t = timed(fn, repeats, lambda: None)
        lines.append(
            row([name, det.providers[0], n, f"{t:.3f}", f"{n / t:.1f}", f"{1e3 * t / n:.1f}"])
        )
    return lines, found


def bench_pose(frames, device: torch.device, sizes, crops: int, repeats: int, dtypes):
    torch.manual_seed(0)
    model = PoseModel.from_module(PoseResNet(50), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    h, w = frames.shape[1:3]
    lines = [
        "| PoseResNet-50 256x192 | dtype | batch | crops | s | crops/s | ms/crop |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for dtype in dtypes:
        for bs in sizes:
            n = max(bs, crops // bs * bs)
            x = torch.randn(bs, 3, 256, 192, device=device)
            est = PoseEstimator(model, decoder="dark", batch_size=bs, dtype=dtype)

            def net(x=x, est=est, n=n, bs=bs):
                with (
                    torch.inference_mode(),
                    torch.autocast(
                        device.type, dtype=est.dtype or torch.float32, enabled=est.dtype is not None
                    ),
                ):
                    for _ in range(n // bs):
                        model(x)

            # boxes: person-sized random boxes spread over the frames, n in all
            per = [[] for _ in frames]
            for i in range(n):
                bw, bh = rng.uniform(60, 200), rng.uniform(120, 250)
                x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                per[i % len(frames)].append([x1, y1, x1 + bw, y1 + bh, 0.9])
            boxes = [np.array(b, np.float32).reshape(-1, 5) for b in per]
            name = "float32" if dtype is None else str(dtype).replace("torch.", "")
            for what, fn in (
                ("network", net),
                ("estimator", lambda est=est, b=boxes: est(frames, b)),
            ):
                t = timed(fn, repeats, sync)
                lines.append(
                    row([what, name, bs, n, f"{t:.3f}", f"{n / t:.1f}", f"{1e3 * t / n:.1f}"])
                )
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    ap.add_argument("--frames", type=int, default=16, help="frames for the detector")
    ap.add_argument("--crops", type=int, default=32, help="crops per pose measurement")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads")
    ap.add_argument("--dtype", default="float16", help="autocast dtype also timed on CUDA")
    ap.add_argument("--skip-detector", action="store_true")
    ap.add_argument("--skip-pose", action="store_true")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    video = decode_video(str(DATA / "videos" / "bikes.mp4"), fps=25, short_side=256)
    idx = np.linspace(0, len(video) - 1, args.frames).round().astype(int)
    frames = np.ascontiguousarray(video[idx])
    print(f"## `python benchmarks/pose.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
    print()
    print(machine(device))
    print()
    if not args.skip_detector:
        lines, found = bench_detector(frames, str(device.type), args.repeats, args.threads)
        print("\n".join(lines))
        print(f"\n{len(frames)} real frames of bikes.mp4 ({frames.shape[2]}x{frames.shape[1]}), "
              f"{found} person boxes found in all.\n")  # fmt: skip
    if not args.skip_pose:
        dtypes = [None]
        if device.type == "cuda" and args.dtype not in ("", "float32", "none"):
            dtypes.append(getattr(torch, args.dtype))
        sizes = [int(s) for s in args.batch_sizes.split(",") if s]
        print("\n".join(bench_pose(frames, device, sizes, args.crops, args.repeats, dtypes)))
        print(
            f"\nRandom weights; `network`: forward passes on a ready input of "
            f"{args.crops} crops; `estimator`: `PoseEstimator(decoder='dark')` on real frames "
            "with random person-sized boxes (crops, normalisation, network, decoding).\n"
        )


if __name__ == "__main__":
    main()
