"""Export shard keypoints to the mmaction2/pyskl 2D skeleton annotation format."""

from __future__ import annotations

import os

import numpy as np

from tristream.shards.coco import NUM_JOINTS
from tristream.shards.reader import read_rows
from tristream.transforms.skeletons import save_skeletons, to_annotation


def video_keypoints(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Join the segments of one video into ``keypoints [M, T, 17, 3]`` and ``track_ids [M]``.

    ``rows``: the video's decoded rows (any order). Person m is track
    ``track_ids[m]`` in every frame; frames where it is absent score 0. The
    one-frame overlaps of consecutive segments hold the same values.
    """
    rows = sorted(rows, key=lambda r: r["segment"])
    total = max(r["start_frame"] + r["num_frames"] for r in rows)
    ids = sorted({int(i) for r in rows for i in r["track_ids"]})
    slot = {tid: m for m, tid in enumerate(ids)}
    out = np.zeros((len(ids), total, NUM_JOINTS, 3), np.float32)
    for r in rows:
        s, t = r["start_frame"], r["num_frames"]
        for k, tid in enumerate(r["track_ids"]):
            out[slot[int(tid)], s : s + t] = r["keypoints"][k]
    return out, np.asarray(ids, np.int32)


def export_skeletons(
    out_dir: str | os.PathLike, path: str | os.PathLike, split: str | None = None
) -> int:
    """Write every video's keypoints in ``out_dir`` to an mmaction2/pyskl pickle at ``path``.

    ``frame_dir`` is the video id, ``label`` the label index, ``img_shape`` the
    stored frame size; ``split`` names a split listing every video (the
    ``{"split", "annotations"}`` layout). Returns the number of videos written. Raises ValueError
    if the shards hold no keypoints.
    """
    by_video: dict[str, list[dict]] = {}
    for row in read_rows(out_dir, modalities=("keypoints",)):
        if "keypoints" not in row:
            raise ValueError(f"{out_dir}: the shards hold no keypoints (run with --detector)")
        by_video.setdefault(row["video_id"], []).append(row)
    annotations = []
    for video_id in sorted(by_video):
        rows = by_video[video_id]
        kps, _ = video_keypoints(rows)
        shape = (rows[0]["height"], rows[0]["width"])
        annotations.append(to_annotation(video_id, kps, shape, label=rows[0]["label_index"]))
    splits = {split: sorted(by_video)} if split else None
    save_skeletons(str(path), annotations, split=splits)
    return len(annotations)
