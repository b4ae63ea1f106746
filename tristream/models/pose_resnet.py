"""PoseResNet (Simple Baselines, Xiao et al. 2018) and loading of pose-model weights.

The network is a plain ResNet (no torchvision: BasicBlock for depths 18/34, Bottleneck for
50/101/152, stride on the 3x3 convolution, "pytorch" style) without its pooling and
classifier, followed by three 4x4 stride-2 ``ConvTranspose2d`` layers of 256 channels
(padding 1, output padding 0, no bias), each with BatchNorm and ReLU, and a final 1x1
convolution to one heatmap per joint. An input of ``[N, 3, H, W]`` gives heatmaps
``[N, num_joints, H / 4, W / 4]``.

Module names follow the official checkpoints of microsoft/human-pose-estimation.pytorch
(``conv1``, ``bn1``, ``layer1`` .. ``layer4``, ``deconv_layers.{0,1,3,4,6,7}``,
``final_layer``), so their state dicts load as they are.

:func:`load_pose_model` reads

* official checkpoints (a bare state dict, or one inside ``state_dict``; keys optionally
  prefixed ``module.`` by DataParallel);
* mmpose top-down heatmap checkpoints with a ResNet backbone and a Simple Baselines head
  (``backbone.*``, ``head.deconv_layers.*`` and ``head.final_layer.*`` in mmpose 1.x;
  ``keypoint_head.*`` in 0.x; always inside ``state_dict``). mmpose builds its deconv
  head as a ``Sequential`` of (deconv, BN, ReLU) triples just like the official code, so
  the indices map one to one;
* TorchScript heatmap models (``torch.jit.save`` archives) that take the normalised crop
  ``[N, 3, H, W]`` float and return heatmaps ``[N, K, h, w]``.

and returns a :class:`PoseModel`: the module on its device plus the preprocessing that
the weights were trained with (input size, channel order, normalisation, heatmap stride).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tristream.models import common

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PoseResNet",
    "PoseModel",
    "RESNET_SPEC",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_pose_model",
    "infer_depth",
    "resolve_device",
    "is_torchscript_archive",
]

BN_MOMENTUM = 0.1
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of 0..1 RGB
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """:func:`tristream.models.common.resolve_device` as a ``torch.device``."""
    return torch.device(common.resolve_device(device))


# ------------------------------------------------------------------------------------------
# architecture


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convolutions with a residual connection (ResNet-50+)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: depth -> (block class, blocks per stage)
RESNET_SPEC: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class PoseResNet(nn.Module):
    """Simple Baselines pose network: ResNet backbone + 3 deconvolutions + 1x1 conv.

    Args:
        depth: ResNet depth, one of 18, 34, 50, 101, 152.
        num_joints: heatmap channels (17 for COCO).
        deconv_channels: channels of each of the ``num_deconv`` deconvolution layers.
        num_deconv: number of 4x4 stride-2 deconvolutions (3 -> heatmap stride 4).
        deconv_kernel: 4 (padding 1, output padding 0), 3 (1, 1) or 2 (0, 0).

    Input ``[N, 3, H, W]`` float (normalised RGB); output ``[N, num_joints, H/4, W/4]``
    float heatmaps (for H, W multiples of 32).
    """

    def __init__(
        self,
        depth: int = 50,
        num_joints: int = 17,
        deconv_channels: int = 256,
        num_deconv: int = 3,
        deconv_kernel: int = 4,
    ):
        super().__init__()
        if depth not in RESNET_SPEC:
            raise ValueError(f"PoseResNet depth must be one of {sorted(RESNET_SPEC)}, got {depth}")
        block, counts = RESNET_SPEC[depth]
        self.depth = depth
        self.num_joints = num_joints
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, counts[0])
        self.layer2 = self._make_layer(block, 128, counts[1], stride=2)
        self.layer3 = self._make_layer(block, 256, counts[2], stride=2)
        self.layer4 = self._make_layer(block, 512, counts[3], stride=2)
        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[deconv_kernel]
        layers: list[nn.Module] = []
        for _ in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(
                    self.inplanes,
                    deconv_channels,
                    kernel_size=deconv_kernel,
                    stride=2,
                    padding=padding,
                    output_padding=output_padding,
                    bias=False,
                ),
                nn.BatchNorm2d(deconv_channels, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            self.inplanes = deconv_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(deconv_channels, num_joints, kernel_size=1)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


# ------------------------------------------------------------------------------------------
# wrapper with the preprocessing


@dataclass
class PoseModel:
    """A heatmap pose model on its device, with the preprocessing its weights expect.

    Attributes:
        module: ``[N, 3, H, W]`` float normalised crops -> ``[N, K, h, w]`` heatmaps.
        source: ``"official"``, ``"mmpose"``, ``"torchscript"`` or ``"module"``.
        input_size: (H, W) of the crops in pixels; 256x192 for the COCO checkpoints.
        mean, std: per-channel normalisation of 0..1 values, in ``channel_order``
            (ImageNet statistics of RGB for the official and mmpose weights).
        channel_order: ``"RGB"`` or ``"BGR"``; the order the module's input channels are in.
        heatmap_stride: input pixels per heatmap pixel (4 for PoseResNet).
        num_joints: K (17 for COCO); None when unknown until the first call.
        depth: ResNet depth when known.
        device: where ``module`` lives.
    """

    module: nn.Module
    source: str
    input_size: tuple[int, int] = (256, 192)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    heatmap_stride: int = 4
    num_joints: int | None = 17
    depth: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_module(
        cls, module: nn.Module, device: str | torch.device = "auto", **kwargs
    ) -> PoseModel:
        """Wrap an in-memory module (e.g. a freshly built :class:`PoseResNet`), in eval mode."""
        dev = resolve_device(device)
        module = module.to(dev).eval()
        kwargs.setdefault("num_joints", getattr(module, "num_joints", 17))
        kwargs.setdefault("depth", getattr(module, "depth", None))
        return cls(module=module, source="module", device=dev, **kwargs)

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` RGB crops (any device) -> float32 ``[N, 3, H, W]`` input."""
        x = crops.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if self.channel_order.upper() == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, device=self.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device, dtype=x.dtype).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input ``[N, 3, H, W]`` -> heatmaps ``[N, K, H/stride, W/stride]``."""
        return self.module(x)


# ------------------------------------------------------------------------------------------
# loading

_OFFICIAL_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def is_torchscript_archive(path: Path) -> bool:
    """True for a ``torch.jit.save`` zip (it holds ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def infer_depth(state_dict: Mapping[str, torch.Tensor]) -> int:
    """ResNet depth from the block counts and block type found in official-style keys."""
    counts = []
    for stage in range(1, 5):
        idx = {
            int(m.group(1))
            for k in state_dict
            if (m := re.match(rf"layer{stage}\.(\d+)\.", k)) is not None
        }
        counts.append(max(idx) + 1 if idx else 0)
    bottleneck = any(re.match(r"layer1\.0\.conv3\.", k) for k in state_dict)
    for depth, (block, spec) in RESNET_SPEC.items():
        if tuple(counts) == spec and (block is Bottleneck) == bottleneck:
            return depth
    raise ValueError(
        f"cannot infer the ResNet depth: blocks per stage {counts}, "
        f"{'bottleneck' if bottleneck else 'basic'} blocks match none of "
        f"{ {d: s for d, (_, s) in RESNET_SPEC.items()} }"
    )


def _strip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {(k[n:] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _to_official(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a checkpoint's keys to ours; returns (state dict, source name)."""
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
    keys = list(sd)
    if any(k.startswith("backbone.") for k in keys):
        head = "head." if any(k.startswith("head.") for k in keys) else "keypoint_head."
        out = {}
        for k, v in sd.items():
            if k.startswith("backbone."):
                out[k[len("backbone.") :]] = v
            elif k.startswith(head):
                out[k[len(head) :]] = v
            else:  # e.g. a data preprocessor's buffers: reported as unexpected below
                out[k] = v
        return out, "mmpose"
    return sd, "official"


def _unwrap_checkpoint(obj) -> tuple[Mapping[str, torch.Tensor], dict]:
    """(state dict, checkpoint extras) from what ``torch.load`` returned."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return obj["state_dict"], dict(obj)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise ValueError(
        "not a pose checkpoint: expected a state dict (name -> tensor), a dict with "
        f"'state_dict', or a TorchScript archive; got {type(obj).__name__}"
        + (f" with keys {sorted(obj)[:8]}" if isinstance(obj, Mapping) else "")
    )


def _input_size_from_meta(extras: dict) -> tuple[int, int] | None:
    """mmpose 1.x stores its config text in ``meta['cfg']``: read the codec's input size."""
    meta = extras.get("meta")
    cfg = meta.get("cfg") if isinstance(meta, Mapping) else None
    if not isinstance(cfg, str):
        return None
    m = re.search(r"input_size\s*=\s*[\(\[]\s*(\d+)\s*,\s*(\d+)\s*[\)\]]", cfg)
    return (int(m.group(2)), int(m.group(1))) if m else None  # mmpose writes (w, h)


def _not_a_checkpoint(path: Path, exc: BaseException) -> ValueError:
    return ValueError(
        f"{path}: not a torch checkpoint ({exc.__class__.__name__}: {exc}); expected a "
        "PoseResNet state dict saved with torch.save, or a TorchScript archive"
    )


def _load_file(path: Path, trust_checkpoint: bool):
    if not path.is_file():
        raise FileNotFoundError(f"pose model not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise _not_a_checkpoint(path, exc) from exc
        if not trust_checkpoint:
            raise ValueError(
                f"{path}: torch.load(weights_only=True) refused objects in this checkpoint "
                "(e.g. metadata). If you trust the file, give --trust-checkpoint (Python: "
                "trust_checkpoint=True) to unpickle it fully."
            ) from exc
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises KeyError, RuntimeError, EOFError... on garbage
        raise _not_a_checkpoint(path, exc) from exc


def load_pose_model(
    path: str | Path,
    device: str | torch.device = "auto",
    depth: int | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    trust_checkpoint: bool = False,
) -> PoseModel:
    """Load a heatmap pose model: official / mmpose PoseResNet checkpoint or TorchScript.

    Args:
        path: checkpoint file (``.pth``, ``.pth.tar``: legacy or zip ``torch.save``) or a
            TorchScript archive.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        depth: ResNet depth; inferred from the keys when None (ignored for TorchScript).
        input_size: (H, W) crop size the weights were trained at; default 256x192, or what
            an mmpose checkpoint's embedded config says.
        trust_checkpoint: allow full unpickling when ``weights_only`` loading fails (mmpose
            checkpoints carry metadata objects). Only for files you trust.

    Returns:
        :class:`PoseModel` in eval mode on ``device``.

    Raises:
        ValueError: the file is not a pose checkpoint, or its keys do not fit PoseResNet
            (the message lists the missing and unexpected keys).
    """
    path = Path(path)
    dev = resolve_device(device)
    if is_torchscript_archive(path):
        module = torch.jit.load(str(path), map_location=dev).eval()
        return PoseModel(
            module=module,
            source="torchscript",
            input_size=tuple(input_size or (256, 192)),
            num_joints=None,
            device=dev,
        )
    obj = _load_file(path, trust_checkpoint)
    try:
        state_dict, extras = _unwrap_checkpoint(obj)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    sd, source = _to_official(state_dict)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if source == "mmpose":
        # mmpose 1.x keeps its normalisation (0..255 scale) as data_preprocessor buffers
        pre_mean = sd.pop("data_preprocessor.mean", None)
        pre_std = sd.pop("data_preprocessor.std", None)
        if pre_mean is not None and pre_std is not None:
            mean = tuple(float(v) / 255.0 for v in pre_mean.flatten())
            std = tuple(float(v) / 255.0 for v in pre_std.flatten())
    if source == "mmpose" and input_size is None:
        input_size = _input_size_from_meta(extras)
    if not any(k.startswith(_OFFICIAL_PREFIXES) for k in sd):
        _raise_mismatch(path, sd, PoseResNet(18).state_dict().keys(), "a ResNet backbone")
    if depth is None:
        try:
            depth = infer_depth(sd)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    final_w = sd.get("final_layer.weight")
    deconv_w = sd.get("deconv_layers.0.weight")
    num_joints = int(final_w.shape[0]) if final_w is not None else 17
    channels = int(deconv_w.shape[1]) if deconv_w is not None else 256
    kernel = int(deconv_w.shape[-1]) if deconv_w is not None else 4
    num_deconv = len({k.split(".")[1] for k in sd if k.startswith("deconv_layers.")}) // 2 or 3
    try:
        with torch.device("meta"):  # no random init: every tensor comes from the file
            model = PoseResNet(depth, num_joints, channels, num_deconv, kernel)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: unsupported PoseResNet configuration ({exc})") from exc
    expected = model.state_dict().keys()
    if _names(sd) != _names(expected):
        _raise_mismatch(path, sd, expected, f"PoseResNet-{depth} ({source} layout)")
    for k in set(expected) - set(sd):  # num_batches_tracked, absent in old checkpoints
        sd[k] = torch.zeros((), dtype=torch.long)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:  # shapes
        raise ValueError(f"{path}: weights do not fit PoseResNet-{depth}: {exc}") from exc
    return PoseModel(
        module=model.to(dev).eval(),
        source=source,
        input_size=tuple(input_size or (256, 192)),
        mean=mean,
        std=std,
        num_joints=num_joints,
        depth=depth,
        device=dev,
    )


def _names(keys) -> set[str]:
    """Key names that must match; BN's ``num_batches_tracked`` is optional (PyTorch 0.4.0
    checkpoints, such as the official Simple Baselines ones, lack it)."""
    return {k for k in keys if not k.endswith("num_batches_tracked")}


def _raise_mismatch(path: Path, sd: Mapping, expected, what: str) -> None:
    missing = sorted(_names(expected) - _names(sd))
    unexpected = sorted(_names(sd) - _names(expected))

    def show(keys: list[str]) -> str:
        return ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")

    raise ValueError(
        f"{path}: checkpoint does not fit {what}; "
        f"missing keys: [{show(missing)}]; unexpected keys: [{show(unexpected)}]. "
        "Expected an official Simple Baselines checkpoint (conv1.*, layer1-4.*, "
        "deconv_layers.*, final_layer.*, optionally prefixed 'module.'), an mmpose "
        "top-down ResNet heatmap checkpoint (backbone.*, head.*), or a TorchScript archive."
    )
