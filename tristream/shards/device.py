"""Trainer-side steps on the GPU: normalise uint8 clips there, or decode their JPEG frames there.

The recommended training setting is ``ShardDataset(..., dtype=torch.uint8)``: the
DataLoader workers hand over raw levels (a quarter of the bytes of float32 through
their shared-memory queues, and no float pass on the CPU), and the training process
turns them into floats on the GPU with :func:`normalize`::

    loader = DataLoader(ShardDataset(path, dtype=torch.uint8), batch_size=8, num_workers=4)
    for batch in loader:
        batch = normalize(batch, "cuda")       # rgb/flow/pose float32 [B, C, T, H, W] on cuda

A trainer with a GPU can also leave the JPEG decoding to it:
``ShardDataset(..., decode="device")`` yields the ``rgb``/``pose`` frames still encoded
(an :class:`EncodedClip` with the clip's crop and flip), :func:`collate` batches them,
and :class:`DeviceDecoder` decodes a whole batch with one
``torchvision.io.decode_jpeg(..., device="cuda")`` call, then crops and flips on the GPU.
Without torchvision, without CUDA, or for frames that are not JPEG (PNG), it decodes on
the CPU instead (the same decode and values as the CPU path; warned once).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from tristream.shards.clip_decode import decode_window
from tristream.shards.clip_transforms import CropBox
from tristream.shards.codec import is_jpeg

__all__ = ["IMAGE_KEYS", "LEVEL_KEYS", "DeviceDecoder", "EncodedClip", "collate", "normalize"]

#: Sample keys that :class:`DeviceDecoder` decodes (image modalities).
IMAGE_KEYS: tuple[str, ...] = ("rgb", "pose")
#: Sample keys whose uint8 levels :func:`normalize` turns into ``v / 127.5 - 1``.
LEVEL_KEYS: tuple[str, ...] = ("rgb", "flow", "pose")


def normalize(
    batch: dict[str, Any],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    keys: Sequence[str] = LEVEL_KEYS,
    non_blocking: bool = True,
) -> dict[str, Any]:
    """A batch (or one sample) with its tensors moved to ``device`` (None: where they are)
    and its uint8 levels under ``keys`` turned into ``dtype`` values ``v / 127.5 - 1``.

    That is ``ShardDataset``'s float output: in [-1, 1] for ``rgb``/``pose``, and for
    quantised ``flow`` levels ``q`` pixels / 20 (``q / 127.5 - 1``, computed in float32 as
    the CPU path does, then cast; a flipped clip's flow x, ``255 - q`` in uint8, may differ
    from the float output's ``-(q / 127.5 - 1)`` by one float32 rounding). One difference:
    a frame with zero flow (the ``zero``
    ``last_flow``, a 1-frame row) is level 128 in uint8, so +0.0039 here where the float
    output has 0. Other entries are returned as they are. A new dict; the input is unchanged.
    """
    out = dict(batch)
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        if device is not None:
            value = value.to(device, non_blocking=non_blocking)
        if key in keys and value.dtype == torch.uint8:
            value = value.to(torch.float32).mul_(1 / 127.5).sub_(1.0)
            value = value if dtype == torch.float32 else value.to(dtype)
        out[key] = value
    return out


@dataclass(frozen=True)
class EncodedClip:
    """A clip of one image modality with its frames still encoded (``decode="device"``).

    ``frames``: the distinct row frames of the clip, encoded as stored (JPEG or PNG), in
    row order; ``gather``: int ``[T]``, which of them each clip frame is (None: all, in
    order); ``box``: the crop ``(top, left, height, width)`` in stored pixels; ``flip``:
    mirrored after the crop; ``size``: the stored frames' ``(H, W)``. Decoded, it is
    uint8 ``[3, T, height, width]`` RGB, what ``ShardDataset`` yields with ``dtype=torch.uint8``.
    """

    frames: tuple[bytes, ...]
    gather: tuple[int, ...] | None
    box: tuple[int, int, int, int]
    flip: bool
    size: tuple[int, int]

    @property
    def clip_len(self) -> int:
        """T, the clip's frames."""
        return len(self.frames) if self.gather is None else len(self.gather)

    def decode_cpu(self) -> torch.Tensor:
        """uint8 ``[3, T, height, width]`` RGB, decoded here (the CPU path's decode)."""
        top, left, h, w = self.box
        box = CropBox(top, left, h, w)
        out = np.empty((3, len(self.frames), h, w), np.uint8)
        for k, data in enumerate(self.frames):
            decode_window(data, self.size, box, self.flip, out[:, k], f"encoded frame {k}")
        tensor = torch.from_numpy(out)
        return tensor if self.gather is None else tensor[:, list(self.gather)]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` for samples that hold :class:`EncodedClip` values: those stay a
    list of B clips (for :class:`DeviceDecoder`), everything else is collated as usual."""
    encoded = {k for k, v in samples[0].items() if isinstance(v, EncodedClip)}
    rest = default_collate([{k: v for k, v in s.items() if k not in encoded} for s in samples])
    for key in encoded:
        rest[key] = [s[key] for s in samples]
    return rest


def _unavailable(device: torch.device) -> str | None:
    """Why JPEG decoding cannot run on ``device`` (None when it can)."""
    if device.type != "cuda":
        return f"device {device} is not a CUDA device"
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        return "torchvision is not installed"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return None


class DeviceDecoder:
    """Decodes the :class:`EncodedClip` s of a batch (:func:`collate`) on ``device``.

    ``decoder(batch)`` returns the batch with each such key (``rgb``, ``pose``) replaced
    by uint8 ``[B, 3, T, H, W]`` RGB on ``device`` (on the CPU where CUDA is absent),
    equal to what ``ShardDataset`` gives with ``dtype=torch.uint8`` and ``decode="cpu"``
    (up to the JPEG decoder: nvJPEG's IDCT and upsampling may differ from
    libjpeg-turbo's by a level or two); follow with
    :func:`normalize` for floats. All JPEG frames of the batch go to one batched
    ``torchvision.io.decode_jpeg`` call. When torchvision or CUDA is missing it warns once
    and decodes on the CPU (exactly the CPU path's decode and values); PNG frames are always
    decoded on the CPU.
    """

    def __init__(self, device: torch.device | str = "cuda", keys: Sequence[str] = IMAGE_KEYS):
        self.device = torch.device(device)
        self.keys = tuple(keys)
        #: Why decoding falls back to the CPU, or None when it runs on ``device``.
        self.fallback: str | None = _unavailable(self.device)
        #: Where the decoded clips end up: ``device``, or the CPU when CUDA is absent.
        self.target = self.device
        if self.device.type == "cuda" and not torch.cuda.is_available():
            self.target = torch.device("cpu")
        if self.fallback is not None:
            warnings.warn(
                f"JPEG decoding on {self.device} is not available ({self.fallback}): "
                "decoding on the CPU",
                stacklevel=2,
            )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        for key in self.keys:
            value = batch.get(key)
            if isinstance(value, list) and value and isinstance(value[0], EncodedClip):
                out[key] = self.decode(value)
        return out

    def decode(self, clips: Sequence[EncodedClip]) -> torch.Tensor:
        """uint8 ``[B, 3, T, H, W]`` RGB on ``device`` of ``clips`` (same T and crop size)."""
        if self.fallback is None and all(is_jpeg(f) for c in clips for f in c.frames):
            return self._decode_gpu(clips)
        return torch.stack([c.decode_cpu() for c in clips]).to(self.target)

    def _decode_gpu(self, clips: Sequence[EncodedClip]) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for c in clips for f in c.frames]
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        out, k = [], 0
        for c in clips:
            top, left, h, w = c.box
            frames = torch.stack(images[k : k + len(c.frames)])  # [N, 3, H, W]
            k += len(c.frames)
            if tuple(frames.shape[-2:]) != tuple(c.size):
                raise ValueError(f"an encoded frame is {tuple(frames.shape[-2:])}, not {c.size}")
            window = frames[:, :, top : top + h, left : left + w]
            if c.flip:
                window = window.flip(-1)
            if c.gather is not None:
                window = window[list(c.gather)]
            out.append(window.permute(1, 0, 2, 3))
        return torch.stack(out).contiguous()
