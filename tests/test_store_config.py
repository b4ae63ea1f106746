"""The one storage layer's explicit configuration (``StoreConfig`` / ``Store``) and its one
content-identity rule, against real S3-compatible servers (moto, each its own process on
127.0.0.1) and real files.

Oracles are independent of tristream: objects are uploaded and read back with boto3, the
content identity is checked against ``hashlib.sha256`` of the bytes the test wrote, glob
matches against :func:`glob.glob` on the same tree on disk.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import pickle
import subprocess
import sys

import pytest

from tests.stores import (
    BUCKET_IN,
    BUCKET_OUT,
    REPO,
    free_port,
    run_config,
    s3_env,
    start_server,
    stop_server,
)
from tristream.pipeline import storage as pipeline_storage
from tristream.pipeline.inputs import list_videos
from tristream.shards import storage
from tristream.shards.storage import StorageError, Store, StoreConfig

#: What every S3 test here runs under: credentials (any are accepted by moto) and a
#: region, but no endpoint: each test gives the endpoint explicitly where it wants one.
_CREDENTIALS = {k: v for k, v in s3_env("http://unused").items() if k != "AWS_ENDPOINT_URL"}
_SERVER_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_REGION")


@pytest.fixture
def no_endpoint(monkeypatch):
    """This process with S3 credentials and no endpoint in its environment."""
    for key in _SERVER_VARS:
        monkeypatch.delenv(key, raising=False)
    for key, value in _CREDENTIALS.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def two_servers(s3_server, tmp_path_factory):
    """The session's moto server and a second one of this module, each with a bucket
    ``shared`` that holds ``clip.bin`` with other bytes on each. Yields
    ``[(endpoint, client, bytes), (endpoint, client, bytes)]``."""
    import boto3

    env, first = s3_server
    endpoint = f"http://127.0.0.1:{free_port()}"
    log = open(tmp_path_factory.mktemp("moto2") / "server.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", endpoint.rsplit(":")[-1]]
    server = start_server(cmd, endpoint + "/moto-api/", log, "second moto server")
    second = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    servers = []
    for url, client, data in ((env["AWS_ENDPOINT_URL"], first, b"first server\n" * 1000),
                              (endpoint, second, b"second server\n" * 999)):  # fmt: skip
        client.create_bucket(Bucket="shared")
        client.put_object(Bucket="shared", Key="clip.bin", Body=data)
        servers.append((url, client, data))
    yield servers
    stop_server(server)
    log.close()


# --------------------------------------------------------------------------- the config


def test_from_env_reads_the_variables_when_called(monkeypatch):
    for key in (*_SERVER_VARS, "AWS_DEFAULT_REGION", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(key, raising=False)
    assert StoreConfig.from_env() == StoreConfig()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1111")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:2222")
    first = StoreConfig.from_env()
    assert (first.s3_endpoint, first.s3_region, first.gcs_endpoint) == (
        "http://127.0.0.1:1111", "eu-west-3", "http://127.0.0.1:2222",
    )  # fmt: skip
    # The more specific variables win; a blank one counts as unset.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:3333")
    monkeypatch.setenv("AWS_REGION", "  ")
    second = StoreConfig.from_env()
    assert (second.s3_endpoint, second.s3_region) == ("http://127.0.0.1:3333", "eu-west-3")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert StoreConfig.from_env().s3_region == "ap-south-1"
    # The module-level functions build their store from the environment at each call.
    assert storage.get_store().config == StoreConfig.from_env()
    assert storage.endpoint_of("s3://b/k") == "http://127.0.0.1:3333"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert storage.endpoint_of("s3://b/k") == "http://127.0.0.1:1111"
    # An explicit mapping instead of os.environ.
    assert StoreConfig.from_env({"AWS_ENDPOINT_URL": "http://h:1"}) == StoreConfig(
        s3_endpoint="http://h:1"
    )


def test_config_is_frozen_validated_and_picklable():
    config = StoreConfig(s3_endpoint="http://h:9000", s3_region="eu-west-1", retry_attempts=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.s3_endpoint = "http://other:1"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(config)) == config
    assert hash(config) == hash(StoreConfig(s3_endpoint="http://h:9000", s3_region="eu-west-1",
                                            retry_attempts=5))  # fmt: skip
    store = pickle.loads(pickle.dumps(Store(config)))
    assert isinstance(store, Store) and store.config == config
    for bad in (dict(credentials="keys"), dict(retry_attempts=0), dict(retry_seconds=0)):
        with pytest.raises(ValueError):
            StoreConfig(**bad)
    # No field holds a secret: credentials come from the default chain where the store is used.
    assert {f.name for f in dataclasses.fields(StoreConfig)} == {
        "s3_endpoint", "s3_region", "gcs_endpoint", "credentials", "retry_seconds",
        "check_seconds", "retry_attempts", "connect_timeout",
    }  # fmt: skip


def test_configure_takes_beams_s3_flags_else_the_environment(monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1111")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    assert pipeline_storage.configure(PipelineOptions([])) == StoreConfig.from_env()
    flags = PipelineOptions(["--s3_endpoint_url", "http://127.0.0.1:4444",
                             "--s3_region_name", "us-west-2"])  # fmt: skip
    config = pipeline_storage.configure(flags)
    assert (config.s3_endpoint, config.s3_region) == ("http://127.0.0.1:4444", "us-west-2")
    assert dict(os.environ) == before  # nothing exported
    with pytest.raises(StorageError, match="--s3_secret_access_key"):
        pipeline_storage.configure(PipelineOptions(["--s3_secret_access_key", "x"]))


# --------------------------------------------------------------------------- stores


def test_two_stores_with_different_endpoints_do_not_interfere(two_servers, no_endpoint, tmp_path):
    (url_a, _, data_a), (url_b, client_b, data_b) = two_servers
    a, b = Store(StoreConfig(s3_endpoint=url_a)), Store(StoreConfig(s3_endpoint=url_b))
    uri = "s3://shared/clip.bin"
    for _ in range(2):  # interleaved, each store keeping its own filesystem
        assert a.read_text(uri).encode() == data_a
        assert b.read_text(uri).encode() == data_b
    assert a.getsize(uri) == len(data_a) and b.getsize(uri) == len(data_b)
    assert storage.read_text(uri, store=b.config).encode() == data_b  # by config, too
    # A write through one lands on its server only.
    local = tmp_path / "up.txt"
    local.write_bytes(b"written through b\n")
    b.upload(str(local), "s3://shared/only-b.txt")
    body = client_b.get_object(Bucket="shared", Key="only-b.txt")["Body"].read()
    assert body == b"written through b\n"
    assert b.isfile("s3://shared/only-b.txt") and not a.isfile("s3://shared/only-b.txt")
    # A store on an endpoint that does not answer fails alone, in one line (how many tries
    # it makes is counted in tests/test_object_store.py), and the good one keeps working.
    dead = f"http://127.0.0.1:{free_port()}"
    bad = Store(StoreConfig(s3_endpoint=dead, retry_attempts=1, connect_timeout=2))
    with pytest.raises(StorageError, match=f"cannot connect to the object store at {dead}"):
        bad.check_bucket(uri)
    assert a.read_text(uri).encode() == data_a


def test_a_pickled_config_reaches_the_same_server_in_another_process(two_servers, tmp_path):
    """The remote-worker case: the config (and a store) pickled here, unpickled in a
    process whose environment names no endpoint, reaches the second server."""
    _, (url_b, _, data_b) = two_servers
    config = StoreConfig(s3_endpoint=url_b)
    (tmp_path / "config.pkl").write_bytes(pickle.dumps((config, Store(config))))
    script = (
        "import hashlib, pickle, sys\n"
        "from tristream.shards.storage import StoreConfig, content_hash\n"
        "config, store = pickle.load(open(sys.argv[1], 'rb'))\n"
        "print(StoreConfig.from_env().s3_endpoint)\n"
        "print(hashlib.sha256(store.read_text('s3://shared/clip.bin').encode()).hexdigest())\n"
        "print(content_hash('s3://shared/clip.bin', store=config))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_VARS} | _CREDENTIALS
    cmd = [sys.executable, "-c", script, str(tmp_path / "config.pkl")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    own_endpoint, read, identity = done.stdout.split()
    assert own_endpoint == "None"  # the worker's environment would not have found it
    assert read == identity == hashlib.sha256(data_b).hexdigest()


def test_match_globs_like_glob_on_the_same_tree(s3_server, no_endpoint, tmp_path):
    env, client = s3_server
    store = Store(StoreConfig(s3_endpoint=env["AWS_ENDPOINT_URL"]))
    names = ["a.mp4", "b.MP4", "sub/c.mp4", "sub/deep/d.mp4", "sub/e.txt", "x1.avi", "x22.avi"]
    for name in names:
        client.put_object(Bucket=BUCKET_IN, Key=f"globs/{name}", Body=name.encode())
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    for pattern in ("*.mp4", "**/*.mp4", "sub/**", "x?.avi", "x[0-9]*.avi", "sub/*/*.mp4",
                    "[!a]*.*", "**"):  # fmt: skip
        expected = sorted(
            os.path.relpath(p, tmp_path).replace(os.sep, "/")
            for p in glob.glob(str(tmp_path / pattern), recursive=True)
            if os.path.isfile(p)
        )
        found = [(p, size) for p, size in store.match(f"s3://{BUCKET_IN}/globs/{pattern}")]
        assert [p.split("/globs/", 1)[1] for p, _ in found] == expected, pattern
        assert all(size == len(p.split("/globs/", 1)[1]) for p, size in found)
    # list_videos: a prefix of objects gives the ids a folder gives.
    prefix = f"s3://{BUCKET_IN}/globs"
    assert [v for v, _ in list_videos(prefix, store)] == [v for v, _ in list_videos(str(tmp_path))]


# --------------------------------------------------------------------------- content identity


def test_content_identity_is_one_rule_for_a_file_and_its_object(
    s3_server, no_endpoint, store_clips, tmp_path
):
    env, client = s3_server
    store = Store(StoreConfig(s3_endpoint=env["AWS_ENDPOINT_URL"]))
    local = str(store_clips / "carphone.mp4")
    data = open(local, "rb").read()
    client.put_object(Bucket=BUCKET_IN, Key="identity/carphone.mp4", Body=data)
    uri = f"s3://{BUCKET_IN}/identity/carphone.mp4"
    oracle = hashlib.sha256(data).hexdigest()
    assert storage.content_hash(local) == oracle
    assert store.content_hash(uri) == oracle
    assert storage.content_hash(uri, store=store.config) == oracle
    with pipeline_storage.staged_video(local, store) as staged:
        assert staged == (local, oracle)  # a local file is decoded in place
    with pipeline_storage.staged_video(uri, store) as (path, identity):
        assert open(path, "rb").read() == data and identity == oracle
    assert not os.path.exists(path)
    # Nothing to identify: never reused.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert storage.content_hash(str(fifo)) is None
    assert storage.content_hash("http://127.0.0.1:9/video.mp4") is None
    assert storage.content_hash(str(tmp_path / "missing.mp4")) is None
    assert store.content_hash(f"s3://{BUCKET_IN}/identity/missing.mp4") is None
    with pipeline_storage.staged_video("http://127.0.0.1:9/v.mp4", store) as staged:
        assert staged == ("http://127.0.0.1:9/v.mp4", None)


def test_a_run_on_beams_flags_alone_reuses_a_local_runs_cache(
    s3_server, no_endpoint, store_clips, tmp_path
):
    """``--s3_endpoint_url`` with no endpoint in the environment reaches the server for the
    inputs, the cache and the outputs, and exports nothing; and the bucket's copies of the
    clips have the local clips' identity, so their cache entries are found."""
    from tristream.pipeline.run import run

    env, client = s3_server
    for path in sorted(store_clips.rglob("*.mp4")):
        key = f"flags/videos/{path.relative_to(store_clips).as_posix()}"
        client.upload_file(str(path), BUCKET_IN, key)
    flags = ["--s3_endpoint_url", env["AWS_ENDPOINT_URL"]]
    out = f"s3://{BUCKET_OUT}/flags"
    before = dict(os.environ)
    first = run(run_config(str(store_clips), out), beam_args=flags)
    assert first.manifest["totals"]["videos_written"] == 2
    assert first.counters.get("videos_cached", 0) == 0
    again = run(run_config(f"s3://{BUCKET_IN}/flags/videos", out), beam_args=flags)
    assert again.counters["videos_cached"] == 2 and again.counters.get("frames", 0) == 0
    assert dict(os.environ) == before
    keys = client.list_objects_v2(Bucket=BUCKET_OUT, Prefix="flags/")["Contents"]
    assert "flags/manifest.json" in {k["Key"] for k in keys}
