"""Flow-based pose tracking (Simple Baselines, Xiao et al. 2018, Algorithm 1).

For every frame of a video, in order:

1. each live track's joints are moved from the previous frame to this one by
   the optical flow (bilinear sample of the flow at each joint);
2. the box of each track seen at the previous frame is rebuilt around its
   propagated joints and enlarged by ``enlarge`` (15 %); these *flow boxes*
   are unified with the detector's boxes by NMS, detections taking precedence;
3. poses are estimated on the unified boxes (when an estimator is given): all the
   detections of a segment in one estimator call, and the flow boxes that can be
   foreseen (those of tracks matched to a detection at the previous frame) in a second
   one, so that the model sees large batches; only unforeseen flow boxes (a track the
   detector has already missed once) are estimated frame by frame;
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

Units and conventions: pixel coordinates of the frames passed in (x right,
y down); keypoints in COCO-17 order as ``(x, y, score)``; boxes as
``(x1, y1, x2, y2, score)``; flow float32 ``[T-1, H, W, 2]`` from frame t to t+1
(see :mod:`tristream.transforms.flow`). Pure numpy; the detector and the pose
estimator are any callables with the contracts in :class:`FlowTracker`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tristream.models.common import box_iou
from tristream.shards.coco import NUM_JOINTS, OKS_SIGMAS

#: Rounds of flow-box poses estimated ahead per segment (see ``FlowTracker._poses_ahead``).
AHEAD_ROUNDS = 4

Detector = Callable[[np.ndarray], Sequence[np.ndarray]]
Estimator = Callable[[np.ndarray, Sequence[np.ndarray]], Sequence[np.ndarray]]


# --------------------------------------------------------------------------- geometry


def oks(a: np.ndarray, b: np.ndarray, area: float) -> float:
    """Object keypoint similarity of two COCO-17 poses.

    ``a``, ``b``: ``[17, 3]`` ``(x, y, score)`` in pixels. ``area``: the object
    scale s² in pixels² (here: the area of the person's box). Joints count
    where both scores are > 0. Returns a float in [0, 1]; 0 when no joint
    counts or ``area`` <= 0.
    """
    return float(_oks_matrix(np.asarray(a)[None], np.asarray(b)[None], np.array([area]))[0, 0])


def _oks_matrix(a: np.ndarray, b: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """OKS of each pose in ``a`` [N,17,3] with each pose in ``b`` [M,17,3]; scales ``areas`` [N]."""
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
    """Median flow ``(dx, dy)`` inside ``box`` (x1, y1, x2, y2[, score]); float64 ``[2]``.

    The box is clipped to the frame; an empty box gives the flow at its
    (clipped) centre.
    """
    h, w = flow.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    c0, c1 = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.ceil(x2), 0, w))
    r0, r1 = int(np.clip(np.floor(y1), 0, h - 1)), int(np.clip(np.ceil(y2), 0, h))
    if c1 <= c0 or r1 <= r0:
        centre = np.array([[(x1 + x2) / 2, (y1 + y2) / 2]])
        return (propagate_points(centre, flow)[0] - np.clip(centre[0], 0, None)).astype(np.float64)
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


# --------------------------------------------------------------------------- tracker


@dataclass
class _Track:
    id: int
    joints: np.ndarray  # float64 [17, 3 or 6]: last matched pose, moved by flow to the current
    # frame (x, y only: the 3D keypoints, columns 3-5 when present, are the matched pose's)
    box: np.ndarray  # float64 [5]: last box, moved to the current frame
    age: int = 0  # frames since the track was last matched (0: matched at the current frame)


@dataclass
class _Candidate:
    box: np.ndarray  # float64 [5]
    pose: np.ndarray | None  # float64 [17, 3 or 6]
    from_detector: bool


@dataclass
class _State:
    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 0
    last_frame: int | None = None  # index in the video of the last processed frame
    last_rows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


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
    - ``pose_ahead``: estimate the foreseeable flow boxes of a segment in one batch
      (see :meth:`_poses_ahead`); False estimates every flow box at its own frame, as
      the paper's loop does. Both give the same tracks.

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
        self._state = _State()
        self._ahead: dict[int, dict[bytes, np.ndarray]] = {}
        #: estimator calls so far (one per segment for the detections, one for the flow
        #: boxes made ahead, plus one per frame whose flow boxes were not foreseen).
        self.pose_calls = 0

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget all tracks: the next :meth:`process` call starts a new video (ids from 0)."""
        self._state = _State()

    def get_state(self) -> dict:
        """The per-video state as plain picklable data (ints and numpy arrays)."""
        s = self._state
        return {
            "tracks": [(t.id, t.joints.copy(), t.box.copy(), t.age) for t in s.tracks],
            "next_id": s.next_id,
            "last_frame": s.last_frame,
            "last_rows": {k: (v[0].copy(), v[1].copy()) for k, v in s.last_rows.items()},
        }

    def set_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_state` (e.g. on another worker)."""
        self._state = _State(
            tracks=[_Track(i, j.copy(), b.copy(), a) for i, j, b, a in state["tracks"]],
            next_id=int(state["next_id"]),
            last_frame=state["last_frame"],
            last_rows={int(k): (v[0].copy(), v[1].copy()) for k, v in state["last_rows"].items()},
        )

    @property
    def last_frame(self) -> int | None:
        """Index in the video of the last frame processed so far (None before the first segment)."""
        return self._state.last_frame

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
        raises leaves the tracker's state unchanged.
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
        saved = self.get_state()
        try:
            return self._process(frames, flow, detections, poses, start, first, num_frames,
                                 pose_mode, frame_shape)  # fmt: skip
        except BaseException:
            self.set_state(saved)  # a failed call leaves the tracker as it was
            raise

    def _process(self, frames, flow, detections, poses, start, first, num_frames, pose_mode,
                 frame_shape) -> PersonTracks:  # fmt: skip
        s = self._state
        det_boxes = self._detections(frames, detections, start, first, num_frames)
        det_poses = (
            self._det_poses(frames, det_boxes, poses, first, num_frames) if pose_mode else None
        )

        self._ahead = {}
        if self.pose_ahead and pose_mode and self.estimator is not None and frames is not None \
                and flow is not None:  # fmt: skip
            self._ahead = self._poses_ahead(frames, flow, det_boxes, det_poses, first, num_frames,
                                            frame_shape)  # fmt: skip
        rows: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [dict() for _ in range(num_frames)]
        if first == 1:
            rows[0] = dict(s.last_rows)
        for t in range(first, num_frames):
            frame_flow = flow[t - 1] if (flow is not None and t >= 1) else None
            self._advance(frame_flow, pose_mode)
            if pose_mode:
                cands = self._pose_candidates(frames, t, det_boxes[t], det_poses[t], frame_shape)
                self._match_poses(cands)
            else:
                self._match_boxes(det_boxes[t])
            for tr in s.tracks:
                if tr.age == 0:
                    kps = tr.joints if pose_mode else np.zeros((NUM_JOINTS, 3))
                    rows[t][tr.id] = (kps.astype(np.float32), tr.box.astype(np.float32))
        s.last_rows = rows[-1]
        s.last_frame = start + num_frames - 1
        return self._assemble(rows, pose_mode)

    # ------------------------------------------------------------------ steps

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

    def _det_poses(
        self,
        frames: np.ndarray | None,
        det_boxes: list[np.ndarray | None],
        poses: Sequence[np.ndarray] | None,
        first: int,
        num_frames: int,
    ) -> list[np.ndarray | None]:
        """Pose of each detection per frame: float64 [N, 17, 3] (None where no detections)."""
        out: list[np.ndarray | None] = [None] * num_frames
        if poses is not None:
            for t in range(first, num_frames):
                if det_boxes[t] is None:
                    continue
                p = _as_poses(poses[t])
                if len(p) != len(det_boxes[t]):
                    raise ValueError(
                        f"frame {t}: {len(p)} poses for {len(det_boxes[t])} detections"
                    )
                out[t] = p
            return out
        todo = [t for t in range(first, num_frames) if det_boxes[t] is not None]
        for t in todo:
            if len(det_boxes[t]) == 0:
                out[t] = np.zeros((0, NUM_JOINTS, 3))
        todo = [t for t in todo if len(det_boxes[t]) > 0]
        if todo and frames is None:
            raise ValueError("frames are needed to run the pose estimator")
        if todo:  # every detection of the segment in one call: the estimator batches the crops
            self.pose_calls += 1
            result = self.estimator(frames[todo], [det_boxes[t].astype(np.float32) for t in todo])
            for t, p in zip(todo, result, strict=True):
                out[t] = _as_poses(p)
                if len(out[t]) != len(det_boxes[t]):
                    raise ValueError(
                        f"estimator returned {len(out[t])} poses for {len(det_boxes[t])} boxes"
                    )
        return out

    def _advance(self, flow: np.ndarray | None, pose_mode: bool) -> None:
        """Move every track to the next frame by the flow; end tracks older than max_age.

        Joints move by the flow at each joint. In pose mode a box moves by the
        mean motion of its track's joints; otherwise (or with fewer than two
        joints of score > 0) by the median flow inside it.
        """
        s = self._state
        for tr in s.tracks:
            tr.age += 1
            if flow is not None:
                tr.joints, tr.box = _moved(tr.joints, tr.box, flow, pose_mode)
        s.tracks = [tr for tr in s.tracks if tr.age <= self.max_age]

    def _pose_candidates(
        self,
        frames: np.ndarray | None,
        t: int,
        boxes: np.ndarray | None,
        poses: np.ndarray | None,
        frame_shape: tuple[int, int] | None,
    ) -> list[_Candidate]:
        """Detections with their poses, plus the flow boxes that NMS keeps, with estimated poses."""
        cands = []
        if boxes is not None:
            cands = [_Candidate(b, p, True) for b, p in zip(boxes, poses, strict=True)]
        if self.estimator is None or frames is None:
            return cands
        flow_boxes = []
        for tr in self._state.tracks:
            if tr.age != 1:  # only tracks seen at the previous frame give flow boxes
                continue
            box = _flow_box(tr.joints, tr.box, self.enlarge, frame_shape)
            if box is not None:
                flow_boxes.append(box)
        if not flow_boxes:
            return cands
        flow_boxes_arr = np.array(flow_boxes)
        det_arr = np.array([c.box for c in cands]).reshape(-1, 5)
        kept: list[np.ndarray] = []
        for i in np.argsort(-flow_boxes_arr[:, 4], kind="stable"):
            fb = flow_boxes_arr[i]
            against = np.concatenate([det_arr, np.array(kept).reshape(-1, 5)])
            if len(against) == 0 or box_iou(fb[None], against).max() <= self.nms_iou:
                kept.append(fb)
        if not kept:
            return cands
        kept_arr = np.array(kept)
        ahead = self._ahead.get(t, {})
        est = [ahead.get(b.tobytes()) for b in kept_arr]
        missing = [i for i, p in enumerate(est) if p is None]
        if missing:  # a box the batch made ahead did not foresee: estimate it now
            self.pose_calls += 1
            got = _as_poses(
                self.estimator(frames[t : t + 1], [kept_arr[missing].astype(np.float32)])[0]
            )
            if len(got) != len(missing):
                raise ValueError(f"estimator returned {len(got)} poses for {len(missing)} boxes")
            for i, p in zip(missing, got, strict=True):
                est[i] = p
        for b, p in zip(kept_arr, est, strict=True):
            if p[:, 2].mean() >= self.min_pose_score:
                cands.append(_Candidate(b, p, False))
        return cands

    def _poses_ahead(
        self,
        frames: np.ndarray,
        flow: np.ndarray,
        det_boxes: list[np.ndarray | None],
        det_poses: list[np.ndarray | None],
        first: int,
        num_frames: int,
        frame_shape: tuple[int, int] | None,
    ) -> dict[int, dict[bytes, np.ndarray]]:
        """Poses of the flow boxes the segment will most likely need, in a few batched calls.

        A flow box at frame t comes from a track seen at t - 1, whose joints there are the
        pose it was matched to: a detection's (known before tracking starts), a flow box's,
        or, at a segment's first frame, the previous segment's. Round 1 computes the flow
        boxes of every detection (and of the previous segment's tracks) exactly as
        :meth:`_pose_candidates` will (the same helpers, the same arithmetic), drops those
        that a detection at t suppresses, and estimates them all in one call; each next
        round does the same from the flow-box poses of the round before that pass
        ``min_pose_score`` (tracks carried by flow between detector runs), up to
        :data:`AHEAD_ROUNDS` rounds. The result maps frame -> box bytes -> pose;
        :meth:`_pose_candidates` takes a pose from here only for a bit-identical box and
        estimates any other box itself, so the tracks are exactly those of frame-by-frame
        estimation.
        """
        sources: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for t in range(first, num_frames):
            if det_boxes[t] is not None and det_poses[t] is not None:
                sources[t] = list(zip(det_poses[t], det_boxes[t], strict=True))
        if first == 1:  # the overlap frame: the previous segment's tracks there
            sources[0] = [(tr.joints, tr.box) for tr in self._state.tracks if tr.age == 0]
        ahead: dict[int, dict[bytes, np.ndarray]] = {}
        for _ in range(AHEAD_ROUNDS):
            wanted: dict[int, list[np.ndarray]] = {}
            for src_t, pairs in sources.items():
                t = src_t + 1
                if t >= num_frames or t < max(first, 1):
                    continue
                dets = det_boxes[t]
                for joints, box in pairs:
                    j, b = _moved(np.array(joints, np.float64), np.array(box, np.float64),
                                  flow[t - 1], True)  # fmt: skip
                    fb = _flow_box(j, b, self.enlarge, frame_shape)
                    if fb is None or fb.tobytes() in ahead.get(t, {}):
                        continue
                    if (
                        dets is not None
                        and len(dets)
                        and box_iou(fb[None], dets).max() > self.nms_iou
                    ):
                        continue  # a detection at t suppresses it: never estimated
                    wanted.setdefault(t, []).append(fb)
            if not wanted:
                break
            idx = sorted(wanted)
            self.pose_calls += 1
            result = self.estimator(
                frames[idx], [np.array(wanted[t]).astype(np.float32) for t in idx]
            )
            sources = {}
            for t, poses in zip(idx, result, strict=True):
                poses = _as_poses(poses)
                if len(poses) != len(wanted[t]):
                    raise ValueError(
                        f"estimator returned {len(poses)} poses for {len(wanted[t])} boxes"
                    )
                for fb, pose in zip(wanted[t], poses, strict=True):
                    ahead.setdefault(t, {})[fb.tobytes()] = pose
                    if pose[:, 2].mean() >= self.min_pose_score:
                        sources.setdefault(t, []).append((pose, fb))
        return ahead

    def _match_poses(self, cands: list[_Candidate]) -> None:
        s = self._state
        tracks = s.tracks
        areas = np.array([_box_area(tr.box) for tr in tracks])
        a = np.array([tr.joints[:, :3] for tr in tracks]).reshape(-1, NUM_JOINTS, 3)
        b = np.array([c.pose[:, :3] for c in cands]).reshape(-1, NUM_JOINTS, 3)
        sim = _oks_matrix(_seen(a, self.joint_score), _seen(b, self.joint_score), areas)
        sim = np.where(sim >= self.oks_threshold, sim, -1.0)
        # A pose with fewer than two joints seen says nothing about who it is: such a
        # track or candidate is matched by its box instead (IoU, at iou_threshold).
        blind = ((a[:, :, 2] >= self.joint_score).sum(1) < 2)[:, None] | (
            (b[:, :, 2] >= self.joint_score).sum(1) < 2
        )[None, :]
        if blind.any():
            iou = box_iou(np.array([tr.box for tr in tracks]).reshape(-1, 5),
                          np.array([c.box for c in cands]).reshape(-1, 5))  # fmt: skip
            sim = np.where(blind, np.where(iou >= self.iou_threshold, iou, -1.0), sim)
        pairs = _greedy(sim, [tr.age for tr in tracks], 0.0)
        matched = set()
        for ti, ci in pairs:
            tracks[ti].joints = cands[ci].pose.copy()
            tracks[ti].box = cands[ci].box.copy()
            tracks[ti].age = 0
            matched.add(ci)
        for ci, c in enumerate(cands):
            if ci not in matched and c.from_detector:
                s.tracks.append(_Track(s.next_id, c.pose.copy(), c.box.copy(), 0))
                s.next_id += 1

    def _match_boxes(self, boxes: np.ndarray | None) -> None:
        s = self._state
        if boxes is None:  # detector not run: tracks seen at the previous frame go on by flow
            for tr in s.tracks:
                if tr.age == 1:
                    tr.age = 0
            return
        tracks = s.tracks
        sim = box_iou(np.array([tr.box for tr in tracks]).reshape(-1, 5), boxes)
        pairs = _greedy(sim, [tr.age for tr in tracks], self.iou_threshold)
        matched = set()
        for ti, ci in pairs:
            tracks[ti].box = boxes[ci].copy()
            tracks[ti].age = 0
            matched.add(ci)
        for ci, box in enumerate(boxes):
            if ci not in matched:
                s.tracks.append(_Track(s.next_id, np.zeros((NUM_JOINTS, 3)), box.copy(), 0))
                s.next_id += 1

    def _assemble(
        self, rows: list[dict[int, tuple[np.ndarray, np.ndarray]]], pose_mode: bool
    ) -> PersonTracks:
        num_frames = len(rows)
        ids = sorted({i for r in rows for i in r})
        if not ids:
            return PersonTracks.empty(num_frames, getattr(self.estimator, "keypoints3d", False))
        totals = dict.fromkeys(ids, 0.0)
        width = 3
        for r in rows:
            for i, (kps, box) in r.items():
                totals[i] += float(kps[:, 2].mean()) if pose_mode else float(box[4])
                width = kps.shape[-1]
        order = sorted(ids, key=lambda i: (-totals[i] / num_frames, i))[: self.max_persons]
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


# --------------------------------------------------------------------------- helpers


def _moved(
    joints: np.ndarray, box: np.ndarray, flow: np.ndarray, pose_mode: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A track's joints ``[17, 3]`` and box ``[5]`` (float64) moved by one flow field.

    Joints move by the flow at each joint. In pose mode the box moves by the mean motion
    of the joints with score > 0 (when there are two or more), else by the median flow
    inside it. Returns new arrays.
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
    return joints, box


def _flow_box(
    joints: np.ndarray, box: np.ndarray, enlarge: float, frame_shape: tuple[int, int] | None
) -> np.ndarray | None:
    """The flow box of a track: its joints' box enlarged by ``enlarge`` (its own box when
    fewer than two joints are seen), clipped to the frame, with the track's box score;
    float64 ``[5]``, or None when under 1 px wide or high."""
    jb = joints_box(joints, enlarge)
    out = box[:4].copy() if jb is None else jb
    if frame_shape is not None:
        h, w = frame_shape
        out = np.clip(out, 0, [w, h, w, h])
    if out[2] - out[0] >= 1 and out[3] - out[1] >= 1:
        return np.append(out, box[4])
    return None


def _seen(poses: np.ndarray, min_score: float) -> np.ndarray:
    """``poses [N, 17, 3]`` with the scores of joints below ``min_score`` set to 0 (unseen)."""
    out = poses.copy()
    out[..., 2] = np.where(out[..., 2] >= min_score, out[..., 2], 0.0)
    return out


def _greedy(sim: np.ndarray, ages: Sequence[int], threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, best similarity first (ties: younger track first)."""
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


def _box_area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64)
    if b.size == 0:
        return np.zeros((0, 5))
    if b.ndim != 2 or b.shape[1] not in (4, 5):
        raise ValueError(f"detections must be [N, 5] (x1, y1, x2, y2, score), got {b.shape}")
    if b.shape[1] == 4:
        b = np.concatenate([b, np.ones((len(b), 1))], axis=1)
    return b


def _as_poses(poses: np.ndarray) -> np.ndarray:
    p = np.asarray(poses, np.float64)
    if p.size == 0:
        return np.zeros((0, NUM_JOINTS, p.shape[-1] if p.ndim == 3 and p.shape[-1] == 6 else 3))
    if p.ndim != 3 or p.shape[1] != NUM_JOINTS or p.shape[2] not in (3, 6):
        raise ValueError(
            f"poses must be [N, 17, 3] (x, y, score) or [N, 17, 6] (+ x, y, z metres), "
            f"got {p.shape}"
        )
    return p


def _num_frames(frames, flow, detections) -> int:
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
    if frames is not None:
        return tuple(np.shape(frames)[1:3])
    if flow is not None:
        return tuple(np.shape(flow)[1:3])
    return None
