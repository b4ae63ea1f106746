"""3D keypoints (the ``keypoints3d`` modality) on real people, and skeleton files that
mmaction2 / pyskl load by split.

No 3D ground truth exists for the sample videos, so the checks are what must hold for a
real person whatever the truth: bones keep their length while the person moves, left and
right limbs match, a standing adult is 1.2-2.1 m from nose to ankles, and the 3D joints
agree with the 2D ones on left/right and up/down. The export is read back through the
steps of mmaction2's ``PoseDataset(split=...)`` (the format, not the package).
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tristream.cli import main
from tristream.config import RunConfig
from tristream.models.detector import load_detector
from tristream.models.pose_onnx import OnnxPoseModel
from tristream.shards import ShardDataset, read_rows
from tristream.transforms.decode import decode_video
from tristream.transforms.flow import compute_flow
from tristream.transforms.pose import PoseEstimator
from tristream.transforms.tracking import FlowTracker

# COCO-17 bones: (name, left (a, b), right (a, b)).
BONES = (
    ("upper arm", (5, 7), (6, 8)),
    ("forearm", (7, 9), (8, 10)),
    ("thigh", (11, 13), (12, 14)),
    ("shin", (13, 15), (14, 16)),
)
CONFIDENT = 0.5


@pytest.fixture(scope="module")
def people(bikes: str, data_dir: Path) -> dict:
    """Real people in bikes.mp4 at short side 256, tracked with YOLOX-nano, the packaged
    BlazePose lite with 3D keypoints and the default TV-L1 flow; the best track of each
    clip: ``walking`` (1.4-2.4 s, the man in a suit walking right, upright) and
    ``cyclist`` (4.1-5.3 s, riding towards the camera, seen whole)."""
    models = data_dir / "models"
    detector = load_detector(models / "yolox_nano_416x416.onnx", device="cpu")
    estimator = PoseEstimator(OnnxPoseModel(models / "blazepose_lite.onnx", device="cpu"),
                              keypoints3d=True)  # fmt: skip
    out = {}
    for name, (start, end) in (("walking", (1.4, 2.4)), ("cyclist", (4.1, 5.3))):
        frames = decode_video(bikes, fps=25, short_side=256, start=start, end=end)
        tracks = FlowTracker(detector, estimator, max_persons=3).process(
            frames, compute_flow(frames)
        )
        assert tracks.keypoints3d is not None
        assert tracks.keypoints3d.shape == tracks.keypoints.shape  # [M, T, 17, 3]
        out[name] = (tracks.keypoints[0], tracks.keypoints3d[0])
    return out


def _confident(kp2: np.ndarray, joints) -> np.ndarray:
    return (kp2[:, list(joints), 2] >= CONFIDENT).all(axis=1)


def test_bones_keep_their_length_and_limbs_match(people) -> None:
    """Measured (lite): CV 0.03-0.08 per bone over 25-29 frames; left/right 1-18% apart."""
    kp2, k3 = people["cyclist"]
    for name, left, right in BONES:
        means = []
        for side, (a, b) in (("left", left), ("right", right)):
            ok = _confident(kp2, (a, b))
            assert ok.sum() >= 20, (name, side, ok.sum())
            d = np.linalg.norm(k3[ok, a] - k3[ok, b], axis=-1)
            cv = d.std() / d.mean()
            print(f"{side} {name}: {d.mean():.3f} m, CV {cv:.3f} over {ok.sum()} frames")
            assert 0.15 < d.mean() < 0.6, (name, side, d.mean())
            assert cv <= 0.15, (name, side, cv)
            means.append(d.mean())
        assert abs(means[0] - means[1]) / np.mean(means) <= 0.25, (name, means)


def test_a_standing_person_is_adult_height(people) -> None:
    kp2, k3 = people["walking"]
    ok = _confident(kp2, (0, 15, 16))
    assert ok.sum() >= 5
    ankles = k3[ok][:, [15, 16]].mean(axis=1)
    extent = np.linalg.norm(ankles - k3[ok, 0], axis=-1)  # nose to the ankles' midpoint
    print(f"nose to ankles: {np.median(extent):.2f} m over {ok.sum()} frames (measured 1.34)")
    assert 1.2 <= np.median(extent) <= 2.1
    hips = k3[ok][:, [11, 12]].mean(axis=1)
    assert np.abs(hips).max() < 0.1  # root-relative: the hips' midpoint is the origin


@pytest.mark.parametrize("who", ["walking", "cyclist"])
def test_3d_joints_agree_with_the_2d_ones(people, who: str) -> None:
    """Per frame the 3D joints' x and y follow the 2D ones (correlation over the confident
    joints; measured >= 0.96), up is up and left is left in both (y down, x right)."""
    kp2, k3 = people[who]
    frames = 0
    for t in range(len(kp2)):
        seen = kp2[t, :, 2] >= CONFIDENT
        if seen.sum() < 8:
            continue
        frames += 1
        for axis in (0, 1):
            r = np.corrcoef(kp2[t, seen, axis], k3[t, seen, axis])[0, 1]
            assert r >= 0.9, (who, t, axis, r)
    assert frames >= 8
    ok = _confident(kp2, (0, 11, 12, 15, 16))
    for k in (kp2[ok], k3[ok]):
        assert np.all(k[:, 0, 1] < k[:, [11, 12], 1].mean(1))
        assert np.all(k[:, [11, 12], 1].mean(1) < k[:, [15, 16], 1].mean(1))
    for a, b in ((5, 6), (11, 12)):
        both = _confident(kp2, (a, b))
        s2 = np.sign(kp2[both, a, 0] - kp2[both, b, 0])
        s3 = np.sign(k3[both, a, 0] - k3[both, b, 0])
        assert np.mean(s2 == s3) >= 0.8, (who, a, b, np.mean(s2 == s3))


def test_a_model_without_3d_output_is_a_clear_error(tmp_path, data_dir: Path) -> None:
    class HeatmapModel:  # the part of a heatmap pose model the check reads: no has_3d
        path = "pose_resnet.pth"

    with pytest.raises(ValueError, match="3D keypoints need a pose model with 3D output"):
        PoseEstimator(HeatmapModel(), keypoints3d=True)
    lite = OnnxPoseModel(data_dir / "models" / "blazepose_lite.onnx", device="cpu")
    assert lite.has_3d
    with pytest.raises(ValueError, match="--keypoints3d needs a pose model"):
        RunConfig.from_options(output=str(tmp_path / "o"), input=str(tmp_path), keypoints3d=True)


# ------------------------------------------------------------------------------------------
# the pipeline, the readers and the export


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory, bikes: str, carphone: str) -> Path:
    """``tristream run --persons --keypoints3d``: two real clips in two splits, both formats."""
    tmp = tmp_path_factory.mktemp("run3d")
    manifest = tmp / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "label", "split", "start", "end"])
        w.writerow(["street", bikes, "walk", "train", 1.4, 2.0])
        w.writerow(["phone", carphone, "talk", "val", 1.0, 1.6])
    out = tmp / "out"
    args = ["run", "--manifest", str(manifest), "--output", str(out), "--short-side", "128",
            "--max-frames", "8", "--persons", "--keypoints3d", "--format", "both"]  # fmt: skip
    threads = torch.get_num_threads()  # the run shares the CPUs among its worker threads,
    try:  # which may include this one: later tests find the count they started with
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_the_shards_carry_3d_keypoints_aligned_with_the_2d_ones(run_3d: Path) -> None:
    for fmt in ("parquet", "tfrecord"):
        rows = list(read_rows(run_3d, fmt=fmt))
        assert rows and all("keypoints3d" in r for r in rows)
        for r in rows:
            k2, k3 = r["keypoints"], r["keypoints3d"]
            assert k3.shape == k2.shape and k3.dtype == np.float32
            absent = (k2[..., 2] == 0).all(-1)
            assert not k3[absent].any()  # absent persons: zeros in both
            assert np.abs(k3).max() < 2.5  # metres
            assert r["source_size"] in ((272, 640), (144, 176))
    street = [r for r in read_rows(run_3d, fmt="parquet") if r["video_id"] == "street"]
    assert any(r["num_persons"] > 0 for r in street)
    ds = ShardDataset(str(run_3d), modalities=("rgb", "keypoints3d"), clip_len=4, crop=96,
                      train=True, hflip=1.0, shuffle=False, max_persons=3)  # fmt: skip
    sample = next(iter(ds))
    assert sample["keypoints3d"].shape == (3, 4, 17, 3) and sample["flipped"]
    flat = _without_3d(run_3d, run_3d.parent / "flat")
    with pytest.raises(ValueError, match="none of the requested modalities"):
        ShardDataset(str(flat), modalities=("keypoints3d",), clip_len=2, shuffle=False)
    # Asked for beside another: still an error, at once, naming it.
    with pytest.raises(ValueError, match=r"modalities \['keypoints3d'\] are in none"):
        ShardDataset(str(flat), modalities=("rgb", "keypoints3d"), clip_len=2, crop=None,
                     shuffle=False)  # fmt: skip


def _without_3d(out: Path, dest: Path) -> Path:
    """A copy of the Parquet shards without the keypoints3d column."""
    import pyarrow.parquet as pq

    (dest / "shards").mkdir(parents=True, exist_ok=True)
    for f in (out / "shards").glob("*.parquet"):
        table = pq.read_table(f)
        pq.write_table(table.drop_columns(["keypoints3d"]), dest / "shards" / f.name)
    return dest


def _pose_dataset_load(ann_file: Path, split: str) -> list[dict]:
    """mmaction2 1.x ``PoseDataset.load_data_list`` with ``split=``, step by step."""
    with open(ann_file, "rb") as f:
        data_list = pickle.load(f)
    split_map, data = data_list["split"], data_list["annotations"]
    identifier = "filename" if "filename" in data[0] else "frame_dir"
    members = set(split_map[split])
    return [x for x in data if x[identifier] in members]


def test_the_export_loads_by_split_as_mmaction2_does(run_3d: Path, tmp_path) -> None:
    pkl = tmp_path / "skeletons.pkl"
    args = ["export-skeletons", str(run_3d), str(pkl),
            "--split-name", "train=xsub_train", "--split-name", "val=xsub_val"]  # fmt: skip
    assert main(args) == 0
    train = _pose_dataset_load(pkl, "xsub_train")
    val = _pose_dataset_load(pkl, "xsub_val")
    assert [a["frame_dir"] for a in train] == ["street"]
    assert [a["frame_dir"] for a in val] == ["phone"]
    labels = {r["video_id"]: r["label_index"] for r in read_rows(run_3d, ("keypoints",))}
    for ann, source in ((train[0], (272, 640)), (val[0], (144, 176))):
        m, t = ann["keypoint"].shape[:2]
        assert ann["keypoint"].shape == (m, t, 17, 2) and ann["keypoint"].dtype == np.float32
        assert ann["keypoint_score"].shape == (m, t, 17)
        assert ann["total_frames"] == t
        assert ann["label"] == labels[ann["frame_dir"]]
        assert ann["original_shape"] == source  # the source video's (h, w)
        assert ann["img_shape"] == (128, round(128 * source[1] / source[0] / 2) * 2)
        mean = ann["keypoint_score"].mean(axis=(1, 2))
        assert np.all(np.diff(mean) <= 1e-6), mean  # best person first
    three = tmp_path / "skeletons3d.pkl"
    assert main(["export-skeletons", str(run_3d), str(three), "--3d"]) == 0
    ann3 = _pose_dataset_load(three, "train")[0]
    assert ann3["keypoint"].shape == (*train[0]["keypoint"].shape[:3], 3)
    assert np.abs(ann3["keypoint"]).max() < 2.5
    np.testing.assert_array_equal(ann3["keypoint_score"], train[0]["keypoint_score"])


def test_the_contact_sheet_draws_the_3d_skeletons(run_3d: Path, tmp_path) -> None:
    from tristream.inspect import contact_sheet, draw_skeletons_3d

    sheet = contact_sheet(run_3d, "street", frames=4)
    plain = contact_sheet(_without_3d(run_3d, tmp_path / "plain"), "street", frames=4)
    assert sheet.shape[0] > plain.shape[0]  # one more row: 3D
    row = next(r for r in read_rows(run_3d, fmt="parquet") if r["video_id"] == "street")
    persons = [(0, row["keypoints3d"][0, 0], np.ones(17))]
    tile = draw_skeletons_3d(persons, 96, 128)
    assert (tile < 200).any(axis=-1)[:, :64].sum() > 20  # the front view has a skeleton
    assert (tile < 200).any(axis=-1)[:, 65:].sum() > 20  # and the side view


def test_2d_and_3d_skeleton_files_import_back_to_the_same_rows(run_3d: Path, tmp_path) -> None:
    """export-skeletons (2D) + export-skeletons --3d, then --skeletons + --skeletons3d on the
    same clips: the imported rows hold the run's keypoints and keypoints3d again."""
    two, three = tmp_path / "2d.pkl", tmp_path / "3d.pkl"
    assert main(["export-skeletons", str(run_3d), str(two)]) == 0
    assert main(["export-skeletons", str(run_3d), str(three), "--3d"]) == 0
    manifest = run_3d.parent / "m.csv"
    out = tmp_path / "imported"
    args = ["run", "--manifest", str(manifest), "--output", str(out), "--short-side", "128",
            "--max-frames", "8", "--flow", "none", "--render", "none",
            "--skeletons", str(two), "--skeletons3d", str(three)]  # fmt: skip
    assert main(args) == 0
    key = lambda r: (r["video_id"], r["segment"])  # noqa: E731
    before = {key(r): r for r in read_rows(run_3d, fmt="parquet")}
    after = {key(r): r for r in read_rows(out)}
    assert before.keys() == after.keys()
    for k, a in after.items():
        b = before[k]
        assert a["keypoints3d"].shape == a["keypoints"].shape
        # Persons ordered by mean score in both; compare the ones present in the segment.
        for m in range(min(a["num_persons"], b["num_persons"])):
            np.testing.assert_allclose(a["keypoints"][m], b["keypoints"][m], atol=1e-3)
            np.testing.assert_array_equal(a["keypoints3d"][m], b["keypoints3d"][m])
    with pytest.raises(ValueError, match="--skeletons3d needs --skeletons"):
        RunConfig.from_options(
            output=str(tmp_path / "o"), input=str(tmp_path), skeletons3d=str(three)
        )
