"""Throughput of each tristream stage in isolation, and of the whole Beam pipeline.

Run from the repository root::

    python benchmarks/pipeline.py                      # flow opencv, then flow none
    python benchmarks/pipeline.py --seconds 1 --flow none

On the real sample videos (``--videos``, default ``$TRISTREAM_DATA/videos`` or
``<repo>/../shared/data/videos``), limited to the first ``--seconds`` of each,
it runs the pipeline's own per-video code without Beam, video after video in one
thread: :func:`tristream.pipeline.videos.stage_video`, which calls
:func:`tristream.process.process_video` (probe, decode, flow, pose and render
when persons are on, encode) and stages each row in the cache (write), then
:func:`tristream.pipeline.sinks.write_shard` (write: the shard file). The
seconds of each stage come from ``process_video``'s own
:class:`~tristream.process.Stats`. Then it runs :func:`tristream.pipeline.run.run`
end to end on the same inputs (a manifest CSV with ``id,path,start,end`` so the
same seconds are decoded) and reports the pipeline's overhead over the sum of
its stages::

    overhead = pipeline_seconds / (sum of the stages' seconds) - 1

The sum of stages is a single-thread reference: the overhead figure is fair for
``--workers 1`` (the default) only. Below the table: the pipeline's fixed cost
(a run on 2 frames of one video, flow off) and what remains. Times are
wall-clock seconds (``perf_counter``); the cpu figures are user+system time of
this process and its waited-for children (ffmpeg), less sensitive to other load
on the machine. One untimed 2-frame video warms both sides up first; with
``--repeat N`` every figure is the median of N rounds, and the rounds alternate
which side runs first. ``--detector``/``--pose-model``/``--skeletons`` add the
persons stages.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tristream.config import RunConfig, flow_choices
from tristream.pipeline.cache import config_hash
from tristream.pipeline.inputs import list_videos
from tristream.pipeline.run import run
from tristream.pipeline.sinks import shard_rows, write_shard
from tristream.pipeline.videos import stage_video
from tristream.process import STAGES as PROCESS_STAGES
from tristream.process import Models, Stats, VideoTask
from tristream.shards.schema import arrow_schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS = 25.0
MAX_FRAMES = 300
STAGES = (*PROCESS_STAGES, "write")
OVERHEAD_GOAL = 0.15


def default_videos() -> str:
    """``$TRISTREAM_DATA/videos`` if that variable is set, else ``<repo>/../shared/data/videos``."""
    data = os.environ.get("TRISTREAM_DATA")
    if data:
        return os.path.join(data, "videos")
    return os.path.normpath(os.path.join(REPO, "..", "shared", "data", "videos"))


class Clock:
    """Wall and CPU seconds of a block (CPU: this process + waited-for children)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> Clock:
        self._w0, self._c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._w0
        self.cpu += self._cpu() - self._c0


@dataclass
class Round:
    """One measurement round for one flow mode: seconds per stage (from ``Stats``), the
    stage loop's and the shard write's clocks, and the pipeline's."""

    frames: int = 0
    pairs: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    pipeline_stages: Clock = field(default_factory=Clock)
    shard_write: Clock = field(default_factory=Clock)
    pipeline: Clock = field(default_factory=Clock)
    pipeline_frames: int = 0
    load_stages: float = 0.0
    load_pipeline: float = 0.0
    minimal: float | None = None

    def stage_seconds(self, stage: str) -> float:
        """Wall seconds of ``stage``; ``write`` is staging rows plus writing the shard."""
        extra = self.shard_write.wall if stage == "write" else 0.0
        return self.stages.get(stage, 0.0) + extra


def make_config(args: argparse.Namespace, flow: str, output: str, manifest: str) -> RunConfig:
    """The RunConfig that both the stage loop and the pipeline run use."""
    return RunConfig.from_options(
        output=output,
        manifest=manifest,
        format=args.format,
        fps=FPS,
        short_side=args.short_side,
        max_frames=MAX_FRAMES,
        flow=flow,
        workers=args.workers,
        detector=args.detector,
        pose_model=args.pose_model,
        skeletons=args.skeletons,
    )


def write_manifest(path: str, videos: list[tuple[str, str]], seconds: float) -> None:
    """A CSV manifest (id,path,start,end) covering the first ``seconds`` of each video."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "start", "end"])
        for vid, p in videos:
            w.writerow([vid, os.path.abspath(p), 0, seconds])


def tasks_for(videos: list[tuple[str, str]], seconds: float) -> list[VideoTask]:
    """The tasks the pipeline makes of the manifest :func:`write_manifest` writes."""
    return [VideoTask(vid, os.path.abspath(p), "train", start=0.0, end=seconds)
            for vid, p in videos]  # fmt: skip


def measure_stages(
    config: RunConfig, videos: list[tuple[str, str]], seconds: float, r: Round
) -> None:
    """Time each stage over every video, through the pipeline's own per-video code.

    Calls :func:`tristream.pipeline.videos.stage_video` (``process_video`` plus the
    cache staging) video after video in this one thread, then writes the shard with
    :func:`tristream.pipeline.sinks.write_shard`: the same functions the pipeline's
    DoFns call, without Beam. Per-stage seconds come from ``process_video``'s
    :class:`~tristream.process.Stats`.
    """
    schema = arrow_schema(config.modalities)
    models = Models(config, config_hash(config))
    r.load_stages = os.getloadavg()[0]
    outcomes = []
    for task in tasks_for(videos, seconds):
        stats = Stats()
        with r.pipeline_stages:
            outcome = stage_video(task, config, models, os.path.join(config.output.path, "cache"),
                                  schema, stats)  # fmt: skip
        if not outcome.ok:
            raise RuntimeError(f"{task.video_id} failed: {outcome.failure}")
        outcomes.append(outcome)
        r.frames += stats.frames
        r.pairs += stats.pairs
        for stage, secs in stats.seconds.items():
            r.stages[stage] = r.stages.get(stage, 0.0) + secs
    folder = os.path.join(config.output.path, "shards")
    with r.shard_write:
        write_shard(config, schema, folder, config.source.split, 0, 1, shard_rows(outcomes),
                    outcomes)  # fmt: skip


def warm_up(config: RunConfig, videos: list[tuple[str, str]]) -> None:
    """One untimed video of 2 frames, so neither measurement pays first-call costs.

    (Library loading, OpenCV/torch initialisation, the ffmpeg binary in the page cache.)
    """
    models = Models(config, config_hash(config))
    cache_root = os.path.join(config.output.path, "cache")
    stage_video(tasks_for(videos[:1], 2 / FPS)[0], config, models, cache_root,
                arrow_schema(config.modalities))  # fmt: skip


def in_thread(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in a new thread and wait for it (its exception is re-raised).

    The stage loop and the warm-up run this way, as the pipeline's stages run on Beam's
    worker threads: torch gives every calling thread its own OpenMP team, and a team
    left behind by the main thread would share the CPUs with the pipeline's team
    (libgomp then stops spinning at its barriers, which made the pipeline's torch flow
    4x slower here). A thread's team goes when the thread ends.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def measure_pipeline(config: RunConfig, r: Round) -> None:
    """Run the whole pipeline once on ``config`` and check it did the same work."""
    r.load_pipeline = os.getloadavg()[0]
    with r.pipeline:
        result = run(config)
    if result.failures:
        raise RuntimeError(f"pipeline reported failures: {result.failures}")
    r.pipeline_frames = int(result.manifest["totals"]["frames"])


def median(rounds: list[Round], get: Callable[[Round], float]) -> float:
    """The median of ``get(round)`` over the rounds."""
    return statistics.median(get(r) for r in rounds)


def fmt_rate(n: float, s: float) -> str:
    """``n / s`` with sensible precision ("-" when there is no time)."""
    if s <= 0:
        return "-"
    rate = n / s
    return f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def report(flow: str, args: argparse.Namespace, rounds: list[Round]) -> str:
    """The markdown table for one flow mode."""
    frames = rounds[0].frames
    pairs = rounds[0].pairs
    stages = [s for s in STAGES if any(s in r.stages for r in rounds) or s == "write"]
    wall = {s: median(rounds, lambda r, s=s: r.stage_seconds(s)) for s in stages}
    total = sum(wall.values())
    loop_cpu = median(rounds, lambda r: r.pipeline_stages.cpu + r.shard_write.cpu)
    pipe = median(rounds, lambda r: r.pipeline.wall)
    pipe_cpu = median(rounds, lambda r: r.pipeline.cpu)
    stage_w = median(rounds, lambda r: r.stages.get("write", 0.0))
    shard_w = median(rounds, lambda r: r.shard_write.wall)
    lines = [
        f"### --flow {flow}  ({frames} frames, {pairs} flow pairs, workers={args.workers}, "
        f"format={args.format}, {len(rounds)} round(s), median)",
        "",
        "| stage | frames | seconds | frames/s | share of total |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    if flow == "none":
        lines.append("| flow (off) | - | - | - | - |")
    for s in stages:
        name = s
        if s == "flow":
            name = f"flow ({pairs} pairs, {fmt_rate(pairs, wall[s])} pairs/s)"
        if s == "write":
            name = f"write (stage {stage_w:.2f} s + shard {shard_w:.2f} s)"
        share = f"{100 * wall[s] / total:.1f}%" if total else "-"
        lines.append(
            f"| {name} | {frames} | {wall[s]:.2f} | {fmt_rate(frames, wall[s])} | {share} |"
        )
    lines.append(
        f"| **sum of stages** | {frames} | {total:.2f} | {fmt_rate(frames, total)} | 100% |"
    )
    overhead = pipe / total - 1 if total else float("nan")
    overhead_cpu = pipe_cpu / loop_cpu - 1 if loop_cpu else float("nan")
    lines.append(
        f"| **pipeline** (run(), workers={args.workers}) | {rounds[0].pipeline_frames} "
        f"| {pipe:.2f} | {fmt_rate(rounds[0].pipeline_frames, pipe)} | "
        f"{100 * pipe / total:.1f}% |"
    )
    verdict = "within" if overhead <= OVERHEAD_GOAL else "OVER"
    fair = "" if args.workers == 1 else " (workers > 1: the sum of stages is not a fair reference)"
    lines += [
        "",
        f"Pipeline: {pipe:.2f} s, {fmt_rate(rounds[0].pipeline_frames, pipe)} frames/s; "
        f"overhead vs sum of stages: **{100 * overhead:+.1f}%** wall ({verdict} the "
        f"{100 * OVERHEAD_GOAL:.0f}% goal), {100 * overhead_cpu:+.1f}% cpu (stage loop "
        f"{loop_cpu:.2f} s, pipeline {pipe_cpu:.2f} s){fair}.",
    ]
    extra = pipe - total
    if not args.no_minimal_run:
        fixed = median(rounds, lambda r: r.minimal or 0.0)
        lines.append(
            f"Of the extra {extra:.2f} s: fixed cost (~ a minimal run: 2 frames, flow off) "
            f"{fixed:.2f} s, remainder (per-element Beam cost and noise) {extra - fixed:.2f} s."
        )
    lines.append(
        "1-min load average when the stage loop / the pipeline started: "
        + "; ".join(f"{r.load_stages:.2f} / {r.load_pipeline:.2f}" for r in rounds)
        + f" (on {os.cpu_count()} cores; above that, wall times include waiting for a core)."
    )
    return "\n".join(lines)


def minimal_run(args: argparse.Namespace, videos: list[tuple[str, str]], tmp: str) -> float:
    """Seconds of ``run()`` on 2 frames of one video, flow off: about the pipeline's fixed cost.

    (``run()`` refuses an input with no videos, so this is the smallest run there is; it
    includes one probe and a 2-frame decode, a few tens of milliseconds.)
    """
    os.makedirs(tmp, exist_ok=True)
    manifest = os.path.join(tmp, "minimal.csv")
    write_manifest(manifest, videos[:1], 2 / FPS)
    config = make_config(args, "none", os.path.join(tmp, "minimal-out"), manifest)
    t0 = time.perf_counter()
    run(config)
    return time.perf_counter() - t0


def version(*names: str) -> str:
    """The installed version of the first distribution found among ``names``."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def machine() -> str:
    """CPU count and model, load, Python and library versions, as markdown bullets."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    import cv2

    opencv = version(
        "opencv-contrib-python-headless", "opencv-contrib-python", "opencv-python-headless",
        "opencv-python",
    )  # fmt: skip
    return "\n".join(
        [
            f"- cpu: {os.cpu_count()} logical cores ({usable} usable), model {model!r}; "
            f"OpenCV threads {cv2.getNumThreads()}",
            f"- python {platform.python_version()} ({platform.platform()})",
            f"- torch {version('torch')}, opencv {opencv} (cv2 {cv2.__version__}), "
            f"apache-beam {version('apache-beam')}, pyarrow {version('pyarrow')}, "
            f"numpy {np.__version__}",
            "- load average (1, 5, 15 min) at start: "
            + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", default=default_videos(), help="folder of sample videos")
    p.add_argument("--short-side", type=int, default=256, help="resize short side (pixels)")
    p.add_argument(
        "--seconds", type=float, default=2.0, help="decode only the first S seconds of each video"
    )
    p.add_argument("--workers", type=int, default=1, help="pipeline worker threads")
    p.add_argument("--detector", help="person detector (adds the pose stages)")
    p.add_argument("--pose-model", help="pose model, with --detector")
    p.add_argument("--skeletons", help="imported skeletons (adds the pose stages)")
    p.add_argument(
        "--flow",
        choices=flow_choices(),
        default=None,
        help="flow backend (default: opencv, then none)",
    )
    p.add_argument(
        "--format", choices=("parquet", "tfrecord", "both"), default="parquet", help="shard format"
    )
    p.add_argument("--repeat", type=int, default=1, help="rounds per flow mode (median reported)")
    p.add_argument("--no-minimal-run", action="store_true", help="skip timing a run on 2 frames")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1 or args.workers < 1:
        p.error("--seconds must be > 0, --repeat and --workers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every flow mode asked for and print the report."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    videos = list_videos(args.videos)
    if not videos:
        print(f"no videos under {args.videos}", file=sys.stderr)
        return 1
    flows = [args.flow] if args.flow else ["tvl1", "opencv", "none"]
    print("## tristream pipeline benchmark\n")
    print("Command: `python " + " ".join(["benchmarks/pipeline.py", *sys.argv[1:]]) + "`\n")
    print(machine())
    print(
        f"- inputs: {len(videos)} videos from {args.videos} "
        f"({', '.join(v for v, _ in videos)}), first {args.seconds:g} s each, "
        f"{FPS:g} fps, short side {args.short_side}\n"
    )
    sys.stdout.flush()
    started = time.perf_counter()
    for flow in flows:
        rounds = []
        with tempfile.TemporaryDirectory(prefix="tristream-bench-") as tmp:
            manifest = os.path.join(tmp, "manifest.csv")
            write_manifest(manifest, videos, args.seconds)
            warm_up_cfg = make_config(args, flow, os.path.join(tmp, "warm"), manifest)
            in_thread(warm_up, warm_up_cfg, videos)
            for n in range(args.repeat):
                r = Round()
                if not args.no_minimal_run:
                    r.minimal = minimal_run(args, videos, os.path.join(tmp, f"minimal-{n}"))
                stage_cfg = make_config(args, flow, os.path.join(tmp, f"stages-{n}"), manifest)
                pipe_cfg = make_config(args, flow, os.path.join(tmp, f"pipeline-{n}"), manifest)
                # Alternate the order, so that a drift in the machine's load hits both sides.
                if n % 2 == 0:
                    in_thread(measure_stages, stage_cfg, videos, args.seconds, r)
                    measure_pipeline(pipe_cfg, r)
                else:
                    measure_pipeline(pipe_cfg, r)
                    in_thread(measure_stages, stage_cfg, videos, args.seconds, r)
                if r.pipeline_frames != r.frames:
                    raise RuntimeError(
                        f"pipeline wrote {r.pipeline_frames} frames, stages saw {r.frames}"
                    )
                rounds.append(r)
        print(report(flow, args, rounds) + "\n")
        sys.stdout.flush()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    elapsed = time.perf_counter() - started
    print(f"Total benchmark time {elapsed:.0f} s; load average at end {load}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
