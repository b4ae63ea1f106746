"""Where person models come from: the packaged defaults, and opening any supported pose file.

The two defaults ship inside the package (``tristream/models/data``, Apache-2.0, see its
``NOTICE.md``): the YOLOX-nano person detector and the BlazePose GHUM lite pose model, so
``tristream run --persons`` needs no download. No Beam here.
"""

from __future__ import annotations

from pathlib import Path

from tristream.models.pose_onnx import FAMILIES, OnnxPoseModel, is_onnx_file

__all__ = [
    "DATA_DIR",
    "DEFAULT_DETECTOR",
    "DEFAULT_POSE_MODEL",
    "POSE_FORMATS",
    "POSE_PRECISIONS",
    "load_pose",
]

#: The folder of the packaged models and their licence notice.
DATA_DIR = Path(__file__).resolve().with_name("data")
#: YOLOX-nano, 416x416, COCO (person = class 0): the default ``--detector``.
DEFAULT_DETECTOR = DATA_DIR / "yolox_nano_416x416.onnx"
#: BlazePose GHUM lite landmarks: the default ``--pose-model``.
DEFAULT_POSE_MODEL = DATA_DIR / "blazepose_lite.onnx"
#: ``--pose-format`` values: ``auto`` (recognised from the model) or an output family.
POSE_FORMATS = ("auto", *FAMILIES)
#: ``--pose-precision`` values: autocast precision of a torch pose model on CUDA.
POSE_PRECISIONS = ("fp32", "fp16", "bf16")


def load_pose(
    path: str | Path,
    device: str = "auto",
    pose_format: str = "auto",
    trust_checkpoint: bool = False,
):
    """Open a top-down pose model of any supported kind, chosen by the file's content.

    Args:
        path: an ONNX model (BlazePose, heatmap or SimCC outputs; see
            :mod:`tristream.models.pose_onnx`), a PoseResNet checkpoint (official or
            mmpose layout) or a TorchScript heatmap model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        pose_format: one of :data:`POSE_FORMATS`; torch files are heatmap models.
        trust_checkpoint: unpickle a torch checkpoint fully when safe loading refuses
            it (``--trust-checkpoint``; only for files you trust).

    Returns:
        an :class:`~tristream.models.pose_onnx.OnnxPoseModel` or a
        :class:`~tristream.models.pose_resnet.PoseModel`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file of no supported kind, a ``.onnx`` file that is not ONNX, or
            outputs that fit no family (the message says what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pose model not found: {path}")
    if pose_format not in POSE_FORMATS:
        raise ValueError(f"--pose-format must be one of {POSE_FORMATS}, got {pose_format!r}")
    if path.suffix.lower() == ".onnx" or is_onnx_file(path):
        return OnnxPoseModel(path, device=device, pose_format=pose_format)
    if pose_format not in ("auto", "heatmap"):
        raise ValueError(
            f"{path}: --pose-format {pose_format} needs an ONNX model; torch pose files "
            "(PoseResNet checkpoints, TorchScript) are heatmap models"
        )
    from tristream.models.pose_resnet import load_pose_model

    return load_pose_model(path, device=device, trust_checkpoint=trust_checkpoint)
