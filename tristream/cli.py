"""The ``tristream`` command: ``run`` a preprocessing job, ``inspect`` its output."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Iterator

from tristream import __version__


class _Choices:
    """argparse ``choices`` read from a registry only when needed (a registry may import
    torch; ``tristream inspect`` should not pay for that)."""

    def __init__(self, names: Callable[[], tuple[str, ...]]):
        self._names = names

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def _flow_choices() -> tuple[str, ...]:
    from tristream.config import flow_choices

    return flow_choices()


def _flow_kernels() -> tuple[str, ...]:
    from tristream.models.tvl1 import KERNEL_CHOICES

    return KERNEL_CHOICES


def _pose_formats() -> tuple[str, ...]:
    from tristream.models.zoo import POSE_FORMATS

    return POSE_FORMATS


def _pose_precisions() -> tuple[str, ...]:
    from tristream.models.zoo import POSE_PRECISIONS

    return POSE_PRECISIONS


def _pose_decoders() -> tuple[str, ...]:
    from tristream.transforms.pose import DECODERS

    return DECODERS


def _flow_param(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    number = float(value)
    return name.strip(), int(number) if number.is_integer() and "." not in value else number


def _run_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="decode videos, compute flow and write shards",
        description="Decode videos, compute TV-L1 flow and write Parquet/TFRecord shards. "
        "Unknown --flags are passed to Apache Beam (e.g. --runner, --direct_running_mode).",
    )
    src = p.add_argument_group("input (one of --input / --manifest, or both)")
    src.add_argument(
        "--input",
        help="folder of videos (recursive) or a glob; with --manifest, "
        "the folder that relative manifest paths start from",
    )
    src.add_argument(
        "--manifest",
        help="CSV or JSONL with path[,id,label,label_index,split,start,"
        "end], or a Kinetics CSV (label,youtube_id,time_start,time_end,split)",
    )
    src.add_argument(
        "--path-template",
        default=None,
        help="file name of a Kinetics row (default "
        "'{youtube_id}_{time_start:06d}_{time_end:06d}.mp4')",
    )
    p.add_argument("--output", required=True, help="output folder (shards/, manifest.json, ...)")
    p.add_argument("--format", default="parquet", choices=_Choices(lambda: _registry("FORMATS")))
    p.add_argument("--fps", type=float, default=25.0, help="frame rate; 0 keeps the source rate")
    p.add_argument(
        "--short-side",
        type=int,
        default=256,
        help="resize so the short side has this many pixels; 0 keeps the size",
    )
    p.add_argument("--max-frames", type=int, default=300, help="frames per segment (row)")
    p.add_argument(
        "--flow",
        default="tvl1",
        choices=_Choices(_flow_choices),
        help="tvl1: tristream's exact TV-L1 (fused CPU kernels, Triton on CUDA); "
        "opencv: OpenCV contrib's DualTVL1 (the reference); none",
    )
    p.add_argument(
        "--flow-encoding", default="jpeg", choices=_Choices(lambda: _registry("FLOW_ENCODINGS"))
    )
    p.add_argument(
        "--flow-param",
        action="append",
        type=_flow_param,
        default=[],
        metavar="NAME=VALUE",
        help="TV-L1 parameter, repeatable (tau, lambda_, theta, nscales, warps, "
        "epsilon, inner_iterations, outer_iterations, scale_step, gamma, "
        "median_filtering)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="device of the tvl1 flow and the models: auto, cpu, cuda[:N]",
    )
    p.add_argument(
        "--flow-batch-size",
        type=int,
        default=0,
        help="frame pairs per tvl1 solver call, gathered from all videos of a worker process; "
        "0: what fills the free GPU memory on CUDA, 16 on the CPU",
    )
    p.add_argument(
        "--flow-kernel",
        default="auto",
        choices=_Choices(_flow_kernels),
        help="tvl1 kernel path: auto (fused on the CPU, triton on CUDA), fused (numba CPU "
        "kernels), triton, eager (torch ops) or compiled (torch.compile); a path that cannot "
        "run falls back to eager with a warning, counted in manifest.json's metrics",
    )
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--workers", type=int, default=0, help="local worker threads (0: all cores)")
    p.add_argument(
        "--num-shards", type=int, default=0, help="shards per split (0: one per 100 videos)"
    )
    p.add_argument("--split", default="train", help="split of videos whose manifest has none")
    p.add_argument(
        "--timeout", type=float, default=0.0, help="seconds allowed per video decode (0: no limit)"
    )
    p.add_argument(
        "--fail-on-error", action="store_true", help="exit with status 1 if any video failed"
    )
    pose = p.add_argument_group("persons (keypoints, boxes, tracks) and pose frames")
    pose.add_argument(
        "--persons",
        action="store_true",
        help="detect, pose and track persons with the packaged models (YOLOX-nano, "
        "BlazePose lite) unless --detector / --pose-model name others",
    )
    pose.add_argument(
        "--detector",
        help="person detector: YOLOX ONNX model or TorchScript file (alone, without "
        "--persons or --pose-model: boxes and tracks only)",
    )
    pose.add_argument(
        "--pose-model",
        help="top-down pose model: ONNX (BlazePose, heatmap or SimCC outputs), PoseResNet "
        "checkpoint (official or mmpose layout) or TorchScript heatmap model; 'none': "
        "boxes and tracks only",
    )
    pose.add_argument(
        "--pose-format",
        default="auto",
        choices=_Choices(_pose_formats),
        help="output family of an ONNX pose model (auto: recognised from its outputs)",
    )
    pose.add_argument(
        "--pose-precision",
        default="fp32",
        choices=_Choices(_pose_precisions),
        help="autocast precision of a torch pose model on CUDA",
    )
    pose.add_argument(
        "--pose-decoder", default="dark", choices=_Choices(_pose_decoders), help="heatmap decoder"
    )
    pose.add_argument(
        "--flip-test", action="store_true", help="average with the flipped crop (heatmap models)"
    )
    pose.add_argument(
        "--skeletons",
        help="import 2D skeletons from an mmaction2/pyskl pickle instead of running models",
    )
    pose.add_argument(
        "--skeletons3d",
        help="with --skeletons: the same videos' 3D skeletons (keypoint [M, T, 17, 3], as "
        "export-skeletons --3d writes them), stored as keypoints3d",
    )
    pose.add_argument("--max-persons", type=int, default=5, help="tracks kept per row")
    pose.add_argument(
        "--keypoints3d",
        action="store_true",
        help="also store each person's COCO-17 joints in 3D (metres, root-relative) from a "
        "pose model with 3D output (BlazePose's world landmarks, as --persons packages)",
    )
    pose.add_argument("--det-threshold", type=float, default=0.3, help="detector score threshold")
    pose.add_argument("--det-nms", type=float, default=0.45, help="detector NMS IoU threshold")
    pose.add_argument(
        "--render",
        default="bars,fine,ratio,rgb",
        help="pose frame style, comma-separated: one of each of "
        + "; ".join("|".join(options) for options in _render_options())
        + " (see docs/rendering.md), or none",
    )
    p.add_argument("-v", "--verbose", action="store_true")


def _registry(name: str) -> tuple[str, ...]:
    """A name list owned by the config or the shard codec (FORMATS, FLOW_ENCODINGS)."""
    if name == "FLOW_ENCODINGS":
        from tristream.shards.codec import FLOW_ENCODINGS

        return FLOW_ENCODINGS
    from tristream import config

    return getattr(config, name)


def _render_options() -> list[tuple[str, ...]]:
    from tristream.transforms.render import RENDER_OPTIONS

    return list(RENDER_OPTIONS.values())


def person_models(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(detector, pose_model)`` paths from ``--persons``, ``--detector`` and ``--pose-model``.

    ``--persons``, or a ``--pose-model`` without a ``--detector``, fills in the packaged
    defaults (:mod:`tristream.models.zoo`); ``--pose-model none`` keeps boxes and tracks
    only; ``--detector`` alone is boxes and tracks only, as it always was.
    """
    detector, pose_model = args.detector, args.pose_model
    no_pose = pose_model is not None and pose_model.lower() == "none"
    if no_pose:
        pose_model = None
    if args.persons or pose_model:
        from tristream.models.zoo import DEFAULT_DETECTOR, DEFAULT_POSE_MODEL

        detector = detector or str(DEFAULT_DETECTOR)
        if args.persons and not no_pose:
            pose_model = pose_model or str(DEFAULT_POSE_MODEL)
    return detector, pose_model


def cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from tristream.config import RunConfig
    from tristream.pipeline.run import run

    if args.skeletons and (args.persons or args.pose_model):
        raise ValueError("give --skeletons (imported keypoints) or --persons / --pose-model")
    detector, pose_model = person_models(args)
    config = RunConfig(
        output=args.output,
        input=args.input,
        manifest=args.manifest,
        path_template=args.path_template,
        format=args.format,
        fps=args.fps,
        short_side=args.short_side,
        max_frames=args.max_frames,
        flow=args.flow,
        flow_encoding=args.flow_encoding,
        flow_params=dict(args.flow_param),
        device=args.device,
        flow_batch_size=args.flow_batch_size,
        flow_kernel=args.flow_kernel,
        jpeg_quality=args.jpeg_quality,
        workers=args.workers,
        num_shards=args.num_shards,
        split=args.split,
        timeout=args.timeout,
        fail_on_error=args.fail_on_error,
        detector=detector,
        pose_model=pose_model,
        pose_decoder=args.pose_decoder,
        pose_format=args.pose_format,
        pose_precision=args.pose_precision,
        flip_test=args.flip_test,
        skeletons=args.skeletons,
        skeletons3d=args.skeletons3d,
        max_persons=args.max_persons,
        keypoints3d=args.keypoints3d,
        det_threshold=args.det_threshold,
        det_nms=args.det_nms,
        render=args.render,
    )
    result = run(config, beam_args)
    print(summary(result.manifest, result.failures, args.output))
    if result.lost:
        print(
            f"tristream: error: {result.lost} video(s) were neither written nor reported "
            "failed (stage 'lost' in failures.jsonl); the output is incomplete",
            file=sys.stderr,
        )
        return 1
    return 1 if (result.failures and config.fail_on_error) else 0


def summary(manifest: dict, failures: list[dict], output: str) -> str:
    """A few human lines about a finished run (what ``run`` and ``inspect`` print)."""
    t = manifest["totals"]
    lost = f" ({t['videos_lost']} lost)" if t.get("videos_lost") else ""
    lines = [
        f"{output}: {t['videos_written']} of {t['videos']} videos written, "
        f"{t['videos_failed']} failed{lost}; {t['rows']} rows, {t['frames']} frames, "
        f"{t['bytes'] / 1e6:.1f} MB",
        f"modalities: {', '.join(manifest['modalities'])}; formats: "
        f"{', '.join(manifest['formats'])}; schema v{manifest['schema_version']}",
    ]
    for s in manifest["shards"]:
        for f in s["files"]:
            lines.append(
                f"  {f['path']}: {s['rows']} rows, {s['frames']} frames, {f['bytes'] / 1e6:.1f} MB"
            )
    if manifest.get("metrics"):
        lines.append("counters: " + ", ".join(f"{k} {v}" for k, v in manifest["metrics"].items()))
    for f in failures:
        lines.append(f"  FAILED {f['video_id']} at {f['stage']}: {f['error']}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    from tristream.inspect import main_inspect

    return main_inspect(args.output, png=args.png, video=args.video, frames=args.frames)


def cmd_export(args: argparse.Namespace) -> int:
    from tristream.exports import export_skeletons, parse_split_names

    n = export_skeletons(
        args.output, args.pickle, parse_split_names(args.split_name), three_d=args.three_d
    )
    print(f"{args.pickle}: {n} videos")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tristream`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="tristream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tristream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    ins = sub.add_parser("inspect", help="summarise an output folder, or draw a contact sheet")
    ins.add_argument("output", help="a run's output folder")
    ins.add_argument("--png", help="write a contact sheet (RGB, flow, pose, tracks) to this PNG")
    ins.add_argument("--video", help="video id for the contact sheet (default: the first)")
    ins.add_argument("--frames", type=int, default=8, help="frames across the contact sheet")
    exp = sub.add_parser(
        "export-skeletons",
        help="write the shards' keypoints as a skeleton file mmaction2/pyskl load by split",
    )
    exp.add_argument("output", help="a run's output folder")
    exp.add_argument("pickle", help="the .pkl file to write")
    exp.add_argument(
        "--split-name",
        action="append",
        metavar="OLD=NEW",
        help="rename a split in the file, repeatable (e.g. train=xsub_train val=xsub_val)",
    )
    exp.add_argument(
        "--3d",
        dest="three_d",
        action="store_true",
        help="write the 3D keypoints (keypoint [M, T, 17, 3], metres; runs with --keypoints3d)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command != "run" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Beam's worker harness logs every channel it opens at INFO, and importing
    # Beam warns about Google Cloud clients that a local run does not need.
    # A failed step is reported once, by tristream (with -v: Beam's own log too).
    verbose = getattr(args, "verbose", False)
    logging.getLogger("apache_beam").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda r: not str(r.msg).startswith("apitools not found"))
    try:
        if args.command == "run":
            return cmd_run(args, rest)
        if args.command == "export-skeletons":
            return cmd_export(args)
        return cmd_inspect(args)
    except (ValueError, FileNotFoundError) as exc:  # the command line or its inputs
        _report(exc, getattr(args, "verbose", False))
        return 2
    except (OSError, RuntimeError) as exc:  # a fault of the run: disk full, not writable
        _report(exc, getattr(args, "verbose", False))
        return 1


def _report(exc: BaseException, verbose: bool) -> None:
    """One readable line on stderr; the traceback too with ``-v``."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # A runner's wrapped error holds a traceback: its last line says what happened.
    text = lines[-1] if lines else type(exc).__name__
    print(f"tristream: error: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
