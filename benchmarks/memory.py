"""Peak memory of ``tristream run`` against video length and ``--max-frames``.

Builds long videos by looping the real sample ``bikes.mp4`` (stream copy, no
re-encode), runs the CLI on each in a fresh process and samples the resident
memory of that process and its children (ffmpeg) every 50 ms. The goal: peak
RSS set by ``--max-frames``, not by the video's length, and under 2 GiB.

    python benchmarks/memory.py [--minutes 1,10] [--max-frames 100,300] [--flow-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tristream.transforms.decode import ffmpeg_exe  # noqa: E402


def _rss_tree(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return total


def measure(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; return (seconds, peak RSS bytes of its process tree)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_tree(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return time.monotonic() - start, peak


def long_video(src: str, minutes: float, folder: str) -> str:
    """``src`` looped to at least ``minutes`` long (stream copy), as an mp4 in ``folder``."""
    out = os.path.join(folder, f"loop_{minutes:g}min.mp4")
    loops = max(0, int(minutes * 60 / 10) - 1)  # bikes.mp4 is 10 s
    subprocess.run(
        [ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", "-stream_loop", str(loops),
         "-i", src, "-c", "copy", out],
        check=True,
    )  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("TRISTREAM_DATA", str(REPO.parent / "shared" / "data"))
    ap.add_argument("--video", default=os.path.join(default_data, "videos", "bikes.mp4"))
    ap.add_argument("--minutes", default="1,10", help="video lengths to build (minutes)")
    ap.add_argument("--max-frames", default="100,300", help="segment sizes to try")
    ap.add_argument("--flow-seconds", type=float, default=2.0,
                    help="range for the runs with OpenCV flow (0: skip them)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}; workers={args.workers}")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in [float(m) for m in args.minutes.split(",")]:
            video = long_video(args.video, minutes, tmp)
            for max_frames in [int(m) for m in args.max_frames.split(",")]:
                runs = [("none", None)]
                if args.flow_seconds > 0:
                    runs.append(("opencv", args.flow_seconds))
                for flow, seconds in runs:
                    if flow == "opencv" and minutes != float(args.minutes.split(",")[-1]):
                        continue  # flow on a short range: once, on the longest video
                    out = os.path.join(tmp, f"out_{minutes:g}_{max_frames}_{flow}")
                    if seconds:
                        manifest = os.path.join(tmp, "range.csv")
                        Path(manifest).write_text(f"path,start,end\n{video},0,{seconds}\n")
                        src = ["--manifest", manifest]
                    else:
                        src = ["--input", video]
                    cmd = [sys.executable, "-m", "tristream.cli", "run", *src, "--output", out,
                           "--flow", flow, "--max-frames", str(max_frames),
                           "--workers", str(args.workers)]  # fmt: skip
                    secs, peak = measure(cmd)
                    frames = round((seconds or minutes * 60) * 25)
                    rows.append((minutes, seconds, max_frames, flow, frames, secs, peak))
                    print(f"  {minutes:g} min video, range {seconds or 'all'}, max_frames "
                          f"{max_frames}, flow {flow}: {secs:.0f} s, peak {peak / 2**20:.0f} MiB",
                          flush=True)  # fmt: skip

    base = min(r[6] for r in rows if r[3] == "none")
    print("\n| video | frames processed | --max-frames | flow | seconds | peak RSS (MiB) "
          "| vs smallest |")  # fmt: skip
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for minutes, seconds, max_frames, flow, frames, secs, peak in rows:
        what = f"{minutes:g} min" + (f", first {seconds:g} s" if seconds else "")
        print(f"| {what} | {frames} | {max_frames} | {flow} | {secs:.0f} | "
              f"{peak / 2**20:.0f} | {peak / base:.2f}x |")  # fmt: skip
    worst = max(r[6] for r in rows)
    print(f"\npeak over all runs: {worst / 2**30:.2f} GiB (goal: under 2 GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
