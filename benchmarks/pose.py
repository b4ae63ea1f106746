"""Benchmark: person detection (YOLOX-nano, ONNX Runtime) and PoseResNet-50 keypoints.

Measures, on real frames of ``bikes.mp4`` (decoded at 25 fps, short side 256: 602x256):

* detector frames/s: ``YoloxOnnxDetector`` end to end (letterbox + RGB->BGR on the CPU,
  the network, grid decoding, NMS), and the network alone (``session.run`` on prepared
  416x416 inputs), batch 1 as the shared model's batch dimension is fixed;
* PoseResNet-50 crops/s at 256x192 with random weights for each batch size: the network
  alone (normalised input already on the device) and the whole ``PoseEstimator`` call
  (affine crops from real frames, normalisation, network, DARK decoding, mapping back),
  in float32 and, on CUDA, under float16 autocast (``--dtype``);
* BlazePose GHUM lite, full and heavy crops/s (``OnnxPoseModel`` on ONNX Runtime, the
  ``--pose-models`` folder) for each batch size: the network alone (``session.run`` on
  prepared 256x256 inputs) and the whole ``PoseEstimator`` call;
* one table of every model's ``PoseEstimator`` crops/s with a ratio column against one
  reference measured in the same run (``--reference``: PoseResNet-50 float32 at the
  first batch size unless named otherwise).

The pose figures crop the same real boxes: YOLOX-nano's person boxes of the frames,
repeated in turn until there are ``--crops`` of them (PoseResNet's earlier random
person-sized boxes are gone, so all models see the same crops).

Every figure is the median of ``--repeats`` timed runs after one warm-up run; on CUDA the
timings synchronise the device. Prints markdown tables and the machine.

Usage::

    python benchmarks/pose.py [--device cpu|cuda|auto] [--frames 16] [--crops 32]
        [--batch-sizes 1,8,32] [--repeats 3] [--threads T] [--dtype float16]
        [--blazepose lite,full,heavy] [--reference 'PoseResNet-50 float32 b1']

Data: ``$TRISTREAM_DATA/videos/bikes.mp4``, ``$TRISTREAM_DATA/models/
yolox_nano_416x416.onnx`` and ``blazepose_{lite,full,heavy}.onnx`` (default
``<repo>/../shared/data``).
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
from tristream.models.pose_onnx import OnnxPoseModel  # noqa: E402
from tristream.models.pose_resnet import PoseModel, PoseResNet, resolve_device  # noqa: E402
from tristream.transforms.decode import decode_video  # noqa: E402
from tristream.transforms.pose import PoseEstimator, crop_persons  # noqa: E402

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
    found = det(frames)
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


def real_boxes(frames: np.ndarray, found: list[np.ndarray], n: int) -> list[np.ndarray]:
    """``n`` real person boxes spread over the frames: the detector's boxes in turn."""
    pool = [(i, b) for i, bs in enumerate(found) for b in bs]
    if not pool:
        raise SystemExit("the detector found no person in the frames: no real crops")
    per: list[list[np.ndarray]] = [[] for _ in frames]
    for k in range(n):
        i, b = pool[k % len(pool)]
        per[i].append(b)
    return [np.array(b, np.float32).reshape(-1, 5) for b in per]


def bench_pose(frames, found, device: torch.device, sizes, crops: int, repeats: int, dtypes,
               rates: dict):  # fmt: skip
    """PoseResNet-50 rows; ``rates[(name, batch)]`` gets each estimator crops/s."""
    torch.manual_seed(0)
    model = PoseModel.from_module(PoseResNet(50), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
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

            boxes = real_boxes(frames, found, n)
            name = "float32" if dtype is None else str(dtype).replace("torch.", "")
            for what, fn in (
                ("network", net),
                ("estimator", lambda est=est, b=boxes: est(frames, b)),
            ):
                t = timed(fn, repeats, sync)
                if what == "estimator":
                    rates[(f"PoseResNet-50 {name}", bs)] = n / t
                lines.append(
                    row([what, name, bs, n, f"{t:.3f}", f"{n / t:.1f}", f"{1e3 * t / n:.1f}"])
                )
    return lines


def bench_blazepose(frames, found, models: Path, names, device: str, sizes, crops: int,
                    repeats: int, threads: int | None, rates: dict):  # fmt: skip
    """BlazePose rows (ONNX Runtime); ``rates[(name, batch)]`` gets each estimator crops/s."""
    lines = [
        "| BlazePose 256x256 | provider | what | batch | crops | s | crops/s | ms/crop |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in names:
        for bs in sizes:
            n = max(bs, crops // bs * bs)
            model = OnnxPoseModel(models / f"blazepose_{size}.onnx", device=device,
                                  batch_size=bs, threads=threads)  # fmt: skip
            est = PoseEstimator(model, batch_size=bs)
            boxes = real_boxes(frames, found, n)
            ready = np.zeros((n, 256, 256, 3), np.uint8)  # real crops, cut once
            k = 0
            for f, b in zip(frames, boxes):
                c = crop_persons(f, b[:, :4], model.input_size, est.scale_factor).images
                ready[k : k + len(c)] = c
                k += len(c)
            x = model.preprocess(ready)

            def net(model=model, x=x, bs=bs):
                for s in range(0, len(x), bs):
                    model.session.run(None, {model.input_name: x[s : s + bs]})

            for what, fn in (("network", net), ("estimator", lambda e=est, b=boxes: e(frames, b))):
                t = timed(fn, repeats, lambda: None)
                if what == "estimator":
                    rates[(f"BlazePose {size}", bs)] = n / t
                lines.append(row([size, model.providers[0], what, bs, n, f"{t:.3f}",
                                  f"{n / t:.1f}", f"{1e3 * t / n:.1f}"]))  # fmt: skip
    return lines


def ratio_table(rates: dict, reference: str | None) -> list[str]:
    """Every estimator's crops/s and its ratio to the reference (one row of ``rates``)."""
    if not rates:
        return []
    keys = list(rates)
    ref = keys[0]
    if reference:
        matches = [k for k in keys if f"{k[0]} b{k[1]}" == reference]
        if not matches:
            raise SystemExit(f"--reference {reference!r} not measured; have "
                             f"{[f'{k[0]} b{k[1]}' for k in keys]}")  # fmt: skip
        ref = matches[0]
    lines = [
        f"| model (PoseEstimator, real crops) | batch | crops/s | ms/crop | x {ref[0]} b{ref[1]} |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for k in keys:
        r = rates[k]
        lines.append(row([k[0], k[1], f"{r:.1f}", f"{1e3 / r:.1f}", f"{r / rates[ref]:.2f}"]))
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
    ap.add_argument("--blazepose", default="lite,full,heavy",
                    help="BlazePose sizes to time ('' for none)")  # fmt: skip
    ap.add_argument(
        "--reference", default=None, help="ratio reference, e.g. 'BlazePose lite b1' (first row)"
    )
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
              f"{sum(len(b) for b in found)} person boxes found in all.\n")  # fmt: skip
    else:  # the pose crops still come from the detector's boxes
        det = YoloxOnnxDetector(
            DATA / "models" / "yolox_nano_416x416.onnx",
            device=str(device.type),
            threads=args.threads,
        )
        found = det(frames)
    if not args.skip_pose:
        dtypes = [None]
        if device.type == "cuda" and args.dtype not in ("", "float32", "none"):
            dtypes.append(getattr(torch, args.dtype))
        sizes = [int(s) for s in args.batch_sizes.split(",") if s]
        rates: dict = {}
        print("\n".join(bench_pose(frames, found, device, sizes, args.crops, args.repeats,
                                   dtypes, rates)))  # fmt: skip
        print(
            f"\nRandom weights; `network`: forward passes on a ready input of "
            f"{args.crops} crops; `estimator`: `PoseEstimator(decoder='dark')` on real frames "
            "with YOLOX-nano's boxes (crops, normalisation, network, decoding).\n"
        )
        names = [s for s in args.blazepose.split(",") if s]
        if names:
            print("\n".join(bench_blazepose(frames, found, DATA / "models", names,
                                            str(device.type), sizes, args.crops,
                                            args.repeats, args.threads, rates)))  # fmt: skip
            print(
                "\nReal weights (MediaPipe, converted to ONNX); `network`: `session.run` on "
                "ready 256x256 inputs of the real crops; `estimator`: `PoseEstimator` on the "
                "frames and boxes (square 1.25x crops, the network, mapping back).\n"
            )
        print("\n".join(ratio_table(rates, args.reference)))
        print()


if __name__ == "__main__":
    main()
