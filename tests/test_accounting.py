"""Every video accounted for: a failure in any stage after decoding, a full disk, an output
that cannot be written, and a video lost by the runner each end as exactly one
``failures.jsonl`` line (or one clear error for the run), the other videos are written,
and the totals add up.

Runs are real Beam runs (the in-process runner) on real clips. Stage failures that
no real input can provoke on demand are injected by wrapping the stage's function
where :mod:`tristream.process` calls it, for one of the two videos only; the others
come from real causes (a skeleton file that lacks a video, a registered flow backend,
a full tmpfs, a read-only mount).
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ffmpeg
from tristream import process
from tristream.cli import main
from tristream.pipeline import videos
from tristream.pipeline.sinks import account
from tristream.pipeline.videos import Failure
from tristream.process import VideoTask
from tristream.shards import read_rows
from tristream.transforms import flow as flow_module
from tristream.transforms.skeletons import SkeletonAnnotation, save_skeletons

REPO = Path(__file__).resolve().parents[1]
SHORT = 32
# At short side 32: bikes (640x272) is 76 wide, carphone (176x144) 40.
BIKES_WIDTH = 76


@pytest.fixture(scope="module")
def clips(tmp_path_factory, bikes, carphone) -> dict[str, str]:
    """Two real 0.8 s clips: ``bikes`` (wide street scene) and ``phone`` (a man in a car)."""
    d = tmp_path_factory.mktemp("clips")
    out = {"bikes": str(d / "bikes.mp4"), "phone": str(d / "phone.mp4")}
    for name, src in (("bikes", bikes), ("phone", carphone)):
        ffmpeg("-i", src, "-t", "0.8", "-an", "-c:v", "libx264", "-preset", "ultrafast",
               out[name])  # fmt: skip
    return out


def _manifest(path: Path, clips: dict[str, str]) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "id", "label"])
        for vid, p in sorted(clips.items()):
            w.writerow([p, vid, "x"])
    return str(path)


def _skeletons(path: Path, ids: list[str]) -> str:
    """A real pyskl-layout file with one still person per listed video (stored size)."""
    rng = np.random.default_rng(0)
    anns = []
    for vid in ids:
        kps = np.zeros((1, 20, 17, 3), np.float32)
        kps[..., 0] = rng.uniform(5, 30, 17)
        kps[..., 1] = rng.uniform(5, 30, 17)
        kps[..., 2] = 0.9
        shape = (SHORT, BIKES_WIDTH if vid == "bikes" else 40)
        anns.append(SkeletonAnnotation(vid, kps, shape, shape, label=0))
    save_skeletons(str(path), anns)
    return str(path)


def _check_totals(out: Path, written: list[str], failed: dict[str, str]) -> list[dict]:
    """The run wrote exactly ``written``, failed exactly ``failed`` (id -> stage), once each."""
    manifest = json.loads((out / "manifest.json").read_text())
    lines = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert {f["video_id"]: f["stage"] for f in lines} == failed
    assert len(lines) == len(failed)  # one line per failed video
    assert sorted({r["video_id"] for r in read_rows(out)}) == sorted(written)
    t = manifest["totals"]
    assert (t["videos"], t["videos_written"], t["videos_failed"]) == (
        len(written) + len(failed), len(written), len(failed)
    )  # fmt: skip
    assert t["videos_written"] + t["videos_failed"] == t["videos"]
    return lines


def _raise_for_bikes(monkeypatch, stage: str, name: str, is_bikes) -> None:
    """Wrap ``tristream.process.<name>`` so that it raises for the bikes clip only."""
    real = getattr(process, name)

    def wrapped(*args, **kwargs):
        if is_bikes(args, kwargs):
            raise RuntimeError(f"injected {stage} failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(process, name, wrapped)


def _bikes_source(args, kwargs) -> bool:
    return "bikes" in os.path.basename(args[0])


def _bikes_frames(args, kwargs) -> bool:
    frames = args[0] if args else kwargs["frames"]
    return frames.shape[2] == BIKES_WIDTH


#: stage -> (function of tristream.process that runs it, how to tell the bikes clip)
INJECTED = {
    "probe": ("probe", _bikes_source),
    "decode": ("decode_segments", _bikes_source),
    "flow": ("compute_flow", _bikes_frames),
    "pose": ("_imported_tracks", lambda a, kw: a[0].video_id == "bikes"),
    "render": ("render_segment", _bikes_frames),
    "encode": ("encode_row", lambda a, kw: kw["video_id"] == "bikes"),
}


def test_every_stage_of_the_chain_is_injected():
    assert sorted(INJECTED) == sorted(process.STAGES)


@pytest.mark.parametrize("stage", sorted(INJECTED))
def test_a_failure_in_any_stage_is_one_line_and_the_other_video_is_written(
    stage, clips, tmp_path, monkeypatch
):
    _raise_for_bikes(monkeypatch, stage, *INJECTED[stage])
    out = tmp_path / "out"
    skeletons = _skeletons(tmp_path / "sk.pkl", ["bikes", "phone"])
    flow = "opencv" if stage == "flow" else "none"
    args = ["run", "--manifest", _manifest(tmp_path / "m.csv", clips), "--output", str(out),
            "--short-side", str(SHORT), "--max-frames", "12", "--flow", flow, "--workers", "2",
            "--skeletons", skeletons]  # fmt: skip
    assert main(args) == 0
    (line,) = _check_totals(out, ["phone"], {"bikes": stage})
    assert line["error"] == f"injected {stage} failure"
    assert line["source"] == clips["bikes"]
    assert line["segment"] == (None if stage in ("probe", "decode") else 0)
    # Nothing of the failed video stays in the cache: a re-run starts it afresh.
    assert [json.loads(p.read_text())["video_id"] for p in (out / "cache").rglob("done.json")] == [
        "phone"
    ]
    assert main([*args, "--fail-on-error"]) == 1


def test_skeleton_file_missing_a_video(clips, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--manifest", _manifest(tmp_path / "m.csv", clips), "--output", str(out),
            "--short-side", str(SHORT), "--max-frames", "12", "--flow", "none",
            "--skeletons", _skeletons(tmp_path / "sk.pkl", ["bikes"])]  # fmt: skip
    assert main(args) == 0
    assert "1 of 2 videos written, 1 failed" in capsys.readouterr().out
    (line,) = _check_totals(out, ["bikes"], {"phone": "pose"})
    assert "no skeletons for video 'phone'" in line["error"] and line["segment"] == 0


def test_flow_backend_registered_by_name_that_fails(clips, tmp_path):
    def oom_on_wide_frames(gray: np.ndarray, **params) -> np.ndarray:
        if gray.shape[2] > 50:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return flow_module.BACKENDS["opencv"](gray, **params)

    flow_module.register_backend("test-oom", oom_on_wide_frames)
    try:
        out = tmp_path / "out"
        args = ["run", "--manifest", _manifest(tmp_path / "m.csv", clips), "--output",
                str(out), "--short-side", str(SHORT), "--max-frames", "12",
                "--flow", "test-oom"]  # fmt: skip
        assert main(args) == 0
    finally:
        del flow_module.BACKENDS["test-oom"]
    (line,) = _check_totals(out, ["phone"], {"bikes": "flow"})
    assert line["error"] == "CUDA out of memory. Tried to allocate 20.00 GiB"
    assert line["segment"] == 0
    assert json.loads((out / "manifest.json").read_text())["config"]["flow"] == "test-oom"


def test_a_video_the_runner_drops_is_reported_lost_and_fails_the_run(
    clips, tmp_path, monkeypatch, capsys
):
    real = videos.ProcessVideo.process

    def drop_bikes(self, task):
        if task.video_id != "bikes":
            yield from real(self, task)

    monkeypatch.setattr(videos.ProcessVideo, "process", drop_bikes)
    out = tmp_path / "out"
    args = ["run", "--manifest", _manifest(tmp_path / "m.csv", clips), "--output", str(out),
            "--short-side", str(SHORT), "--flow", "none"]  # fmt: skip
    assert main(args) == 1  # even without --fail-on-error
    err = capsys.readouterr().err
    assert "1 video(s) were neither written nor reported failed" in err
    (line,) = _check_totals(out, ["phone"], {"bikes": "lost"})
    assert line["source"] == clips["bikes"]
    assert json.loads((out / "manifest.json").read_text())["totals"]["videos_lost"] == 1


def test_account_keeps_one_record_per_video_and_checks_the_sum():
    tasks = [VideoTask(v, f"/{v}.mp4", "train") for v in ("a", "b", "c", "d")]
    reports = [
        Failure("b", "/b.mp4", "flow", "late", 3),
        Failure("b", "/b.mp4", "decode", "early", 1),
        Failure("a", "/a.mp4", "write", "written anyway"),  # a is in the shards: dropped
    ]
    rejected = [Failure("a", "/a2.mp4", "manifest", "duplicate video id 'a'")]
    records = account(tasks, rejected, {"a", "c"}, reports)
    assert [(f.video_id, f.stage) for f in records] == [
        ("a", "manifest"), ("b", "decode"), ("d", "lost")
    ]  # fmt: skip


# --------------------------------------------------------------------------- run faults


def _in_private_mounts(script: str) -> subprocess.CompletedProcess:
    """Run a bash script in a mount namespace of its own (its tmpfs mounts vanish with it).

    As root that is ``unshare --mount``; other users get a user namespace too.
    """
    cmd = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        cmd.append("--map-root-user")
    return subprocess.run([*cmd, "bash", "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def _cli(manifest: str, out: Path, *extra: str) -> str:
    args = [sys.executable, "-m", "tristream.cli", "run", "--manifest", manifest,
            "--output", str(out), "--short-side", "64", "--max-frames", "12", "--flow",
            "none", "--format", "both", "--workers", "1", *extra]  # fmt: skip
    return shlex.join(args)


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> tuple[str, Path]:
    """An undisturbed run of the two clips on an ordinary disk."""
    d = tmp_path_factory.mktemp("ref")
    manifest = _manifest(d / "m.csv", clips)
    done = subprocess.run(_cli(manifest, d / "out"), shell=True, cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return manifest, d / "out"


def _fault_then_fix(manifest: str, tmp_path: Path, fault: str, fix: str) -> dict:
    """Run into a tmpfs under ``fault`` (mount options), copy what it left, apply ``fix``,
    run again, copy again. Returns exit codes, stderr and the copies' paths."""
    out, before, after = tmp_path / "out", tmp_path / "before", tmp_path / "after"
    out.mkdir()
    script = f"""
        set -u
        mount -t tmpfs -o {fault} tmpfs {out}
        {_cli(manifest, out)} > {tmp_path}/out1 2> {tmp_path}/err1; echo $? > {tmp_path}/rc1
        cp -r {out} {before}
        mount -o remount,{fix} {out}
        {_cli(manifest, out)} > {tmp_path}/out2 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2
        cp -r {out} {after}
    """
    done = _in_private_mounts(script)
    assert done.returncode == 0, done.stderr
    return {
        "rc": (int((tmp_path / "rc1").read_text()), int((tmp_path / "rc2").read_text())),
        "err": ((tmp_path / "err1").read_text(), (tmp_path / "err2").read_text()),
        "before": before,
        "after": after,
    }


def test_read_only_output_is_one_clear_error_and_a_rerun_completes(reference, tmp_path):
    manifest, ref = reference
    r = _fault_then_fix(manifest, tmp_path, "size=64m,ro", "rw")
    assert r["rc"] == (1, 0), r["err"]
    lines = [ln for ln in r["err"][0].splitlines() if ln.strip()]
    assert lines == [
        f"tristream: error: output folder {tmp_path / 'out'} is not writable: Read-only file system"
    ]
    assert not any(r["before"].iterdir())
    assert _shard_bytes(r["after"]) == _shard_bytes(ref)


def test_disk_full_while_writing_shards_fails_the_run_and_a_rerun_completes(reference, tmp_path):
    manifest, ref = reference
    cache_bytes = sum(p.stat().st_size for p in (ref / "cache").rglob("*") if p.is_file())
    shard_bytes = sum(len(b) for b in _shard_bytes(ref).values())
    # Room for the cache but not for the shards (both formats: about twice the cache).
    size = cache_bytes + shard_bytes // 3
    r = _fault_then_fix(manifest, tmp_path, f"size={size}", "size=64m")
    assert r["rc"] == (1, 0), r["err"]
    lines = [ln for ln in r["err"][0].splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r["err"][0], r["err"][0]
    assert lines[0].startswith("tristream: error: writing the output failed: No space left")
    # Nothing half-written: no shard, no temporary file, no manifest.
    assert not (r["before"] / "manifest.json").exists()
    assert not list(r["before"].rglob("*.tmp")) and not list(r["before"].rglob("*.parquet.*"))
    assert _shard_bytes(r["after"]) == _shard_bytes(ref)
    manifest_json = json.loads((r["after"] / "manifest.json").read_text())
    assert manifest_json["metrics"]["videos_cached"] == 2  # the cache was kept and trusted


def test_disk_full_while_staging_a_video_fails_that_video_only(clips, bikes, tmp_path):
    # phone: 0.8 s; bikes: 4 s, far larger than phone once staged.
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "id", "label", "end"])
        w.writerow([bikes, "bikes", "x", 4])
        w.writerow([clips["phone"], "phone", "x", ""])
    ref = tmp_path / "ref"
    done = subprocess.run(_cli(str(manifest), ref), shell=True, cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    entry_bytes = {}
    for marker in (ref / "cache").rglob("done.json"):
        vid = json.loads(marker.read_text())["video_id"]
        entry_bytes[vid] = sum(p.stat().st_size for p in marker.parent.iterdir())
    # Room for phone's cache entry and its two shard files, not for bikes' entry.
    size = 4 * entry_bytes["phone"] + 64 * 1024
    assert size < entry_bytes["bikes"]
    r = _fault_then_fix(str(manifest), tmp_path, f"size={size}", "size=64m")
    assert r["rc"] == (0, 0), r["err"]
    _check_totals(r["before"], ["phone"], {"bikes": "write"})
    (line,) = [json.loads(x) for x in (r["before"] / "failures.jsonl").read_text().splitlines()]
    assert "No space left on device" in line["error"] and line["segment"] is not None
    assert _shard_bytes(r["after"]) == _shard_bytes(ref)
