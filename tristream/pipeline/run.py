"""Build and run the Beam pipeline for a :class:`RunConfig`.

Graph::

    tasks -> Reshuffle -> Decode -> Flow -> Pose -> Render -> Encode -> Stage (cache)
                                                         (fused, one segment at a time)
      staged refs + failures -> CoGroupByKey(video) -> CollectVideo
      -> GroupByKey(split, shard) -> WriteShard -> finalize (manifest, failures)

The default runner is Beam's FnApiRunner in this process, on ``--workers``
threads: Beam 2.77's ``DirectRunner`` first tries to download and start the
Prism runner binary, which a machine without network must not do.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from tristream.pipeline import progress
from tristream.pipeline.config import RunConfig
from tristream.pipeline.inputs import list_tasks
from tristream.pipeline.sinks import CollectVideo, CompleteVideo, WriteShard, finalize
from tristream.pipeline.stages import (
    DecodeFn,
    EncodeFn,
    Failure,
    FlowFn,
    PoseFn,
    RenderFn,
    StagedSegment,
    StageFn,
    worker_threads,
)
from tristream.shards.atomic import write_text_atomic

LOG = logging.getLogger(__name__)
LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner")


@dataclass
class RunResult:
    """What a run wrote: the manifest dict, the failure records and Beam's counters."""

    manifest: dict
    failures: list[dict]
    counters: dict[str, int]


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


def build(p: beam.Pipeline, config: RunConfig, tasks, pre_failures) -> None:
    """Add the tristream stages for ``tasks`` to pipeline ``p``.

    Every branch ends in the one ``Finalize`` step (no side inputs), so runners
    that compute only what the last step needs (Dask) run everything.
    """
    stream = (
        p
        | "Tasks" >> beam.Create(tasks)
        | "Spread" >> beam.Reshuffle()
        | "Decode" >> beam.ParDo(DecodeFn(config))
    )
    stages = [("Flow", FlowFn)] if config.flow != "none" else []
    if config.persons:
        stages.append(("Pose", PoseFn))
        if config.render_style is not None:
            stages.append(("Render", RenderFn))
    stages += [("Encode", EncodeFn), ("Stage", StageFn)]
    for name, fn in stages:
        stream = stream | name >> beam.ParDo(fn(config))
    # The stream now holds StagedSegments and Failures.
    staged = (
        stream
        | "OnlyStaged" >> beam.Filter(lambda e: isinstance(e, StagedSegment))
        | "KeyStaged"
        >> beam.Map(lambda s: (s.task.video_id, s)).with_output_types(tuple[str, StagedSegment])
    )
    failures = stream | "OnlyFailures" >> beam.Filter(lambda e: isinstance(e, Failure))
    collected = (
        {
            "staged": staged,
            "failed": failures
            | "KeyFailures"
            >> beam.Map(lambda f: (f.video_id, f)).with_output_types(tuple[str, Failure]),
        }
        | "ByVideo" >> beam.CoGroupByKey()
        | "Collect" >> beam.ParDo(CollectVideo())
    )
    shards = (
        collected
        | "OnlyComplete"
        >> beam.Filter(lambda e: not isinstance(e, Failure)).with_output_types(
            tuple[tuple[str, int, int], CompleteVideo]
        )
        | "ByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(config))
    )
    incomplete = collected | "OnlyIncomplete" >> beam.Filter(lambda e: isinstance(e, Failure))
    every_failure = (failures, incomplete) | "Failures" >> beam.Flatten()
    (
        {
            "once": p | "Once" >> beam.Create([(None, None)]),
            "shards": shards | "KeyShards" >> beam.Map(lambda s: (None, s)),
            "failures": every_failure | "KeyAll" >> beam.Map(lambda f: (None, f)),
        }
        | "Gather" >> beam.CoGroupByKey()
        | "Finalize" >> beam.Map(finalize, config=config, tasks=tasks, pre_failures=pre_failures)
    )


def _clean_partial_files(output: str) -> None:
    """Remove temporary shard files a killed run left behind (they never became shards)."""
    folder = os.path.join(output, "shards")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(folder, name))


def run(config: RunConfig, beam_args: list[str] | None = None) -> RunResult:
    """Run the whole pipeline and return what it wrote (reads back ``manifest.json``)."""
    tasks, rejected = list_tasks(
        config.input, config.manifest, config.path_template, config.split, config.num_shards
    )
    if not tasks and not rejected:
        raise ValueError(f"no videos found in {config.manifest or config.input}")
    pre_failures = [Failure(r.video_id, r.source, r.stage, r.error) for r in rejected]
    os.makedirs(config.output, exist_ok=True)
    _clean_partial_files(config.output)
    LOG.info("%d videos to process into %s", len(tasks), config.output)
    runner, options = _options(config, list(beam_args or []))
    pipeline = beam.Pipeline(runner=runner, options=options)
    build(pipeline, config, tasks, pre_failures)
    local = runner is not None and options.view_as(DirectOptions).direct_running_mode != (
        "multi_processing"
    )
    progress.start(len(tasks), enabled=None if local else False)
    result = None
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        progress.close()
        client = getattr(result, "client", None)
        if client is not None:  # the Dask runner's client: let go of the cluster
            client.close()
    counters: dict[str, int] = {}
    try:
        for c in result.metrics().query()["counters"]:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    except Exception:  # noqa: BLE001 - some runners report no metrics
        LOG.debug("runner reported no metrics", exc_info=True)
    manifest_path = os.path.join(config.output, "manifest.json")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["metrics"] = dict(sorted(counters.items()))
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    with open(os.path.join(config.output, "failures.jsonl"), encoding="utf-8") as f:
        failures = [json.loads(line) for line in f if line.strip()]
    return RunResult(manifest, failures, counters)
