"""The whole Beam pipeline on real videos, read back by independent readers.

One run (module fixture) processes two real sample videos, a real clip
re-encoded with another codec, size and rate that no other test uses, a
corrupt file and a missing file, into Parquet and TFRecord. Frames are small
(short side 40) to keep OpenCV's TV-L1 quick.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import struct

import crc32c
import numpy as np
import pyarrow.parquet as pq
import pytest
from tfrecord.reader import sequence_loader

from tests.helpers import (
    jpeg_round_trip,
    make_clip,
    reference_flow,
    reference_frames,
)
from tristream.cli import main
from tristream.config import RunConfig
from tristream.pipeline.run import run
from tristream.shards import read_rows
from tristream.shards.schema import arrow_schema

SHORT = 40
MAX_FRAMES = 30


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, bikes, carphone):
    root = tmp_path_factory.mktemp("inputs")
    # A real clip no other test sees: MPEG-4 Part 2 in AVI, 30 fps, 300x190, 1.2 s.
    unseen = make_clip(
        bikes, str(root / "unseen clip é.avi"),
        "-ss", "4", "-t", "1.2", "-vf", "crop=300:190:170:40", "-r", "30",
        "-c:v", "mpeg4", "-q:v", "2", "-an",
    )  # fmt: skip
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(open(bikes, "rb").read()[5000:60000])
    rows = [
        {"path": bikes, "id": "bikes", "label": "street", "start": "0", "end": "1.6"},
        {"path": carphone, "id": "carphone", "label": "talk", "start": "", "end": ""},
        {"path": unseen, "id": "unseen", "label": "", "start": "", "end": ""},
        {"path": str(corrupt), "id": "corrupt", "label": "", "start": "", "end": ""},
        {"path": str(root / "missing.mp4"), "id": "missing", "label": "", "start": "", "end": ""},
    ]
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {
        "manifest": str(manifest), "unseen": unseen, "corrupt": str(corrupt),
        "missing": str(root / "missing.mp4"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def result(inputs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    config = RunConfig.from_options(
        output=out, manifest=inputs["manifest"], format="both", short_side=SHORT,
        max_frames=MAX_FRAMES, workers=2,
    )  # fmt: skip
    return out, run(config)


def _video(rows, video_id):
    return sorted((r for r in rows if r["video_id"] == video_id), key=lambda r: r["segment"])


def _join(segments, key):
    """Concatenate per-segment arrays of one video, dropping the one-frame overlaps."""
    parts = [segments[0][key]] + [s[key][1:] if key == "rgb" else s[key] for s in segments[1:]]
    return np.concatenate(parts)


def test_manifest_and_failures(result, inputs):
    out, res = result
    totals = res.manifest["totals"]
    assert (totals["videos"], totals["videos_written"], totals["videos_failed"]) == (5, 3, 2)
    # bikes 40 frames -> 30 + 11; carphone 100 -> 30+30+30+13; unseen 30 -> 30.
    assert totals["rows"] == 2 + 4 + 1
    assert totals["frames"] == 40 + 100 + 30
    assert res.manifest["labels"] == {"street": 0, "talk": 1}
    failures = {f["video_id"]: f for f in res.failures}
    assert sorted(failures) == ["corrupt", "missing"]
    missing, corrupt = inputs["missing"], inputs["corrupt"]
    assert failures["missing"] == {
        "video_id": "missing", "source": missing, "stage": "probe",
        "error": f"file not found: {missing}", "segment": None,
    }  # fmt: skip
    # The corrupt file (bytes 5000-60000 of bikes.mp4: no MP4 header) fails at the probe:
    # ffmpeg/ffprobe cannot open it, and its own reason is passed on.
    corrupt_record = dict(failures["corrupt"])
    error = corrupt_record.pop("error")
    assert corrupt_record == {
        "video_id": "corrupt", "source": corrupt, "stage": "probe", "segment": None
    }  # fmt: skip
    assert error.startswith("not a readable video (")
    assert "Invalid data found when processing input" in error
    lines = open(os.path.join(out, "failures.jsonl"), encoding="utf-8").read().splitlines()
    records = sorted((json.loads(ln) for ln in lines), key=lambda f: f["video_id"])
    assert records == [failures["corrupt"], failures["missing"]]
    assert res.counters["flow_pairs"] == 170 - 3
    # Complete files only: no temporary names anywhere in the output.
    assert not glob.glob(os.path.join(out, "**", "*.tmp"), recursive=True)
    assert sorted(os.listdir(os.path.join(out, "shards"))) == [
        "train-00000-of-00001.parquet",
        "train-00000-of-00001.parquet.idx",  # each shard's frame index
        "train-00000-of-00001.tfrecord",
        "train-00000-of-00001.tfrecord.idx",
    ]


def test_parquet_opens_in_plain_pyarrow(result):
    out, _ = result
    table = pq.read_table(os.path.join(out, "shards", "train-00000-of-00001.parquet"))
    assert table.schema.names == arrow_schema(("rgb", "flow")).names
    assert "pose" not in table.schema.names and "keypoints" not in table.schema.names
    rows = table.to_pylist()
    assert [(r["video_id"], r["segment"]) for r in rows] == [
        ("bikes", 0), ("bikes", 1),
        ("carphone", 0), ("carphone", 1), ("carphone", 2), ("carphone", 3),
        ("unseen", 0),
    ]  # fmt: skip
    for r in rows:
        assert len(r["rgb"]) == r["num_frames"] and len(r["flow_x"]) == r["num_frames"] - 1
        assert r["start_frame"] == r["segment"] * (MAX_FRAMES - 1)
        assert min(r["height"], r["width"]) == SHORT and r["fps"] == 25.0
        assert r["rgb"][0][:2] == b"\xff\xd8"  # JPEG
        assert json.loads(r["meta"])["flow_encoding"] == "jpeg"
    assert rows[0]["label"] == "street" and rows[-1]["label"] is None
    assert rows[-1]["label_index"] is None


def test_tfrecord_opens_in_an_independent_reader(result):
    out, _ = result
    path = os.path.join(out, "shards", "train-00000-of-00001.tfrecord")
    # Check the framing and CRCs with an independent CRC32C implementation.
    with open(path, "rb") as f:
        data = f.read()
    pos, count = 0, 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        payload = data[pos + 12 : pos + 12 + length]
        (crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        raw = crc32c.crc32c(payload)
        assert crc == ((((raw >> 15) | (raw << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
        pos += 16 + length
        count += 1
    assert count == 7
    parquet = pq.read_table(os.path.join(out, "shards", "train-00000-of-00001.parquet"))
    examples = list(sequence_loader(path, None))
    for (context, features), row in zip(examples, parquet.to_pylist()):
        assert context["example/id"].decode() == row["video_id"]
        assert int(context["clip/frames"][0]) == row["num_frames"]
        assert [bytes(b) for b in features["image/encoded"]] == row["rgb"]
        assert [bytes(b) for b in features["FORWARD_FLOW/x/encoded"]] == row["flow_x"]
        assert (
            "clip/label/string" in context if row["label"] else "clip/label/string" not in context
        )


def test_reader_gives_the_same_rows_for_both_formats(result):
    out, _ = result
    a = list(read_rows(out, fmt="parquet"))
    b = list(read_rows(out, fmt="tfrecord"))
    assert len(a) == len(b) == 7
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        assert np.array_equal(x["rgb"], y["rgb"]) and np.array_equal(x["flow"], y["flow"])
        assert x["label_index"] == y["label_index"] and x["fps"] == pytest.approx(y["fps"])
    # An output directory with both formats reads each row once.
    assert len(list(read_rows(out))) == 7


def test_unseen_video_matches_an_independent_ffmpeg_and_opencv_computation(result, inputs):
    out, _ = result
    rows = _video(list(read_rows(out)), "unseen")
    rgb, flow = _join(rows, "rgb"), _join(rows, "flow")
    # 300x190 -> short side 40: width 300*40/190 = 63.2 -> even 64; 1.2 s at 25 fps = 30.
    assert rgb.shape == (30, 40, 64, 3) and flow.shape == (29, 40, 64, 2)
    ref = reference_frames(inputs["unseen"], 25, 40, 64)
    assert ref.shape == rgb.shape
    # The only difference is the JPEG (q95) storage: same error as JPEG on the reference.
    assert np.abs(rgb.astype(float) - jpeg_round_trip(ref)).mean() < 0.5
    ref_flow = reference_flow(ref)
    epe = np.linalg.norm(flow - np.clip(ref_flow, -20, 20), axis=-1)
    assert epe.mean() < 0.25  # quantisation (0.08 px) + JPEG of the flow planes


def test_segments_join_into_the_whole_video(result, bikes):
    out, _ = result
    rows = _video(list(read_rows(out)), "bikes")
    assert [r["num_frames"] for r in rows] == [30, 11]
    assert np.array_equal(rows[0]["rgb"][-1], rows[1]["rgb"][0])
    rgb, flow = _join(rows, "rgb"), _join(rows, "flow")
    assert rgb.shape[0] == 40 and flow.shape[0] == 39
    ref = reference_frames(bikes, 25, 40, 94)[:40]
    assert np.abs(rgb.astype(float) - jpeg_round_trip(ref)).mean() < 0.5


def test_cli_exit_codes_and_flow_none(tmp_path, carphone, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(carphone, folder / "good.mp4")
    (folder / "text.mp4").write_text("not a video")
    out = tmp_path / "out"
    args = ["run", "--input", str(folder), "--output", str(out), "--flow", "none",
            "--short-side", "32", "--format", "tfrecord", "--workers", "1"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 of 2 videos written, 1 failed" in printed and "counters: " in printed
    text_mp4 = str(folder / "text.mp4")
    # the failed video, its stage and ffmpeg's reason, as one line
    failed = [ln.strip() for ln in printed.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and failed[0].startswith("FAILED text at probe: not a readable video (")
    assert "Invalid data found when processing input" in failed[0]
    assert main([*args, "--fail-on-error"]) == 1
    rows = list(read_rows(out))
    assert [r["video_id"] for r in rows] == ["good"]
    assert "flow" not in rows[0] and rows[0]["rgb"].shape == (100, 32, 40, 3)
    record = json.loads((out / "failures.jsonl").read_text())
    assert (record["video_id"], record["source"], record["stage"]) == ("text", text_mp4, "probe")
    assert "Invalid data found when processing input" in record["error"]
    assert main(["inspect", str(out)]) == 0
    assert main(["run", "--output", str(out)]) == 2  # no input: a clear error, status 2
    assert main(["run", "--input", str(tmp_path / "none"), "--output", str(out)]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["run", "--input", str(tmp_path / "empty"), "--output", str(out)]) == 2
    # A second run into the same folder with another format and shard count
    # replaces the first run's shards instead of sitting beside them.
    assert main([*args[:-3], "parquet", "--num-shards", "2", "--workers", "1"]) == 0
    assert sorted(os.listdir(out / "shards")) == [
        "train-00000-of-00002.parquet",
        "train-00000-of-00002.parquet.idx",
        "train-00001-of-00002.parquet",
        "train-00001-of-00002.parquet.idx",
    ]
    assert [r["video_id"] for r in read_rows(out)] == ["good"]


def test_flow_tvl1_backend_in_the_pipeline(tmp_path, carphone):
    from tristream.models.common import resolve_device

    rows = {}
    for backend in ("opencv", "tvl1"):
        out = tmp_path / backend
        args = ["run", "--input", carphone, "--output", str(out), "--short-side", "32",
                "--max-frames", "10", "--flow", backend, "--flow-batch-size", "4",
                "--device", "auto"]  # fmt: skip
        if backend == "tvl1":  # a path that cannot run here: said so, and counted
            args += ["--flow-kernel", "compiled" if resolve_device("auto") != "cpu" else "triton"]
        assert main(args) == 0
        rows[backend] = sorted(read_rows(out), key=lambda r: r["segment"])
        assert rows[backend][0]["meta"]["flow_backend"] == backend
        metrics = json.loads((out / "manifest.json").read_text())["metrics"]
        if backend == "tvl1" and resolve_device("auto") == "cpu":
            # Triton runs on CUDA only: each of the 11 segments fell back to eager, and
            # the manifest says so.
            assert metrics["flow_kernel_eager"] == 11 and metrics["flow_kernel_fallbacks"] == 11
            assert "flow_kernel_triton" not in metrics
    assert len(rows["tvl1"]) == len(rows["opencv"]) == 11  # 100 frames in segments of 10
    for a, b in zip(rows["opencv"], rows["tvl1"]):
        assert np.array_equal(a["rgb"], b["rgb"])
        assert np.linalg.norm(a["flow"] - b["flow"], axis=-1).mean() < 0.1
