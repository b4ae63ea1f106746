"""Which samples each DDP rank and DataLoader worker yields in an epoch, and in which order.

The samples of an epoch are *units*: one per row, or one per (row, clip) under
``sampling="all"`` (:class:`UnitIndex`). An epoch puts the units in order
(rows permuted when shuffling, the clips of a row kept together), and
:class:`Partitioner` cuts that order into ``world_size`` contiguous blocks, one
per rank, and each block into contiguous parts, one per DataLoader worker.
Without ``drop_last``/``pad`` every unit goes to exactly one (rank, worker);
``drop_last`` cuts and ``pad`` repeats units so every rank gets the same count.

Unit ids are int64, 0-based; unit ``first_unit[row] + clip`` is clip ``clip`` of
row ``row``. Needs numpy; :func:`resolve_rank` and :func:`current_worker` read
``torch.distributed`` and ``torch.utils.data`` (imported there, when called).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "Partitioner",
    "UnitIndex",
    "buffer_rng",
    "current_worker",
    "process_group",
    "resolve_rank",
    "shuffle_buffer",
]

_T = TypeVar("_T")


# --------------------------------------------------------------------------- units


class UnitIndex:
    """Rows and their clips as one numbering of an epoch's units.

    Args:
        clips_per_row: int ``[N]``, samples per row (>= 1 each), e.g. from
            :meth:`tristream.shards.sampling.ClipSampler.clips_per_row`.
    """

    def __init__(self, clips_per_row: np.ndarray):
        self.clips_per_row = np.asarray(clips_per_row, np.int64)
        if self.clips_per_row.ndim != 1 or (self.clips_per_row < 1).any():
            raise ValueError("clips_per_row must be a 1-D array of counts >= 1")
        #: int64 ``[N]``: the unit id of each row's first clip.
        self.first_unit = np.cumsum(self.clips_per_row) - self.clips_per_row

    @property
    def num_rows(self) -> int:
        """N, the rows."""
        return len(self.clips_per_row)

    @property
    def num_units(self) -> int:
        """Units (samples) in one epoch over all ranks: the sum of ``clips_per_row``."""
        return int(self.clips_per_row.sum())

    def locate(self, unit: int) -> tuple[int, int]:
        """``(row, clip)`` of unit id ``unit``."""
        row = int(np.searchsorted(self.first_unit, unit, side="right") - 1)
        return row, int(unit) - int(self.first_unit[row])

    def epoch_order(self, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
        """All unit ids of an epoch in order: int64 ``[num_units]``, a permutation of them.

        Rows in order, or permuted by ``default_rng([seed, epoch])`` when
        ``shuffle``; the units of one row stay together, clip 0 first.
        """
        n_rows = self.num_rows
        if shuffle:
            rows = np.random.default_rng([seed, epoch]).permutation(n_rows)
        else:
            rows = np.arange(n_rows)
        counts = self.clips_per_row[rows]
        if len(rows) == 0:
            return np.zeros(0, np.int64)
        starts = self.first_unit[rows]
        offsets = np.cumsum(counts) - counts
        return np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))


# --------------------------------------------------------------------------- partition


@dataclass(frozen=True)
class Partitioner:
    """Cuts an epoch's unit order over DDP ranks and DataLoader workers.

    Args:
        drop_last: drop the last ``num_units % world_size`` units of the order
            so every rank gets ``num_units // world_size``.
        pad: repeat units from the start of the order so every rank gets
            ``ceil(num_units / world_size)``; the repeats are flagged ``padded``.

    With neither, every unit goes to exactly one rank and worker, and rank
    counts differ by at most one.
    """

    drop_last: bool = False
    pad: bool = False

    def __post_init__(self) -> None:
        if self.drop_last and self.pad:
            raise ValueError("choose drop_last or pad, not both")

    def per_rank(self, num_units: int, world_size: int) -> int | None:
        """Units every rank gets under ``drop_last``/``pad``; None when counts may differ."""
        if self.drop_last:
            return num_units // world_size
        if self.pad:
            return -(-num_units // world_size)
        return None

    def rank_length(self, num_units: int, rank: int, world_size: int) -> int:
        """Units rank ``rank`` yields per epoch (over all its DataLoader workers)."""
        per = self.per_rank(num_units, world_size)
        if per is not None:
            return per
        return len(np.array_split(np.arange(num_units), world_size)[rank])

    def rank_units(
        self, order: np.ndarray, rank: int, world_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank ``rank``'s contiguous block of ``order``.

        Returns (unit ids int64 ``[K]``, padded bool ``[K]``).
        """
        per = self.per_rank(len(order), world_size)
        if per is None:
            block = np.array_split(order, world_size)[rank]
            return block, np.zeros(len(block), bool)
        total = per * world_size
        padded = np.zeros(total, bool)
        if total > len(order):
            padded[len(order) :] = True
            order = np.concatenate([order, np.resize(order, total - len(order))])
        sl = slice(rank * per, (rank + 1) * per)
        return order[:total][sl], padded[sl]

    @staticmethod
    def worker_units(
        units: np.ndarray, padded: np.ndarray, worker: int, num_workers: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Worker ``worker``'s contiguous part of a rank's ``(units, padded)``."""
        return (
            np.array_split(units, num_workers)[worker],
            np.array_split(padded, num_workers)[worker],
        )

    def assign(
        self, order: np.ndarray, rank: int, world_size: int, worker: int = 0, num_workers: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """The units (and padded flags) that worker ``worker`` of rank ``rank`` yields, in order."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} is not in [0, {num_workers})")
        units, padded = self.rank_units(order, rank, world_size)
        return self.worker_units(units, padded, worker, num_workers)


# --------------------------------------------------------------------------- who am I


def process_group() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def resolve_rank(
    rank: int | None, world_size: int | None, frozen: tuple[int, int] | None = None
) -> tuple[int, int]:
    """This process's ``(rank, world_size)``.

    Explicit values win (a missing one of the two is 0 or 1); else the
    initialised process group; else ``frozen`` (the group of the process that
    pickled the dataset, for spawned DataLoader workers); else ``(0, 1)``.
    """
    if rank is not None or world_size is not None:
        rank, world = rank or 0, world_size or 1
    else:
        rank, world = process_group() or frozen or (0, 1)
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return rank, world


def current_worker() -> tuple[int, int]:
    """``(worker id, num_workers)`` of the DataLoader worker this runs in; ``(0, 1)`` outside."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


# --------------------------------------------------------------------------- local order


def buffer_rng(seed: int, epoch: int, rank: int, worker: int) -> np.random.Generator:
    """The generator of one worker's :func:`shuffle_buffer` in an epoch."""
    return np.random.default_rng([seed, epoch, rank, worker, 1])


def shuffle_buffer(items: Iterable[_T], size: int, rng: np.random.Generator) -> Iterator[_T]:
    """Yield ``items`` through a buffer of ``size``: each output is a random buffered item.

    Every item comes out exactly once; memory is ``size`` items.
    """
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = int(rng.integers(size))
        buffer[k], item = item, buffer[k]
        yield item
    for k in rng.permutation(len(buffer)):
        yield buffer[k]
