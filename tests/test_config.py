"""The typed run configuration and the command line generated from it.

Oracles: the config hashes that the flat ``RunConfig`` of release 0.x computed for the same
settings (pinned below: the cache and every row's ``meta`` depend on them), the list of
dataclass fields (each must have exactly one flag), and the real ``tristream`` command.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest

from tristream.cli import beam_flags_error, main
from tristream.config import GROUPS, RunConfig, options_of
from tristream.pipeline.cache import config_hash

MODELS = "models"

#: Computed by the flat ``RunConfig(...).config_hash`` of the release before the nested
#: config (commit ca6ef6e), for the same settings.
HASHES_BEFORE = {
    "default": ({}, "67bd5a0f7f65a79d"),
    "opencv_params": (
        dict(flow="opencv", flow_param={"nscales": 3, "tau": 0.2}, fps=12.5, short_side=128,
             max_frames=40, jpeg_quality=90, flow_encoding="png"),
        "efde3235650727a1",
    ),
    "persons": (
        dict(detector="yolox_nano_416x416.onnx", pose_model="blazepose_full.onnx",
             keypoints3d=True, max_persons=3, det_threshold=0.4,
             render="dots,coarse,uniform,black"),
        "90f0ba0cde0742f6",
    ),
    "detector_only": (dict(flow="none", detector="yolox_nano_416x416.onnx"), "599ec6b341756ff8"),
}  # fmt: skip


def _with_models(options: dict, models) -> dict:
    return {
        k: str(models / v) if k in ("detector", "pose_model") else v for k, v in options.items()
    }


@pytest.mark.parametrize("case", sorted(HASHES_BEFORE))
def test_config_hash_is_unchanged_by_the_nested_config(case, data_dir):
    options, expected = HASHES_BEFORE[case]
    config = RunConfig.from_options(
        output="o", input="i", **_with_models(options, data_dir / MODELS)
    )
    assert config_hash(config) == expected


def test_equal_settings_have_one_spelling_and_one_hash():
    a = RunConfig.from_options(output="o", input="i", fps=25, flow_param={"tau": 1})
    b = RunConfig.from_options(output="o", input="i", fps=25.0, flow_param=[("tau", 1.0)])
    assert a == b and config_hash(a) == config_hash(b)
    assert isinstance(a.decode.fps, float)
    # Another value is another hash.
    c = RunConfig.from_options(output="o", input="i", fps=24.0)
    assert config_hash(c) != config_hash(a)


@pytest.mark.parametrize(
    ("options", "flag", "words"),
    [
        (dict(fps=math.nan), "--fps", "finite"),
        (dict(fps=math.inf), "--fps", "finite"),
        (dict(fps=-1.0), "--fps", ">= 0"),
        (dict(timeout=-1.0), "--timeout", ">= 0"),
        (dict(workers=-1), "--workers", ">= 0"),
        (dict(device="bogus"), "--device", "cuda:N"),
        (dict(device="cuda:x"), "--device", "cuda:N"),
        (dict(flow_param={"nscales": 5.0}), "--flow-param", "nscales"),
        (dict(flow_param={"nscale": 5}), "--flow-param", "unknown"),
        (dict(flow="opencvv"), "--flow", "did you mean 'opencv'"),
        (dict(jpeg_quality=0), "--jpeg-quality", ">= 1"),
        (dict(jpeg_quality=101), "--jpeg-quality", "<= 100"),
        (dict(max_frames=1), "--max-frames", ">= 2"),
        (dict(format="csv"), "--format", "parquet"),
        (dict(det_threshold=2.0), "--det-threshold", "<= 1"),
        (dict(short_side=1.5), "--short-side", "an integer"),
        (dict(fps="25"), "--fps", "a number"),
        (dict(keypoints3d=True), "--keypoints3d", "pose model"),
        (dict(render="bars,wavy"), None, "wavy"),
    ],
)
def test_a_bad_value_fails_at_construction_naming_its_flag(options, flag, words):
    with pytest.raises(ValueError) as info:
        RunConfig.from_options(output="o", input="i", **options)
    text = str(info.value)
    assert words.lower() in text.lower()
    if flag:
        assert text.startswith(flag)


def test_an_unknown_option_name_is_an_error_with_a_suggestion():
    with pytest.raises(ValueError, match="did you mean 'max_frames'"):
        RunConfig.from_options(output="o", input="i", max_frame=16)
    with pytest.raises(ValueError, match="--input"):
        RunConfig.from_options(output="o")


def test_the_packaged_models_are_a_config_rule(data_dir):
    from tristream.models.zoo import DEFAULT_DETECTOR, DEFAULT_POSE_MODEL

    c = RunConfig.from_options(output="o", input="i", persons=True)
    assert (c.persons.detector, c.persons.pose_model) == (
        str(DEFAULT_DETECTOR),
        str(DEFAULT_POSE_MODEL),
    )
    assert c.modalities == ("rgb", "flow", "pose", "keypoints")
    boxes = RunConfig.from_options(output="o", input="i", persons=True, pose_model="none")
    assert boxes.persons.detector == str(DEFAULT_DETECTOR) and boxes.persons.pose_model is None
    full = str(data_dir / MODELS / "blazepose_full.onnx")
    own = RunConfig.from_options(output="o", input="i", pose_model=full)
    assert own.persons.detector == str(DEFAULT_DETECTOR) and own.persons.pose_model == full
    plain = RunConfig.from_options(output="o", input="i")
    assert not plain.persons.enabled and plain.modalities == ("rgb", "flow")
    # The recorded options (manifest.json) give the same config back: the rule is idempotent.
    for config in (c, boxes, own, plain):
        assert RunConfig.from_options(**config.options()) == config


def test_construction_does_no_io(tmp_path):
    """Files are checked by the run, not by validation: a missing model builds a config."""
    config = RunConfig.from_options(output="o", input="i", detector=str(tmp_path / "no.onnx"))
    assert config.persons.detector.endswith("no.onnx")
    from tristream.process import check_files

    with pytest.raises(FileNotFoundError, match="--detector"):
        check_files(config)


def _run_parser():
    import argparse

    from tristream.cli import _run_parser as make

    sub = argparse.ArgumentParser().add_subparsers()
    return make(sub, full=True)


def test_every_option_field_has_exactly_one_flag_and_no_default_of_its_own():
    """One flag per field; a switch that is on by default also has its ``--no-`` form."""
    parser = _run_parser()
    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    fields = [
        prefix + opt.name.replace("_", "-")
        for cls in GROUPS.values()
        for f, opt, _ in options_of(cls)
        for prefix in (("--", "--no-") if f.default is True else ("--",))
    ]
    assert "--no-parquet-frame-index" in fields
    flags = [f for f in flags if f not in ("--help", "--verbose")]
    assert sorted(flags) == sorted(fields)
    # An absent flag leaves the field's default: the parser holds no copy of it.
    args = parser.parse_args(["--output", "o", "--input", "i"])
    assert vars(args) == {"output": "o", "input": "i", "verbose": False}
    assert RunConfig.from_options(output="o", input="i") == RunConfig(
        source=GROUPS["source"](input="i"), output=GROUPS["output"](path="o")
    )
    defaults = {f.name: f.default for cls in GROUPS.values() for f in dataclasses.fields(cls)}
    assert defaults["short_side"] == 256 and defaults["max_frames"] == 300


def test_flags_reach_their_fields():
    parser = _run_parser()
    argv = ["--output", "o", "--input", "i", "--short-side", "64", "--max-frames", "16",
            "--flow", "opencv", "--flow-param", "nscales=3", "--flow-param", "tau=0.2",
            "--persons", "--max-persons", "2", "--fail-on-error",
            "--failures-shown", "3"]  # fmt: skip
    options = {k: v for k, v in vars(parser.parse_args(argv)).items() if k != "verbose"}
    c = RunConfig.from_options(**options)
    assert (c.decode.short_side, c.decode.max_frames, c.flow.backend) == (64, 16, "opencv")
    assert dict(c.flow.params) == {"nscales": 3, "tau": 0.2}
    assert c.persons.enabled and c.persons.max_persons == 2
    assert c.run.fail_on_error and c.run.failures_shown == 3


def test_beam_flags_are_checked_against_beams_own_options():
    known = ["--max-frames", "--short-side"]
    assert (
        beam_flags_error(["--runner", "DirectRunner", "--direct_num_workers", "2"], known) is None
    )
    assert beam_flags_error(["--s3_endpoint_url=http://localhost:1"], known) is None
    assert "did you mean --max-frames" in beam_flags_error(["--max_frames", "16"], known)
    assert "did you mean --short-side" in beam_flags_error(["--shortside", "64"], known)
    assert "invalid int" in beam_flags_error(["--direct_num_workers", "abc"], known)


def test_a_mistyped_flag_stops_the_command_before_any_work(tmp_path, carphone, capsys):
    """#20's first case: `--shortside 64 --max_frames 16` once ran with the defaults, exit 0."""
    out = tmp_path / "o"
    argv = ["run", "--input", carphone, "--output", str(out), "--flow", "none",
            "--shortside", "64", "--max_frames", "16"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--shortside" in err and "did you mean --short-side" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--fps", "nan"], "--fps must be a finite number"),
        (["--device", "bogus"], "--device must be"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--timeout", "-1"], "--timeout must be >= 0"),
        (["--flow-param", "nscales=5.0"], "nscales must be an int"),
        (["--flow-param", "nscales"], "expected NAME=VALUE"),
    ],
)
def test_the_command_names_the_bad_flag_and_exits_2(tmp_path, carphone, flags, expected):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "tristream.cli", "run", "--input", carphone, "--output", str(out),
           *flags]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert not out.exists()


def test_the_readme_option_table_is_the_one_the_config_makes():
    """The README's table of flags is generated from the fields (scripts/options_table.py):
    a field added, removed or changed without regenerating it fails here."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "scripts/options_table.py", "--check"], cwd=repo,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, "README.md is stale: run python scripts/options_table.py"


def test_the_closing_summary_lists_at_most_failures_shown():
    """#20: the final summary listed every failure with no limit."""
    from tristream.cli import summary

    totals = {"videos_written": 0, "videos": 25, "videos_failed": 25, "rows": 0, "frames": 0,
              "bytes": 0}  # fmt: skip
    manifest = {"totals": totals, "modalities": ["rgb"], "formats": ["parquet"],
                "schema_version": 1, "shards": []}  # fmt: skip
    failures = [{"video_id": f"v{i}", "stage": "probe", "error": "bad"} for i in range(25)]
    lines = summary(manifest, failures, "OUT", limit=20).splitlines()
    listed = [ln for ln in lines if ln.startswith("  FAILED ")]
    assert [ln.split()[1] for ln in listed] == [f"v{i}" for i in range(20)]
    assert lines[-1] == "  ... 5 more in OUT/failures.jsonl"
    assert "more in" not in summary(manifest, failures[:20], "OUT", limit=20)
