"""Runs on Google Cloud Storage's protocol: a GCS emulator (gcp-storage-emulator) on 127.0.0.1.

The emulator is its own process speaking GCS's JSON API over HTTP, found through
``STORAGE_EMULATOR_HOST`` as Google's client libraries find it. Videos are uploaded and
objects listed with Google's own client (google-cloud-storage), not through tristream;
``tristream run`` goes from bucket to bucket through the CLI's entry point (the one storage
layer, on pyarrow's GCS filesystem, reads the inputs and writes the outputs), and the shards
are read back by ``ShardDataset`` and by plain pyarrow. The kill-and-resume guarantee is the
same code on every store and is tested against S3 (``tests/test_object_store.py``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.stores import (
    CLIPS,
    check_trainer_reads,
    free_port,
    one_error_line,
    rows_without_source,
    run_args,
    run_config,
    start_server,
    stop_server,
)
from tristream.cli import main
from tristream.pipeline.run import run
from tristream.shards import read_rows
from tristream.shards.storage import StoreConfig

IN, OUT = "tristream-gcs-in", "tristream-gcs-out"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory, store_clips):
    """A GCS emulator on 127.0.0.1 (its own process), with the clips uploaded under
    ``gs://IN/videos/`` beside a text file, and the environment that points at it.

    Yields ``(env, client)``: ``env`` for subprocesses (also set in this process while
    the module runs), ``client`` a google-cloud-storage client on the emulator.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs_client

    endpoint = f"http://127.0.0.1:{free_port()}"
    port = endpoint.rsplit(":", 1)[1]
    log = open(tmp_path_factory.mktemp("gcs") / "server.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
           "--port", port, "--in-memory"]  # fmt: skip
    server = start_server(cmd, endpoint + "/storage/v1/b", log, "GCS emulator")
    env = {"STORAGE_EMULATOR_HOST": endpoint}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        client = gcs_client.Client(project="tristream-test", credentials=AnonymousCredentials())
        for name in (IN, OUT):
            client.create_bucket(name)
        bucket = client.bucket(IN)
        for name in CLIPS:
            bucket.blob(f"videos/{name}").upload_from_filename(str(store_clips / name))
        bucket.blob("videos/notes.txt").upload_from_string(b"not a video\n")
        yield {**os.environ, **env}, client
    stop_server(server)
    log.close()


def _objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    """name (after ``prefix``) -> bytes of every object under ``prefix`` (Google's client)."""
    return {
        blob.name[len(prefix) :]: blob.download_as_bytes()
        for blob in client.list_blobs(bucket, prefix=prefix)
    }


@pytest.fixture(scope="module")
def bucket_run(gcs, tmp_path_factory):
    """``tristream run`` from bucket to bucket through the CLI's ``main``, with its own
    temporary folder. Returns the output URI, that folder and what the run printed.
    (In this process; the CLI in a subprocess is tested against S3.)
    """
    out = f"gs://{OUT}/run1"
    tmp = tmp_path_factory.mktemp("run_tmp")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr("tempfile.tempdir", str(tmp))
        assert main(run_args(f"gs://{IN}/videos", out)) == 0
    return out, tmp, printed.getvalue()


def test_bucket_to_bucket_run_writes_the_rows_of_a_local_run(gcs, bucket_run, store_local_run):
    _, client = gcs
    out, tmp, printed = bucket_run
    assert "2 of 2 videos written" in printed
    objects = _objects(client, OUT, "run1/")
    # Every object is a finished file: no temporary names, no write check left behind.
    assert not [k for k in objects if k.rsplit("/", 1)[-1].startswith(".") or k.endswith(".tmp")]
    assert objects["failures.jsonl"] == b""
    manifest = json.loads(objects["manifest.json"])
    local_manifest = json.loads((store_local_run / "manifest.json").read_text())
    # The same totals, but for the bytes: each row's source names the bucket here.
    assert {k: v for k, v in manifest["totals"].items() if k != "bytes"} == {
        k: v for k, v in local_manifest["totals"].items() if k != "bytes"
    }
    assert sorted(k for k in objects if k.startswith("shards/")) == sorted(
        f"shards/{p.name}" for p in (store_local_run / "shards").iterdir()
    )
    # The staged copies of the videos were removed (the run had its own temporary folder).
    assert list(tmp.iterdir()) == []
    # Same rows as the run on local files; only the source column names the bucket.
    remote_rows = rows_without_source(out)
    assert remote_rows == rows_without_source(store_local_run) and len(remote_rows) > 2
    assert {r["source"] for r in read_rows(out, fmt="parquet")} == {
        f"gs://{IN}/videos/{name}" for name in CLIPS
    }


def test_rerun_on_the_bucket_skips_finished_videos(gcs, bucket_run):
    _, client = gcs
    before = _objects(client, OUT, "run1/shards/")
    result = run(run_config(f"gs://{IN}/videos", bucket_run[0]))
    assert result.counters["videos_cached"] == 2
    assert result.counters.get("frames", 0) == 0
    assert _objects(client, OUT, "run1/shards/") == before


def test_trainer_reads_the_bucket_with_shard_dataset_and_plain_pyarrow(
    gcs, bucket_run, store_local_run
):
    env, _ = gcs
    host = env["STORAGE_EMULATOR_HOST"].split("://", 1)[1]
    fs = pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=host)
    check_trainer_reads(bucket_run[0], store_local_run, fs, "tfrecord")


def test_staging_and_the_content_key_on_gcs(gcs, store_clips, tmp_path, monkeypatch):
    from tristream.pipeline import storage

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    uri = f"gs://{IN}/videos/carphone.mp4"
    data = (store_clips / "carphone.mp4").read_bytes()
    with storage.staged_video(uri) as (local, key):
        assert Path(local).read_bytes() == data
    assert list(tmp_path.iterdir()) == []
    # The content key is the SHA-256 of the bytes, hashed while staging (one download).
    assert key == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError), storage.staged_video(f"gs://{IN}/videos/missing.mp4"):
        pass


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "--input", f"gs://{IN}/videos", "--output", "gs://no-such-bucket/out"],
         "--output gs://no-such-bucket/out: bucket 'no-such-bucket' does not exist"),
        (["run", "--input", "gs://no-such-bucket/videos", "--output", f"gs://{OUT}/x"],
         "--input gs://no-such-bucket/videos: bucket 'no-such-bucket' does not exist"),
        (["inspect", "gs://no-such-bucket/out"], "bucket 'no-such-bucket' does not exist"),
    ],
)  # fmt: skip
def test_missing_buckets_are_one_clear_error(gcs, capsys, args, words):
    assert main(args) == 1
    assert words in one_error_line(capsys)


def test_an_unreachable_emulator_is_one_clear_error(gcs, capsys, monkeypatch):
    """Nothing listening: one clear error, after the bucket check's own retry limit
    (``StoreConfig.check_seconds``) rather than pyarrow's default of 15 minutes: every GCS
    filesystem the run opened was given a finite limit, the check its short one."""
    limits = []
    gcs_filesystem = pafs.GcsFileSystem

    def recorded(*args, **kwargs):
        limits.append(kwargs.get("retry_time_limit"))
        return gcs_filesystem(*args, **kwargs)

    monkeypatch.setattr(pafs, "GcsFileSystem", recorded)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", dead)
    assert main(["run", "--input", f"gs://{IN}/videos", "--output", f"gs://{OUT}/x"]) == 1
    assert f"cannot connect to the object store at {dead}" in one_error_line(capsys)
    config = StoreConfig()
    assert limits[0] == datetime.timedelta(seconds=config.check_seconds), limits
    assert all(lim is not None and lim.total_seconds() <= config.retry_seconds for lim in limits)
