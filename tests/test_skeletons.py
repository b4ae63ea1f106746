"""mmaction2 / PYSKL 2D skeleton pickles: round trips, both layouts, rescaling, bad files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from tristream.transforms.skeletons import (
    SkeletonAnnotation,
    SkeletonFileError,
    load_skeletons,
    rescale_keypoints,
    save_skeletons,
    slice_for_segment,
    to_annotation,
)


def _keypoints(m=2, t=6, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kps = np.empty((m, t, 17, 3), np.float32)
    kps[..., 0] = rng.uniform(0, 340, (m, t, 17))
    kps[..., 1] = rng.uniform(0, 256, (m, t, 17))
    kps[..., 2] = rng.uniform(0.1, 1, (m, t, 17))
    kps[-1, -2:] = 0  # the last person is absent at the last two frames
    return kps


def _pyskl_file(path, v=17, drop=(), layout="dict"):
    """A skeleton pickle written with plain pickle / numpy, the way PYSKL's files look."""
    rng = np.random.default_rng(1)
    anns = []
    for i, (m, t) in enumerate([(1, 5), (3, 4)]):
        ann = {
            "frame_dir": f"S001C001P001R001A{i:03d}",
            "label": i + 7,
            "img_shape": (1080, 1920),
            "original_shape": (1080, 1920),
            "total_frames": t,
            "keypoint": rng.uniform(0, 1000, (m, t, v, 2)).astype(np.float16),
            "keypoint_score": rng.uniform(0, 1, (m, t, v)).astype(np.float16),
        }
        for k in drop:
            ann.pop(k)
        anns.append(ann)
    obj = {"split": {"xsub_train": [anns[0]["frame_dir"]],
                     "xsub_val": [anns[1]["frame_dir"]]},
           "annotations": anns} if layout == "dict" else anns  # fmt: skip
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return anns


def test_round_trip_gives_identical_arrays(tmp_path):
    a, b = _keypoints(2, 6, 0), _keypoints(3, 9, 1)
    path = tmp_path / "skel.pkl"
    anns = [
        to_annotation("vid/a", a, (256, 340), label=3),
        to_annotation("vid/b", b, (256, 455), original_shape=(720, 1280)),
    ]
    save_skeletons(path, anns)
    assert sorted(os.listdir(tmp_path)) == ["skel.pkl"]  # no temporary left behind
    loaded = load_skeletons(path)
    assert list(loaded) == ["vid/a", "vid/b"]
    la, lb = loaded["vid/a"], loaded["vid/b"]
    assert la.keypoints.dtype == np.float32 and la.keypoints.shape == (2, 6, 17, 3)
    np.testing.assert_array_equal(la.keypoints, a)
    np.testing.assert_array_equal(lb.keypoints, b)
    assert (la.label, la.img_shape, la.original_shape) == (3, (256, 340), (256, 340))
    assert (lb.label, lb.img_shape, lb.original_shape) == (None, (256, 455), (720, 1280))
    assert la.splits == () and (la.num_persons, la.total_frames) == (2, 6)

    # saving the loaded objects again reproduces them exactly
    path2 = tmp_path / "again.pkl"
    save_skeletons(path2, loaded.values())
    again = load_skeletons(path2)
    for k in loaded:
        np.testing.assert_array_equal(again[k].keypoints, loaded[k].keypoints)
        assert again[k].img_shape == loaded[k].img_shape and again[k].label == loaded[k].label


def test_both_layouts_are_written_and_read(tmp_path):
    a = _keypoints(1, 4)
    anns = [to_annotation("x", a, (256, 256), 0), to_annotation("y", a, (256, 256), 1)]
    save_skeletons(tmp_path / "list.pkl", anns)
    save_skeletons(tmp_path / "dict.pkl", anns, split={"train": ["x"], "val": ["y", "x"]})
    with open(tmp_path / "list.pkl", "rb") as f:
        raw_list = pickle.load(f)
    with open(tmp_path / "dict.pkl", "rb") as f:
        raw_dict = pickle.load(f)
    assert isinstance(raw_list, list) and len(raw_list) == 2
    assert set(raw_dict) == {"split", "annotations"}
    assert raw_dict["split"] == {"train": ["x"], "val": ["y", "x"]}
    # the on-disk annotation is the mmaction2 / PYSKL dict
    ann = raw_list[0]
    assert set(ann) == {"frame_dir", "label", "img_shape", "original_shape", "total_frames",
                        "keypoint", "keypoint_score"}  # fmt: skip
    assert ann["keypoint"].shape == (1, 4, 17, 2) and ann["keypoint_score"].shape == (1, 4, 17)
    assert ann["total_frames"] == 4 and ann["img_shape"] == (256, 256)
    np.testing.assert_array_equal(ann["keypoint_score"], a[..., 2])

    from_list, from_dict = (
        load_skeletons(tmp_path / "list.pkl"),
        load_skeletons(tmp_path / "dict.pkl"),
    )
    assert from_list["x"].splits == () and from_dict["x"].splits == ("train", "val")
    assert from_dict["y"].splits == ("val",)
    np.testing.assert_array_equal(from_list["y"].keypoints, from_dict["y"].keypoints)


@pytest.mark.parametrize("layout", ["dict", "list"])
def test_an_independently_written_pyskl_pickle_loads(tmp_path, layout):
    anns = _pyskl_file(tmp_path / "ntu.pkl", layout=layout)
    loaded = load_skeletons(tmp_path / "ntu.pkl")
    assert list(loaded) == [a["frame_dir"] for a in anns]
    for ann in anns:
        s = loaded[ann["frame_dir"]]
        assert s.keypoints.shape == (*ann["keypoint"].shape[:3], 3)
        assert s.keypoints.dtype == np.float32
        np.testing.assert_array_equal(s.keypoints[..., :2], ann["keypoint"].astype(np.float32))
        np.testing.assert_array_equal(s.keypoints[..., 2], ann["keypoint_score"].astype(np.float32))
        assert s.label == ann["label"] and s.img_shape == (1080, 1920)
    if layout == "dict":
        assert loaded[anns[0]["frame_dir"]].splits == ("xsub_train",)
        assert loaded[anns[1]["frame_dir"]].splits == ("xsub_val",)


def test_a_numpy_1_protocol_0_pickle_loads(tmp_path):
    """Older files name numpy.core (numpy 1.x) and may use the text protocol."""
    kps = _keypoints(1, 3)
    raw = pickle.dumps([to_annotation("old", kps, (240, 320), 2)], protocol=0)
    raw = raw.replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in raw
    (tmp_path / "old.pkl").write_bytes(raw)
    np.testing.assert_array_equal(load_skeletons(tmp_path / "old.pkl")["old"].keypoints, kps)


def test_rescaling_and_segment_slices():
    kps = _keypoints(2, 6)
    out = rescale_keypoints(kps, (256, 340), (128, 680))
    seen = kps[..., 2] > 0
    # Pixel centres at integers: the frame's edges (-0.5 and size - 0.5) map onto each other.
    np.testing.assert_allclose(out[..., 0][seen], (kps[..., 0][seen] + 0.5) * 2 - 0.5, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1][seen], (kps[..., 1][seen] + 0.5) / 2 - 0.5, rtol=1e-6)
    np.testing.assert_array_equal(out[..., 2], kps[..., 2])
    assert not out[-1, -2:].any()  # absent joints stay zeros
    np.testing.assert_allclose(
        rescale_keypoints(out, (128, 680), (256, 340)), kps, rtol=1e-5, atol=1e-4
    )
    edges = np.array([[-0.5, -0.5], [339.5, 255.5]], np.float32)  # a 256x340 frame's corners
    np.testing.assert_allclose(
        rescale_keypoints(edges, (256, 340), (128, 680)), [[-0.5, -0.5], [679.5, 127.5]]
    )
    assert rescale_keypoints(kps[..., :2], (10, 10), (20, 30)).shape == (2, 6, 17, 2)
    with pytest.raises(ValueError):
        rescale_keypoints(kps, (0, 10), (10, 10))

    ann = SkeletonAnnotation("v", kps, (256, 340), (256, 340), 1)
    np.testing.assert_array_equal(slice_for_segment(ann, 2, 3), kps[:, 2:5])
    tail = slice_for_segment(ann, 4, 5)  # frames 4..8: 6..8 are past the end
    assert tail.shape == (2, 5, 17, 3)
    np.testing.assert_array_equal(tail[:, :2], kps[:, 4:6])
    assert not tail[:, 2:].any()
    doubled = slice_for_segment(ann, 1, 2, to_shape=(512, 680))
    src = kps[:, 1:3]
    seen = src[..., 2] > 0
    np.testing.assert_allclose(doubled[seen][:, :2], (src[seen][:, :2] + 0.5) * 2 - 0.5, rtol=1e-6)
    assert slice_for_segment(ann, 10, 2).shape == (2, 2, 17, 3)
    with pytest.raises(ValueError):
        slice_for_segment(ann, -1, 2)


def test_bad_files_give_clear_errors(tmp_path):
    _pyskl_file(tmp_path / "ntu25.pkl", v=25)
    with pytest.raises(SkeletonFileError, match=r"V=25.*COCO-17"):
        load_skeletons(tmp_path / "ntu25.pkl")

    _pyskl_file(tmp_path / "nokeys.pkl", drop=("keypoint_score", "img_shape"))
    with pytest.raises(
        SkeletonFileError, match=r"S001C001P001R001A000.*\['img_shape', 'keypoint_score'\]"
    ):
        load_skeletons(tmp_path / "nokeys.pkl")

    (tmp_path / "text.pkl").write_text("frame_dir,label\nabc,1\n")
    with pytest.raises(SkeletonFileError, match="not a readable pickle"):
        load_skeletons(tmp_path / "text.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(SkeletonFileError, match="not a readable pickle"):
        load_skeletons(tmp_path / "empty.pkl")

    with open(tmp_path / "other.pkl", "wb") as f:
        pickle.dump({"videos": []}, f)
    with pytest.raises(SkeletonFileError, match="'annotations'"):
        load_skeletons(tmp_path / "other.pkl")

    ann = to_annotation("v", _keypoints(1, 4), (10, 10))
    ann["total_frames"] = 5
    with open(tmp_path / "frames.pkl", "wb") as f:
        pickle.dump([ann], f)
    with pytest.raises(SkeletonFileError, match="total_frames=5"):
        load_skeletons(tmp_path / "frames.pkl")

    # a pickle that would run code is refused unless trusted
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump([os.path.join], f)
    with pytest.raises(SkeletonFileError, match="refusing to load"):
        load_skeletons(tmp_path / "evil.pkl")

    # and the writer validates too
    with pytest.raises(ValueError, match=r"\[M, T, 17, 3\]"):
        to_annotation("v", np.zeros((1, 4, 25, 3)), (10, 10))
    with pytest.raises(ValueError, match="more than once"):
        save_skeletons(tmp_path / "dup.pkl", [ann | {"total_frames": 4}] * 2)
