"""Progress on long work: frames are counted as ffmpeg delivers them, not when a video ends."""

from __future__ import annotations

import re

from tristream.config import RunConfig
from tristream.pipeline import progress
from tristream.pipeline.run import run
from tristream.process import Models, VideoTask, process_video
from tristream.transforms.decode import decode_segments


def test_decode_reports_each_frame_as_it_arrives(carphone):
    seen: list[int] = []
    count = [0]

    def on_frame() -> None:
        count[0] += 1

    segments = decode_segments(carphone, short_side=32, max_frames=40, end=2.0, on_frame=on_frame)
    for seg in segments:
        seen.append(count[0])
        # Every frame of this segment was reported before the segment left, the
        # shared first frame only once (it was reported with the previous segment).
        assert count[0] == seg.start_frame + len(seg.frames)
    assert len(seen) == 2 and count[0] == 50  # 2 s at 25 fps: 40 + 11 (one shared)


def test_process_video_reports_frames_before_its_first_row(bikes, tmp_path):
    config = RunConfig(output=str(tmp_path), input=bikes, short_side=32, max_frames=300,
                       flow="none")  # fmt: skip
    calls: list[int] = []
    rows = process_video(VideoTask("bikes", bikes, "train", end=2.0), config, Models(config),
                         on_frames=calls.append)  # fmt: skip
    first = next(rows)
    assert calls == [1] * 50 and first.num_frames == 50  # one 50-frame segment
    assert next(rows, None) is None


def test_a_run_shows_frames_and_frames_per_second(carphone, tmp_path, monkeypatch, capsys):
    real_start = progress.start
    monkeypatch.setattr(progress, "start", lambda n, enabled=None: real_start(n, enabled=True))
    config = RunConfig(output=str(tmp_path), input=carphone, short_side=32, flow="none",
                       workers=1)  # fmt: skip
    run(config)
    err = capsys.readouterr().err
    frames = [int(n) for n in re.findall(r"decoded: (\d+)frame", err)]
    assert frames and frames[-1] == 100  # carphone: 4 s at 25 fps
    assert re.search(r"decoded: 100frame \[[^\]]*frame/s\]", err)
    assert re.search(r"1/1 \[[^\]]*failed=0\]", err)
