"""Person detection: the real YOLOX-nano ONNX model on real frames, and detector loading."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tristream.models.common import nms
from tristream.models.detector import (
    TorchScriptDetector,
    YoloxOnnxDetector,
    decode_yolox,
    letterbox,
    load_detector,
)
from tristream.transforms.decode import decode_video

# bikes.mp4 at 25 fps: frame 0 is an empty road seen from above, frame 30 a man in a suit
# (upper body, most of the frame height), frame 120 a cyclist.
EMPTY, SUIT, CYCLIST = 0, 30, 120


@pytest.fixture(scope="module")
def yolox_path(data_dir):
    return data_dir / "models" / "yolox_nano_416x416.onnx"


@pytest.fixture(scope="module")
def detector(yolox_path):
    return load_detector(yolox_path, device="cpu")


@pytest.fixture(scope="module")
def frames(bikes):
    """uint8 [3, 256, 602, 3] RGB: frames EMPTY, SUIT, CYCLIST."""
    video = decode_video(bikes, fps=25, short_side=256, start=None, end=None)
    return np.ascontiguousarray(video[[EMPTY, SUIT, CYCLIST]])


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_real_yolox_finds_the_people_in_bikes(detector, frames):
    assert isinstance(detector, YoloxOnnxDetector)
    assert detector.input_size == (416, 416) and detector.model_batch == 1
    assert detector.device == "cpu"
    out = detector(frames)
    assert len(out) == 3 and all(o.dtype == np.float32 and o.shape[1:] == (5,) for o in out)
    h, w = frames.shape[1:3]
    for i in (1, 2):  # the man in the suit, the cyclist
        boxes = out[i]
        assert len(boxes) >= 1
        assert (np.diff(boxes[:, 4]) <= 0).all()  # sorted by score
        assert (boxes[:, 4] >= 0.3).all()  # the default score threshold
        assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w).all()
        assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h).all()
        x1, y1, x2, y2, score = boxes[0]
        bw, bh = x2 - x1, y2 - y1
        assert score > 0.7
        assert 0.7 * h < bh <= h  # a person filling most of the frame height
        assert 0.15 * w < bw < 0.6 * w and bh > bw  # upright
    # the cyclist is in the right half of the frame, the man in the suit in the left half
    assert (out[2][0, 0] + out[2][0, 2]) / 2 > w / 2 > (out[1][0, 0] + out[1][0, 2]) / 2
    assert len(out[0]) == 0  # empty road


def test_frames_of_nobody_give_no_box(detector, frames):
    grey = np.full((2, 256, 602, 3), 128, np.uint8)
    road = np.ascontiguousarray(frames[0:1, :, 100:400])  # a crop of the empty road
    assert [len(b) for b in detector(grey)] == [0, 0]
    assert len(detector(road)[0]) == 0
    assert detector(np.zeros((0, 64, 64, 3), np.uint8)) == []


def test_batch_gives_the_same_boxes_as_single_frames(detector, frames):
    batch = detector(frames)
    for i in range(len(frames)):
        assert np.array_equal(detector(frames[i : i + 1])[0], batch[i])


def test_boxes_map_back_through_the_letterbox(detector, frames):
    """The same frame at 2x (and shifted by top padding) gives the same boxes in frame px."""
    for f in frames[1:]:
        h, w = f.shape[:2]
        base = detector(f[None])[0]
        big = cv2.resize(f, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
        scaled = detector(big[None])[0]
        assert len(scaled) == len(base)
        # measured: within 1.5 px (of 602 x 256) for every box
        assert np.abs(scaled[:, :4] / 2 - base[:, :4]).max() < 4.0
        top = 46  # grey rows on top: the network sees the same content shifted down
        padded = np.full((h + top, w, 3), 114, np.uint8)
        padded[top:] = f
        shifted = detector(padded[None])[0]
        back = shifted[0, :4] - [0, top, 0, top]
        assert iou(back, base[0]) > 0.95
        assert np.abs(back - base[0, :4]).max() < 6.0  # measured: 4.5 px


def test_rgb_frames_are_fed_to_yolox_as_bgr_letterboxed_by_hand(detector, frames):
    """256 x 602 frame into 416 x 416: r = min(416 / 256, 416 / 602) = 416 / 602; the
    resized frame is int(602 r) x int(256 r) = 416 x 176 (W x H), top-left (YOLOX
    ``preproc``), rows 176.. are padding 114; channels BGR, values 0..255."""
    f = frames[1]
    assert f.shape == (256, 602, 3)
    batch, r = detector.preprocess(frames[1:2])
    assert r == pytest.approx(416 / 602) and batch.shape == (1, 3, 416, 416)
    resized = cv2.resize(f, (416, 176), interpolation=cv2.INTER_LINEAR)  # RGB, W x H
    bgr_planes = resized[..., ::-1].transpose(2, 0, 1).astype(np.float32)
    assert np.array_equal(batch[0, :, :176], bgr_planes)
    assert (batch[0, :, 176:] == 114).all()


@pytest.mark.parametrize(
    "hw,r,content_hw",
    [
        ((100, 200), 2.08, (208, 416)),  # landscape, upscaled: r = min(4.16, 2.08)
        ((300, 150), 416 / 300, (416, 208)),  # portrait: int(150 * 1.3867) = 208 columns
        ((832, 500), 0.5, (416, 250)),  # downscaled: r = min(0.5, 0.832)
    ],
)
def test_letterbox_is_top_left_with_grey_padding(hw, r, content_hw):
    h, w = hw
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    canvas, ratio = letterbox(frame, (416, 416))
    assert ratio == pytest.approx(r) and canvas.shape == (416, 416, 3)
    ch, cw = content_hw
    expected = cv2.resize(frame, (cw, ch), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(canvas[:ch, :cw], expected)
    assert (canvas[ch:] == 114).all() and (canvas[:, cw:] == 114).all()


def test_boxes_map_back_to_frame_pixels_by_hand(detector, monkeypatch):
    """Raw YOLOX rows written by hand -> boxes in frame pixels (the network is bypassed).

    Frame 256 x 602, so r = 416 / 602 canvas px per frame px.
    Row A, stride 8, cell (gx 10, gy 5), offsets (0.5, 0.5), size exp(ln 4, ln 8) * 8 = 32 x 64:
      canvas centre (84, 44), box (68, 12, 100, 76) -> frame px x 602 / 416.
    Row B, stride 32, cell (gx 12, gy 0), offsets (0.5, 0.5), size exp(ln 2, ln 1) * 32:
      canvas centre (400, 16), box (368, 0, 432, 32) -> frame (532.54, 0, 625.15, 46.31),
      x2 clipped to the frame width 602.
    Row C: objectness 0.5 x person 0.5 = 0.25 < 0.3, dropped.
    """
    raw = np.zeros((1, 3549, 85), np.float32)
    a = 52 * 5 + 10
    raw[0, a, :6] = [0.5, 0.5, np.log(4.0), np.log(8.0), 1.0, 0.9]
    b = 52 * 52 + 26 * 26 + 13 * 0 + 12
    raw[0, b, :6] = [0.5, 0.5, np.log(2.0), 0.0, 0.8, 1.0]
    c = 52 * 30 + 30
    raw[0, c, :6] = [0.5, 0.5, 1.0, 1.0, 0.5, 0.5]
    monkeypatch.setattr(detector, "raw", lambda batch: raw[: len(batch)])
    out = detector(np.zeros((1, 256, 602, 3), np.uint8))[0]
    k = 602 / 416
    expected = [
        [68 * k, 12 * k, 100 * k, 76 * k, 0.9],
        [368 * k, 0.0, 602.0, 32 * k, 0.8],
    ]
    assert np.allclose(out, expected, atol=1e-3)
    assert np.allclose(out[0, :4], [98.404, 17.365, 144.712, 109.981], atol=1e-3)


def test_grid_decoding_follows_yolox():
    raw = np.zeros((3549, 85), np.float32)
    raw[52 * 3 + 5, :4] = [0.5, 0.25, np.log(2.0), 0.0]  # stride 8, cell (gx 5, gy 3)
    raw[52 * 52 + 26 * 26 + 13 * 12 + 12, :2] = [0.5, 0.5]  # stride 32, last cell
    dec = decode_yolox(raw, (416, 416))
    assert dec[52 * 3 + 5, :4].tolist() == [(5 + 0.5) * 8, (3 + 0.25) * 8, 16.0, 8.0]
    assert dec[-1, :4].tolist() == [12.5 * 32, 12.5 * 32, 32.0, 32.0]
    with pytest.raises(ValueError, match="3549"):
        decode_yolox(raw[:100], (416, 416))


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]], float)
    scores = np.array([0.5, 0.9, 0.3, 0.4])
    assert nms(boxes, scores, 0.45).tolist() == [1, 3, 2]  # IoU(1, 0) = 0.68; (3, 1) = 0.35


def test_files_that_are_not_detectors_give_a_clear_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"notes\.txt: not a detector model: expected an ONNX"):
        load_detector(text)
    state = tmp_path / "weights.pth"  # a torch.save zip, but not TorchScript
    torch.save({"w": torch.zeros(2)}, state)
    with pytest.raises(ValueError, match=r"weights\.pth: not a detector model.*TorchScript"):
        load_detector(state)
    fake = tmp_path / "broken.onnx"  # starts like ONNX, is not
    fake.write_bytes(b"\x08\x07" + b"\xff" * 64)
    with pytest.raises(ValueError, match=r"broken\.onnx: onnxruntime cannot load"):
        load_detector(fake)
    with pytest.raises(FileNotFoundError):
        load_detector(tmp_path / "missing.onnx")


def test_cuda_request_without_cuda_provider_falls_back_to_cpu(yolox_path, caplog):
    import onnxruntime as ort

    with caplog.at_level("WARNING"):
        det = YoloxOnnxDetector(yolox_path, device="cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert det.device == "cuda"
    else:
        assert det.device == "cpu" and "CUDAExecutionProvider" in caplog.text


class FixedBoxes(torch.nn.Module):
    """A TorchScript detector stand-in: per image, boxes scaled to the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        rel = torch.tensor(
            [
                [0.1, 0.1, 0.3, 0.9, 0.6, 0.0],  # person
                [0.5, 0.2, 0.7, 0.8, 0.9, 0.0],  # person, higher score
                [0.4, 0.4, 0.6, 0.6, 0.95, 2.0],  # a car
                [0.8, 0.5, 1.2, 0.9, 0.4, 0.0],  # person, partly outside: clipped
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # padding
            ]
        )
        scale = torch.tensor([float(w), float(h), float(w), float(h), 0.0, 1.0])
        out = (rel * scale).unsqueeze(0).repeat(b, 1, 1)
        # each image's brightness scales its scores: shows that the input arrives as 0..255
        out[:, :, 4] = rel[:, 4] * (x.mean(dim=(1, 2, 3)) / 255.0).unsqueeze(1)
        return out


def test_torchscript_detector_contract(tmp_path):
    path = tmp_path / "det.pt"
    torch.jit.save(torch.jit.script(FixedBoxes()), str(path))
    det = load_detector(path, device="cpu", score_threshold=0.3)
    assert isinstance(det, TorchScriptDetector)
    frames = np.full((2, 100, 200, 3), 255, np.uint8)
    frames[1] = 0  # a black frame: every score 0 -> nothing
    out = det(frames)
    assert out[1].shape == (0, 5)
    assert np.allclose(
        out[0],
        [[100, 20, 140, 80, 0.9], [20, 10, 60, 90, 0.6], [160, 50, 200, 90, 0.4]],
        atol=1e-4,
    )
