"""What the object-store tests share: a server process on 127.0.0.1, the clips they upload,
the run settings, views of shards that leave out where the videos came from, and a CLI run
that kills itself at a chosen point (the kill-and-resume tests, here and on local disks).

The servers (moto for S3, gcp-storage-emulator for GCS) are real processes speaking the
stores' HTTP protocols; the tests upload and list through the stores' own clients
(boto3, google-cloud-storage), not through tristream.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tests.helpers import ffmpeg
from tristream.config import RunConfig
from tristream.shards import ShardDataset, read_rows
from tristream.shards.files import iter_raw_rows, shard_files

REPO = Path(__file__).resolve().parents[1]
#: Small and quick: two clips of about a second, short side 32, 10-frame segments.
RUN_FLAGS = ["--short-side", "32", "--max-frames", "10", "--format", "both", "--workers", "1"]
#: The S3 server's buckets (``s3_server`` in conftest.py): inputs and outputs.
BUCKET_IN, BUCKET_OUT = "tristream-in", "tristream-out"
#: The clips' paths under the folder (or prefix) ``videos/``.
CLIPS = ("carphone.mp4", "street/bikes.mp4")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cmd: list[str], url: str, log: IO[bytes], what: str) -> subprocess.Popen:
    """Start ``cmd`` (output to ``log``) and wait up to 30 s until ``url`` answers HTTP.

    Returns the process; RuntimeError (the process killed) when it never answers.
    """
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return server
        except urllib.error.HTTPError:  # it answers, if only to say no
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"{what} did not start on {url}") from None
            time.sleep(0.1)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment that points AWS clients (boto3, pyarrow, Beam) at ``endpoint``."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def use_s3(mp, env: dict[str, str]) -> None:
    """Point this process at the S3 server of ``env`` (:func:`s3_env`) through the
    MonkeyPatch ``mp``, dropping what would override it (``AWS_ENDPOINT_URL_S3``, a profile)."""
    for key, value in env.items():
        mp.setenv(key, value)
    mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    mp.delenv("AWS_PROFILE", raising=False)


def make_clips(folder: Path, bikes: str, carphone: str) -> Path:
    """Two short real clips (about a second each, H.264) under ``folder/videos``
    (:data:`CLIPS`); returns that folder."""
    d = folder / "videos"
    (d / "street").mkdir(parents=True)
    ffmpeg("-i", bikes, "-t", "1.2", "-c:v", "libx264", "-preset", "ultrafast",
           str(d / "street" / "bikes.mp4"))  # fmt: skip
    ffmpeg("-i", carphone, "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
           str(d / "carphone.mp4"))  # fmt: skip
    return d


def run_config(inp: str, out: str) -> RunConfig:
    """The run of :data:`RUN_FLAGS` from ``inp`` to ``out``, for :func:`tristream.pipeline.run`."""
    return RunConfig.from_options(
        output=out, input=inp, short_side=32, max_frames=10, format="both", workers=1
    )


def run_args(inp: str, out: str, *extra: str) -> list[str]:
    """The arguments of ``tristream run`` from ``inp`` to ``out`` (:data:`RUN_FLAGS`)."""
    return ["run", "--input", inp, "--output", out, *RUN_FLAGS, *extra]


def cli_run(inp: str, out: str, *extra: str) -> list[str]:
    """The command line of :func:`run_args` for a subprocess (this Python)."""
    return [sys.executable, "-m", "tristream.cli", *run_args(inp, out, *extra)]


#: Run by :func:`cli_killed_at` in a child process: ``tristream run`` (the CLI's ``main``)
#: that SIGKILLs its own process right after the run's first cache write of the kind named
#: by ``argv[1]``: ``segment`` (a segment's rows staged in the cache) or ``video`` (a
#: video's ``done.json``, its cache entry complete). The write is done and nothing after it:
#: the kill point is an event of the code under test, not a moment raced by a poll.
_KILL_AT = """
import os, signal, sys
from tristream.pipeline import cache, videos

point, args = sys.argv[1], sys.argv[2:]
module, name = {"segment": (videos, "write_rows"), "video": (cache, "mark_done")}[point]
real = getattr(module, name)

def write_then_die(*a, **kw):
    real(*a, **kw)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(module, name, write_then_die)
from tristream.cli import main
sys.exit(main(args))
"""


def cli_killed_at(point: str, args: list[str]) -> list[str]:
    """The command line of ``tristream run`` ``args`` (without ``run``'s program name: the
    CLI's arguments) that kills itself after its first ``point`` write (``segment`` or
    ``video``, see :data:`_KILL_AT`). Such a run exits with ``-SIGKILL``; one that exits
    otherwise never reached the point."""
    return [sys.executable, "-c", _KILL_AT, point, *args]


def rows_without_source(path: str | os.PathLike) -> list[dict]:
    """The raw rows of every shard under ``path`` (a folder or a URI), ``source`` left out."""
    return [
        {k: v for k, v in row.items() if k != "source"}
        for file in shard_files(os.fspath(path))
        for row in iter_raw_rows(file)
    ]


def check_trainer_reads(out: str, local: Path, fs: pafs.FileSystem, fmt: str) -> list[dict]:
    """Check the trainer's view of the run at the URI ``out`` against the local run ``local``:
    ``ShardDataset`` (``fmt`` shards) yields the same samples from both, and plain pyarrow,
    through the test's own filesystem ``fs`` on the store, reads the Parquet shards' video
    ids in the order tristream's reader does. Returns the local samples."""
    kwargs = dict(modalities=("rgb", "flow"), clip_len=4, train=False, crop=24, fmt=fmt)
    remote = list(ShardDataset(out, **kwargs))
    samples = list(ShardDataset(str(local), **kwargs))
    assert len(remote) == len(samples) > 0
    for a, b in zip(remote, samples):
        assert a["video_id"] == b["video_id"]
        assert a["rgb"].shape == (3, 4, 24, 24)
        assert np.array_equal(a["rgb"].numpy(), b["rgb"].numpy())
        assert np.array_equal(a["flow"].numpy(), b["flow"].numpy())
    infos = fs.get_file_info(pafs.FileSelector(out.split("://", 1)[1] + "/shards"))
    tables = [pq.read_table(i.path, filesystem=fs) for i in infos if i.path.endswith(".parquet")]
    ids = [v for t in tables for v in t.column("video_id").to_pylist()]
    assert ids and ids == [r["video_id"] for r in read_rows(out, fmt="parquet")]
    return samples


def one_error_line(capsys) -> str:
    """The one line a failed CLI call wrote to stderr (asserts it is one, with no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]
