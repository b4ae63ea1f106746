"""Context-aware pose frames (PERF-Net): COCO-17 keypoints drawn over, or instead of, RGB frames.

PERF-Net (2020) feeds a third stream with pose "rendered" into image frames,
and compares four design choices, which :class:`RenderStyle` names:

- ``marks``: ``dots`` (a filled disc per joint) or ``bars`` (the 19 limbs of
  the COCO skeleton as line segments, with the joints on top);
- ``coloring``: ``fine`` (a distinct colour per limb and per joint) or
  ``coarse`` (one colour per body side: left, right, centre);
- ``thickness``: ``uniform`` (a fixed stroke width in pixels) or ``ratio``
  (proportional to the person's size: the diagonal of the box of its visible
  joints, times ``ratio``, at least 1 px);
- ``background``: ``rgb`` (over the frame: context-aware) or ``black``.

Drawing is vectorised numpy on a distance field: every limb is a capsule (a
segment with round caps) of width ``w``, every joint a disc, and a pixel's
coverage is ``clip(r + 0.5 - d, 0, 1)`` for its distance ``d`` to the shape
(antialiased, sub-pixel accurate, exact fractional widths), or ``d <= r``
when antialiasing is off. Pixel centres are at integer coordinates, as in
OpenCV. Joints whose score is below ``score_threshold`` (or not finite) are
not drawn, and a limb is drawn only when both its ends are.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, fields

import numpy as np

from tristream.shards.coco import JOINT_NAMES, NUM_JOINTS, SKELETON

#: Body sides, the colours of ``coarse`` colouring.
SIDES: tuple[str, ...] = ("left", "right", "centre")


def _joint_side(j: int) -> str:
    name = JOINT_NAMES[j]
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "centre"


#: Side of each joint: the nose is centre, ``left_*`` left, ``right_*`` right.
JOINT_SIDES: tuple[str, ...] = tuple(_joint_side(j) for j in range(NUM_JOINTS))


def _limb_side(a: int, b: int) -> str:
    sides = {JOINT_SIDES[a], JOINT_SIDES[b]} - {"centre"}
    return sides.pop() if len(sides) == 1 else "centre"


#: Side of each limb: the side of its non-centre end(s); limbs across the body
#: (eye-eye, shoulder-shoulder, hip-hip) are centre.
LIMB_SIDES: tuple[str, ...] = tuple(_limb_side(a, b) for a, b in SKELETON)

#: RGB colour of each side in ``coarse`` colouring (exactly three colours).
SIDE_COLORS: dict[str, tuple[int, int, int]] = {
    "left": (0, 140, 255),
    "right": (255, 60, 0),
    "centre": (40, 230, 40),
}


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


#: RGB colour of each limb in ``fine`` colouring: 19 saturated hues.
FINE_LIMB_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    _hsv(i / len(SKELETON), 1.0, 1.0) for i in range(len(SKELETON))
)

#: RGB colour of each joint in ``fine`` colouring: 17 pale hues, none equal to a limb's.
FINE_JOINT_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    _hsv(j / NUM_JOINTS + 0.5 / NUM_JOINTS, 0.45, 1.0) for j in range(NUM_JOINTS)
)

#: The render options by name (the one registry the CLI and RenderStyle read):
#: each field of :class:`RenderStyle` and its choices, default first where it matters.
RENDER_OPTIONS: dict[str, tuple[str, ...]] = {
    "marks": ("dots", "bars"),
    "coloring": ("fine", "coarse"),
    "thickness": ("uniform", "ratio"),
    "background": ("rgb", "black"),
}
# key=value tokens of parse()/str(): token name -> field name
_PARAMS: dict[str, str] = {"threshold": "score_threshold", "px": "uniform_px", "ratio": "ratio"}


@dataclass(frozen=True)
class RenderStyle:
    """How pose frames are drawn (PERF-Net's design choices, see the module docstring).

    Attributes:
        marks: ``"dots"`` (a disc of radius ``w`` per joint) or ``"bars"`` (limbs
            as capsules of width ``w``, joints as discs of radius ``0.75 w``).
        coloring: ``"fine"`` (19 limb + 17 joint colours) or ``"coarse"`` (3: left,
            right, centre).
        thickness: ``"uniform"`` (``w = uniform_px``) or ``"ratio"`` (``w = max(1,
            ratio * diagonal of the box of the person's visible joints)``).
        background: ``"rgb"`` (drawn over the frame) or ``"black"``.
        score_threshold: joints scoring below it are not drawn.
        uniform_px: stroke width ``w`` in pixels for ``uniform`` thickness.
        ratio: stroke width per pixel of person diagonal for ``ratio`` thickness.
        antialias: soft (1 px) edges; off gives hard edges with only the style's colours.
    """

    marks: str = "bars"
    coloring: str = "fine"
    thickness: str = "ratio"
    background: str = "rgb"
    score_threshold: float = 0.3
    uniform_px: float = 3.0
    ratio: float = 0.02
    antialias: bool = True

    def __post_init__(self) -> None:
        for name, options in RENDER_OPTIONS.items():
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}, got {getattr(self, name)!r}")
        if not self.uniform_px > 0 or not self.ratio > 0:
            raise ValueError("uniform_px and ratio must be > 0")
        if not np.isfinite(self.score_threshold):
            raise ValueError("score_threshold must be finite")

    @classmethod
    def parse(cls, text: str | None) -> RenderStyle | None:
        """Parse a comma-separated, order-free style, e.g. ``"bars,fine,ratio,rgb"``.

        Each of the four choices may be given at most once; missing ones take
        the defaults (``bars,fine,ratio,rgb``). Also accepted: ``threshold=F``,
        ``px=F``, ``ratio=F`` and ``aliased`` (antialiasing off). ``"none"``
        (or an empty/None text) returns None: no pose rendering.
        """
        if text is None or text.strip().lower() in ("", "none"):
            return None
        values: dict[str, object] = {}
        for raw in text.split(","):
            token = raw.strip().lower()
            if not token:
                continue
            if "=" in token:
                key, _, value = token.partition("=")
                key = key.strip()
                if key not in _PARAMS:
                    raise ValueError(f"unknown render parameter {key!r}; known: {sorted(_PARAMS)}")
                name = _PARAMS[key]
                try:
                    number = float(value)
                except ValueError:
                    raise ValueError(
                        f"render parameter {key} needs a number, got {value!r}"
                    ) from None
            elif token == "aliased":
                name, number = "antialias", False
            else:
                matches = [n for n, opts in RENDER_OPTIONS.items() if token in opts]
                if not matches:
                    known = ", ".join(o for opts in RENDER_OPTIONS.values() for o in opts)
                    raise ValueError(f"unknown render token {token!r}; known: {known}, none")
                name, number = matches[0], token
            if name in values:
                raise ValueError(f"render style {text!r} sets {name} twice")
            values[name] = number
        return cls(**values)

    def __str__(self) -> str:
        tokens = [self.marks, self.coloring, self.thickness, self.background]
        defaults = {f.name: f.default for f in fields(self)}
        for key, name in _PARAMS.items():
            if getattr(self, name) != defaults[name]:
                tokens.append(f"{key}={getattr(self, name):g}")
        if not self.antialias:
            tokens.append("aliased")
        return ",".join(tokens)


#: The default style: bars, fine colouring, ratio-aware thickness, over the RGB frame.
DEFAULT = RenderStyle()


def _visible(keypoints: np.ndarray, threshold: float) -> np.ndarray:
    """bool ``[M, 17]``: finite coordinates and score >= threshold."""
    finite = np.isfinite(keypoints).all(axis=-1)
    with np.errstate(invalid="ignore"):
        return finite & (np.nan_to_num(keypoints[..., 2], nan=-np.inf) >= threshold)


def stroke_widths(keypoints: np.ndarray, style: RenderStyle = DEFAULT) -> np.ndarray:
    """Stroke width ``w`` in pixels of each person: float64 ``[M]``.

    ``keypoints`` float ``[M, 17, 3]``. ``uniform``: ``style.uniform_px``;
    ``ratio``: ``max(1, style.ratio * diagonal)`` of the box around the
    person's visible joints (1 px for a person with one visible joint).
    """
    kp = np.asarray(keypoints, np.float64).reshape(-1, 17, 3)
    if style.thickness == "uniform":
        return np.full(len(kp), float(style.uniform_px))
    vis = _visible(kp, style.score_threshold)
    out = np.ones(len(kp))
    for m in range(len(kp)):
        if vis[m].any():
            xy = kp[m, vis[m], :2]
            diag = float(np.hypot(*(xy.max(axis=0) - xy.min(axis=0))))
            out[m] = max(1.0, style.ratio * diag)
    return out


def _paint(
    out: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float, color, antialias: bool
) -> None:
    """Composite a capsule from ``a`` to ``b`` (x, y; a disc when equal) into uint8 ``out``."""
    h, w = out.shape[:2]
    pad = radius + 1.0
    x0 = max(int(np.floor(min(a[0], b[0]) - pad)), 0)
    x1 = min(int(np.ceil(max(a[0], b[0]) + pad)) + 1, w)
    y0 = max(int(np.floor(min(a[1], b[1]) - pad)), 0)
    y1 = min(int(np.ceil(max(a[1], b[1]) + pad)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    px = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(a[0])
    py = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(a[1])
    dx, dy = np.float32(b[0] - a[0]), np.float32(b[1] - a[1])
    length2 = dx * dx + dy * dy
    if length2 > 1e-12:
        t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0)
        ex, ey = px - t * dx, py - t * dy
    else:
        ex, ey = np.broadcast_to(px, (y1 - y0, x1 - x0)), py
    dist = np.sqrt(ex * ex + ey * ey)
    if antialias:
        alpha = np.clip(np.float32(radius + 0.5) - dist, 0.0, 1.0)
    else:
        alpha = (dist <= np.float32(radius)).astype(np.float32)
    if not alpha.any():
        return
    region = out[y0:y1, x0:x1]
    alpha = alpha[..., None]
    color = np.asarray(color, np.float32)
    mixed = region.astype(np.float32) * (1.0 - alpha) + color * alpha
    region[...] = np.rint(mixed).astype(np.uint8)


def render_pose(
    frame: np.ndarray, keypoints: np.ndarray, style: RenderStyle = DEFAULT
) -> np.ndarray:
    """Draw the keypoints of ``M`` persons into a new frame.

    Args:
        frame: uint8 ``[H, W, 3]`` RGB; not modified.
        keypoints: float ``[M, 17, 3]`` (x, y, score) in the frame's pixels,
            COCO-17 order (``[17, 3]`` is one person; ``M = 0`` draws nothing).
        style: see :class:`RenderStyle`.

    Returns:
        uint8 ``[H, W, 3]``: a copy of ``frame`` (``rgb`` background) or zeros
        (``black``) with limbs (``bars``), then joints, drawn person by person.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    kp = np.asarray(keypoints, np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise ValueError(f"keypoints must be [M, 17, 3], got {kp.shape}")
    out = np.zeros_like(frame) if style.background == "black" else frame.copy()
    vis = _visible(kp, style.score_threshold)
    widths = stroke_widths(kp, style)
    coarse = style.coloring == "coarse"
    for m in range(len(kp)):
        w = widths[m]
        if style.marks == "bars":
            for i, (ja, jb) in enumerate(SKELETON):
                if vis[m, ja] and vis[m, jb]:
                    color = SIDE_COLORS[LIMB_SIDES[i]] if coarse else FINE_LIMB_COLORS[i]
                    _paint(out, kp[m, ja, :2], kp[m, jb, :2], w / 2, color, style.antialias)
        radius = w if style.marks == "dots" else 0.75 * w
        for j in np.flatnonzero(vis[m]):
            color = SIDE_COLORS[JOINT_SIDES[j]] if coarse else FINE_JOINT_COLORS[j]
            _paint(out, kp[m, j, :2], kp[m, j, :2], radius, color, style.antialias)
    return out


def render_segment(
    frames: np.ndarray, keypoints: np.ndarray, style: RenderStyle = DEFAULT
) -> np.ndarray:
    """Pose frames of a segment: :func:`render_pose` on every frame.

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB; not modified.
        keypoints: float ``[M, T, 17, 3]`` (a track absent at frame t has score 0).
        style: see :class:`RenderStyle`.

    Returns:
        uint8 ``[T, H, W, 3]``.
    """
    frames = np.asarray(frames)
    kp = np.asarray(keypoints)
    if frames.ndim != 4:
        raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
    if kp.ndim != 4 or kp.shape[1] != len(frames) or kp.shape[2:] != (17, 3):
        raise ValueError(f"keypoints must be [M, {len(frames)}, 17, 3], got {kp.shape}")
    out = np.empty_like(frames)
    for t in range(len(frames)):
        out[t] = render_pose(frames[t], kp[:, t], style)
    return out
