"""Build and run the Beam pipeline for a :class:`RunConfig`.

Graph::

    tasks -> Reshuffle -> Decode -> Flow -> Encode -> Stage (cache)   (fused, per segment)
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
from tristream.pipeline.sinks import CollectVideo, WriteShard, finalize
from tristream.pipeline.stages import (
    FAILURES,
    DecodeFn,
    EncodeFn,
    Failure,
    FlowFn,
    StageFn,
)

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
    if runner_name not in LOCAL_RUNNERS:
        return None, options
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = config.workers or os.cpu_count() or 1
    if direct.direct_running_mode in (None, "in_memory"):
        direct.direct_running_mode = "multi_threading"
    return FnApiRunner(), options


def build(p: beam.Pipeline, config: RunConfig, tasks, pre_failures) -> None:
    """Add the tristream stages for ``tasks`` to pipeline ``p``."""
    decoded = (
        p
        | "Tasks" >> beam.Create(tasks)
        | "Spread" >> beam.Reshuffle()
        | "Decode" >> beam.ParDo(DecodeFn(config)).with_outputs(FAILURES, main="out")
    )
    failures = [decoded[FAILURES]]
    current = decoded.out
    stages = [("Flow", FlowFn)] if config.flow != "none" else []
    stages += [("Encode", EncodeFn), ("Stage", StageFn)]
    for name, fn in stages:
        result = current | name >> beam.ParDo(fn(config)).with_outputs(FAILURES, main="out")
        failures.append(result[FAILURES])
        current = result.out
    staged = current

    all_failures = failures | "AllFailures" >> beam.Flatten()
    videos = (
        {
            "staged": staged,
            "failed": all_failures | "KeyFailures" >> beam.Map(lambda f: (f.video_id, f)),
        }
        | "ByVideo" >> beam.CoGroupByKey()
        | "Collect" >> beam.ParDo(CollectVideo()).with_outputs(FAILURES, main="out")
    )
    shards = (
        videos.out
        | "ByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(config))
    )
    every_failure = (all_failures, videos[FAILURES]) | "Failures" >> beam.Flatten()
    (
        p
        | "Once" >> beam.Create([None])
        | "Finalize"
        >> beam.Map(
            finalize,
            config=config,
            tasks=tasks,
            pre_failures=pre_failures,
            shards=beam.pvalue.AsList(shards),
            failures=beam.pvalue.AsList(every_failure),
        )
    )


def run(config: RunConfig, beam_args: list[str] | None = None) -> RunResult:
    """Run the whole pipeline and return what it wrote (reads back ``manifest.json``)."""
    tasks, rejected = list_tasks(
        config.input, config.manifest, config.path_template, config.split, config.num_shards
    )
    if not tasks and not rejected:
        raise ValueError(f"no videos found in {config.manifest or config.input}")
    pre_failures = [Failure(r.video_id, r.source, r.stage, r.error) for r in rejected]
    os.makedirs(config.output, exist_ok=True)
    LOG.info("%d videos to process into %s", len(tasks), config.output)
    runner, options = _options(config, list(beam_args or []))
    pipeline = beam.Pipeline(runner=runner, options=options)
    build(pipeline, config, tasks, pre_failures)
    local = runner is not None and options.view_as(DirectOptions).direct_running_mode != (
        "multi_processing"
    )
    progress.start(len(tasks), enabled=None if local else False)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        progress.close()
    counters: dict[str, int] = {}
    try:
        for c in result.metrics().query()["counters"]:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    except Exception:  # noqa: BLE001 - some runners report no metrics
        LOG.debug("runner reported no metrics", exc_info=True)
    with open(os.path.join(config.output, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(config.output, "failures.jsonl"), encoding="utf-8") as f:
        failures = [json.loads(line) for line in f if line.strip()]
    return RunResult(manifest, failures, counters)
