"""The ``tristream`` command: ``run`` a preprocessing job, ``inspect`` its output."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import sys
import traceback

from tristream import __version__


def _option_help(opt, default) -> str:
    """An option's help (:meth:`~tristream.config.Option.text`) with the field's default."""
    text = opt.text()
    if not (default is None or default is False or default == () or default == ""):
        text += f" (default: {default})"
    return text.replace("%", "%%")  # argparse formats help with %


def _default_and_type(f: dataclasses.Field, kind) -> tuple[object, type]:
    """A config field's default and its value type (``str | None`` -> ``str``)."""
    from tristream.config import value_type

    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return default, value_type(kind)[0]


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option field of :class:`~tristream.config.RunConfig` to ``parser``,
    made from the field's metadata (spelling, help, type) with no default of its own: an
    absent flag keeps the field's default (the flag's ``dest`` is the option's name)."""
    from tristream.config import GROUPS, options_of

    sections: dict[str, argparse._ArgumentGroup] = {}
    titles = {
        "input": "input (one of --input / --manifest, or both)",
        "persons": "persons (keypoints, boxes, tracks) and pose frames",
        "output": "output", "run": "run", "processing": "processing",
    }  # fmt: skip
    for cls in GROUPS.values():
        for f, opt, kind in options_of(cls):
            if opt.group not in sections:
                sections[opt.group] = parser.add_argument_group(titles.get(opt.group, opt.group))
            default, base = _default_and_type(f, kind)
            kw: dict = {"help": _option_help(opt, default), "default": argparse.SUPPRESS}
            if base is bool:
                kw["action"] = "store_true" if not default else argparse.BooleanOptionalAction
            elif opt.repeat:
                kw.update(action="append", type=_parser(opt.parse, opt.flag), metavar=opt.metavar)
            else:
                kw["type"] = _parser(opt.parse or (base if base in (int, float) else str), opt.flag)
                kw["metavar"] = _metavar(opt, base)
            sections[opt.group].add_argument(opt.flag, dest=opt.name, **kw)


def options_table() -> str:
    """The ``tristream run`` options as a Markdown table (flag, default, meaning), made from
    the config's fields like the parser; the README holds it between its ``options`` markers
    (``python scripts/options_table.py`` rewrites it)."""
    from tristream.config import GROUPS, options_of

    lines = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for cls in GROUPS.values():
        for f, opt, kind in options_of(cls):
            default, base = _default_and_type(f, kind)
            if base is bool:
                shown = "on" if default else "off"
            elif default == "":
                shown = "required"
            elif default is None or default == ():
                shown = ""
            else:
                shown = f"`{default}`"
            if base is bool:  # on by default: --no-FLAG turns it off
                flag = f"`--[no-]{opt.flag[2:]}`" if default else f"`{opt.flag}`"
            else:
                flag = f"`{opt.flag} {_metavar(opt, base)}`"
            lines.append(f"| {flag} | {shown} | {opt.text().replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _metavar(opt, base: type) -> str:
    """The placeholder of an option's value: its own, else N (int), X (float), VALUE."""
    return opt.metavar or {int: "N", float: "X"}.get(base, "VALUE")


def _parser(parse, flag: str):
    """An argparse ``type`` that turns a ValueError into argparse's one-line error."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    convert.__name__ = flag
    return convert


def _run_parser(sub, full: bool) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="decode videos, compute flow and write shards",
        description="Decode videos, compute TV-L1 flow and write Parquet/TFRecord shards. "
        "Apache Beam pipeline options (--runner, --direct_running_mode, --s3_endpoint_url, "
        "...) are passed to Beam; any other unknown flag is an error.",
    )
    if full:  # the option registries import torch: only for `run`
        add_config_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and Beam's log")
    return p


def beam_flags_error(args: list[str], known: list[str]) -> str | None:
    """Check the arguments left over by tristream's parser against Beam's own pipeline
    option classes; None when Beam knows them all, else one line naming the first unknown
    flag with the closest tristream or Beam flag. ``known``: tristream's flags."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    if any(a.startswith("--dask") for a in args):
        try:  # registers DaskOptions with Beam's option classes
            import apache_beam.runners.dask.dask_runner  # noqa: F401
        except ImportError:
            pass

    class Parser(_BeamArgumentParser):
        def error(self, message: str):  # a bad value of a Beam flag: one line, not Beam's usage
            raise ValueError(message)

    parser = Parser(allow_abbrev=False, add_help=False)
    seen: set[type] = set()
    stack = list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:  # an option two classes both declare
            pass
    try:
        _, unknown = parser.parse_known_args(args)
    except ValueError as exc:
        return f"Apache Beam option: {exc}"
    if not unknown:
        return None
    bad = next((a for a in unknown if a.startswith("-")), unknown[0])
    name = bad.split("=", 1)[0]
    beam = [o for a in parser._actions for o in a.option_strings]
    close = difflib.get_close_matches(name.replace("_", "-"), known, n=1, cutoff=0.7)
    close = close or difflib.get_close_matches(name, beam, n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]}?" if close else ""
    if not name.startswith("-"):
        return f"unexpected argument {bad!r}"
    return f"unknown flag {name} (neither a tristream nor an Apache Beam option){hint}"


def cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from tristream.config import RunConfig
    from tristream.pipeline.run import run

    options = {k: v for k, v in vars(args).items() if k not in ("command", "verbose")}
    config = RunConfig.from_options(**options)
    result = run(config, beam_args)
    print(summary(result.manifest, result.failures, config.output.path,
                  limit=config.run.failures_shown))  # fmt: skip
    if result.lost:
        print(
            f"tristream: error: {result.lost} video(s) were neither written nor reported "
            "failed (stage 'lost' in failures.jsonl); the output is incomplete",
            file=sys.stderr,
        )
        return 1
    return 1 if (result.failures and config.run.fail_on_error) else 0


def summary(manifest: dict, failures: list[dict], output: str, limit: int = 20) -> str:
    """A few human lines about a finished run (what ``run`` and ``inspect`` print): totals,
    shard files, counters and the first ``limit`` failures (then how many more there are)."""
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
    for f in failures[:limit]:
        lines.append(f"  FAILED {f['video_id']} at {f['stage']}: {f['error']}")
    if len(failures) > limit:
        lines.append(f"  ... {len(failures) - limit} more in {output}/failures.jsonl")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    run_parser = _run_parser(sub, full=command == "run")
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
    if args.command == "run" and rest:
        flags = [o for a in run_parser._actions for o in a.option_strings]
        problem = beam_flags_error(rest, flags)
        if problem:
            run_parser.error(problem)  # exit status 2, before any work
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
        if _quiet_apitools not in handler.filters:  # once, however often main() runs
            handler.addFilter(_quiet_apitools)
    from tristream.pipeline.interrupt import EXIT_INTERRUPTED, RunInterrupted

    try:
        if args.command == "run":
            return cmd_run(args, rest)
        if args.command == "export-skeletons":
            return cmd_export(args)
        return cmd_inspect(args)
    except RunInterrupted as exc:  # the first Ctrl-C / SIGTERM: stopped cleanly
        print(f"tristream: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # before the run's own handling began
        print("tristream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError) as exc:  # the command line or its inputs
        _report(exc, getattr(args, "verbose", False))
        return 2
    except (OSError, RuntimeError) as exc:  # a fault of the run: disk full, not writable
        _report(exc, getattr(args, "verbose", False))
        return 1


def _quiet_apitools(record: logging.LogRecord) -> bool:
    """A log filter: drop Beam's "apitools not found" warning (a local run needs no GCP)."""
    return not str(record.msg).startswith("apitools not found")


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
