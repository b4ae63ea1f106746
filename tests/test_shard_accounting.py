"""Shards that account for themselves (#20): ``--num-shards N`` writes N files, manifest.json
lists every file with its rows, bytes and SHA-256, and ``inspect`` names a missing or
truncated shard. Oracles: hashlib over the files' bytes, pyarrow's own row counts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tristream.cli import main


@pytest.fixture(scope="module")
def seven_shards(tmp_path_factory, bikes, carphone) -> Path:
    """A run of 2 videos into ``--num-shards 7`` (flow off, tiny frames)."""
    out = tmp_path_factory.mktemp("acct") / "o"
    manifest = out.parent / "m.csv"
    manifest.write_text(f"id,path,end\nbikes,{bikes},1\ncarphone,{carphone},1\n")
    argv = ["run", "--manifest", str(manifest), "--output", str(out), "--flow", "none",
            "--short-side", "32", "--fps", "5", "--num-shards", "7"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_num_shards_n_writes_n_files_each_accounted_for(seven_shards):
    """#20: `--num-shards 7` for 4 videos wrote 4 files named -of-00007."""
    out = seven_shards
    names = sorted(p.name for p in (out / "shards").glob("*.parquet"))
    assert names == [f"train-{i:05d}-of-00007.parquet" for i in range(7)]
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {f["path"]: (s["rows"], f) for s in manifest["shards"] for f in s["files"]}
    assert sorted(listed) == [f"shards/{n}" for n in names]
    for rel, (rows, f) in listed.items():
        data = (out / rel).read_bytes()
        assert f["bytes"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        assert pq.read_metadata(out / rel).num_rows == rows
    assert sum(rows for rows, _ in listed.values()) == manifest["totals"]["rows"] == 2
    assert sum(rows == 0 for rows, _ in listed.values()) == 5


def test_inspect_names_a_missing_and_a_truncated_shard(seven_shards, tmp_path, capsys):
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(seven_shards, out)
    manifest = json.loads((out / "manifest.json").read_text())
    full = [f["path"] for s in manifest["shards"] if s["rows"] for f in s["files"]]
    assert main(["inspect", str(out)]) == 0
    capsys.readouterr()
    (out / full[0]).unlink()
    data = (out / full[1]).read_bytes()
    (out / full[1]).write_bytes(data[: len(data) // 2])
    assert main(["inspect", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"PROBLEM missing: {full[0]} (manifest.json lists it with 1 rows)" in captured.out
    assert (
        f"PROBLEM truncated or changed: {full[1]} is {len(data) // 2} bytes, manifest.json "
        f"says {len(data)}" in captured.out
    )
    assert "missing or damaged shard files" in captured.err
    # A truncated file that no manifest describes is still named, not a traceback.
    (out / "manifest.json").unlink()
    assert main(["inspect", str(out)]) == 1
    assert f"PROBLEM unreadable: {out / full[1]}" in capsys.readouterr().out


def test_two_clips_of_one_full_video_are_both_written(tmp_path, bikes):
    """#20 case 5 on a real clip: a Kinetics CSV with two time ranges of one youtube_id on
    full videos (`--path-template '{youtube_id}.mp4'`) once failed the second clip as a
    duplicate. Both are written, each with its own frames."""
    import shutil

    videos = tmp_path / "yt"
    videos.mkdir()
    shutil.copy(bikes, videos / "bikes.mp4")
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n"
                   "riding,bikes,0,1,train\nriding,bikes,5,6,train\n")  # fmt: skip
    out = tmp_path / "o"
    argv = ["run", "--manifest", str(csv), "--input", str(videos), "--output", str(out),
            "--path-template", "{youtube_id}.mp4", "--flow", "none", "--short-side", "32",
            "--fps", "5"]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["videos_written"] == 2 and manifest["totals"]["videos_failed"] == 0
    table = pq.read_table(next((out / "shards").glob("*.parquet")))
    assert table.column("video_id").to_pylist() == ["bikes_000000_000001", "bikes_000005_000006"]
    first, second = (table.column("rgb")[i].as_py()[0] for i in range(2))
    assert first != second  # frames of 0 s and of 5 s, not one clip twice


def test_parquet_frame_index_is_written_listed_and_used(tmp_path, carphone):
    """By default each Parquet shard gets its frame index, manifest.json lists it, a trainer
    reads through it (``frame_index="require"``), and a re-run with
    ``--no-parquet-frame-index`` removes the index that no longer describes the shard."""
    from tristream.shards import ShardDataset

    out = tmp_path / "o"
    argv = ["run", "--input", carphone, "--output", str(out), "--flow", "none",
            "--short-side", "32", "--fps", "5", "--max-frames", "8"]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = [f for s in manifest["shards"] for f in s["files"]]
    assert entry["index"] == entry["path"] + ".idx" and (out / entry["index"]).is_file()
    clips = list(ShardDataset(str(out), modalities=("rgb",), clip_len=4, crop=16,
                              frame_index="require", shuffle=False))  # fmt: skip
    assert len(clips) == manifest["totals"]["rows"]
    assert main([*argv, "--no-parquet-frame-index"]) == 0
    assert not (out / entry["index"]).exists()
    entry = json.loads((out / "manifest.json").read_text())["shards"][0]["files"][0]
    assert "index" not in entry


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_readers_name_a_truncated_shard(tmp_path, carphone, fmt):
    """#20: a truncated Parquet shard's error named no file."""
    from tristream.shards import ShardDataset, read_rows

    out = tmp_path / "o"
    argv = ["run", "--input", carphone, "--output", str(out), "--flow", "none",
            "--short-side", "32", "--fps", "5", "--max-frames", "8", "--format", fmt]  # fmt: skip
    assert main(argv) == 0
    shard = next((out / "shards").glob(f"*.{fmt}"))
    data = shard.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"^{cut}: "):
        list(read_rows(str(cut)))
    with pytest.raises(ValueError, match=f"^{cut}: "):
        list(ShardDataset(str(cut), clip_len=2, crop=None))
