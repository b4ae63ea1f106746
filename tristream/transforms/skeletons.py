"""Read and write 2D skeleton annotation pickles in the mmaction2 / PYSKL layout.

A file is a pickle of either

- a list of annotation dicts (mmaction2's PoseC3D files), or
- a dict ``{"split": {split name: [video ids]}, "annotations": [annotation dicts]}``
  (PYSKL's files).

Each annotation dict has ``frame_dir`` (str, the video id), ``label`` (int),
``img_shape`` and ``original_shape`` ((height, width) pixels),
``total_frames`` (int, T), ``keypoint`` (float ``[M, T, V, 2]``, x right and y
down in pixels of ``img_shape``) and ``keypoint_score`` (float ``[M, T, V]``).
Absent persons are rows of zeros with score 0, as in the shard contract.

tristream holds keypoints as one float32 ``[M, T, 17, 3]`` array, ``(x, y,
score)`` in COCO-17 order; only V = 17 is accepted. Pure numpy and pickle.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tristream.shards import storage
from tristream.shards.coco import NUM_JOINTS

#: Keys every annotation must have (``label``, ``total_frames`` and
#: ``original_shape`` are read when present).
REQUIRED_KEYS = ("frame_dir", "img_shape", "keypoint", "keypoint_score")

# Globals a skeleton pickle may reference (numpy arrays and scalars, plain containers).
_SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # bytes in protocol 0/1 pickles
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class SkeletonFileError(ValueError):
    """A skeleton annotation file that cannot be read or does not follow the layout."""


@dataclass
class SkeletonAnnotation:
    """One video's 2D skeletons.

    ``keypoints``: float32 ``[M, T, 17, 3]`` (x, y, score) in pixels of
    ``img_shape``; score 0 where person m is absent at frame t.
    ``img_shape`` / ``original_shape``: (height, width) pixels. ``label``: the
    class index, or None. ``splits``: names of the splits that list this video
    (empty for files without splits).
    """

    video_id: str
    keypoints: np.ndarray
    img_shape: tuple[int, int]
    original_shape: tuple[int, int]
    label: int | None = None
    splits: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_persons(self) -> int:
        """M."""
        return int(self.keypoints.shape[0])

    @property
    def total_frames(self) -> int:
        """T."""
        return int(self.keypoints.shape[1])


# --------------------------------------------------------------------------- reading


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a skeleton file holds only lists, dicts, "
            "strings, numbers and numpy arrays (pass trusted=True to load any pickle)"
        )


def _read_pickle(path: str | os.PathLike, trusted: bool, store: storage.StoreLike = None):
    if storage.is_store_uri(path):  # s3:// or gs:// (tristream.shards.storage)
        with storage.open_input(os.fspath(path), seekable=False, store=store) as f:
            raw = f.read()
    else:
        raw = Path(path).read_bytes()
    try:
        if trusted:
            return pickle.loads(raw)  # noqa: S301 - the caller vouches for the file
        return _SafeUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as e:
        if "refusing to load" in str(e):
            raise SkeletonFileError(f"{path}: {e}") from e
        raise SkeletonFileError(f"{path} is not a readable pickle file: {e}") from e
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise SkeletonFileError(
            f"{path} is not a readable pickle file: {type(e).__name__}: {e}"
        ) from e


def load_skeletons(
    path: str | os.PathLike, trusted: bool = False, store: storage.StoreLike = None
) -> dict[str, SkeletonAnnotation]:
    """Load an mmaction2 / PYSKL 2D skeleton pickle: video id -> :class:`SkeletonAnnotation`.

    Both layouts (a list of annotations, or ``{"split", "annotations"}``) are
    read. Keypoints become float32 ``[M, T, 17, 3]`` with the score as the
    third coordinate. Unless ``trusted``, the pickle may reference only numpy
    arrays / scalars and plain containers (a pickle can run code when loaded).

    Raises :class:`SkeletonFileError` (a ValueError) for a file that is not a
    pickle, an unknown layout, missing keys (named in the message), V != 17,
    inconsistent shapes, or a duplicated video id. An ``s3://`` / ``gs://`` ``path`` is
    read from ``store`` (the run's; None: the environment's).
    """
    obj = _read_pickle(path, trusted, store)
    if isinstance(obj, Mapping):
        missing = [k for k in ("annotations",) if k not in obj]
        if missing:
            raise SkeletonFileError(
                f"{path}: a dict skeleton file needs the key 'annotations' (and optionally "
                f"'split'); it has {sorted(map(str, obj))}"
            )
        annotations, split = obj["annotations"], obj.get("split") or {}
    elif isinstance(obj, list | tuple):
        annotations, split = obj, {}
    else:
        raise SkeletonFileError(
            f"{path}: expected a list of annotations or a dict with 'split' and 'annotations', "
            f"got {type(obj).__name__}"
        )
    if not isinstance(split, Mapping):
        raise SkeletonFileError(f"{path}: 'split' must be a dict of lists, got {type(split)}")
    membership: dict[str, list[str]] = {}
    for name, ids in split.items():
        for vid in ids:
            membership.setdefault(str(vid), []).append(str(name))
    out: dict[str, SkeletonAnnotation] = {}
    for i, ann in enumerate(annotations):
        a = _parse(ann, f"{path}: annotation {i}")
        if a.video_id in out:
            raise SkeletonFileError(f"{path}: video id {a.video_id!r} appears twice")
        a.splits = tuple(membership.get(a.video_id, ()))
        out[a.video_id] = a
    return out


def load_skeletons_3d(
    path: str | os.PathLike, trusted: bool = False, store: storage.StoreLike = None
) -> dict[str, np.ndarray]:
    """Load a 3D skeleton pickle of the same layouts (``keypoint`` float ``[M, T, 17, 3]``
    (x, y, z), e.g. metres, as ``tristream export-skeletons --3d`` writes it): video id ->
    float32 ``[M, T, 17, 3]``. The 2D file of the same videos gives the persons' scores
    (``--skeletons``); this one only their 3D joints, person m the same in both.

    Raises :class:`SkeletonFileError` for a file that is not a pickle, an unknown layout,
    a missing ``frame_dir`` / ``keypoint``, a shape other than ``[M, T, 17, 3]``, or a
    duplicated video id. A URI is read from ``store`` (None: the environment's).
    """
    obj = _read_pickle(path, trusted, store)
    annotations = obj.get("annotations") if isinstance(obj, Mapping) else obj
    if not isinstance(annotations, list | tuple):
        raise SkeletonFileError(
            f"{path}: expected a list of annotations or a dict with 'annotations'"
        )
    out: dict[str, np.ndarray] = {}
    for i, ann in enumerate(annotations):
        where = f"{path}: annotation {i}"
        if not isinstance(ann, Mapping) or "frame_dir" not in ann or "keypoint" not in ann:
            raise SkeletonFileError(f"{where} needs 'frame_dir' and 'keypoint'")
        kp = np.asarray(ann["keypoint"], np.float32)
        if kp.ndim != 4 or kp.shape[2:] != (NUM_JOINTS, 3):
            raise SkeletonFileError(
                f"{where} ({ann['frame_dir']!r}): a 3D 'keypoint' must be [M, T, 17, 3] "
                f"(x, y, z), got {kp.shape}"
            )
        vid = str(ann["frame_dir"])
        if vid in out:
            raise SkeletonFileError(f"{path}: video id {vid!r} appears twice")
        out[vid] = kp
    return out


def _parse(ann: object, where: str) -> SkeletonAnnotation:
    if not isinstance(ann, Mapping):
        raise SkeletonFileError(f"{where} is a {type(ann).__name__}, not a dict")
    if "frame_dir" in ann:
        where = f"{where} ({ann['frame_dir']!r})"
    kp = ann.get("keypoint")
    needed = [k for k in REQUIRED_KEYS if k not in ann]
    if "keypoint_score" in needed and kp is not None and np.shape(kp)[-1:] == (3,):
        needed.remove("keypoint_score")  # (x, y, score) stored together
    if needed:
        raise SkeletonFileError(
            f"{where} lacks the key(s) {needed}; a 2D skeleton annotation needs "
            f"{list(REQUIRED_KEYS)} (see mmaction2 / PYSKL)"
        )
    kp = np.asarray(kp)
    if kp.ndim != 4 or kp.shape[-1] not in (2, 3):
        raise SkeletonFileError(
            f"{where}: 'keypoint' must be [M, T, V, 2] (x, y), got shape {kp.shape}"
        )
    m, t, v, c = kp.shape
    if v != NUM_JOINTS:
        raise SkeletonFileError(
            f"{where}: 'keypoint' has V={v} joints per person; tristream reads COCO-17 "
            f"2D skeletons only (V=17); convert other layouts (e.g. NTU's 25 joints) first"
        )
    if c == 3 and "keypoint_score" not in ann:
        score = kp[..., 2]
    else:
        score = np.asarray(ann["keypoint_score"])
        if score.shape != (m, t, v):
            raise SkeletonFileError(
                f"{where}: 'keypoint_score' must be [M, T, V] = {[m, t, v]}, got {score.shape}"
            )
    total = ann.get("total_frames")
    if total is not None and int(total) != t:
        raise SkeletonFileError(f"{where}: total_frames={total} but 'keypoint' has T={t}")
    keypoints = np.empty((m, t, v, 3), np.float32)
    keypoints[..., :2] = kp[..., :2]
    keypoints[..., 2] = score
    img_shape = _shape(ann["img_shape"], where, "img_shape")
    original = _shape(ann.get("original_shape", img_shape), where, "original_shape")
    label = ann.get("label")
    return SkeletonAnnotation(
        video_id=str(ann["frame_dir"]),
        keypoints=keypoints,
        img_shape=img_shape,
        original_shape=original,
        label=None if label is None else int(label),
    )


def _shape(value: object, where: str, key: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as e:
        raise SkeletonFileError(f"{where}: {key!r} must be (height, width), got {value!r}") from e
    return h, w


# --------------------------------------------------------------------------- arrays


def rescale_keypoints(
    keypoints: np.ndarray, from_shape: Sequence[int], to_shape: Sequence[int]
) -> np.ndarray:
    """Map pixel keypoints from frames of ``from_shape`` to frames of ``to_shape``.

    ``keypoints``: float ``[..., 2]`` (x, y) or ``[..., 3]`` (x, y, score).
    Shapes are (height, width). The convention is tristream's everywhere (DESIGN.md):
    pixel centres at integers, so a frame's edges are at -0.5 and size - 0.5 and
    ``x' = (x + 0.5) * new_width / old_width - 0.5`` (y likewise); this is how ffmpeg's and
    OpenCV's resizes map pixels, and both import (``--skeletons``) and export use it. Scores
    are unchanged, and so are the zeros of absent joints (score 0 at (0, 0)). Returns a
    float32 copy.
    """
    kps = np.array(keypoints, np.float32)
    if kps.shape[-1] not in (2, 3):
        raise ValueError(f"keypoints must end in (x, y) or (x, y, score), got {kps.shape}")
    (fh, fw), (th, tw) = from_shape[:2], to_shape[:2]
    if min(fh, fw, th, tw) <= 0:
        raise ValueError(f"shapes must be positive (height, width): {from_shape} -> {to_shape}")
    absent = (kps[..., 2] == 0) & (kps[..., 0] == 0) & (kps[..., 1] == 0) if kps.shape[-1] == 3 \
        else np.zeros(kps.shape[:-1], bool)  # fmt: skip
    kps[..., 0] = (kps[..., 0] + 0.5) * (tw / fw) - 0.5
    kps[..., 1] = (kps[..., 1] + 0.5) * (th / fh) - 0.5
    kps[absent, :2] = 0.0
    return kps


def to_annotation(
    video_id: str,
    keypoints: np.ndarray,
    img_shape: Sequence[int],
    label: int | None = None,
    original_shape: Sequence[int] | None = None,
) -> dict:
    """Build one annotation dict in the mmaction2 / PYSKL layout.

    ``keypoints``: ``[M, T, 17, 3]`` (x, y, score) in pixels of ``img_shape``
    (height, width). Gives ``frame_dir``, ``img_shape``, ``original_shape``
    (default ``img_shape``), ``total_frames``, ``keypoint`` float32
    ``[M, T, 17, 2]``, ``keypoint_score`` float32 ``[M, T, 17]`` and, when not
    None, ``label``.
    """
    kps = np.asarray(keypoints, np.float32)
    if kps.ndim != 4 or kps.shape[2:] != (NUM_JOINTS, 3):
        raise ValueError(f"keypoints must be [M, T, 17, 3] (x, y, score), got {kps.shape}")
    h, w = (int(x) for x in img_shape[:2])
    oh, ow = (int(x) for x in (original_shape or img_shape)[:2])
    ann = {
        "frame_dir": str(video_id),
        "img_shape": (h, w),
        "original_shape": (oh, ow),
        "total_frames": int(kps.shape[1]),
        "keypoint": np.ascontiguousarray(kps[..., :2]),
        "keypoint_score": np.ascontiguousarray(kps[..., 2]),
    }
    if label is not None:
        ann["label"] = int(label)
    return ann


def save_skeletons(
    path: str | os.PathLike,
    annotations: Iterable[Mapping | SkeletonAnnotation],
    split: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Write annotations as a skeleton pickle, atomically (temporary file, then rename).

    ``annotations``: dicts from :func:`to_annotation` or
    :class:`SkeletonAnnotation` objects. Without ``split`` the file is a list
    of annotations (mmaction2 layout); with it, ``{"split": split,
    "annotations": [...]}`` (PYSKL layout). Each annotation is validated as
    :func:`load_skeletons` would.
    """
    anns = []
    for i, a in enumerate(annotations):
        if isinstance(a, SkeletonAnnotation):
            a = to_annotation(a.video_id, a.keypoints, a.img_shape, a.label, a.original_shape)
        _parse(a, f"annotation {i}")  # validate
        anns.append(dict(a))
    ids = [a["frame_dir"] for a in anns]
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        raise ValueError(f"video ids appear more than once: {dup}")
    if split is None:
        obj: object = anns
    else:
        if not isinstance(split, Mapping):
            raise ValueError(f"split must be a dict of lists of video ids, got {type(split)}")
        obj = {"split": {str(k): [str(v) for v in vs] for k, vs in split.items()},
               "annotations": anns}  # fmt: skip
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=4)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def slice_frames(array: np.ndarray, start_frame: int, num_frames: int) -> np.ndarray:
    """Frames ``start_frame ..`` of a per-person array ``[M, T, ...]`` as float32
    ``[M, num_frames, ...]``, zeros past its end (absent)."""
    if start_frame < 0 or num_frames < 0:
        raise ValueError(
            f"need start_frame >= 0 and num_frames >= 0, got {start_frame}, {num_frames}"
        )
    out = np.zeros((array.shape[0], num_frames, *array.shape[2:]), np.float32)
    stop = min(start_frame + num_frames, array.shape[1])
    if stop > start_frame:
        out[:, : stop - start_frame] = array[:, start_frame:stop]
    return out


def slice_for_segment(
    ann: SkeletonAnnotation,
    start_frame: int,
    num_frames: int,
    to_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """The keypoints of frames ``start_frame .. start_frame + num_frames - 1``.

    Returns float32 ``[M, num_frames, 17, 3]``; frames past the annotation's
    end are zeros (absent). With ``to_shape`` (height, width) the keypoints are
    rescaled from ``ann.img_shape`` to it. Frame indices must be those of the
    frames the annotation was made on (same frame rate).
    """
    out = slice_frames(ann.keypoints, start_frame, num_frames)
    if to_shape is not None:
        out = rescale_keypoints(out, ann.img_shape, to_shape)
    return out
