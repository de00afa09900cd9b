"""`zoedepth-ros convert kitti-drive` on a small drive generated in the KITTI raw layout with known
camera poses: the OXTS packets are what the devkit would turn into those poses (the Mercator
formulas inverted), so the poses in the bag must be the chosen ones. Also: frame order and stamps,
GT where the drive has it, the bag's temporal metrics, the devkit formulas on hand-computed rows,
the calibration chain against the devkit's projection, and errors naming the bad file."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from zoedepth_ros.cli import main
from zoedepth_ros.data.bag import read_frames, read_metadata
from zoedepth_ros.data.dataset_io import BagOptions, ConvertError
from zoedepth_ros.data.kitti_drive import (
    camera_from_imu,
    convert_kitti_drive,
    oxts_poses,
    parse_stamp,
    read_camera_from_imu,
)
from zoedepth_ros.eval.protocols import PROTOCOLS, Protocol

QUIET = BagOptions(progress=False)  # the converters' options, without progress bars

ER = 6378137.0
DATE = "2011_09_26"
DRIVE = f"{DATE}_drive_0042_sync"
# KITTI's own P_rect_02 of 2011_09_26 (fx, cx, cy, and its offset column: baseline, y and z terms)
P_RECT_02 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791],
                      [0.0, 0.0, 1.0, 0.002745884]])
FIRST_STAMP = "2011-09-26 13:02:25.964389445"
FIRST_STAMP_NS = 1317042145 * 10**9 + 964389445


def rot(axis, angle):
    """Rotation by `angle` about the unit vector `axis` (Rodrigues), exactly orthonormal."""
    x, y, z = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def transform(R, t):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


# The calibration of the generated drive: rotations exactly orthonormal, written with 17 digits.
R_IMU_VELO, T_IMU_VELO = rot([0.3, -0.2, 1.0], 0.015), np.array([-0.8086759, 0.3195559, -0.7997231])
# Velodyne (x forward, y left, z up) to camera (x right, y down, z forward), slightly off
R_VELO_CAM = rot([1.0, 0.4, -0.3], 0.012) @ np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
T_VELO_CAM = np.array([-0.004069766, -0.07631618, -0.2717806])
R_RECT_00 = rot([-0.4, 0.7, 1.0], 0.0135)


def camera_from_imu_expected(P=P_RECT_02):
    """T_cam2_imu as documented: translation K^-1 P[:, 3], R_rect_00, velo->cam, imu->velo."""
    offset = np.linalg.solve(P[:, :3], P[:, 3])
    return (transform(np.eye(3), offset) @ transform(R_RECT_00, np.zeros(3)) @ transform(R_VELO_CAM, T_VELO_CAM)
            @ transform(R_IMU_VELO, T_IMU_VELO))


def imu_motion(k):
    """IMU pose of frame k relative to frame 0 (10 Hz): about 10 m/s forward, turning left,
    climbing, with roll and pitch wobble."""
    yaw = 0.03 * k
    R = rot([0, 0, 1], yaw) @ rot([0, 1, 0], 0.01 * math.sin(k)) @ rot([1, 0, 0], 0.008 * math.cos(1.7 * k) - 0.008)
    t = [1.0 * k - 0.0005 * k**2, 0.015 * k**2, 0.02 * k]
    return transform(R, t)


def rpy(R):
    """(roll, pitch, yaw) with R = Rz(yaw) Ry(pitch) Rx(roll), |pitch| < 90 deg."""
    return math.atan2(R[2, 1], R[2, 2]), -math.asin(R[2, 0]), math.atan2(R[1, 0], R[0, 0])


def oxts_rows(motions, lat0=49.011212804408, lon0=8.4228850417969, alt0=112.83, rpy0=(0.0212, -0.0105, 1.234)):
    """The OXTS packets (30 fields) whose devkit poses are `motions`: the first packet's absolute
    pose A0 in the Mercator frame scaled at lat0, packet k at A0 @ motion_k, translated back to
    lat/lon/alt by inverting the Mercator formulas and rotated back to roll/pitch/yaw."""
    scale = math.cos(math.radians(lat0))
    roll, pitch, yaw = rpy0
    R0 = rot([0, 0, 1], yaw) @ rot([0, 1, 0], pitch) @ rot([1, 0, 0], roll)
    t0 = [scale * lon0 * math.pi * ER / 180, scale * ER * math.log(math.tan((90 + lat0) * math.pi / 360)), alt0]
    rows = []
    for motion in motions:
        absolute = transform(R0, t0) @ motion
        x, y, z = absolute[:3, 3]
        lon = x * 180 / (scale * math.pi * ER)
        lat = 360 / math.pi * math.atan(math.exp(y / (scale * ER))) - 90
        rest = [3.1, -2.2, 10.0, 0.1, 0.02, 0.3, 0.1, 9.81, 0.2, 0.1, 9.8, 0.01, 0.02, 0.03, 0.01, 0.02, 0.03,
                0.25, 0.05, 4, 10, 4, 4, 6]  # velocities, accelerations, rates, accuracies, status
        rows.append([lat, lon, z, *rpy(absolute[:3, :3]), *rest])
    return rows


def stamp_line(offset_ns):
    ns = FIRST_STAMP_NS + offset_ns
    seconds, fraction = divmod(ns, 10**9)
    return f"{np.datetime_as_string(np.datetime64(seconds, 's')).replace('T', ' ')}.{fraction:09d}"


def render_gt(pose, K, size):
    """Depth (camera 2's z) of a wall 40 m ahead of the first IMU pose (world x = 40), walls 6 m
    to its left and right (world y = +-6) and the road (world z = -1.7) seen from camera-to-world
    `pose`, on a full frame."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width]
    rays = np.linalg.inv(K) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])  # z = 1
    world = pose[:3, :3] @ rays
    centre = pose[:3, 3]
    depth = np.full(xs.size, np.inf)
    for axis, level in ((0, 40.0), (1, 6.0), (1, -6.0), (2, -1.7)):
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (level - centre[axis]) / world[axis]
        depth = np.where((s > 0) & (s < depth), s, depth)
    return depth.reshape(height, width)


def make_drive(root, frames=8, size=(24, 32), gt_frames=None, seed=0, P=P_RECT_02, rendered=False):
    """A raw drive (images, timestamps, OXTS, calibration) and its annotated depth (under
    gt/train/) with known poses; returns what the bag must hold per frame."""
    rng = np.random.default_rng(seed)
    gt_frames = range(1, frames - 1) if gt_frames is None else gt_frames
    date_dir = root / "raw" / DATE
    drive_dir = date_dir / DRIVE
    for folder in ("image_02/data", "oxts/data"):
        (drive_dir / folder).mkdir(parents=True)
    gt_dir = root / "gt" / "train" / DRIVE / "proj_depth" / "groundtruth" / "image_02"
    gt_dir.mkdir(parents=True)

    def line(values):
        return " ".join(repr(float(v)) for v in np.ravel(values))

    (date_dir / "calib_imu_to_velo.txt").write_text(
        f"calib_time: 25-May-2012 16:47:16\nR: {line(R_IMU_VELO)}\nT: {line(T_IMU_VELO)}\n")
    (date_dir / "calib_velo_to_cam.txt").write_text(
        f"calib_time: 15-Mar-2012 11:37:16\nR: {line(R_VELO_CAM)}\nT: {line(T_VELO_CAM)}\n"
        "delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n")
    (date_dir / "calib_cam_to_cam.txt").write_text(
        f"calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\nR_rect_00: {line(R_RECT_00)}\n"
        f"P_rect_00: 7.215377e+02 0 6.095593e+02 0 0 7.215377e+02 1.728540e+02 0 0 0 1 0\n"
        f"R_rect_02: {line(np.eye(3))}\nP_rect_02: {line(P)}\n")

    motions = [imu_motion(k) for k in range(frames)]
    for k, row in enumerate(oxts_rows(motions)):
        (drive_dir / "oxts" / "data" / f"{k:010d}.txt").write_text(
            " ".join(str(v) if isinstance(v, int) else repr(float(v)) for v in row) + "\n")
    offsets = [k * 103_000_000 + int(rng.integers(0, 2_000_000)) for k in range(frames)]  # 10 Hz with jitter
    (drive_dir / "image_02" / "timestamps.txt").write_text("".join(stamp_line(o) + "\n" for o in offsets))

    imu_from_cam = np.linalg.inv(camera_from_imu_expected(P))
    poses = [motion @ imu_from_cam for motion in motions]
    height, width = size
    truth = []
    for k in range(frames):
        rgb = np.zeros((height, width, 3), np.uint8)
        rgb[..., 0], rgb[..., 1] = 20 * k + 5, rng.integers(0, 256, (height, width))
        assert cv2.imwrite(str(drive_dir / "image_02" / "data" / f"{k:010d}.png"), rgb[:, :, ::-1])
        gt = None
        if k in gt_frames:
            metres = render_gt(poses[k], P[:, :3], size) if rendered else rng.uniform(1, 85, size)
            gt = np.where(np.isfinite(metres) & (metres < 250), np.round(metres * 256), 0).astype(np.uint16)
            gt[rng.random(size) < 0.5] = 0  # sparse, as projected LiDAR
            assert cv2.imwrite(str(gt_dir / f"{k:010d}.png"), gt)
        truth.append({"rgb": rgb, "gt": gt, "pose": poses[k], "stamp": FIRST_STAMP_NS + offsets[k]})
    return truth


def drive_args(root):
    return ["--raw-root", str(root / "raw"), "--drive", DRIVE, "--gt-root", str(root / "gt")]


def assert_no_bag(path):
    assert not path.exists()
    assert not [p.name for p in path.parent.iterdir() if ".partial" in p.name]


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti_drive")
    return root, make_drive(root)


# --- the devkit's formulas ------------------------------------------------------------------------


def test_devkit_poses_match_hand_computed_rows():
    metres_per_degree = 111319.49079327357  # er * pi / 180: one degree of longitude at the equator
    # At the equator (scale 1, Mercator y = er * latitude in radians to 1e-9 m at 1e-3 deg):
    # 2e-3 deg east, 1e-3 deg north, 2 m up, then facing 90 deg to the left.
    pose = oxts_poses([[0.0, 0.0, 10.0, 0.0, 0.0, 0.0], [1e-3, 2e-3, 12.0, 0.0, 0.0, math.pi / 2]])
    assert np.array_equal(pose[0], np.eye(4))
    assert pose[1][:3, 3] == pytest.approx([2e-3 * metres_per_degree, 1e-3 * metres_per_degree, 2.0], abs=1e-6)
    assert pose[1][:3, :3] == pytest.approx(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]), abs=1e-12)
    # At 60 deg north the scale is cos 60 = 1/2 for both packets; heading 90 deg (x north), 1e-3
    # deg east: 55.66 m to the right of the first pose, which is -y.
    pose = oxts_poses([[60.0, 10.0, 0.0, 0.0, 0.0, math.pi / 2], [60.0, 10.001, 0.0, 0.0, 0.0, math.pi / 2]])
    assert pose[1][:3, 3] == pytest.approx([0.0, -0.5e-3 * metres_per_degree, 0.0], abs=1e-6)
    assert pose[1][:3, :3] == pytest.approx(np.eye(3), abs=1e-12)
    # R = Rz(yaw) Ry(pitch) Rx(roll), the ZYX closed form element by element
    roll, pitch, yaw = 0.1, -0.2, 0.3
    R = oxts_poses([[49.0, 8.0, 100.0, 0.0, 0.0, 0.0], [49.0, 8.0, 100.0, roll, pitch, yaw]])[1][:3, :3]
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    assert R == pytest.approx(np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]), abs=1e-12)  # fmt: skip


def test_camera_from_imu_is_the_devkit_projection(tmp_path):
    """K (T_cam2_imu p_imu) equals the devkit readme's P_rect_02 R_rect_00 Tr_velo_to_cam p_velo,
    and its z, the depth the annotated maps hold, is the projection's third coordinate."""
    make_drive(tmp_path, frames=1)
    T = read_camera_from_imu(tmp_path / "raw" / DATE)
    assert T == pytest.approx(camera_from_imu(R_IMU_VELO, T_IMU_VELO, R_VELO_CAM, T_VELO_CAM, R_RECT_00, P_RECT_02),
                              abs=1e-12)
    rng = np.random.default_rng(1)
    p_velo = np.vstack([rng.uniform(-20, 40, (3, 50)), np.ones((1, 50))])
    p_imu = np.linalg.inv(transform(R_IMU_VELO, T_IMU_VELO)) @ p_velo
    rect = np.eye(4)
    rect[:3, :3] = R_RECT_00
    devkit = P_RECT_02 @ rect @ transform(R_VELO_CAM, T_VELO_CAM) @ p_velo
    camera = (T @ p_imu)[:3]
    assert P_RECT_02[:, :3] @ camera == pytest.approx(devkit, rel=1e-12, abs=1e-9)
    assert camera[2] == pytest.approx(devkit[2], rel=1e-12, abs=1e-12)
    # KITTI's 7-digit calibration rotations come out as rigid transforms
    (tmp_path / "raw" / DATE / "calib_imu_to_velo.txt").write_text(
        "R: 9.999976e-01 7.553071e-04 -2.035826e-03 -7.854027e-04 9.998898e-01 -1.482298e-02 "
        "2.024406e-03 1.482454e-02 9.998881e-01\nT: -8.086759e-01 3.195559e-01 -7.997231e-01\n")
    R = read_camera_from_imu(tmp_path / "raw" / DATE)[:3, :3]
    assert np.abs(R.T @ R - np.eye(3)).max() < 1e-14 and np.linalg.det(R) == pytest.approx(1.0)


def test_stamps_are_read_as_utc_nanoseconds():
    assert parse_stamp(FIRST_STAMP) == FIRST_STAMP_NS
    assert parse_stamp("2011-09-26 13:02:26.1") == 1317042146 * 10**9 + 100_000_000
    assert parse_stamp("2011-09-26 13:02:26") == 1317042146 * 10**9
    assert stamp_line(0) == FIRST_STAMP
    with pytest.raises(ValueError, match="not a timestamp"):
        parse_stamp("26.09.2011 13:02:26")


# --- the bag --------------------------------------------------------------------------------------


def test_drive_frames_in_order_with_known_poses_stamps_and_gt(tmp_path, drive, capsys):
    root, truth = drive
    out = tmp_path / "bag"
    assert main(["convert", "kitti-drive", str(out), *drive_args(root), "--no-kb-crop", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 8 frames" in printed and "2 without GT (skipped when scored)" in printed
    reader = read_frames(out)
    frames = list(reader)
    assert len(frames) == len(truth) and not reader.unpaired
    for frame, expected in zip(frames, truth, strict=True):
        assert frame.stamp_ns == expected["stamp"]
        assert np.array_equal(frame.rgb, expected["rgb"])  # the drive's own frame, in order
        assert frame.pose is not None
        assert frame.pose[:3, 3] == pytest.approx(expected["pose"][:3, 3], abs=1e-6)
        assert frame.pose[:3, :3] == pytest.approx(expected["pose"][:3, :3], abs=1e-9)
        if expected["gt"] is None:
            assert np.isnan(frame.depth).all()
        else:
            gt = expected["gt"]
            assert np.array_equal(frame.depth, np.where(gt > 0, gt / np.float32(256), np.float32(np.nan)),
                                  equal_nan=True)
        assert np.array_equal(frame.K, P_RECT_02[:, :3]) and np.array_equal(frame.P, P_RECT_02)
    # world is the first IMU pose: the first camera sits where the calibration puts it
    assert frames[0].pose == pytest.approx(np.linalg.inv(camera_from_imu_expected()), abs=1e-9)
    assert [f.depth is not None and np.isfinite(f.depth).any() for f in frames] == [False] + [True] * 6 + [False]
    meta = read_metadata(out)
    assert Protocol.from_metadata(meta) == PROTOCOLS["kitti"]
    assert meta["split"] == DRIVE and meta["source"] == f"raw_drive:{DATE}/{DRIVE}" and meta["poses"] == "oxts"
    assert meta["kb_cropped"] == "false" and meta["dataset"] == "kitti"


def test_drive_limit_mcap_and_report(tmp_path, drive, capsys):
    root, truth = drive
    out = tmp_path / "bag"
    assert main(["convert", "kitti-drive", str(out), *drive_args(root), "--no-kb-crop", "--no-progress",
                 "--limit", "3", "--storage", "mcap", "--split-name", "drive42"]) == 0
    assert "wrote 3 frames" in capsys.readouterr().out
    frames = list(read_frames(out))
    assert [f.stamp_ns for f in frames] == [t["stamp"] for t in truth[:3]]
    for frame, expected in zip(frames, truth, strict=False):
        assert frame.pose == pytest.approx(expected["pose"], abs=1e-6)
    assert read_metadata(out)["split"] == "drive42"


def test_drive_bag_scores_temporal_consistency(tmp_path):
    """Full KITTI frames, KB-cropped; GT rendered from the known poses (a wall and the road), the GT
    as the prediction: the evaluation reads the poses and finds the frames consistent (TAE < 1)."""
    truth = make_drive(tmp_path, frames=5, size=(375, 1242), gt_frames=range(0, 4), rendered=True)
    out = tmp_path / "bag"
    frames, without_gt = convert_kitti_drive(tmp_path / "raw", DRIVE, tmp_path / "gt", out, options=QUIET)
    assert (frames, without_gt) == (5, 1)
    first = next(iter(read_frames(out)))
    assert first.rgb.shape == (352, 1216, 3) and first.K[0, 2] == pytest.approx(609.5593 - 13)
    assert first.pose == pytest.approx(truth[0]["pose"], abs=1e-6)
    evaluation = tmp_path / "eval"
    assert main(["evaluate", str(out), "--pred-topic", "/ground_truth/depth", "--out", str(evaluation),
                 "--no-progress", "--worst", "1"]) == 0
    summary = json.loads((evaluation / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["frames_skipped"] == 1 and summary["a1"] == 1.0
    temporal = summary["temporal"]
    assert temporal is not None and temporal["pairs"] == 3  # GT frames 0-1, 1-2, 2-3; frame 4 has none
    assert 0 <= temporal["tae"] < 1.0


def test_drive_bag_with_wrong_poses_is_inconsistent(tmp_path):
    """The check above has teeth: the same GT with the IMU's poses in place of the camera's (no
    calibration chain) gives a large TAE."""
    from zoedepth_ros.data.bag_writer import BagWriter

    truth = make_drive(tmp_path, frames=3, size=(375, 1242), gt_frames=range(3), rendered=True)
    good = list(read_frames_of(tmp_path, "good"))
    bad = tmp_path / "bad"
    with BagWriter(bad, metadata=read_metadata(tmp_path / "good")) as writer:
        for frame, expected in zip(good, truth, strict=True):
            frame.pose = expected["pose"] @ camera_from_imu_expected()  # the IMU's pose
            writer.write(frame)
    for name, low in (("good", True), ("bad", False)):
        evaluation = tmp_path / f"eval_{name}"
        assert main(["evaluate", str(tmp_path / name), "--pred-topic", "/ground_truth/depth", "--out",
                     str(evaluation), "--no-progress", "--worst", "0"]) == 0
        tae = json.loads((evaluation / "summary.json").read_text())["temporal"]["tae"]
        assert (tae < 1.0) if low else (tae > 5.0), (name, tae)


def read_frames_of(root, name):
    convert_kitti_drive(root / "raw", DRIVE, root / "gt", root / name, options=QUIET)
    return read_frames(root / name)


# --- errors ---------------------------------------------------------------------------------------


def run_error(tmp_path, capsys, *extra):
    out = tmp_path / "bag"
    assert main(["convert", "kitti-drive", str(out), *drive_args(tmp_path), "--no-kb-crop", *extra]) == 2
    assert_no_bag(out)
    return capsys.readouterr().err


def test_drive_errors_name_the_file_and_leave_no_bag(tmp_path, capsys):
    make_drive(tmp_path, frames=6, size=(20, 30))
    raw = tmp_path / "raw" / DATE
    drive_dir = raw / DRIVE

    assert "smaller than the 352x1216 KB crop (use --no-kb-crop)" in run_error(tmp_path, capsys, "--kb-crop")
    assert "is not a KITTI raw drive name" in run_error(tmp_path, capsys, "--drive", "drive_0042")
    assert "no drive folder" in run_error(tmp_path, capsys, "--drive", f"{DATE}_drive_0043")

    oxts = drive_dir / "oxts" / "data" / "0000000003.txt"
    text = oxts.read_text()
    oxts.write_text(" ".join(text.split()[:29]))
    err = run_error(tmp_path, capsys)
    assert "0000000003.txt: an OXTS packet is 30 numbers, got 29" in err
    oxts.write_text(text.replace(text.split()[0], "north", 1))
    assert "0000000003.txt: an OXTS packet is 30 numbers, got 'north" in run_error(tmp_path, capsys)
    oxts.unlink()
    err = run_error(tmp_path, capsys)
    assert "1 OXTS files (oxts/data/%010d.txt) missing: " in err and "0000000003.txt" in err
    oxts.write_text(text)

    stamps = drive_dir / "image_02" / "timestamps.txt"
    lines = stamps.read_text().splitlines()
    stamps.write_text("\n".join([*lines[:2], "26/09/2011 13:02:26", *lines[3:]]) + "\n")
    assert "timestamps.txt:3: not a timestamp" in run_error(tmp_path, capsys)
    stamps.write_text("\n".join(lines[:4]) + "\n")
    assert "timestamps.txt has 4 lines; frame 5 needs line 6" in run_error(tmp_path, capsys)
    stamps.write_text("\n".join([*lines[:3], lines[1], *lines[4:]]) + "\n")
    assert "timestamps.txt:4: the stamp of frame 3 does not follow" in run_error(tmp_path, capsys)
    stamps.write_text("\n".join(lines) + "\n")

    image = drive_dir / "image_02" / "data" / "0000000002.png"
    image_bytes = image.read_bytes()
    image.unlink()
    err = run_error(tmp_path, capsys)
    assert "1 KITTI images (image_02/data/%010d.png) missing" in err and "0000000002.png" in err
    image.write_bytes(image_bytes)

    gt = next((tmp_path / "gt").rglob("0000000002.png"))
    gt_bytes = gt.read_bytes()
    assert cv2.imwrite(str(gt), np.ones((10, 30), np.uint16))
    assert "0000000002.png is 10x30, its image" in run_error(tmp_path, capsys)
    gt.write_bytes(gt_bytes)

    velo_cam = raw / "calib_velo_to_cam.txt"
    velo_text = velo_cam.read_text()
    velo_cam.write_text("\n".join(line for line in velo_text.splitlines() if not line.startswith("T:")))
    assert "calib_velo_to_cam.txt has no T line" in run_error(tmp_path, capsys)
    velo_cam.write_text(velo_text.replace("R: ", "R: 2.0 ", 1))
    assert "calib_velo_to_cam.txt: R is not 9 finite numbers" in run_error(tmp_path, capsys)
    velo_cam.write_text(velo_text)
    cam = raw / "calib_cam_to_cam.txt"
    cam_text = cam.read_text()
    cam.write_text("".join("R_rect_00: 1.5 0 0 0 1 0 0 0 1\n" if line.startswith("R_rect_00:") else line
                           for line in cam_text.splitlines(keepends=True)))
    assert "calib_cam_to_cam.txt R_rect_00 is not a rotation matrix" in run_error(tmp_path, capsys)
    cam.write_text(cam_text)
    with pytest.raises(ConvertError, match="no annotated depth of .*drive_0042_sync under"):
        convert_kitti_drive(tmp_path / "raw", DRIVE, tmp_path / "elsewhere", tmp_path / "bag", options=QUIET)
    assert_no_bag(tmp_path / "bag")
    (raw / "calib_imu_to_velo.txt").unlink()
    err = run_error(tmp_path, capsys)
    assert "1 calibration files missing: " in err and "calib_imu_to_velo.txt" in err
