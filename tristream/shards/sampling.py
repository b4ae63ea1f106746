"""Clip sampling: which frames of a shard row a training or evaluation clip takes.

A row (one segment of one video, see DESIGN.md "Shard contract") holds
``num_frames`` frames; a clip is ``clip_len`` of them. :class:`ClipSampler`
says which, as row frame indices (int64 ``[T]``, 0-based within the row; the
video frame is ``start_frame + index``). It knows nothing of files, crops or
ranks; :class:`tristream.shards.ShardDataset` calls it once per sample with that
sample's generator from :func:`sample_rng`.

numpy only (no torch): usable by any trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Sampling modes of :class:`ClipSampler` (and of ``ShardDataset(sampling=...)``).
SAMPLINGS: tuple[str, ...] = ("random", "center", "uniform", "all")

__all__ = ["SAMPLINGS", "ClipSampler", "sample_rng"]


def sample_rng(seed: int, epoch: int, unit: int) -> np.random.Generator:
    """The generator of one sample's randomness: its clip position, then its crop and flip.

    ``unit`` is the sample's id in the epoch (a row, or a (row, clip) pair under
    ``all``; see :class:`tristream.shards.partition.UnitIndex`). It depends on
    nothing else, so a sample is the same whichever rank or worker makes it.
    """
    return np.random.default_rng([seed, epoch, unit])


@dataclass(frozen=True)
class ClipSampler:
    """Where a clip of ``clip_len`` frames comes from inside a row of ``num_frames`` frames.

    Args:
        clip_len: T, frames per clip (>= 1).
        frame_stride: step between the row frames of a clip (``random``,
            ``center``, ``all``; >= 1); a clip spans ``(T - 1) * frame_stride + 1``
            row frames.
        mode: ``random``: one clip at a uniformly drawn start; ``center``: one
            clip centred in the row (start ``(num_frames - span) // 2``);
            ``uniform``: T frames spread over the whole row (the row is cut into
            T equal parts, frame ``floor((t + u) * num_frames / T)`` of part t,
            ``u`` uniform in [0, 1) when ``train`` else 0.5; ``frame_stride`` is
            ignored); ``all``: every clip of the row back to back (clip c starts at
            ``c * T * frame_stride``), for evaluation.
        train: only for ``uniform``: draw the frame inside each part at random
            (else take the part's middle).

    A row shorter than a clip is padded by looping, as I3D does: indices are
    taken modulo ``num_frames`` (a 3-frame row gives 0, 1, 2, 0, 1, 2, ...); so
    is the tail of the last clip under ``all``.
    """

    clip_len: int
    frame_stride: int = 1
    mode: str = "random"
    train: bool = True

    def __post_init__(self) -> None:
        if self.mode not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.mode!r}")
        if self.clip_len < 1 or self.frame_stride < 1:
            raise ValueError("clip_len and frame_stride must be >= 1")

    @property
    def span(self) -> int:
        """Row frames one clip covers: ``(clip_len - 1) * frame_stride + 1``."""
        return (self.clip_len - 1) * self.frame_stride + 1

    @property
    def needs_num_frames(self) -> bool:
        """Whether :meth:`clips_per_row` needs the rows' frame counts (``all`` only)."""
        return self.mode == "all"

    @property
    def is_random(self) -> bool:
        """Whether :meth:`indices` draws from its generator (``random``; ``uniform`` in train)."""
        return self.mode == "random" or (self.mode == "uniform" and self.train)

    def clips_per_row(self, num_frames: np.ndarray) -> np.ndarray:
        """Clips (samples) per row: int64 ``[N]`` for ``num_frames`` int ``[N]``.

        ``all``: ``max(1, ceil(num_frames / (clip_len * frame_stride)))``; else 1.
        """
        frames = np.asarray(num_frames, np.int64)
        if self.mode != "all":
            return np.ones(frames.shape, np.int64)
        step = self.clip_len * self.frame_stride
        return np.maximum(1, -(-frames // step))

    def indices(
        self, num_frames: int, clip: int = 0, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Row frame indices of clip number ``clip`` of a row: int64 ``[clip_len]``.

        ``clip`` matters under ``all`` only. ``rng`` is required when
        :attr:`is_random`; ``random`` draws one integer from it, ``uniform`` in
        train ``clip_len`` floats.
        """
        n = int(num_frames)
        if n < 1:
            raise ValueError("a row needs at least one frame")
        t, s = self.clip_len, self.frame_stride
        if self.is_random and rng is None:
            raise ValueError(f"{self.mode!r} sampling needs a random generator")
        steps = np.arange(t, dtype=np.int64)
        if self.mode == "uniform":
            if n < t:
                return steps % n
            u = rng.random(t) if self.train else np.full(t, 0.5)
            return np.minimum(((steps + u) * n / t).astype(np.int64), n - 1)
        span = self.span
        if self.mode == "all":
            start = clip * t * s
        elif n < span:
            start = 0
        elif self.mode == "random":
            start = int(rng.integers(0, n - span + 1))
        else:  # center
            start = (n - span) // 2
        return (start + s * steps) % n

    __call__ = indices
