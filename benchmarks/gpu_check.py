"""The prepared GPU check of the torch TV-L1 solver: agreement with OpenCV and speed per kernel.

One command on a machine with a CUDA GPU, torch and Triton (OpenCV's contrib module, Apache
Beam and the network are not needed; OpenCV is not imported at all)::

    python benchmarks/gpu_check.py                      # ~2-4 minutes on one H100/H200

It prints, per kernel path (``eager``, ``triton``, ``compiled``; eager in the same run):

* agreement with OpenCV's DualTVL1 on real consecutive frames (bikes.mp4 at short side
  256, 256x602, default parameters): mean end-point error (px) and the share of
  uint8-quantised flow values (q = round(255 * (clip(f, -20, 20) + 20) / 40)) within one
  level; targets: EPE <= 0.015 px, >= 99%;
* speed at 256x340 (the stored frames, centre crop) for batch 16 / 64 / 256: pairs/s,
  peak GPU memory per pair (``torch.cuda.max_memory_allocated`` / batch), host syncs per
  batch (reads of the device-side convergence mask), outer runs per batch, OOM splits,
  and pairs/s against the issue's bandwidth bound for the GPU (H100 ~900, H200 ~1,250).

A kernel path that cannot run is reported (``ran eager!`` and the reason), never hidden.
Rows that would start past the time budget (``--budget-s``, default 240 s) are skipped and say
so; a row still running at budget + ``--grace-s`` (280 s) is stopped, and the tables printed.

The reference (``benchmarks/data/tvl1_reference.npz``, < 5 MB) holds the input frames as
gray uint8 and OpenCV's flows as int16 in 1/1024 px; it is made on a host with OpenCV
contrib and the sample videos::

    python benchmarks/gpu_check.py --make-reference     # reads ../shared/data/videos/bikes.mp4

Dry run on a CPU (tiny settings; the triton path only under ``TRITON_INTERPRET=1``, a test
mode, so not timed for real)::

    python benchmarks/gpu_check.py --device cpu --kernels eager --accuracy-pairs 1 \\
        --batches 2 --speed-size 64x80                  # ~10 s
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --device cpu --kernels triton,eager \\
        --skip-accuracy --batches 2 --speed-size 32x40 --sync-every 3 \\
        --speed-params nscales=1,warps=1,outer_iterations=2,inner_iterations=3   # ~5 s
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tristream.models.tvl1 import (  # noqa: E402
    KERNELS,
    TVL1Params,
    TVL1Stats,
    pair_bytes,
    tvl1_flow,
)

REFERENCE = REPO / "benchmarks" / "data" / "tvl1_reference.npz"
DATA = Path(os.environ.get("TRISTREAM_DATA", REPO.parent / "shared" / "data"))
#: Frame pairs of bikes.mp4 (index of the first frame) stored in the reference.
REFERENCE_PAIRS = (30, 31, 150)  # three pairs keep the file under 2 MB
FLOW_SCALE = 1024.0  # stored flow = round(flow * FLOW_SCALE) as int16 (+-32 px)
#: The issue's memory-bandwidth bound for this algorithm at 256x340 (pairs/s).
BANDWIDTH_BOUND = {"H100": 900.0, "H200": 1250.0}


# ------------------------------------------------------------------------------------------
# reference


def make_reference(path: Path, short_side: int = 256) -> None:
    """Decode bikes.mp4, resize to ``short_side``, gray; OpenCV DualTVL1 flows; save npz.

    Needs OpenCV with contrib (``cv2.optflow``) and ``$TRISTREAM_DATA/videos/bikes.mp4``.
    """
    import cv2

    video = DATA / "videos" / "bikes.mp4"
    if not video.exists():
        raise FileNotFoundError(f"{video} not found (set TRISTREAM_DATA)")
    cap = cv2.VideoCapture(str(video))
    frames: dict[int, np.ndarray] = {}
    wanted = {k + d for k in REFERENCE_PAIRS for d in (0, 1)}
    index = 0
    while len(frames) < len(wanted):
        ok, frame = cap.read()
        if not ok:
            raise RuntimeError(f"{video} ended before frame {max(wanted)}")
        if index in wanted:
            h, w = frame.shape[:2]
            size = (2 * round(w * short_side / h / 2), short_side)  # even width, as ffmpeg
            small = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
            frames[index] = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        index += 1
    cap.release()
    pairs = np.stack([np.stack([frames[k], frames[k + 1]]) for k in REFERENCE_PAIRS])
    cv2.setNumThreads(1)  # deterministic threading; the flow does not depend on it
    flows = np.stack([cv2.optflow.DualTVL1OpticalFlow_create().calc(a, b, None) for a, b in pairs])
    # How far OpenCV moves by itself (input + N(0, 1e-4) grey levels), and where the eager
    # solver on this CPU host lands: the GPU rows are read against these.
    rng = np.random.default_rng(0)
    floor = np.stack(
        [
            cv2.optflow.DualTVL1OpticalFlow_create().calc(
                ((a + rng.normal(0.0, 1e-4, a.shape)) / 255.0).astype(np.float32),
                (b / 255.0).astype(np.float32),
                None,
            )
            for a, b in pairs
        ]
    )
    x = torch.from_numpy(pairs).to(torch.float32)
    cpu = tvl1_flow(x[:, 0], x[:, 1], kernel="eager").numpy()
    if np.abs(flows).max() >= 32767 / FLOW_SCALE:
        raise ValueError("flow beyond +-32 px does not fit the int16 storage")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        frames=pairs,  # uint8 [P, 2, H, W]
        flow=np.round(flows * FLOW_SCALE).astype(np.int16),  # [P, H, W, 2], 1/1024 px
        flow_scale=np.float32(FLOW_SCALE),
        floor_epe=np.array([epe(f, r) for f, r in zip(floor, flows)], np.float32),
        floor_within=np.array([within(f, r) for f, r in zip(floor, flows)], np.float32),
        cpu_eager_epe=np.array([epe(f, r) for f, r in zip(cpu, flows)], np.float32),
        cpu_eager_within=np.array([within(f, r) for f, r in zip(cpu, flows)], np.float32),
        source=np.array(f"bikes.mp4 frames {REFERENCE_PAIRS} (+1), short side {short_side}"),
        opencv=np.array(f"OpenCV {cv2.__version__} DualTVL1 defaults, {platform.machine()}"),
    )
    print(
        f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB): {pairs.shape[0]} pairs "
        f"{pairs.shape[2]}x{pairs.shape[3]}, max |flow| {np.abs(flows).max():.2f} px"
    )


def load_reference(path: Path) -> dict[str, np.ndarray]:
    """The reference npz: ``frames`` uint8 [P, 2, H, W], ``flow`` float32 [P, H, W, 2] px
    (OpenCV's), per-pair ``floor_epe`` / ``floor_within`` (OpenCV against itself, input
    moved by 1e-4 grey levels) and ``cpu_eager_epe`` / ``cpu_eager_within`` (the eager
    solver on the host that made it), and ``source`` / ``opencv`` descriptions."""
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: make it with --make-reference on a CPU host")
    with np.load(path) as z:
        out = {k: z[k] for k in z.files}
    out["flow"] = out["flow"].astype(np.float32) / float(out["flow_scale"])
    return out


def epe(a: np.ndarray, b: np.ndarray) -> float:
    """Mean end-point error (px) between flows [H, W, 2]."""
    return float(np.linalg.norm(a - b, axis=-1).mean())


def within(a: np.ndarray, b: np.ndarray) -> float:
    """Share of uint8-quantised flow values of ``a`` within one level of ``b``'s."""
    return float(np.mean(np.abs(quantise(a) - quantise(b)) <= 1))


# ------------------------------------------------------------------------------------------
# measurements


def quantise(f: np.ndarray) -> np.ndarray:
    return np.round(255.0 * (np.clip(f, -20.0, 20.0) + 20.0) / 40.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: ``--sync-every``: inner iterations between host reads of the convergence mask (None:
#: the solver's default, one read per outer run on CUDA).
SYNC_EVERY: int | None = None


def solve(frames: torch.Tensor, kernel: str, params: TVL1Params, stats: TVL1Stats) -> torch.Tensor:
    """Flow of ``frames`` [N, 2, H, W] (float32 on the device) in one ``tvl1_flow`` call."""
    return tvl1_flow(
        frames[:, 0],
        frames[:, 1],
        params,
        kernel=kernel,
        max_batch=frames.shape[0],
        sync_every=SYNC_EVERY,
        stats=stats,
    )


def ran(kernel: str, stats: TVL1Stats) -> str:
    """The kernel column: the path, or what ran instead and why."""
    if stats.kernel == kernel:
        return kernel
    return f"{kernel} (ran {stats.kernel}!: {stats.fallback_reason})"


def accuracy(args, device: torch.device, kernel: str) -> str:
    ref = load_reference(args.reference)
    n = args.accuracy_pairs
    x = torch.from_numpy(ref["frames"][:n]).to(device, torch.float32)
    stats = TVL1Stats()
    t0 = time.perf_counter()
    got = solve(x, kernel, TVL1Params(), stats)
    sync(device)
    seconds = time.perf_counter() - t0
    got = got.cpu().numpy()
    e = [epe(g, r) for g, r in zip(got, ref["flow"])]
    w = [within(g, r) for g, r in zip(got, ref["flow"])]
    ok = np.mean(e) <= 0.015 and min(w) >= 0.99
    return (
        f"| {ran(kernel, stats)} | {len(e)} | {np.mean(e):.4f} (max {max(e):.4f}) | "
        f"{100 * np.mean(w):.2f}% (min {100 * min(w):.2f}%) | {'yes' if ok else 'NO'} | "
        f"{np.mean(ref['floor_epe'][:n]):.4f}, {100 * np.mean(ref['floor_within'][:n]):.2f}% | "
        f"{np.mean(ref['cpu_eager_epe'][:n]):.4f}, "
        f"{100 * np.mean(ref['cpu_eager_within'][:n]):.2f}% | {seconds:.1f} |"
    )


def speed_frames(args, device: torch.device, n: int) -> torch.Tensor:
    """``n`` real pairs [n, 2, H, W] at ``--speed-size`` (centre crop / area-free resize)."""
    h, w = args.speed_size
    x = torch.from_numpy(load_reference(args.reference)["frames"]).to(torch.float32)
    if x.shape[2] < h or x.shape[3] < w:
        raise ValueError(f"--speed-size {h}x{w} is larger than the stored frames")
    if (h, w) != (256, 340) and h < x.shape[2] // 2:  # tiny dry-run sizes: shrink, then crop
        x = torch.nn.functional.interpolate(x, scale_factor=h / x.shape[2], mode="bilinear")
    y0, x0 = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    x = x[:, :, y0 : y0 + h, x0 : x0 + w]
    idx = torch.arange(n) % x.shape[0]
    return x[idx].contiguous().to(device)


def speed(args, device: torch.device, kernel: str, batch: int, bound: float | None) -> str:
    x = speed_frames(args, device, batch)
    params = TVL1Params(**args.speed_params)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    stats = TVL1Stats()
    sync(device)
    t0 = time.perf_counter()
    solve(x, kernel, params, stats)
    sync(device)
    seconds = time.perf_counter() - t0
    rate = batch / seconds
    mem = "n/a"
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
        mem = f"{peak / batch / 2**20:.1f}"
    est = pair_bytes(*args.speed_size) / 2**20
    vs_bound = f"{rate / bound:.2f}" if bound else "n/a"
    return (
        f"| {ran(kernel, stats)} | {batch} | {rate:.1f} | {seconds:.2f} | {mem} (est. {est:.1f}) | "
        f"{stats.host_syncs / stats.batches:.0f} | {stats.outer_runs / stats.batches:.0f} | "
        f"{stats.oom_splits} | {vs_bound} |"
    )


# ------------------------------------------------------------------------------------------
# main


class Deadline(BaseException):
    """The hard time limit passed (a BaseException: library code that catches Exception,
    as compilers do, lets it through)."""


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_params(text: str) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for item in filter(None, text.split(",")):
        name, value = item.split("=")
        out[name] = float(value) if "." in value else int(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--make-reference", action="store_true", help="make the reference npz")
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--kernels", default="eager,triton,compiled", help=f"of {KERNELS}")
    ap.add_argument("--accuracy-pairs", type=int, default=len(REFERENCE_PAIRS))
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--batches", default="16,64,256", help="batch sizes of the speed rows")
    ap.add_argument("--speed-size", type=parse_size, default=(256, 340), help="HxW")
    ap.add_argument(
        "--speed-params",
        type=parse_params,
        default={},
        help="TV-L1 parameters of the speed rows, e.g. nscales=1,warps=1 (dry runs only)",
    )
    ap.add_argument(
        "--sync-every",
        type=int,
        default=None,
        help="inner iterations between host reads of the convergence mask (default: the "
        "solver's, one per outer run on CUDA, every iteration on CPU)",
    )
    ap.add_argument("--budget-s", type=float, default=240.0, help="skip rows past this time")
    ap.add_argument(
        "--grace-s", type=float, default=40.0, help="hard stop this long after the budget"
    )
    args = ap.parse_args(argv)
    global SYNC_EVERY
    SYNC_EVERY = args.sync_every
    if args.make_reference:
        make_reference(args.reference)
        return 0
    start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    kernels = [k for k in args.kernels.split(",") if k]
    for k in kernels:
        if k not in KERNELS:
            ap.error(f"unknown kernel {k!r}; choose from {KERNELS}")
    batches = [int(b) for b in args.batches.split(",") if b]
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    bound = next((v for k, v in BANDWIDTH_BOUND.items() if k in gpu), None)
    ref = load_reference(args.reference)
    source = f"{ref['source']}; {ref['opencv']}"
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), Triton {triton_version}, "
        f"Python {platform.python_version()}, device {device} ({gpu}), "
        f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}"
    )
    print(f"reference: {source}\n")

    # Kernel by kernel (eager first), so that what the budget leaves out is the last path.
    # A hard stop (SIGALRM) at the deadline ends a row that is still running (e.g. a long
    # compilation), so the command ends in time and prints what it has.
    h, w = args.speed_size
    acc_rows: list[str] = []
    speed_rows: list[str] = []
    deadline = args.budget_s + args.grace_s

    def past_deadline(signum, frame):
        raise Deadline(f"stopped at the {deadline:.0f} s hard limit")

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, past_deadline)
        signal.alarm(int(deadline))
    try:
        for k in kernels:
            if not args.skip_accuracy:
                if time.perf_counter() - start > args.budget_s:
                    acc_rows.append(f"| {k} | skipped: past the {args.budget_s:.0f} s budget |")
                else:
                    acc_rows.append(accuracy(args, device, k))
                print("# " + acc_rows[-1], flush=True)
            if time.perf_counter() - start <= args.budget_s:
                warm = speed_frames(args, device, 2)  # compilation, autotuning, allocator
                solve(warm, k, TVL1Params(**args.speed_params), TVL1Stats())
                sync(device)
            for b in batches:
                if time.perf_counter() - start > args.budget_s:
                    speed_rows.append(
                        f"| {k} | {b} | skipped: past the {args.budget_s:.0f} s budget |"
                    )
                else:
                    speed_rows.append(speed(args, device, k, b, bound))
                print("# " + speed_rows[-1], flush=True)
    except Deadline as exc:
        speed_rows.append(f"| {k} | | aborted: {exc} |")
        print("# " + speed_rows[-1], flush=True)
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
    if not args.skip_accuracy:
        print(
            f"\nAgreement with OpenCV, {len(ref['frames'][: args.accuracy_pairs])} real pairs "
            f"{ref['frames'].shape[2]}x{ref['frames'].shape[3]}, default parameters:\n"
        )
        print(
            "| kernel | pairs | EPE vs OpenCV (px) | uint8 within 1 level | target met "
            "(EPE <= 0.015, >= 99%) | OpenCV vs itself, input +-1e-4 grey: EPE, within | "
            "eager on the reference's CPU host: EPE, within | s |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(acc_rows))
    print(
        f"\nSpeed at {h}x{w}, one batch per row after a warm-up batch of 2 pairs "
        f"(compilation); params {args.speed_params or 'defaults'}:\n"
    )
    print(
        "| kernel | batch | pairs/s | s | peak MiB/pair | host syncs/batch | outer runs/batch "
        "| OOM splits | pairs/s / bandwidth bound |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(speed_rows))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
