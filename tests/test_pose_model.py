"""PoseResNet architecture and checkpoint loading (official, mmpose, TorchScript layouts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tristream.models.pose_resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PoseModel,
    PoseResNet,
    infer_depth,
    load_pose_model,
)
from tristream.transforms.pose import PoseEstimator, box_to_center_scale

IN_H, IN_W = 128, 96  # small 4:3 input (multiples of 32: the ResNet downsamples by 32)


def random_model(depth: int, seed: int = 0) -> PoseResNet:
    """PoseResNet with random weights *and* random BN statistics (so buffers matter)."""
    torch.manual_seed(seed)
    model = PoseResNet(depth)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def mmpose_layout(sd: dict) -> dict:
    """Our (official) names -> mmpose 1.x names: backbone.* and head.*."""
    out = {}
    for k, v in sd.items():
        head = k.startswith(("deconv_layers.", "final_layer."))
        out[("head." if head else "backbone.") + k] = v
    return out


@pytest.fixture(scope="module", params=[18, 50])
def model_and_input(request):
    model = random_model(request.param)
    x = torch.randn(2, 3, IN_H, IN_W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    return request.param, model, x, ref


def _out(pm: PoseModel, x: torch.Tensor) -> torch.Tensor:
    return pm(x.to(pm.device)).cpu()


def test_output_shape(model_and_input):
    depth, model, x, ref = model_and_input
    assert ref.shape == (2, 17, IN_H // 4, IN_W // 4)
    if depth == 18:
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 256, 192)).shape == (1, 17, 64, 48)


def test_official_mmpose_and_torchscript_layouts_load_to_identical_outputs(
    model_and_input, tmp_path
):
    depth, model, x, ref = model_and_input
    sd = model.state_dict()
    files = {
        "official-module": {"state_dict": {"module." + k: v for k, v in sd.items()}},
        "mmpose": {"state_dict": mmpose_layout(sd), "meta": {"epoch": 210}},
    }
    if depth == 18:  # each ResNet-50 copy is 136 MB: keep the list short for it
        files["official-bare"] = sd
        files["official-nested"] = {"state_dict": sd, "epoch": 140}
        mm0 = {k.replace("head.", "keypoint_head."): v for k, v in mmpose_layout(sd).items()}
        files["mmpose-0.x"] = {"state_dict": mm0}
        no_bn_count = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        files["pytorch-0.4"] = no_bn_count  # the 2018 official files lack these buffers
    for name, obj in files.items():
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        pm = load_pose_model(path, device="cpu")
        assert pm.depth == depth, name  # inferred from the keys
        assert pm.source == ("mmpose" if name.startswith("mmpose") else "official"), name
        assert pm.input_size == (256, 192) and pm.heatmap_stride == 4
        assert pm.mean == IMAGENET_MEAN and pm.std == IMAGENET_STD
        assert pm.channel_order == "RGB" and pm.num_joints == 17
        assert torch.equal(_out(pm, x), ref), name
        path.unlink()
    if depth == 18:
        ts = tmp_path / "traced.pt"
        torch.jit.save(torch.jit.trace(model, x, check_trace=False), str(ts))
        pm = load_pose_model(ts, device="cpu")
        assert pm.source == "torchscript" and pm.input_size == (256, 192)
        assert torch.allclose(_out(pm, x), ref, atol=1e-5)


def test_explicit_depth_must_fit(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(PoseResNet(18).state_dict(), path)
    with pytest.raises(ValueError, match=r"missing keys: \[.*layer1\.0\.conv3"):
        load_pose_model(path, device="cpu", depth=50)
    assert load_pose_model(path, device="cpu", depth=18).depth == 18


def test_mmpose_metadata_needs_trust_and_gives_input_size_and_normalisation(tmp_path):
    model = random_model(18)
    sd = mmpose_layout(model.state_dict())
    sd["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    sd["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    cfg = "codec = dict(type='MSRAHeatmap', input_size=(288, 384), heatmap_size=(72, 96))"
    path = tmp_path / "mm.pth"
    torch.save({"state_dict": sd, "meta": {"cfg": cfg, "sigmas": np.ones(17)}}, path)
    with pytest.raises(ValueError, match="trust_checkpoint=True"):
        load_pose_model(path, device="cpu")
    pm = load_pose_model(path, device="cpu", trust_checkpoint=True)
    assert pm.source == "mmpose" and pm.input_size == (384, 288)
    assert np.allclose(pm.mean, IMAGENET_MEAN, atol=1e-4)
    assert np.allclose(pm.std, IMAGENET_STD, atol=1e-4)
    # The command line offers what the message names: without the flag the run stops at
    # start (exit 2, nothing written), with it the checkpoint loads.
    from tristream.config import RunConfig
    from tristream.process import check_files

    options = dict(output=str(tmp_path / "o"), input=str(tmp_path), pose_model=str(path))
    with pytest.raises(ValueError, match="give --trust-checkpoint"):
        check_files(RunConfig.from_options(**options))
    check_files(RunConfig.from_options(**options, trust_checkpoint=True))


def test_other_architectures_fail_with_missing_and_unexpected_keys(tmp_path):
    # a ResNet-18 classifier: backbone present, pose head missing, fc unexpected
    cls = PoseResNet(18).state_dict()
    cls = {k: v for k, v in cls.items() if not k.startswith(("deconv", "final"))}
    cls["fc.weight"], cls["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "classifier.pth"
    torch.save(cls, path)
    with pytest.raises(ValueError) as err:
        load_pose_model(path, device="cpu")
    msg = str(err.value)
    assert "classifier.pth" in msg and "missing keys: [deconv_layers.0.weight" in msg
    assert "unexpected keys: [fc.bias, fc.weight]" in msg
    # something else entirely
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).state_dict()
    path = tmp_path / "other.pth"
    torch.save({"state_dict": other}, path)
    with pytest.raises(ValueError, match=r"missing keys: \[.*conv1\.weight.*unexpected keys: \[0"):
        load_pose_model(path, device="cpu")
    # not a checkpoint at all
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt: not a torch checkpoint"):
        load_pose_model(path, device="cpu")


def test_infer_depth_from_keys():
    for depth in (18, 34, 50, 101, 152):
        with torch.device("meta"):
            keys = PoseResNet(depth).state_dict()
        assert infer_depth(keys) == depth


@pytest.mark.parametrize(
    "depth,millions", [(50, 34.0), (101, 53.0), (152, 68.6), (18, 15.4), (34, 25.5)]
)
def test_parameter_counts_match_simple_baselines(depth, millions):
    """Xiao et al. 2018, Table 2 (256x192): ResNet-50 34.0M, -101 53.0M, -152 68.6M
    parameters; 18/34 are this code's own figures (ResNet without fc + the same head)."""
    with torch.device("meta"):
        model = PoseResNet(depth)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == millions


def test_architecture_details():
    model = PoseResNet(50)
    deconvs = [m for m in model.deconv_layers if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 3 and len(model.deconv_layers) == 9
    for d in deconvs:
        assert d.kernel_size == (4, 4) and d.stride == (2, 2) and d.padding == (1, 1)
        assert d.output_padding == (0, 0) and d.bias is None and d.out_channels == 256
    assert model.final_layer.kernel_size == (1, 1) and model.final_layer.out_channels == 17
    assert model.layer1[0].conv2.stride == (1, 1) and model.layer2[0].conv2.stride == (2, 2)
    with pytest.raises(ValueError, match="depth must be one of"):
        PoseResNet(26)


def test_preprocess_is_imagenet_normalisation_of_rgb():
    pm = PoseModel.from_module(PoseResNet(18), device="cpu")
    crops = torch.randint(0, 256, (2, IN_H, IN_W, 3), dtype=torch.uint8)
    x = pm.preprocess(crops)
    # The published ImageNet statistics, written out: not the module's own constants.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    ref = (crops.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert x.shape == (2, 3, IN_H, IN_W) and torch.allclose(x, ref, atol=1e-6)
    pm.channel_order = "BGR"
    assert torch.allclose(pm.preprocess(crops)[:, 0], ((crops[..., 2] / 255 - 0.485) / 0.229))


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_estimator_runs_a_real_pose_resnet_on_real_frames(bikes, dtype):
    """Random weights: only shapes, finiteness and 'inside the crop' can be checked."""
    from tristream.transforms.decode import decode_video

    frames = decode_video(bikes, fps=25, short_side=128, start=1.2, end=1.28)[:2]
    pm = PoseModel.from_module(random_model(18), device="cpu", input_size=(IN_H, IN_W))
    est = PoseEstimator(pm, decoder="dark", flip_test=True, batch_size=2, dtype=dtype)
    boxes = [np.array([[60, 5, 160, 125, 0.9], [10, 60, 50, 120, 0.4]]), np.zeros((0, 5))]
    out = est(frames, boxes)
    assert [o.shape for o in out] == [(2, 17, 3), (0, 17, 3)]
    kp = out[0]
    assert np.isfinite(kp).all()
    # every keypoint lies inside the crop region (the box widened to 3:4, then x1.25)
    centers, scales = box_to_center_scale(boxes[0], IN_W / IN_H)
    lo, hi = centers - scales / 2, centers + scales / 2
    assert ((kp[..., :2] >= lo[:, None] - 1e-3) & (kp[..., :2] <= hi[:, None] + 1e-3)).all()
