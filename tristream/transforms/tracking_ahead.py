"""The pose estimator of one segment, with a memory, and the look-ahead that fills it.

Tracking asks for poses frame by frame (the flow boxes of frame t are known only once
frame t - 1 is tracked), but a pose model wants large batches. :class:`PoseMemo` wraps
the estimator for one segment: it remembers every pose it has estimated, keyed by
(frame index in the segment, box), and estimates only the boxes it has not seen.
:func:`look_ahead` fills it before tracking starts, in a few batched calls, with the
poses of the flow boxes the tracker will most likely ask for. It foresees them with the
tracker's own steps (:func:`~.tracking_steps.predict` and
:func:`~.tracking_steps.candidate_flow_boxes`), so a foreseen box is the very box the
tracker computes later; whatever it does not foresee is estimated when asked for. The
tracks are therefore exactly those of frame-by-frame estimation, whatever the
look-ahead guesses (given an estimator whose result for a box does not depend on the
other boxes of the call).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tristream.transforms.tracking_steps import (
    Estimator,
    Params,
    Track,
    as_poses,
    candidate_flow_boxes,
    predict,
)

#: Rounds of flow-box poses estimated ahead per segment (see :func:`look_ahead`).
AHEAD_ROUNDS = 4


def _key(t: int, box: np.ndarray) -> tuple[int, tuple[float, ...]]:
    """The memory's key of ``box`` (float ``[5]``) at frame ``t``: its exact values."""
    return t, tuple(float(v) for v in box)


class PoseMemo:
    """An estimator for the frames of one segment, remembering its poses.

    ``estimator``: the :data:`~.tracking_steps.Estimator` contract. ``frames``: uint8
    ``[T, H, W, 3]``, the segment. ``calls`` counts the estimator calls made through this
    object. Poses are float64 ``[17, 3|6]`` (see :func:`~.tracking_steps.as_poses`).
    """

    def __init__(self, estimator: Estimator, frames: np.ndarray) -> None:
        self.estimator = estimator
        self.frames = frames
        self.calls = 0
        self._poses: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}

    def batch(self, idx: Sequence[int], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One estimator call: the poses in ``boxes[k]`` (float ``[N_k, 5]``) on frame
        ``idx[k]``; float64 ``[N_k, 17, 3|6]`` each. Not remembered."""
        self.calls += 1
        result = self.estimator(self.frames[list(idx)], [b.astype(np.float32) for b in boxes])
        out = []
        for b, p in zip(boxes, result, strict=True):
            p = as_poses(p)
            if len(p) != len(b):
                raise ValueError(f"estimator returned {len(p)} poses for {len(b)} boxes")
            out.append(p)
        return out

    def knows(self, t: int, box: np.ndarray) -> bool:
        """Whether the pose in ``box`` (float ``[5]``) at frame ``t`` is remembered."""
        return _key(t, box) in self._poses

    def prefetch(self, wanted: Mapping[int, Sequence[np.ndarray]]) -> dict[int, list[np.ndarray]]:
        """Estimate and remember, in one call, the poses in the boxes ``wanted[t]`` (each
        float ``[5]``) of every frame t; returns them in the same layout."""
        idx = sorted(wanted)
        poses = self.batch(idx, [np.array(wanted[t]) for t in idx])
        out = {}
        for t, frame_poses in zip(idx, poses, strict=True):
            out[t] = list(frame_poses)
            for box, pose in zip(wanted[t], frame_poses, strict=True):
                self._poses[_key(t, box)] = pose
        return out

    def __call__(self, t: int, boxes: np.ndarray) -> list[np.ndarray]:
        """The poses in ``boxes`` (float ``[K, 5]``) at frame ``t``: remembered ones as they
        are, the others in one estimator call (then remembered)."""
        poses = [self._poses.get(_key(t, b)) for b in boxes]
        missing = [i for i, p in enumerate(poses) if p is None]
        if missing:
            (got,) = self.batch([t], [boxes[missing]])
            for i, p in zip(missing, got, strict=True):
                poses[i] = self._poses[_key(t, boxes[i])] = p
        return poses


def look_ahead(
    memo: PoseMemo,
    flow: np.ndarray,
    det_boxes: Sequence[np.ndarray | None],
    det_poses: Sequence[np.ndarray | None],
    first: int,
    carried: Sequence[Track],
    params: Params,
    frame_shape: tuple[int, int] | None,
    rounds: int = AHEAD_ROUNDS,
) -> None:
    """Fill ``memo`` with the poses of the flow boxes the segment will most likely need.

    ``flow``: float ``[T-1, H, W, 2]``. ``det_boxes[t]`` / ``det_poses[t]``: float64
    ``[N, 5]`` / ``[N, 17, 3|6]`` detections of frame t and their poses (None: detector not
    run). Tracking starts at frame ``first`` (1 after an overlap frame, whose tracks seen
    there are ``carried``).

    A flow box at frame t comes from a track seen at t - 1, whose joints and box there are
    those of the candidate it was matched to: a detection (known before tracking starts),
    a flow box, or a carried track. Each round takes such *sources* (round 1: every
    detection and every carried track), predicts each one alone to the next frame
    (:func:`~.tracking_steps.predict`) and takes its candidate flow box
    (:func:`~.tracking_steps.candidate_flow_boxes`: a box that survives NMS among all the
    frame's flow boxes also survives alone), and estimates the new boxes of all frames in
    one call. The next round's sources are the boxes whose pose passes
    ``params.min_pose_score`` (tracks carried by the flow between detector runs).
    """
    num_frames = len(flow) + 1
    # sources: frame -> stand-in tracks (id -1, seen at that frame), only ever read
    sources: dict[int, list[Track]] = {}
    for t in range(first, num_frames):
        if det_boxes[t] is not None and det_poses[t] is not None:
            sources[t] = [Track(-1, p, b) for p, b in zip(det_poses[t], det_boxes[t], strict=True)]
    if first == 1:
        sources[0] = [tr for tr in carried if tr.age == 0]
    for _ in range(rounds):
        wanted: dict[int, list[np.ndarray]] = {}
        seen = set()  # the keys of the boxes in wanted
        for src_t, tracks in sources.items():
            t = src_t + 1
            if t >= num_frames:
                continue
            for src in tracks:
                moved = predict((src,), flow[t - 1], True, params.max_age)
                for box in candidate_flow_boxes(moved, det_boxes[t], params, frame_shape):
                    if not memo.knows(t, box) and _key(t, box) not in seen:
                        seen.add(_key(t, box))
                        wanted.setdefault(t, []).append(box)
        if not wanted:
            return
        poses = memo.prefetch(wanted)
        sources = {}
        for t, boxes in wanted.items():
            for box, pose in zip(boxes, poses[t], strict=True):
                if pose[:, 2].mean() >= params.min_pose_score:
                    sources.setdefault(t, []).append(Track(-1, pose, box))
