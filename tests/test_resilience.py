"""Runs that survive: bad inputs, kill and resume, determinism, the cache, the Dask runner."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import ffmpeg, reference_frames
from tests.stores import BUCKET_IN, BUCKET_OUT, cli_killed_at, rows_without_source, use_s3
from tristream.cli import main
from tristream.config import RunConfig
from tristream.pipeline.run import run
from tristream.shards import read_rows

REPO = Path(__file__).resolve().parents[1]


def _manifest(path: Path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def _shard_bytes(out) -> dict[str, bytes]:
    folder = Path(out) / "shards"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, bikes, carphone):
    d = tmp_path_factory.mktemp("corpus")
    (d / "empty.mp4").write_bytes(b"")
    ffmpeg("-i", bikes, "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", str(d / "full.mp4"))
    # Cut before its index (moov at the end): unreadable at open.
    (d / "truncated.mp4").write_bytes((d / "full.mp4").read_bytes()[:60000])
    # Index first, data cut: decodes a prefix, which must not pass for the video.
    ffmpeg("-i", str(d / "full.mp4"), "-c", "copy", "-movflags", "+faststart", str(d / "fs.mp4"))
    (d / "truncated_faststart.mp4").write_bytes((d / "fs.mp4").read_bytes()[:60000])
    (d / "text.mp4").write_text("hello, I am not a video\n" * 20)
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(d / "audio_only.mp4"))
    ffmpeg("-i", bikes, "-frames:v", "1", str(d / "one_frame.mp4"))
    ffmpeg("-i", bikes, "-t", "1", "-vf", "scale=257:143", "-c:v", "ffv1", str(d / "odd.mkv"))
    ffmpeg("-display_rotation", "90", "-i", carphone, "-t", "1", "-c", "copy", str(d / "rot.mp4"))
    ffmpeg("-i", bikes, "-t", "1", "-pix_fmt", "yuv420p10le", "-c:v", "libx264",
           "-preset", "ultrafast", str(d / "ten_bit.mp4"))  # fmt: skip
    ffmpeg("-i", bikes, "-t", "1", "-pix_fmt", "yuv444p", "-c:v", "libx264",
           "-preset", "ultrafast", str(d / "yuv444.mp4"))  # fmt: skip
    # Variable frame rate: 30 fps with a half-second gap after frame 20.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-t", "2",
           "-vf", "setpts='if(gt(N,20),N/30+0.5,N/30)/TB'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "ultrafast", str(d / "vfr.mp4"))  # fmt: skip
    odd_name = d / "vidéo avec espaces ü.mp4"
    ffmpeg("-i", carphone, "-t", "1", "-c", "copy", str(odd_name))
    # A named pipe that nothing ever writes: ffmpeg would wait on it forever.
    os.mkfifo(d / "fifo.mp4")
    names = ["empty.mp4", "truncated.mp4", "truncated_faststart.mp4", "text.mp4",
             "audio_only.mp4", "one_frame.mp4", "odd.mkv", "rot.mp4", "ten_bit.mp4",
             "yuv444.mp4", "vfr.mp4", odd_name.name, "fifo.mp4"]  # fmt: skip
    rows = [{"path": n, "id": Path(n).stem} for n in names]
    rows += [{"path": "missing.mp4", "id": "missing"}, {"path": "vfr.mp4", "id": "vfr"}]
    return d, _manifest(d / "corpus.jsonl", rows)


@pytest.fixture(scope="module")
def corpus_run(corpus, tmp_path_factory):
    d, manifest = corpus
    out = tmp_path_factory.mktemp("corpus_out")
    args = ["run", "--manifest", manifest, "--output", str(out), "--short-side", "32",
            "--max-frames", "20", "--workers", "2"]  # fmt: skip
    status = main(args)
    failures = [json.loads(ln) for ln in (out / "failures.jsonl").read_text().splitlines()]
    rows = list(read_rows(out))
    return status, {f["video_id"]: f for f in failures}, rows, out


def test_each_bad_input_is_one_readable_failure(corpus_run):
    status, failures, _, _ = corpus_run
    assert status == 0  # failures do not fail the run without --fail-on-error
    expected = {
        "empty": ("probe", "empty file"),
        "truncated": ("probe", "not a readable video"),
        "truncated_faststart": ("decode", "truncated"),
        "text": ("probe", "not a readable video"),
        "audio_only": ("probe", "no video stream"),
        "one_frame": ("decode", "only 1 frame"),
        "missing": ("probe", "file not found"),
        "vfr": ("manifest", "duplicate video id"),
        "fifo": ("probe", "not a regular file (a named pipe (FIFO)"),
    }
    assert sorted(failures) == sorted(expected)
    for vid, (stage, words) in expected.items():
        assert failures[vid]["stage"] == stage, failures[vid]
        assert words in failures[vid]["error"], failures[vid]


@pytest.mark.parametrize("stage", ["probe", "decode"])
def test_a_hung_probe_or_decode_is_killed_at_the_timeout_and_reported(
    corpus, tmp_path, monkeypatch, stage
):
    """An ffprobe (or ffmpeg) that never answers: the stall guard ``--timeout`` must end it
    (here 1 s; the run holds this video only, so the guard cannot cut a slow but working
    one short). The hung program stands in for the real one through ``$TRISTREAM_FFPROBE``
    or ``$TRISTREAM_FFMPEG``; the other one is the real one."""
    from tests.helpers import SYSTEM_FFMPEG, SYSTEM_FFPROBE

    d, _ = corpus
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")
    hung.chmod(0o755)
    monkeypatch.setenv("TRISTREAM_FFPROBE", str(hung) if stage == "probe" else SYSTEM_FFPROBE)
    monkeypatch.setenv("TRISTREAM_FFMPEG", str(hung) if stage == "decode" else SYSTEM_FFMPEG)
    out = tmp_path / "out"
    manifest = _manifest(tmp_path / "m.jsonl", [{"path": str(d / "full.mp4"), "id": "hang"}])
    status = main(["run", "--manifest", manifest, "--output", str(out), "--short-side", "32",
                   "--timeout", "1", "--workers", "1"])  # fmt: skip
    assert status == 0
    (line,) = [json.loads(ln) for ln in (out / "failures.jsonl").read_text().splitlines()]
    assert (line["video_id"], line["stage"]) == ("hang", stage), line
    tool, what = ("ffprobe", "answer") if stage == "probe" else ("ffmpeg", "frame")
    assert line["error"] == f"no {what} from {tool} for 1 s (stalled {stage})", line


def test_odd_but_valid_videos_are_written_correctly(corpus_run):
    _, _, rows, out = corpus_run
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r["video_id"], []).append(r)
    assert sorted(by_id) == sorted(
        ["odd", "rot", "ten_bit", "yuv444", "vfr", "vidéo avec espaces ü"]
    )
    frames = {vid: sum(r["num_frames"] for r in rs) - (len(rs) - 1) for vid, rs in by_id.items()}
    # 1 s clips are 25 frames at 25 fps; the two stream copies cut at packets,
    # so count theirs with a plain ffmpeg decode.
    copies = {vid: len(reference_frames(by_id[vid][0]["source"], 25, 32, 32))
              for vid in ("rot", "vidéo avec espaces ü")}  # fmt: skip
    assert copies["rot"] >= 25
    assert frames == {"odd": 25, "ten_bit": 25, "yuv444": 25, "vfr": 50, **copies}
    odd = by_id["odd"][0]
    assert (odd["height"], odd["width"]) == (32, 58)  # 257x143 -> short side 32, even width
    rot = by_id["rot"][0]
    assert (rot["height"], rot["width"]) == (40, 32)  # portrait after the display matrix
    for rs in by_id.values():
        for r in rs:
            assert r["flow"].shape == (r["num_frames"] - 1, r["height"], r["width"], 2)
    # VFR: the fps filter gives a constant 25 fps; the gap repeats frames.
    segs = sorted(by_id["vfr"], key=lambda r: r["segment"])
    vfr = np.concatenate([segs[0]["rgb"]] + [r["rgb"][1:] for r in segs[1:]])
    repeats = sum(np.array_equal(a, b) for a, b in zip(vfr[:-1], vfr[1:]))
    assert len(vfr) == 50 and 10 <= repeats <= 14  # 0.5 s gap at 25 fps
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["videos_failed"] == 9
    assert manifest["totals"]["videos_written"] == 6
    assert manifest["metrics"]["videos_done"] == 6


# --------------------------------------------------------------------------- kill and resume


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory, bikes, carphone):
    d = tmp_path_factory.mktemp("small")
    path = d / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "id", "label", "start", "end"])
        w.writerow([bikes, "bikes", "street", 0, 2])
        w.writerow([carphone, "carphone", "talk", "", ""])
        w.writerow([bikes, "bikes_late", "street", 6, 7.5])
    return str(path)


def _config(manifest, out, workers=1, **kw) -> RunConfig:
    return RunConfig.from_options(output=str(out), manifest=manifest, short_side=48, max_frames=12,
                     format="both", workers=workers, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def reference(small_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    result = run(_config(small_manifest, out, workers=1))
    assert result.manifest["totals"]["videos_written"] == 3
    return out, result


def test_same_shards_whatever_the_number_of_workers(small_manifest, reference, tmp_path):
    ref, _ = reference
    run(_config(small_manifest, tmp_path, workers=2))
    assert _shard_bytes(tmp_path) == _shard_bytes(ref)


def test_rerun_skips_cached_videos_and_takes_identity_from_the_manifest(
    small_manifest, reference, tmp_path
):
    ref, first = reference
    assert first.counters["frames"] > 0
    out = tmp_path / "out"
    shutil.copytree(ref, out)  # leave the shared reference as it is
    again = run(_config(small_manifest, out, workers=2))
    assert again.counters["videos_cached"] == 3
    assert again.counters.get("frames", 0) == 0 and again.counters.get("flow_pairs", 0) == 0
    # The same content under another id and label: found in the cache, renamed.
    rows = list(csv.DictReader(open(small_manifest)))
    rows[1]["id"], rows[1]["label"] = "phone_call", "call"
    renamed = tmp_path / "renamed.csv"
    with open(renamed, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result = run(_config(str(renamed), out, workers=1))
    assert result.counters["videos_cached"] == 3
    ids = sorted({(r["video_id"], r["label"]) for r in read_rows(out)})
    assert ids == [("bikes", "street"), ("bikes_late", "street"), ("phone_call", "call")]


def _cli_args(manifest, out) -> list[str]:
    return ["run", "--manifest", manifest, "--output", str(out), "--short-side", "48",
            "--max-frames", "12", "--format", "both", "--workers", "1"]  # fmt: skip


def _cli(manifest, out) -> list[str]:
    return [sys.executable, "-m", "tristream.cli", *_cli_args(manifest, out)]


@pytest.mark.parametrize("point", ["segment", "video"])
def test_killed_run_resumes_to_the_same_shards(small_manifest, reference, tmp_path, point):
    """SIGKILL right after the run's first staged segment, or right after its first complete
    video (the run kills itself there, see ``tests.stores.cli_killed_at``), then a re-run."""
    ref, _ = reference
    killed = subprocess.run(cli_killed_at(point, _cli_args(small_manifest, tmp_path)),
                            cwd=REPO, capture_output=True)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not (tmp_path / "manifest.json").exists()
    staged = list((tmp_path / "cache").rglob("seg-*.parquet"))
    done_markers = list((tmp_path / "cache").rglob("done.json"))
    if point == "segment":  # one video, one segment in: its entry is not complete
        assert (len(staged), len(done_markers)) == (1, 0)
    else:  # one video complete (one thread: nothing of another video yet)
        (marker,) = done_markers
        assert len(staged) == len(json.loads(marker.read_text())["segments"]) > 1
    done = subprocess.run(_cli(small_manifest, tmp_path), cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _shard_bytes(tmp_path) == _shard_bytes(ref)
    assert not list((tmp_path / "shards").glob(".*"))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    # the complete video is taken from the cache; a partial entry is done again
    assert manifest["metrics"].get("videos_cached", 0) == (1 if point == "video" else 0)
    assert manifest["totals"]["videos_written"] == 3


def test_dask_runner_writes_the_same_shards(small_manifest, reference, tmp_path):
    import distributed  # the dask extra, part of `make test`'s install

    ref, _ = reference
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        result = run(
            _config(small_manifest, tmp_path),
            ["--runner", "DaskRunner", "--dask_client_address", cluster.scheduler_address],
        )
    assert result.manifest["totals"]["videos_written"] == 3
    assert _shard_bytes(tmp_path) == _shard_bytes(ref)
    for name in _shard_bytes(ref):
        if name.endswith(".parquet"):
            a = pq.read_table(tmp_path / "shards" / name)
            assert a.num_rows == pq.read_table(ref / "shards" / name).num_rows > 0


# --------------------------------------------------------------------------- a real Dask cluster


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminate ``procs`` and every process they started; kill what does not end in 20 s."""
    import psutil

    family = []
    for proc in procs:
        try:
            family += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
        except psutil.NoSuchProcess:
            pass
    for proc in reversed(procs):  # the workers first, then the scheduler
        if proc.poll() is None:
            proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=10)
    for proc in procs:
        proc.wait(timeout=10)


def test_dask_cluster_of_separate_processes_writes_the_same_shards(
    small_manifest, reference, s3_server, tmp_path, monkeypatch
):
    """`dask scheduler` and two `dask worker` processes on localhost, `tristream run` as a
    client in its own process, and the videos, the manifest and the output on an S3 bucket
    (a real S3-compatible server; no folder is shared): the rows are the local run's, but
    for their source naming the bucket, and the videos were processed in the worker
    processes, which read them from the bucket and wrote the cache there."""
    import distributed
    import psutil

    ref, _ = reference
    s3env, s3 = s3_server
    use_s3(monkeypatch, s3env)
    rows = list(csv.DictReader(Path(small_manifest).read_text().splitlines()))
    for path in sorted({r["path"] for r in rows}):
        s3.upload_file(path, BUCKET_IN, f"dask/{Path(path).name}")
    for r in rows:
        r["path"] = f"s3://{BUCKET_IN}/dask/{Path(r['path']).name}"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    s3.put_object(Bucket=BUCKET_IN, Key="dask/m.csv", Body=text.getvalue().encode())
    manifest, out = f"s3://{BUCKET_IN}/dask/m.csv", f"s3://{BUCKET_OUT}/dask"
    dask = str(Path(sys.executable).with_name("dask"))
    env = dict(os.environ)  # the same ffmpeg (PATH), venv and S3 endpoint for every process
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    family: list[psutil.Process] = []

    def start(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [dask, *args], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
            ))  # fmt: skip

    def worker_logs() -> str:
        return "".join(_tail(logs / f"{n}.log") for n in ("scheduler", "worker0", "worker1"))

    # Run in each worker process (defined here, so that Dask ships them by value): record
    # the id of every video its process stages (the ProcessVideo DoFn calls
    # ``stage_video`` once per video), and read the record back.
    def count_staged_videos() -> None:
        from tristream.pipeline import videos

        real, seen = videos.stage_video, []

        def counted(task, *args, **kwargs):
            seen.append(task.video_id)
            return real(task, *args, **kwargs)

        videos.stage_video = counted
        videos.staged_ids_for_test = seen

    def staged_videos() -> list[str]:
        from tristream.pipeline import videos

        return list(videos.staged_ids_for_test)

    try:
        scheduler_file = tmp_path / "scheduler.json"  # holds the address once it listens
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
              "--no-dashboard", "--scheduler-file", str(scheduler_file))  # fmt: skip
        deadline = time.monotonic() + 60
        address = None
        while address is None:
            assert procs[0].poll() is None and time.monotonic() < deadline, worker_logs()
            time.sleep(0.1)
            with contextlib.suppress(OSError, ValueError):  # not there, or half-written
                address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i in range(2):
            start(f"worker{i}", "worker", address, "--nworkers", "1", "--nthreads", "1",
                  "--no-dashboard", "--name", f"w{i}")  # fmt: skip
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            # Worker address -> the process that runs its tasks: one this test started
            # (each `dask worker` runs its worker in a child process, under its nanny).
            workers = {a: psutil.Process(pid) for a, pid in client.run(os.getpid).items()}
            ours = {p.pid for p in procs[1:]}
            for w in workers.values():
                assert {w.pid, *(a.pid for a in w.parents())} & ours, w
            family = [psutil.Process(p.pid) for p in procs]
            family += [c for p in family for c in p.children(recursive=True)]
            # Before the run, nothing of tristream's pipeline is in a worker process.
            assert client.run(lambda: "tristream.pipeline.videos" in sys.modules) == (
                dict.fromkeys(workers, False)
            )
            client.run(count_staged_videos)
            cmd = [*_cli(manifest, out), "--runner", "DaskRunner",
                   "--dask_client_address", address]  # fmt: skip
            done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300)
            assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:] + (
                worker_logs()
            )
            staged = client.run(staged_videos)
    finally:
        _stop(procs)

    print(f"videos staged per worker: {staged}")
    # Every video was processed once, in a worker process, and both workers took part.
    assert sorted(v for vids in staged.values() for v in vids) == sorted(r["id"] for r in rows)
    assert all(staged[a] for a in workers), staged
    assert rows_without_source(out) == rows_without_source(ref)
    assert {r["source"] for r in read_rows(out, fmt="parquet")} == {r["path"] for r in rows}
    listed = s3.list_objects_v2(Bucket=BUCKET_OUT, Prefix="dask/shards/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed) == sorted(_shard_bytes(ref))
    summary = json.loads(s3.get_object(Bucket=BUCKET_OUT, Key="dask/manifest.json")["Body"].read())
    assert summary["totals"]["videos_written"] == 3
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)
