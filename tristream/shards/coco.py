"""COCO-17 person keypoints: the one home of the joint order, skeleton, flip and OKS sigmas.

Every module that needs a COCO-17 fact (the shard reader and Dataset, pose
decoding, tracking, rendering, skeleton import/export) takes it from here.
numpy only: importable by ``transforms`` and by a trainer without Beam.

Joint indices are 0-based positions in :data:`JOINT_NAMES` (the order of the
``keypoints`` column, ``[M, T, 17, (x, y, score)]``).
"""

from __future__ import annotations

import numpy as np

#: Joints per person.
NUM_JOINTS = 17

#: Joint names in COCO keypoint order (the ``keypoints`` field of the COCO person category).
JOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

#: The COCO person ``skeleton`` field as the annotation files spell it (1-based joint numbers).
SKELETON_1BASED: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip

#: The 19 limbs as 0-based joint index pairs, in the annotation files' order.
SKELETON: tuple[tuple[int, int], ...] = tuple((a - 1, b - 1) for a, b in SKELETON_1BASED)

#: Left/right twins (left joint, right joint): what a horizontal flip swaps.
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)  # fmt: skip


def _flip_permutation(pairs: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    perm = list(range(NUM_JOINTS))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


#: Joint order under a horizontal flip: output joint j is input joint ``FLIP[j]``
#: (the nose stays, each left joint trades places with its right twin). An involution.
FLIP: tuple[int, ...] = _flip_permutation(FLIP_PAIRS)

#: Per-joint OKS sigmas of the COCO keypoint evaluation (float64 ``[17]``, read-only):
#: nose .026, eyes .025, ears .035, shoulders .079, elbows .072, wrists .062,
#: hips .107, knees .087, ankles .089.
OKS_SIGMAS: np.ndarray = (
    np.array(
        [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72,
         0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89],
        np.float64,
    )
    / 10.0
)  # fmt: skip
OKS_SIGMAS.flags.writeable = False

__all__ = [
    "FLIP",
    "FLIP_PAIRS",
    "JOINT_NAMES",
    "NUM_JOINTS",
    "OKS_SIGMAS",
    "SKELETON",
    "SKELETON_1BASED",
]
