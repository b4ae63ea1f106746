"""Real pose models on real people, without ground-truth labels (issue 12).

No annotated keypoints exist for the sample videos, so these tests check what must hold
whatever the truth is, on real frames of ``bikes.mp4`` with the real models:

* the three BlazePose sizes agree with each other (OKS of lite and full against heavy, the
  most accurate one, on the same YOLOX-nano boxes);
* confident poses of upright people are anatomically ordered (head above shoulders above
  hips above ankles) and lie around their box;
* the flow tracker with real keypoints and OpenCV TV-L1 flow keeps one id per person,
  across a segment boundary, without jumping between people;
* a real ``tristream run --persons`` writes pose frames drawn where its ``keypoints``
  column says, and ``tristream export-skeletons`` exports those same keypoints.

Figures printed with ``pytest -s`` are the measured values the thresholds were set from.
A known failure is kept as a strict xfail, so that a fix shows up: BlazePose on a
head-and-shoulders close-up (carphone).
"""

from __future__ import annotations

import csv
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tristream.models.detector import load_detector
from tristream.models.pose_onnx import OnnxPoseModel
from tristream.shards import read_rows
from tristream.shards.coco import OKS_SIGMAS
from tristream.transforms.decode import decode_video
from tristream.transforms.flow import compute_flow
from tristream.transforms.pose import PoseEstimator
from tristream.transforms.tracking import FlowTracker

REPO = Path(__file__).resolve().parents[1]
SIZES = ("lite", "full", "heavy")
# bikes.mp4 at 25 fps: the man in a suit walking right (35-47, a second man beside him at
# 35), a person by the parked cars (77, 80), the cyclist coming closer (104-134). Frames
# 188-209 (only a pedestrian's legs in view) are left out: no head or shoulders to check.
FRAMES = (35, 44, 47, 77, 80, 104, 107, 110, 116, 122, 128, 134)
CONFIDENT = 0.5  # a joint "scores confidently" above this (each of the two poses compared)
# COCO-17 joint groups, top to bottom of an upright person.
HEAD, SHOULDERS, HIPS, ANKLES = (0, 1, 2, 3, 4), (5, 6), (11, 12), (15, 16)


def coco_oks(a: np.ndarray, b: np.ndarray, area: float, mask: np.ndarray) -> float:
    """COCO's object keypoint similarity of two ``[17, 2+]`` poses over the joints in ``mask``.

    OKS = sum_i exp(-d_i^2 / (2 s^2 k_i^2)) / #joints, with d_i the distance of joint i,
    s^2 the object's area and k_i = 2 sigma_i (cocoeval.computeOks).
    """
    d2 = np.sum((a[:, :2].astype(np.float64) - b[:, :2]) ** 2, axis=-1)
    k2 = (2.0 * OKS_SIGMAS) ** 2
    return float(np.mean(np.exp(-d2 / (2.0 * area * k2))[mask]))


@pytest.fixture(scope="module")
def models_dir(data_dir: Path) -> Path:
    return data_dir / "models"


@pytest.fixture(scope="module")
def detector(models_dir: Path):
    return load_detector(models_dir / "yolox_nano_416x416.onnx", device="cpu")


@pytest.fixture(scope="module")
def real_poses(bikes: str, detector, models_dir: Path) -> dict:
    """FRAMES at short side 256, their YOLOX-nano boxes, and each BlazePose size's poses.

    Returns ``{"boxes": [P, 5], "frame": [P], size: [P, 17, 3] for each size}`` over all
    P persons found.
    """
    video = decode_video(bikes, fps=25, short_side=256)
    frames = np.ascontiguousarray(video[list(FRAMES)])
    boxes = detector(frames)
    out = {
        "boxes": np.concatenate(boxes),
        "frame": np.concatenate([[f] * len(b) for f, b in zip(FRAMES, boxes)]).astype(int),
    }
    for size in SIZES:
        model = OnnxPoseModel(models_dir / f"blazepose_{size}.onnx", device="cpu")
        assert model.family == "blazepose"
        out[size] = np.concatenate(PoseEstimator(model)(frames, boxes))
    return out


def test_blazepose_sizes_agree_with_heavy_on_real_people(real_poses):
    boxes = real_poses["boxes"]
    assert len(boxes) >= 12, "YOLOX-nano finds a person in every chosen frame"
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    heavy = real_poses["heavy"]
    means = {}
    for size in ("lite", "full"):
        pose = real_poses[size]
        values = []
        for p in range(len(boxes)):
            both = (pose[p, :, 2] > CONFIDENT) & (heavy[p, :, 2] > CONFIDENT)
            if both.sum() >= 3:  # an OKS over fewer joints says little
                values.append(coco_oks(pose[p], heavy[p], areas[p], both))
        means[size] = float(np.mean(values))
        print(f"\n{size} vs heavy: mean OKS {means[size]:.3f} over {len(values)} of "
              f"{len(boxes)} persons (min {min(values):.3f}); per person "
              f"{np.round(values, 3).tolist()}")  # fmt: skip
        # Measured (2026-11-29, 16 persons): lite 0.864 over 12, full 0.949 over 10.
        assert len(values) >= 8
        # 0.75 is COCO's strict OKS match level (AP75): every size must match heavy at it,
        # on average. lite's 0.86 leaves a margin of 0.11 for other onnxruntime builds.
        assert means[size] >= 0.75, means
    # The larger model agrees better with heavy (measured 0.949 vs 0.864).
    assert means["full"] >= means["lite"], means


@pytest.mark.parametrize("size", SIZES)
def test_confident_poses_are_upright_and_inside_their_boxes(real_poses, size):
    boxes, poses = real_poses["boxes"], real_poses[size]
    confident = poses[..., 2].mean(-1) > 0.6
    ordered, checked, inside, joints = 0, 0, 0, 0
    for box, pose in zip(boxes[confident], poses[confident]):
        ok = pose[:, 2] > CONFIDENT

        def level(group: tuple[int, ...], ok=ok, pose=pose) -> float:
            js = [j for j in group if ok[j]]
            return float(pose[js, 1].mean()) if js else np.nan

        ys = [level(g) for g in (HEAD, SHOULDERS, HIPS, ANKLES)]
        ys = [y for y in ys if not np.isnan(y)]  # the groups seen, top to bottom
        if len(ys) >= 2:
            checked += 1
            ordered += bool(np.all(np.diff(ys) > 0))  # y grows downwards
        # the box enlarged 1.25x about its centre (BlazePose's crop: 1.25x, squared)
        c, half = (box[:2] + box[2:4]) / 2, 1.25 * (box[2:4] - box[:2]) / 2
        xy = pose[ok, :2]
        inside += int(np.all(np.abs(xy - c) <= half, axis=1).sum())
        joints += len(xy)
    print(f"\n{size}: {confident.sum()} of {len(poses)} persons with mean score > 0.6; "
          f"head > shoulders > hips > ankles in {ordered} of {checked}; "
          f"{inside} of {joints} confident joints inside the 1.25x box")  # fmt: skip
    # Measured: 9 to 11 confident persons per size, all 100 % ordered and inside. Upright
    # walking and cycling people: a y-flip or a joint-order mix-up would break most of
    # them, so 90 % allows one odd person in ten without hiding a systematic fault.
    assert checked >= 6
    assert ordered >= 0.9 * checked
    assert inside >= 0.95 * joints


@pytest.mark.xfail(
    strict=True,
    reason="known (2026-11-29): on a head-and-shoulders close-up the 1.25x crop of the "
    "visible person is read by BlazePose (trained on whole-body crops) as a small whole "
    "person: lite puts the 'shoulders' on the cheeks and the hips on the chin, confidently",
)
def test_close_up_shoulders_are_below_the_face(carphone, detector, models_dir):
    # carphone_pristine.mp4: one man, head and shoulders filling the frame (313x256 at short
    # side 256); his shoulders are near the bottom of the frame, ~0.4 box heights below his
    # nose.
    video = decode_video(carphone, fps=25, short_side=256)
    frames = np.ascontiguousarray(video[[0, 30, 60, 90]])
    boxes = detector(frames)
    estimator = PoseEstimator(OnnxPoseModel(models_dir / "blazepose_lite.onnx", device="cpu"))
    drops = []
    for bx, poses in zip(boxes, estimator(frames, boxes)):
        b, pose = bx[0], poses[0]  # the best box: the man
        shoulders = [j for j in SHOULDERS if pose[j, 2] > CONFIDENT]
        if pose[0, 2] > CONFIDENT and shoulders:
            drops.append(float((pose[shoulders, 1].mean() - pose[0, 1]) / (b[3] - b[1])))
    print(f"\ncarphone, lite: shoulder y - nose y, in box heights: {np.round(drops, 3).tolist()}")
    assert len(drops) >= 3
    assert np.mean(np.array(drops) > 0.25) >= 0.75, drops


# ------------------------------------------------------------------------------ tracking

# Cheaper TV-L1 than OpenCV's defaults (1 warp, fewer iterations: ~0.3 s a pair at 302x128
# here instead of ~1.4 s); joints still move with the people, which is all tracking needs.
FAST_FLOW = {"warps": 1, "outer_iterations": 5, "inner_iterations": 15}


@pytest.fixture(scope="module")
def bikes128(bikes: str) -> np.ndarray:
    """bikes.mp4 at 25 fps, short side 128 (302x128)."""
    return decode_video(bikes, fps=25, short_side=128)


@pytest.fixture(scope="module")
def lite_estimator(models_dir: Path) -> PoseEstimator:
    return PoseEstimator(OnnxPoseModel(models_dir / "blazepose_lite.onnx", device="cpu"))


def track_in_two_segments(
    frames: np.ndarray, detector, estimator, split: int
) -> list[dict[int, np.ndarray]]:
    """Real flow, then the real tracker over frames[:split+1] and frames[split:] (one shared
    frame, as the pipeline's segments); returns per frame {track id: box [5]}."""
    flow = compute_flow(frames, backend="opencv", **FAST_FLOW)
    tracker = FlowTracker(detector, estimator)
    first = tracker.process(frames[: split + 1], flow[:split])
    second = tracker.process(frames[split:], flow[split:], start_frame=split)
    rows: list[dict[int, np.ndarray]] = [dict() for _ in frames]
    for seg, lo in ((first, 0), (second, split)):
        for m, tid in enumerate(seg.track_ids):
            for t in range(seg.num_frames):
                if seg.boxes[m, t, 4] > 0:
                    box = seg.boxes[m, t]
                    if t == 0 and lo > 0:  # the shared frame: the same box in both segments
                        np.testing.assert_array_equal(rows[lo][int(tid)], box)
                    rows[lo + t][int(tid)] = box
    return rows


def centre(box: np.ndarray) -> np.ndarray:
    return (box[:2] + box[2:4]) / 2


def area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def max_jumps(rows: list[dict[int, np.ndarray]]) -> dict[int, float]:
    """Per track, the largest box-centre move between consecutive frames it is seen in."""
    out: dict[int, float] = {}
    for a, b in zip(rows[:-1], rows[1:]):
        for tid in a.keys() & b.keys():
            jump = float(np.linalg.norm(centre(b[tid]) - centre(a[tid])))
            out[tid] = max(out.get(tid, 0.0), jump)
    return out


def test_flow_tracker_keeps_the_cyclist_id_across_a_segment_boundary(
    bikes128, detector, lite_estimator
):
    # Frames 104-127: the cyclist rides towards the camera (BlazePose lite scores ~0.95);
    # segments 104-116 and 116-127.
    rows = track_in_two_segments(np.ascontiguousarray(bikes128[104:128]), detector,
                                 lite_estimator, split=12)  # fmt: skip
    main = [max(r, key=lambda i: area(r[i])) if r else None for r in rows]
    jumps = max_jumps(rows)
    print(f"\ncyclist: id of the largest box per frame {main}; largest centre jump per "
          f"track {({k: round(v, 1) for k, v in jumps.items()})} px")  # fmt: skip
    assert None not in main and len(set(main)) == 1, main  # one id, both segments
    # Measured: the cyclist's box centre moves at most 13.0 px a frame (short side 128, his
    # box growing as he comes closer), the others' at most 10.3; the nearest other person's
    # box centre is ~25 px from his, so a switch of ids between them would jump further.
    assert all(j < 20 for j in jumps.values()), jumps


@pytest.mark.slow  # ~20 s here: outside the file's 90 s budget, run with -m slow
def test_flow_tracker_keeps_the_walking_man_id(bikes128, detector, lite_estimator):
    # Frames 28-43: the man in a suit walks right across the frame, passing a second man
    # (frames 33-36); segments 28-38 and 38-43. BlazePose lite scores his close-up upper
    # body ~0.01 at frames 38-40: the tracker then matches him by his box (a pose with
    # fewer than two joints seen says nothing about who it is). From frame 44 he leaves
    # the frame and another person's box is the largest, so the window ends at 43.
    rows = track_in_two_segments(np.ascontiguousarray(bikes128[28:44]), detector,
                                 lite_estimator, split=10)  # fmt: skip
    main = [max(r, key=lambda i: area(r[i])) if r else None for r in rows]
    print(f"\nwalking man: id of the largest box per frame {main}")
    seen = [m for m in main if m is not None]
    assert len(seen) >= 13
    assert len(set(seen)) == 1, main


# ------------------------------------------------------------------------------ CLI run


def _distance_to_boxes(shape: tuple[int, int], boxes: list[np.ndarray]) -> np.ndarray:
    """Per pixel, the (Chebyshev) distance in pixels to the nearest of ``boxes`` [4]."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.full(shape, np.inf)
    for x1, y1, x2, y2 in boxes:
        dx = np.maximum(np.maximum(x1 - xs, xs - x2), 0)
        dy = np.maximum(np.maximum(y1 - ys, ys - y2), 0)
        out = np.minimum(out, np.maximum(dx, dy))
    return out


def test_cli_persons_pose_frames_and_export_carry_the_keypoints(tmp_path, bikes):
    # 4.4-5.4 s of bikes.mp4 (frames 110-134): the cyclist, in two rows of 13 frames.
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["path", "id", "label", "start", "end"],
                                 [bikes, "cyclist", "ride", 4.4, 5.4]])  # fmt: skip
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "tristream.cli"]
    done = subprocess.run(
        [*cli, "run", "--manifest", str(manifest), "--output", str(out), "--short-side", "128",
         "--max-frames", "13", "--persons", "--flow", "none", "--workers", "1"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = sorted(read_rows(out), key=lambda r: r["segment"])
    assert [(r["start_frame"], r["num_frames"]) for r in rows] == [(0, 13), (12, 13)]
    assert rows[0]["meta"]["render"] == "bars,fine,ratio,rgb"  # the documented default
    best = [float(r["keypoints"][0, ..., 2].mean()) for r in rows]
    assert min(best) > 0.8, best  # the cyclist, confidently, in both rows

    # The pose frames are the keypoints drawn over the RGB frames (bars,fine,ratio,rgb:
    # joints scoring >= 0.3 as discs, limbs between them): the frame changes at confident
    # joints and nowhere far from every drawn joint (JPEG aside: each 16x16 block is coded
    # on its own, so 24 px from the joints the two frames are the same picture).
    at_joints, joints, far_diffs = 0, 0, []
    for r in rows:
        rgb, pose, kps = r["rgb"].astype(int), r["pose"].astype(int), r["keypoints"]
        assert pose.shape == rgb.shape
        diff = np.abs(rgb - pose).max(-1)
        h, w = diff.shape[1:]
        for t in range(r["num_frames"]):
            drawn = kps[:, t][kps[:, t, :, 2] >= 0.3]  # [J, 3] over all persons
            for x, y, s in drawn:
                xi, yi = int(round(x)), int(round(y))
                if s > 0.5 and 1 <= xi < w - 1 and 1 <= yi < h - 1:
                    joints += 1
                    at_joints += diff[t, yi - 1 : yi + 2, xi - 1 : xi + 2].max() > 40
            boxes = [np.r_[drawn[:, :2].min(0), drawn[:, :2].max(0)]] if len(drawn) else []
            far = _distance_to_boxes((h, w), boxes) > 24
            far_diffs.append(diff[t][far])
    far_all = np.concatenate(far_diffs)
    print(f"\npose frames: {at_joints} of {joints} confident joints drawn (change > 40); "
          f"far from the joints: {far_all.size} px, diff median {np.median(far_all)}, "
          f"99th pct {np.percentile(far_all, 99)}, max {far_all.max()}")  # fmt: skip
    assert joints >= 200
    assert at_joints >= 0.95 * joints
    assert far_all.size > 100_000
    assert np.median(far_all) <= 2 and np.percentile(far_all, 99) <= 12

    # The pyskl export (the {split, annotations} layout) holds the same keypoints, split
    # into keypoint [M, T, 17, 2] and keypoint_score [M, T, 17], frames of the whole video
    # (the rows share frame 12), persons by mean score over the video, best first.
    pkl = tmp_path / "skeletons.pkl"
    done = subprocess.run([*cli, "export-skeletons", str(out), str(pkl)],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with open(pkl, "rb") as f:
        data = pickle.load(f)  # noqa: S301 - written by this test
    assert data["split"] == {"train": ["cyclist"]}
    (ann,) = data["annotations"]
    scores: dict[int, np.ndarray] = {}
    for r in rows:
        for k, tid in enumerate(r["track_ids"]):
            per_frame = scores.setdefault(int(tid), np.zeros((25, 17), np.float32))
            per_frame[r["start_frame"] : r["start_frame"] + r["num_frames"]] = r["keypoints"][
                k, ..., 2
            ]
    ids = sorted(scores, key=lambda i: (-scores[i].mean(), i))
    assert ann["frame_dir"] == "cyclist" and ann["label"] == 0
    assert tuple(ann["img_shape"]) == (128, 302) and ann["total_frames"] == 25
    assert ann["keypoint"].shape == (len(ids), 25, 17, 2)
    assert ann["keypoint_score"].shape == (len(ids), 25, 17)
    covered = np.zeros((len(ids), 25), bool)
    for r in rows:
        s, n = r["start_frame"], r["num_frames"]
        for k, tid in enumerate(r["track_ids"]):
            m = ids.index(int(tid))
            np.testing.assert_array_equal(ann["keypoint"][m, s : s + n], r["keypoints"][k, ..., :2])
            np.testing.assert_array_equal(
                ann["keypoint_score"][m, s : s + n], r["keypoints"][k, ..., 2]
            )
            covered[m, s : s + n] = True
    assert np.all(ann["keypoint"][~covered] == 0) and np.all(ann["keypoint_score"][~covered] == 0)
