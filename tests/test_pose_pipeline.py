"""Persons in the pipeline: imported skeletons, the real detector, tracks, pose frames, export."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tristream.cli import main
from tristream.config import RunConfig
from tristream.pipeline.run import run
from tristream.shards import read_rows
from tristream.transforms.skeletons import (
    load_skeletons,
    rescale_keypoints,
    save_skeletons,
    to_annotation,
)

SHORT = 64


def _manifest(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "id", "label", "start", "end"])
        w.writerows(rows)
    return str(path)


def _skeleton(t: int, h: int, w: int) -> np.ndarray:
    """Two synthetic people [2, T, 17, 3] walking across an h x w frame; person 1 scores lower."""
    base = np.array([[0.5, 0.1], [0.47, 0.08], [0.53, 0.08], [0.44, 0.1], [0.56, 0.1],
                     [0.4, 0.25], [0.6, 0.25], [0.35, 0.4], [0.65, 0.4], [0.33, 0.55],
                     [0.67, 0.55], [0.43, 0.55], [0.57, 0.55], [0.42, 0.75], [0.58, 0.75],
                     [0.41, 0.95], [0.59, 0.95]])  # fmt: skip
    kps = np.zeros((2, t, 17, 3), np.float32)
    for m, (offset, score) in enumerate([(-0.2, 0.9), (0.2, 0.6)]):
        for f in range(t):
            xy = base * 0.6 + [0.2 + offset + 0.004 * f, 0.2]
            kps[m, f, :, 0] = xy[:, 0] * w
            kps[m, f, :, 1] = xy[:, 1] * h
            kps[m, f, :, 2] = score
    kps[1, 5:8, :, 2] = 0  # person 1 absent for three frames
    return kps


@pytest.fixture(scope="module")
def skeleton_run(tmp_path_factory, carphone):
    d = tmp_path_factory.mktemp("skel")
    kps = _skeleton(25, 144, 176)  # in the source's pixels: 176x144
    save_skeletons(str(d / "skel.pkl"), [to_annotation("phone", kps, (144, 176), label=3)])
    manifest = _manifest(d / "m.csv", [[carphone, "phone", "talk", 0, 1]])
    out = d / "out"
    config = RunConfig.from_options(
        output=str(out),
        manifest=manifest,
        short_side=SHORT,
        max_frames=10,
        flow="none",
        skeletons=str(d / "skel.pkl"),
        format="both",
    )
    result = run(config)
    return out, kps, result


def test_imported_skeletons_become_keypoints_boxes_and_tracks(skeleton_run):
    out, kps, result = skeleton_run
    assert result.failures == []
    assert result.manifest["modalities"] == ["rgb", "pose", "keypoints"]
    rows = sorted(read_rows(out), key=lambda r: r["segment"])
    assert [(r["start_frame"], r["num_frames"]) for r in rows] == [(0, 10), (9, 10), (18, 7)]
    scale = np.array([78 / 176, 64 / 144], np.float32)  # stored 78x64
    for r in rows:
        assert r["keypoints"].shape == (2, r["num_frames"], 17, 3)
        assert r["track_ids"].tolist() == [0, 1]  # ordered by mean score
        src = kps[:, r["start_frame"] : r["start_frame"] + r["num_frames"]]
        seen = src[..., 2] > 0  # pixel centres at integers (DESIGN.md): (x + 0.5) * s - 0.5
        np.testing.assert_allclose(
            r["keypoints"][..., :2][seen], ((src[..., :2] + 0.5) * scale - 0.5)[seen], atol=1e-3
        )
        np.testing.assert_allclose(r["keypoints"][..., 2], src[..., 2])
        boxes = r["boxes"]
        visible = r["keypoints"][..., 2] > 0
        assert np.all(boxes[..., 4][~visible.any(-1)] == 0)
        x = r["keypoints"][..., 0]
        present = visible.any(-1)
        np.testing.assert_allclose(boxes[..., 0][present], x.min(-1)[present], atol=1e-4)
    # Person 1 is absent at frames 5..7: score 0 there.
    assert np.all(rows[0]["keypoints"][1, 5:8, :, 2] == 0)
    meta = rows[0]["meta"]
    assert meta["render"] == "bars,fine,ratio,rgb"


def test_pose_frames_are_the_skeleton_drawn_over_rgb(skeleton_run):
    out, _, _ = skeleton_run
    row = next(r for r in read_rows(out) if r["segment"] == 0)
    rgb, pose = row["rgb"].astype(int), row["pose"].astype(int)
    diff = np.abs(rgb - pose).max(-1)
    # Along the left forearm (joints 7 -> 9) of person 0 the frame is painted over ...
    k = row["keypoints"][0, 0]
    for a in np.linspace(0.2, 0.8, 4):
        x, y = (k[7, :2] * (1 - a) + k[9, :2] * a).round().astype(int)
        assert diff[0, y - 1 : y + 2, x - 1 : x + 2].max() > 40  # the line, anti-aliased
    # ... and far from both people it is the RGB frame (up to JPEG noise).
    assert np.median(diff[0, :, -6:]) < 8


def test_export_skeletons_round_trips_through_the_pyskl_format(skeleton_run, tmp_path):
    out, kps, _ = skeleton_run
    pkl = tmp_path / "export.pkl"
    assert main(["export-skeletons", str(out), str(pkl), "--split-name", "train=xsub_val"]) == 0
    ann = load_skeletons(str(pkl))["phone"]
    assert ann.label == 0  # the manifest label "talk"
    assert ann.img_shape == (64, 78)
    assert ann.original_shape == (144, 176)  # the source video's
    assert ann.splits == ("xsub_val",)
    assert ann.keypoints.shape == (2, 25, 17, 3)
    scale = np.array([78 / 176, 64 / 144], np.float32)
    seen = kps[..., 2] > 0
    np.testing.assert_allclose(
        ann.keypoints[..., :2][seen], ((kps[..., :2] + 0.5) * scale - 0.5)[seen], atol=1e-3
    )
    # Back through --skeletons to the source size: the same keypoints (one convention).
    back = rescale_keypoints(ann.keypoints, ann.img_shape, ann.original_shape)
    np.testing.assert_allclose(back[seen], kps[seen], atol=2e-3)


def test_real_detector_finds_and_tracks_people_in_real_video(tmp_path, bikes, data_dir):
    # 1.4-1.8 s of bikes.mp4: a man in a suit walks right, past parked cars.
    manifest = _manifest(tmp_path / "m.csv", [[bikes, "man", "", 1.4, 1.8]])
    detector = str(data_dir / "models" / "yolox_nano_416x416.onnx")
    out = tmp_path / "out"
    status = main(["run", "--manifest", manifest, "--output", str(out), "--short-side", "128",
                   "--max-frames", "6", "--detector", detector, "--render", "none"])  # fmt: skip
    assert status == 0
    rows = sorted(read_rows(out), key=lambda r: r["segment"])
    assert len(rows) == 2 and all("pose" not in r for r in rows)  # 10 frames: 6 + 5
    ids = [set(r["track_ids"].tolist()) for r in rows]
    assert all(ids), "somebody is found in every segment"
    # The best track of each segment is one person, kept across the segments.
    best = [int(r["track_ids"][0]) for r in rows]
    assert len(set(best)) == 1, best
    for r in rows:
        b = r["boxes"][0]
        present = b[:, 4] > 0
        assert present.mean() > 0.8
        w, h = (b[present, 2] - b[present, 0]), (b[present, 3] - b[present, 1])
        # The man fills the frame's height, not its width (302 px at short side 128).
        assert np.all(h > 0.5 * r["height"]) and np.all(w < 0.6 * r["width"])
        assert np.all(r["keypoints"][..., 2] == 0)  # no pose model: boxes only
    # Consecutive segments share a frame: the same boxes there.
    np.testing.assert_allclose(rows[0]["boxes"][0, -1], rows[1]["boxes"][0, 0], atol=1e-4)
    manifest_json = json.loads((out / "manifest.json").read_text())
    assert manifest_json["metrics"]["persons"] >= 3


def test_detector_pose_model_tracking_and_render_end_to_end(
    tmp_path, bikes, data_dir, torch_threads, stage_torch_threads
):
    import torch

    from tristream.models.common import resolve_device, usable_cpus
    from tristream.models.pose_resnet import PoseResNet

    torch.manual_seed(0)
    ckpt = tmp_path / "pose_resnet_18.pth"
    model = PoseResNet(depth=18)  # random weights ...
    with torch.no_grad():
        model.final_layer.bias.fill_(1.0)  # ... with confident (positive) heatmaps
    torch.save(model.state_dict(), ckpt)  # official layout
    manifest = _manifest(tmp_path / "m.csv", [[bikes, "man", "", 1.4, 1.8]])
    detector = str(data_dir / "models" / "yolox_nano_416x416.onnx")
    out = tmp_path / "out"
    args = ["run", "--manifest", manifest, "--output", str(out), "--short-side", "128",
            "--max-frames", "6", "--detector", detector, "--pose-model", str(ckpt),
            "--pose-decoder", "argmax", "--render", "dots,coarse,uniform,black"]  # fmt: skip
    status = main(args)
    assert status == 0
    if resolve_device("auto") == "cpu" and usable_cpus() > 1:
        # One worker thread per CPU (--workers 0): the pose stage gave each 1 torch thread.
        assert torch_threads > 1 and stage_torch_threads == [1]
    rows = sorted(read_rows(out), key=lambda r: r["segment"])
    assert [r["num_frames"] for r in rows] == [6, 5]
    for r in rows:
        kps, boxes = r["keypoints"], r["boxes"]
        m = r["num_persons"]
        assert m >= 1 and kps.shape == (m, r["num_frames"], 17, 3)
        present = boxes[..., 4] > 0
        assert np.all(kps[present][..., 2] > 0) and np.all(kps[~present][..., 2] == 0)
        # Random weights put joints anywhere, but always inside the person's crop:
        # the box enlarged 1.25 times (at the model's 4:3 aspect) around its centre.
        b = boxes[present]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        half = 1.25 * np.maximum(b[:, 2] - b[:, 0], (b[:, 3] - b[:, 1]) * 0.75) / 2 + 2
        xy = kps[present][..., :2]
        assert np.all(np.abs(xy[..., 0] - cx[:, None]) <= half[:, None])
        assert np.all(np.abs(xy[..., 1] - cy[:, None]) <= half[:, None] * 4 / 3)
        # Black background: the pose frames are dark except around joints.
        assert r["pose"].shape == r["rgb"].shape
        assert np.median(r["pose"]) < 10 and r["pose"].max() > 100
    assert rows[0]["meta"]["render"] == "dots,coarse,uniform,black"
    np.testing.assert_allclose(rows[0]["keypoints"][0, -1], rows[1]["keypoints"][0, 0], atol=1e-3)
