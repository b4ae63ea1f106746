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


def test_rgb_frames_are_fed_to_yolox_as_bgr(detector, frames):
    batch, r = detector.preprocess(frames[1:2])
    canvas, r2 = letterbox(frames[1][..., ::-1], (416, 416))
    assert r == r2 and np.array_equal(batch[0], canvas.transpose(2, 0, 1).astype(np.float32))


def test_letterbox_is_top_left_with_grey_padding():
    frame = np.full((100, 200, 3), 7, np.uint8)
    canvas, r = letterbox(frame, (416, 416))
    assert r == pytest.approx(2.08) and canvas.shape == (416, 416, 3)
    assert (canvas[:208, :416] == 7).all() and (canvas[208:] == 114).all()


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
