"""The run configuration: one typed, frozen dataclass per concern, and the whole run.

A :class:`RunConfig` holds six groups: :class:`SourceConfig` (which videos),
:class:`DecodeConfig`, :class:`FlowConfig`, :class:`PersonsConfig`,
:class:`RenderConfig` and :class:`OutputConfig`, plus :class:`RunOptions`
(workers, device, failure policy, the object-store configuration). Every field
that a user sets is an *option*: its metadata (:func:`option`) gives its one
spelling (``--short-side`` on the command line, ``short_side`` in
:meth:`RunConfig.from_options` and in ``manifest.json``), its help, its choices
and its bounds, and its default is the field's default. The ``tristream run``
command line is generated from these fields (:mod:`tristream.cli`), so a new
option is one field here (docs/configuration.md shows one being added).

Validation is pure: constructing a group checks its values (types, choices,
bounds, combinations) and raises ``ValueError`` naming the flag; nothing here
reads a file, imports torch or talks to a store. What needs I/O (model files
that exist and load, the output being writable) is checked by the run before
any work (:func:`tristream.pipeline.run.run`), and the config hash, which
reads model files, is the cache's (:func:`tristream.pipeline.cache.config_hash`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tristream.shards.storage import StoreConfig

#: Shard file formats (``--format``).
FORMATS = ("parquet", "tfrecord", "both")
#: ``--device`` values: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
#: ``--pose-model`` value that keeps boxes and tracks only.
NO_POSE = "none"


def flow_choices() -> tuple[str, ...]:
    """``--flow`` values: every registered flow backend, then ``none``."""
    from tristream.transforms.flow import BACKENDS

    return (*sorted(BACKENDS), "none")


def _flow_encodings() -> tuple[str, ...]:
    from tristream.shards.codec import FLOW_ENCODINGS

    return FLOW_ENCODINGS


def _flow_kernels() -> tuple[str, ...]:
    from tristream.models.tvl1.names import KERNEL_CHOICES

    return KERNEL_CHOICES


def _pose_formats() -> tuple[str, ...]:
    from tristream.models.zoo import POSE_FORMATS

    return POSE_FORMATS


def _pose_precisions() -> tuple[str, ...]:
    from tristream.models.zoo import POSE_PRECISIONS

    return POSE_PRECISIONS


def _pose_decoders() -> tuple[str, ...]:
    from tristream.transforms.pose_names import DECODERS

    return DECODERS


def _jpeg_quality() -> int:
    from tristream.shards.codec import JPEG_QUALITY

    return JPEG_QUALITY


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """What the command line and the checks know of one config field.

    ``name``: the option's spelling with underscores (``short_side``; the flag is
    ``--short-side``); ``help``: one line (``{choices}`` is filled in);
    ``choices``: a callable giving the allowed values (registries are read
    lazily: some import torch); ``minimum`` / ``maximum``: inclusive bounds of a
    number; ``group``: the help section; ``parse``: turns one command-line
    string into the value (``repeat``: the flag may be given many times and the
    values collect into a tuple); ``metavar``: the placeholder in the help.
    """

    name: str
    help: str
    choices: Callable[[], tuple[str, ...]] | None = None
    minimum: float | None = None
    maximum: float | None = None
    group: str = "processing"
    parse: Callable[[str], Any] | None = None
    repeat: bool = False
    metavar: str | None = None

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--short-side``."""
        return "--" + self.name.replace("_", "-")

    def text(self) -> str:
        """The help with its placeholders filled from the registries that own the facts:
        ``{choices}``, ``{render}`` (the render options) and ``{tvl1}`` (TV-L1 defaults)."""
        text = self.help
        if "{choices}" in text:
            text = text.replace("{choices}", ", ".join(self.choices()))
        if "{render}" in text:
            from tristream.transforms.render import RENDER_OPTIONS

            text = text.replace("{render}", "; ".join("|".join(o) for o in RENDER_OPTIONS.values()))
        if "{tvl1}" in text:
            from tristream.models.tvl1.params import DEFAULTS

            text = text.replace("{tvl1}", ", ".join(f"{k} {v}" for k, v in DEFAULTS.items()))
        return text


def option(default: Any, help: str, *, name: str | None = None, **kw: Any) -> Any:
    """A dataclass field that is a user option (see :class:`Option`); ``name`` defaults to
    the field's own name (filled in by :func:`options_of`)."""
    meta = {"option": Option(name or "", help, **kw)}
    if callable(default) and not isinstance(default, type):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def options_of(cls: type) -> Iterator[tuple[dataclasses.Field, Option, Any]]:
    """``(field, option, type)`` of each option field of a config group, in order."""
    names = vars(sys.modules[cls.__module__])
    for f in dataclasses.fields(cls):
        opt = f.metadata.get("option")
        if opt is not None:
            kind = eval(f.type, names) if isinstance(f.type, str) else f.type  # noqa: S307
            yield f, (opt if opt.name else dataclasses.replace(opt, name=f.name)), kind


def parse_flow_param(text: str) -> tuple[str, int | float]:
    """One ``--flow-param NAME=VALUE``: an int when written as one (``5``), else a float."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    value = value.strip()
    try:
        return name.strip(), int(value)
    except ValueError:
        pass
    try:
        return name.strip(), float(value)
    except ValueError:
        raise ValueError(f"{name.strip()}={value!r} is not a number") from None


def value_type(kind: Any) -> tuple[Any, bool]:
    """An option field's value type and whether it may be None (``str | None`` ->
    ``(str, True)``)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        return next((t for t in args if t is not type(None)), str), type(None) in args
    return kind, False


def _check_value(opt: Option, kind: Any, value: Any) -> Any:
    """Type, choices and bounds of one option value; ValueError naming the flag. Returns
    the value in its one spelling (an int given for a float option becomes a float)."""
    base = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    target, optional = value_type(kind)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{opt.flag} must be given")
    if target in base:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = number if target is float else isinstance(value, target)
        if target is int and isinstance(value, bool):
            ok = False
        if not ok:
            raise ValueError(f"{opt.flag} must be {base[target]}, got {value!r}")
        if target is float:
            if not math.isfinite(value):
                raise ValueError(f"{opt.flag} must be a finite number, got {value!r}")
            value = float(value)
    if opt.choices is not None and value not in opt.choices():
        close = difflib.get_close_matches(str(value), [str(c) for c in opt.choices()], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{opt.flag} must be one of {', '.join(opt.choices())}, got {value!r}{hint}"
        )
    if opt.minimum is not None and value < opt.minimum:
        raise ValueError(f"{opt.flag} must be >= {opt.minimum:g}, got {value!r}")
    if opt.maximum is not None and value > opt.maximum:
        raise ValueError(f"{opt.flag} must be <= {opt.maximum:g}, got {value!r}")
    return value


def check_options(group: object) -> None:
    """Check every option field of a frozen config group (types, choices, bounds) and put
    each value in its one spelling (floats as floats), so equal settings hash equally."""
    for f, opt, kind in options_of(type(group)):
        object.__setattr__(group, f.name, _check_value(opt, kind, getattr(group, f.name)))


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class SourceConfig:
    """Which videos: a folder or glob, a manifest, or both; the split of unlabelled ones."""

    input: str | None = option(
        None,
        "a folder (walked recursively for video suffixes), a glob, one file, or an s3:// "
        "/ gs:// prefix; with --manifest, the folder that relative manifest paths start "
        "from",
        metavar="DIR_OR_GLOB",
        group="input",
    )
    manifest: str | None = option(
        None,
        "CSV or JSONL manifest (path[,id,label,label_index,split,start,end]), or a "
        "Kinetics CSV (label,youtube_id,time_start,time_end,split)",
        metavar="FILE",
        group="input",
    )
    path_template: str | None = option(
        None,
        "file name of a Kinetics row, relative to --input (default: "
        "'{youtube_id}_{time_start:06d}_{time_end:06d}.mp4')",
        metavar="T",
        group="input",
    )
    split: str = option(
        "train", "split of videos whose manifest row names none", metavar="NAME", group="input"
    )

    def __post_init__(self) -> None:
        check_options(self)
        if self.input is None and self.manifest is None:
            raise ValueError("give --input DIR_OR_GLOB or --manifest FILE")


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding: frame rate (fps; 0 keeps the source's), short side (pixels; 0 keeps the
    size), frames per segment (row) and the stall guard (seconds without a new frame; 0:
    none)."""

    fps: float = option(
        25.0, "frame rate (ffmpeg's fps filter); 0 keeps the source rate", minimum=0
    )
    short_side: int = option(
        256,
        "bilinear resize so the short side is this many pixels, aspect kept, the long "
        "side the even number nearest to the exact one (halfway: up), computed in Python "
        "so every ffmpeg build gives the same size (docs/decoding.md); 0 keeps the size",
        minimum=0,
    )
    max_frames: int = option(
        300,
        "frames per segment (one shard row); consecutive segments share one frame, so "
        "each frame pair's flow is in exactly one row",
        minimum=2,
    )
    timeout: float = option(
        120.0,
        "stall guard: seconds without a new frame from ffmpeg (or an answer from the probe) "
        "after which a video counts as hung; ffmpeg is stopped and the video fails at its "
        "stage, the run goes on (0: wait forever). Flow and pose time do not count",
        minimum=0,
    )

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class FlowConfig:
    """Optical flow: the backend (or ``none``), how flow is stored, the TV-L1 parameters
    (``params``: sorted ``(name, value)`` pairs over OpenCV's defaults), the solver's batch
    (pairs per call; 0: automatic) and kernel path."""

    backend: str = option(
        "tvl1",
        "tvl1: tristream's exact TV-L1 solver (OpenCV's DualTVL1 algorithm; fused CPU "
        "kernels on the CPU, Triton on CUDA, by --device); opencv: OpenCV contrib's "
        "DualTVL1, the reference; none: no flow; or package.module:function, a backend "
        "every worker imports itself (tristream.transforms.flow)",
        metavar="NAME",
        name="flow",
    )
    encoding: str = option(
        "jpeg",
        "how flow is stored: jpeg (at --jpeg-quality) or png of the uint8-quantised flow, "
        "or f16 (raw float16, unclipped)",
        metavar="ENC",
        name="flow_encoding",
        choices=_flow_encodings,
    )
    params: tuple[tuple[str, int | float], ...] = option(
        (),
        "TV-L1 parameter over OpenCV's defaults, repeatable ({tvl1}); integers for "
        "nscales, warps, the iteration counts and median_filtering",
        name="flow_param",
        parse=parse_flow_param,
        repeat=True,
        metavar="NAME=VALUE",
    )
    batch_size: int = option(
        0,
        "frame pairs per tvl1 solver call, gathered from all videos of a worker process "
        "(one flow feeder per process); 0: 16 on the CPU, what fills 80% of the free GPU "
        "memory on CUDA. The flow does not depend on the batch",
        name="flow_batch_size",
        minimum=0,
    )
    kernel: str = option(
        "auto",
        "kernel path of the tvl1 solver: {choices}; auto: fused on the CPU, triton on "
        "CUDA. A path that cannot run falls back to eager with a warning, and "
        "manifest.json's metrics count the segments per path. Not part of the config "
        "hash, like --device",
        metavar="PATH",
        name="flow_kernel",
        choices=_flow_kernels,
    )

    def __post_init__(self) -> None:
        pairs = tuple(sorted(dict(self.params).items()))  # one spelling: a later value wins
        object.__setattr__(self, "params", pairs)
        check_options(self)
        from tristream.transforms.flow import is_import_path, unknown_backend_error

        # A registered name, or an import path (imported by check_files, not here).
        if self.backend not in flow_choices() and not is_import_path(self.backend):
            close = difflib.get_close_matches(self.backend, flow_choices(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{unknown_backend_error(self.backend)}{hint}")
        from tristream.transforms.flow import tvl1_params

        try:  # unknown names and wrong types (nscales=5.0) fail here, before any work
            tvl1_params(**dict(pairs))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--flow-param: {exc}") from None

    @property
    def enabled(self) -> bool:
        """Whether rows carry flow."""
        return self.backend != "none"

    def tvl1(self) -> dict[str, int | float]:
        """The full TV-L1 parameter dict: OpenCV's defaults updated with ``params``."""
        from tristream.transforms.flow import tvl1_params

        return tvl1_params(**dict(self.params))


@dataclass(frozen=True)
class PersonsConfig:
    """Persons: detector, pose model and tracking, or skeletons imported from files.

    The packaged-model rule lives here, so the Python API and the command line agree:
    ``persons=True``, or a ``pose_model`` without a ``detector``, fills in the packaged
    detector (YOLOX-nano) and, with ``persons=True``, the packaged pose model (BlazePose
    lite); ``pose_model="none"`` keeps boxes and tracks only; a ``detector`` alone is
    boxes and tracks only. After construction ``detector`` and ``pose_model`` are the
    files that run (or None).
    """

    persons: bool = option(
        False,
        "person tracks and pose frames with the packaged YOLOX-nano detector and "
        "BlazePose-lite pose model (no download; docs/pose.md), or the models --detector "
        "/ --pose-model name",
        group="persons",
    )
    detector: str | None = option(
        None,
        "person detector: a YOLOX ONNX model or a TorchScript detector (default with "
        "--persons or --pose-model: the packaged YOLOX-nano); alone it tracks boxes only "
        "(keypoint scores 0)",
        metavar="FILE",
        group="persons",
    )
    pose_model: str | None = option(
        None,
        "top-down pose model on the boxes: ONNX (BlazePose landmarks, heatmaps, or "
        "RTMPose SimCC outputs), a PoseResNet checkpoint (official or mmpose layout) or a"
        " TorchScript heatmap model (default with --persons: the packaged BlazePose "
        "lite); none: boxes only",
        metavar="FILE",
        group="persons",
    )
    pose_format: str = option(
        "auto",
        "output family of an ONNX pose model: {choices}; auto recognises it from the outputs",
        metavar="FAMILY",
        choices=_pose_formats,
        group="persons",
    )
    pose_precision: str = option(
        "fp32",
        "autocast precision of a torch pose model on CUDA: {choices}",
        metavar="P",
        choices=_pose_precisions,
        group="persons",
    )
    pose_decoder: str = option(
        "dark",
        "heatmap decoding: {choices} (argmax: quarter-pixel shift; dark: Taylor refinement)",
        metavar="NAME",
        choices=_pose_decoders,
        group="persons",
    )
    trust_checkpoint: bool = option(
        False,
        "unpickle a torch pose checkpoint fully when torch's safe loading refuses it "
        "(objects besides the weights): only for files you trust",
        group="persons",
    )
    flip_test: bool = option(
        False,
        "average the heatmaps with those of the flipped crop (heatmap models)",
        group="persons",
    )
    skeletons: str | None = option(
        None,
        "import 2D COCO-17 skeletons from an mmaction2/pyskl pickle instead of running "
        "models (matched by frame_dir = video id, frame t of the annotation is stored "
        "frame t)",
        metavar="FILE",
        group="persons",
    )
    skeletons3d: str | None = option(
        None,
        "with --skeletons: the same videos' 3D skeletons (keypoint [M, T, 17, 3], as "
        "export-skeletons --3d writes them; person m the same as in the 2D file), stored "
        "as keypoints3d",
        metavar="FILE",
        group="persons",
    )
    max_persons: int = option(
        5, "tracks kept per row, ordered by mean score", minimum=1, group="persons"
    )
    keypoints3d: bool = option(
        False,
        "also store each person's COCO-17 joints in 3D (metres, origin between the hips) "
        "from a pose model with 3D output: BlazePose's world landmarks (the packaged lite"
        " model, full, heavy)",
        group="persons",
    )
    det_threshold: float = option(
        0.3, "detector score threshold", minimum=0, maximum=1, group="persons"
    )
    det_nms: float = option(
        0.45, "detector NMS IoU threshold", minimum=0, maximum=1, group="persons"
    )

    def __post_init__(self) -> None:
        check_options(self)
        if self.skeletons and (self.persons or self.pose_model):
            raise ValueError("give --skeletons (imported keypoints) or --persons / --pose-model")
        if self.skeletons and self.detector:
            raise ValueError("give --skeletons (imported keypoints) or --detector, not both")
        detector, pose_model = self.detector, self.pose_model
        no_pose = pose_model is not None and pose_model.lower() == NO_POSE
        if no_pose:
            pose_model = None
        if self.persons or pose_model:
            from tristream.models.zoo import DEFAULT_DETECTOR, DEFAULT_POSE_MODEL

            detector = detector or str(DEFAULT_DETECTOR)
            if self.persons and not no_pose:
                pose_model = pose_model or str(DEFAULT_POSE_MODEL)
        # Resolved once into the files that run; ``persons`` has done its job, so a config
        # rebuilt from these values (manifest.json, a worker's) resolves to the same files.
        object.__setattr__(self, "persons", False)
        object.__setattr__(self, "detector", detector)
        object.__setattr__(self, "pose_model", pose_model)
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

    @property
    def enabled(self) -> bool:
        """Whether rows carry person tracks (keypoints, boxes, track ids)."""
        return bool(self.detector or self.skeletons)

    @property
    def files(self) -> dict[str, str]:
        """The files this group reads, by flag: ``{"--detector": path, ...}``."""
        names = ("detector", "pose_model", "skeletons", "skeletons3d")
        return {f"--{n.replace('_', '-')}": getattr(self, n) for n in names if getattr(self, n)}


@dataclass(frozen=True)
class RenderConfig:
    """How pose frames are drawn (only when rows carry persons)."""

    style: str = option(
        "bars,fine,ratio,rgb",
        "pose frames (the pose column) when persons are on, comma-separated: one of each "
        "of {render} (docs/rendering.md); none turns them off",
        metavar="STYLE",
        name="render",
        group="persons",
    )

    def __post_init__(self) -> None:
        check_options(self)
        from tristream.transforms.render import RenderStyle

        RenderStyle.parse(self.style)  # a bad --render fails here


@dataclass(frozen=True)
class OutputConfig:
    """Where and how shards are written: folder or URI, file format, shards per split
    (0: one per 100 videos) and the JPEG quality of stored frames."""

    path: str = option(
        "",
        "output folder or s3:// / gs:// prefix (shards/, manifest.json, failures.jsonl, cache/)",
        metavar="OUT",
        name="output",
        group="output",
    )
    format: str = option(
        "parquet",
        "shard file format: {choices}",
        metavar="FMT",
        choices=lambda: FORMATS,
        group="output",
    )
    parquet_frame_index: bool = option(
        True,
        "Parquet shards: store the frame columns uncompressed, with a frame index beside each "
        "shard, so trainers read only a clip's frames (docs/shards.md); off: the earlier layout "
        "(every column compressed, the same rows) and no index. TFRecord shards always get "
        "their index",
        group="output",
    )
    num_shards: int = option(
        0, "shards per split (0: one per 100 videos)", minimum=0, group="output"
    )
    jpeg_quality: int = option(
        _jpeg_quality,
        "JPEG quality of the RGB frames and of jpeg flow",
        minimum=1,
        maximum=100,
        group="output",
    )

    def __post_init__(self) -> None:
        check_options(self)
        if not self.path:
            raise ValueError("--output must be given")

    @property
    def formats(self) -> tuple[str, ...]:
        """The shard file formats to write."""
        return ("parquet", "tfrecord") if self.format == "both" else (self.format,)


@dataclass(frozen=True)
class RunOptions:
    """How the run goes: local worker threads (0: all cores), the device of flow and
    models, the failure policy, and the object-store configuration that inputs, cache and
    outputs share (not an option: the run takes it from Beam's S3 flags or the environment
    when it is None, in the launching process, and it travels to the workers with the
    config)."""

    workers: int = option(
        0,
        "local worker threads (0: all cores); a torch pose model on the CPU then uses "
        "CPUs / N threads in each",
        minimum=0,
        group="run",
    )
    device: str = option(
        "auto",
        "device of the tvl1 flow solver, the detector and the pose model: auto, cpu, "
        "cuda, cuda:N; CUDA asked for but absent falls back to the CPU with a warning",
        metavar="DEVICE",
        group="run",
    )
    fail_on_error: bool = option(
        False,
        "exit status 1 when any video failed (default: 0, failures are in failures.jsonl)",
        group="run",
    )
    failures_shown: int = option(
        20,
        "failed videos the closing summary lists (all of them are in failures.jsonl)",
        minimum=0,
        group="run",
    )
    store: StoreConfig | None = None

    def __post_init__(self) -> None:
        check_options(self)
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


#: The groups of a :class:`RunConfig`, by attribute name.
GROUPS: dict[str, type] = {
    "source": SourceConfig,
    "decode": DecodeConfig,
    "flow": FlowConfig,
    "persons": PersonsConfig,
    "render": RenderConfig,
    "output": OutputConfig,
    "run": RunOptions,
}


@dataclass(frozen=True)
class RunConfig:
    """Everything a ``tristream run`` needs besides the Beam options, by concern.

    Build it from option names with :meth:`from_options` (what the command line
    does), or from the groups. Construction validates; it does no I/O.
    """

    source: SourceConfig
    output: OutputConfig
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    persons: PersonsConfig = field(default_factory=PersonsConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    run: RunOptions = field(default_factory=RunOptions)

    @classmethod
    def from_options(cls, **options: Any) -> RunConfig:
        """A config from option names (``output=..., input=..., short_side=64, flow="opencv",
        flow_param={"nscales": 3}``; the same names as the flags). ``flow_param`` takes a
        dict or ``(name, value)`` pairs; ``store`` a :class:`StoreConfig`. An unknown name is
        a ValueError with a suggestion."""
        by_name = {opt.name: (group, f.name) for group, cls_ in GROUPS.items()
                   for f, opt, _ in options_of(cls_)}  # fmt: skip
        parts: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
        for name, value in options.items():
            if name == "store":
                parts["run"]["store"] = value
                continue
            if name not in by_name:
                close = difflib.get_close_matches(name, list(by_name), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown option {name!r}{hint}")
            group, attr = by_name[name]
            if name == "flow_param" and isinstance(value, dict):
                value = tuple(value.items())
            parts[group][attr] = value
        return cls(**{group: GROUPS[group](**kw) for group, kw in parts.items()})

    def options(self) -> dict[str, Any]:
        """Every option by name (what ``manifest.json`` records; :meth:`from_options` of it
        gives this config back). ``flow_param`` is a dict."""
        out: dict[str, Any] = {}
        for group, cls_ in GROUPS.items():
            part = getattr(self, group)
            for f, opt, _ in options_of(cls_):
                value = getattr(part, f.name)
                out[opt.name] = dict(value) if opt.name == "flow_param" else value
        return out

    def replace(self, **options: Any) -> RunConfig:
        """A copy with some options changed (by option name)."""
        return RunConfig.from_options(**(self.options() | {"store": self.run.store} | options))

    @property
    def render_style(self):
        """The pose-frame style (a :class:`~tristream.transforms.render.RenderStyle`), or
        None when no pose frames are rendered."""
        if not self.persons.enabled:
            return None
        from tristream.transforms.render import RenderStyle

        return RenderStyle.parse(self.render.style)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the shards hold."""
        mods = ["rgb", "flow"] if self.flow.enabled else ["rgb"]
        if self.render_style is not None:
            mods.append("pose")
        if self.persons.enabled:
            mods.append("keypoints")
        if self.persons.keypoints3d or self.persons.skeletons3d:
            mods.append("keypoints3d")
        return tuple(mods)
