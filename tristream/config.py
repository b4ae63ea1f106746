"""Run configuration: one dataclass built by the CLI and read by every stage."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field

from tristream import __version__
from tristream.shards import storage
from tristream.shards.codec import FLOW_ENCODINGS, JPEG_QUALITY
from tristream.shards.schema import SCHEMA_VERSION
from tristream.transforms.flow import BACKENDS, tvl1_params, unknown_backend_error
from tristream.transforms.render import RenderStyle

FORMATS = ("parquet", "tfrecord", "both")
_CHUNK = 1 << 20


def flow_choices() -> tuple[str, ...]:
    """``--flow`` values: every registered flow backend (:data:`BACKENDS`), then ``none``."""
    return (*sorted(BACKENDS), "none")


def content_hash(path: str) -> str | None:
    """SHA-256 (hex) of a regular file's bytes, or of an ``s3://`` / ``gs://`` object's
    (streamed); None for anything else (another URL, a pipe, a device, a missing file)."""
    if storage.is_store_uri(path):
        try:
            opened = storage.open_input(path, seekable=False)
        except FileNotFoundError:
            return None
    else:
        try:
            if "://" in path or not stat.S_ISREG(os.stat(path).st_mode):
                return None
        except OSError:
            return None
        opened = open(path, "rb")
    digest = hashlib.sha256()
    with opened as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RunConfig:
    """Everything a ``tristream run`` needs besides the Beam options.

    Units: ``fps`` frames per second (0 keeps the source rate), ``short_side``
    pixels (0 keeps the decoded size), ``max_frames`` frames per segment,
    ``timeout`` seconds per video decode (0: none).
    """

    output: str
    input: str | None = None
    manifest: str | None = None
    path_template: str | None = None
    format: str = "parquet"
    fps: float = 25.0
    short_side: int = 256
    max_frames: int = 300
    flow: str = "tvl1"
    flow_encoding: str = "jpeg"
    flow_params: dict = field(default_factory=dict)
    device: str = "auto"
    flow_batch_size: int = 0
    flow_kernel: str = "auto"
    jpeg_quality: int = JPEG_QUALITY
    workers: int = 0
    num_shards: int = 0
    split: str = "train"
    timeout: float = 0.0
    fail_on_error: bool = False
    detector: str | None = None
    pose_model: str | None = None
    pose_decoder: str = "dark"
    pose_format: str = "auto"
    pose_precision: str = "fp32"
    flip_test: bool = False
    skeletons: str | None = None
    skeletons3d: str | None = None
    max_persons: int = 5
    keypoints3d: bool = False
    det_threshold: float = 0.3
    det_nms: float = 0.45
    render: str = "bars,fine,ratio,rgb"

    def __post_init__(self) -> None:
        if self.input is None and self.manifest is None:
            raise ValueError("give --input DIR_OR_GLOB or --manifest FILE")
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {self.format!r}")
        if self.flow not in flow_choices():
            raise ValueError(f"--flow: {unknown_backend_error(self.flow)}")
        if self.flow_encoding not in FLOW_ENCODINGS:
            raise ValueError(f"--flow-encoding must be one of {FLOW_ENCODINGS}")
        if self.max_frames < 2:
            raise ValueError("--max-frames must be at least 2")
        if self.fps < 0 or self.short_side < 0:
            raise ValueError("--fps and --short-side must be >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("--jpeg-quality must be in 1..100")
        try:  # unknown names and wrong types fail here, before any work
            tvl1_params(**self.flow_params)
        except ValueError as exc:
            raise ValueError(f"--flow-param: {exc}") from None
        if self.flow_batch_size < 0:
            raise ValueError("--flow-batch-size must be >= 0 (0: automatic)")
        if self.flow_kernel != "auto":
            from tristream.models.tvl1 import KERNEL_CHOICES

            if self.flow_kernel not in KERNEL_CHOICES:
                raise ValueError(f"--flow-kernel must be one of {KERNEL_CHOICES}")
        RenderStyle.parse(self.render)  # likewise a bad --render
        if self.pose_model and not self.detector:
            raise ValueError("--pose-model needs --detector (top-down pose runs on person boxes)")
        if self.skeletons and self.detector:
            raise ValueError("give --skeletons (imported keypoints) or --detector, not both")
        if self.pose_model:
            from tristream.transforms.pose import DECODERS

            if self.pose_decoder not in DECODERS:
                raise ValueError(f"--pose-decoder must be one of {DECODERS}")
            from tristream.models.zoo import POSE_FORMATS, POSE_PRECISIONS

            if self.pose_format not in POSE_FORMATS:
                raise ValueError(f"--pose-format must be one of {POSE_FORMATS}")
            if self.pose_precision not in POSE_PRECISIONS:
                raise ValueError(f"--pose-precision must be one of {POSE_PRECISIONS}")
        if self.max_persons < 1:
            raise ValueError("--max-persons must be at least 1")
        if self.keypoints3d and not self.pose_model:
            raise ValueError(
                "--keypoints3d needs a pose model with 3D output (--persons, or --pose-model "
                "with BlazePose); with imported skeletons give the 3D file as --skeletons3d"
            )
        if self.skeletons3d and not self.skeletons:
            raise ValueError(
                "--skeletons3d needs --skeletons: the 2D file of the same videos (the 3D file "
                "holds no pixel positions or scores)"
            )
        for name in ("detector", "pose_model", "skeletons", "skeletons3d"):
            path = getattr(self, name)
            # --skeletons may be an object-store URI (tristream.shards.storage).
            remote = name.startswith("skeletons") and path and storage.is_store_uri(path)
            if path and not (storage.isfile(path) if remote else os.path.isfile(path)):
                raise FileNotFoundError(f"--{name.replace('_', '-')} {path}: no such file")

    @property
    def persons(self) -> bool:
        """Whether rows carry person tracks (keypoints, boxes, track ids)."""
        return bool(self.detector or self.skeletons)

    @property
    def render_style(self) -> RenderStyle | None:
        """The pose-frame style, or None when no pose frames are rendered."""
        return RenderStyle.parse(self.render) if self.persons else None

    @property
    def formats(self) -> tuple[str, ...]:
        """The shard file formats to write."""
        return ("parquet", "tfrecord") if self.format == "both" else (self.format,)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the shards hold."""
        mods = ["rgb"] if self.flow == "none" else ["rgb", "flow"]
        if self.render_style is not None:
            mods.append("pose")
        if self.persons:
            mods.append("keypoints")
        if self.keypoints3d or self.skeletons3d:
            mods.append("keypoints3d")
        return tuple(mods)

    def affecting_output(self) -> dict:
        """The settings that change shard contents (what the config hash covers)."""
        return {
            "fps": self.fps,
            "short_side": self.short_side,
            "max_frames": self.max_frames,
            "flow": self.flow,
            "flow_encoding": self.flow_encoding if self.flow != "none" else None,
            "flow_params": tvl1_params(**self.flow_params) if self.flow != "none" else None,
            "jpeg_quality": self.jpeg_quality,
            "schema_version": SCHEMA_VERSION,
            "persons": self._persons_config(),
        }

    def _persons_config(self) -> dict | None:
        if not self.persons:
            return None
        extra = {"keypoints3d": True} if self.keypoints3d else {}  # absent: earlier hashes hold
        if self.skeletons3d:
            extra["skeletons3d"] = _file_id(self.skeletons3d)
        return extra | {
            "detector": _file_id(self.detector),
            "pose_model": _file_id(self.pose_model),
            "pose_decoder": self.pose_decoder if self.pose_model else None,
            "flip_test": self.flip_test if self.pose_model else None,
            "pose_format": self.pose_format if self.pose_model else None,
            "pose_precision": self.pose_precision if self.pose_model else None,
            "skeletons": _file_id(self.skeletons),
            "max_persons": self.max_persons,
            "det_threshold": self.det_threshold if self.detector else None,
            "det_nms": self.det_nms if self.detector else None,
            "render": str(self.render_style) if self.render_style else None,
        }

    @functools.cached_property
    def config_hash(self) -> str:
        """A short stable hash of :meth:`affecting_output` (computed once: it reads model files)."""
        text = json.dumps(self.affecting_output(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def meta_json(self) -> str:
        """The ``meta`` column: schema version, encodings, config hash, tristream version."""
        meta = {
            "schema_version": SCHEMA_VERSION,
            "flow_encoding": self.flow_encoding if self.flow != "none" else None,
            "flow_backend": None if self.flow == "none" else self.flow,
            "render": str(self.render_style) if self.render_style else None,
            "config_hash": self.config_hash,
            "tristream_version": __version__,
        }
        return json.dumps(meta, sort_keys=True)

    def to_dict(self) -> dict:
        """All fields, for ``manifest.json``."""
        return dataclasses.asdict(self)


def _file_id(path: str | None) -> str | None:
    """A model or annotation file by content (SHA-256), so the cache key follows the file."""
    return content_hash(path) if path else None
