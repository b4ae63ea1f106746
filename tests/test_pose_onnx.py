"""ONNX pose models: family recognition, crop geometry per family, errors, the CUDA warning.

The geometry tests run small ONNX models built here with the ``onnx`` helpers whose
output is a known function of the crop (where its brightest red pixel is), so the
expected keypoint is where the test drew a dot in the frame: an oracle that does not
come from tristream. The BlazePose layout (landmark order, COCO-17 indices, pixel
convention) is the one ``../shared/data/README.md`` documents for the real models.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tristream.models.pose_onnx import OnnxPoseModel
from tristream.models.zoo import DEFAULT_POSE_MODEL, load_pose
from tristream.transforms.pose import PoseEstimator

# COCO-17 as BlazePose landmark indices, as ../shared/data/README.md lists them.
README_COCO_FROM_BLAZEPOSE = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
H, W = 256, 320  # frame size


def _const(name: str, values, dtype=TensorProto.INT64) -> onnx.NodeProto:
    arr = np.asarray(values)
    return helper.make_node(
        "Constant", [], [name],
        value=helper.make_tensor(name, dtype, arr.shape, arr.flatten().tolist()),
    )  # fmt: skip


def _save(path, nodes, inputs, outputs, metadata: dict | None = None) -> str:
    graph = helper.make_graph(nodes, "pose", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, k: v})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def heatmap_model(path) -> str:
    """[N, 3, 256, 192] -> heatmaps [N, 17, 64, 48]: the red channel sampled every 4th
    pixel (heatmap pixel p is input pixel 4p), the same map for every joint. Its metadata
    asks for no normalisation beyond 0..1 (mean 0, std 255)."""
    nodes = [
        _const("starts", [0, 0, 0]), _const("ends", [1, 256, 192]),
        _const("axes", [1, 2, 3]), _const("steps", [1, 4, 4]),
        helper.make_node("Slice", ["img", "starts", "ends", "axes", "steps"], ["red"]),
        _const("reps", [1, 17, 1, 1]),
        helper.make_node("Tile", ["red", "reps"], ["heatmaps"]),
    ]  # fmt: skip
    return _save(
        path, nodes,
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, 256, 192])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 17, 64, 48])],
        metadata={"mean": "0,0,0", "std": "255,255,255"},
    )  # fmt: skip


def simcc_model(path) -> str:
    """[N, 3, 256, 192] -> SimCC x [N, 17, 384] and y [N, 17, 512] (split ratio 2): the red
    channel's maximum over rows / columns, each bin repeated twice (nearest upsampling)."""
    nodes = [
        _const("starts", [0]), _const("ends", [1]), _const("axes", [1]),
        helper.make_node("Slice", ["img", "starts", "ends", "axes"], ["red"]),  # [N,1,256,192]
        _const("ax_h", [2]), _const("ax_w", [3]),
        helper.make_node("ReduceMax", ["red", "ax_h"], ["colmax"], keepdims=0),  # [N,1,192]
        helper.make_node("ReduceMax", ["red", "ax_w"], ["rowmax"], keepdims=0),  # [N,1,256]
        _const("scales", [1.0, 1.0, 2.0], TensorProto.FLOAT),
        helper.make_node("Resize", ["colmax", "", "scales"], ["x2"], mode="nearest"),
        helper.make_node("Resize", ["rowmax", "", "scales"], ["y2"], mode="nearest"),
        _const("reps", [1, 17, 1]),
        helper.make_node("Tile", ["x2", "reps"], ["simcc_x"]),
        helper.make_node("Tile", ["y2", "reps"], ["simcc_y"]),
    ]  # fmt: skip
    return _save(
        path, nodes,
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, 256, 192])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, ["N", 17, 384]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, ["N", 17, 512])],
    )  # fmt: skip


def blazepose_like_model(path) -> str:
    """[N, 256, 256, 3] RGB in [0, 1] -> ``Identity`` [N, 195] and ``Identity_1`` [N, 1].

    Landmark i is at (column + 0.5 + i, row + 0.5) of the brightest red pixel, in
    BlazePose's edge-based pixels; z 0; visibility and presence logits 3 and 2;
    person probability 0.8.
    """
    nodes = [
        _const("starts", [0]), _const("ends", [1]), _const("axes", [3]),
        helper.make_node("Slice", ["input_1", "starts", "ends", "axes"], ["red"]),  # [N,256,256,1]
        _const("ax_w", [2]), _const("ax_h", [1]),
        helper.make_node("ReduceMax", ["red", "ax_w"], ["rowmax"], keepdims=0),  # [N,256,1]
        helper.make_node("ReduceMax", ["red", "ax_h"], ["colmax"], keepdims=0),  # [N,256,1]
        helper.make_node("ArgMax", ["rowmax"], ["yi"], axis=1, keepdims=0),  # [N,1]
        helper.make_node("ArgMax", ["colmax"], ["xi"], axis=1, keepdims=0),
        helper.make_node("Cast", ["yi"], ["yf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["xi"], ["xf"], to=TensorProto.FLOAT),
        _const("zero", [0.0], TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "zero"], ["z"]),
        _const("three", [3.0], TensorProto.FLOAT), _const("two", [2.0], TensorProto.FLOAT),
        _const("p", [0.8], TensorProto.FLOAT),
        helper.make_node("Add", ["z", "three"], ["vis"]),
        helper.make_node("Add", ["z", "two"], ["pres"]),
        helper.make_node("Add", ["z", "p"], ["Identity_1"]),
        helper.make_node("Concat", ["xf", "yf", "z", "vis", "pres"], ["lm"], axis=1),  # [N,5]
        _const("reps", [1, 39]),
        helper.make_node("Tile", ["lm", "reps"], ["tiled"]),
        _const("offsets", [v for i in range(39) for v in (i + 0.5, 0.5, 0, 0, 0)],
               TensorProto.FLOAT),
        helper.make_node("Add", ["tiled", "offsets"], ["Identity"]),
    ]  # fmt: skip
    return _save(
        path, nodes,
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 256, 256, 3])],
        [helper.make_tensor_value_info("Identity", TensorProto.FLOAT, ["N", 195]),
         helper.make_tensor_value_info("Identity_1", TensorProto.FLOAT, ["N", 1])],
    )  # fmt: skip


def no_family_model(path) -> str:
    """A valid ONNX model whose output ([N, 10]) fits no pose family."""
    nodes = [_const("axes", [2, 3]), helper.make_node("ReduceMean", ["img", "axes"], ["m"],
             keepdims=0), _const("reps", [1, 4]), helper.make_node("Tile", ["m", "reps"], ["t"]),
             _const("s", [0]), _const("e", [10]), _const("a", [1]),
             helper.make_node("Slice", ["t", "s", "e", "a"], ["out"])]  # fmt: skip
    return _save(
        path, nodes,
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 10])],
    )  # fmt: skip


def _frame_with_blob(x0: float, y0: float, sigma: float) -> np.ndarray:
    """uint8 [H, W, 3]: a red Gaussian blob centred at (x0, y0) on black (0 where tiny)."""
    yy, xx = np.mgrid[0:H, 0:W]
    red = 255.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    frame = np.zeros((H, W, 3), np.uint8)
    frame[..., 0] = np.round(red).astype(np.uint8)
    return frame


def _box(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    return np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 0.9]], np.float32)


def test_heatmap_family_maps_the_peak_back_to_the_frame(tmp_path):
    model = load_pose(heatmap_model(tmp_path / "hm.onnx"), device="cpu")
    assert model.family == "heatmap" and model.input_size == (256, 192)
    assert model.layout == "NCHW" and model.mean == (0.0, 0.0, 0.0)  # from the metadata
    x0, y0 = 150.3, 120.7
    frame = _frame_with_blob(x0, y0, sigma=8.0)
    # A 153.6 x 204.8 box, enlarged 1.25x, is exactly the 192 x 256 input: 1 px = 1 px.
    kps = PoseEstimator(model, decoder="dark")(frame[None], [_box(160, 128, 153.6, 204.8)])[0]
    assert kps.shape == (1, 17, 3)
    np.testing.assert_allclose(kps[0, :, 0], x0, atol=0.3)
    np.testing.assert_allclose(kps[0, :, 1], y0, atol=0.3)
    assert (kps[0, :, 2] > 0.9).all()  # the peak height of a 0..1 map

    # Twice as large a box: the crop is zoomed out 2x and the point still lands on the blob.
    kps2 = PoseEstimator(model, decoder="dark")(frame[None], [_box(160, 128, 307.2, 409.6)])[0]
    np.testing.assert_allclose(kps2[0, :, :2], [[x0, y0]] * 17, atol=0.6)


def test_simcc_family_divides_the_argmax_by_the_split_ratio(tmp_path):
    model = load_pose(simcc_model(tmp_path / "simcc.onnx"), device="cpu")
    assert model.family == "simcc" and model.input_size == (256, 192)
    frame = np.zeros((H, W, 3), np.uint8)
    frame[97, 143] = (255, 0, 0)  # one red pixel at x=143, y=97
    # A 1:1 crop at an integer offset: the pixel lands on one input pixel exactly.
    kps = PoseEstimator(model)(frame[None], [_box(160, 128, 153.6, 204.8)])[0]
    np.testing.assert_allclose(kps[0, :, 0], 143.0, atol=1e-4)
    np.testing.assert_allclose(kps[0, :, 1], 97.0, atol=1e-4)
    assert (kps[0, :, 2] > 0).all()


def test_blazepose_layout_coco_indices_and_pixel_convention(tmp_path):
    model = load_pose(blazepose_like_model(tmp_path / "bp.onnx"), device="cpu")
    assert model.family == "blazepose" and model.layout == "NHWC"
    assert model.input_size == (256, 256)
    frame = np.zeros((H, W, 3), np.uint8)
    frame[101, 77] = (255, 0, 0)
    # A 204.8 px square box enlarged 1.25x is the 256 px input: an integer shift only.
    kps = PoseEstimator(model)(frame[None], [_box(150, 120, 204.8, 204.8)])[0][0]
    # Landmark i sits i px right of the red pixel (see the model): joint j of COCO-17 is
    # BlazePose landmark README_COCO_FROM_BLAZEPOSE[j].
    np.testing.assert_allclose(kps[:, 0], 77.0 + np.array(README_COCO_FROM_BLAZEPOSE), atol=1e-3)
    np.testing.assert_allclose(kps[:, 1], 101.0, atol=1e-3)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(kps[:, 2], sig(3.0) * sig(2.0) * 0.8, rtol=1e-5)


def test_estimator_batches_crops_across_frames_and_keeps_their_order(tmp_path):
    model = load_pose(simcc_model(tmp_path / "simcc.onnx"), device="cpu")
    frames = np.zeros((3, H, W, 3), np.uint8)
    points = [(143, 97), (60, 200), (250, 30)]
    for f, (x, y) in zip(frames, points):
        f[y, x] = (255, 0, 0)
    boxes = [
        _box(160, 128, 153.6, 204.8),
        np.zeros((0, 5), np.float32),
        np.concatenate([_box(200, 100, 153.6, 204.8), _box(220, 80, 153.6, 204.8)]),
    ]
    est = PoseEstimator(model, batch_size=2)  # three crops in two runs
    out = est(frames, boxes)
    assert [len(o) for o in out] == [1, 0, 2]
    np.testing.assert_allclose(out[0][0, 0, :2], points[0], atol=1e-4)
    np.testing.assert_allclose(out[2][:, 0, :2], [points[2], points[2]], atol=1e-4)


def test_the_packaged_default_is_blazepose_lite_and_runs_on_a_real_person(bikes):
    from tristream.models.detector import load_detector
    from tristream.models.zoo import DEFAULT_DETECTOR
    from tristream.transforms.decode import decode_video

    model = load_pose(DEFAULT_POSE_MODEL, device="cpu")
    assert model.family == "blazepose" and model.input_size == (256, 256)
    frames = np.asarray(decode_video(bikes, fps=25, short_side=256, start=1.2, end=1.28))
    boxes = load_detector(DEFAULT_DETECTOR, device="cpu")(frames[:1])
    assert len(boxes[0]) >= 1  # the man in the suit
    kps = PoseEstimator(model)(frames[:1], boxes[:1])[0]
    best = kps[int(np.argmax(kps[:, :, 2].mean(1)))]
    assert best[:, 2].mean() > 0.5
    x1, y1, x2, y2 = boxes[0][0, :4]
    inside = (best[:, 0] > x1 - 20) & (best[:, 0] < x2 + 20) & (best[:, 1] > y1 - 20)
    assert inside.all()


def test_a_file_named_onnx_that_is_not_onnx_says_what_was_expected(tmp_path):
    fake = tmp_path / "pose.onnx"
    fake.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(ValueError, match=r"pose\.onnx: not an ONNX model: expected an ONNX"):
        load_pose(fake)


def test_outputs_that_fit_no_family_say_what_was_expected(tmp_path):
    path = no_family_model(tmp_path / "other.onnx")
    with pytest.raises(ValueError, match=r"fit no pose model family; expected BlazePose"):
        load_pose(path)
    hm = heatmap_model(tmp_path / "hm.onnx")
    with pytest.raises(ValueError, match=r"--pose-format simcc does not fit its outputs"):
        load_pose(hm, pose_format="simcc")
    with pytest.raises(ValueError, match=r"flip test averages heatmaps; this is a blazepose"):
        PoseEstimator(load_pose(DEFAULT_POSE_MODEL, device="cpu"), flip_test=True)


def test_cuda_asked_for_runs_on_the_cuda_provider_or_warns_and_runs_on_the_cpu(caplog):
    import onnxruntime as ort

    with caplog.at_level(logging.WARNING):
        model = OnnxPoseModel(DEFAULT_POSE_MODEL, device="cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():  # onnxruntime-gpu
        assert model.device == "cuda" and "no CUDAExecutionProvider" not in caplog.text
    else:  # the CPU wheel (this project's default install)
        assert model.device == "cpu"
        assert "no CUDAExecutionProvider" in caplog.text and "pose model" in caplog.text


def test_cli_rejects_a_bad_pose_model_before_any_work(tmp_path, bikes):
    fake = tmp_path / "pose.onnx"
    fake.write_text("not a model")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "tristream.cli", "run", "--input", bikes, "--output", str(out),
         "--persons", "--pose-model", str(fake), "--flow", "none"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # an input error, as for any bad argument
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not an ONNX model" in lines[0], proc.stderr
    assert not (out / "cache").exists()
