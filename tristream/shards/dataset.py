"""A minimal torch ``IterableDataset`` over shard rows (trainer side; needs torch)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tristream.shards.reader import decode_row, iter_raw_rows


class ShardDataset(IterableDataset):
    """Iterate the rows of a shard file or output directory as dicts of tensors.

    ``path``: a shard file, a folder of shards or a run's output directory.
    ``modalities``: which modalities to decode (default: all present).
    Each row becomes a dict as :func:`tristream.shards.read_rows` gives it,
    with numpy arrays turned into tensors: ``rgb``/``pose`` uint8
    ``[T, H, W, 3]``, ``flow`` float32 ``[T-1, H, W, 2]`` (pixels),
    ``keypoints`` float32 ``[M, T, 17, 3]``, ``boxes`` float32 ``[M, T, 5]``,
    ``track_ids`` int32 ``[M]``; scalars stay Python values. With several
    DataLoader workers, worker k of n takes rows k, k+n, k+2n, ... so every
    row is yielded exactly once per pass.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        modalities: tuple[str, ...] | None = None,
        fmt: str | None = None,
    ):
        super().__init__()
        self.path = os.fspath(path)
        self.modalities = modalities
        self.fmt = fmt

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for i, raw in enumerate(iter_raw_rows(self.path, self.fmt)):
            if i % workers != worker:
                continue
            row = decode_row(raw, self.modalities)
            yield {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in row.items()}
