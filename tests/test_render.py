"""Pose rendering (PERF-Net styles) and the Middlebury flow colours, checked pixel by pixel."""

from __future__ import annotations

import colorsys
import itertools

import numpy as np
import pytest

from tristream.shards.coco import JOINT_NAMES, SKELETON
from tristream.transforms.decode import decode_video
from tristream.transforms.flowviz import color_wheel, color_wheel_legend, flow_to_color
from tristream.transforms.render import (
    DEFAULT,
    FINE_JOINT_COLORS,
    FINE_LIMB_COLORS,
    JOINT_SIDES,
    LIMB_SIDES,
    SIDE_COLORS,
    RenderStyle,
    render_pose,
    render_segment,
    stroke_widths,
)

# A standing person facing the camera, in person heights (its left at +x).
TEMPLATE = np.array(
    [
        (0.0, 0.0), (0.03, -0.03), (-0.03, -0.03), (0.07, -0.01), (-0.07, -0.01),
        (0.15, 0.15), (-0.15, 0.15), (0.22, 0.35), (-0.22, 0.35), (0.25, 0.52), (-0.25, 0.52),
        (0.10, 0.52), (-0.10, 0.52), (0.12, 0.75), (-0.12, 0.75), (0.12, 0.98), (-0.12, 0.98),
    ]
)  # fmt: skip
LEFT_SHIN = SKELETON.index((15, 13))  # left ankle - left knee: a vertical limb


def person(scale: float, cx: float, cy: float, score: float = 0.9) -> np.ndarray:
    """float32 [17, 3] keypoints of TEMPLATE at ``scale`` px high, nose at (cx, cy)."""
    kp = np.empty((17, 3), np.float32)
    kp[:, :2] = TEMPLATE * scale + (cx, cy)
    kp[:, 2] = score
    return kp


@pytest.fixture(scope="module")
def frame(bikes) -> np.ndarray:
    """A real frame, 256 x 602."""
    return decode_video(bikes, fps=25, short_side=256, start=2.0, end=2.04)[0]


def _distance_to_segment(shape, a, b) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    d = np.subtract(b, a)
    t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / (d @ d), 0, 1)
    return np.hypot(xs - a[0] - t * d[0], ys - a[1] - t * d[1])


def _interior_colours(img: np.ndarray) -> set[tuple[int, int, int]]:
    """Distinct non-black colours of pixels whose 3x3 neighbourhood is that same colour."""
    h, w = img.shape[:2]
    core = img[1:-1, 1:-1]
    same = np.ones(core.shape[:2], bool)
    for dy, dx in itertools.product((-1, 0, 1), repeat=2):
        same &= (img[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] == core).all(axis=-1)
    same &= core.any(axis=-1)
    return {tuple(int(v) for v in c) for c in np.unique(core[same], axis=0)}


def _stroke_width(img: np.ndarray, x: float, y: int) -> float:
    """Coverage summed across a vertical limb at row ``y`` (limb colour has a 255 channel)."""
    x0 = int(x)
    cut = img[y, x0 - 30 : x0 + 31].max(axis=-1).astype(np.float64) / 255.0
    return float(cut.sum())


# ------------------------------------------------------------------ skeleton and sides


def test_skeleton_is_the_coco_one_with_sides():
    assert len(SKELETON) == 19 and len(JOINT_NAMES) == 17
    assert SKELETON[0] == (15, 13) and SKELETON[-1] == (4, 6)  # (16,14), (5,7) 1-based
    assert len(set(SKELETON)) == 19
    assert JOINT_SIDES[0] == "centre" and JOINT_SIDES[5] == "left" and JOINT_SIDES[6] == "right"
    sides = dict(zip(SKELETON, LIMB_SIDES))
    assert sides[(5, 6)] == sides[(11, 12)] == sides[(1, 2)] == "centre"
    assert sides[(5, 7)] == sides[(0, 1)] == "left" and sides[(6, 8)] == sides[(0, 2)] == "right"


# ------------------------------------------------------------------ geometry


# One known limb on a tiny frame: the left upper arm, left shoulder (joint 5) at (5, 8) to left
# elbow (joint 7) at (15, 8), every other joint hidden. Pixel centres at integers. With
# px=4 the limb is a capsule of radius 2 and each joint a disc of radius 0.75 * 4 = 3.
ARM = SKELETON.index((5, 7))
SHOULDER, ELBOW = (5.0, 8.0), (15.0, 8.0)


def _arm_keypoints(dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    kp = np.zeros((17, 3), np.float32)
    kp[5] = (SHOULDER[0] + dx, SHOULDER[1] + dy, 0.9)
    kp[7] = (ELBOW[0] + dx, ELBOW[1] + dy, 0.9)
    return kp


def _colour_at(img, x, y):
    return tuple(int(v) for v in img[y, x])


def test_one_limb_by_hand_geometry_aliased():
    """Hard edges: a pixel is painted when its centre is within the radius (d <= r).

    By hand: the capsule covers |y - 8| <= 2 for 5 <= x <= 15 (55 pixels), each disc of
    radius 3 the 29 integer points with dx^2 + dy^2 <= 9, 13 of them outside that band;
    so 55 + 2 * 13 = 81 pixels are painted, 2 * 29 = 58 of them in joint colours (the
    joints are drawn over the limb), and 23 in the limb's colour: columns 9-11 (5 each)
    and columns 8 and 12 (4 each: the disc takes the middle one).
    """
    black = np.zeros((17, 21, 3), np.uint8)
    limb, j5, j7 = FINE_LIMB_COLORS[ARM], FINE_JOINT_COLORS[5], FINE_JOINT_COLORS[7]
    out = render_pose(
        black, _arm_keypoints(), RenderStyle.parse("bars,fine,uniform,black,px=4,aliased")
    )
    painted = out.any(axis=-1)
    assert painted.sum() == 81
    assert (out == limb).all(axis=-1).sum() == 23
    assert (out == j5).all(axis=-1).sum() == 29 and (out == j7).all(axis=-1).sum() == 29
    for x, y in [(10, 8), (10, 6), (10, 10), (8, 10), (12, 6), (9, 7)]:  # band, off the discs
        assert _colour_at(out, x, y) == limb, (x, y)
    for x, y in [(5, 8), (2, 8), (8, 8), (5, 5), (5, 11), (7, 10), (3, 6)]:  # d <= 3 from (5, 8)
        assert _colour_at(out, x, y) == j5, (x, y)
    for x, y in [(15, 8), (18, 8), (15, 11), (13, 6)]:
        assert _colour_at(out, x, y) == j7, (x, y)
    for x, y in [(10, 11), (10, 5), (1, 8), (19, 8), (5, 12), (8, 11), (2, 7), (0, 0)]:
        assert _colour_at(out, x, y) == (0, 0, 0), (x, y)  # d > 2 from the limb, > 3 from joints
    # coarse: the same pixels, all in the left side's colour
    coarse = render_pose(
        black, _arm_keypoints(), RenderStyle.parse("bars,coarse,uniform,black,px=4,aliased")
    )
    assert np.array_equal(coarse.any(axis=-1), painted)
    assert (coarse[painted] == SIDE_COLORS["left"]).all()
    # dots: only the two discs, of radius w = 4 (the 49 integer points with d^2 <= 16 each)
    dots = render_pose(
        black, _arm_keypoints(), RenderStyle.parse("dots,fine,uniform,black,px=4,aliased")
    )
    assert (dots == j5).all(axis=-1).sum() == 49 and (dots == j7).all(axis=-1).sum() == 49
    assert dots.any(axis=-1).sum() == 98  # the discs (10 px apart) do not touch


def test_one_limb_by_hand_geometry_antialiased_over_rgb():
    """Soft edges: coverage clip(r + 0.5 - d, 0, 1) blended over the frame, rounded.

    Across the limb at x = 10 (radius 2): d = 0, 1 are fully covered, d = 2 half
    (0.5 * background + 0.5 * colour), d >= 2.5 not at all.
    """
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (17, 21, 3), dtype=np.uint8)
    colour = np.array(SIDE_COLORS["left"], np.float64)
    out = render_pose(frame, _arm_keypoints(), RenderStyle.parse("bars,coarse,uniform,rgb,px=4"))
    for y in (7, 8, 9):
        assert _colour_at(out, 10, y) == tuple(colour.astype(int))
    for y in (6, 10):
        half = np.rint(0.5 * frame[y, 10] + 0.5 * colour).astype(int)
        assert np.abs(out[y, 10].astype(int) - half).max() <= 1  # float32 rounding
    for y in (4, 5, 11, 12):
        assert np.array_equal(out[y, 10], frame[y, 10])
    # far from both (d >= r + 0.5 = 3.5 from the joints, >= 2.5 from the limb): untouched
    ys, xs = np.mgrid[:17, :21]
    d_joint = np.minimum(np.hypot(xs - 5, ys - 8), np.hypot(xs - 15, ys - 8))
    d_limb = np.where((xs >= 5) & (xs <= 15), np.abs(ys - 8), d_joint)
    far = (d_joint >= 3.5) & (d_limb >= 2.5)
    assert np.array_equal(out[far], frame[far])


def test_colour_tables_follow_the_docs():
    """docs/rendering.md: fine = a distinct saturated hue per limb (19) and a pale hue per
    joint (17), no joint colour equal to a limb's; coarse = exactly three colours, by body
    side, with the side read from the COCO joint names."""
    assert len(FINE_LIMB_COLORS) == 19 == len(set(FINE_LIMB_COLORS))
    assert len(FINE_JOINT_COLORS) == 17 == len(set(FINE_JOINT_COLORS))
    assert not set(FINE_LIMB_COLORS) & set(FINE_JOINT_COLORS)
    for c in FINE_LIMB_COLORS:  # saturated: full value, full saturation
        assert max(c) == 255 and min(c) == 0, c
    for c in FINE_JOINT_COLORS:  # pale: full value, partial saturation
        assert max(c) == 255 and 0 < min(c) < 255, c
    hues = sorted(round(_hue(c)) for c in FINE_LIMB_COLORS)
    assert min(np.diff(hues)) >= 15  # 19 hues spread round the wheel (360 / 19 = 18.9)
    assert len(set(SIDE_COLORS.values())) == 3
    for i, (a, b) in enumerate(SKELETON):
        names = {JOINT_NAMES[a].split("_")[0], JOINT_NAMES[b].split("_")[0]} - {"nose"}
        expected = names.pop() if len(names) == 1 else "centre"
        assert LIMB_SIDES[i] == expected, (JOINT_NAMES[a], JOINT_NAMES[b])


def test_a_limb_covers_the_segment_between_its_joints_and_nothing_far_away(frame):
    kp = person(200, 300, 30)
    kp[:, 2] = 0.0
    kp[[5, 7], 2] = 0.9  # only the left upper arm can be drawn
    style = RenderStyle.parse("bars,fine,uniform,rgb,px=5")
    before = frame.copy()
    out = render_pose(frame, kp, style)
    assert np.array_equal(frame, before)  # the input is untouched
    a, b = kp[5, :2], kp[7, :2]
    colour = FINE_LIMB_COLORS[SKELETON.index((5, 7))]
    for t in np.linspace(0.25, 0.75, 15):  # between the joint discs
        x, y = a + t * (b - a)
        assert tuple(out[int(round(y)), int(round(x))]) == colour
    dist = _distance_to_segment(frame.shape, a, b)
    far = dist > 0.75 * 5 + 1.5
    assert np.array_equal(out[far], frame[far])
    assert (out[dist < 2] != frame[dist < 2]).any(axis=-1).all()


def test_low_score_joints_leave_the_frame_untouched(frame):
    kps = np.stack([person(200, 300, 30, score=0.29), person(150, 100, 50, score=0.0)])
    kps[1, 3, :2] = np.nan
    for spec in ("bars,fine,ratio,rgb", "dots,coarse,uniform,rgb"):
        assert np.array_equal(render_pose(frame, kps, RenderStyle.parse(spec)), frame)
    # A limb needs both ends: with one end hidden only the other end's disc is drawn.
    kp = person(200, 300, 30, score=0.0)
    kp[5, 2] = 0.9
    out = render_pose(frame, kp, RenderStyle.parse("bars,fine,uniform,black,px=4"))
    ys, xs = np.nonzero(out.any(axis=-1))
    assert np.hypot(xs - kp[5, 0], ys - kp[5, 1]).max() <= 0.75 * 4 + 1


@pytest.mark.parametrize("thickness", ["ratio", "uniform"])
def test_ratio_thickness_scales_with_the_person_and_uniform_does_not(thickness):
    style = RenderStyle(thickness=thickness, background="black", uniform_px=4, ratio=0.02)
    widths = []
    for scale in (200, 400):
        black = np.zeros((scale + 40, 2 * scale, 3), np.uint8)
        kp = person(scale, scale, 15)
        out = render_pose(black, kp, style)
        knee, ankle = kp[13, :2], kp[15, :2]
        widths.append(_stroke_width(out, knee[0], int((knee[1] + ankle[1]) / 2)))
    diag = np.hypot(0.5, 1.01) * 200  # the box of the template's joints at scale 200
    if thickness == "ratio":
        assert widths[0] == pytest.approx(0.02 * diag, abs=0.15)
        assert widths[1] / widths[0] == pytest.approx(2.0, abs=0.08)
    else:
        assert widths[0] == pytest.approx(4.0, abs=0.15)
        assert widths[1] == pytest.approx(widths[0], abs=0.05)


def test_stroke_width_has_a_floor_of_one_pixel():
    tiny = person(10, 20, 5)[None]
    assert stroke_widths(tiny, RenderStyle(ratio=0.02))[0] == 1.0
    lone = person(200, 20, 5, score=0.0)
    lone[0, 2] = 1.0
    assert stroke_widths(lone[None], DEFAULT)[0] == 1.0
    big = person(400, 300, 20)[None]
    assert stroke_widths(big, DEFAULT)[0] == pytest.approx(0.02 * np.hypot(200, 404), rel=1e-3)


# ------------------------------------------------------------------ colours


def test_coarse_uses_exactly_three_colours_one_per_side():
    black = np.zeros((480, 480, 3), np.uint8)
    kps = np.stack([person(400, 240, 30), person(300, 100, 60)])
    aliased = render_pose(black, kps, RenderStyle.parse("bars,coarse,ratio,black,aliased"))
    colours = {tuple(int(v) for v in c) for c in np.unique(aliased.reshape(-1, 3), axis=0)}
    assert colours - {(0, 0, 0)} == set(SIDE_COLORS.values())
    smooth = render_pose(black, kps, RenderStyle.parse("bars,coarse,ratio,black"))
    assert _interior_colours(smooth) == set(SIDE_COLORS.values())
    # The left shin is the left colour, the right one the right colour.
    kp = kps[0]
    for j, side in ((13, "left"), (14, "right")):
        x, y = (kp[j, :2] + kp[j + 2, :2]) / 2
        assert tuple(smooth[int(round(y)), int(round(x))]) == SIDE_COLORS[side]


def test_fine_uses_a_colour_per_limb_and_joint():
    black = np.zeros((480, 480, 3), np.uint8)
    kp = person(400, 240, 30)
    out = render_pose(black, kp, RenderStyle.parse("bars,fine,ratio,black"))
    assert len(_interior_colours(out)) >= 19
    exact = {tuple(int(v) for v in c) for c in np.unique(out.reshape(-1, 3), axis=0)}
    assert set(FINE_LIMB_COLORS) <= exact  # every limb shows its own colour (face limbs: thinly)
    dots = _interior_colours(render_pose(black, kp, RenderStyle.parse("dots,fine,ratio,black")))
    assert len(dots) == 17 and not dots & set(FINE_LIMB_COLORS)


def test_black_background_is_zero_away_from_the_skeleton(frame):
    kp = person(200, 300, 30)
    out = render_pose(frame, kp, RenderStyle.parse("bars,fine,uniform,black,px=3"))
    near = np.zeros(frame.shape[:2], bool)
    for a, b in SKELETON:
        near |= _distance_to_segment(frame.shape, kp[a, :2], kp[b, :2]) <= 0.75 * 3 + 1
    assert not out[~near].any()
    assert out[near].any(axis=-1).mean() > 0.5


def test_every_style_combination_renders(frame):
    kps = np.stack([person(200, 300, 30), person(120, 120, 80, score=0.6)])
    before = frame.copy()
    combos = list(itertools.product(("dots", "bars"), ("fine", "coarse"),
                                    ("uniform", "ratio"), ("rgb", "black")))  # fmt: skip
    assert len(combos) == 16
    for marks, coloring, thickness, background in combos:
        style = RenderStyle(marks, coloring, thickness, background)
        out = render_pose(frame, kps, style)
        assert out.dtype == np.uint8 and out.shape == frame.shape and out is not frame
        drawn = (out != (frame if background == "rgb" else 0)).any(axis=-1)
        assert 100 < drawn.sum() < 0.2 * drawn.size, str(style)
        for m in range(2):  # every person's nose is drawn
            x, y = kps[m, 0, :2]
            assert drawn[int(round(y)), int(round(x))], str(style)
        if background == "rgb":
            assert np.array_equal(out[~drawn], frame[~drawn])
    assert np.array_equal(frame, before)


def test_render_segment_draws_each_frames_own_persons_by_hand():
    """Three frames of different backgrounds; track 0 (the arm of the hand-geometry tests)
    moves 4 px down per frame, track 1 (the same arm, 20 px right) is absent at frame 0."""
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (3, 17 + 8, 41, 3), dtype=np.uint8)
    kps = np.zeros((2, 3, 17, 3), np.float32)
    for t in range(3):
        kps[0, t] = _arm_keypoints(dy=4 * t)
        if t >= 1:
            kps[1, t] = _arm_keypoints(dx=20, dy=4 * t)
    before = frames.copy()
    style = RenderStyle.parse("bars,fine,uniform,rgb,px=4,aliased")
    out = render_segment(frames, kps, style)
    assert np.array_equal(frames, before)  # the input is untouched
    limb = FINE_LIMB_COLORS[ARM]
    for t in range(3):
        y = 8 + 4 * t
        assert tuple(int(v) for v in out[t, y, 10]) == limb
        assert tuple(int(v) for v in out[t, y, 5]) == FINE_JOINT_COLORS[5]
        # rows more than 3 px from the arm keep the frame's own pixels
        away = np.abs(np.arange(out.shape[1]) - y) > 3
        assert np.array_equal(out[t, away], frames[t, away])
        if t >= 1:
            assert tuple(int(v) for v in out[t, y, 30]) == limb
        else:
            assert np.array_equal(out[t, :, 19:], frames[t, :, 19:])  # track 1 absent


def test_render_segment_is_render_pose_per_frame(bikes):
    frames = decode_video(bikes, fps=25, short_side=64, start=1.0, end=1.16)
    t = len(frames)
    kps = np.zeros((2, t, 17, 3), np.float32)
    for i in range(t):
        kps[0, i] = person(50, 40 + 2 * i, 8)
        if i >= 2:
            kps[1, i] = person(40, 110, 12)  # track 1 appears at frame 2
    out = render_segment(frames, kps, DEFAULT)
    assert out.shape == frames.shape and out.dtype == np.uint8
    for i in range(t):
        assert np.array_equal(out[i], render_pose(frames[i], kps[:, i], DEFAULT))
    assert np.array_equal(out[0, :, 90:], frames[0, :, 90:])  # track 1 absent: untouched
    assert not np.array_equal(out[3, :, 90:], frames[3, :, 90:])
    with pytest.raises(ValueError, match="keypoints must be"):
        render_segment(frames, kps[:, :-1], DEFAULT)


# ------------------------------------------------------------------ style parsing


def test_parse_and_str_round_trip():
    assert str(DEFAULT) == "bars,fine,ratio,rgb"
    assert RenderStyle.parse("bars,fine,ratio,rgb") == DEFAULT
    assert RenderStyle.parse(" RGB , ratio,FINE,bars ") == DEFAULT  # order-free
    assert RenderStyle.parse("black") == RenderStyle(background="black")
    for parts in itertools.product(("dots", "bars"), ("fine", "coarse"),
                                   ("uniform", "ratio"), ("rgb", "black")):  # fmt: skip
        style = RenderStyle.parse(",".join(reversed(parts)))
        assert str(style) == ",".join(parts)
        assert RenderStyle.parse(str(style)) == style
    custom = RenderStyle("dots", "coarse", "uniform", "black", 0.5, 2.5, 0.03, False)
    assert str(custom) == "dots,coarse,uniform,black,threshold=0.5,px=2.5,ratio=0.03,aliased"
    assert RenderStyle.parse(str(custom)) == custom
    assert RenderStyle.parse("none") is None and RenderStyle.parse(None) is None
    for bad, message in (("bars,dots", "twice"), ("sticks", "unknown render token"),
                         ("width=3", "unknown render parameter"), ("px=wide", "needs a number"),
                         ("px=0", "must be > 0")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            RenderStyle.parse(bad)


# ------------------------------------------------------------------ flow colours


def _hue(rgb) -> float:
    return 360.0 * colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255.0))[0]


def test_flow_directions_map_to_the_middlebury_hues():
    flow = np.array([[[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0], [0.0, -3.0]]], np.float32)
    right, down, left, up = flow_to_color(flow)[0]
    # Values of the reference wheel (colorcode.cpp) at those angles, x right, y down.
    assert tuple(right) == (255, 0, 0)  # red
    assert tuple(down) == (255, 229, 0)  # yellow
    assert tuple(left) == (0, 209, 255)  # cyan-blue
    assert tuple(up) == (88, 0, 255)  # blue-violet
    assert _hue(down) == pytest.approx(54, abs=3) and _hue(up) == pytest.approx(261, abs=3)
    wheel = color_wheel()
    assert wheel.shape == (55, 3) and tuple(wheel[0]) == (255, 0, 0)


def test_zero_flow_is_white_and_length_is_saturation():
    assert (flow_to_color(np.zeros((4, 5, 2), np.float32)) == 255).all()
    flow = np.array([[[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]]], np.float32)
    half, full, beyond = flow_to_color(flow, max_radius=2.0)[0]
    assert tuple(half) == (255, 127, 127) and tuple(full) == (255, 0, 0)
    assert tuple(beyond) == (191, 0, 0)  # past max_radius: darkened to 75 %
    assert tuple(flow_to_color(flow)[0, 2]) == (255, 0, 0)  # default: the largest length
    nan = np.full((2, 2, 2), np.nan, np.float32)
    assert (flow_to_color(nan) == 255).all()


def test_legend_shows_the_wheel():
    legend = color_wheel_legend(65)
    assert legend.shape == (65, 65, 3) and legend.dtype == np.uint8
    assert tuple(legend[32, 32]) == (255, 255, 255)  # centre: no flow
    assert tuple(legend[32, 64]) == (255, 0, 0)  # right edge: red
    assert tuple(legend[0, 32]) == (88, 0, 255)  # top: flow up
    assert tuple(legend[0, 0]) == (255, 255, 255)  # outside the disc
