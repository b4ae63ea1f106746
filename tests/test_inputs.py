"""Input listing: folders, globs, CSV/JSONL manifests, Kinetics CSVs, ids, labels, shards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import make_clip
from tristream.pipeline.inputs import ManifestError, label_map, list_tasks, list_videos
from tristream.transforms.decode import decode_video


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_is_walked_recursively_with_ids_relative_to_the_root(tmp_path):
    _touch(tmp_path / "a" / "one.mp4")
    _touch(tmp_path / "b" / "two words é.MKV")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden.mp4")
    assert [vid for vid, _ in list_videos(str(tmp_path))] == ["a/one", "b/two words é"]


def test_animated_gif_in_a_folder_is_listed_and_decodes(carphone, tmp_path, ffmpeg_build):
    # 1 s of the real clip as a 10 fps animated GIF (paletted, 256 colours).
    (tmp_path / "clips").mkdir()
    gif = make_clip(carphone, str(tmp_path / "clips" / "talk.gif"), "-t", "1", "-vf", "fps=10")
    _touch(tmp_path / "still.png")
    _touch(tmp_path / "sound.wav")
    assert list_videos(str(tmp_path)) == [("clips/talk", gif)]
    frames = decode_video(gif, fps=0, short_side=64)
    assert frames.shape == (10, 64, 78, 3)  # 176x144 -> 78x64
    assert decode_video(gif, fps=25, short_side=64).shape == (25, 64, 78, 3)
    # The frames are the video's, in order: GIF frame k (k/10 s) is source frame 3k at
    # 29.97 fps, give or take the one frame the fps filter's rounding may pick instead.
    # (The palette costs ~3 levels; frames out of order cost > 10.)
    source = decode_video(carphone, fps=0, short_side=64, end=1.1).astype(int)
    errors = [
        min(
            np.abs(frames[k].astype(int) - source[j]).mean()
            for j in range(max(3 * k - 1, 0), 3 * k + 2)
        )
        for k in range(10)
    ]
    assert max(errors) < 4, errors


# 1 s of carphone (176x144, 29.97 fps: 30 frames) in each container, made by the ffmpeg CLI.
CONTAINERS = {
    "clip.apng": ("-f", "apng"),
    "clip.y4m": ("-pix_fmt", "yuv420p"),
    "clip.nut": ("-c:v", "mpeg4"),
    "clip.mxf": ("-c:v", "mpeg2video"),
    "clip.m2ts": ("-c:v", "libx264", "-f", "mpegts"),
    "clip.MTS": ("-c:v", "libx264", "-f", "mpegts"),
    "clip.vob": ("-c:v", "mpeg2video", "-f", "vob"),
    "clip.asf": ("-c:v", "wmv2", "-f", "asf"),
    "clip.f4v": ("-c:v", "libx264", "-f", "f4v"),
    "clip.rmvb": ("-c:v", "rv20", "-f", "rm"),
    "clip.ogg": ("-c:v", "libtheora", "-f", "ogg"),
    "clip.divx": ("-c:v", "mpeg4", "-vtag", "DIVX", "-f", "avi"),
}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_containers_ffmpeg_decodes_are_listed_and_decode(name, carphone, tmp_path):
    path = make_clip(carphone, str(tmp_path / name), "-t", "1", *CONTAINERS[name])
    assert list_videos(str(tmp_path)) == [("clip", path)]
    assert decode_video(path, fps=0, short_side=64).shape == (30, 64, 78, 3)


def test_glob_ids_are_relative_to_the_fixed_prefix(tmp_path):
    _touch(tmp_path / "x" / "c1.avi")
    _touch(tmp_path / "x" / "sub" / "c2.avi")
    found = list_videos(str(tmp_path / "x" / "**" / "*.avi"))
    assert [vid for vid, _ in found] == ["c1", "sub/c2"]
    with pytest.raises(FileNotFoundError):
        list_videos(str(tmp_path / "nope"))


def test_csv_manifest_labels_splits_ranges_and_duplicates(tmp_path):
    (tmp_path / "m.csv").write_text(
        "path,id,label,split,start,end\n"
        "v/a.mp4,,run,train,1.5,3\n"
        "v/b.mp4,bee,jump,val,,\n"
        "v/c.mp4,bee,jump,val,,\n"
        "/abs/d.mp4,dee,run,,,\n"
    )
    tasks, rejected = list_tasks(manifest=str(tmp_path / "m.csv"), default_split="all")
    by_id = {t.video_id: t for t in tasks}
    # A row with a time range and no id is a clip: its id names the range.
    assert sorted(by_id) == ["bee", "dee", "v/a_000001.500_000003"]
    a = by_id["v/a_000001.500_000003"]
    assert (a.source, a.label, a.label_index, a.split, a.start, a.end) == (
        str(tmp_path / "v/a.mp4"), "run", 1, "train", 1.5, 3.0,
    )  # fmt: skip
    assert by_id["bee"].label_index == 0 and by_id["bee"].start is None
    assert by_id["dee"].source == "/abs/d.mp4" and by_id["dee"].split == "all"
    # Without an id: the path relative to the root, or the file name outside it.
    (tmp_path / "n.csv").write_text("path\nsub/e.mp4\n/elsewhere/f.avi\n")
    ids = [t.video_id for t in list_tasks(manifest=str(tmp_path / "n.csv"))[0]]
    assert ids == ["f", "sub/e"]
    assert [(r.video_id, r.stage) for r in rejected] == [("bee", "manifest")]
    assert "duplicate" in rejected[0].error
    assert label_map(tasks) == {"jump": 0, "run": 1}


def test_jsonl_manifest_with_explicit_label_index_and_input_root(tmp_path):
    lines = [{"path": "a.mp4", "label": "x", "label_index": 7}, {"path": "b.mp4"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    tasks, _ = list_tasks(input_path="/data/root", manifest=str(tmp_path / "m.jsonl"))
    assert [(t.video_id, t.source, t.label_index) for t in tasks] == [
        ("a", "/data/root/a.mp4", 7),
        ("b", "/data/root/b.mp4", None),
    ]


def test_kinetics_csv_with_path_template(tmp_path):
    (tmp_path / "k.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,--07WQ2iBlw,1,11,train\n"
        "air drumming,-0gR5HK4dkQ,34,44,val\n"
    )
    trimmed, _ = list_tasks(input_path="/k400", manifest=str(tmp_path / "k.csv"))
    t = {x.video_id: x for x in trimmed}["--07WQ2iBlw_000001_000011"]
    assert (t.source, t.label, t.split, t.start, t.end) == (
        "/k400/--07WQ2iBlw_000001_000011.mp4", "abseiling", "train", None, None,
    )  # fmt: skip
    full, _ = list_tasks(
        input_path="/yt", manifest=str(tmp_path / "k.csv"), path_template="{youtube_id}.mkv"
    )
    t = {x.video_id: x for x in full}["-0gR5HK4dkQ_000034_000044"]
    assert (t.source, t.start, t.end, t.label_index) == ("/yt/-0gR5HK4dkQ.mkv", 34, 44, 1)


def test_shards_are_dealt_round_robin_by_sorted_id(tmp_path):
    for i in range(5):
        _touch(tmp_path / f"v{i}.mp4")
    tasks, _ = list_tasks(input_path=str(tmp_path), num_shards=2)
    assert [(t.video_id, t.shard, t.num_shards) for t in tasks] == [
        ("v0", 0, 2), ("v1", 1, 2), ("v2", 0, 2), ("v3", 1, 2), ("v4", 0, 2),
    ]  # fmt: skip
    auto, _ = list_tasks(input_path=str(tmp_path))
    assert {t.num_shards for t in auto} == {1}


def test_manifest_problems_are_clear(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        list_tasks(manifest=str(tmp_path / "none.csv"))
    (tmp_path / "bad.csv").write_text("id,label\nx,y\n")
    with pytest.raises(ManifestError, match="no 'path'"):
        list_tasks(manifest=str(tmp_path / "bad.csv"))


# ---------------------------------------------------------------------------------- #20


def test_clips_of_one_video_are_different_videos(tmp_path):
    """#20 case 5: a Kinetics CSV with two ranges of one youtube_id on full videos failed the
    second clip as a duplicate. Each range is a video; a repeated range is a true duplicate."""
    (tmp_path / "k.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,abc,1,11,train\n"
        "abseiling,abc,20,30,train\n"
        "abseiling,abc,20,30,train\n"
    )
    tasks, rejected = list_tasks(
        input_path="/yt", manifest=str(tmp_path / "k.csv"), path_template="{youtube_id}.mp4"
    )
    assert [(t.video_id, t.source, t.start, t.end) for t in tasks] == [
        ("abc_000001_000011", "/yt/abc.mp4", 1, 11),
        ("abc_000020_000030", "/yt/abc.mp4", 20, 30),
    ]
    assert [(r.video_id, r.stage) for r in rejected] == [("abc_000020_000030", "manifest")]
    (tmp_path / "m.csv").write_text("path,start,end\nv.mp4,0,5\nv.mp4,5,\nv.mp4,,2.25\n")
    ids = sorted(t.video_id for t in list_tasks(manifest=str(tmp_path / "m.csv"))[0])
    assert ids == ["v_000000_000002.250", "v_000000_000005", "v_000005_end"]


def test_files_that_share_a_stem_are_two_videos(tmp_path):
    for name in ("a.ts", "a.mkv", "b.mp4"):
        _touch(tmp_path / name)
    tasks, rejected = list_tasks(input_path=str(tmp_path))
    assert [t.video_id for t in tasks] == ["a.mkv", "a.ts", "b"] and rejected == []


@pytest.mark.parametrize("bom", ["\ufeff", ""])
def test_a_csv_with_a_byte_order_mark_reads_its_header(tmp_path, bom):
    (tmp_path / "m.csv").write_text(f"{bom}path,label\nx.mp4,run\n", encoding="utf-8")
    tasks, _ = list_tasks(manifest=str(tmp_path / "m.csv"))
    assert [(t.video_id, t.label) for t in tasks] == [("x", "run")]


def test_a_json_array_manifest(tmp_path):
    rows = [{"path": "a.mp4", "label": "x"}, {"path": "b.mp4", "start": 1, "end": 2}]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    tasks, _ = list_tasks(manifest=str(tmp_path / "m.json"))
    assert [(t.video_id, t.label, t.start) for t in tasks] == [
        ("a", "x", None),
        ("b_000001_000002", None, 1.0),
    ]
    (tmp_path / "bad.json").write_text(json.dumps([{"path": "a.mp4"}, "b.mp4"]))
    with pytest.raises(ManifestError, match="item 2 of the array is not an object"):
        list_tasks(manifest=str(tmp_path / "bad.json"))
    (tmp_path / "bad.jsonl").write_text('{"path": "a.mp4"}\n["b.mp4"]\n')
    with pytest.raises(ManifestError, match=r"bad.jsonl:2: a row must be a JSON object"):
        list_tasks(manifest=str(tmp_path / "bad.jsonl"))


def test_a_bad_value_fails_its_row_by_number_and_the_others_go_on(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,id,label_index,start,end\n"
        "a.mp4,a,abc,,\n"
        "b.mp4,b,,x,\n"
        "c.mp4,c,1.5,,\n"
        "d.mp4,d,,5,2\n"
        "e.mp4,e,3,1,2\n"
    )
    tasks, rejected = list_tasks(manifest=str(manifest))
    assert [t.video_id for t in tasks] == ["e"]
    assert [(r.video_id, r.stage, r.error) for r in rejected] == [
        ("a", "manifest", f"{manifest} row 1: label_index 'abc' is not an integer"),
        ("b", "manifest", f"{manifest} row 2: start 'x' is not a number of seconds"),
        ("c", "manifest", f"{manifest} row 3: label_index '1.5' is not an integer"),
        ("d", "manifest", f"{manifest} row 4: end 2 is not after start 5"),
    ]
    (tmp_path / "n.csv").write_text("file,label\nx.mp4,run\n")
    with pytest.raises(ManifestError, match=r"row 1 has no 'path' \(columns: file, label\)"):
        list_tasks(manifest=str(tmp_path / "n.csv"))
