"""Trainer-side PyTorch ``IterableDataset`` over tristream shards.

:class:`ShardDataset` turns the rows of Parquet or TFRecord shards (one row =
one segment of one video, see DESIGN.md "Shard contract") into fixed-length
clips for a two/three-stream (RGB, flow, pose) and skeleton model. It composes
parts that each have one job:

- :mod:`tristream.shards.row_source`: the I/O (list and index the shard files,
  read one row);
- :mod:`tristream.shards.sampling`: which frames of a row a clip takes
  (``random``, ``center``, ``uniform``, ``all``), with I3D-style loop padding of
  rows shorter than a clip;
- :mod:`tristream.shards.partition`: which samples each DDP rank and DataLoader
  worker yields (every row exactly once per epoch, optionally padded or
  truncated so all ranks get the same number), in an order fixed by ``seed``
  and :meth:`ShardDataset.set_epoch`;
- :mod:`tristream.shards.clip_decode` and :mod:`tristream.shards.clip_transforms`:
  decode only the clip's frames, one crop and one horizontal flip per clip for
  every modality (flow x changes sign, left/right COCO joints swap), normalise;
- then the user's own ``transform``, if any.

Needs numpy, pyarrow, OpenCV, simplejpeg, protobuf and torch only: no Beam, no ffmpeg.
"""

from __future__ import annotations

import ctypes
import dataclasses
import mmap
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tristream.shards.clip_decode import LAST_FLOW, decode_flow, decode_images, distinct_frames
from tristream.shards.clip_transforms import (
    FLOAT_DTYPES,
    CropBox,
    CropFlip,
    flow_to_tensor,
    hflip_keypoints,
    hflip_keypoints3d,
    images_to_tensor,
    levels_to_unit,
    pad_persons,
    zero_absent,
)
from tristream.shards.device import EncodedClip, collate
from tristream.shards.files import ShardFileInfo, use_system_memory_pool
from tristream.shards.partition import (
    Partitioner,
    UnitIndex,
    buffer_rng,
    current_worker,
    process_group,
    resolve_rank,
    shuffle_buffer,
)
from tristream.shards.row import RowView
from tristream.shards.row_source import RowSource, RowSourceReader
from tristream.shards.sampling import SAMPLINGS, ClipSampler, sample_rng
from tristream.shards.schema import MODALITIES
from tristream.shards.storage import StoreLike

__all__ = ["DECODE_PLACES", "SAMPLINGS", "ShardDataset"]

#: Where ``rgb``/``pose`` frames are decoded (``ShardDataset(decode=...)``).
DECODE_PLACES: tuple[str, ...] = ("cpu", "device")

#: A user transform: takes a sample dict, returns the sample.
Transform = Callable[[dict[str, Any]], Any]


def _part_attribute(part: str, name: str, convert: Callable[[Any], Any], doc: str) -> property:
    """An attribute of the dataset that reads a part's field, and sets it (``convert``-ed,
    then validated by the part) by replacing the part."""

    def get(self: ShardDataset) -> Any:
        return getattr(getattr(self, part), name)

    def set_(self: ShardDataset, value: Any) -> None:
        self._replace_part(part, **{name: convert(value)})

    return property(get, set_, doc=doc)


def _crop_size(crop: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``crop`` as ``(H, W)`` ints (one int: a square), or None; ValueError when malformed."""
    if crop is None:
        return None
    if isinstance(crop, int):
        crop = (crop, crop)
    if len(crop) != 2 or min(crop) < 1:
        raise ValueError(f"crop must be a positive int, (H, W) or None, got {crop!r}")
    return int(crop[0]), int(crop[1])


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _new_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, in shared memory from the start (as
    ``default_collate`` allocates a batch there), so sending it to the training process
    copies nothing, and with its pages made present in one go (:func:`_populate`)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    tensor = torch.empty(0, dtype=dtype).new(storage).resize_(shape)
    _populate(tensor)
    return tensor


_MADV_POPULATE_WRITE = 23  # Linux >= 5.14
_madvise: Any = None


def _populate(tensor: torch.Tensor) -> bool:
    """Make the pages of a fresh shared-memory ``tensor`` present with one
    ``madvise(MADV_POPULATE_WRITE)`` instead of a page fault per 4 KiB page as the clips are
    written into it (a 19 MB uint8 batch: 6.3 ms instead of 8.8 ms to allocate and fill,
    see benchmarks/RESULTS.md). Returns whether it did; where the call is missing (not
    Linux, a kernel before 5.14) it does nothing and the pages fault in as before."""
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                _madvise = libc.madvise
            except (OSError, AttributeError):
                pass
    nbytes = tensor.numel() * tensor.element_size()
    if not _madvise or nbytes == 0:
        return False
    page = mmap.PAGESIZE
    start = tensor.data_ptr() // page * page
    end = -(-(tensor.data_ptr() + nbytes) // page) * page
    return _madvise(start, end - start, _MADV_POPULATE_WRITE) == 0


# --------------------------------------------------------------------------- dataset


#: What ``ShardDataset`` yields when ``modalities`` is left out (those the shards hold).
DEFAULT_MODALITIES: tuple[str, ...] = ("rgb", "flow", "pose", "keypoints")


class ShardDataset(IterableDataset):
    """Clips of tristream shards as dicts of tensors, for PyTorch training and evaluation.

    Args:
        path: a shard file, a folder of shards, a run's output directory (its
            ``shards/`` folder is read), or a list of any of these. A directory
            holding both formats is read as Parquet (see :func:`~tristream.shards.shard_files`).
        modalities: which of ``rgb``, ``flow``, ``pose``, ``keypoints``,
            ``keypoints3d`` to yield. Given explicitly, every one must be in the shards:
            a modality that no shard holds is a ``ValueError`` naming it and what the
            shards hold. Left out (None): ``rgb``, ``flow``, ``pose`` and ``keypoints``,
            those of them the shards hold (a run without persons has no ``pose``).
            A shard that holds none of them is a ``ValueError``.
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
        decode: where ``rgb`` and ``pose`` frames are decoded: ``cpu`` (in the
            DataLoader workers, default) or ``device``: the samples carry them still
            encoded (:class:`~tristream.shards.device.EncodedClip`, with the clip's
            crop and flip), batched by :func:`tristream.shards.device.collate` and decoded
            on the GPU by :class:`~tristream.shards.device.DeviceDecoder` (which falls
            back to the CPU with a warning where it cannot). ``dtype`` then applies to
            ``flow`` only; flow is decoded on the CPU either way.
        frame_index: how shards' frame indexes (``<shard>.idx``, written beside each
            shard; see :mod:`tristream.shards.frame_index`) are used: ``auto`` reads
            only a clip's frames from a shard whose index matches it, and whole rows
            from a shard without one (or, with a warning, whose index does not match
            it); ``require`` raises ``ValueError`` for a shard without a matching
            index; ``off`` reads whole rows.
        batch_size: yield batches of this many samples instead of single samples, for a
            ``DataLoader(dataset, batch_size=None)``: the same batches, in the same order,
            as ``DataLoader(dataset, batch_size=...)`` over the unbatched dataset gives
            (each worker batches its own samples, the last batch of a worker may be
            shorter), but with a fixed ``crop``, no ``transform`` and no
            ``shuffle_buffer``, the ``rgb``/``flow``/``pose`` clips (uint8 or float32) are
            decoded straight into the batch's tensor, allocated in shared memory, which
            saves ``default_collate``'s copy of every clip (``len()`` still counts samples).
            Each batch's shared memory is made present in one ``madvise`` call.
            In a DataLoader worker the dataset also makes the system allocator
            pyarrow's memory pool (unless ``ARROW_DEFAULT_MEMORY_POOL`` is set; see
            :func:`tristream.shards.files.use_system_memory_pool`).
        store: where ``s3://`` / ``gs://`` paths are read
            (:class:`~tristream.shards.storage.StoreConfig` or ``Store``; None: the
            environment's).
        transform: a callable applied to each sample dict after the built-in
            steps (sampling, decoding, crop, flip, normalisation, person padding);
            its return value is the sample (e.g. a dict with more keys, or the
            tensors resized or jittered; it must still collate in a DataLoader).
            It runs in the DataLoader worker, also on ``padded`` samples, before
            the ``shuffle_buffer``; under spawn/forkserver workers it must pickle.
            Its own randomness is not governed by ``seed``: use torch's per-worker
            generator, or derive it from the sample's ``video_id``, ``segment``,
            ``clip_index`` and :attr:`epoch`.

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
    - ``keypoints3d``: float32 ``[M, T, 17, 3]``, COCO-17 ``(x, y, z)`` metres,
      root-relative, zero where the 2D joint is unseen; mirrored with a flip
      (x -> -x, left/right joints swapped). Asking for it from shards without
      it raises ``ValueError``.
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

    Parts (each usable on its own): :attr:`source`
    (:class:`~tristream.shards.row_source.RowSource`, the file I/O),
    :attr:`sampler` (:class:`~tristream.shards.sampling.ClipSampler`),
    :attr:`crop_flip` (:class:`~tristream.shards.clip_transforms.CropFlip`),
    :attr:`partitioner` (:class:`~tristream.shards.partition.Partitioner`) and the
    decode and transform functions of :mod:`tristream.shards.clip_decode` and
    :mod:`tristream.shards.clip_transforms`. The constructor arguments of those
    parts (``clip_len``, ``frame_stride``, ``sampling``, ``train``, ``crop``,
    ``hflip``, ``drop_last``, ``pad``) stay readable and settable as attributes.
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        modalities: Sequence[str] | None = None,
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
        transform: Transform | None = None,
        decode: str = "cpu",
        frame_index: str = "auto",
        store: StoreLike = None,
        batch_size: int | None = None,
    ):
        super().__init__()
        explicit = modalities is not None
        modalities = tuple(modalities) if explicit else DEFAULT_MODALITIES
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}")
        #: Which frames of a row each clip takes.
        mode = sampling or ("random" if train else "center")
        self.sampler = ClipSampler(int(clip_len), int(frame_stride), mode, bool(train))
        #: Where each clip's crop goes and whether it is flipped.
        self.crop_flip = CropFlip(_crop_size(crop), bool(train), float(hflip))
        #: How an epoch's samples are cut over ranks and workers.
        self.partitioner = Partitioner(bool(drop_last), bool(pad))
        if last_flow not in LAST_FLOW:
            raise ValueError("last_flow must be 'repeat' or 'zero'")
        if seed < 0:
            raise ValueError("seed must be >= 0")
        if dtype not in FLOAT_DTYPES + (torch.uint8,):
            raise ValueError(f"dtype must be a float dtype or torch.uint8, got {dtype}")
        if max_persons is not None and max_persons < 0:
            raise ValueError("max_persons must be >= 0 or None")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be >= 1 or None")
        if decode not in DECODE_PLACES:
            raise ValueError(f"decode must be one of {DECODE_PLACES}, got {decode!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")

        self.modalities = modalities
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = int(shuffle_buffer)
        self.max_persons = max_persons
        self.last_flow = last_flow
        self.dtype = dtype
        #: Where rgb/pose frames are decoded: ``cpu`` or ``device`` (see the class docstring).
        self.decode = decode
        #: Samples per yielded batch (None: single samples), see the class docstring.
        self.batch_size = batch_size
        #: The user's per-sample transform (see the class docstring), or None.
        self.transform = transform
        self.epoch = 0
        self._frozen_dist: tuple[int, int] | None = None

        #: The shard files, indexed (all file I/O goes through it).
        self.source = RowSource(
            path, modalities, self.sampler.needs_num_frames, fmt, frame_index, store
        )
        missing = [m for m in modalities if m not in self.source.available]
        if explicit and missing and self.source.files:
            held = sorted({m for f in self.source.files for m in f.modalities})
            raise ValueError(
                f"modalities {missing} are in none of the shards (they hold {held}); "
                "ask for those, or leave modalities out for what the shards hold"
            )
        self._units = self._unit_index()

    # ------------------------------------------------------------------ parts

    clip_len = _part_attribute("sampler", "clip_len", int, "T, frames per clip.")
    frame_stride = _part_attribute("sampler", "frame_stride", int, "Step between clip frames.")
    sampling = _part_attribute("sampler", "mode", str, "The sampling mode (``SAMPLINGS``).")
    hflip = _part_attribute("crop_flip", "hflip", float, "Flip probability in training.")
    drop_last = _part_attribute("partitioner", "drop_last", bool, "Equal counts by dropping.")
    pad = _part_attribute("partitioner", "pad", bool, "Equal rank counts by repeating.")

    @property
    def crop(self) -> tuple[int, int] | None:
        """Output size ``(H, W)``, or None for the stored frame size."""
        return self.crop_flip.size

    @crop.setter
    def crop(self, crop: int | tuple[int, int] | None) -> None:
        self._replace_part("crop_flip", size=_crop_size(crop))

    @property
    def train(self) -> bool:
        """Random crops, flips (and ``uniform`` positions) when True; centred when False."""
        return self.crop_flip.train

    @train.setter
    def train(self, train: bool) -> None:
        self._replace_part("crop_flip", train=bool(train))
        self._replace_part("sampler", train=bool(train))

    def _replace_part(self, part: str, **changes: Any) -> None:
        old = getattr(self, part)
        setattr(self, part, dataclasses.replace(old, **changes))  # the part validates
        if part == "sampler":
            try:
                self._units = self._unit_index()
            except ValueError:
                setattr(self, part, old)
                raise

    def _unit_index(self) -> UnitIndex:
        frames = self.source.num_frames
        if self.sampler.needs_num_frames:
            if frames is None:
                raise ValueError(
                    "sampling='all' needs the rows' frame counts: make a new ShardDataset with it"
                )
            return UnitIndex(self.sampler.clips_per_row(frames))
        return UnitIndex(np.ones(self.source.num_rows, np.int64))

    # ------------------------------------------------------------------ index

    @property
    def files(self) -> list[ShardFileInfo]:
        """The shard files read: path, format and the modalities each holds."""
        return self.source.files

    @property
    def available(self) -> tuple[str, ...]:
        """The requested modalities present in at least one shard, in the requested order."""
        return self.source.available

    @property
    def num_rows(self) -> int:
        """Rows (segments) in the shards."""
        return self.source.num_rows

    @property
    def num_units(self) -> int:
        """Samples in one epoch over all ranks before ``pad``/``drop_last`` (rows or clips)."""
        return self._units.num_units

    # ------------------------------------------------------------------ order

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which reseeds the row order, clip positions, crops and flips."""
        self.epoch = int(epoch)

    def _dist_info(self) -> tuple[int, int]:
        return resolve_rank(self.rank, self.world_size, self._frozen_dist)

    def __getstate__(self) -> dict[str, Any]:
        # Workers started with spawn/forkserver have no process group: take the
        # rank and world size of the process that pickles the dataset with it.
        state = self.__dict__.copy()
        if self.rank is None and self.world_size is None:
            group = process_group()
            if group is not None:
                state["_frozen_dist"] = group
        return state

    def __len__(self) -> int:
        """Samples this rank yields per epoch (over all its DataLoader workers)."""
        rank, world = self._dist_info()
        return self.partitioner.rank_length(self.num_units, rank, world)

    def __iter__(self) -> Iterator[Any]:
        if get_worker_info() is not None:
            use_system_memory_pool()  # a reading worker: memory Arrow gives back (files.py)
        rank, world = self._dist_info()
        worker, workers = current_worker()
        order = self._units.epoch_order(self.shuffle, self.seed, self.epoch)
        units, padded = self.partitioner.assign(order, rank, world, worker, workers)
        buffered = self.shuffle and self.shuffle_buffer > 1
        with self.source.open() as reader:
            if self.batch_size and not buffered and self.transform is None:
                yield from self._batches(reader, units, padded)
                return
            samples: Iterable[Any] = (
                self._sample(reader, int(u), bool(p)) for u, p in zip(units, padded)
            )
            if buffered:
                rng = buffer_rng(self.seed, self.epoch, rank, worker)
                samples = shuffle_buffer(samples, self.shuffle_buffer, rng)
            if self.batch_size:
                samples = _chunks(samples, self.batch_size)
                samples = (collate(batch) for batch in samples)
            yield from samples

    def _batches(
        self, reader: RowSourceReader, units: np.ndarray, padded: np.ndarray
    ) -> Iterator[dict[str, Any]]:
        """Batches of ``batch_size`` samples whose clip tensors are decoded straight into
        one buffer per modality and batch (shared memory in a DataLoader worker, so it
        crosses to the training process without a copy); else collated as usual."""
        size = self.batch_size
        for start in range(0, len(units), size):
            part = list(zip(units[start : start + size], padded[start : start + size]))
            buffers = self._batch_buffers(len(part))
            batch = [
                self._sample(reader, int(u), bool(p), {m: b[k] for m, b in buffers.items()})
                for k, (u, p) in enumerate(part)
            ]
            direct = {
                m: b
                for m, b in buffers.items()
                if all(
                    isinstance(x.get(m), torch.Tensor) and x[m].data_ptr() == b[k].data_ptr()
                    for k, x in enumerate(batch)
                )
            }
            out = collate([{k: v for k, v in x.items() if k not in direct} for x in batch])
            out.update(direct)
            yield out

    def _batch_buffers(self, n: int) -> dict[str, torch.Tensor]:
        """Per image/flow modality asked for, an uninitialised ``[n, C, T, h, w]`` tensor
        of ``dtype`` (shared memory in a DataLoader worker); none when the clip size is not
        fixed (``crop=None``), frames stay encoded, or ``dtype`` has no numpy view."""
        if self.crop is None or self.dtype not in (torch.uint8, torch.float32):
            return {}
        h, w = self.crop
        channels = {"rgb": 3, "flow": 2, "pose": 3}
        out = {}
        for m in self.available:
            if m in channels and not (m != "flow" and self.decode == "device"):
                out[m] = _new_tensor((n, channels[m], self.clip_len, h, w), self.dtype)
        return out

    # ------------------------------------------------------------------ samples

    def _sample(
        self,
        reader: RowSourceReader,
        unit: int,
        padded: bool,
        out: dict[str, torch.Tensor] | None = None,
    ) -> Any:
        """Sample ``unit`` of this epoch: read, sample, decode, crop/flip, normalise, transform."""
        row, clip = self._units.locate(unit)
        view = reader.read(row)
        n, h, w = view.num_frames, view.height, view.width
        if n < 1:
            raise ValueError(f"row {view['video_id']!r} segment {view['segment']} has no frames")
        # one generator per sample, drawn in this order: clip position, crop, flip
        rng = sample_rng(self.seed, self.epoch, unit)
        idx = self.sampler.indices(n, clip, rng)
        try:
            box, flip = self.crop_flip.draw(h, w, rng)
        except ValueError as error:
            raise ValueError(f"{error} of {view['video_id']!r}") from None
        frames, gather = distinct_frames(idx)

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
                sample[m] = self._images(view, m, frames, gather, box, flip, (out or {}).get(m))
        if "flow" in want and "flow" in present:
            flow, zero = decode_flow(view, frames, box, flip, self.last_flow)
            if gather is not None:
                flow, zero = flow[:, gather], zero[gather]
            quantised = view.flow_encoding != "f16"
            tensor = flow_to_tensor(flow, zero, quantised, flip, self.dtype)
            slot = (out or {}).get("flow")
            if slot is not None and slot.shape == tensor.shape:
                tensor = slot.copy_(tensor)
            sample["flow"] = tensor
        if "keypoints" in want and "keypoints" in present:
            kp = box.apply_to_keypoints(view.keypoints()[:, idx])
            if flip:
                kp = hflip_keypoints(kp, box.width)
            zero_absent(kp, kp[..., 2])
            sample["keypoints"], sample["num_persons"] = pad_persons(kp, self.max_persons)
        if "keypoints3d" in want:
            sample["keypoints3d"], sample["num_persons"] = self._keypoints3d(view, idx, flip)
        if self.transform is not None:
            return self.transform(sample)
        return sample

    def _images(
        self,
        view: RowView,
        modality: str,
        frames: np.ndarray,
        gather: np.ndarray | None,
        box: CropBox,
        flip: bool,
        slot: torch.Tensor | None = None,
    ) -> torch.Tensor | EncodedClip:
        """The clip of ``rgb`` or ``pose``: ``dtype`` ``[3, T, h, w]`` (decoded straight
        into the tensor for uint8 clips without repeated frames), or encoded. ``slot``: a
        uint8 or float32 tensor of that shape to write it into (a batch buffer's row)."""
        if self.decode == "device":
            return EncodedClip(
                frames=tuple(bytes(d) for d in view.iter_encoded(modality, frames)),
                gather=None if gather is None else tuple(int(g) for g in gather),
                box=(box.top, box.left, box.height, box.width),
                flip=flip,
                size=(view.height, view.width),
            )
        shape = (3, self.clip_len, box.height, box.width)
        if slot is not None and (tuple(slot.shape) != shape or slot.dtype != self.dtype):
            slot = None
        if gather is None and self.dtype == torch.uint8:
            tensor = torch.empty(shape, dtype=torch.uint8) if slot is None else slot
            decode_images(view, modality, frames, box, flip, out=tensor.numpy())
            return tensor
        levels = decode_images(view, modality, frames, box, flip)
        if gather is not None:
            levels = levels[:, gather]
        if slot is None:
            return images_to_tensor(levels, self.dtype)
        if self.dtype == torch.uint8:
            slot.numpy()[...] = levels
        else:
            levels_to_unit(levels, slot.numpy())
        return slot

    def _keypoints3d(self, view: RowView, idx: np.ndarray, flip: bool) -> tuple[torch.Tensor, int]:
        """``[M, T, 17, 3]`` metres at row frames ``idx``, zero where the 2D joint is unseen,
        mirrored when ``flip``, padded to ``max_persons``; (tensor, real M)."""
        if "keypoints3d" not in view.modalities:
            raise ValueError(
                f"{view['video_id']!r} segment {view['segment']}: the shards hold no "
                "keypoints3d (a run with --keypoints3d writes them)"
            )
        score = view.keypoints()[:, idx][..., 2]
        k3 = zero_absent(view.keypoints3d()[:, idx].copy(), score)
        if flip:
            k3 = hflip_keypoints3d(k3)
        return pad_persons(k3, self.max_persons)
