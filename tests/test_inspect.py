"""``tristream.inspect``: contact sheets and summaries of real and hand-built shards.

One tiny real run (module fixture): 1 s of bikes.mp4, short side 64, 10 frames
per segment (so three segments joined by the sheet), OpenCV TV-L1, Parquet and
TFRecord. Keypoint and pose rows are checked on a shard written here with
hand-placed persons, since no pose stage exists yet.
"""

from __future__ import annotations

import csv
import json
import os

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import jpeg_round_trip
from tristream.config import RunConfig
from tristream.inspect import (
    GAP,
    HEADER_H,
    LABEL_W,
    contact_sheet,
    main_inspect,
    modality_bytes,
    pick_frames,
    summary,
    tile_origin,
    track_color,
    write_contact_sheet,
)
from tristream.pipeline.run import run
from tristream.shards import read_rows
from tristream.shards.files import write_rows
from tristream.shards.row import encode_row
from tristream.shards.schema import arrow_schema
from tristream.transforms.decode import decode_video
from tristream.transforms.flowviz import flow_to_color
from tristream.transforms.render import DEFAULT, SIDE_COLORS, render_segment

SHORT, MAX_FRAMES = 64, 10


@pytest.fixture(scope="module")
def out(tmp_path_factory, bikes) -> str:
    root = tmp_path_factory.mktemp("inspect")
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "id", "start", "end"])
        writer.writerow([bikes, "bikes", "0", "1"])
    out = str(root / "out")
    config = RunConfig.from_options(
        output=out,
        manifest=str(manifest),
        format="both",
        short_side=SHORT,
        max_frames=MAX_FRAMES,
        flow="opencv",
        workers=1,
    )
    run(config, [])
    return out


@pytest.fixture(scope="module")
def decoded(bikes) -> np.ndarray:
    return decode_video(bikes, fps=25, short_side=SHORT, start=0, end=1)


def _tile(sheet, row, col, h, w):
    y, x = tile_origin(row, col, h, w)
    return sheet[y : y + h, x : x + w]


def test_contact_sheet_of_a_real_run(out, decoded):
    n, h, w = decoded.shape[:3]
    assert n == 25
    sheet = contact_sheet(out)  # bikes is the first (only) video; 8 frames
    picked = pick_frames(n, 8)
    assert picked == [0, 3, 7, 10, 14, 17, 21, 24]
    # Two rows (RGB, flow: no pose stage ran), eight columns.
    assert sheet.dtype == np.uint8
    assert sheet.shape == (HEADER_H + 2 * (h + GAP), LABEL_W + 8 * (w + GAP), 3)
    # Each RGB tile is the decoded frame it names (JPEG q95 apart), and no other frame
    # fits it as well: the three segments are joined with their overlaps dropped.
    for c, i in enumerate(picked):
        tile = _tile(sheet, 0, c, h, w).astype(np.int16)
        errors = np.abs(decoded.astype(np.int16) - tile).mean(axis=(1, 2, 3))
        assert errors[i] < 2.0 and int(np.argmin(errors)) == i, (i, errors)
    # The flow row is the stored flow of those frames on the Middlebury wheel,
    # saturated at the 99th percentile of the shown lengths (the last frame: its incoming flow).
    rows = sorted(read_rows(out), key=lambda r: r["segment"])
    assert [(r["segment"], r["num_frames"]) for r in rows] == [(0, 10), (1, 10), (2, 7)]
    flow = np.concatenate([r["flow"] for r in rows])
    assert len(flow) == n - 1
    shown = [flow[min(i, n - 2)] for i in picked]
    radius = max(float(np.percentile(np.hypot(*np.moveaxis(np.stack(shown), -1, 0)), 99)), 0.5)
    for c, f in enumerate(shown):
        assert np.array_equal(_tile(sheet, 1, c, h, w), flow_to_color(f, radius))
    # The flow's legend sits in the label column: its right edge is red.
    y, _ = tile_origin(1, 0, h, w)
    legend = sheet[y + 34 : y + h, 6 : LABEL_W - 10]
    assert ((legend[..., 0] > 240) & (legend[..., 1] < 40) & (legend[..., 2] < 40)).any()


def test_png_decodes_and_other_choices(out, tmp_path):
    png = tmp_path / "sheet.png"
    sheet = write_contact_sheet(out, png, video_id="bikes", frames=3)
    back = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, sheet)
    # bikes.mp4 is 640x272: at short side 64 the frames are 150x64 (640*64/272 = 150.59,
    # the nearest even integer; docs/decoding.md), whichever ffmpeg decoded them.
    assert sheet.shape[1] == LABEL_W + 3 * (150 + GAP)
    # The TFRecord copy of the run draws the same sheet as the Parquet one.
    tfrecord = os.path.join(out, "shards", "train-00000-of-00001.tfrecord")
    assert np.array_equal(contact_sheet(tfrecord, frames=3), sheet)
    # Smaller tiles on request; more frames than the video has: each frame once.
    small = contact_sheet(out, frames=3, tile_height=32)
    assert small.shape == (HEADER_H + 2 * (32 + GAP), LABEL_W + 3 * (75 + GAP), 3)
    assert contact_sheet(out, frames=100).shape[1] == LABEL_W + 25 * (150 + GAP)
    with pytest.raises(ValueError, match="not in the shards"):
        contact_sheet(out, video_id="nope")


def test_summary_lists_videos_rows_frames_and_bytes_per_modality(out):
    text = summary(out)
    assert "1 of 1 videos written, 0 failed; 3 rows, 25 frames" in text
    assert "modalities: rgb, flow; formats: parquet, tfrecord" in text
    assert "shards (parquet): 1 files, 1 videos, 3 rows, 25 frames (27 stored)" in text
    assert "video bikes: 3 rows, 25 frames" in text
    assert "train-00000-of-00001.parquet" in text and "train-00000-of-00001.tfrecord" in text
    assert "failures: 0" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("bytes per modality"))
    assert "rgb " in line and "flow " in line and "pose" not in line
    # Per modality: the Parquet column chunks, which with the footer make the file.
    sizes, how = modality_bytes(out)
    path = os.path.join(out, "shards", "train-00000-of-00001.parquet")
    assert how == "parquet columns" and sum(sizes.values()) == os.path.getsize(path)
    md = pq.ParquetFile(path).metadata
    rgb = sum(
        md.row_group(g).column(c).total_compressed_size
        for g in range(md.num_row_groups)
        for c in range(md.num_columns)
        if md.row_group(g).column(c).path_in_schema.startswith("rgb.")
    )
    assert sizes["rgb"] == rgb and sizes["rgb"] > sizes["flow"] > 0
    # TFRecord alone: the stored values' lengths.
    tfrecord = os.path.join(out, "shards", "train-00000-of-00001.tfrecord")
    tsizes, how = modality_bytes(tfrecord)
    raw = pq.read_table(path, columns=["rgb"]).column("rgb").to_pylist()
    assert how == "tfrecord values" and tsizes["rgb"] == sum(len(b) for r in raw for b in r)


def test_main_inspect(out, tmp_path, capsys):
    png = tmp_path / "a" / "sheet.png"
    assert main_inspect(out, png=str(png), frames=4) == 0
    printed = capsys.readouterr().out
    assert "3 rows, 25 frames" in printed and f"contact sheet: {png}" in printed
    assert cv2.imread(str(png)).shape[:2] == (HEADER_H + 2 * (SHORT + GAP), LABEL_W + 4 * 154)
    assert main_inspect(out) == 0
    assert main_inspect(str(tmp_path / "empty")) == 2
    assert main_inspect(out, png=str(tmp_path / "x.png"), video="nope") == 2
    assert "not in the shards" in capsys.readouterr().err


# ------------------------------------------------------------------ hand-built pose shards

TEMPLATE = np.array(
    [
        (0.0, 0.0), (0.03, -0.03), (-0.03, -0.03), (0.07, -0.01), (-0.07, -0.01),
        (0.15, 0.15), (-0.15, 0.15), (0.22, 0.35), (-0.22, 0.35), (0.25, 0.52), (-0.25, 0.52),
        (0.10, 0.52), (-0.10, 0.52), (0.12, 0.75), (-0.12, 0.75), (0.12, 0.98), (-0.12, 0.98),
    ]
)  # fmt: skip
PERSONS = {7: (40.0, 8.0), 9: (100.0, 8.0)}  # track id -> nose (x, y); 50 px tall


def _person(track: int) -> np.ndarray:
    kp = np.empty((17, 3), np.float32)
    kp[:, :2] = TEMPLATE * 50 + PERSONS[track]
    kp[:, 2] = 0.9
    return kp


def _box(kp: np.ndarray) -> np.ndarray:
    (x1, y1), (x2, y2) = kp[:, :2].min(0) - 3, kp[:, :2].max(0) + 3
    return np.array([x1, y1, x2, y2, 0.95], np.float32)


@pytest.fixture(scope="module")
def pose_out(tmp_path_factory, bikes):
    """Two segments (frames 0-5 and 5-10) with rgb, flow, pose and keypoints columns.

    Track 7 is in every frame; track 9 appears at frame 7 (absent: score 0).
    Flow is 2 px to the right everywhere.
    """
    frames = decode_video(bikes, fps=25, short_side=SHORT, start=3, end=3.44)
    assert len(frames) == 11
    out = tmp_path_factory.mktemp("pose_out")
    meta = json.dumps({"schema_version": 1, "flow_encoding": "jpeg", "render": str(DEFAULT)})
    rows = []
    for seg, start in enumerate((0, 5)):
        seg_frames = frames[start : start + 6]
        t = len(seg_frames)
        tracks = [7] if seg == 0 else [7, 9]
        kps = np.zeros((len(tracks), t, 17, 3), np.float32)
        boxes = np.zeros((len(tracks), t, 5), np.float32)
        for m, track in enumerate(tracks):
            for k in range(t):
                if track == 7 or start + k >= 7:
                    kps[m, k] = _person(track)
                    boxes[m, k] = _box(kps[m, k])
        flow = np.zeros((t - 1, *frames.shape[1:3], 2), np.float32)
        flow[..., 0] = 2.0
        rows.append(
            encode_row(
                video_id="hand", source=bikes, label=None, label_index=None, segment=seg,
                start_frame=start, fps=25.0, frames=seg_frames, flow=flow,
                pose_frames=render_segment(seg_frames, kps, DEFAULT), keypoints=kps,
                boxes=boxes, track_ids=np.asarray(tracks), meta=meta,
            )
        )  # fmt: skip
    schema = arrow_schema(("rgb", "flow", "pose", "keypoints"))
    write_rows(str(out / "shards" / "train-00000-of-00001.parquet"), rows, schema)
    return str(out), frames


def test_keypoint_and_pose_rows_draw_the_persons(pose_out):
    out, frames = pose_out
    h, w = frames.shape[1:3]
    sheet = contact_sheet(out, frames=4)
    picked = pick_frames(11, 4)
    assert picked == [0, 3, 7, 10]
    assert sheet.shape == (HEADER_H + 4 * (h + GAP), LABEL_W + 4 * (w + GAP), 3)  # 4 rows
    (x7, _), (x9, _) = PERSONS[7], PERSONS[9]
    shin_y = int(8 + 50 * (0.75 + 0.98) / 2)
    for c, i in enumerate(picked):
        rgb = _tile(sheet, 0, c, h, w)
        flow = _tile(sheet, 1, c, h, w)
        pose = _tile(sheet, 2, c, h, w).astype(int)
        keys = _tile(sheet, 3, c, h, w)
        # flow: 2 px right everywhere -> the wheel's red
        assert (flow[..., 0] > 240).all() and (flow[..., 1:] < 60).all()
        # keypoints: the left shin of track 7 in the left-side colour, 1 px bars
        assert tuple(keys[shin_y, int(x7 + 6)]) == SIDE_COLORS["left"]
        assert tuple(keys[shin_y, int(x7 - 6)]) == SIDE_COLORS["right"]
        # track 9 only from frame 7 on
        assert (tuple(keys[shin_y, int(x9 + 6)]) == SIDE_COLORS["left"]) == (i >= 7)
        # its box in the track's colour, left edge at mid height
        box = _box(_person(7))
        edge = keys[int((box[1] + box[3]) / 2), int(round(box[0]))].astype(int)
        assert np.abs(edge - track_color(7)).max() < 40
        # away from the persons the keypoint tile is the RGB tile
        assert np.array_equal(keys[:, 58:80], rgb[:, 58:80])
        # pose: the stored rendered frame (JPEG), i.e. the RGB frame with the skeleton drawn
        expected = render_segment(frames[i : i + 1], _person(7)[None, None], DEFAULT)[0]
        if i >= 7:
            expected = render_segment(expected[None], _person(9)[None, None], DEFAULT)[0]
        assert np.abs(pose - jpeg_round_trip(expected[None])[0]).mean() < 0.5
        assert np.abs(pose - frames[i]).max() > 100
