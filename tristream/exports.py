"""Export shard keypoints as the skeleton annotation files mmaction2 and pyskl load as they are.

The file is a pickle of ``{"split": {name: [frame_dir, ...]}, "annotations": [...]}``
(mmaction2 1.x ``PoseDataset`` with ``split=``, pyskl): one split per manifest split (the
shards' ``<split>-NNNNN-of-NNNNN`` names), renamable (``train`` -> ``xsub_train``). Each
annotation has ``frame_dir`` (the video id), ``label`` (when the manifest has labels),
``img_shape`` (the stored frames' (h, w)), ``original_shape`` (the source video's (h, w)),
``total_frames``, ``keypoint`` float32 ``[M, T, 17, 2]`` pixels of ``img_shape`` (pixel
centres at integers) or ``[M, T, 17, 3]`` metres with ``three_d`` (the ``keypoints3d``
modality), and ``keypoint_score`` ``[M, T, 17]``. Persons keep the rows' order: by mean
score over the video, best first, so ``FormatGCNInput(num_person=2)`` keeps the two best.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np

from tristream.shards.coco import NUM_JOINTS
from tristream.shards.files import shard_files, split_of
from tristream.shards.reader import iter_raw_rows
from tristream.shards.row import RowView
from tristream.transforms.skeletons import save_skeletons, to_annotation

LOG = logging.getLogger(__name__)


def video_keypoints(
    rows: list[dict], three_d: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Join the segments of one video: ``keypoints [M, T, 17, 3]`` (x, y, score), track
    ids ``[M]`` and, with ``three_d``, ``keypoints3d [M, T, 17, 3]`` metres (else None).

    ``rows``: the video's decoded rows (any order). Person m is track ``track_ids[m]`` in
    every frame; frames where it is absent score 0. The one-frame overlaps of consecutive
    segments hold the same values. Persons are ordered by their mean joint score over the
    whole video, best first (ties: lower track id), as each row orders its own.
    """
    rows = sorted(rows, key=lambda r: r["segment"])
    total = max(r["start_frame"] + r["num_frames"] for r in rows)
    ids = sorted({int(i) for r in rows for i in r["track_ids"]})
    slot = {tid: m for m, tid in enumerate(ids)}
    out = np.zeros((len(ids), total, NUM_JOINTS, 3), np.float32)
    out3 = np.zeros_like(out) if three_d else None
    for r in rows:
        s, t = r["start_frame"], r["num_frames"]
        for k, tid in enumerate(r["track_ids"]):
            out[slot[int(tid)], s : s + t] = r["keypoints"][k]
            if out3 is not None:
                out3[slot[int(tid)], s : s + t] = r["keypoints3d"][k]
    mean = out[..., 2].mean(axis=(1, 2)) if len(ids) else np.zeros(0)
    order = sorted(range(len(ids)), key=lambda m: (-mean[m], ids[m]))
    return (
        out[order],
        np.asarray(ids, np.int32)[order],
        None if out3 is None else out3[order],
    )


def parse_split_names(items: list[str] | None) -> dict[str, str]:
    """``["train=xsub_train", ...]`` -> ``{"train": "xsub_train", ...}``."""
    out: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"--split-name expects OLD=NEW (e.g. train=xsub_train), got {item!r}")
        out[old] = new
    return out


def export_skeletons(
    out_dir: str | os.PathLike,
    path: str | os.PathLike,
    split_names: Mapping[str, str] | None = None,
    three_d: bool = False,
) -> int:
    """Write every video's keypoints in ``out_dir`` as one skeleton file at ``path``.

    ``split_names`` renames splits (``{"train": "xsub_train"}``); ``three_d`` writes the
    3D keypoints (``keypoint [M, T, 17, 3]`` metres) instead of the 2D ones. Returns the
    number of videos. Raises ValueError if the shards hold no keypoints (or, with
    ``three_d``, no 3D keypoints), or a video appears in two splits.
    """
    split_names = dict(split_names or {})
    modalities = ("keypoints", "keypoints3d") if three_d else ("keypoints",)
    by_video: dict[str, list[dict]] = {}
    split_of_video: dict[str, str] = {}
    files = shard_files(out_dir)  # Parquet when a run wrote both formats
    for file in files:
        split = split_names.get(split_of(file), split_of(file))
        for raw in iter_raw_rows(file):
            row = RowView(raw).decode(modalities)
            if "keypoints" not in row:
                raise ValueError(f"{out_dir}: the shards hold no keypoints (run with --persons)")
            if three_d and "keypoints3d" not in row:
                raise ValueError(
                    f"{out_dir}: the shards hold no 3D keypoints (run with --persons --keypoints3d)"
                )
            vid = row["video_id"]
            if split_of_video.setdefault(vid, split) != split:
                raise ValueError(
                    f"video {vid!r} is in splits {split_of_video[vid]!r} and {split!r}"
                )
            by_video.setdefault(vid, []).append(row)
    annotations, splits = [], {}
    unknown_source = []
    for vid in sorted(by_video):
        rows = by_video[vid]
        kps, _, kps3d = video_keypoints(rows, three_d)
        shape = (rows[0]["height"], rows[0]["width"])
        original = rows[0].get("source_size")
        if original is None:
            unknown_source.append(vid)
        ann = to_annotation(vid, kps, shape, rows[0]["label_index"], original)
        if kps3d is not None:
            ann["keypoint"] = np.ascontiguousarray(kps3d)
        annotations.append(ann)
        splits.setdefault(split_of_video[vid], []).append(vid)
    if unknown_source:
        LOG.warning(
            "%d video(s) written before shards recorded the source size: their "
            "original_shape is the stored frames' (e.g. %s)", len(unknown_source),
            unknown_source[0],
        )  # fmt: skip
    save_skeletons(str(path), annotations, split=splits)
    return len(annotations)
