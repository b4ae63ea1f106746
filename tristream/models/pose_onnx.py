"""Top-down pose models in ONNX: BlazePose landmarks, heatmaps and SimCC, on ONNX Runtime.

One person per crop, three output families, recognised from the model's outputs (or named
by ``pose_format``):

* ``"blazepose"``: MediaPipe's BlazePose GHUM landmark models (lite, full, heavy) as
  converted ONNX. Input ``[N, 256, 256, 3]`` float RGB in [0, 1] (NHWC); output
  ``[N, 5 L]`` (L = 39, or 33 without the auxiliary points) = L x (x, y, z, visibility,
  presence) with x, y in pixels of the input (0 at the left/top *edge*), visibility and
  presence as logits; an optional ``[N, 1]`` output is the probability that a person is in
  the crop. COCO-17 joints are BlazePose landmarks :data:`BLAZEPOSE_COCO`. A joint's score
  is ``sigmoid(visibility) * sigmoid(presence) * person``, so a crop without a person (a
  flow box the person has left) scores low everywhere.
* ``"heatmap"``: SimpleBaseline / HRNet / ViTPose exports (mmpose, mmdeploy): input
  ``[N, 3, H, W]`` float, output ``[N, K, h, w]`` heatmaps (K >= 17: the first 17 are the
  COCO body joints, as in COCO-WholeBody), decoded by
  :func:`tristream.transforms.pose.decode_heatmaps`.
* ``"simcc"``: RTMPose exports as rtmlib and mmdeploy write them: input ``[N, 3, H, W]``,
  outputs ``simcc_x [N, K, W s]`` and ``simcc_y [N, K, H s]`` with the split ratio ``s``
  (2.0 for the released models) measured from the shapes; a joint is at
  ``argmax / s`` along each axis in input pixels, its score the smaller of the two maxima
  (negatives clipped to 0).

Preprocessing: the input size and layout (NCHW / NHWC) come from the model's input shape;
the rest from the family's documented default (:data:`FAMILY_DEFAULTS`), unless the model
says otherwise in its metadata (``custom_metadata_map``: ``mean`` and ``std`` as three
comma-separated values on the 0..255 scale, ``channel_order`` ``RGB``/``BGR``,
``scale_factor`` (box enlargement), ``pose_format``). Heatmap and SimCC defaults are the
mmpose ones (ImageNet mean/std of RGB, box enlarged 1.25x to the input's aspect ratio);
BlazePose takes [0, 1] RGB in a square crop of the box enlarged 1.25x.

Coordinates returned by :meth:`OnnxPoseModel.keypoints` are crop-input pixels with pixel
centres at integers (the convention of :mod:`tristream.transforms.pose`). No Beam here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tristream.models.common import looks_like_onnx, onnx_session
from tristream.shards.coco import NUM_JOINTS

LOG = logging.getLogger(__name__)

__all__ = [
    "BLAZEPOSE_COCO",
    "FAMILIES",
    "FAMILY_DEFAULTS",
    "OnnxPoseModel",
    "PoseFamily",
    "is_onnx_file",
]

#: The output families a pose model's outputs are recognised as (``--pose-format``).
FAMILIES = ("blazepose", "heatmap", "simcc")

#: BlazePose landmark index of each COCO-17 joint, in COCO order.
BLAZEPOSE_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

_IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)  # mmpose's data_preprocessor, RGB
_IMAGENET_STD_255 = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class PoseFamily:
    """Preprocessing of one family: ``(x_0..255 - mean) / std`` per channel in ``channel_order``;
    ``input_size`` (H, W) when the model's input shape leaves it open; ``scale_factor`` the
    box enlargement before cropping to the input's aspect ratio."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str
    input_size: tuple[int, int]
    scale_factor: float = 1.25


#: Documented defaults per family (see the module docstring).
FAMILY_DEFAULTS: dict[str, PoseFamily] = {
    "blazepose": PoseFamily((0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "RGB", (256, 256)),
    "heatmap": PoseFamily(_IMAGENET_MEAN_255, _IMAGENET_STD_255, "RGB", (256, 192)),
    "simcc": PoseFamily(_IMAGENET_MEAN_255, _IMAGENET_STD_255, "RGB", (256, 192)),
}

_EXPECTED = (
    "BlazePose landmarks [N, 195] (39 x (x, y, z, visibility, presence)), heatmaps "
    "[N, K>=17, h, w], or SimCC [N, K>=17, Wx] + [N, K>=17, Wy]"
)


def is_onnx_file(path: str | Path) -> bool:
    """Whether the file's first bytes look like an ONNX model (see ``looks_like_onnx``)."""
    with open(path, "rb") as f:
        return looks_like_onnx(f.read(16))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


class OnnxPoseModel:
    """A top-down ONNX pose model on ONNX Runtime (see the module docstring).

    Args:
        path: the ``.onnx`` file.
        device: ``"auto"`` (the CUDA provider when onnxruntime has it), ``"cpu"``,
            ``"cuda"`` / ``"cuda:N"`` (a warning, then the CPU, where the provider is missing).
        pose_format: ``"auto"`` (recognised from the outputs) or one of :data:`FAMILIES`.
        batch_size: crops per ``session.run`` when the batch dimension is dynamic.
        threads: ONNX Runtime intra-op threads (None: its default).

    Attributes:
        family: the output family; ``input_size`` (H, W); ``layout`` ``"NCHW"``/``"NHWC"``;
        ``mean``/``std`` (0..255 scale) and ``channel_order``; ``scale_factor``;
        ``num_joints`` (17: COCO order); ``heatmap_stride`` (None: measured from shapes).

    Raises:
        ValueError: not an ONNX model, or outputs that fit no family (the message says
            which outputs it found and which it expected).
    """

    heatmap_stride = None
    num_joints = NUM_JOINTS

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        pose_format: str = "auto",
        *,
        batch_size: int = 32,
        threads: int | None = None,
    ):
        self.path = Path(path)
        if pose_format not in ("auto", *FAMILIES):
            raise ValueError(
                f"--pose-format must be auto or one of {FAMILIES}, got {pose_format!r}"
            )
        if not is_onnx_file(self.path):
            raise ValueError(
                f"{self.path}: not an ONNX model: expected an ONNX protobuf (starting with the "
                "ir_version field) holding a top-down pose model with outputs " + _EXPECTED
            )
        self.session = onnx_session(self.path, device, threads, what="pose model")
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            found = [(i.name, i.shape) for i in inputs]
            raise ValueError(
                f"{self.path}: expected one image input [N, 3, H, W] or [N, H, W, 3], got {found}"
            )
        self.input_name = inputs[0].name
        self.outputs = [(o.name, list(o.shape)) for o in self.session.get_outputs()]
        self.family = self._recognise(pose_format)
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        defaults = FAMILY_DEFAULTS[self.family]
        shape = inputs[0].shape
        if _dim(shape[3]) == 3 or (_dim(shape[1]) != 3 and shape[3] == 3):
            self.layout, hw = "NHWC", (shape[1], shape[2])
        else:
            self.layout, hw = "NCHW", (shape[2], shape[3])
        self.input_size = (
            (int(hw[0]), int(hw[1])) if _dim(hw[0]) and _dim(hw[1]) else defaults.input_size
        )
        self.model_batch = _dim(shape[0])
        self.batch_size = self.model_batch or max(1, int(batch_size))
        self.mean = _triple(meta.get("mean"), defaults.mean)
        self.std = _triple(meta.get("std"), defaults.std)
        self.channel_order = meta.get("channel_order", defaults.channel_order).upper()
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"{self.path}: metadata channel_order must be RGB or BGR")
        self.scale_factor = float(meta.get("scale_factor", defaults.scale_factor))
        #: Index of the world-landmark output ([N, 3 L], metres), or None: a BlazePose model
        #: with it gives 3D keypoints (:attr:`has_3d`).
        self.world_output = self._world_output()

    @property
    def has_3d(self) -> bool:
        """Whether :meth:`landmarks` gives 3D keypoints (BlazePose's world landmarks)."""
        return self.world_output is not None

    def _world_output(self) -> int | None:
        if self.family != "blazepose":
            return None
        main = next(s for _, s in self.outputs if len(s) == 2 and s[1] in (165, 195))
        want = 3 * (main[1] // 5)  # 39 or 33 landmarks x (x, y, z)
        return next(
            (i for i, (_, s) in enumerate(self.outputs) if len(s) == 2 and s[1] == want), None
        )

    # ------------------------------------------------------------------ recognition

    def _recognise(self, pose_format: str) -> str:
        """The family named by ``pose_format`` (checked against the outputs), else recognised."""
        shapes = [s for _, s in self.outputs]
        fits = {
            "blazepose": any(len(s) == 2 and s[1] in (165, 195) for s in shapes),
            "simcc": len(shapes) >= 2
            and all(len(s) == 3 for s in shapes[:2])
            and _joints_ok(shapes[0][1]) and _joints_ok(shapes[1][1]),
            "heatmap": len(shapes) >= 1 and len(shapes[0]) == 4 and _joints_ok(shapes[0][1]),
        }  # fmt: skip
        if pose_format != "auto":
            if not fits[pose_format]:
                raise ValueError(
                    f"{self.path}: --pose-format {pose_format} does not fit its outputs "
                    f"{self.outputs}; expected " + _EXPECTED
                )
            return pose_format
        for family in FAMILIES:  # BlazePose first: its files also carry 4-D heatmaps
            if fits[family]:
                return family
        raise ValueError(
            f"{self.path}: the outputs {self.outputs} fit no pose model family; expected "
            + _EXPECTED + " (or name the family with --pose-format)"
        )  # fmt: skip

    @property
    def device(self) -> str:
        """``"cuda"`` when the session runs on the CUDA provider, else ``"cpu"``."""
        return "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    # ------------------------------------------------------------------ running

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` RGB crops -> float32 model input in its layout."""
        x = np.asarray(crops, np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, np.float32)

    def run(self, crops: np.ndarray) -> list[np.ndarray]:
        """Raw outputs for uint8 ``[N, H, W, 3]`` RGB crops, run in chunks of ``batch_size``."""
        x = self.preprocess(crops)
        chunks: list[list[np.ndarray]] = []
        for s in range(0, len(x), self.batch_size):
            chunk = x[s : s + self.batch_size]
            n = len(chunk)
            if self.model_batch and n < self.model_batch:  # pad a short last chunk
                chunk = np.concatenate(
                    [chunk, np.zeros((self.model_batch - n, *chunk.shape[1:]), chunk.dtype)]
                )
            chunks.append([o[:n] for o in self.session.run(None, {self.input_name: chunk})])
        if not chunks:
            return [np.zeros((0, *[d if isinstance(d, int) else 0 for d in s[1:]]), np.float32)
                    for _, s in self.outputs]  # fmt: skip
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def heatmaps(self, crops: np.ndarray):
        """Heatmap family: uint8 crops -> float32 torch ``[N, 17, h, w]`` (CPU)."""
        import torch

        if self.family != "heatmap":
            raise ValueError(f"{self.path} is a {self.family} model, not a heatmap model")
        return torch.from_numpy(
            np.ascontiguousarray(self.run(crops)[0][:, :NUM_JOINTS], np.float32)
        )

    def keypoints(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BlazePose and SimCC families: uint8 ``[N, H, W, 3]`` RGB crops ->
        ``(coords float64 [N, 17, 2]`` crop-input pixels (centres at integers),
        ``scores float32 [N, 17]`` in [0, 1] for BlazePose, >= 0 for SimCC)."""
        coords, scores, _ = self.landmarks(crops)
        return coords, scores

    def landmarks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """As :meth:`keypoints`, plus the 3D keypoints: float32 ``[N, 17, 3]`` (x, y, z) in
        metres from BlazePose's world landmarks (origin between the hips; x to the crop's
        right, y down, z away from the camera: the image's axes, the crop being upright),
        or None for a model without them."""
        outs = self.run(crops)
        n = len(crops)
        world = None
        if self.world_output is not None:
            w = outs[self.world_output].reshape(n, -1, 3)[:, list(BLAZEPOSE_COCO)]
            world = w.astype(np.float32)
        if self.family == "blazepose":
            idx = next(
                i for i, (_, s) in enumerate(self.outputs) if len(s) == 2 and s[1] in (165, 195)
            )
            lm = outs[idx].reshape(n, -1, 5)[:, list(BLAZEPOSE_COCO)].astype(np.float64)
            person = np.ones((n, 1))
            for i, (_, s) in enumerate(self.outputs):
                if i != idx and len(s) == 2 and s[1] == 1:
                    person = outs[i].reshape(n, 1).astype(np.float64)
                    break
            coords = lm[..., :2] - 0.5  # edge-based pixels -> pixel centres at integers
            scores = _sigmoid(lm[..., 3]) * _sigmoid(lm[..., 4]) * np.clip(person, 0.0, 1.0)
            return coords, scores.astype(np.float32), world
        if self.family == "simcc":
            sx, sy = outs[0][:, :NUM_JOINTS], outs[1][:, :NUM_JOINTS]
            in_h, in_w = self.input_size
            ratio_x, ratio_y = sx.shape[-1] / in_w, sy.shape[-1] / in_h
            x = sx.argmax(-1) / ratio_x
            y = sy.argmax(-1) / ratio_y
            scores = np.minimum(sx.max(-1), sy.max(-1)).clip(0.0, None)
            return np.stack([x, y], -1).astype(np.float64), scores.astype(np.float32), None
        raise ValueError(f"{self.path} is a heatmap model: decode its heatmaps()")


def _joints_ok(k) -> bool:
    """A joint dimension that holds the COCO body (17, or more as in COCO-WholeBody)."""
    return isinstance(k, int) and k >= NUM_JOINTS


def _triple(text: str | None, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if not text:
        return default
    values = tuple(float(v) for v in text.replace(" ", "").split(","))
    if len(values) != 3:
        raise ValueError(f"model metadata: expected three comma-separated values, got {text!r}")
    return values  # type: ignore[return-value]
