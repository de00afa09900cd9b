"""`zoedepth-ros convert nyu|kitti` on small fixtures written in the datasets' real formats:
frames, intrinsics, depth values, metadata, D = 0, errors for missing files, no partial bags."""

from __future__ import annotations

import base64
import struct
import zlib

import cv2
import numpy as np
import pytest

from zoedepth_ros.cli import main
from zoedepth_ros.data.bag import read_frames, read_metadata
from zoedepth_ros.data.convert_kitti import convert_kitti
from zoedepth_ros.data.convert_nyu import NYU_K, convert_nyu_labeled, convert_nyu_official, read_split_indices
from zoedepth_ros.data.dataset_io import BagOptions, ConvertError
from zoedepth_ros.data.synth import FRAME_PERIOD_NS, START_STAMP_NS
from zoedepth_ros.eval.protocols import PROTOCOLS, Protocol

from bag_samples import raw_messages

QUIET = BagOptions(progress=False)  # the converters' options, without progress bars

# scipy.io.savemat({"testNdxs": [[2.], [4.]], "trainNdxs": [[1.], [3.]]}, format="5") with
# do_compression True and False (SciPy 1.17.1), i.e. MATLAB v5 files as BTS reads splits.mat.
SPLITS_MAT5_COMPRESSED = base64.b64decode(
    "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IFRodSBOb3YgMjYgMTQ6MTE6MzEgMjAyNgAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSU0PAAAAMQAAAHic42NgYPAAYjYg5oDS"
    "IMAK5TMBMSMUg/glqcUlfikVxZxAtgADHDhAKAEHAIh8BIoPAAAANQAAAHic42NgYAgAYjYg5oDSIMAK5TMBMSMUcwJxSVFiZp5f"
    "SkUxVB1ITIABBj7YQ2gOBwC/KgXY"
)
SPLITS_MAT5_PLAIN = base64.b64decode(
    "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IFRodSBOb3YgMjYgMTQ6MTE6MzEgMjAyNgAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSU0OAAAASAAAAAYAAAAIAAAABgAAAAAA"
    "AAAFAAAACAAAAAIAAAABAAAAAQAAAAgAAAB0ZXN0TmR4cwkAAAAQAAAAAAAAAAAAAEAAAAAAAAAQQA4AAABQAAAABgAAAAgAAAAG"
    "AAAAAAAAAAUAAAAIAAAAAgAAAAEAAAABAAAACQAAAHRyYWluTmR4cwAAAAAAAAAJAAAAEAAAAAAAAAAAAPA/AAAAAAAACEA="
)
TEST_INDICES = [1, 3]  # 0-based rows of the labeled file that testNdxs [2, 4] name
N_LABELED = 4


def mat5_matlab_style(arrays):
    """A compressed MAT v5 file as MATLAB writes double index vectors: stored as miUINT16, a
    data element of 4 bytes or less in the 'small data element' form."""

    def element(data_type, payload):
        if len(payload) <= 4:
            return struct.pack("<HH", data_type, len(payload)) + payload.ljust(4, b"\0")
        return struct.pack("<II", data_type, len(payload)) + payload + b"\0" * (-len(payload) % 8)

    body = b""
    for name, values in arrays.items():
        matrix = (element(6, struct.pack("<II", 6, 0)) + element(5, struct.pack("<ii", len(values), 1))
                  + element(1, name.encode()) + element(4, np.asarray(values, "<u2").tobytes()))
        packed = zlib.compress(struct.pack("<II", 14, len(matrix)) + matrix)
        body += struct.pack("<II", 15, len(packed)) + packed
    header = b"MATLAB 5.0 MAT-file, Platform: GLNXA64".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    return header + body


def assert_no_bag(path):
    assert not path.exists()
    assert not [p.name for p in path.parent.iterdir() if ".partial" in p.name]


def d_of_camera_infos(bag):
    return [msg for topic, _, msg in raw_messages(bag) if topic == "/camera/camera_info"]


def nan_equal(a, b):
    return np.array_equal(a, b, equal_nan=True)


# --- NYU ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """nyu_depth_v2_labeled.mat layout: MATLAB v7.3 (HDF5) arrays stored transposed."""
    import h5py

    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:480, 0:640]
    images = np.stack([np.stack([(xs + 40 * i) % 256, ys % 256, np.full_like(xs, 50 * i)]) for i in range(N_LABELED)])
    images = images.astype(np.uint8).transpose(0, 1, 3, 2)  # (N, 3, W, H)
    depths = rng.uniform(0.5, 9.5, (N_LABELED, 640, 480)).astype(np.float32)
    raw = (depths * rng.uniform(0.97, 1.03, depths.shape)).astype(np.float32)
    raw[rng.random(raw.shape) < 0.25] = 0.0
    path = tmp_path_factory.mktemp("nyu") / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("depths", data=depths)
        f.create_dataset("rawDepths", data=raw)
    splits = path.with_name("splits.mat")
    splits.write_bytes(SPLITS_MAT5_COMPRESSED)
    return {"path": path, "splits": splits, "images": images, "depths": depths, "raw": raw}


def expected_nyu(labeled, index, kind="raw"):
    """What BTS's extraction makes of row `index`: border blacked, depth truncated to mm."""
    rgb = labeled["images"][index].transpose(2, 1, 0)
    shown = np.zeros_like(rgb)
    shown[7:474, 7:632] = rgb[7:474, 7:632]
    mm = (labeled["raw" if kind == "raw" else "depths"][index].T * np.float32(1000.0)).astype(np.uint16)
    return shown, mm


@pytest.mark.parametrize("data", [SPLITS_MAT5_COMPRESSED, SPLITS_MAT5_PLAIN,
                                  mat5_matlab_style({"testNdxs": [2, 4], "trainNdxs": [1, 3]})],
                         ids=["scipy-compressed", "scipy-plain", "matlab-uint16"])
def test_split_indices_from_mat5(tmp_path, data):
    path = tmp_path / "splits.mat"
    path.write_bytes(data)
    assert read_split_indices(path, "test") == [1, 3]
    assert read_split_indices(path, "train") == [0, 2]


def test_split_indices_from_hdf5_and_text(tmp_path):
    import h5py

    with h5py.File(tmp_path / "splits73.mat", "w") as f:
        f.create_dataset("testNdxs", data=np.array([[2.0, 4.0]]))  # v7.3: a column vector reads as 1xN
    assert read_split_indices(tmp_path / "splits73.mat", "test") == [1, 3]
    with pytest.raises(ConvertError, match="has no trainNdxs"):
        read_split_indices(tmp_path / "splits73.mat", "train")
    (tmp_path / "test.txt").write_text("2\n4, 7\n")
    assert read_split_indices(tmp_path / "test.txt", "test") == [1, 3, 6]
    (tmp_path / "zero.txt").write_text("0 1\n")
    with pytest.raises(ConvertError, match="1-based"):
        read_split_indices(tmp_path / "zero.txt", "test")
    (tmp_path / "bad.mat").write_bytes(SPLITS_MAT5_COMPRESSED[:150])
    with pytest.raises(ConvertError, match="damaged MAT file"):
        read_split_indices(tmp_path / "bad.mat", "test")
    with pytest.raises(ConvertError, match="split file missing"):
        read_split_indices(tmp_path / "absent.mat", "test")


def test_nyu_labeled_frames_intrinsics_and_metadata(tmp_path, labeled):
    out = tmp_path / "nyu_test"
    rc = main(["convert", "nyu", str(out), "--labeled", str(labeled["path"]), "--splits", str(labeled["splits"]),
               "--no-progress"])
    assert rc == 0
    frames = list(read_frames(out))
    assert len(frames) == len(TEST_INDICES)
    for i, (frame, index) in enumerate(zip(frames, TEST_INDICES, strict=True)):
        rgb, mm = expected_nyu(labeled, index)
        assert frame.stamp_ns == START_STAMP_NS + i * FRAME_PERIOD_NS
        assert frame.rgb.shape == (480, 640, 3) and np.array_equal(frame.rgb, rgb)
        assert nan_equal(frame.depth, np.where(mm > 0, mm.astype(np.float32) / np.float32(1000), np.nan))
        assert np.array_equal(frame.K, NYU_K) and np.array_equal(frame.P, np.hstack([NYU_K, np.zeros((3, 1))]))
        assert (frame.K[0, 0] == 518.8579 and frame.K[1, 1] == 519.4696
                and frame.K[0, 2] == 325.5824 and frame.K[1, 2] == 253.7362)
    for info in d_of_camera_infos(out):
        assert not np.any(info.d) and info.distortion_model == "plumb_bob"
    meta = read_metadata(out)
    assert Protocol.from_metadata(meta) == PROTOCOLS["nyu"]
    assert meta["crop"] == "eigen" and meta["max_depth"] == "10.0"
    assert meta["split"] == "test" and meta["depth"] == "raw" and meta["dataset"] == "nyu_depth_v2"


def test_nyu_labeled_train_split_filled_depth(tmp_path, labeled):
    splits = tmp_path / "train.txt"
    splits.write_text("1\n3\n")
    out = tmp_path / "nyu_train"
    count = convert_nyu_labeled(labeled["path"], splits, out, split="train", depth="filled",
                                options=BagOptions(storage="mcap", gt_encoding="16UC1", limit=1, progress=False))
    assert count == 1
    (frame,) = read_frames(out)
    _, mm = expected_nyu(labeled, 0, kind="filled")
    assert nan_equal(frame.depth, mm.astype(np.float32) / np.float32(1000))  # exact: 16UC1 holds the mm
    assert read_metadata(out)["split"] == "train" and read_metadata(out)["depth"] == "filled"


@pytest.fixture
def official_splits(tmp_path, labeled):
    """BTS's official_splits/test folder, made from the labeled fixture as BTS's script does (with
    lossless PNG bytes behind the .jpg names, so that both converters must agree exactly)."""
    root = tmp_path / "official_splits"
    for index, scene in zip(TEST_INDICES, ["bathroom", "kitchen"], strict=True):
        folder = root / "test" / scene
        folder.mkdir(parents=True)
        rgb, mm = expected_nyu(labeled, index)
        (folder / f"rgb_{index:05d}.jpg").write_bytes(cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())
        assert cv2.imwrite(str(folder / f"sync_depth_{index:05d}.png"), mm)
    return root


def test_nyu_official_splits_equal_the_labeled_extraction(tmp_path, labeled, official_splits):
    from_folder = tmp_path / "from_folder"
    from_mat = tmp_path / "from_mat"
    assert convert_nyu_official(official_splits, from_folder, options=QUIET) == 2
    convert_nyu_labeled(labeled["path"], labeled["splits"], from_mat, options=QUIET)
    for a, b in zip(read_frames(from_folder), read_frames(from_mat), strict=True):
        assert np.array_equal(a.rgb, b.rgb) and nan_equal(a.depth, b.depth) and np.array_equal(a.K, b.K)
    assert read_metadata(from_folder)["source"] == "official_splits"
    # the split folder itself works as the root too
    assert convert_nyu_official(official_splits / "test", tmp_path / "again", options=QUIET) == 2


def test_nyu_missing_or_broken_files_leave_no_bag(tmp_path, official_splits, labeled, capsys):
    missing = official_splits / "test" / "kitchen" / "sync_depth_00003.png"
    missing.unlink()
    out = tmp_path / "bag"
    with pytest.raises(ConvertError,
                       match=r"1 NYU depth PNGs \(sync_depth_XXXXX.png\) missing: .*sync_depth_00003.png"):
        convert_nyu_official(official_splits, out, options=QUIET)
    assert_no_bag(out)
    # present but unreadable: found while writing the second frame, after the first was written
    missing.write_bytes(b"not a png")
    with pytest.raises(ConvertError, match="cannot read depth PNG"):
        convert_nyu_official(official_splits, out, options=QUIET)
    assert_no_bag(out)

    assert main(["convert", "nyu", str(out), "--official-splits", str(official_splits)]) == 2
    assert "cannot read depth PNG" in capsys.readouterr().err
    assert_no_bag(out)
    assert main(["convert", "nyu", str(out), "--labeled", str(labeled["path"])]) == 2
    assert "--labeled needs --splits" in capsys.readouterr().err
    assert main(["convert", "nyu", str(out), "--labeled", str(tmp_path / "nope.mat"),
                 "--splits", str(labeled["splits"])]) == 2
    assert "labeled NYU file missing" in capsys.readouterr().err
    assert_no_bag(out)


def test_converted_nyu_scores_perfectly_against_itself(tmp_path, labeled):
    bag = tmp_path / "nyu"
    convert_nyu_labeled(labeled["path"], labeled["splits"], bag, options=QUIET)
    out = tmp_path / "eval"
    assert main(["evaluate", str(bag), "--pred-topic", "/ground_truth/depth", "--out", str(out), "--no-progress",
                 "--worst", "1"]) == 0
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["name"] == "nyu" and summary["frames"] == 2 and summary["a1"] == 1.0


# --- KITTI ----------------------------------------------------------------------------------------

CALIB = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_rect_02: 1.242000e+03 3.750000e+02
R_rect_02: 9.998817e-01 1.511453e-02 -2.841595e-03 -1.511724e-02 9.998853e-01 -9.338510e-04 2.827154e-03 9.766976e-04 9.999955e-01
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
"""  # noqa: E501  (calib_cam_to_cam.txt lines as KITTI writes them: one matrix a line)
P_RECT_02 = np.array([float(v) for v in CALIB.splitlines()[4].split()[1:]]).reshape(3, 4)
DATE = "2011_09_26"
# (drive, frame, GT part or None): GT in the annotated set's train/ and val/ halves, one without GT
KITTI_FRAMES = [("0002", 69, "train"), ("0009", 5, None), ("0013", 10, "val")]


def make_kitti(root, size=(375, 1242), seed=0):
    """Raw drives, calibration, annotated GT (uint16 = depth * 256, 0 = none) and the split file."""
    rng = np.random.default_rng(seed)
    height, width = size
    (root / "raw" / DATE).mkdir(parents=True)
    (root / "raw" / DATE / "calib_cam_to_cam.txt").write_text(CALIB)
    lines, truth = [], []
    ys, xs = np.mgrid[0:height, 0:width]
    for n, (drive, frame, part) in enumerate(KITTI_FRAMES):
        image_rel = f"{DATE}/{DATE}_drive_{drive}_sync/image_02/data/{frame:010d}.png"
        gt_rel = f"{DATE}_drive_{drive}_sync/proj_depth/groundtruth/image_02/{frame:010d}.png"
        rgb = np.stack([(xs + 30 * n) % 256, (ys * 2) % 256, np.full_like(xs, 90 + n)], axis=2).astype(np.uint8)
        (root / "raw" / image_rel).parent.mkdir(parents=True)
        assert cv2.imwrite(str(root / "raw" / image_rel), rgb[:, :, ::-1])
        gt = None
        if part is not None:
            gt = (rng.uniform(1.0, 85.0, size) * 256).astype(np.uint16)
            gt[rng.random(size) < 0.9] = 0
            (root / "gt" / part / gt_rel).parent.mkdir(parents=True)
            assert cv2.imwrite(str(root / "gt" / part / gt_rel), gt)
        lines.append(f"{image_rel} {gt_rel if part else 'None'} 721.5377")
        truth.append((rgb, gt))
    (root / "eigen_test_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return truth


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    return root, make_kitti(root)


def kitti_args(root):
    return ["--raw-root", str(root / "raw"), "--gt-root", str(root / "gt"),
            "--split-file", str(root / "eigen_test_files_with_gt.txt")]


def test_kitti_kb_cropped_frames_intrinsics_and_metadata(tmp_path, kitti, capsys):
    root, truth = kitti
    out = tmp_path / "kitti"
    assert main(["convert", "kitti", str(out), *kitti_args(root), "--no-progress"]) == 0
    assert "wrote 3 frames" in capsys.readouterr().out
    frames = list(read_frames(out))
    assert len(frames) == 3
    top, left = 375 - 352, (1242 - 1216) // 2
    for frame, (rgb, gt) in zip(frames, truth, strict=True):
        assert frame.rgb.shape == (352, 1216, 3) and (frame.width, frame.height) == (1216, 352)
        assert np.array_equal(frame.rgb, rgb[top:top + 352, left:left + 1216])
        expected = (np.full((352, 1216), np.nan, np.float32) if gt is None
                    else gt[top:top + 352, left:left + 1216] / np.float32(256))
        assert nan_equal(frame.depth, np.where(expected > 0, expected, np.nan))
        # the principal point moves with the crop; K is P_rect_02's left 3x3 (rectified)
        assert frame.K == pytest.approx(np.array([[721.5377, 0, 596.5593], [0, 721.5377, 149.854], [0, 0, 1]]))
        assert frame.P[:, 3] == pytest.approx(P_RECT_02[:, 3] - np.array([left, top, 0]) * P_RECT_02[2, 3])
    assert np.isnan(frames[1].depth).all()  # listed without GT
    for info in d_of_camera_infos(out):
        assert not np.any(info.d)
    meta = read_metadata(out)
    assert Protocol.from_metadata(meta) == PROTOCOLS["kitti"]
    assert meta["crop"] == "garg" and meta["kb_crop"] == "true" and meta["max_depth"] == "80.0"
    assert meta["split"] == "eigen_test" and meta["kb_cropped"] == "true" and meta["dataset"] == "kitti"

    evaluation = tmp_path / "eval"
    assert main(["evaluate", str(out), "--pred-topic", "/ground_truth/depth", "--out", str(evaluation), "--no-progress",
                 "--worst", "1"]) == 0
    import json

    summary = json.loads((evaluation / "summary.json").read_text())
    assert summary["frames"] == 2 and summary["frames_skipped"] == 1 and summary["a1"] == 1.0


def test_kitti_full_frames_without_kb_crop(tmp_path):
    truth = make_kitti(tmp_path, size=(30, 40))
    out = tmp_path / "kitti_full"
    count, without_gt = convert_kitti(tmp_path / "raw", tmp_path / "gt", tmp_path / "eigen_test_files_with_gt.txt", out,
                                      kb_crop_frames=False, options=BagOptions(storage="mcap", progress=False))
    assert (count, without_gt) == (3, 1)
    frames = list(read_frames(out))
    assert np.array_equal(frames[0].rgb, truth[0][0]) and np.array_equal(frames[2].P, P_RECT_02)
    assert np.array_equal(frames[0].K, P_RECT_02[:, :3])
    assert read_metadata(out)["kb_cropped"] == "false"


def test_kitti_errors_leave_no_bag(tmp_path, capsys):
    make_kitti(tmp_path, size=(30, 40))
    out = tmp_path / "bag"
    assert main(["convert", "kitti", str(out), *kitti_args(tmp_path)]) == 2  # 30x40 cannot be KB-cropped
    assert "smaller than the 352x1216 KB crop (use --no-kb-crop)" in capsys.readouterr().err
    assert_no_bag(out)

    gt = next((tmp_path / "gt" / "val").rglob("*.png"))
    gt.unlink()
    assert main(["convert", "kitti", str(out), *kitti_args(tmp_path), "--no-kb-crop"]) == 2
    err = capsys.readouterr().err
    assert "1 KITTI GT depth PNGs missing: " in err and gt.name in err
    assert_no_bag(out)

    (tmp_path / "raw" / DATE / "calib_cam_to_cam.txt").unlink()
    assert main(["convert", "kitti", str(out), *kitti_args(tmp_path), "--no-kb-crop"]) == 2
    assert "calibration files (calib_cam_to_cam.txt) missing" in capsys.readouterr().err

    (tmp_path / "eigen_test_files_with_gt.txt").write_text("just_one_field.png\n")
    assert main(["convert", "kitti", str(out), *kitti_args(tmp_path), "--no-kb-crop"]) == 2
    assert "eigen_test_files_with_gt.txt:1: expected" in capsys.readouterr().err
    assert_no_bag(out)
