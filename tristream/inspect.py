"""Look at a run's output: a text summary and a contact sheet (a picture of one video's shards).

``summary(out)`` reads ``manifest.json``, ``failures.jsonl`` and the shard
files' metadata; ``contact_sheet(out)`` draws, for frames picked evenly over
one video, a row each of RGB frames, flow (Middlebury colour wheel, with its
legend), rendered pose frames and keypoints/boxes/track ids over the RGB
frames; the last two only when the shards hold those columns. Only the picked
frames are decoded. No Beam here: this module needs the shard reader and
``tristream.transforms`` (numpy, OpenCV) only.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from typing import Any

import cv2
import numpy as np

from tristream.shards import storage
from tristream.shards.files import (
    ShardRowReader,
    index_shard,
    iter_raw_rows,
    open_parquet,
    shard_files,
    shard_format,
)
from tristream.shards.row import RowView
from tristream.shards.schema import COLUMNS_BY_NAME
from tristream.transforms.flowviz import color_wheel_legend, flow_to_color
from tristream.transforms.render import RenderStyle, render_pose

#: Width of the label column on the left of the sheet, pixels.
LABEL_W = 112
#: Height of the header (title line and frame numbers), pixels.
HEADER_H = 34
#: Gap between tiles, pixels.
GAP = 4
#: Sheet background and text grey levels.
BACKGROUND, INK = 255, 32
#: Row names in sheet order (absent modalities are left out).
ROW_NAMES = ("RGB", "flow", "pose", "keypoints", "3D")

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def pick_frames(num_frames: int, frames: int) -> list[int]:
    """``frames`` frame indices spread evenly over ``[0, num_frames - 1]``, first and last included.

    Fewer when the video is shorter (no index repeats).
    """
    if num_frames <= 0 or frames <= 0:
        return []
    picked = np.rint(np.linspace(0, num_frames - 1, min(frames, num_frames))).astype(int)
    return sorted({int(i) for i in picked})


def tile_origin(row: int, col: int, tile_h: int, tile_w: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` in the sheet of the tile in sheet row ``row``, column ``col``."""
    return HEADER_H + row * (tile_h + GAP), LABEL_W + col * (tile_w + GAP)


# --------------------------------------------------------------------------- one video's rows


def _first_video_id(files: list[str]) -> str | None:
    for file in files:
        for row in iter_raw_rows(file, columns=["video_id"]):
            return row["video_id"]
    return None


def _video_rows_in(file: str, video_id: str) -> list[dict]:
    """The raw rows of ``video_id`` in one shard file (only their ``video_id`` read of the rest)."""
    index = index_shard(file, ["video_id"])
    wanted = [k for k, vid in enumerate(index.values["video_id"]) if vid == video_id]
    if not wanted:
        return []
    with ShardRowReader([index.info]) as reader:
        return [reader.read(0, int(index.groups[k]), int(index.positions[k])) for k in wanted]


def video_raw_rows(out_dir: str | os.PathLike, video_id: str | None = None) -> list[dict]:
    """The undecoded rows of one video, sorted by segment.

    ``out_dir`` is an output folder, a shard folder or one shard file;
    ``video_id`` None takes the first video of the first shard.
    Raises FileNotFoundError without shards, ValueError for an unknown video.
    """
    files = shard_files(out_dir)
    if not files:
        raise FileNotFoundError(f"no shard files under {out_dir}")
    if video_id is None:
        video_id = _first_video_id(files)
        if video_id is None:
            raise ValueError(f"the shards under {out_dir} hold no rows")
    rows: list[dict] = []
    for file in files:
        rows.extend(_video_rows_in(file, video_id))
    if not rows:
        raise ValueError(f"video {video_id!r} is not in the shards under {out_dir}")
    return sorted(rows, key=lambda r: (r["segment"], r["start_frame"]))


class VideoFrames:
    """Random access to one video's frames across its segments (rows), decoding on demand.

    ``rows``: the video's raw rows (:func:`video_raw_rows`). Frame ``i`` is
    frame ``i`` of the decoded video counted from the first row's
    ``start_frame``; consecutive segments overlap by one frame (segment k's
    first frame is segment k-1's last), so the video has
    ``num_frames = max(start_frame + num_frames) - first start_frame`` frames.
    """

    def __init__(self, rows: list[dict]):
        self.rows = [RowView(r) for r in rows]
        self.meta = self.rows[0].meta
        self.base = int(rows[0]["start_frame"])
        self.num_frames = max(int(r["start_frame"]) + int(r["num_frames"]) for r in rows)
        self.num_frames -= self.base
        self.height, self.width = self.rows[0].height, self.rows[0].width

    def has(self, column: str) -> bool:
        return column in self.rows[0]

    def _locate(self, i: int, pairs: bool = False) -> tuple[RowView, int] | None:
        """The first row holding frame ``i`` (or flow pair ``i -> i+1``) and its index there."""
        for row in self.rows:
            k = i - (int(row["start_frame"]) - self.base)
            n = row.num_frames - (1 if pairs else 0)
            if 0 <= k < n:
                return row, k
        return None

    def image(self, column: str, i: int) -> np.ndarray:
        """uint8 ``[H, W, 3]``: frame ``i`` of ``rgb`` or ``pose``."""
        found = self._locate(i)
        if found is None:
            raise IndexError(f"frame {i} is in no row of {self.rows[0]['video_id']!r}")
        row, k = found
        return next(row.iter_images(column, [k]))

    def flow(self, i: int) -> np.ndarray | None:
        """float32 ``[H, W, 2]``: flow from frame ``i`` to ``i + 1`` in pixels; None if absent."""
        found = self._locate(i, pairs=True)
        if found is None:
            return None
        row, k = found
        return row.flow([k])[0]

    def persons3d(self, i: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """The persons present at frame ``i`` with 3D joints: ``(track_id, xyz [17, 3]
        metres, score [17])``."""
        found = self._locate(i)
        if found is None:
            return []
        row, k = found
        kp, k3, ids = row.keypoints(), row.keypoints3d(), row.track_ids()
        return [
            (int(ids[p]), k3[p, k], kp[p, k, :, 2])
            for p in range(row.num_persons)
            if (kp[p, k, :, 2] > 0).any()
        ]

    def persons(self, i: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """The persons present at frame ``i``: ``(track_id, keypoints [17, 3], box [5])``.

        A track is present where any of its joint scores is above zero.
        """
        found = self._locate(i)
        if found is None:
            return []
        row, k = found
        kp, boxes, ids = row.keypoints(), row.boxes(), row.track_ids()
        return [
            (int(ids[p]), kp[p, k], boxes[p, k])
            for p in range(row.num_persons)
            if (kp[p, k, :, 2] > 0).any()
        ]


# --------------------------------------------------------------------------- drawing


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.4,
          color=(INK, INK, INK)) -> None:  # fmt: skip
    cv2.putText(img, text, (x, y), _FONT, scale, color, 1, cv2.LINE_AA)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for a track id (golden-ratio hue steps)."""
    hue = (track_id * 0.618033988749895) % 1.0
    hsv = np.uint8([[[int(hue * 180), 230, 230]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_persons(frame: np.ndarray, persons: list[tuple[int, np.ndarray, np.ndarray]],
                 score_threshold: float = 0.3) -> np.ndarray:  # fmt: skip
    """Keypoints (coarse bars), boxes and track ids over a copy of uint8 ``[H, W, 3]`` ``frame``."""
    h = frame.shape[0]
    if not persons:
        return frame.copy()
    style = RenderStyle(marks="bars", coloring="coarse", thickness="uniform",
                        uniform_px=max(1.0, h / 96), score_threshold=score_threshold)  # fmt: skip
    out = render_pose(frame, np.stack([kp for _, kp, _ in persons]), style)
    for track_id, _, box in persons:
        if not np.isfinite(box[:4]).all() or box[2] <= box[0] or box[3] <= box[1]:
            continue
        color = track_color(track_id)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, max(1, h // 160), cv2.LINE_AA)
        size = max(0.35, h / 256)
        ty = y1 - 3 if y1 >= 12 + 20 * (size - 0.35) else y1 + int(12 + 20 * (size - 0.35))
        _text(out, f"#{track_id}", x1 + 2, ty, size, color)
    return out


def draw_skeletons_3d(
    persons: list[tuple[int, np.ndarray, np.ndarray]], h: int, w: int,
    score_threshold: float = 0.3,
) -> np.ndarray:  # fmt: skip
    """Front (x, y) and side (z, y) views of 3D skeletons side by side on a white
    ``[h, w, 3]`` tile: metres around each person's hips, 2.4 m tall per view, y down;
    each track in its colour. Joints under ``score_threshold`` (2D score) are left out."""
    from tristream.shards.coco import SKELETON

    tile = np.full((h, w, 3), BACKGROUND, np.uint8)
    half = w // 2
    cv2.line(tile, (half, 0), (half, h - 1), (200, 200, 200), 1)
    scale = h / 2.4  # pixels per metre
    for x0, axis, label in ((0, 0, "front"), (half, 2, "side")):
        _text(tile, label, x0 + 3, 11, 0.3)
        for track_id, xyz, score in persons:
            color = track_color(track_id)
            seen = score >= score_threshold
            pts = np.stack([xyz[:, axis] * scale + x0 + half / 2, xyz[:, 1] * scale + h / 2], -1)
            for a, b in SKELETON:
                if seen[a] and seen[b]:
                    pa, pb = pts[a].round().astype(int), pts[b].round().astype(int)
                    cv2.line(tile, tuple(pa), tuple(pb), color, max(1, h // 100), cv2.LINE_AA)
    return tile


def _fit(tile: np.ndarray, h: int, w: int) -> np.ndarray:
    if tile.shape[:2] == (h, w):
        return tile
    return cv2.resize(tile, (w, h), interpolation=cv2.INTER_AREA)


def contact_sheet(out_dir: str | os.PathLike, video_id: str | None = None, frames: int = 8,
                  tile_height: int | None = None) -> np.ndarray:  # fmt: skip
    """A picture of one video's shards: uint8 ``[H, W, 3]`` RGB.

    Args:
        out_dir: a run's output folder, a folder of shards or a shard file.
        video_id: the video to show; None takes the first video of the first shard.
        frames: how many frames to show, picked evenly over the whole video
            (:func:`pick_frames`; the video's segments joined, overlaps once).
        tile_height: height of each tile in pixels (aspect kept); None keeps
            the stored frame size.

    Returns:
        The sheet: a header (video id, frame count, size, fps; the frame index
        above each column), then one row per modality in :data:`ROW_NAMES`
        order that the shards hold: ``RGB``; ``flow`` from the picked frame to
        the next one (the last frame shows the flow into it) on the
        Middlebury wheel, saturated at the 99th percentile of the shown flow
        lengths, with the wheel's legend under the row label; ``pose`` (the
        stored rendered frames); ``keypoints`` (joints, boxes and ``#track``
        ids over the RGB frames); ``3D`` (the 3D joints' front and side views, see
        :func:`draw_skeletons_3d`). Tile ``(row, col)`` starts at
        :func:`tile_origin`.
    """
    rows = video_raw_rows(out_dir, video_id)
    video = VideoFrames(rows)
    picked = pick_frames(video.num_frames, frames)
    h, w = video.height, video.width
    th = int(tile_height) if tile_height else h
    tw = max(1, int(round(w * th / h)))
    names = ["RGB"]
    if video.has("flow_x"):
        names.append("flow")
    if video.has("pose"):
        names.append("pose")
    if video.has("keypoints"):
        names.append("keypoints")
    if video.has("keypoints3d"):
        names.append("3D")

    tiles: dict[str, list[np.ndarray]] = defaultdict(list)
    rgb = [video.image("rgb", i) for i in picked]
    tiles["RGB"] = [_fit(f, th, tw) for f in rgb]
    radius = 0.0
    if "flow" in names:
        flows = []
        for i in picked:
            f = video.flow(min(i, video.num_frames - 2)) if video.num_frames > 1 else None
            flows.append(f if f is not None else np.zeros((h, w, 2), np.float32))
        lengths = np.concatenate([np.hypot(f[..., 0], f[..., 1]).ravel() for f in flows])
        radius = max(float(np.percentile(lengths, 99)), 0.5)
        tiles["flow"] = [_fit(flow_to_color(f, radius), th, tw) for f in flows]
    if "pose" in names:
        tiles["pose"] = [_fit(video.image("pose", i), th, tw) for i in picked]
    if "keypoints" in names:
        # Drawn at the tile's size (crisp lines and labels): persons scaled to it.
        sx, sy = tw / w, th / h
        scale = np.array([sx, sy, sx, sy], np.float32)
        for frame, i in zip(rgb, picked):
            persons = [
                (tid, kp * np.array([sx, sy, 1], np.float32), np.r_[box[:4] * scale, box[4:]])
                for tid, kp, box in video.persons(i)
            ]
            tiles["keypoints"].append(draw_persons(_fit(frame, th, tw), persons))
    if "3D" in names:
        tiles["3D"] = [draw_skeletons_3d(video.persons3d(i), th, tw) for i in picked]
    sheet_h = HEADER_H + len(names) * (th + GAP)
    sheet_w = LABEL_W + len(picked) * (tw + GAP)
    sheet = np.full((sheet_h, sheet_w, 3), BACKGROUND, np.uint8)
    fps = rows[0].get("fps")
    plural = "" if len(rows) == 1 else "s"
    title = f"{rows[0]['video_id']}: {video.num_frames} frames, {len(rows)} row{plural}, {w}x{h}"
    if fps:
        title += f", {fps:g} fps"
    if (th, tw) != (h, w):
        title += f" (tiles {tw}x{th})"
    if video.meta.get("render"):
        title += f", pose {video.meta['render']}"
    _text(sheet, title, 4, 14, 0.45)
    for c, i in enumerate(picked):
        y, x = tile_origin(0, c, th, tw)
        _text(sheet, f"t={i}", x, y - 5, 0.35)
    for r, name in enumerate(names):
        for c, tile in enumerate(tiles[name]):
            y, x = tile_origin(r, c, th, tw)
            sheet[y : y + th, x : x + tw] = tile
        y, _ = tile_origin(r, 0, th, tw)
        _text(sheet, name, 6, y + 14, 0.45)
        if name == "flow":
            _text(sheet, f"t->t+1, max {radius:.1f}px", 6, y + 28, 0.3)
            size = min(LABEL_W - 16, th - 36)
            if size >= 12:
                sheet[y + 34 : y + 34 + size, 6 : 6 + size] = color_wheel_legend(size, BACKGROUND)
    return sheet


def write_contact_sheet(out_dir: str | os.PathLike, png_path: str | os.PathLike,
                        video_id: str | None = None, frames: int = 8,
                        tile_height: int | None = None) -> np.ndarray:  # fmt: skip
    """Write :func:`contact_sheet` to ``png_path`` (PNG, max compression); return the image."""
    sheet = contact_sheet(out_dir, video_id, frames, tile_height)
    png_path = os.fspath(png_path)
    folder = os.path.dirname(os.path.abspath(png_path))
    os.makedirs(folder, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9])  # fmt: skip
    if not ok:
        raise RuntimeError("OpenCV failed to encode the contact sheet as PNG")
    with open(png_path, "wb") as f:
        f.write(buf.tobytes())
    return sheet


# --------------------------------------------------------------------------- summary


def _modality(column: str) -> str:
    col = COLUMNS_BY_NAME.get(column)
    return col.modality if col is not None and col.modality else "other"


def modality_bytes(
    out_dir: str | os.PathLike, files: list[str] | None = None
) -> tuple[dict[str, int], str]:
    """Bytes per modality (``rgb``, ``flow``, ``pose``, ``keypoints``, ``other``) in the shards.

    ``other`` is the scalar columns (ids, sizes, meta). Parquet: the
    compressed sizes of the column chunks from the file footers (no data
    read), plus ``footer``: the rest of each file (footer, statistics), so the
    counts add up to the files' sizes. TFRecord only: the summed lengths of the stored values
    (bytes, 4 per float/int32, 8 per int64 scalar). Returns the counts and
    which of the two it measured (``"parquet columns"`` / ``"tfrecord values"``).
    ``files``: the shard files to count (default: all of ``out_dir``'s).
    """
    files = shard_files(out_dir) if files is None else files
    sizes: dict[str, int] = defaultdict(int)
    if files and shard_format(files[0]) == "parquet":
        for file in files:
            md = open_parquet(file).metadata
            columns = 0
            for g in range(md.num_row_groups):
                group = md.row_group(g)
                for c in range(group.num_columns):
                    chunk = group.column(c)
                    modality = _modality(chunk.path_in_schema.split(".")[0])
                    sizes[modality] += chunk.total_compressed_size
                    columns += chunk.total_compressed_size
            sizes["footer"] += max(storage.getsize(file) - columns, 0)
        return dict(sizes), "parquet columns"
    for file in files:
        for row in iter_raw_rows(file):
            for name, value in row.items():
                sizes[_modality(name)] += _value_bytes(value)
    return dict(sizes), "tfrecord values"


def _value_bytes(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, (list, tuple)):
        return sum(_value_bytes(v) for v in value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return 4


def _row_index(files: list[str], problems: dict[str, str]) -> list[tuple[str, int, int]]:
    """``(video_id, start_frame, num_frames)`` of every row of ``files`` (Parquet: those
    columns only); a file that cannot be read is left out and named in ``problems``."""
    columns = ["video_id", "start_frame", "num_frames"]
    index = []
    for file in files:
        try:
            rows = [(r["video_id"], r["start_frame"], r["num_frames"])
                    for r in iter_raw_rows(file, columns)]  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any reader error: name the file
            problems[file] = f"unreadable: {file} ({type(exc).__name__}: {exc})"
            continue
        index += rows
    return index


def shard_problems(out_dir: str | os.PathLike, manifest: dict | None) -> dict[str, str]:
    """What is wrong with the shard files that ``manifest`` (``manifest.json``) lists: each
    one missing, or of another size than it says (truncated or rewritten). Returns
    ``{path: one line naming the file}``; no file is read (sizes only: ``sha256sum`` checks
    the SHA-256 that manifest.json records per file)."""
    if not manifest:
        return {}
    out_dir = os.fspath(out_dir)
    problems = {}
    for shard in manifest.get("shards", []):
        for f in shard.get("files", []):
            path = storage.join(out_dir, f["path"])
            if not storage.isfile(path):
                problems[path] = (
                    f"missing: {f['path']} (manifest.json lists it with {shard['rows']} rows)"
                )
                continue
            size = storage.getsize(path)
            if size != f["bytes"]:
                problems[path] = (
                    f"truncated or changed: {f['path']} is {size} bytes, manifest.json says "
                    f"{f['bytes']}"
                )
    return problems


def _mb(n: float) -> str:
    """Bytes as a short human string (decimal units)."""
    if n < 1e3:
        return f"{int(n)} B"
    if n < 1e6:
        return f"{n / 1e3:.1f} kB"
    if n < 1e9:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e9:.2f} GB"


def summary(out_dir: str | os.PathLike, max_videos: int = 20) -> str:
    """What a run wrote, as text lines.

    Totals from ``manifest.json`` (when present) and from the shards
    themselves: videos, rows, frames (each video's distinct frames, and the
    stored ones with the one-frame overlaps), bytes per modality, per shard
    file and per video (the first ``max_videos``), then one line per failed
    video from ``failures.jsonl``. Raises FileNotFoundError when ``out_dir``
    has neither a manifest nor shards. ``out_dir`` may be an ``s3://`` or
    ``gs://`` URI (:mod:`tristream.shards.storage`).
    """
    out_dir = os.fspath(out_dir)
    storage.check_bucket(out_dir)
    manifest = None
    manifest_path = storage.join(out_dir, "manifest.json")
    is_dir = storage.isdir(out_dir)
    if is_dir and storage.isfile(manifest_path):
        manifest = json.loads(storage.read_text(manifest_path))
    files = shard_files(out_dir) if storage.exists(out_dir) else []
    if manifest is None and not files:
        raise FileNotFoundError(f"no manifest.json and no shards in {out_dir}")
    lines = []
    if manifest is not None:
        t = manifest["totals"]
        lines.append(
            f"{out_dir}: {t['videos_written']} of {t['videos']} videos written, "
            f"{t['videos_failed']} failed; {t['rows']} rows, {t['frames']} frames, "
            f"{_mb(t['bytes'])} (manifest)"
        )
        lines.append(
            f"modalities: {', '.join(manifest['modalities'])}; formats: "
            f"{', '.join(manifest['formats'])}; schema v{manifest['schema_version']}; "
            f"config {manifest.get('config_hash', '?')}"
        )
    problems = shard_problems(out_dir, manifest)
    files = [f for f in files if f not in problems]
    index = _row_index(files, problems) if files else []
    files = [f for f in files if f not in problems]
    per_video: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for vid, start, n in index:
        per_video[vid].append((start, n))
    distinct = {v: max(s + n for s, n in segs) - min(s for s, _ in segs)
                for v, segs in per_video.items()}  # fmt: skip
    stored = sum(n for _, _, n in index)
    on_disk = sum(storage.getsize(f) for f in files)
    kind = shard_format(files[0]) if files else "tfrecord"
    lines.append(
        f"shards ({kind}): {len(files)} files, {len(per_video)} videos, {len(index)} rows, "
        f"{sum(distinct.values())} frames ({stored} stored), {_mb(on_disk)}"
    )
    if files:
        sizes, how = modality_bytes(out_dir, files)
        total = sum(sizes.values()) or 1
        order = [m for m in ("rgb", "flow", "pose", "keypoints", "keypoints3d", "other", "footer")
                 if m in sizes]  # fmt: skip
        parts = [f"{m} {_mb(sizes[m])} ({100 * sizes[m] / total:.0f}%)" for m in order]
        lines.append(f"bytes per modality ({how}): " + ", ".join(parts))
        every = files
        if is_dir:  # both formats of a --format both run
            every = shard_files(out_dir, "parquet") + shard_files(out_dir, "tfrecord")
        for file in every:
            lines.append(f"  {storage.relative(file, out_dir) if is_dir else file}: "
                         f"{_mb(storage.getsize(file))}")  # fmt: skip
    for problem in problems.values():
        lines.append(f"  PROBLEM {problem}")
    for vid in sorted(per_video)[:max_videos]:
        lines.append(f"  video {vid}: {len(per_video[vid])} rows, {distinct[vid]} frames")
    if len(per_video) > max_videos:
        lines.append(f"  ... and {len(per_video) - max_videos} more videos")
    failures_path = storage.join(out_dir, "failures.jsonl")
    if storage.isfile(failures_path):
        text = storage.read_text(failures_path)
        failures = [json.loads(line) for line in text.split("\n") if line.strip()]
        lines.append(f"failures: {len(failures)}")
        for fail in failures:
            lines.append(f"  FAILED {fail['video_id']} at {fail['stage']}: {fail['error']}")
    return "\n".join(lines)


def main_inspect(out_dir: str, png: str | None = None, video: str | None = None,
                 frames: int = 8) -> int:  # fmt: skip
    """``tristream inspect OUT [--png FILE] [--video ID] [--frames N]``: print, then draw.

    Prints :func:`summary`; with ``png``, writes :func:`contact_sheet` there.
    Returns the exit status: 0; 1 when a shard file is missing or damaged
    (:func:`shard_problems`, or unreadable); 2 (message on stderr) for a folder without
    output or an unknown video.
    """
    try:
        text = summary(out_dir)
        print(text)
        if "\n  PROBLEM " in text:
            print(f"tristream inspect: error: {out_dir} has missing or damaged shard files "
                  "(PROBLEM lines); re-run the same command to rewrite them",
                  file=sys.stderr)  # fmt: skip
            return 1
        if png:
            sheet = write_contact_sheet(out_dir, png, video, frames)
            print(f"contact sheet: {png} ({sheet.shape[1]}x{sheet.shape[0]})")
    except (FileNotFoundError, ValueError) as exc:
        print(f"tristream inspect: error: {exc}", file=sys.stderr)
        return 2
    return 0
