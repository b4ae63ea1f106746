"""Independent reference computations for tests: plain ffmpeg CLI and plain OpenCV.

Nothing here calls tristream, so tests can compare tristream's output with it.
"""

from __future__ import annotations

import os
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
#: The distribution's ffmpeg (Debian's 5.1 here; `.ci/run` installs it) and its ffprobe.
#: Decode tests run under it and under the wheel's :data:`FFMPEG` (which has no ffprobe).
SYSTEM_FFMPEG = os.environ.get("TRISTREAM_SYSTEM_FFMPEG", "/usr/bin/ffmpeg")
SYSTEM_FFPROBE = os.path.join(os.path.dirname(SYSTEM_FFMPEG), "ffprobe")


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg binary with ``args`` (quiet, overwriting); raise on failure."""
    subprocess.run([FFMPEG, "-y", "-nostdin", "-loglevel", "error", *args], check=True)


def reference_frames(
    path: str, fps: float, height: int, width: int, vf_extra: str = ""
) -> np.ndarray:
    """Decode with the ffmpeg CLI to uint8 [T, height, width, 3] RGB (fps, bilinear scale)."""
    vf = f"fps={fps},scale={width}:{height}:flags=bilinear{vf_extra}"
    out = subprocess.run(
        [FFMPEG, "-nostdin", "-loglevel", "error", "-i", path, "-vf", vf,
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


def ffmpeg_scale_minus2_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) that ffmpeg's ``scale=-2:S`` (``S:-2`` when portrait) gives a frame.

    Runs the wheel's ffmpeg on one synthetic ``width`` x ``height`` test frame
    and reads the size from the PPM header it writes.
    """
    vf = f"scale=-2:{short_side}" if width >= height else f"scale={short_side}:-2"
    out = subprocess.run(
        [FFMPEG, "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", f"testsrc=size={width}x{height}:rate=1", "-frames:v", "1", "-vf", vf,
         "-f", "image2pipe", "-vcodec", "ppm", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    magic, w, h = out.split(maxsplit=3)[:3]
    assert magic == b"P6"
    return int(w), int(h)


def reference_flow(frames: np.ndarray) -> np.ndarray:
    """OpenCV DualTVL1 at its defaults on the gray frames: float32 [T-1, H, W, 2]."""
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([tvl1.calc(a, b, None) for a, b in zip(gray[:-1], gray[1:])])


def make_clip(src: str, dst: str, *args: str) -> str:
    """Cut/re-encode a real video with extra ffmpeg output ``args``; return ``dst``."""
    ffmpeg("-i", src, *args, dst)
    return dst


def jpeg_round_trip(frames: np.ndarray, quality: int = 95) -> np.ndarray:
    """Each RGB frame through OpenCV's JPEG encoder and decoder at ``quality``."""
    out = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return np.stack(out)
