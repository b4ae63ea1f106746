"""Person detectors for top-down pose: YOLOX (ONNX Runtime) and TorchScript detectors.

Both take a batch of frames and return, per frame, the person boxes sorted by score:

    detector(frames: uint8 [B, H, W, 3] RGB) -> list of B float32 [N, 5]
        (x1, y1, x2, y2, score), frame pixels, clipped to [0, W] x [0, H]

:class:`YoloxOnnxDetector` runs a YOLOX model exported to ONNX *without* its decoding
(``export_onnx.py`` without ``--decode_in_inference``): input ``[b, 3, S, S]`` float,
output ``[b, A, 5 + C]`` raw rows (cx, cy, w, h, objectness, C class scores) on the
stride-8/16/32 grids. Preprocessing and decoding follow Megvii's reference
(``yolox/data/data_augment.py: preproc``, ``demo/ONNXRuntime/onnx_inference.py``):

* the frame is resized by ``r = min(S_h / H, S_w / W)`` to ``(int(W r), int(H r))``
  (bilinear) and put in the *top-left* corner of an ``S_h x S_w`` canvas of value 114;
* channels are in **BGR** order (the reference reads images with ``cv2.imread`` and does not
  convert them), values 0..255, no mean/std normalisation;
* row ``i`` of the grid of stride ``s`` is at cell ``(gx, gy)``; centre
  ``(cx + gx, cy + gy) * s``, size ``exp(w, h) * s``; score = objectness x class score
  (class 0 = person in COCO); NMS at IoU ``nms_threshold``; boxes divided by ``r``.

The ONNX Runtime session is created once per instance, on CUDA when the CUDA execution
provider is installed and ``device`` allows it, else on CPU. A model with a fixed batch
size (the shared YOLOX-nano has batch 1) is run in chunks of that size; a dynamic batch
dimension takes ``batch_size`` frames per run.

:class:`TorchScriptDetector` wraps a ``torch.jit`` module with this contract:

* input: float32 ``[B, 3, H, W]``, RGB, values 0..255, the frames as they are (the module
  does its own resizing and normalisation);
* output: either a list/tuple of ``B`` tensors ``[N_i, 5 or 6]`` or one padded tensor
  ``[B, N, 5 or 6]``; columns (x1, y1, x2, y2, score[, class]) in input pixels; rows with
  score <= 0 are padding; with a class column only ``person_class`` rows are kept.

:func:`load_detector` picks the class from the file's content.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from tristream.models.common import looks_like_onnx, nms, onnx_session, resolve_device
from tristream.models.pose_resnet import is_torchscript_archive

LOG = logging.getLogger(__name__)

__all__ = [
    "YoloxOnnxDetector",
    "TorchScriptDetector",
    "load_detector",
    "letterbox",
    "decode_yolox",
    "nms",
    "PERSON_CLASS",
]

PERSON_CLASS = 0  # COCO
YOLOX_STRIDES = (8, 16, 32)
PAD_VALUE = 114


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 [B, H, W, 3] RGB, got {frames.dtype} {tuple(frames.shape)}"
        )
    return frames


def letterbox(
    frame: np.ndarray, size: tuple[int, int], pad_value: int = PAD_VALUE
) -> tuple[np.ndarray, float]:
    """YOLOX letterbox: aspect-kept bilinear resize into the top-left of a padded canvas.

    Args:
        frame: uint8 ``[H, W, C]``.
        size: (S_h, S_w) of the canvas in pixels.
        pad_value: value of the padding.

    Returns:
        uint8 ``[S_h, S_w, C]`` canvas and the ratio ``r`` (canvas px per frame px); a frame
        point ``p`` is at ``p * r`` on the canvas.
    """
    sh, sw = size
    h, w = frame.shape[:2]
    r = min(sh / h, sw / w)
    nh, nw = int(h * r), int(w * r)
    canvas = np.full((sh, sw, frame.shape[2]), pad_value, dtype=np.uint8)
    canvas[:nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR).reshape(
        nh, nw, -1
    )
    return canvas, r


def _grids(size: tuple[int, int], strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets ``[A, 2]`` (gx, gy) and strides ``[A, 1]``, rows ordered as YOLOX's."""
    cells, strides_out = [], []
    for s in strides:
        gh, gw = size[0] // s, size[1] // s
        gy, gx = np.mgrid[0:gh, 0:gw]
        cells.append(np.stack([gx.ravel(), gy.ravel()], 1))
        strides_out.append(np.full((gh * gw, 1), s))
    return (
        np.concatenate(cells).astype(np.float32),
        np.concatenate(strides_out).astype(np.float32),
    )


def decode_yolox(
    raw: np.ndarray, input_size: tuple[int, int], strides: Sequence[int] = YOLOX_STRIDES
) -> np.ndarray:
    """Grid-decode raw YOLOX rows ``[..., A, 5 + C]`` -> same shape with (cx, cy, w, h) in
    input (letterboxed canvas) pixels; the score columns are returned unchanged."""
    cells, s = _grids(input_size, strides)
    if raw.shape[-2] != len(cells):
        raise ValueError(
            f"YOLOX output has {raw.shape[-2]} rows; a {input_size[0]}x{input_size[1]} input "
            f"with strides {tuple(strides)} gives {len(cells)}"
        )
    out = np.array(raw, dtype=np.float32, copy=True)
    out[..., 0:2] = (out[..., 0:2] + cells) * s
    out[..., 2:4] = np.exp(out[..., 2:4]) * s
    return out


def _finish(
    boxes: np.ndarray,
    scores: np.ndarray,
    frame_hw: tuple[int, int],
    nms_threshold: float | None,
    max_detections: int,
) -> np.ndarray:
    """NMS, sort, clip and pack ``[N, 5]`` float32."""
    if len(boxes) and nms_threshold is not None:
        keep = nms(boxes, scores, nms_threshold)
    else:
        keep = np.argsort(-scores, kind="stable")
    keep = keep[:max_detections]
    h, w = frame_hw
    out = np.zeros((len(keep), 5), np.float32)
    if len(keep):
        b = boxes[keep]
        out[:, 0] = np.clip(b[:, 0], 0, w)
        out[:, 1] = np.clip(b[:, 1], 0, h)
        out[:, 2] = np.clip(b[:, 2], 0, w)
        out[:, 3] = np.clip(b[:, 3], 0, h)
        out[:, 4] = scores[keep]
    return out


class YoloxOnnxDetector:
    """YOLOX person detector on ONNX Runtime (see the module docstring for the contract).

    Args:
        path: ONNX file of a YOLOX model exported without in-model decoding.
        score_threshold: keep boxes with objectness x person score >= this.
        nms_threshold: IoU above which the lower-scoring of two boxes is dropped.
        device: ``"auto"`` (CUDA execution provider when installed), ``"cpu"``, ``"cuda"``
            or ``"cuda:N"``.
        batch_size: frames per run when the model's batch dimension is dynamic.
        person_class: class index of "person" (0 in COCO).
        max_detections: at most this many boxes per frame.
        threads: ONNX Runtime intra-op threads (None: its default).
    """

    def __init__(
        self,
        path: str | Path,
        score_threshold: float = 0.3,
        nms_threshold: float = 0.45,
        device: str = "auto",
        *,
        batch_size: int = 16,
        person_class: int = PERSON_CLASS,
        max_detections: int = 100,
        threads: int | None = None,
    ):
        self.path = Path(path)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.person_class = int(person_class)
        self.max_detections = int(max_detections)
        self.session = onnx_session(path, device, threads, what="detector")
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            raise ValueError(
                f"{path}: expected an input [b, 3, S_h, S_w] of fixed size, got {shape}"
            )
        self.input_size = (int(shape[2]), int(shape[3]))
        self.model_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.batch_size = self.model_batch or max(1, int(batch_size))
        out_shape = self.session.get_outputs()[0].shape
        cells, _ = _grids(self.input_size, YOLOX_STRIDES)
        if isinstance(out_shape[1], int) and out_shape[1] != len(cells):
            raise ValueError(
                f"{path}: output {out_shape} does not look like raw YOLOX rows "
                f"({len(cells)} anchors for a {self.input_size} input); export without "
                "--decode_in_inference"
            )

    @property
    def device(self) -> str:
        """``"cuda"`` when the session runs on the CUDA provider, else ``"cpu"``."""
        return "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def preprocess(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        """uint8 ``[B, H, W, 3]`` RGB -> float32 ``[B, 3, S_h, S_w]`` BGR canvas, ratio ``r``."""
        frames = _check_frames(frames)
        batch = np.empty((len(frames), 3, *self.input_size), np.float32)
        r = 1.0
        for i, f in enumerate(frames):
            canvas, r = letterbox(f[..., ::-1], self.input_size)  # RGB -> BGR, as cv2.imread
            batch[i] = canvas.transpose(2, 0, 1)
        return batch, r

    def raw(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed batch -> raw rows ``[B, A, 5 + C]``."""
        outs = []
        step = self.batch_size
        for s in range(0, len(batch), step):
            chunk = batch[s : s + step]
            n = len(chunk)
            if self.model_batch and n < self.model_batch:  # pad a short last chunk
                pad = np.zeros((self.model_batch - n, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outs.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        return np.concatenate(outs) if outs else np.zeros((0, 0, 0), np.float32)

    def __call__(self, frames: np.ndarray) -> list[np.ndarray]:
        """Person boxes per frame: uint8 ``[B, H, W, 3]`` RGB -> B float32 ``[N, 5]``
        (x1, y1, x2, y2, score) frame pixels, by decreasing score."""
        frames = _check_frames(frames)
        if len(frames) == 0:
            return []
        batch, r = self.preprocess(frames)
        raw = self.raw(batch)
        c = 5 + self.person_class
        results = []
        for rows in raw:
            scores = rows[:, 4] * rows[:, c]
            sel = scores >= self.score_threshold
            dec = decode_yolox(rows, self.input_size)[sel]
            cx, cy, bw, bh = dec[:, 0], dec[:, 1], dec[:, 2], dec[:, 3]
            boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) / r
            results.append(
                _finish(
                    boxes,
                    scores[sel],
                    frames.shape[1:3],
                    self.nms_threshold,
                    self.max_detections,
                )
            )
        return results


class TorchScriptDetector:
    """A TorchScript person detector (see the module docstring for the module's contract).

    Args:
        path: ``torch.jit.save`` archive.
        score_threshold: keep boxes with score >= this.
        nms_threshold: IoU for an extra NMS; None (default) trusts the module's own NMS.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        batch_size: frames per forward pass.
        person_class: class kept when the output has a class column.
        max_detections: at most this many boxes per frame.
    """

    def __init__(
        self,
        path: str | Path,
        score_threshold: float = 0.3,
        nms_threshold: float | None = None,
        device: str = "auto",
        *,
        batch_size: int = 16,
        person_class: int = PERSON_CLASS,
        max_detections: int = 100,
    ):
        self.path = Path(path)
        self.device = resolve_device(device)
        try:
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as exc:
            raise ValueError(f"{path}: torch.jit.load cannot load this detector: {exc}") from exc
        self.score_threshold = float(score_threshold)
        self.nms_threshold = nms_threshold
        self.batch_size = max(1, int(batch_size))
        self.person_class = int(person_class)
        self.max_detections = int(max_detections)

    def __call__(self, frames: np.ndarray) -> list[np.ndarray]:
        """Person boxes per frame: uint8 ``[B, H, W, 3]`` RGB -> B float32 ``[N, 5]``."""
        frames = _check_frames(frames)
        results = []
        for s in range(0, len(frames), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[s : s + self.batch_size]))
            x = chunk.to(self.device).permute(0, 3, 1, 2).float()
            with torch.inference_mode():
                out = self.module(x)
            per_image = list(out) if isinstance(out, (list, tuple)) else list(out.unbind(0))
            if len(per_image) != len(chunk):
                raise ValueError(
                    f"{self.path}: the module returned {len(per_image)} results for "
                    f"{len(chunk)} images"
                )
            for det in per_image:
                det = det.detach().float().cpu().numpy().reshape(-1, det.shape[-1])
                if det.shape[1] not in (5, 6):
                    raise ValueError(
                        f"{self.path}: expected [N, 5 or 6] detections per image, got {det.shape}"
                    )
                keep = (det[:, 4] > 0) & (det[:, 4] >= self.score_threshold)
                if det.shape[1] == 6:
                    keep &= np.round(det[:, 5]) == self.person_class
                det = det[keep]
                results.append(
                    _finish(
                        det[:, :4],
                        det[:, 4],
                        frames.shape[1:3],
                        self.nms_threshold,
                        self.max_detections,
                    )
                )
        return results


def load_detector(path: str | Path, **opts) -> YoloxOnnxDetector | TorchScriptDetector:
    """Open a person detector, chosen by the file's content.

    Args:
        path: an ONNX YOLOX model or a TorchScript archive.
        **opts: passed to :class:`YoloxOnnxDetector` or :class:`TorchScriptDetector`
            (``score_threshold``, ``nms_threshold``, ``device``...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is neither (the message names the file and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector model not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if looks_like_onnx(head):
        return YoloxOnnxDetector(path, **opts)
    if is_torchscript_archive(path):
        return TorchScriptDetector(path, **opts)
    raise ValueError(
        f"{path}: not a detector model: expected an ONNX model (a protobuf starting with "
        "the ir_version field, e.g. YOLOX exported by export_onnx.py) or a TorchScript "
        f"archive (a torch.jit.save zip with code/ and constants.pkl); the file starts "
        f"with {head[:8]!r}"
    )
