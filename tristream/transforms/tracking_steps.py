"""Flow-based pose tracking as pure steps over a small, immutable state.

One frame of tracking (Simple Baselines, Xiao et al. 2018, Algorithm 1) is three steps,
each a plain function that takes the tracks and returns new ones:

1. :func:`predict`: every track ages by one frame and its joints and box move by the
   optical flow; tracks older than ``max_age`` end;
2. :func:`pose_candidates` (pose mode): the frame's detections with their poses, plus
   the *flow boxes* (:func:`candidate_flow_boxes`) of the tracks seen at the previous
   frame that survive NMS against the detections, with their estimated poses;
3. :func:`match` (OKS, or box IoU for poses too faint to compare) and :func:`update`:
   greedy one-to-one matching, best similarity first; matched tracks take the
   candidate's pose and box, unmatched detections start new tracks.

:func:`track_frame` chains them; :func:`assemble` turns the per-frame rows of a segment
into :class:`PersonTracks`. Nothing here mutates its inputs: a :class:`Track` holds
read-only arrays and a step that changes a track makes a new one, so a caller keeps the
previous state by keeping a reference to it.

Units and conventions: pixel coordinates of the frames (x right, y down); keypoints in
COCO-17 order as ``(x, y, score)`` (optionally ``+ (x, y, z)`` metres: width 6); boxes as
``(x1, y1, x2, y2, score)``; one flow field is float ``[H, W, 2]`` (dx, dy) pixels from a
frame to the next. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tristream.models.common import box_iou
from tristream.shards.coco import NUM_JOINTS, OKS_SIGMAS

#: ``detect(frames uint8 [B, H, W, 3] RGB) -> B float arrays [N, 5]`` (or ``[N, 4]``).
Detector = Callable[[np.ndarray], Sequence[np.ndarray]]
#: ``estimate(frames uint8 [B, H, W, 3], B float arrays [N_b, 5]) -> B arrays [N_b, 17, 3|6]``.
Estimator = Callable[[np.ndarray, Sequence[np.ndarray]], Sequence[np.ndarray]]
#: One tracked person at one frame: keypoints float32 ``[17, 3|6]``, box float32 ``[5]``.
Row = tuple[np.ndarray, np.ndarray]

# --------------------------------------------------------------------------- geometry


def oks(a: np.ndarray, b: np.ndarray, area: float) -> float:
    """Object keypoint similarity of two COCO-17 poses.

    ``a``, ``b``: ``[17, 3]`` ``(x, y, score)`` in pixels. ``area``: the object
    scale s² in pixels² (here: the area of the person's box). Joints count
    where both scores are > 0. Returns a float in [0, 1]; 0 when no joint
    counts or ``area`` <= 0.
    """
    return float(oks_matrix(np.asarray(a)[None], np.asarray(b)[None], np.array([area]))[0, 0])


def oks_matrix(a: np.ndarray, b: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """OKS of each pose in ``a`` ``[N, 17, 3]`` with each in ``b`` ``[M, 17, 3]``.

    ``areas``: float ``[N]``, the scale s² (pixels²) of each pose in ``a``. Returns
    float64 ``[N, M]`` (see :func:`oks`).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return np.zeros((n, m), np.float64)
    d2 = np.sum((a[:, None, :, :2] - b[None, :, :, :2]) ** 2, axis=-1)  # [N, M, 17]
    k2 = (2.0 * OKS_SIGMAS) ** 2
    areas = np.asarray(areas, np.float64)[:, None, None]
    e = d2 / (2.0 * np.maximum(areas, np.spacing(1)) * k2)
    vis = (a[:, None, :, 2] > 0) & (b[None, :, :, 2] > 0)
    count = vis.sum(-1)
    total = np.where(vis, np.exp(-e), 0.0).sum(-1)
    out = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return np.where(areas[:, :, 0] > 0, out, 0.0)


def propagate_points(points: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Move points by a flow field: ``p + flow(p)``, the flow sampled bilinearly.

    ``points``: ``[N, 2]`` (x, y) pixels in the source frame. ``flow``:
    ``[H, W, 2]`` float (x right, y down) pixels from the source frame to the
    next. Points outside the frame use the flow at the nearest border pixel.
    Returns float32 ``[N, 2]``.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    h, w = flow.shape[:2]
    x = np.clip(pts[:, 0], 0, w - 1)
    y = np.clip(pts[:, 1], 0, h - 1)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, max(w - 2, 0))
    y0 = np.clip(np.floor(y).astype(np.int64), 0, max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    f = flow.astype(np.float64, copy=False)
    top = f[y0, x0] * (1 - fx) + f[y0, x1] * fx
    bottom = f[y1, x0] * (1 - fx) + f[y1, x1] * fx
    return (pts + top * (1 - fy) + bottom * fy).astype(np.float32)


def median_flow_shift(box: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Median flow ``(dx, dy)`` pixels inside ``box`` (x1, y1, x2, y2[, score]); float64 ``[2]``.

    ``flow``: float ``[H, W, 2]``. The box is clipped to the frame (whole pixels: columns
    ``floor(x1) .. ceil(x2) - 1``, rows likewise); a box with no pixel in the frame (or
    empty) gives the flow at its centre, sampled as :func:`propagate_points` does (at the
    nearest border pixel when the centre is outside the frame).
    """
    h, w = flow.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    c0, c1 = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.ceil(x2), 0, w))
    r0, r1 = int(np.clip(np.floor(y1), 0, h - 1)), int(np.clip(np.ceil(y2), 0, h))
    if c1 <= c0 or r1 <= r0:
        centre = np.array([[(x1 + x2) / 2, (y1 + y2) / 2]])
        # propagate_points moves the centre itself (not its clipped copy) by the flow
        # sampled at the nearest frame pixel: the shift is the moved point minus the centre.
        return (propagate_points(centre, flow)[0] - centre[0]).astype(np.float64)
    region = flow[r0:r1, c0:c1].reshape(-1, 2)
    return np.median(region, axis=0).astype(np.float64)


def joints_box(joints: np.ndarray, enlarge: float = 0.15) -> np.ndarray | None:
    """Box around the joints with score > 0, width and height enlarged by ``enlarge``.

    ``joints``: ``[17, 3]``. Returns float64 ``[4]`` (x1, y1, x2, y2), or None
    when fewer than two joints have a score > 0.
    """
    valid = joints[:, 2] > 0
    if valid.sum() < 2:
        return None
    xy = joints[valid, :2].astype(np.float64)
    lo, hi = xy.min(0), xy.max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * (1.0 + enlarge)
    return np.concatenate([centre - half, centre + half])


def flow_box(
    joints: np.ndarray, box: np.ndarray, enlarge: float, frame_shape: tuple[int, int] | None
) -> np.ndarray | None:
    """The flow box of a track: the box to estimate its pose in at the current frame.

    ``joints``: float ``[17, 3|6]`` and ``box``: float ``[5]``, the track's, already moved to
    the current frame. The box is the joints' box enlarged by ``enlarge`` (the track's own
    box when fewer than two joints have a score > 0), clipped to ``frame_shape`` (H, W),
    with the track's box score. Returns float64 ``[5]``, or None when under 1 px wide or
    high.
    """
    jb = joints_box(joints, enlarge)
    out = box[:4].copy() if jb is None else jb
    if frame_shape is not None:
        h, w = frame_shape
        out = np.clip(out, 0, [w, h, w, h])
    if out[2] - out[0] >= 1 and out[3] - out[1] >= 1:
        return np.append(out, box[4])
    return None


def box_area(box: np.ndarray) -> float:
    """Area in pixels² of ``box`` (x1, y1, x2, y2, ...); 0 for an empty box."""
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def as_poses(poses: np.ndarray) -> np.ndarray:
    """An estimator's poses as float64 ``[N, 17, 3|6]``; ValueError for any other shape."""
    p = np.asarray(poses, np.float64)
    if p.size == 0:
        return np.zeros((0, NUM_JOINTS, p.shape[-1] if p.ndim == 3 and p.shape[-1] == 6 else 3))
    if p.ndim != 3 or p.shape[1] != NUM_JOINTS or p.shape[2] not in (3, 6):
        raise ValueError(
            f"poses must be [N, 17, 3] (x, y, score) or [N, 17, 6] (+ x, y, z metres), "
            f"got {p.shape}"
        )
    return p


def read_only(a: np.ndarray) -> np.ndarray:
    """``a`` (an array the caller owns) marked read-only, so that states can share it."""
    a.flags.writeable = False
    return a


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Params:
    """The tracker's options that the steps read (see :class:`~.tracking.FlowTracker`)."""

    oks_threshold: float = 0.3
    iou_threshold: float = 0.3
    nms_iou: float = 0.5
    enlarge: float = 0.15
    max_age: int = 3
    min_pose_score: float = 0.2
    joint_score: float = 0.3


@dataclass(frozen=True)
class Track:
    """One person's track at the current frame; its arrays are read-only.

    ``joints``: float64 ``[17, 3|6]``, the last matched pose with (x, y) moved by the flow
    to the current frame (columns 3-5, the 3D keypoints when present, are the matched
    pose's); all zeros in IoU mode. ``box``: float64 ``[5]``, the last matched box moved to
    the current frame. ``age``: frames since the track was last matched (0: matched at the
    current frame).
    """

    id: int
    joints: np.ndarray
    box: np.ndarray
    age: int = 0

    @classmethod
    def of(cls, id: int, joints: np.ndarray, box: np.ndarray, age: int = 0) -> Track:
        """A track holding read-only float64 copies of ``joints`` and ``box``."""
        j = np.array(joints, np.float64)
        b = np.array(box, np.float64)
        return cls(int(id), read_only(j), read_only(b), int(age))


@dataclass(frozen=True)
class TrackerState:
    """Everything the tracker carries from one segment of a video to the next.

    ``tracks``: the live tracks at ``last_frame``. ``next_id``: the id the next new track
    gets. ``last_frame``: index in the video of the last processed frame (None before
    the first segment). ``last_rows``: track id -> :data:`Row` at ``last_frame`` (the
    overlap frame's result, reused by the next segment). Never mutated (nor are the
    arrays and mappings it holds): a segment makes a new state.
    """

    tracks: tuple[Track, ...] = ()
    next_id: int = 0
    last_frame: int | None = None
    last_rows: Mapping[int, Row] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """A box that may continue a track at the current frame.

    ``box``: float64 ``[5]``. ``pose``: float64 ``[17, 3|6]``, or None (IoU mode).
    ``from_detector``: a detection (may start a new track) or a flow box (may not).
    """

    box: np.ndarray
    pose: np.ndarray | None
    from_detector: bool


# --------------------------------------------------------------------------- steps


def move_track(
    joints: np.ndarray, box: np.ndarray, flow: np.ndarray, pose_mode: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A track's joints ``[17, 3|6]`` and box ``[5]`` (float64) moved by one flow field.

    Joints move by the flow at each joint. In pose mode the box moves by the mean motion
    of the joints with score > 0 (when there are two or more), else by the median flow
    inside it (:func:`median_flow_shift`). Returns new read-only float64 arrays.
    """
    joints, box = joints.copy(), box.copy()
    valid = joints[:, 2] > 0
    moved = propagate_points(joints[:, :2], flow)
    if pose_mode and valid.sum() >= 2:
        shift = (moved[valid] - joints[valid, :2]).mean(0)
    else:
        shift = median_flow_shift(box, flow)
    joints[:, :2] = moved
    box[:4] += np.tile(shift, 2)
    return read_only(joints), read_only(box)


def predict(
    tracks: Sequence[Track], flow: np.ndarray | None, pose_mode: bool, max_age: int
) -> tuple[Track, ...]:
    """Step 1: every track one frame older, moved by ``flow`` (float ``[H, W, 2]``, or None:
    no motion); tracks then older than ``max_age`` frames end."""
    out = []
    for tr in tracks:
        if tr.age + 1 > max_age:
            continue
        joints, box = (tr.joints, tr.box) if flow is None else move_track(
            tr.joints, tr.box, flow, pose_mode
        )  # fmt: skip
        out.append(Track(tr.id, joints, box, tr.age + 1))
    return tuple(out)


def candidate_flow_boxes(
    tracks: Sequence[Track],
    det_boxes: np.ndarray | None,
    params: Params,
    frame_shape: tuple[int, int] | None,
) -> np.ndarray:
    """The flow boxes to estimate poses in at the current frame: float64 ``[K, 5]``.

    ``tracks``: predicted to the current frame (:func:`predict`); those seen at the
    previous frame (age 1) give flow boxes (:func:`flow_box`). ``det_boxes``: float
    ``[N, 5]`` detections at the current frame, or None. NMS, best box score first (ties:
    track order): a flow box is dropped when its IoU with a detection or with a flow box
    already kept exceeds ``params.nms_iou``; detections are never dropped. A box kept
    here is also kept when its track is the only one, which the look-ahead relies on.
    """
    boxes = []
    for tr in tracks:
        if tr.age != 1:
            continue
        box = flow_box(tr.joints, tr.box, params.enlarge, frame_shape)
        if box is not None:
            boxes.append(box)
    if not boxes:
        return np.zeros((0, 5))
    boxes_arr = np.array(boxes)
    dets = np.zeros((0, 5)) if det_boxes is None else np.asarray(det_boxes).reshape(-1, 5)
    kept: list[np.ndarray] = []
    for i in np.argsort(-boxes_arr[:, 4], kind="stable"):
        fb = boxes_arr[i]
        against = np.concatenate([dets, np.array(kept).reshape(-1, 5)])
        if len(against) == 0 or box_iou(fb[None], against).max() <= params.nms_iou:
            kept.append(fb)
    return np.array(kept).reshape(-1, 5)


def pose_candidates(
    tracks: Sequence[Track],
    det_boxes: np.ndarray | None,
    det_poses: np.ndarray | None,
    estimate: Callable[[np.ndarray], Sequence[np.ndarray]] | None,
    params: Params,
    frame_shape: tuple[int, int] | None,
) -> list[Candidate]:
    """Step 2 (pose mode): the candidates of the current frame.

    ``det_boxes``: float64 ``[N, 5]`` or None (detector not run); ``det_poses``: float64
    ``[N, 17, 3|6]``, their poses. ``estimate(boxes [K, 5]) -> K poses [17, 3|6]`` gives the
    poses in this frame's flow boxes (:func:`candidate_flow_boxes`); None: no flow boxes.
    A flow box joins only when its pose's mean joint score reaches
    ``params.min_pose_score``.
    """
    cands = []
    if det_boxes is not None:
        cands = [Candidate(b, p, True) for b, p in zip(det_boxes, det_poses, strict=True)]
    if estimate is None:
        return cands
    kept = candidate_flow_boxes(tracks, det_boxes, params, frame_shape)
    if not len(kept):
        return cands
    for b, p in zip(kept, estimate(kept), strict=True):
        if p[:, 2].mean() >= params.min_pose_score:
            cands.append(Candidate(b, p, False))
    return cands


def _seen(poses: np.ndarray, min_score: float) -> np.ndarray:
    """``poses [N, 17, 3]`` with the scores of joints below ``min_score`` set to 0 (unseen)."""
    out = poses.copy()
    out[..., 2] = np.where(out[..., 2] >= min_score, out[..., 2], 0.0)
    return out


def pose_similarity(
    tracks: Sequence[Track], cands: Sequence[Candidate], params: Params
) -> np.ndarray:
    """Similarity of each track with each candidate, float64 ``[len(tracks), len(cands)]``.

    The OKS (area: the track's box) over the joints both score at least
    ``params.joint_score``, -1 below ``params.oks_threshold``; where the track or the
    candidate has fewer than two such joints, the box IoU instead (-1 below
    ``params.iou_threshold``).
    """
    areas = np.array([box_area(tr.box) for tr in tracks])
    a = np.array([tr.joints[:, :3] for tr in tracks]).reshape(-1, NUM_JOINTS, 3)
    b = np.array([c.pose[:, :3] for c in cands]).reshape(-1, NUM_JOINTS, 3)
    sim = oks_matrix(_seen(a, params.joint_score), _seen(b, params.joint_score), areas)
    sim = np.where(sim >= params.oks_threshold, sim, -1.0)
    # A pose with fewer than two joints seen says nothing about who it is: such a
    # track or candidate is matched by its box instead (IoU, at iou_threshold).
    blind = ((a[:, :, 2] >= params.joint_score).sum(1) < 2)[:, None] | (
        (b[:, :, 2] >= params.joint_score).sum(1) < 2
    )[None, :]
    if blind.any():
        iou = box_iou(np.array([tr.box for tr in tracks]).reshape(-1, 5),
                      np.array([c.box for c in cands]).reshape(-1, 5))  # fmt: skip
        sim = np.where(blind, np.where(iou >= params.iou_threshold, iou, -1.0), sim)
    return sim


def greedy(sim: np.ndarray, ages: Sequence[int], threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of ``sim`` ``[tracks, candidates]`` entries >= ``threshold``.

    Best similarity first (ties: younger track, then lower track index, then lower
    candidate index). Returns ``(track index, candidate index)`` pairs.
    """
    if sim.size == 0:
        return []
    ti, ci = np.nonzero(sim >= threshold)
    ages_arr = np.asarray(ages)
    order = np.lexsort((ci, ti, ages_arr[ti], -sim[ti, ci]))
    used_t, used_c, pairs = set(), set(), []
    for k in order:
        a, b = int(ti[k]), int(ci[k])
        if a not in used_t and b not in used_c:
            used_t.add(a)
            used_c.add(b)
            pairs.append((a, b))
    return pairs


def match(
    tracks: Sequence[Track], cands: Sequence[Candidate], pose_mode: bool, params: Params
) -> list[tuple[int, int]]:
    """Step 3a: ``(track index, candidate index)`` pairs, by :func:`pose_similarity` in
    pose mode, else by box IoU (at least ``params.iou_threshold``)."""
    ages = [tr.age for tr in tracks]
    if pose_mode:
        return greedy(pose_similarity(tracks, cands, params), ages, 0.0)
    sim = box_iou(np.array([tr.box for tr in tracks]).reshape(-1, 5),
                  np.array([c.box for c in cands]).reshape(-1, 5))  # fmt: skip
    return greedy(sim, ages, params.iou_threshold)


def update(
    tracks: Sequence[Track],
    cands: Sequence[Candidate],
    pairs: Sequence[tuple[int, int]],
    next_id: int,
) -> tuple[tuple[Track, ...], int]:
    """Step 3b: matched tracks take their candidate's box (and pose, in pose mode) at age 0;
    each unmatched detection starts a track with id ``next_id``, ``next_id + 1``, ...
    (all-zero joints in IoU mode). Returns the tracks and the next free id."""
    out = list(tracks)
    matched = set()
    for ti, ci in pairs:
        c, tr = cands[ci], tracks[ti]
        out[ti] = Track.of(tr.id, tr.joints if c.pose is None else c.pose, c.box, 0)
        matched.add(ci)
    for ci, c in enumerate(cands):
        if ci not in matched and c.from_detector:
            joints = np.zeros((NUM_JOINTS, 3)) if c.pose is None else c.pose
            out.append(Track.of(next_id, joints, c.box, 0))
            next_id += 1
    return tuple(out), next_id


def carry(tracks: Sequence[Track]) -> tuple[Track, ...]:
    """IoU mode on a frame the detector skipped: tracks seen at the previous frame go on
    (age 0) where the flow took them."""
    return tuple(Track(tr.id, tr.joints, tr.box, 0) if tr.age == 1 else tr for tr in tracks)


def frame_rows(tracks: Sequence[Track], pose_mode: bool) -> dict[int, Row]:
    """The output rows of the current frame: track id -> :data:`Row`, for the tracks
    matched at it (age 0); keypoints all zeros in IoU mode."""
    rows = {}
    for tr in tracks:
        if tr.age == 0:
            kps = tr.joints if pose_mode else np.zeros((NUM_JOINTS, 3))
            rows[tr.id] = (read_only(kps.astype(np.float32)), read_only(tr.box.astype(np.float32)))
    return rows


def track_frame(
    tracks: Sequence[Track],
    next_id: int,
    flow: np.ndarray | None,
    det_boxes: np.ndarray | None,
    det_poses: np.ndarray | None,
    estimate: Callable[[np.ndarray], Sequence[np.ndarray]] | None,
    pose_mode: bool,
    params: Params,
    frame_shape: tuple[int, int] | None,
) -> tuple[tuple[Track, ...], int, dict[int, Row]]:
    """One frame of tracking: predict by ``flow`` (from the previous frame to this one),
    build the candidates, match and update.

    ``det_boxes`` / ``det_poses``: this frame's detections and their poses (None: the
    detector did not run; ``det_poses`` is None in IoU mode). ``estimate``: poses in this
    frame's flow boxes (see :func:`pose_candidates`). Returns the tracks, the next free
    id and this frame's rows (:func:`frame_rows`).
    """
    tracks = predict(tracks, flow, pose_mode, params.max_age)
    if pose_mode:
        cands = pose_candidates(tracks, det_boxes, det_poses, estimate, params, frame_shape)
    elif det_boxes is None:  # detector not run: tracks seen at the previous frame go on
        tracks = carry(tracks)
        return tracks, next_id, frame_rows(tracks, pose_mode)
    else:
        cands = [Candidate(b, None, True) for b in det_boxes]
    tracks, next_id = update(tracks, cands, match(tracks, cands, pose_mode, params), next_id)
    return tracks, next_id, frame_rows(tracks, pose_mode)


# --------------------------------------------------------------------------- output


@dataclass
class PersonTracks:
    """Tracked persons of one segment (the shard contract's pose columns).

    ``keypoints``: float32 ``[M, T, 17, 3]`` (x, y, score) in frame pixels.
    ``boxes``: float32 ``[M, T, 5]`` (x1, y1, x2, y2, score) in frame pixels.
    ``track_ids``: int32 ``[M]``, stable across the segments of one video.
    ``keypoints3d``: float32 ``[M, T, 17, 3]`` (x, y, z) in metres, root-relative, for
    the same persons and frames, when the pose model gives them (else None).
    Where track m is absent at frame t, ``keypoints[m, t]``, ``keypoints3d[m, t]`` and
    ``boxes[m, t]`` are all zeros (score 0). Tracks are ordered by mean score over the
    segment, highest first (ties: lower id first).
    """

    keypoints: np.ndarray
    boxes: np.ndarray
    track_ids: np.ndarray
    keypoints3d: np.ndarray | None = None

    @property
    def num_persons(self) -> int:
        """M, the number of tracks."""
        return int(len(self.track_ids))

    @property
    def num_frames(self) -> int:
        """T, the number of frames."""
        return int(self.keypoints.shape[1])

    @classmethod
    def empty(cls, num_frames: int, with_3d: bool = False) -> PersonTracks:
        """No persons over ``num_frames`` frames."""
        return cls(
            np.zeros((0, num_frames, NUM_JOINTS, 3), np.float32),
            np.zeros((0, num_frames, 5), np.float32),
            np.zeros((0,), np.int32),
            np.zeros((0, num_frames, NUM_JOINTS, 3), np.float32) if with_3d else None,
        )


def assemble(
    rows: Sequence[Mapping[int, Row]], pose_mode: bool, max_persons: int, with_3d: bool
) -> PersonTracks:
    """A segment's :class:`PersonTracks` from its per-frame rows (one mapping per frame).

    The ``max_persons`` tracks with the highest mean score over the segment (mean joint
    score in pose mode, box score in IoU mode; absent frames count 0), highest first,
    ties by lower id. ``with_3d``: give ``keypoints3d`` (zeros) when there is no track.
    """
    num_frames = len(rows)
    ids = sorted({i for r in rows for i in r})
    if not ids:
        return PersonTracks.empty(num_frames, with_3d)
    totals = dict.fromkeys(ids, 0.0)
    width = 3
    for r in rows:
        for i, (kps, box) in r.items():
            totals[i] += float(kps[:, 2].mean()) if pose_mode else float(box[4])
            width = kps.shape[-1]
    order = sorted(ids, key=lambda i: (-totals[i] / num_frames, i))[:max_persons]
    kps_out = np.zeros((len(order), num_frames, NUM_JOINTS, width), np.float32)
    box_out = np.zeros((len(order), num_frames, 5), np.float32)
    for m, i in enumerate(order):
        for t, r in enumerate(rows):
            if i in r:
                kps_out[m, t], box_out[m, t] = r[i]
    kps3d = np.ascontiguousarray(kps_out[..., 3:6]) if width == 6 else None
    return PersonTracks(
        np.ascontiguousarray(kps_out[..., :3]), box_out, np.array(order, np.int32), kps3d
    )
