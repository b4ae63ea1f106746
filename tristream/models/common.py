"""Pieces every model uses: the device choice, CPU threads and box geometry (torch lazily)."""

from __future__ import annotations

import logging
import os

import numpy as np

LOG = logging.getLogger(__name__)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def share_cpu_threads(concurrent: int) -> int:
    """Cap torch's CPU threads so that ``concurrent`` calling threads fit the CPUs.

    torch runs each CPU op on an OpenMP team that belongs to the calling thread. When
    the teams of several threads (Beam's workers) hold more threads than there are CPUs,
    libgomp stops spinning at its barriers, and every op pays a sleep and a wake-up: the
    pipeline's torch TV-L1 stage, thousands of small ops per pair, ran 2.3x slower with
    2 worker threads of 2 torch threads each on 2 CPUs (``benchmarks/RESULTS.md``).
    Sets ``torch.set_num_threads(max(1, usable_cpus() // concurrent))`` if that is lower
    than the current count (it never raises it). torch keeps the count per thread (a new
    thread starts with the last one set), so call this in the thread that runs the ops.
    Returns the thread count now in use.
    """
    import torch

    want = max(1, usable_cpus() // max(1, concurrent))
    if want < torch.get_num_threads():
        torch.set_num_threads(want)
    return torch.get_num_threads()


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def resolve_device(device: object = "auto") -> str:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a device that exists, as a string.

    ``auto`` picks ``cuda`` when torch sees a GPU. Asking for CUDA where there
    is none logs a warning and returns ``cpu``: one policy for flow, detector
    and pose model alike, so ``--device cuda`` on a CPU machine still runs.
    """
    name = str(device)
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name.startswith("cuda") and not cuda_available():
        LOG.warning("CUDA was asked for (%s) but torch sees no CUDA device; using the CPU", name)
        return "cpu"
    return name


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` [N, >=4] and ``b`` [M, >=4] (x1, y1, x2, y2).

    Extra columns (a score) are ignored. Returns float64 ``[N, M]``; 0 for
    empty boxes.
    """
    a = np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1] if np.ndim(a) > 1 else 4)[:, :4]
    b = np.asarray(b, np.float64).reshape(-1, np.shape(b)[-1] if np.ndim(b) > 1 else 4)[:, :4]
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    ``boxes``: ``[N, >=4]`` (x1, y1, x2, y2); ``scores``: ``[N]``. A box whose
    IoU with a kept, higher-scoring box exceeds ``iou_threshold`` is dropped.
    Returns int64 indices of the kept boxes by decreasing score (ties: lower
    index first).
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    ious = box_iou(boxes, boxes)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        order = order[1:][ious[i, order[1:]] <= iou_threshold]
    return np.asarray(keep, np.int64)


def looks_like_onnx(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first bytes) can be an ONNX model.

    ONNX ``ModelProto`` serialisations start with field 1 (``ir_version``, a small varint).
    """
    return len(head) >= 2 and head[0] == 0x08 and 0 < head[1] < 0x80


def onnx_session(path: object, device: object = "auto", threads: int | None = None,
                 what: str = "model"):  # fmt: skip
    """An onnxruntime ``InferenceSession`` for ``path`` on the device policy of every model.

    ``device``: ``"auto"`` takes the CUDA execution provider when onnxruntime has it;
    ``"cuda"`` / ``"cuda:N"`` asks for it and, where onnxruntime lacks it (the CPU wheel),
    logs a warning naming ``what`` and runs on the CPU; ``"cpu"`` never uses CUDA.
    ``threads``: intra-op threads (None: onnxruntime's default).

    Raises ValueError (naming the file) when onnxruntime cannot load the model.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    dev = str(device)
    use_cuda = dev.startswith("cuda") or dev == "auto"
    if dev.startswith("cuda") and "CUDAExecutionProvider" not in available:
        LOG.warning(
            "device %r asked for but onnxruntime has no CUDAExecutionProvider (available: "
            "%s; install onnxruntime-gpu); the %s runs on the CPU",
            device, available, what,
        )  # fmt: skip
    providers: list = ["CPUExecutionProvider"]
    if use_cuda and "CUDAExecutionProvider" in available:
        device_id = int(dev.split(":")[1]) if ":" in dev else 0
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ValueError(f"{path}: onnxruntime cannot load this model: {exc}") from exc
