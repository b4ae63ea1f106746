"""Shared fixtures: the real sample data from ../shared/data (or $TRISTREAM_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRISTREAM_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared test data folder; a missing folder is an error, not a skip."""
    if not (DATA / "videos").is_dir():
        raise FileNotFoundError(
            f"test data not found at {DATA}: put ../shared/data beside the repo "
            "or set TRISTREAM_DATA"
        )
    return DATA


@pytest.fixture(scope="session")
def videos_dir(data_dir: Path) -> Path:
    return data_dir / "videos"


@pytest.fixture(scope="session")
def bikes(videos_dir: Path) -> str:
    """H.264 640x272, 25 fps, 250 frames (10 s) of street scenes."""
    return str(videos_dir / "bikes.mp4")


@pytest.fixture(scope="session")
def carphone(videos_dir: Path) -> str:
    """H.264 176x144, 29.97 fps, 120 frames (4 s): a man talking in a car."""
    return str(videos_dir / "carphone_pristine.mp4")


@pytest.fixture(params=["system", "wheel"])
def ffmpeg_build(request, monkeypatch) -> str:
    """Run the test under each ffmpeg build in turn; the value is "system" or "wheel".

    "system" is the distribution's ffmpeg and ffprobe (``/usr/bin``, or
    ``$TRISTREAM_SYSTEM_FFMPEG``; `.ci/run` installs them), "wheel" the
    imageio-ffmpeg binary without ffprobe (probes parse ``ffmpeg -i``). Both are
    chosen through ``$TRISTREAM_FFMPEG`` / ``$TRISTREAM_FFPROBE``. A missing
    system ffmpeg is an error, not a skip.
    """
    from tests.helpers import FFMPEG, SYSTEM_FFMPEG, SYSTEM_FFPROBE

    if request.param == "system":
        for exe in (SYSTEM_FFMPEG, SYSTEM_FFPROBE):
            if not os.access(exe, os.X_OK):
                raise FileNotFoundError(
                    f"{exe} not found: install the distribution's ffmpeg "
                    "(`apt-get install ffmpeg`) or set TRISTREAM_SYSTEM_FFMPEG"
                )
        monkeypatch.setenv("TRISTREAM_FFMPEG", SYSTEM_FFMPEG)
        monkeypatch.setenv("TRISTREAM_FFPROBE", SYSTEM_FFPROBE)
    else:
        monkeypatch.setenv("TRISTREAM_FFMPEG", FFMPEG)
        monkeypatch.setenv("TRISTREAM_FFPROBE", "")
    return request.param


@pytest.fixture
def torch_threads():
    """torch's CPU thread count as the test found it, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


@pytest.fixture
def stage_torch_threads(monkeypatch):
    """torch's CPU thread count in each thread that ran a video's stages, one entry per video.

    torch keeps the count per thread, and Beam runs videos on a thread pool that
    outlives a pipeline (its threads keep what an earlier run set), so the count is read
    where the stages run: in the calling thread of ``stage_video``, as it starts.
    """
    import torch

    from tristream.pipeline import videos

    seen: list[int] = []
    stage_video = videos.stage_video

    def watched(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return stage_video(*args, **kwargs)

    monkeypatch.setattr(videos, "stage_video", watched)
    return seen


@pytest.fixture(scope="session")
def store_clips(tmp_path_factory, bikes, carphone) -> Path:
    """The object-store tests' two short real clips, locally (``tests/stores.py``)."""
    from tests.stores import make_clips

    return make_clips(tmp_path_factory.mktemp("store_clips"), bikes, carphone)


@pytest.fixture(scope="session")
def store_local_run(store_clips, tmp_path_factory) -> Path:
    """The object-store tests' run on the local clips to a local folder (in this process):
    what a run on any store must equal."""
    from tests.stores import run_config
    from tristream.pipeline.run import run

    out = tmp_path_factory.mktemp("store_local_run")
    result = run(run_config(str(store_clips), str(out)))
    assert result.manifest["totals"]["videos_written"] == 2
    return out


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (its own process) with the buckets
    ``tests.stores.BUCKET_IN`` and ``BUCKET_OUT``, for the session.

    Yields ``(env, client)``: the environment that points at it (not set here: a test
    sets it where it needs it) and a boto3 S3 client on it.
    """
    import sys

    import boto3

    from tests.stores import BUCKET_IN, BUCKET_OUT, free_port, s3_env, start_server, stop_server

    endpoint = f"http://127.0.0.1:{free_port()}"
    port = endpoint.rsplit(":", 1)[1]
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port]
    server = start_server(cmd, endpoint + "/moto-api/", log, "moto server")
    env = s3_env(endpoint)
    client = boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    for bucket in (BUCKET_IN, BUCKET_OUT):
        client.create_bucket(Bucket=bucket)
    yield env, client
    stop_server(server)
    log.close()
