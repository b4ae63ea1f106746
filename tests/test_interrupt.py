"""The run around the videos (#20): one run per output, and a clean Ctrl-C / SIGTERM.

Every case runs the real ``tristream`` command in a subprocess on real clips and sends
real signals. Nothing waits on a guess of time: a signal is sent once a file the run
writes appears (its lock, a finished video's cache entry), and a run that holds the lock
is frozen with SIGSTOP while the second one starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tristream.pipeline.lock import LOCK_NAME, OutputLocked, acquire, release

#: A hang guard for the subprocesses (never an assertion about speed).
HANG = 600


def _clips(tmp_path: Path, bikes: str, carphone: str, n: int = 3) -> Path:
    """A manifest of ``n`` different videos: carphone, then 3 s ranges of bikes (each range
    is its own video, with its own cache entry)."""
    rows = ["id,path,start,end", f"carphone,{carphone},0,4"]
    rows += [f"bikes{i},{bikes},{3 * i},{3 * i + 3}" for i in range(n - 1)]
    manifest = tmp_path / "videos.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def _command(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tristream.cli", "run", "--manifest", str(manifest),
            "--output", str(out), "--short-side", "48", "--fps", "10", "--workers", "1",
            *extra]  # fmt: skip


def _wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + HANG
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended before {what}: {proc.returncode}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"hung waiting for {what}")
        time.sleep(0.05)


def _done_entries(out: Path) -> list[Path]:
    return list((out / "cache").glob("*/*/done.json"))


def _shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "shards").iterdir())}  # fmt: skip


# ------------------------------------------------------------------------------------ lock


def test_the_lock_names_its_holder_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    out = str(tmp_path / "o")
    os.makedirs(out)
    path = acquire(out, "abc")
    held = json.loads(Path(path).read_text())
    assert held["pid"] == os.getpid() and held["config_hash"] == "abc"
    with pytest.raises(OutputLocked, match=f"pid {os.getpid()}"):
        acquire(out, "abc")  # this very process holds it: alive
    release(path)
    assert not os.path.exists(path)
    # A holder that is alive on this host: another process.
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        record = {**held, "pid": sleeper.pid}
        Path(path).write_text(json.dumps(record))
        with pytest.raises(OutputLocked, match=f"pid {sleeper.pid}.*remove .*{LOCK_NAME}"):
            acquire(out, "abc")
    finally:
        sleeper.kill()
        sleeper.wait()
    # The same holder once its process is gone: stale, taken over.
    path2 = acquire(out, "def")
    assert json.loads(Path(path2).read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text
    release(path2)


def test_a_second_run_on_the_same_output_fails_at_start(tmp_path, bikes, carphone):
    """#20 case 4: two runs with different --num-shards into one folder deleted each other's
    shards. Now the second fails at start and the first finishes whole."""
    inp, out = _clips(tmp_path, bikes, carphone, n=2), tmp_path / "o"
    first = subprocess.Popen(_command(inp, out, "--flow", "none", "--num-shards", "2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _wait_for(lambda: (out / LOCK_NAME).exists(), first, "the first run's lock")
        os.kill(first.pid, signal.SIGSTOP)  # frozen while holding the lock: no race
        second = subprocess.run(_command(inp, out, "--flow", "none", "--num-shards", "3"),
                                capture_output=True, text=True, timeout=HANG)  # fmt: skip
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 1, second.stderr
    assert "in use by another tristream run" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    _, err = first.communicate(timeout=HANG)
    assert first.returncode == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(f["path"] for s in manifest["shards"] for f in s["files"]) == [
        "shards/train-00000-of-00002.parquet",
        "shards/train-00001-of-00002.parquet",
    ]
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00000-of-00002.parquet.idx",
        "train-00001-of-00002.parquet",
        "train-00001-of-00002.parquet.idx",
    ]
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------------------- interrupt


@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)],
    ids=["ctrl-c-in-a-terminal", "sigint", "sigterm"],
)
def test_the_first_signal_stops_cleanly_and_a_rerun_resumes(
    tmp_path, bikes, carphone, signum, group
):
    """#20 case 3: Ctrl-C printed tracebacks, then hung, and marked a healthy video failed.
    ``group``: the signal goes to the whole process group, ffmpeg children included, as a
    terminal's Ctrl-C does."""
    inp = _clips(tmp_path, bikes, carphone, n=3)
    out, whole = tmp_path / "o", tmp_path / "whole"
    proc = subprocess.Popen(_command(inp, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=group)  # fmt: skip
    _wait_for(lambda: len(_done_entries(out)) >= 1, proc, "the first video's cache entry")
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=HANG)
    assert proc.returncode == 130, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("tristream: interrupted: ")
    assert "re-run the same command to resume" in lines[-1]
    assert "Traceback" not in stderr and "FAILED" not in stdout
    done = int(lines[-1].split("interrupted: ")[1].split()[0])
    assert 1 <= done < 3 and len(_done_entries(out)) == done
    # Nothing half-done: no shard, no manifest, no failures, no partial cache entry, no lock.
    assert not (out / "manifest.json").exists() and not (out / "failures.jsonl").exists()
    assert not (out / "shards").exists() or not list((out / "shards").iterdir())
    entries = [p for p in (out / "cache").glob("*/*") if p.is_dir()]
    assert all((p / "done.json").exists() for p in entries)
    assert not (out / LOCK_NAME).exists()
    # The same command again finishes the job from the cache, with the shards of a run
    # that was never interrupted.
    again = subprocess.run(_command(inp, out), capture_output=True, text=True, timeout=HANG)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["videos_written"] == 3 and manifest["totals"]["videos_failed"] == 0
    assert manifest["metrics"]["videos_cached"] == done
    if group:
        full = subprocess.run(_command(inp, whole), capture_output=True, text=True, timeout=HANG)
        assert full.returncode == 0, full.stderr
        assert _shard_digests(out) == _shard_digests(whole)


def test_a_second_signal_exits_at_once(tmp_path, bikes, carphone):
    inp, out = _clips(tmp_path, bikes, carphone, n=3), tmp_path / "o"
    proc = subprocess.Popen(_command(inp, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    _wait_for(lambda: (out / LOCK_NAME).exists(), proc, "the run's lock")
    proc.send_signal(signal.SIGINT)
    seen = []
    for line in proc.stderr:  # ends at the process's end at the latest
        seen.append(line)
        if line.startswith("stopping:"):
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=HANG)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130
    assert "interrupted again: exiting now" in stderr
    assert not (out / "manifest.json").exists()
