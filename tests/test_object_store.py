"""Runs on object storage: a real S3-compatible server (moto in server mode) on 127.0.0.1.

Videos are uploaded to a bucket, ``tristream run`` goes from bucket to bucket
(the real CLI in a subprocess), a run is killed with SIGKILL and resumed, and
the shards are read back by ``ShardDataset``, ``read_rows``, ``tristream
inspect`` and plain pyarrow. Nothing about S3 is mocked: the server is a
separate process speaking the S3 protocol over HTTP, and the uploads and
listings here go through boto3, not through tristream.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from tests.stores import (
    BUCKET_IN,
    BUCKET_OUT,
    REPO,
    check_trainer_reads,
    cli_killed_at,
    cli_run,
    free_port,
    one_error_line,
    rows_without_source,
    run_args,
    run_config,
    use_s3,
)
from tristream.cli import main
from tristream.config import RunConfig
from tristream.pipeline.run import run
from tristream.shards import ShardDataset, read_rows
from tristream.shards.storage import StoreConfig

IN, OUT = BUCKET_IN, BUCKET_OUT


@pytest.fixture(scope="module")
def s3(s3_server):
    """The S3 server (``s3_server``), its environment set in this process while the module
    runs. Yields ``(env, client)``: ``env`` for subprocesses, ``client`` a boto3 client."""
    env, client = s3_server
    with pytest.MonkeyPatch.context() as mp:
        use_s3(mp, env)
        yield {**os.environ, **env}, client


@pytest.fixture(scope="module")
def clips(store_clips, s3):
    """The two short real clips, locally under ``videos/`` and uploaded under
    ``s3://IN/videos/``, with a text file beside them."""
    _, client = s3
    d = store_clips
    for path in sorted(d.rglob("*.mp4")):
        client.upload_file(str(path), IN, f"videos/{path.relative_to(d).as_posix()}")
    client.put_object(Bucket=IN, Key="videos/notes.txt", Body=b"not a video\n")
    return d


def _keys(client, bucket: str, prefix: str) -> dict[str, int]:
    """key -> size of every object under ``prefix`` (boto3's own listing)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def _object_bytes(client, bucket: str, prefix: str) -> dict[str, bytes]:
    return {
        key[len(prefix) :]: client.get_object(Bucket=bucket, Key=key)["Body"].read()
        for key in sorted(_keys(client, bucket, prefix))
    }


@pytest.fixture(scope="module")
def reference(s3, clips, tmp_path_factory):
    """An uninterrupted run from the bucket to a local folder (in this process)."""
    out = tmp_path_factory.mktemp("reference")
    result = run(run_config(f"s3://{IN}/videos", str(out)))
    assert result.manifest["totals"]["videos_written"] == 2
    return out


@pytest.fixture(scope="module")
def bucket_run(s3, clips, tmp_path_factory):
    """``tristream run`` from bucket to bucket through the CLI, killed (SIGKILL) right after
    the first video's cache entry is complete (its ``done.json`` written: the run kills
    itself there, ``tests.stores.cli_killed_at``), then run again to the end.

    Returns the output URI, the finished run's own temporary folder and its result.
    """
    env, client = s3
    out = f"s3://{OUT}/run1"
    killed = subprocess.run(cli_killed_at("video", run_args(f"s3://{IN}/videos", out)),
                            cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    keys = _keys(client, OUT, "run1/")
    assert "run1/manifest.json" not in keys
    assert len([k for k in keys if k.endswith("/done.json")]) == 1
    tmp = tmp_path_factory.mktemp("run_tmp")
    env_tmp = {**env, "TMPDIR": str(tmp)}
    done = subprocess.run(cli_run(f"s3://{IN}/videos", out), cwd=REPO, env=env_tmp,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out, tmp, done


def test_killed_bucket_run_resumes_to_the_shards_of_an_uninterrupted_run(s3, bucket_run, reference):
    _, client = s3
    out, tmp, done = bucket_run
    local = {p.name: p.read_bytes() for p in sorted((reference / "shards").iterdir())}
    assert _object_bytes(client, OUT, "run1/shards/") == local
    manifest = json.loads(client.get_object(Bucket=OUT, Key="run1/manifest.json")["Body"].read())
    assert manifest["metrics"]["videos_cached"] == 1  # the video finished before the kill
    assert manifest["totals"] == json.loads((reference / "manifest.json").read_text())["totals"]
    keys = _keys(client, OUT, "run1/")
    # Every object is a finished file: no temporary names, no write check left behind.
    assert not [k for k in keys if k.rsplit("/", 1)[-1].startswith(".") or k.endswith(".tmp")]
    # The staged copies of the videos were removed (the run had its own TMPDIR).
    assert list(tmp.iterdir()) == []
    assert client.get_object(Bucket=OUT, Key="run1/failures.jsonl")["Body"].read() == b""
    assert "2 of 2 videos written" in done.stdout


def test_bucket_rows_equal_a_local_run(bucket_run, store_local_run):
    out = bucket_run[0]
    # Same rows as the run on local files; only the source column names the bucket.
    remote_rows = rows_without_source(out)
    assert remote_rows == rows_without_source(store_local_run)
    assert len(remote_rows) > 2
    tf_rows = list(read_rows(out, fmt="tfrecord"))
    pq_rows = list(read_rows(out, fmt="parquet"))
    assert [r["video_id"] for r in tf_rows] == [r["video_id"] for r in pq_rows]
    assert all(np.array_equal(a["flow"], b["flow"]) for a, b in zip(tf_rows, pq_rows))
    assert {r["source"] for r in pq_rows} == {
        f"s3://{IN}/videos/carphone.mp4",
        f"s3://{IN}/videos/street/bikes.mp4",
    }


def test_rerun_on_the_bucket_skips_finished_videos(s3, bucket_run):
    _, client = s3
    before = _object_bytes(client, OUT, "run1/shards/")
    result = run(run_config(f"s3://{IN}/videos", bucket_run[0]))
    assert result.counters["videos_cached"] == 2
    assert result.counters.get("frames", 0) == 0
    assert _object_bytes(client, OUT, "run1/shards/") == before


def test_trainer_reads_the_bucket_with_shard_dataset_and_plain_pyarrow(
    s3, bucket_run, store_local_run
):
    env, _ = s3
    out = bucket_run[0]
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1")
    local = check_trainer_reads(out, store_local_run, fs, "parquet")
    # Ranks split the bucket's rows as they split local ones.
    kwargs = dict(modalities=("rgb", "flow"), clip_len=4, train=False, crop=24, fmt="parquet")
    halves = [list(ShardDataset(out, rank=r, world_size=2, **kwargs)) for r in (0, 1)]
    assert sorted(s["video_id"] + str(s["segment"]) for h in halves for s in h) == sorted(
        s["video_id"] + str(s["segment"]) for s in local
    )


def test_inspect_reads_the_bucket(s3, bucket_run, capsys):
    out = bucket_run[0]
    assert main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert f"{out}: 2 of 2 videos written" in text
    assert "shards/train-00000-of-00001.parquet" in text
    assert "video street/bikes:" in text


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "--input", f"s3://{IN}/videos", "--output", "s3://no-such-bucket/out"],
         "--output s3://no-such-bucket/out: bucket 'no-such-bucket' does not exist"),
        (["run", "--input", "s3://no-such-bucket/videos", "--output", f"s3://{OUT}/x"],
         "--input s3://no-such-bucket/videos: bucket 'no-such-bucket' does not exist"),
        (["run", "--input", f"s3://{IN}/videos", "--output", "ftp://host/out"],
         "unsupported URI scheme 'ftp://'"),
        (["inspect", "s3://no-such-bucket/out"], "bucket 'no-such-bucket' does not exist"),
    ],
)  # fmt: skip
def test_bad_uris_and_missing_buckets_are_one_clear_error(s3, clips, capsys, args, words):
    assert main(args) == 1
    assert words in one_error_line(capsys)


class DroppingEndpoint:
    """A TCP port on 127.0.0.1 that takes every connection and drops it at once (a reset),
    counting them: an S3 endpoint that never answers, whose attempts can be counted."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(10)


def test_an_unreachable_endpoint_is_one_clear_error(s3, clips, capsys, monkeypatch):
    """Nothing listening: one clear error. An endpoint that drops every connection: the
    same error, after exactly the configured number of attempts (AWS's standard retry
    strategy with ``StoreConfig.retry_attempts``): the run tries a bounded number of times,
    counted rather than timed."""
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    assert main(["run", "--input", f"s3://{IN}/videos", "--output", f"s3://{OUT}/x"]) == 1
    assert f"cannot connect to the object store at {dead}" in one_error_line(capsys)
    dropping = DroppingEndpoint()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", dropping.url)
        assert main(["run", "--input", f"s3://{IN}/videos", "--output", f"s3://{OUT}/x"]) == 1
    finally:
        dropping.close()
    assert f"cannot connect to the object store at {dropping.url}" in one_error_line(capsys)
    assert dropping.connections == StoreConfig().retry_attempts == 3


def test_staging_is_bounded_and_always_removed(s3, clips, tmp_path, monkeypatch):
    from tristream.pipeline import storage

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    uri = f"s3://{IN}/videos/carphone.mp4"
    data = (clips / "carphone.mp4").read_bytes()
    with storage.staged_video(uri) as (local, key):
        assert Path(local).read_bytes() == data
    # The content key is the SHA-256 of the bytes, hashed while staging (one download).
    assert key == hashlib.sha256(data).hexdigest()
    with pytest.raises(KeyError), storage.staged_video(uri):
        raise KeyError("a failure while decoding")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("TRISTREAM_STAGE_LIMIT", "1000")  # bytes: less than the clip
    with pytest.raises(OSError, match="over the staging limit of 1000 bytes"):
        with storage.staged_video(uri):
            pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError), storage.staged_video(f"s3://{IN}/videos/missing.mp4"):
        pass


def test_skeletons_and_their_config_hash_come_from_the_bucket(s3, tmp_path):
    from tests.test_skeletons import _pyskl_file
    from tristream.transforms.skeletons import load_skeletons

    _, client = s3
    local = tmp_path / "skel.pkl"
    _pyskl_file(local)
    client.upload_file(str(local), IN, "ann/skel.pkl")
    uri = f"s3://{IN}/ann/skel.pkl"
    remote, expected = load_skeletons(uri), load_skeletons(str(local))
    assert sorted(remote) == sorted(expected)
    for vid, ann in expected.items():
        assert np.array_equal(remote[vid].keypoints, ann.keypoints)
    # The config hash follows the file's bytes wherever it is.
    kw = dict(input=f"s3://{IN}/videos", render="none")
    from tristream.pipeline.cache import config_hash
    from tristream.process import check_files

    assert config_hash(RunConfig.from_options(output="x", skeletons=uri, **kw)) == config_hash(
        RunConfig.from_options(output="x", skeletons=str(local), **kw)
    )
    missing = RunConfig.from_options(output="x", skeletons=f"s3://{IN}/ann/missing.pkl", **kw)
    with pytest.raises(FileNotFoundError, match="--skeletons"):
        check_files(missing)


def test_a_manifest_on_the_bucket_names_videos_on_the_bucket(s3, clips, store_local_run, tmp_path):
    """``--manifest s3://...`` with paths relative to its own folder on the bucket: the videos
    it lists (and only those) are written with its labels, frames equal to the local run."""
    _, client = s3
    body = "path,label,id\nvideos/street/bikes.mp4,cycling,b1\nvideos/carphone.mp4,talking,c1\n"
    client.put_object(Bucket=IN, Key="train.csv", Body=body.encode())
    out = tmp_path / "from_manifest"
    result = run(
        RunConfig.from_options(
            output=str(out),
            manifest=f"s3://{IN}/train.csv",
            short_side=32,
            max_frames=10,
            format="both",
            workers=1,
        )
    )
    assert result.manifest["totals"]["videos_written"] == 2
    rows = {(r["video_id"], r["segment"]): r for r in read_rows(str(out))}
    assert {vid for vid, _ in rows} == {"b1", "c1"}
    assert {r["label"] for r in rows.values()} == {"cycling", "talking"}
    local = [r["rgb"] for r in read_rows(str(store_local_run))]
    for r in rows.values():  # every row's frames are one of the local run's rows' frames
        assert any(r["rgb"].shape == x.shape and np.array_equal(r["rgb"], x) for x in local)
