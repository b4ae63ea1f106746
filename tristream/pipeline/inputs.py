"""Turn ``--input`` (a folder or glob) or ``--manifest`` (CSV/JSONL/Kinetics CSV) into tasks.

Everything here runs once, at pipeline construction: the list of videos, their
ids, labels, splits and shard assignment are fixed before any worker starts,
which makes the output independent of scheduling. Paths may be ``s3://`` or
``gs://`` URIs, listed and read through the one storage layer
(:mod:`tristream.shards.storage`) on the run's store (``store``: a
:class:`~tristream.shards.storage.Store` or its config; None: the environment's).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, replace

from tristream.process import VideoTask
from tristream.shards import storage
from tristream.shards.storage import StoreLike
from tristream.transforms.decode import special_file_reason

#: File name suffixes (matched case-insensitively) that make a file a video when a
#: folder is walked: the containers, animated-image formats and raw video streams
#: that ffmpeg decodes. Still images (.png, .jpg, .webp) and audio-only suffixes
#: (.wav, .mp3, .oga) are left out; .ogg is in although it may hold audio alone,
#: in which case the probe reports "no video stream in file" as the video's failure.
VIDEO_SUFFIXES = (
    # MPEG-4 / QuickTime family
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".f4v",
    # Matroska / WebM, AVI and its codec-named variants, NUT
    ".mkv", ".webm", ".avi", ".divx", ".nut",
    # MPEG program and transport streams (DVD, Blu-ray, camcorders), MPEG elementary streams
    ".mpg", ".mpeg", ".mpe", ".m1v", ".m2v", ".vob", ".ts", ".m2ts", ".mts", ".m2t", ".tod",
    # Flash, Windows Media, RealMedia, Ogg
    ".flv", ".wmv", ".asf", ".rm", ".rmvb", ".ogv", ".ogg", ".ogm",
    # Broadcast / production and raw streams
    ".mxf", ".dv", ".y4m", ".h264", ".264", ".h265", ".265", ".hevc", ".ivf", ".mjpeg", ".mjpg",
    # Animated images
    ".gif", ".apng",
)  # fmt: skip

KINETICS_TEMPLATE = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"

#: Videos per shard when ``--num-shards`` is 0 (automatic).
VIDEOS_PER_SHARD = 100


class ManifestError(ValueError):
    """The manifest cannot be read at all (as opposed to one bad row)."""


@dataclass(frozen=True)
class InputFailure:
    """A manifest row or listed file rejected before processing (e.g. a duplicate id, or
    a named pipe or device in the input folder: stage ``probe``, never opened)."""

    video_id: str
    source: str
    stage: str
    error: str


def _glob_root(pattern: str, sep: str = os.sep) -> str:
    parts = pattern.split(sep)
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return sep.join(fixed) or "."


def _id_from_path(path: str, root: str) -> str:
    """The path relative to ``root`` without suffix; the file name alone when outside it."""
    if storage.has_scheme(path):
        prefix = root.rstrip("/") + "/"
        rel = path[len(prefix) :] if path.startswith(prefix) else path.rsplit("/", 1)[-1]
        return os.path.splitext(rel)[0]
    rel = os.path.relpath(path, root)
    if rel.startswith(".."):
        rel = os.path.basename(path)
    return os.path.splitext(rel)[0].replace(os.sep, "/")


def _is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_SUFFIXES) and not name.startswith(".")


def _list_stored_videos(uri: str, store: storage.Store) -> list[tuple[str, str]]:
    """:func:`list_videos` for an object-store URI: a glob, one object, or a prefix (folder)."""
    if glob.has_magic(uri.split("://", 1)[1]):
        root = _glob_root(uri, "/")
        paths = [p for p, _ in store.match(uri)]
    elif store.isfile(uri):
        root, paths = uri.rsplit("/", 1)[0], [uri]
    else:
        root = uri.rstrip("/")
        found = store.match(root + "/**")
        paths = [p for p, _ in found if _is_video_name(p.rsplit("/", 1)[-1])]
        if not paths:
            raise FileNotFoundError(f"--input {uri!r}: no videos under this prefix")
    return _with_ids(paths, root)


def _with_ids(paths: list[str], root: str) -> list[tuple[str, str]]:
    """(id, path) sorted by id: the path relative to ``root`` without its suffix, or with it
    for files that share a stem (``a.ts`` and ``a.mkv`` are two videos, ids ``a.ts`` and
    ``a.mkv``; a stem alone keeps its suffix-less id)."""
    ids = [_id_from_path(p, root) for p in paths]
    counts = Counter(ids)
    out = []
    for vid, path in zip(ids, paths, strict=True):
        if counts[vid] > 1:
            vid += os.path.splitext(path.rsplit("/", 1)[-1])[1]
        out.append((vid, path))
    return sorted(out)


def list_videos(input_path: str, store: StoreLike = None) -> list[tuple[str, str]]:
    """(video_id, path) for every video under a folder (recursive) or matching a glob.

    A folder is walked for files named with one of :data:`VIDEO_SUFFIXES`
    (hidden files skipped); a glob takes every file it matches, whatever its
    suffix. The id is the path relative to the folder (or the glob's fixed
    prefix), without suffix, with ``/`` separators. Sorted by id. An ``s3://``
    or ``gs://`` URI is a prefix of objects (the folder), one object or a glob
    (:meth:`~tristream.shards.storage.Store.match`: ``*`` within a folder, ``**`` across).
    """
    if storage.is_uri(input_path):
        return _list_stored_videos(input_path, storage.get_store(store))
    if os.path.isdir(input_path):
        root = input_path
        paths = [
            os.path.join(d, f)
            for d, _, files in os.walk(input_path)
            for f in files
            if f.lower().endswith(VIDEO_SUFFIXES) and not f.startswith(".")
        ]
    elif glob.has_magic(input_path):
        root = _glob_root(input_path)
        paths = [
            p
            for p in glob.glob(input_path, recursive=True)
            if os.path.isfile(p) or special_file_reason(p)  # the latter: reported by list_tasks
        ]
    elif os.path.isfile(input_path) or special_file_reason(input_path):
        root = os.path.dirname(input_path)
        paths = [input_path]
    else:
        raise FileNotFoundError(f"--input {input_path!r} is neither a folder, a file nor a glob")
    return _with_ids(paths, root)


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number_or_none(value, name: str) -> float | None:
    """A manifest time (seconds) or None when blank; ValueError naming the column."""
    if _blank(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number of seconds") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} {value!r} is not a time >= 0")
    return number


def _int_or_none(value, name: str) -> int | None:
    """A manifest integer or None when blank; ValueError naming the column."""
    if _blank(value):
        return None
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        return int(number)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not an integer") from None


def clip_id(stem: str, start, end) -> str:
    """The id of a clip of a video: ``stem_START_END`` in seconds, as Kinetics names its
    clips (``abc_000010_000020``); whole seconds as 6 digits, else 3 decimals; an open
    end is ``end``."""

    def part(value, open_text: str) -> str:
        if _blank(value):
            return open_text
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)  # a bad value: reported when the row is checked
        return f"{int(number):06d}" if number.is_integer() else f"{number:010.3f}"

    return f"{stem}_{part(start, '000000')}_{part(end, 'end')}"


def _read_manifest_rows(path: str, store: StoreLike = None) -> list[dict]:
    """The rows of a JSONL manifest (by suffix) or a CSV one, local or on an object store."""
    if storage.is_uri(path):
        store = storage.get_store(store)
        if not store.isfile(path):
            raise ManifestError(f"manifest not found: {path}")
        text = store.read_text(path)
    else:
        if not os.path.isfile(path):
            raise ManifestError(f"manifest not found: {path}")
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    text = text.removeprefix("\ufeff")  # a byte-order mark (spreadsheet exports)
    stream = io.StringIO(text, newline="")
    if path.lower().endswith(".json") and text.lstrip().startswith("["):
        try:  # one JSON array of row objects
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: not JSON ({exc})") from exc
        bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
        if bad is not None:
            raise ManifestError(f"{path}: item {bad} of the array is not an object")
        return rows
    if path.lower().endswith((".jsonl", ".json", ".ndjson")):
        rows = []
        for n, line in enumerate(stream, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"{path}:{n}: not JSON ({exc})") from exc
                if not isinstance(row, dict):
                    raise ManifestError(f"{path}:{n}: a row must be a JSON object")
                rows.append(row)
        return rows
    return list(csv.DictReader(stream))


def _folder_of(manifest: str) -> str:
    """The folder that holds ``manifest`` (relative manifest paths start there)."""
    if storage.is_uri(manifest):
        return manifest.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(manifest))


def _kinetics_task(row: dict, template: str, root: str, default_split: str) -> dict:
    values = dict(row)
    for key in ("time_start", "time_end"):
        values[key] = int(float(values[key]))
    filename = template.format(**values)
    # A template that names the time range points at trimmed clips; one that
    # does not points at full videos, which are then cut to the range.
    trimmed = "{time_start" in template
    stem = os.path.splitext(filename)[0]
    return {
        # A clip of a full video is its own video: its id names its range, as Kinetics ids do.
        "id": stem if trimmed else clip_id(stem, values["time_start"], values["time_end"]),
        "path": storage.join(root, filename),
        "label": row.get("label"),
        "split": row.get("split") or default_split,
        "start": None if trimmed else values["time_start"],
        "end": None if trimmed else values["time_end"],
    }


def list_tasks(
    input_path: str | None = None,
    manifest: str | None = None,
    path_template: str | None = None,
    default_split: str = "train",
    num_shards: int = 0,
    store: StoreLike = None,
) -> tuple[list[VideoTask], list[InputFailure]]:
    """Build the task list, with labels indexed and shards assigned.

    ``manifest`` rows (CSV or JSONL) have ``path`` and optional ``id``,
    ``label``, ``label_index``, ``split``, ``start``, ``end``; relative paths
    are resolved against ``input_path`` when given, else the manifest's folder.
    A Kinetics CSV (``label,youtube_id,time_start,time_end,split``) is
    recognised by its columns and mapped to files with ``path_template``.
    Labels without an index get their position in the sorted label set.
    Videos of a split are sorted by id and dealt round-robin to
    ``num_shards`` shards (0: one shard per 100 videos). Returns the tasks
    and the rows rejected up front (duplicate ids; a listed named pipe or device).
    URIs are read on ``store`` (the run's; None: the environment's).
    """
    raw: list[dict] = []
    if manifest is None:
        if input_path is None:
            raise ValueError("give an input folder/glob or a manifest")
        raw = [
            {"id": vid, "path": p, "split": default_split}
            for vid, p in list_videos(input_path, store)
        ]
    else:
        root = input_path if input_path else _folder_of(manifest)
        rows = _read_manifest_rows(manifest, store)
        for n, row in enumerate(rows, 1):
            if "youtube_id" in row and "path" not in row:
                raw.append(
                    _kinetics_task(row, path_template or KINETICS_TEMPLATE, root, default_split)
                )
                continue
            if not row.get("path"):
                raise ManifestError(
                    f"{manifest}: row {n} has no 'path' (columns: {', '.join(map(str, row))})"
                )
            path = str(row["path"])
            absolute = os.path.isabs(path) or storage.has_scheme(path)
            full = path if absolute else storage.join(root, path)
            vid = row.get("id")
            if not vid:  # a clip (a time range of the file) is its own video
                vid = _id_from_path(full, root)
                if not _blank(row.get("start")) or not _blank(row.get("end")):
                    vid = clip_id(vid, row.get("start"), row.get("end"))
            raw.append({**row, "id": str(vid), "path": full,
                        "split": row.get("split") or default_split, "_row": n})  # fmt: skip

    labels = sorted({r["label"] for r in raw if r.get("label") not in (None, "")})
    label_index = {label: i for i, label in enumerate(labels)}
    tasks: list[VideoTask] = []
    failures: list[InputFailure] = []
    seen: set[str] = set()
    for r in raw:
        # A named pipe or device among the listed files: ffmpeg could wait on it forever.
        special = None if manifest or storage.is_uri(r["path"]) else special_file_reason(r["path"])
        if special:
            failures.append(InputFailure(r["id"], r["path"], "probe", special))
            continue
        if r["id"] in seen:
            failures.append(
                InputFailure(r["id"], r["path"], "manifest", f"duplicate video id {r['id']!r}")
            )
            continue
        seen.add(r["id"])
        label = r.get("label") or None
        try:
            index = _int_or_none(r.get("label_index"), "label_index")
            index = label_index.get(label) if index is None else index
            start = _number_or_none(r.get("start"), "start")
            end = _number_or_none(r.get("end"), "end")
            if start is not None and end is not None and end <= start:
                raise ValueError(f"end {end:g} is not after start {start:g}")
        except ValueError as exc:  # one bad row fails its video, not the run
            where = f"{manifest} row {r['_row']}" if "_row" in r else manifest
            failures.append(InputFailure(r["id"], r["path"], "manifest", f"{where}: {exc}"))
            continue
        tasks.append(
            VideoTask(
                video_id=r["id"],
                source=r["path"],
                split=str(r["split"]),
                label=label,
                label_index=index,
                start=start,
                end=end,
            )
        )

    by_split: dict[str, list[VideoTask]] = defaultdict(list)
    for task in tasks:
        by_split[task.split].append(task)
    assigned: list[VideoTask] = []
    for split in sorted(by_split):
        group = sorted(by_split[split], key=lambda t: t.video_id)
        n = num_shards or max(1, math.ceil(len(group) / VIDEOS_PER_SHARD))
        assigned += [replace(t, shard=i % n, num_shards=n) for i, t in enumerate(group)]
    return assigned, failures


def label_map(tasks: list[VideoTask]) -> dict[str, int]:
    """label -> label_index over the tasks that have both."""
    return {
        t.label: t.label_index for t in tasks if t.label is not None and t.label_index is not None
    }
