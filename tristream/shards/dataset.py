"""Trainer-side PyTorch ``IterableDataset`` over tristream shards.

:class:`ShardDataset` turns the rows of Parquet or TFRecord shards (one row =
one segment of one video, see DESIGN.md "Shard contract") into fixed-length
clips for a two/three-stream (RGB, flow, pose) and skeleton model:

- clip sampling inside a row (``random``, ``center``, ``uniform``, ``all``),
  with I3D-style loop padding of rows shorter than a clip;
- one crop and one horizontal flip per clip, applied identically to every
  modality (flow x changes sign, left/right COCO joints swap);
- sharding over DDP ranks and DataLoader workers that yields every row exactly
  once per epoch (optionally padded or truncated so all ranks get the same
  number of samples), in an order fixed by ``seed`` and :meth:`ShardDataset.set_epoch`.

Needs numpy, pyarrow, OpenCV, protobuf and torch only: no Beam, no ffmpeg.
Only the frames of the sampled clip are decoded, not the whole row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from tristream.shards.coco import FLIP
from tristream.shards.codec import FLOW_BOUND, quantize_flow
from tristream.shards.files import ShardFileInfo, ShardRowReader, index_shard, shard_files
from tristream.shards.row import RowView
from tristream.shards.schema import COLUMNS, MODALITIES

#: Sampling modes of :class:`ShardDataset`.
SAMPLINGS: tuple[str, ...] = ("random", "center", "uniform", "all")

#: Columns each modality needs from a shard row.
_MODALITY_COLUMNS: dict[str, tuple[str, ...]] = {
    m: tuple(c.name for c in COLUMNS if c.modality == m) for m in MODALITIES
}
_SCALAR_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.modality is None)


# --------------------------------------------------------------------------- helpers


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def _buffer(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray]:
    """An uninitialised tensor and its numpy view (written in place by numpy)."""
    tensor = torch.empty(shape, dtype=dtype)
    return tensor, tensor.numpy()


def _levels_to_unit(u8: np.ndarray, out: np.ndarray) -> np.ndarray:
    """uint8 levels -> ``out`` (float32, same shape) = ``v / 127.5 - 1`` in [-1, 1].

    Done in numpy (single-threaded), so the cost does not depend on torch's
    intra-op thread pool, which in a busy main process mostly adds contention.
    """
    np.multiply(u8, np.float32(1 / 127.5), out=out, dtype=np.float32)
    out -= np.float32(1.0)
    return out


def _shuffle_buffer(
    samples: Iterable[dict[str, Any]], size: int, rng: np.random.Generator
) -> Iterator[dict[str, Any]]:
    """Yield ``samples`` through a buffer of ``size``: each output is a random buffered item."""
    buffer: list[dict[str, Any]] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        k = int(rng.integers(size))
        buffer[k], sample = sample, buffer[k]
        yield sample
    for k in rng.permutation(len(buffer)):
        yield buffer[k]


# --------------------------------------------------------------------------- dataset


class ShardDataset(IterableDataset):
    """Clips of tristream shards as dicts of tensors, for PyTorch training and evaluation.

    Args:
        path: a shard file, a folder of shards, a run's output directory (its
            ``shards/`` folder is read), or a list of any of these. A directory
            holding both formats is read as Parquet (see :func:`~tristream.shards.shard_files`).
        modalities: which of ``rgb``, ``flow``, ``pose``, ``keypoints`` to yield.
            Requested modalities that the shards lack are skipped silently (the
            key is absent from the sample); a ``ValueError`` is raised when a
            shard holds none of them.
        clip_len: T, frames per clip.
        frame_stride: step between the row frames of a clip (``random``,
            ``center``, ``all``); a clip spans ``(T - 1) * frame_stride + 1`` row frames.
        sampling: where clips come from inside a row. ``random``: one clip at a
            uniformly drawn start; ``center``: one clip centred in the row;
            ``uniform``: one clip of T frames spread over the whole row (the row is
            cut into T equal parts and one frame taken from each, a random one when
            ``train`` else the middle one; ``frame_stride`` is ignored); ``all``:
            every clip of the row, back to back (starts 0, ``T * frame_stride``,
            ...), for evaluation. Default: ``random`` when ``train`` else ``center``.
            A row shorter than a clip is padded by looping, as I3D does: the row
            frame indices are taken modulo ``num_frames`` (a 3-frame row gives
            0, 1, 2, 0, 1, 2, ...); so is the tail of the last clip under ``all``.
        crop: output size ``(H, W)`` or one int for a square; None keeps the stored
            frame size. A crop larger than the frames raises ``ValueError``.
        train: random crop and a horizontal flip with probability ``hflip`` when
            True; centre crop and no flip when False.
        hflip: flip probability in training.
        shuffle: permute the rows anew each epoch (from ``seed`` and the epoch).
        seed: non-negative int; fixes the row order, the clip positions, crops
            and flips. A sample's randomness depends only on ``(seed, epoch,
            sample)``, not on the rank or worker that produces it.
        rank, world_size: this process's DDP rank and the number of ranks. When
            None they come from ``torch.distributed`` if it is initialised, else
            0 and 1.
        drop_last: drop the last ``num_units % world_size`` samples of the epoch
            order so every rank gets ``num_units // world_size``.
        pad: repeat samples from the start of the epoch order so every rank gets
            ``ceil(num_units / world_size)``; repeated samples have
            ``padded=True``. With neither option every unit is yielded exactly
            once and rank counts differ by at most one (DDP training needs one
            of the two options, or ranks fall out of step).
        shuffle_buffer: when > 1 and ``shuffle``, each DataLoader worker passes
            its samples through a seeded buffer of this many samples (useful to
            mix the clips of one row under ``sampling="all"``; the row order is
            already a full permutation). Memory: ``size`` decoded clips per worker.
        max_persons: pad (with score-0 persons) or cut the keypoints to this many
            persons so batches stack; rows keep their persons ordered by mean
            score, so cutting drops the weakest. None keeps each row's M.
        last_flow: flow for a clip frame that has no following frame in its row
            (the row's last frame; a row stores ``num_frames - 1`` flows):
            ``repeat`` the row's last flow (default) or ``zero``. A 1-frame row
            always gets zero flow.
        dtype: dtype of the ``rgb``, ``flow`` and ``pose`` tensors: a float dtype
            (values in [-1, 1] as below), or ``torch.uint8`` for the raw levels
            ``q`` in [0, 255] with ``q / 127.5 - 1`` equal to the float output
            (flow: quantised as in the shards, flipped as ``255 - q``, zero flow
            as 128), to normalise on the GPU: a quarter of the float32 bytes to
            move from DataLoader workers.
        fmt: ``parquet`` or ``tfrecord`` to choose the format in a directory
            holding both.

    Each sample is a dict (T = ``clip_len``, H x W = the crop):

    - ``rgb``: ``dtype`` ``[3, T, H, W]``, RGB, ``v / 127.5 - 1`` in [-1, 1].
    - ``flow``: ``dtype`` ``[2, T, H, W]``, channels (x, y), pixels / 20 clipped
      to [-1, 1] (I3D). ``flow[:, t]`` is the stored flow from row frame
      ``frame_indices[t]`` to row frame ``frame_indices[t] + 1`` (the motion at
      that frame; with ``frame_stride > 1`` or looping, not the motion to the
      clip's next frame); see ``last_flow`` for the row's last frame.
    - ``pose``: ``dtype`` ``[3, T, H, W]``, rendered pose frames, like ``rgb``.
    - ``keypoints``: float32 ``[M, T, 17, 3]``, COCO-17 ``(x, y, score)`` in
      pixels of the cropped (and flipped) frame; ``num_persons``: int, persons
      that are real (the rest is padding).
    - ``video_id``: str; ``label_index``: int, -1 when the row has no label;
      ``segment``, ``start_frame``: int, the row's segment index and its first
      frame in the video; ``clip_index``: int, which clip of the row (``all``),
      else 0; ``frame_indices``: int64 ``[T]``, the row frames of the clip
      (video frame = ``start_frame + frame_indices``); ``flipped``: bool;
      ``padded``: bool, True for samples repeated by ``pad``.

    Geometry: pixel (i, j) of a frame is the point x = j, y = i (pixel centres
    at integer coordinates, as the keypoints are stored). A crop at (y0, x0)
    maps x -> x - x0, y -> y - y0; a flip of a W-wide crop maps x -> W - 1 - x,
    mirrors every image, negates flow x and swaps left/right joints
    (:data:`tristream.shards.coco.FLIP`). Keypoints may fall outside the crop; they keep their
    score. Joints with score 0 (absent) come out as (0, 0, 0). Rendered pose
    images are mirrored as pixels only: a renderer's left/right colours are not
    swapped.

    Sharding: the units of an epoch (rows, or (row, clip) pairs under ``all``)
    are put in order (rows permuted when ``shuffle``), cut into ``world_size``
    contiguous blocks, one per rank, and each block into contiguous parts, one
    per DataLoader worker. Call :meth:`set_epoch` before each epoch (with
    ``persistent_workers=False``, so the workers see the new epoch).
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        modalities: Sequence[str] = ("rgb", "flow", "pose", "keypoints"),
        clip_len: int = 64,
        frame_stride: int = 1,
        sampling: str | None = None,
        crop: int | tuple[int, int] | None = 224,
        train: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        pad: bool = False,
        hflip: float = 0.5,
        shuffle_buffer: int = 0,
        max_persons: int | None = 5,
        last_flow: str = "repeat",
        dtype: torch.dtype = torch.float32,
        fmt: str | None = None,
    ):
        super().__init__()
        modalities = tuple(modalities)
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}")
        sampling = sampling or ("random" if train else "center")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if clip_len < 1 or frame_stride < 1:
            raise ValueError("clip_len and frame_stride must be >= 1")
        if isinstance(crop, int):
            crop = (crop, crop)
        if crop is not None and (len(crop) != 2 or min(crop) < 1):
            raise ValueError(f"crop must be a positive int, (H, W) or None, got {crop!r}")
        if drop_last and pad:
            raise ValueError("choose drop_last or pad, not both")
        if last_flow not in ("repeat", "zero"):
            raise ValueError("last_flow must be 'repeat' or 'zero'")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError("hflip is a probability in [0, 1]")
        if seed < 0:
            raise ValueError("seed must be >= 0")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8):
            raise ValueError(f"dtype must be a float dtype or torch.uint8, got {dtype}")
        if max_persons is not None and max_persons < 0:
            raise ValueError("max_persons must be >= 0 or None")

        self.modalities = modalities
        self.clip_len = int(clip_len)
        self.frame_stride = int(frame_stride)
        self.sampling = sampling
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.train = bool(train)
        self.hflip = float(hflip)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = bool(drop_last)
        self.pad = bool(pad)
        self.shuffle_buffer = int(shuffle_buffer)
        self.max_persons = max_persons
        self.last_flow = last_flow
        self.dtype = dtype
        self.epoch = 0
        self._frozen_dist: tuple[int, int] | None = None

        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        files = [f for p in paths for f in shard_files(p, fmt)]
        if not files:
            raise ValueError(f"no .parquet or .tfrecord shard files under {path}")
        self._build_index(files)

    # ------------------------------------------------------------------ index

    def _build_index(self, files: list[str]) -> None:
        need_frames = self.sampling == "all"
        self.files: list[ShardFileInfo] = []
        self._columns: list[list[str]] = []
        row_file, row_group, row_pos, row_frames = [], [], [], []
        for i, path in enumerate(files):
            index = index_shard(path, ("num_frames",) if need_frames else ())
            info = index.info
            present = [m for m in self.modalities if m in info.modalities]
            if len(index) and not present:
                raise ValueError(
                    f"none of the requested modalities {self.modalities} is in {path} "
                    f"(it holds {info.modalities})"
                )
            self.files.append(info)
            read = list(present)
            if "keypoints3d" in read and "keypoints" not in read:
                read.append("keypoints")  # the 3D joints' scores and person count
            self._columns.append(
                list(_SCALAR_COLUMNS) + [c for m in read for c in _MODALITY_COLUMNS[m]]
            )
            row_file.append(np.full(len(index), i, np.int64))
            row_group.append(index.groups)
            row_pos.append(index.positions)
            if need_frames:
                row_frames.extend(int(n) for n in index.values["num_frames"])
        self._row_file = np.concatenate(row_file)
        self._row_group = np.concatenate(row_group)
        self._row_pos = np.concatenate(row_pos)
        #: modalities present in at least one shard (and requested).
        self.available = tuple(
            m for m in self.modalities if any(m in f.modalities for f in self.files)
        )
        n_rows = len(self._row_file)
        if need_frames:
            span = self.clip_len * self.frame_stride
            frames = np.asarray(row_frames, np.int64)
            self._clips_per_row = np.maximum(1, -(-frames // span))
        else:
            self._clips_per_row = np.ones(n_rows, np.int64)
        self._first_unit = np.cumsum(self._clips_per_row) - self._clips_per_row

    @property
    def num_rows(self) -> int:
        """Rows (segments) in the shards."""
        return len(self._row_file)

    @property
    def num_units(self) -> int:
        """Samples in one epoch over all ranks before ``pad``/``drop_last`` (rows or clips)."""
        return int(self._clips_per_row.sum())

    # ------------------------------------------------------------------ order

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which reseeds the row order, clip positions, crops and flips."""
        self.epoch = int(epoch)

    def _dist_info(self) -> tuple[int, int]:
        if self.rank is not None or self.world_size is not None:
            rank, world = self.rank or 0, self.world_size or 1
        elif _dist_ready():
            rank, world = dist.get_rank(), dist.get_world_size()
        elif self._frozen_dist is not None:
            rank, world = self._frozen_dist
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        return rank, world

    def __getstate__(self) -> dict[str, Any]:
        # Workers started with spawn/forkserver have no process group: take the
        # rank and world size of the process that pickles the dataset with it.
        state = self.__dict__.copy()
        if self.rank is None and self.world_size is None and _dist_ready():
            state["_frozen_dist"] = (dist.get_rank(), dist.get_world_size())
        return state

    def _epoch_units(self) -> np.ndarray:
        """All unit ids of this epoch in order (rows permuted when ``shuffle``)."""
        n_rows = self.num_rows
        if self.shuffle:
            rows = np.random.default_rng([self.seed, self.epoch]).permutation(n_rows)
        else:
            rows = np.arange(n_rows)
        counts = self._clips_per_row[rows]
        if len(rows) == 0:
            return np.zeros(0, np.int64)
        starts = self._first_unit[rows]
        offsets = np.cumsum(counts) - counts
        return np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))

    def _per_rank(self, world: int) -> int | None:
        units = self.num_units
        if self.drop_last:
            return units // world
        if self.pad:
            return -(-units // world)
        return None

    def _rank_units(self, rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
        """(unit ids, padded flags) for ``rank`` this epoch."""
        order = self._epoch_units()
        per = self._per_rank(world)
        if per is None:
            block = np.array_split(order, world)[rank]
            return block, np.zeros(len(block), bool)
        total = per * world
        padded = np.zeros(total, bool)
        if total > len(order):
            padded[len(order) :] = True
            order = np.concatenate([order, np.resize(order, total - len(order))])
        sl = slice(rank * per, (rank + 1) * per)
        return order[:total][sl], padded[sl]

    def __len__(self) -> int:
        """Samples this rank yields per epoch (over all its DataLoader workers)."""
        rank, world = self._dist_info()
        per = self._per_rank(world)
        if per is not None:
            return per
        return len(np.array_split(np.arange(self.num_units), world)[rank])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = self._dist_info()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        units, padded = self._rank_units(rank, world)
        units = np.array_split(units, workers)[worker]
        padded = np.array_split(padded, workers)[worker]
        reader = ShardRowReader(self.files, self._columns)
        try:
            samples: Iterable[dict[str, Any]] = (
                self._sample(reader, int(u), bool(p)) for u, p in zip(units, padded)
            )
            if self.shuffle and self.shuffle_buffer > 1:
                rng = np.random.default_rng([self.seed, self.epoch, rank, worker, 1])
                samples = _shuffle_buffer(samples, self.shuffle_buffer, rng)
            yield from samples
        finally:
            reader.close()

    # ------------------------------------------------------------------ samples

    def _clip_indices(self, n: int, clip: int, rng: np.random.Generator) -> np.ndarray:
        """Row frame indices (int64 ``[T]``) of the clip; looped modulo ``n`` when short."""
        t, s = self.clip_len, self.frame_stride
        steps = np.arange(t, dtype=np.int64)
        if self.sampling == "uniform":
            if n < t:
                return steps % n
            u = rng.random(t) if self.train else np.full(t, 0.5)
            return np.minimum(((steps + u) * n / t).astype(np.int64), n - 1)
        span = (t - 1) * s + 1
        if self.sampling == "all":
            start = clip * t * s
        elif n < span:
            start = 0
        elif self.sampling == "random":
            start = int(rng.integers(0, n - span + 1))
        else:  # center
            start = (n - span) // 2
        return (start + s * steps) % n

    def _sample(self, reader: ShardRowReader, unit: int, padded: bool) -> dict[str, Any]:
        row = int(np.searchsorted(self._first_unit, unit, side="right") - 1)
        clip = unit - int(self._first_unit[row])
        view = RowView(
            reader.read(
                int(self._row_file[row]), int(self._row_group[row]), int(self._row_pos[row])
            )
        )
        view.meta  # noqa: B018 - a schema newer than this reader raises here
        n, h, w = view.num_frames, view.height, view.width
        if n < 1:
            raise ValueError(f"row {view['video_id']!r} segment {view['segment']} has no frames")
        rng = np.random.default_rng([self.seed, self.epoch, unit])

        idx = self._clip_indices(n, clip, rng)
        ch, cw = self.crop or (h, w)
        if ch > h or cw > w:
            raise ValueError(
                f"crop {ch}x{cw} is larger than the {h}x{w} frames of {view['video_id']!r}"
            )
        if self.train:
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            flip = bool(rng.random() < self.hflip)
        else:
            y0, x0, flip = (h - ch) // 2, (w - cw) // 2, False
        box = (y0, x0, ch, cw, flip)

        uniq, inverse = np.unique(idx, return_inverse=True)
        gather = None if np.array_equal(uniq, idx) else inverse

        label = view.get("label_index")
        sample: dict[str, Any] = {
            "video_id": view["video_id"],
            "label_index": -1 if label is None else int(label),
            "segment": int(view["segment"]),
            "start_frame": int(view["start_frame"]),
            "clip_index": clip,
            "frame_indices": torch.from_numpy(idx.astype(np.int64)),
            "flipped": flip,
            "padded": padded,
        }
        want = set(self.modalities)
        present = view.modalities
        for m in ("rgb", "pose"):
            if m in want and m in present:
                sample[m] = self._images(view, m, uniq, gather, box)
        if "flow" in want and "flow" in present:
            sample["flow"] = self._flow(view, uniq, gather, box)
        if "keypoints" in want and "keypoints" in present:
            kp = view.keypoints()
            sample["keypoints"], sample["num_persons"] = self._keypoints(kp[:, idx], box)
        if "keypoints3d" in want:
            if "keypoints3d" not in present:
                raise ValueError(
                    f"{view['video_id']!r} segment {view['segment']}: the shards hold no "
                    "keypoints3d (a run with --keypoints3d writes them)"
                )
            score = view.keypoints()[:, idx][..., 2]
            k3 = self._keypoints3d(view.keypoints3d()[:, idx], score, box[4])
            sample["keypoints3d"], sample["num_persons"] = k3
        return sample

    def _keypoints3d(
        self, k3: np.ndarray, score: np.ndarray, flip: bool
    ) -> tuple[torch.Tensor, int]:
        """``[M, T, 17, 3]`` metres, mirrored with the frames (x -> -x, left/right joints
        swapped) and zero where the 2D joint is unseen; (tensor, real M)."""
        k3 = k3.copy()
        k3[score <= 0] = 0.0
        if flip:
            k3[..., 0] = -k3[..., 0]
            k3 = k3[:, :, list(FLIP)]
        return self._persons_tensor(k3)

    def _persons_tensor(self, persons: np.ndarray) -> tuple[torch.Tensor, int]:
        """``[M, ...]`` per-person values as a float32 tensor padded (or cut) to
        ``max_persons`` slots when set; (tensor, real M)."""
        m = persons.shape[0]
        if self.max_persons is not None:
            m = min(m, self.max_persons)
            out = np.zeros((self.max_persons,) + persons.shape[1:], np.float32)
            out[:m] = persons[:m]
            persons = out
        return torch.from_numpy(np.ascontiguousarray(persons, np.float32)), m

    @staticmethod
    def _window(image: np.ndarray, box: tuple[int, int, int, int, bool]) -> np.ndarray:
        y0, x0, ch, cw, flip = box
        view = image[y0 : y0 + ch, x0 : x0 + cw]
        return view[:, ::-1] if flip else view

    def _images(
        self,
        view: RowView,
        modality: str,
        uniq: np.ndarray,
        gather: np.ndarray | None,
        box: tuple[int, int, int, int, bool],
    ) -> torch.Tensor:
        """Decode, crop and flip the frames ``uniq`` -> ``[3, T, ch, cw]`` RGB in [-1, 1]."""
        buf = np.empty((3, len(uniq), box[2], box[3]), np.uint8)
        for k, image in enumerate(view.iter_images(modality, uniq)):
            buf[:, k] = self._window(image, box).transpose(2, 0, 1)  # HWC -> CHW in the one copy
        if gather is not None:
            buf = buf[:, gather]
        if self.dtype == torch.uint8:
            tensor, view = _buffer(buf.shape, torch.uint8)
            view[...] = buf
            return tensor
        tensor, view = _buffer(buf.shape, torch.float32)
        _levels_to_unit(buf, view)
        return self._cast(tensor)

    def _flow(
        self,
        view: RowView,
        uniq: np.ndarray,
        gather: np.ndarray | None,
        box: tuple[int, int, int, int, bool],
    ) -> torch.Tensor:
        """Flow at the frames ``uniq`` -> ``[2, T, ch, cw]``, pixels / 20 in [-1, 1]."""
        quantised = view.flow_encoding != "f16"
        n_flows = view.num_flows
        _, _, ch, cw, flip = box
        buf = np.zeros((2, len(uniq), ch, cw), np.uint8 if quantised else np.float32)
        zero = np.zeros(len(uniq), bool)
        slots, pairs = [], []
        for k, f in enumerate(uniq):
            j = int(f)
            if j >= n_flows:
                j = n_flows - 1 if self.last_flow == "repeat" else -1
            if j < 0:
                zero[k] = True
            else:
                slots.append(k)
                pairs.append(j)
        for k, (x, y) in zip(slots, view.iter_flow_planes(pairs), strict=True):
            buf[0, k] = self._window(x, box)
            buf[1, k] = self._window(y, box)
        if gather is not None:
            buf, zero = buf[:, gather], zero[gather]
        if self.dtype == torch.uint8:
            # levels q with q / 127.5 - 1 == pixels / 20 (f16 flow is quantised here)
            tensor, levels = _buffer(buf.shape, torch.uint8)
            levels[...] = buf if quantised else quantize_flow(buf)
            levels[:, zero] = 128  # the level nearest to zero flow (+0.08 px)
            if flip:
                np.subtract(255, levels[0], out=levels[0])
            return tensor
        tensor, out = _buffer(buf.shape, torch.float32)
        if quantised:
            # q -> (q * 40 / 255 - 20) / 20 == q / 127.5 - 1, already within [-1, 1].
            _levels_to_unit(buf, out)
        else:
            np.divide(buf, np.float32(FLOW_BOUND), out=out)
            np.clip(out, -1.0, 1.0, out=out)
        out[:, zero] = 0.0
        if flip:
            np.negative(out[0], out=out[0])
        return self._cast(tensor)

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.dtype == torch.float32 else tensor.to(self.dtype)

    def _keypoints(
        self, kp: np.ndarray, box: tuple[int, int, int, int, bool]
    ) -> tuple[torch.Tensor, int]:
        """``[M, T, 17, 3]`` keypoints moved into the crop (and flipped); (tensor, real M)."""
        y0, x0, _, cw, flip = box
        kp = kp.copy()
        kp[..., 0] -= x0
        kp[..., 1] -= y0
        if flip:
            kp[..., 0] = (cw - 1) - kp[..., 0]
            kp = kp[:, :, list(FLIP)]
        kp[kp[..., 2] <= 0] = 0.0
        return self._persons_tensor(kp)
