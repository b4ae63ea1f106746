"""Flow-based pose tracking (Simple Baselines, Xiao et al. 2018, Algorithm 1).

For every frame of a video, in order:

1. each live track's joints are moved from the previous frame to this one by
   the optical flow (bilinear sample of the flow at each joint);
2. the box of each track seen at the previous frame is rebuilt around its
   propagated joints and enlarged by ``enlarge`` (15 %); these *flow boxes*
   are unified with the detector's boxes by NMS, detections taking precedence;
3. poses are estimated on the unified boxes (when an estimator is given): all the
   detections of a segment in one estimator call; the flow boxes through a per-segment
   memory of the estimator (:class:`~.tracking_ahead.PoseMemo`), which a look-ahead fills
   beforehand with the flow boxes that can be foreseen (those of tracks matched to a
   detection at the previous frame), so that the model sees large batches; only
   unforeseen flow boxes (a track the detector has already missed once) are estimated
   frame by frame;
4. the similarity between each track's propagated joints and each estimated
   pose is their OKS (COCO sigmas, area from the track's box) over the joints both
   score at least ``joint_score``; a track or pose with fewer than two such joints
   (a real model's near-zero scores on a crop it cannot read) is compared by box IoU
   instead;
5. tracks seen within the last ``max_age`` frames are matched greedily, best
   similarity first; unmatched detections start new tracks with new ids.

Without a pose estimator (and without precomputed poses) the tracker works on
boxes alone: each track's box moves by the median flow inside it and is matched
to the detections by IoU.

The steps are pure functions over an immutable state
(:mod:`tristream.transforms.tracking_steps`); :class:`FlowTracker` drives them over the
segments of a video, runs the detector and the estimator, and keeps the state between
segments.

Units and conventions: pixel coordinates of the frames passed in (x right,
y down); keypoints in COCO-17 order as ``(x, y, score)``; boxes as
``(x1, y1, x2, y2, score)``; flow float32 ``[T-1, H, W, 2]`` from frame t to t+1
(see :mod:`tristream.transforms.flow`). Pure numpy; the detector and the pose
estimator are any callables with the contracts in :class:`FlowTracker`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from tristream.shards.coco import NUM_JOINTS
from tristream.transforms.tracking_ahead import AHEAD_ROUNDS, PoseMemo, look_ahead
from tristream.transforms.tracking_steps import (
    Detector,
    Estimator,
    Params,
    PersonTracks,
    Row,
    Track,
    TrackerState,
    as_poses,
    assemble,
    joints_box,
    median_flow_shift,
    oks,
    propagate_points,
    read_only,
    track_frame,
)

__all__ = [
    "AHEAD_ROUNDS",
    "Detector",
    "Estimator",
    "FlowTracker",
    "PersonTracks",
    "joints_box",
    "median_flow_shift",
    "oks",
    "propagate_points",
    "tracks_from_keypoints",
]


def tracks_from_keypoints(keypoints: np.ndarray, max_persons: int = 5) -> PersonTracks:
    """Person tracks from keypoints whose person axis already is the identity (imported skeletons).

    ``keypoints``: float ``[M, T, 17, 3]`` (x, y, score), person m the same
    individual in every frame; ``[M, T, 17, 6]`` appends (x, y, z) metres (the 3D
    keypoints). Boxes are the tight box of each frame's joints
    with score > 0, scored by their mean score (zeros where fewer than two joints
    are visible). Track ids are the person's index in the input. Returns the
    ``max_persons`` persons with the highest mean joint score over the
    segment, highest first (ties: lower index first).
    """
    kps = np.asarray(keypoints, np.float32)
    kps3d = kps[..., 3:6].copy() if kps.shape[-1] == 6 else None
    kps = kps[..., :3]
    if kps3d is not None:
        kps3d[(kps[..., 2] <= 0).all(-1)] = 0.0  # absent in 2D: absent in 3D too
    m, t = kps.shape[:2]
    boxes = np.zeros((m, t, 5), np.float32)
    for i in range(m):
        for j in range(t):
            box = joints_box(kps[i, j], enlarge=0.0)
            if box is not None:
                visible = kps[i, j, :, 2] > 0
                boxes[i, j] = (*box, kps[i, j, visible, 2].mean())
    mean_score = kps[..., 2].mean(axis=(1, 2)) if m else np.zeros(0)
    order = sorted(range(m), key=lambda i: (-mean_score[i], i))[:max_persons]
    return PersonTracks(
        kps[order], boxes[order], np.asarray(order, np.int32),
        None if kps3d is None else np.ascontiguousarray(kps3d[order]),
    )  # fmt: skip


class FlowTracker:
    """Flow-based multi-person pose tracker for the segments of one video.

    ``detector``: ``detect(frames uint8 [B, H, W, 3] RGB) -> list of B float
    arrays [N, 5]`` (x1, y1, x2, y2, score) in frame pixels (``[N, 4]`` is read
    as score 1). ``estimator``: ``estimate(frames uint8 [B, H, W, 3], boxes: list
    of B float arrays [N, 5]) -> list of B float arrays [N, 17, 3]`` (x, y,
    score) in frame pixels. Either may be None when :meth:`process` gets the
    detections / poses precomputed. With neither an estimator nor poses, the
    tracker tracks boxes only (IoU mode) and all keypoint scores are 0.

    Options:

    - ``max_persons``: tracks per segment in the output (tracking itself keeps
      every track);
    - ``oks_threshold`` / ``iou_threshold``: the least OKS (pose mode) / box
      IoU (IoU mode) for a match;
    - ``nms_iou``: a flow box is dropped when its IoU with a detection (or with
      a better-scored flow box) exceeds this; detections never suppress each
      other (the detector has done its own NMS), so two overlapping people
      stay two;
    - ``enlarge``: flow boxes are the joints' box with width and height
      enlarged by this fraction;
    - ``max_age``: a track last matched at most this many frames ago can be
      matched again and keeps its id (it survives ``max_age - 1`` missed
      frames in a row); older tracks end;
    - ``detect_every``: run the detector only on frames whose index in the
      video is a multiple of this (flow boxes carry the tracks in between);
    - ``min_pose_score``: a pose estimated in a flow box is kept only when its
      mean joint score reaches this (a flow box where the person has gone
      yields a low-score pose); flow boxes never start new tracks;
    - ``batch_size``: frames per detector call (the estimator gets every crop of a
      segment at once and batches them itself);
    - ``joint_score``: the least score of a joint that counts as seen in the OKS
      (real models never score exactly 0); with fewer than two seen joints on either
      side, a pair is compared by box IoU against ``iou_threshold``;
    - ``pose_ahead``: estimate the foreseeable flow boxes of a segment in a few batched
      calls (see :func:`~.tracking_ahead.look_ahead`); False estimates every flow box at
      its own frame, as the paper's loop does. Both give the same tracks.

    Call :meth:`process` once per segment, in order; consecutive segments
    overlap by one frame (DESIGN.md), whose result is reused, not recomputed.
    Call :meth:`reset` before the next video. One instance tracks one video at
    a time; :meth:`get_state` / :meth:`set_state` move the per-video state.
    """

    def __init__(
        self,
        detector: Detector | None = None,
        estimator: Estimator | None = None,
        max_persons: int = 5,
        oks_threshold: float = 0.3,
        iou_threshold: float = 0.3,
        nms_iou: float = 0.5,
        enlarge: float = 0.15,
        max_age: int = 3,
        detect_every: int = 1,
        min_pose_score: float = 0.2,
        batch_size: int = 16,
        pose_ahead: bool = True,
        joint_score: float = 0.3,
    ) -> None:
        if max_persons < 0 or max_age < 0 or detect_every < 1 or batch_size < 1:
            raise ValueError(
                "need max_persons >= 0, max_age >= 0, detect_every >= 1 and batch_size >= 1"
            )
        self.detector = detector
        self.estimator = estimator
        self.max_persons = max_persons
        self.oks_threshold = oks_threshold
        self.iou_threshold = iou_threshold
        self.nms_iou = nms_iou
        self.enlarge = enlarge
        self.max_age = max_age
        self.detect_every = detect_every
        self.min_pose_score = min_pose_score
        self.batch_size = batch_size
        self.pose_ahead = pose_ahead
        self.joint_score = joint_score
        self._state = TrackerState()
        #: estimator calls so far (one per segment for the detections, one per look-ahead
        #: round, plus one per frame whose flow boxes were not all foreseen).
        self.pose_calls = 0

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget all tracks: the next :meth:`process` call starts a new video (ids from 0)."""
        self._state = TrackerState()

    def get_state(self) -> dict:
        """The per-video state as plain picklable data (ints and numpy arrays, copies).

        ``{"tracks": [(id, joints float64 [17, 3|6], box float64 [5], age)], "next_id": int,
        "last_frame": int | None, "last_rows": {id: (keypoints float32 [17, 3|6], box
        float32 [5])}}``.
        """
        s = self._state
        return {
            "tracks": [(t.id, t.joints.copy(), t.box.copy(), t.age) for t in s.tracks],
            "next_id": s.next_id,
            "last_frame": s.last_frame,
            "last_rows": {k: (v[0].copy(), v[1].copy()) for k, v in s.last_rows.items()},
        }

    def set_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_state` (e.g. on another worker)."""
        rows = {
            int(k): (read_only(np.array(v[0])), read_only(np.array(v[1])))
            for k, v in state["last_rows"].items()
        }
        self._state = TrackerState(
            tracks=tuple(Track.of(i, j, b, a) for i, j, b, a in state["tracks"]),
            next_id=int(state["next_id"]),
            last_frame=state["last_frame"],
            last_rows=rows,
        )

    @property
    def last_frame(self) -> int | None:
        """Index in the video of the last frame processed so far (None before the first segment)."""
        return self._state.last_frame

    @property
    def params(self) -> Params:
        """The options the tracking steps read, as they are now."""
        return Params(
            oks_threshold=self.oks_threshold, iou_threshold=self.iou_threshold,
            nms_iou=self.nms_iou, enlarge=self.enlarge, max_age=self.max_age,
            min_pose_score=self.min_pose_score, joint_score=self.joint_score,
        )  # fmt: skip

    # ------------------------------------------------------------------ main

    def process(
        self,
        frames: np.ndarray | None,
        flow: np.ndarray | None,
        detections: Sequence[np.ndarray | None] | None = None,
        poses: Sequence[np.ndarray] | None = None,
        start_frame: int | None = None,
    ) -> PersonTracks:
        """Track the persons of one segment; returns its :class:`PersonTracks`.

        ``frames``: uint8 ``[T, H, W, 3]`` RGB (needed only to call the detector
        or the estimator; may be None when both are precomputed). ``flow``:
        float32 ``[T-1, H, W, 2]`` from frame t to t+1, or None (no motion
        assumed). ``detections``: optional precomputed list of T float arrays
        ``[N_t, 5]``; an entry None means "detector not run on this frame".
        ``poses``: optional list of T ``[N_t, 17, 3]``, the pose of each
        detection. Precomputed values replace the callables.

        Segments of one video must come in order, each starting at the last
        frame of the previous one (one-frame overlap): that frame's result is
        taken from the previous call, so its detections are ignored and its
        rows and ids equal the previous segment's last rows. ``start_frame``
        (the segment's first frame index in the video) is optional and only
        checked: it must be the previous segment's last frame. A call that
        raises leaves the tracker's state unchanged (the state is immutable: a
        call makes a new one and keeps it only when it returns).
        """
        s = self._state
        num_frames = _num_frames(frames, flow, detections)
        frame_shape = _frame_shape(frames, flow)
        if flow is not None:
            flow = np.asarray(flow)
            if flow.shape[0] != num_frames - 1 or flow.ndim != 4 or flow.shape[-1] != 2:
                raise ValueError(
                    f"flow must be [T-1, H, W, 2] = [{num_frames - 1}, H, W, 2], got {flow.shape}"
                )
        for name, seq in (("detections", detections), ("poses", poses)):
            if seq is not None and len(seq) != num_frames:
                raise ValueError(
                    f"{name} must have one entry per frame ({num_frames}), got {len(seq)}"
                )
        if s.last_frame is None:
            start = 0 if start_frame is None else int(start_frame)
            first = 0
        else:
            start = s.last_frame
            if start_frame is not None and int(start_frame) != start:
                raise ValueError(
                    f"segment starts at frame {start_frame}, but the previous segment of this "
                    f"video ended at frame {start}: segments must overlap by one frame and come "
                    "in order; call reset() before a new video"
                )
            first = 1
        pose_mode = self.estimator is not None or poses is not None
        if detections is None and self.detector is None:
            raise ValueError("FlowTracker needs a detector or precomputed detections")
        if frames is not None:
            frames = np.asarray(frames)
        if num_frames == 0:
            return PersonTracks.empty(0)

        memo = None
        if pose_mode and self.estimator is not None and frames is not None:
            memo = PoseMemo(self.estimator, frames)
        try:
            tracks, next_id, rows = self._segment(
                frames, flow, detections, poses, start, first, num_frames, pose_mode,
                frame_shape, memo,
            )  # fmt: skip
        finally:
            self.pose_calls += 0 if memo is None else memo.calls
        with_3d = getattr(self.estimator, "keypoints3d", False)
        result = assemble(rows, pose_mode, self.max_persons, with_3d)
        self._state = TrackerState(tracks, next_id, start + num_frames - 1, rows[-1])
        return result

    def _segment(
        self,
        frames: np.ndarray | None,
        flow: np.ndarray | None,
        detections: Sequence[np.ndarray | None] | None,
        poses: Sequence[np.ndarray] | None,
        start: int,
        first: int,
        num_frames: int,
        pose_mode: bool,
        frame_shape: tuple[int, int] | None,
        memo: PoseMemo | None,
    ) -> tuple[tuple[Track, ...], int, list[dict[int, Row]]]:
        """Run the steps over the segment's frames ``first .. num_frames - 1`` from the
        current state (not changed); returns the tracks at the last frame, the next free
        track id and the rows of every frame (the overlap frame's from the state)."""
        s, params = self._state, self.params
        det_boxes = self._detections(frames, detections, start, first, num_frames)
        det_poses = _det_poses(memo, det_boxes, poses, first) if pose_mode else None
        if self.pose_ahead and memo is not None and flow is not None:
            look_ahead(memo, flow, det_boxes, det_poses, first, s.tracks, params, frame_shape)
        frame_rows: list[dict[int, Row]] = [{} for _ in range(num_frames)]
        if first == 1:
            frame_rows[0] = dict(s.last_rows)
        tracks, next_id = s.tracks, s.next_id
        for t in range(first, num_frames):
            tracks, next_id, frame_rows[t] = track_frame(
                tracks, next_id,
                flow=flow[t - 1] if (flow is not None and t >= 1) else None,
                det_boxes=det_boxes[t],
                det_poses=None if det_poses is None else det_poses[t],
                estimate=None if memo is None else partial(memo, t),
                pose_mode=pose_mode, params=params, frame_shape=frame_shape,
            )  # fmt: skip
        return tracks, next_id, frame_rows

    def _detections(
        self,
        frames: np.ndarray | None,
        detections: Sequence[np.ndarray | None] | None,
        start: int,
        first: int,
        num_frames: int,
    ) -> list[np.ndarray | None]:
        """Detector boxes per frame: float64 [N, 5], or None where the detector did not run."""
        out: list[np.ndarray | None] = [None] * num_frames
        if detections is not None:
            for t in range(first, num_frames):
                out[t] = None if detections[t] is None else _as_boxes(detections[t])
            return out
        if self.detector is None:
            return out
        todo = [t for t in range(first, num_frames) if (start + t) % self.detect_every == 0]
        if todo and frames is None:
            raise ValueError("frames are needed to run the detector")
        for b in range(0, len(todo), self.batch_size):
            idx = todo[b : b + self.batch_size]
            result = self.detector(frames[idx])
            if len(result) != len(idx):
                raise ValueError(f"detector returned {len(result)} results for {len(idx)} frames")
            for t, boxes in zip(idx, result, strict=True):
                out[t] = _as_boxes(boxes)
        return out


# --------------------------------------------------------------------------- helpers


def _det_poses(
    memo: PoseMemo | None,
    det_boxes: list[np.ndarray | None],
    poses: Sequence[np.ndarray] | None,
    first: int,
) -> list[np.ndarray | None]:
    """Pose of each detection per frame: float64 [N, 17, 3|6] (None where no detections).

    Precomputed ``poses`` when given, else every detection of the segment in one call of
    the estimator (it batches the crops).
    """
    num_frames = len(det_boxes)
    out: list[np.ndarray | None] = [None] * num_frames
    if poses is not None:
        for t in range(first, num_frames):
            if det_boxes[t] is None:
                continue
            p = as_poses(poses[t])
            if len(p) != len(det_boxes[t]):
                raise ValueError(f"frame {t}: {len(p)} poses for {len(det_boxes[t])} detections")
            out[t] = p
        return out
    todo = [t for t in range(first, num_frames) if det_boxes[t] is not None]
    for t in todo:
        if len(det_boxes[t]) == 0:
            out[t] = np.zeros((0, NUM_JOINTS, 3))
    todo = [t for t in todo if len(det_boxes[t]) > 0]
    if todo and memo is None:
        raise ValueError("frames are needed to run the pose estimator")
    if todo:
        for t, p in zip(todo, memo.batch(todo, [det_boxes[t] for t in todo]), strict=True):
            out[t] = p
    return out


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    """Detections as float64 ``[N, 5]`` (``[N, 4]`` gets score 1); ValueError otherwise."""
    b = np.asarray(boxes, np.float64)
    if b.size == 0:
        return np.zeros((0, 5))
    if b.ndim != 2 or b.shape[1] not in (4, 5):
        raise ValueError(f"detections must be [N, 5] (x1, y1, x2, y2, score), got {b.shape}")
    if b.shape[1] == 4:
        b = np.concatenate([b, np.ones((len(b), 1))], axis=1)
    return b


def _num_frames(frames, flow, detections) -> int:
    """T, from the first of ``frames``, ``flow`` (T - 1 fields) or ``detections`` given."""
    if frames is not None:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}"
            )
        return len(frames)
    if flow is not None:
        return len(flow) + 1
    if detections is not None:
        return len(detections)
    raise ValueError("need frames, flow or detections to know the number of frames")


def _frame_shape(frames, flow) -> tuple[int, int] | None:
    """(H, W) of the frames (or of the flow), or None when neither is given."""
    if frames is not None:
        return tuple(np.shape(frames)[1:3])
    if flow is not None:
        return tuple(np.shape(flow)[1:3])
    return None
