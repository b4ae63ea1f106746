"""Flow-based pose tracking on synthetic scenes with exact flow, and with real TV-L1 flow.

The synthetic scenes are skeletons moving on straight lines. Frames are black
except pixel (0, 0), which holds the frame index, so the stand-in detector and
pose estimator (plain callables with the real call contracts) know which frame
they see. Their noise is a fixed function of (frame, person), so results do not
depend on how the tracker batches its calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from skimage import data

from tristream.models.common import box_iou, nms
from tristream.shards.coco import OKS_SIGMAS
from tristream.transforms.flow import compute_flow
from tristream.transforms.tracking import (
    FlowTracker,
    PersonTracks,
    joints_box,
    median_flow_shift,
    oks,
    propagate_points,
)
from tristream.transforms.tracking_ahead import PoseMemo
from tristream.transforms.tracking_steps import Track, predict

# A standing COCO-17 skeleton around its centre, (dx, dy) pixels.
TEMPLATE = np.array(
    [[0, -26], [3, -28], [-3, -28], [6, -26], [-6, -26], [10, -18], [-10, -18],
     [13, -6], [-13, -6], [14, 5], [-14, 5], [7, 4], [-7, 4], [8, 16], [-8, 16],
     [8, 28], [-8, 28]],
    np.float64,
)  # fmt: skip


@dataclass
class Person:
    start: tuple[float, float]  # centre at frame 0
    velocity: tuple[float, float]  # pixels per frame
    frames: range | None = None  # frames where the person is in view (None: all)
    score: float = 0.85  # mean joint score the estimator reports

    def centre(self, t: int) -> np.ndarray:
        return np.add(self.start, np.multiply(self.velocity, t))

    def joints(self, t: int) -> np.ndarray:
        return TEMPLATE + self.centre(t)

    def box(self, t: int) -> np.ndarray:
        j = self.joints(t)
        lo, hi = j.min(0), j.max(0)
        c, half = (lo + hi) / 2, (hi - lo) / 2 * 1.1
        return np.concatenate([c - half, c + half])

    def visible(self, t: int) -> bool:
        return self.frames is None or t in self.frames


class Scene:
    """Persons, frames, exact dense flow and noisy stand-in detector / estimator."""

    def __init__(self, persons, num_frames, height=112, width=192, box_noise=1.0,
                 joint_noise=0.5, score_noise=0.05, seed=0, shuffle=False):  # fmt: skip
        self.persons = persons
        self.num_frames, self.height, self.width = num_frames, height, width
        self.box_noise, self.joint_noise, self.seed = box_noise, joint_noise, seed
        self.score_noise, self.shuffle = score_noise, shuffle  # shuffle: detections' order
        self.missed: set[tuple[int, int]] = set()  # (frame, person) the detector misses
        self.detected_frames: list[int] = []
        self._flow: np.ndarray | None = None

    def frames(self) -> np.ndarray:
        f = np.zeros((self.num_frames, self.height, self.width, 3), np.uint8)
        f[:, 0, 0, 0] = np.arange(self.num_frames)
        return f

    def flow(self, radius: float = 16.0) -> np.ndarray:
        """Each pixel moves with the person owning the nearest joint within ``radius``, else 0."""
        if self._flow is None:
            self._flow = self._dense_flow(radius)
        return self._flow

    def _dense_flow(self, radius: float) -> np.ndarray:
        ys, xs = np.mgrid[0 : self.height, 0 : self.width]
        grid = np.stack([xs, ys], -1).astype(np.float64)
        out = np.zeros((self.num_frames - 1, self.height, self.width, 2), np.float32)
        for t in range(self.num_frames - 1):
            best = np.full((self.height, self.width), radius)
            for p in self.persons:
                d = np.linalg.norm(grid[:, :, None] - p.joints(t)[None, None], axis=-1).min(-1)
                closer = d < best
                out[t][closer] = p.velocity
                best = np.minimum(best, d)
        return out

    def _rng(self, t: int, i: int, kind: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, t, i, kind])

    def detections_at(self, t: int) -> np.ndarray:
        rows = []
        for i, p in enumerate(self.persons):
            if p.visible(t) and (t, i) not in self.missed:
                rng = self._rng(t, i, 0)
                box = p.box(t) + rng.normal(0, self.box_noise, 4)
                rows.append(np.append(box, rng.uniform(0.7, 0.95)))
        if self.shuffle:
            rows = [rows[k] for k in self._rng(t, 999, 2).permutation(len(rows))]
        return np.array(rows, np.float32).reshape(-1, 5)

    def pose_for_box(self, t: int, box: np.ndarray) -> np.ndarray:
        """The pose of the visible person whose box best overlaps ``box``; junk if none does."""
        vis = [i for i, p in enumerate(self.persons) if p.visible(t)]
        if vis:
            ious = box_iou(box[None, :4], np.array([self.persons[i].box(t) for i in vis]))[0]
            if ious.max() > 0.3:
                i = vis[int(np.argmax(ious))]
                p = self.persons[i]
                rng = self._rng(t, i, 1)
                xy = p.joints(t) + rng.normal(0, self.joint_noise, (17, 2))
                noise = rng.uniform(-self.score_noise, self.score_noise, 17)
                score = np.clip(p.score + noise, 0.01, 1)
                return np.concatenate([xy, score[:, None]], 1).astype(np.float32)
        centre = (box[:2] + box[2:4]) / 2
        return np.concatenate([TEMPLATE + centre, np.full((17, 1), 0.05)], 1).astype(np.float32)

    def poses_at(self, t: int, boxes: np.ndarray) -> np.ndarray:
        return np.array([self.pose_for_box(t, b) for b in boxes], np.float32).reshape(-1, 17, 3)

    # the callables, with the detector / pose estimator contracts
    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
        ts = [int(f[0, 0, 0]) for f in frames]
        self.detected_frames += ts
        return [self.detections_at(t) for t in ts]

    def estimate(self, frames: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
        assert frames.dtype == np.uint8 and len(frames) == len(boxes)
        return [self.poses_at(int(f[0, 0, 0]), b) for f, b in zip(frames, boxes)]

    def identities(self, tracks: PersonTracks) -> np.ndarray:
        """[M, T]: index of the person each track's pose is nearest to (-1 where absent)."""
        out = np.full(tracks.keypoints.shape[:2], -1)
        for m in range(tracks.num_persons):
            for t in range(tracks.num_frames):
                if tracks.keypoints[m, t, :, 2].max() > 0 or tracks.boxes[m, t, 4] > 0:
                    if tracks.keypoints[m, t, :, 2].max() > 0:
                        d = [np.abs(tracks.keypoints[m, t, :, :2] - p.joints(t)).mean()
                             for p in self.persons]  # fmt: skip
                    else:
                        d = [np.abs(tracks.boxes[m, t, :4] - p.box(t)).mean()
                             for p in self.persons]  # fmt: skip
                    out[m, t] = int(np.argmin(d))
        return out


def crossing_scene(**kw) -> Scene:
    """A walks right, B walks left 6 px lower, 8 px per frame: they cross at frame 9-10.

    Near the crossing B's pose is closer to where A was than A's own new pose is,
    so only flow propagation tells them apart.
    """
    a = Person((20, 48), (8, 0))
    b = Person((172, 54), (-8, 0))
    return Scene([a, b], 20, **kw)


def assert_follows_each_person(scene: Scene, tracks: PersonTracks) -> None:
    ident = scene.identities(tracks)
    assert tracks.num_persons == len(scene.persons)
    assert (ident >= 0).all(), "every track is present at every frame"
    for m in range(tracks.num_persons):
        assert len(set(ident[m])) == 1, f"track {tracks.track_ids[m]} switched: {ident[m]}"
    assert sorted(ident[:, 0]) == list(range(len(scene.persons)))


# --------------------------------------------------------------------------- basics


def test_oks_iou_and_nms_on_hand_computed_values():
    pose = np.concatenate([TEMPLATE + 50, np.ones((17, 1))], 1)
    assert oks(pose, pose, 1000.0) == pytest.approx(1.0)
    moved = pose.copy()
    moved[:, 0] += 3.0
    expected = np.mean(np.exp(-9.0 / (2 * 1000.0 * (2 * OKS_SIGMAS) ** 2)))
    assert oks(pose, moved, 1000.0) == pytest.approx(expected, rel=1e-6)
    hidden = moved.copy()
    hidden[:5, 2] = 0  # joints with score 0 do not count
    assert oks(pose, hidden, 1000.0) == pytest.approx(
        np.mean(np.exp(-9.0 / (2 * 1000.0 * (2 * OKS_SIGMAS[5:]) ** 2))), rel=1e-6
    )
    assert oks(pose, moved, 0.0) == 0.0
    assert len(OKS_SIGMAS) == 17 and OKS_SIGMAS[0] == pytest.approx(0.026)

    a = np.array([[0, 0, 10, 10], [0, 0, 4, 4]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0, 1], [0, 0, 16 / 100]])
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)

    boxes = np.array([[0, 0, 10, 10, 0.5], [1, 0, 11, 10, 0.9], [20, 20, 30, 30, 0.7]])
    assert nms(boxes, boxes[:, 4], 0.5).tolist() == [1, 2]
    assert nms(boxes, boxes[:, 4], 0.9).tolist() == [1, 2, 0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_propagation_helpers_follow_a_flow_field():
    flow = np.zeros((20, 30, 2), np.float32)
    flow[..., 0] = np.arange(30)[None, :] * 0.1  # dx grows with x: bilinear between columns
    flow[..., 1] = -2.0
    pts = np.array([[10.5, 5.0], [0.0, 0.0], [100.0, 3.0]])
    np.testing.assert_allclose(
        propagate_points(pts, flow), [[11.55, 3.0], [0.0, -2.0], [102.9, 1.0]], atol=1e-5
    )
    box = np.array([4, 4, 8, 10, 0.9])
    np.testing.assert_allclose(median_flow_shift(box, flow), [0.55, -2.0], atol=1e-6)
    joints = np.concatenate([TEMPLATE + 50, np.ones((17, 1))], 1)
    np.testing.assert_allclose(joints_box(joints, 0.15), [50 - 16.1, 50 - 32.2, 66.1, 82.2])
    joints[1:, 2] = 0
    assert joints_box(joints) is None


def test_oks_is_the_coco_formula_on_a_two_joint_example():
    # COCO: OKS = sum_i exp(-d_i² / (2 s² k_i²)) / (number of joints counted), k_i = 2 sigma_i,
    # s² = area; sigmas of the COCO keypoint paper: nose 0.026, left shoulder 0.079.
    a, b = np.zeros((17, 3)), np.zeros((17, 3))
    a[0], b[0] = (10, 10, 0.9), (13, 14, 0.8)  # nose: d² = 9 + 16 = 25
    a[5], b[5] = (20, 30, 0.9), (21, 30, 0.7)  # left shoulder: d² = 1
    a[9] = (50, 50, 0.9)  # left wrist scored in a only: not counted
    # nose: 25 / (2 * 10000 * 0.052²) = 25 / 54.08 = 0.462278 -> exp(-.) = 0.629847
    # shoulder: 1 / (2 * 10000 * 0.158²) = 1 / 499.28 = 0.002003 -> exp(-.) = 0.997999
    assert oks(a, b, 10000.0) == pytest.approx((0.629847 + 0.997999) / 2, abs=1e-6)
    assert oks(a, b, 10000.0) == pytest.approx(oks(b, a, 10000.0))


def test_median_flow_shift_on_boxes_outside_partly_outside_and_inside_the_frame():
    h, w = 40, 50
    flow = np.zeros((h, w, 2), np.float32)
    flow[...] = (1, 2)
    # a box wholly left of (or above) the frame moves with the flow at the nearest pixel
    np.testing.assert_array_equal(median_flow_shift(np.array([-20, 5, -10, 15, 0.9]), flow), [1, 2])
    np.testing.assert_array_equal(median_flow_shift(np.array([5, -30, 15, -10.0]), flow), [1, 2])
    # dx = 1 + 0.5 x, dy = 2 + 0.25 y: linear, so bilinear sampling is exact
    ys, xs = np.mgrid[0:h, 0:w]
    flow = np.stack([1 + 0.5 * xs, 2 + 0.25 * ys], -1).astype(np.float32)
    # left of the frame, centre (-15, 10): nearest pixel (0, 10) -> (1, 2 + 2.5)
    np.testing.assert_allclose(median_flow_shift(np.array([-20, 5, -10, 15.0]), flow), [1, 4.5])
    # above the frame, centre (6, -20): nearest pixel (6, 0) -> (1 + 3, 2)
    np.testing.assert_allclose(median_flow_shift(np.array([4, -30, 8, -10.0]), flow), [4, 2])
    # partly above: columns 2-5, rows 0-5 -> medians 1 + 0.5 * 3.5 and 2 + 0.25 * 2.5
    np.testing.assert_allclose(median_flow_shift(np.array([2, -4, 6, 6.0]), flow), [2.75, 2.625])
    # inside: columns 2-5, rows 4-7 -> medians 1 + 0.5 * 3.5 and 2 + 0.25 * 5.5
    np.testing.assert_allclose(median_flow_shift(np.array([2, 4, 6, 8.0]), flow), [2.75, 3.375])


def test_predict_moves_tracks_by_the_flow_without_changing_its_input():
    pose = np.concatenate([TEMPLATE + 50, np.full((17, 1), 0.9)], 1)
    track = Track.of(7, pose, np.array([30.0, 10.0, 70.0, 90.0, 0.8]))
    flow = np.zeros((120, 120, 2), np.float32)
    flow[...] = (2, -1)
    (moved,) = predict((track,), flow, pose_mode=True, max_age=3)
    assert (moved.id, moved.age) == (7, 1)
    np.testing.assert_array_equal(moved.joints[:, :2], TEMPLATE + (52, 49))
    np.testing.assert_array_equal(moved.box, [32, 9, 72, 89, 0.8])
    np.testing.assert_array_equal(track.joints, pose)  # the input track is unchanged...
    assert not track.joints.flags.writeable and not moved.box.flags.writeable  # ...and can't be
    assert predict((Track.of(1, pose, track.box, age=3),), flow, True, max_age=3) == ()


def test_pose_memo_estimates_each_box_of_a_frame_once():
    scene = crossing_scene()
    calls = []

    def estimate(frames, boxes):
        calls.append([b.copy() for b in boxes])
        return scene.estimate(frames, boxes)

    memo = PoseMemo(estimate, scene.frames())
    boxes5, boxes6 = (scene.detections_at(t).astype(np.float64) for t in (5, 6))
    memo.prefetch({5: list(boxes5), 6: list(boxes6[:1])})  # one call for both frames
    got = memo(6, boxes6)  # one box known, one new: a call for the new one only
    assert len(calls) == 2 and memo.calls == 2
    np.testing.assert_array_equal(calls[1][0], boxes6[1:].astype(np.float32))
    for box, pose in zip(boxes6, got):  # the oracle: the estimator's pose for that box
        np.testing.assert_array_equal(pose, scene.pose_for_box(6, box.astype(np.float32)))
    memo(5, boxes5[::-1])
    memo(6, boxes6)
    assert len(calls) == 2  # all remembered, in any order


# --------------------------------------------------------------------------- pose mode


def _indexed_frames(num_frames: int, h: int, w: int) -> np.ndarray:
    """Black frames whose pixel (0, 0) holds the frame index (as Scene.frames)."""
    f = np.zeros((num_frames, h, w, 3), np.uint8)
    f[:, 0, 0, 0] = np.arange(num_frames)
    return f


def _uniform_flow(num_frames: int, h: int, w: int, dx: float, dy: float) -> np.ndarray:
    flow = np.zeros((num_frames - 1, h, w, 2), np.float32)
    flow[...] = (dx, dy)
    return flow


def test_a_person_moving_with_a_uniform_flow_keeps_one_id_with_hand_known_rows():
    num_frames, h, w = 12, 112, 192

    def centre(t):
        return np.array([40.0 + 3 * t, 56.0])  # 3 px right per frame, as the flow says

    def pose(t):
        return np.concatenate([TEMPLATE + centre(t), np.full((17, 1), 0.9)], 1)

    def det(t):
        return np.array([*(centre(t) - (15, 30)), *(centre(t) + (15, 30)), 0.8])

    flow = _uniform_flow(num_frames, h, w, 3, 0)
    dets = [det(t)[None] for t in range(num_frames)]
    tracks = FlowTracker().process(None, flow, dets, [pose(t)[None] for t in range(num_frames)])
    assert tracks.track_ids.tolist() == [0]
    truth = np.stack([pose(t) for t in range(num_frames)])
    np.testing.assert_array_equal(tracks.keypoints[0], truth.astype(np.float32))
    np.testing.assert_array_equal(tracks.boxes[0], np.concatenate(dets).astype(np.float32))

    # detector on even frames only: at odd frames the box is the flow box, the joints'
    # box (28 x 56 px) enlarged by 15 %, around the person, with the last detection's score
    def detect(frames):
        return [det(int(f[0, 0, 0]))[None] for f in frames]

    def estimate(frames, boxes):
        return [np.repeat(pose(int(f[0, 0, 0]))[None], len(b), 0) for f, b in zip(frames, boxes)]

    tracks = FlowTracker(detect, estimate, detect_every=2).process(
        _indexed_frames(num_frames, h, w), flow
    )
    assert tracks.track_ids.tolist() == [0]
    half = np.array([14, 28]) * 1.15
    for t in range(num_frames):
        box = det(t) if t % 2 == 0 else [*(centre(t) - half), *(centre(t) + half), 0.8]
        np.testing.assert_allclose(tracks.boxes[0, t], box, atol=1e-4)
        np.testing.assert_array_equal(tracks.keypoints[0, t], pose(t).astype(np.float32))


def test_two_persons_crossing_keep_hand_known_ids():
    scene = crossing_scene(box_noise=0.0, joint_noise=0.0, score_noise=0.0)
    a, b = scene.persons
    # detection order flips every frame; id 0 is A (listed first at frame 0), id 1 is B
    dets = [scene.detections_at(t)[:: -1 if t % 2 else 1] for t in range(20)]
    poses = [scene.poses_at(t, d) for t, d in enumerate(dets)]
    tracks = FlowTracker().process(None, scene.flow(), dets, poses)
    assert tracks.track_ids.tolist() == [0, 1]  # equal mean scores: by id
    for m, person in enumerate((a, b)):
        truth = np.stack([person.joints(t) for t in range(20)])
        np.testing.assert_allclose(tracks.keypoints[m, :, :, :2], truth, atol=1e-4)


def test_a_person_leaving_the_frame_ends_its_track():
    num_frames, h, w = 16, 112, 192
    gone = 7  # centre x = 40 - 6 t < 0 from frame 7 on: not detected, no pose found

    def centre(t):
        return np.array([40.0 - 6 * t, 56.0])

    def detect(frames):
        ts = [int(f[0, 0, 0]) for f in frames]
        return [np.array([[*(centre(t) - (15, 30)), *(centre(t) + (15, 30)), 0.9]])
                if t < gone else np.zeros((0, 5)) for t in ts]  # fmt: skip

    def estimate(frames, boxes):
        out = []
        for f, b in zip(frames, boxes):
            t = int(f[0, 0, 0])
            score = 0.9 if t < gone else 0.05  # an empty crop gives a low-score pose
            out.append(np.repeat(np.c_[TEMPLATE + centre(t), np.full(17, score)][None], len(b), 0))
        return out

    tracker = FlowTracker(detect, estimate, max_age=3)
    tracks = tracker.process(
        _indexed_frames(num_frames, h, w), _uniform_flow(num_frames, h, w, -6, 0)
    )
    assert tracks.track_ids.tolist() == [0]
    present = tracks.keypoints[0, :, :, 2].max(-1) > 0
    assert np.flatnonzero(present).tolist() == list(range(gone))
    assert tracker.get_state()["tracks"] == [] and tracker.get_state()["next_id"] == 1


def test_memoised_look_ahead_gives_the_frame_by_frame_tracks_in_fewer_calls():
    """Property over random scenes (misses, shuffled detections, sparse detector runs,
    two segments): the look-ahead's tracks are exactly those of estimating frame by frame,
    with fewer estimator calls (counted around the estimator)."""
    fewer = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        scene = crossing_scene(seed=seed, shuffle=bool(seed % 2))
        scene.missed = {(int(rng.integers(20)), int(rng.integers(2))) for _ in range(6)}
        frames, flow = scene.frames(), scene.flow()
        out, calls = {}, {}
        for ahead in (True, False):
            calls[ahead] = 0

            def counted(f, b, ahead=ahead, calls=calls, scene=scene):
                calls[ahead] += 1
                return scene.estimate(f, b)

            tracker = FlowTracker(scene.detect, counted, detect_every=1 + seed % 3,
                                  pose_ahead=ahead)  # fmt: skip
            out[ahead] = [tracker.process(frames[:9], flow[:8]),
                          tracker.process(frames[8:], flow[8:], start_frame=8)]  # fmt: skip
            assert tracker.pose_calls == calls[ahead]
        for x, y in zip(out[True], out[False]):
            np.testing.assert_array_equal(x.track_ids, y.track_ids)
            np.testing.assert_array_equal(x.keypoints, y.keypoints)
            np.testing.assert_array_equal(x.boxes, y.boxes)
        assert calls[True] <= calls[False], (seed, calls)
        fewer += calls[True] < calls[False]
    assert fewer >= 4


def test_crossing_people_keep_their_ids_with_exact_flow_and_noisy_callables():
    scene = crossing_scene()
    tracker = FlowTracker(detector=scene.detect, estimator=scene.estimate)
    tracks = tracker.process(scene.frames(), scene.flow())
    assert_follows_each_person(scene, tracks)
    assert tracks.track_ids.tolist() in ([0, 1], [1, 0])
    # with a permissive threshold both pairings pass it: the greedy best-first order decides
    scene = crossing_scene(shuffle=True)
    loose = FlowTracker(scene.detect, scene.estimate, oks_threshold=0.01)
    assert_follows_each_person(scene, loose.process(scene.frames(), scene.flow()))
    # the keypoints are the estimator's poses of the right person
    ident = scene.identities(tracks)
    for m in range(2):
        p = scene.persons[ident[m, 0]]
        err = np.abs(tracks.keypoints[m, :, :, :2] - np.stack([p.joints(t) for t in range(20)]))
        assert err.max() < 3.0


def test_without_flow_the_same_crossing_swaps_ids():
    """Control for the test above: the scene is hard enough that flow is what keeps the ids."""
    scene = crossing_scene()
    tracks = FlowTracker(detector=scene.detect, estimator=scene.estimate).process(
        scene.frames(), None
    )
    ident = scene.identities(tracks)
    assert any(len(set(row[row >= 0])) > 1 for row in ident)


def test_crossing_with_precomputed_detections_and_poses():
    scene = crossing_scene(seed=3)
    dets = [scene.detections_at(t) for t in range(20)]
    poses = [scene.poses_at(t, d) for t, d in enumerate(dets)]
    tracker = FlowTracker()  # no callables: everything comes precomputed
    tracks = tracker.process(None, scene.flow(), detections=dets, poses=poses)
    assert_follows_each_person(scene, tracks)
    # precomputed values are used as given: the tracked rows are the given poses and boxes
    ident = scene.identities(tracks)
    for m in range(2):
        for t in (0, 9, 19):
            i = int(np.argmin(np.abs(dets[t][:, :4] - scene.persons[ident[m, t]].box(t)).sum(1)))
            np.testing.assert_array_equal(tracks.keypoints[m, t], poses[t][i])
            np.testing.assert_array_equal(tracks.boxes[m, t], dets[t][i])


def test_overlapping_detections_are_not_suppressed_but_duplicate_flow_boxes_are():
    scene = crossing_scene()
    calls = []

    def estimate(frames, boxes):
        calls.append([len(b) for b in boxes])
        return scene.estimate(frames, boxes)

    tracks = FlowTracker(scene.detect, estimate, nms_iou=0.3).process(scene.frames(), scene.flow())
    # at the crossing the two detections overlap with IoU > nms_iou, yet both persons stay
    d9 = scene.detections_at(9)
    assert box_iou(d9, d9)[0, 1] > 0.4
    assert_follows_each_person(scene, tracks)
    assert (tracks.boxes[:, 9, 4] > 0).all()
    # every flow box coincides with a detection, so NMS drops all of them: no per-frame calls
    assert calls and all(len(c) > 1 for c in calls)  # only the batched calls on the detections


def test_detector_miss_is_filled_by_the_flow_box():
    scene = Scene([Person((30, 50), (4, 1))], 10)
    scene.missed = {(4, 0), (5, 0)}
    tracks = FlowTracker(scene.detect, scene.estimate).process(scene.frames(), scene.flow())
    assert tracks.num_persons == 1 and tracks.track_ids.tolist() == [0]
    assert (tracks.keypoints[0, :, :, 2].mean(-1) > 0.5).all()  # present at every frame
    for t in (4, 5):  # the boxes there are the joints' box, enlarged by 15 %, moved by flow
        box = tracks.boxes[0, t, :4]
        assert box[2] - box[0] == pytest.approx(28 * 1.15, abs=2.5)
        np.testing.assert_allclose((box[:2] + box[2:]) / 2, scene.persons[0].centre(t), atol=1.5)


def test_a_flow_box_whose_pose_does_not_match_its_track_starts_no_new_track():
    scene = Scene([Person((30, 50), (4, 1))], 8)
    scene.missed = {(4, 0)}

    def estimate(frames, boxes):  # in the flow box at frame 4 it "finds" a pose 25 px off
        poses = scene.estimate(frames, boxes)
        if len(frames) == 1 and int(frames[0, 0, 0, 0]) == 4:
            poses[0][:, :, 0] += 25
        return poses

    tracks = FlowTracker(scene.detect, estimate).process(scene.frames(), scene.flow())
    assert tracks.track_ids.tolist() == [0]
    present = tracks.keypoints[0, :, :, 2].max(-1) > 0
    assert present.tolist() == [True] * 4 + [False] + [True] * 3


def test_person_missing_for_max_age_minus_one_frames_keeps_id_and_newcomers_get_new_ids():
    a = Person((30, 50), (3, 0), frames=range(0, 5))
    a_back = Person((30, 50), (3, 0), frames=range(7, 11))  # A again after 2 missing frames
    c = Person((150, 50), (-2, 0), frames=range(8, 16))  # a newcomer
    a_late = Person((30, 50), (3, 0), frames=range(14, 16))  # A after 3 missing frames
    scene = Scene([a, a_back, c, a_late], 16)
    tracks = FlowTracker(scene.detect, scene.estimate, max_age=3).process(
        scene.frames(), scene.flow()
    )
    rows = {
        int(i): tracks.keypoints[m, :, :, 2].max(-1) > 0 for m, i in enumerate(tracks.track_ids)
    }
    assert sorted(rows) == [0, 1, 2]
    # id 0: A at frames 0-4 and 7-10, absent (score 0, all zeros) at 5-6 and 11-15
    assert np.flatnonzero(rows[0]).tolist() == [0, 1, 2, 3, 4, 7, 8, 9, 10]
    m0 = tracks.track_ids.tolist().index(0)
    assert not tracks.keypoints[m0, 5:7].any() and not tracks.boxes[m0, 5:7].any()
    assert np.flatnonzero(rows[1]).tolist() == list(range(8, 16))  # C
    assert np.flatnonzero(rows[2]).tolist() == [14, 15]  # A after > max_age frames: new id
    # with max_age=2 the 2-frame gap is already too long
    scene.detected_frames.clear()
    short = FlowTracker(scene.detect, scene.estimate, max_age=2).process(
        scene.frames(), scene.flow()
    )
    assert short.num_persons == 4


def test_ids_continue_across_segments_with_one_frame_overlap():
    scene = crossing_scene(seed=7)
    frames, flow = scene.frames(), scene.flow()
    whole = FlowTracker(scene.detect, scene.estimate).process(frames, flow)
    scene.detected_frames.clear()

    tracker = FlowTracker(scene.detect, scene.estimate)
    first = tracker.process(frames[:11], flow[:10])  # frames 0..10
    assert tracker.last_frame == 10

    def failing_estimate(f, boxes):  # fails on the flow box of the person missed at frame 15
        if len(f) == 1 and int(f[0, 0, 0, 0]) == 15:
            raise RuntimeError("GPU fell over")
        return scene.estimate(f, boxes)

    tracker.estimator, scene.missed = failing_estimate, {(15, 0)}
    with pytest.raises(RuntimeError):  # a call that fails midway leaves the state as it was
        tracker.process(frames[10:], flow[10:], start_frame=10)
    assert tracker.last_frame == 10
    tracker.estimator, scene.missed = scene.estimate, set()
    scene.detected_frames = [t for t in scene.detected_frames if t <= 10]
    second = tracker.process(frames[10:], flow[10:], start_frame=10)  # frames 10..19
    assert sorted(scene.detected_frames) == list(range(20))  # frame 10 detected once

    for seg, lo in ((first, 0), (second, 10)):
        for m, i in enumerate(seg.track_ids):
            w = whole.track_ids.tolist().index(i)
            np.testing.assert_array_equal(seg.keypoints[m], whole.keypoints[w, lo : lo + 11])
            np.testing.assert_array_equal(seg.boxes[m], whole.boxes[w, lo : lo + 11])
    # the shared frame has the same rows under the same ids in both segments
    for i in first.track_ids:
        a, b = first.track_ids.tolist().index(i), second.track_ids.tolist().index(i)
        np.testing.assert_array_equal(first.keypoints[a, -1], second.keypoints[b, 0])

    with pytest.raises(ValueError, match="overlap by one frame"):
        tracker.process(frames[5:], flow[5:], start_frame=5)
    # state moves to another tracker; reset() starts a new video with ids from 0
    other = FlowTracker(scene.detect, scene.estimate)
    other.set_state(tracker.get_state())
    assert other.last_frame == 19
    tracker.reset()
    again = tracker.process(frames[:11], flow[:10])
    np.testing.assert_array_equal(again.track_ids, first.track_ids)


def test_max_persons_keeps_the_highest_mean_score_tracks_in_order():
    persons = [
        Person((20, 40), (0, 0), score=0.9),  # id 0
        Person((60, 40), (0, 0), score=0.5),  # id 1
        Person((100, 40), (0, 0), score=0.7),  # id 2
        Person((140, 40), (0, 0), score=0.7),  # id 3: ties with id 2
        Person((20, 90), (0, 0), score=0.3),  # id 4
        Person((100, 90), (0, 0), score=0.99, frames=range(0, 4)),  # id 5: mean 0.99*4/10
    ]
    scene = Scene(persons, 10, height=128, score_noise=0.0)  # exact scores: ties are ties
    dets = [scene.detections_at(t) for t in range(10)]
    poses = [scene.poses_at(t, d) for t, d in enumerate(dets)]
    full = FlowTracker(max_persons=10).process(None, None, dets, poses)
    assert full.track_ids.tolist() == [0, 2, 3, 1, 5, 4]
    means = full.keypoints[..., 2].mean(axis=(1, 2))
    assert np.all(np.diff(means) <= 0)
    top = FlowTracker(max_persons=3).process(None, None, dets, poses)
    assert top.track_ids.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(top.keypoints, full.keypoints[:3])
    assert FlowTracker(max_persons=0).process(None, None, dets, poses).num_persons == 0


def test_output_shapes_dtypes_and_empty_segments():
    scene = crossing_scene()
    tracks = FlowTracker(scene.detect, scene.estimate).process(scene.frames(), scene.flow())
    assert tracks.keypoints.shape == (2, 20, 17, 3) and tracks.keypoints.dtype == np.float32
    assert tracks.boxes.shape == (2, 20, 5) and tracks.boxes.dtype == np.float32
    assert tracks.track_ids.shape == (2,) and tracks.track_ids.dtype == np.int32
    assert tracks.num_persons == 2 and tracks.num_frames == 20

    empty = FlowTracker(lambda f: [np.zeros((0, 5), np.float32)] * len(f), scene.estimate)
    out = empty.process(scene.frames(), scene.flow())
    assert out.keypoints.shape == (0, 20, 17, 3) and out.boxes.shape == (0, 20, 5)
    assert out.track_ids.dtype == np.int32 and out.num_persons == 0

    with pytest.raises(ValueError, match="flow must be"):
        FlowTracker(scene.detect).process(scene.frames(), scene.flow()[:-1])
    with pytest.raises(ValueError, match="detector or precomputed detections"):
        FlowTracker().process(scene.frames(), scene.flow())
    with pytest.raises(ValueError, match=r"\[N, 17, 3\]"):
        FlowTracker(scene.detect, lambda f, b: [np.zeros((len(x), 5)) for x in b]).process(
            scene.frames(), scene.flow()
        )


# --------------------------------------------------------------------------- IoU mode


def test_iou_mode_tracks_fast_crossing_boxes_with_flow():
    a = Person((20, 48), (18, 0))
    b = Person((164, 78), (-18, 0))  # 30 px lower; the two boxes cross at frame 4
    scene = Scene([a, b], 9)
    flow = scene.flow()
    tracks = FlowTracker(detector=scene.detect).process(scene.frames(), flow)
    assert_follows_each_person(scene, tracks)
    assert not tracks.keypoints.any()  # no poses in IoU mode: keypoint rows are all zeros
    for m in range(2):
        p = scene.persons[scene.identities(tracks)[m, 0]]
        np.testing.assert_allclose(
            tracks.boxes[m, :, :4], np.stack([p.box(t) for t in range(9)]), atol=4
        )
        assert (tracks.boxes[m, :, 4] >= 0.7).all()
    # control: without flow the boxes move too far between frames to be matched by IoU
    no_flow = FlowTracker(detector=scene.detect).process(scene.frames(), None)
    assert no_flow.num_persons > 2


@pytest.mark.parametrize("velocity", [(-4.0, 0.0), (0.0, -4.0)])
def test_iou_mode_carries_a_box_off_the_frame_at_the_speed_of_the_flow(velocity):
    """Detected at frame 0 only, the box moves with a uniform flow; from frame 9 it has no
    pixel left in the frame (its shift is the flow at the nearest pixel), and it goes on
    at the same speed."""
    num_frames, h, w = 14, 48, 64
    box0 = np.array([10.0, 12.0, 30.0, 32.0, 0.9])
    tracker = FlowTracker(lambda f: [box0[None]] * len(f), detect_every=100)
    tracks = tracker.process(
        _indexed_frames(num_frames, h, w), _uniform_flow(num_frames, h, w, *velocity)
    )
    expected = box0 + np.arange(num_frames)[:, None] * [*velocity, *velocity, 0]
    assert tracks.track_ids.tolist() == [0]
    np.testing.assert_array_equal(tracks.boxes[0], expected.astype(np.float32))


# --------------------------------------------------------------------------- real flow


def _real_sequence(num_frames=5, dx=2.0, dy=1.0, h=64, w=80):
    img = cv2.resize(data.astronaut(), (w * 2, h * 2), interpolation=cv2.INTER_AREA)
    img = img[h // 2 : h // 2 + h, w // 2 : w // 2 + w]
    frames = []
    for t in range(num_frames):
        m = np.float32([[1, 0, dx * t], [0, 1, dy * t]])
        frames.append(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REFLECT))  # fmt: skip
    return np.stack(frames)


def test_propagation_with_real_tvl1_flow():
    frames = _real_sequence()
    flow = compute_flow(frames)  # real TV-L1 on a real image shifted by (2, 1) px per frame
    box0 = np.array([22.0, 14.0, 46.0, 46.0])
    truth = [box0 + np.array([2, 1, 2, 1]) * t for t in range(5)]

    # points move with the image
    pts = np.array([[30.0, 30.0], [40.5, 20.25], [25.0, 40.0]])
    np.testing.assert_allclose(propagate_points(pts, flow[0]), pts + [2, 1], atol=0.3)

    # IoU mode: the 'person' is detected at frame 0 only; flow alone carries its box
    def detect(f):
        return [np.append(box0, 0.9)[None].astype(np.float32) for _ in f]

    tracks = FlowTracker(detector=detect, detect_every=100).process(frames, flow)
    assert tracks.num_persons == 1
    np.testing.assert_allclose(tracks.boxes[0, :, :4], truth, atol=0.6)

    # pose mode: the same, with an estimator that finds the joints inside the moving box
    def estimate(f, boxes):
        out = []
        for frame, b in zip(f, boxes):
            t = next(i for i in range(5) if np.array_equal(frames[i], frame))
            centre = (truth[t][:2] + truth[t][2:]) / 2
            joints = np.concatenate([TEMPLATE * 0.5 + centre, np.full((17, 1), 0.8)], 1)
            out.append(np.repeat(joints[None], len(b), 0).astype(np.float32))
        return out

    tracks = FlowTracker(detect, estimate, detect_every=100).process(frames, flow)
    assert tracks.num_persons == 1 and (tracks.keypoints[0, :, :, 2] > 0).all()
    centres = tracks.keypoints[0, :, :, :2].mean(1) - TEMPLATE.mean(0) * 0.5
    np.testing.assert_allclose(centres, [(b[:2] + b[2:]) / 2 for b in truth], atol=0.6)


def test_flow_box_poses_made_ahead_give_the_frame_by_frame_tracks(bikes):
    """Real detector, real pose model, real flow: estimating the foreseeable flow boxes of a
    segment in one batch gives exactly the tracks of estimating them frame by frame (the
    paper's loop), in fewer estimator calls, across a segment boundary too."""
    from tristream.models.detector import load_detector
    from tristream.models.zoo import DEFAULT_DETECTOR, DEFAULT_POSE_MODEL, load_pose
    from tristream.transforms.decode import decode_video
    from tristream.transforms.flow import compute_flow
    from tristream.transforms.pose import PoseEstimator

    frames = decode_video(bikes, fps=25, short_side=128, start=0.8, end=1.6)  # 20 frames
    flow = compute_flow(frames, backend="opencv")
    detector = load_detector(DEFAULT_DETECTOR, device="cpu")
    estimator = PoseEstimator(load_pose(DEFAULT_POSE_MODEL, device="cpu"))
    crops = {True: 0, False: 0}
    results = {}
    for ahead in (True, False):

        def counted(f, b, ahead=ahead):
            crops[ahead] += sum(len(x) for x in b)
            return estimator(f, b)

        tracker = FlowTracker(detector, counted, detect_every=2, pose_ahead=ahead)
        results[ahead] = [
            tracker.process(frames[:11], flow[:10], start_frame=0),
            tracker.process(frames[10:], flow[10:], start_frame=10),
        ]
        results[ahead].append(tracker.pose_calls)
    for a, b in zip(results[True][:2], results[False][:2]):
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    assert results[True][0].num_persons >= 1  # real people were tracked
    # Frame by frame: one call per frame with flow boxes; ahead: about two per segment.
    assert results[True][2] < results[False][2]
    assert results[True][2] <= 2 * 2 + 2, results[True][2]
    assert crops[True] <= 1.25 * crops[False]  # few boxes estimated in vain
