"""Build and run the Beam pipeline for a :class:`RunConfig`.

Graph::

    tasks -> Reshuffle -> ProcessVideo (process_video + cache staging: one outcome per video)
      written -> GroupByKey(split, shard) -> WriteShard ---------+
      failed  --------------------------------------------------+-> Finalize
                                 (accounting, failures.jsonl, manifest.json)

The default runner is Beam's FnApiRunner in this process, on ``--workers``
threads: Beam 2.77's ``DirectRunner`` first tries to download and start the
Prism runner binary, which a machine without network must not do.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from tristream.config import RunConfig
from tristream.pipeline import interrupt, progress, storage
from tristream.pipeline.cache import config_hash
from tristream.pipeline.inputs import list_tasks
from tristream.pipeline.lock import output_lock
from tristream.pipeline.sinks import WriteShard, finalize, shard_key
from tristream.pipeline.videos import Failure, ProcessVideo, VideoOutcome, worker_threads
from tristream.process import check_files
from tristream.shards import storage as shard_storage
from tristream.shards.atomic import write_text_atomic

LOG = logging.getLogger(__name__)
LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner")


class RunError(RuntimeError):
    """A fault of the whole run (output not writable, disk full while writing a shard),
    as opposed to one bad video; the message is one readable line."""


@dataclass
class RunResult:
    """What a run wrote: the manifest dict, the failure records and Beam's counters."""

    manifest: dict
    failures: list[dict]
    counters: dict[str, int]

    @property
    def lost(self) -> int:
        """Videos neither written nor reported failed by a worker (stage ``lost``)."""
        return int(self.manifest["totals"].get("videos_lost", 0))


def _options(config: RunConfig, beam_args: list[str]) -> tuple[object | None, PipelineOptions]:
    options = PipelineOptions(beam_args)
    runner_name = options.view_as(StandardOptions).runner
    if runner_name == "DaskRunner":  # Beam knows it only by its full name
        from apache_beam.runners.dask.dask_runner import DaskRunner

        if not any(
            a.startswith(("--dask_partition_size", "--dask_npartitions")) for a in beam_args
        ):
            # One video per partition, so videos spread over the Dask workers.
            options = PipelineOptions([*beam_args, "--dask_partition_size=1"])
        return DaskRunner(), options
    if runner_name not in LOCAL_RUNNERS:
        return None, options
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = worker_threads(config)
    if direct.direct_running_mode in (None, "in_memory"):
        direct.direct_running_mode = "multi_threading"
    return FnApiRunner(), options


def build(p: beam.Pipeline, config: RunConfig, digest: str, tasks, pre_failures) -> None:
    """Add the tristream stages for ``tasks`` to pipeline ``p``; ``digest`` is the config
    hash (:func:`tristream.pipeline.cache.config_hash`).

    Every branch ends in the one ``Finalize`` step (no side inputs), so runners
    that compute only what the last step needs (Dask) run everything.
    """
    outcomes = (
        p
        | "Tasks" >> beam.Create(tasks)
        | "Spread" >> beam.Reshuffle()
        | "ProcessVideo" >> beam.ParDo(ProcessVideo(config, digest)).with_output_types(VideoOutcome)
    )
    shards = (
        outcomes
        | "Written" >> beam.Filter(lambda o: o.ok)
        | "KeyByShard" >> beam.Map(shard_key)
        | "ByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(config))
    )
    failures = (
        outcomes
        | "Failed" >> beam.Filter(lambda o: o.failure is not None)
        | "Failure" >> beam.Map(lambda o: o.failure).with_output_types(Failure)
    )
    (
        {
            "once": p | "Once" >> beam.Create([(None, None)]),
            "shards": shards | "KeyShards" >> beam.Map(lambda s: (None, s)),
            "failures": failures | "KeyFailures" >> beam.Map(lambda f: (None, f)),
        }
        | "Gather" >> beam.CoGroupByKey()
        | "Finalize"
        >> beam.Map(
            finalize, config=config, config_hash=digest, tasks=tasks, pre_failures=pre_failures
        )
    )


def check_writable(output: str, store: shard_storage.StoreLike = None) -> None:
    """Create ``output`` and write and remove a small file in it; :class:`RunError` if not.

    For an object-store URI (on ``store``, the run's; None: the environment's): the
    bucket must exist and the store answer
    (:func:`~tristream.pipeline.storage.check_location`), then one small object
    is written and removed.
    """
    if storage.is_uri(output):
        check = storage.join(output, ".tristream-write-check")
        try:
            storage.check_location(output, "--output", store)
            write_text_atomic(check, "ok\n", store)
            shard_storage.remove(check, store)
        except (OSError, RuntimeError) as exc:
            raise RunError(str(exc) if isinstance(exc, storage.StorageError) else
                           f"output {output} is not writable: {exc}") from exc  # fmt: skip
        return
    try:
        os.makedirs(output, exist_ok=True)
        write_text_atomic(os.path.join(output, ".tristream-write-check"), "ok\n")
        os.remove(os.path.join(output, ".tristream-write-check"))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunError(f"output folder {output} is not writable: {reason}") from exc


_ERRNO = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)
_STEP = re.compile(r"\[while running '([^']+)'\]")


def _run_fault(exc: BaseException) -> RunError | None:
    """The :class:`RunError` for an OS-level fault (a full disk) that stopped the pipeline.

    Runners re-raise a DoFn's exception wrapped, often as text only (Beam's
    worker harness turns it into a RuntimeError holding the traceback): the
    OSError is found in the exception chain, else by its ``[Errno N]`` in the
    text. None when the failure is not an OS fault.
    """
    seen = set()
    text = ""
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            where = f" ({exc.filename})" if exc.filename else ""
            return RunError(f"writing the output failed: {os.strerror(exc.errno)}{where}")
        text += f"\n{exc}"
        exc = exc.__cause__ or exc.__context__
    found = _ERRNO.findall(text)
    if not found:
        return None
    step = _STEP.findall(text)
    where = f" (in step {step[-1]})" if step else ""
    return RunError(f"writing the output failed: {os.strerror(int(found[-1]))}{where}")


class _WithoutTracebacks(io.TextIOBase):
    """stderr without the tracebacks that Beam's in-process worker prints for a failed step
    (tristream reports the fault in one line; ``-v`` shows them)."""

    def __init__(self, stream):
        self._stream = stream
        self._skip_newline = False

    def write(self, text: str) -> int:
        if text.startswith("Traceback (most recent call last)"):
            self._skip_newline = True
            return len(text)
        if self._skip_newline and text == "\n":
            self._skip_newline = False
            return len(text)
        self._skip_newline = False
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()


def _clean_partial_files(output: str) -> None:
    """Remove temporary shard files a killed run left behind (they never became shards).

    Nothing to do on an object store: temporary files are local there, and a
    killed upload never becomes an object.
    """
    if storage.is_uri(output):
        return
    folder = os.path.join(output, "shards")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(folder, name))


def _run_pipeline(pipeline: beam.Pipeline, videos: int, progress_enabled: bool | None):
    """Run ``pipeline`` to the end with the progress bars open; returns Beam's result.

    Raises :class:`RunError` for an OS-level fault that stopped it (see :func:`_run_fault`).
    """
    progress.start(videos, enabled=progress_enabled)
    result = None
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as exc:
        fault = _run_fault(exc)
        if fault is None:
            raise
        raise fault from exc
    finally:
        progress.close()
        client = getattr(result, "client", None)
        if client is not None:  # the Dask runner's client: let go of the cluster
            client.close()
    return result


def run(config: RunConfig, beam_args: list[str] | None = None) -> RunResult:
    """Run the whole pipeline and return what it wrote (reads back ``manifest.json``).

    ``config.source.input``, ``.source.manifest`` and ``.output.path`` may be ``s3://`` /
    ``gs://`` URIs (:mod:`tristream.pipeline.storage`): their buckets are checked first,
    and a missing bucket or an unreachable store is one :class:`RunError` line.

    One run per output: the output's lock (:mod:`tristream.pipeline.lock`) is held from
    the checks to the end; a live holder is :class:`~tristream.pipeline.lock.OutputLocked`.
    On a local runner the first SIGINT / SIGTERM stops the run cleanly
    (:mod:`tristream.pipeline.interrupt`): :class:`RunInterrupted` says how many videos
    are done in the cache, and nothing else is written.
    """
    beam_args = list(beam_args or [])
    options = PipelineOptions(beam_args)
    local = options.view_as(StandardOptions).runner in LOCAL_RUNNERS and (
        options.view_as(DirectOptions).direct_running_mode != "multi_processing"
    )
    # Only a run whose DoFns run in this process can see the flag; others keep Python's
    # default (KeyboardInterrupt) and are stopped their runner's way.
    with interrupt.signals_handled() if local else contextlib.nullcontext():
        return _run(config, beam_args)


def _run(config: RunConfig, beam_args: list[str]) -> RunResult:
    try:
        if config.run.store is None:  # built here, once; it travels to the workers in config
            config = config.replace(store=storage.configure(PipelineOptions(beam_args or [])))
        store = config.run.store
        storage.check_location(config.source.input, "--input", store)
        storage.check_location(config.source.manifest, "--manifest", store)
    except storage.StorageError as exc:
        raise RunError(str(exc)) from None
    src, output = config.source, config.output.path
    tasks, rejected = list_tasks(
        src.input, src.manifest, src.path_template, src.split, config.output.num_shards, store
    )
    if not tasks and not rejected:
        raise ValueError(f"no videos found in {src.manifest or src.input}")
    pre_failures = [Failure(r.video_id, r.source, r.stage, r.error) for r in rejected]
    check_writable(output, store)
    check_files(config)  # a missing or wrong model file: one clear error, before any work
    digest = config_hash(config)
    with output_lock(output, digest, store):
        return _run_locked(config, beam_args, digest, tasks, pre_failures)


def _run_locked(
    config: RunConfig, beam_args: list[str], digest: str, tasks: list, pre_failures: list
) -> RunResult:
    output, store = config.output.path, config.run.store
    interrupt.check_run(0, len(tasks))  # a signal during the checks: nothing started
    _clean_partial_files(output)
    LOG.info("%d videos to process into %s", len(tasks), output)
    runner, options = _options(config, list(beam_args or []))
    pipeline = beam.Pipeline(runner=runner, options=options)
    build(pipeline, config, digest, tasks, pre_failures)
    local = runner is not None and options.view_as(DirectOptions).direct_running_mode != (
        "multi_processing"
    )
    quiet = local and not logging.getLogger().isEnabledFor(logging.INFO)
    stderr = _WithoutTracebacks(sys.stderr) if quiet else sys.stderr
    with contextlib.redirect_stderr(stderr):
        result = _run_pipeline(pipeline, len(tasks), progress_enabled=None if local else False)
    counters: dict[str, int] = {}
    try:
        for c in result.metrics().query()["counters"]:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    except Exception:  # noqa: BLE001 - some runners report no metrics
        LOG.debug("runner reported no metrics", exc_info=True)
    interrupt.check_run(counters.get("videos_done", 0), len(tasks) + len(pre_failures))
    manifest_path = storage.join(output, "manifest.json")
    manifest = json.loads(shard_storage.read_text(manifest_path, store))
    manifest["metrics"] = dict(sorted(counters.items()))
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n", store)
    text = shard_storage.read_text(storage.join(output, "failures.jsonl"), store)
    failures = [json.loads(line) for line in text.split("\n") if line.strip()]
    return RunResult(manifest, failures, counters)
