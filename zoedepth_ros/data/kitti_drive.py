"""A whole KITTI raw drive to an evaluation bag, in frame order, with the camera pose of every
frame on `/ground_truth/pose` (`zoedepth-ros convert kitti-drive`; docs/evaluation.md).

Inputs (the raw download, with the annotated depth of KITTI depth completion):

- `<raw root>/<date>/<drive>_sync/image_02/data/%010d.png`, the rectified left colour images;
- `<raw root>/<date>/<drive>_sync/image_02/timestamps.txt`, one `YYYY-MM-DD HH:MM:SS.fffffffff`
  line per frame (line n is frame n), read as UTC: the stamps of the bag;
- `<raw root>/<date>/<drive>_sync/oxts/data/%010d.txt`, one line of 30 numbers per frame (lat,
  lon in degrees, alt in metres, roll, pitch, yaw in radians, then velocities, accelerations,
  rates, accuracies and status: only the first six are used);
- `<raw root>/<date>/calib_imu_to_velo.txt`, `calib_velo_to_cam.txt` (`R:` 9 numbers row-major,
  `T:` 3 numbers, metres) and `calib_cam_to_cam.txt` (`R_rect_00`, `P_rect_02`);
- `<gt root>/<drive>_sync/proj_depth/groundtruth/image_02/%010d.png` (directly or under `train/`
  or `val/`), uint16 = depth * 256, 0 = no GT.

Poses, as the KITTI devkit's `convertOxtsToPose.m` computes them (`oxts_poses`): each OXTS packet
gives the IMU's pose in a Mercator frame, t = (scale * lon * pi * er / 180,
scale * er * log(tan((90 + lat) * pi / 360)), alt) with er = 6378137 m and scale =
cos(lat0 * pi / 180) of the first frame's latitude, R = Rz(yaw) Ry(pitch) Rx(roll); pose k =
inv(T_0) @ T_k, so the IMU's frame at the first frame (x forward, y left, z up) is `world`.

The camera (`camera_from_imu`): T_cam2_imu = T_02 @ R_rect_00 @ Tr_velo_to_cam @ Tr_imu_to_velo,
where Tr_imu_to_velo and Tr_velo_to_cam are the `R|T` of the two calibration files (IMU to
Velodyne, Velodyne to the unrectified camera 0), R_rect_00 rotates camera 0 into the rectified
frame that all rectified cameras share, and T_02 translates by t = K^-1 P_rect_02[:, 3] (K the
left 3x3 of P_rect_02): P_rect_02 = K [I | t] is the projection of rectified camera-0 points into
image 2, so t takes rectified camera-0 points to camera 2 (2011_09_26: t = (0.0599, -0.0004,
0.0027) m, camera 2 sits 6 cm left of camera 0; pykitti keeps only P[0, 3] / P[0, 0] = 0.0622,
2 to 3 mm away). So K @ (T_cam2_imu @ p_imu)[:3] is the devkit's
P_rect_02 @ R_rect_00 @ Tr_velo_to_cam @ p_velo, and its third coordinate is the depth the
annotated maps hold. The optical frame's camera-to-world pose of frame k is
oxts_pose_k @ inv(T_cam2_imu). Calibration rotations (printed to 7 digits) are projected onto the
nearest rotation (they move by about 1e-7) so that the poses are rigid.

Frames without annotated depth (KITTI annotates neither the first nor the last 5 frames of a drive)
are written with no GT (all NaN), as the Eigen-split converter writes its lines without GT: the
image stream stays the drive's, every frame with its stamp and pose, and the scorer skips them.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from zoedepth_ros.data.bag_layout import BagFrame
from zoedepth_ros.data.convert_kitti import CALIB_FILE, read_frame, read_projection
from zoedepth_ros.data.dataset_io import (
    DEFAULT_BAG_OPTIONS,
    BagOptions,
    ConvertError,
    require_files,
)
from zoedepth_ros.data.synth import FRAME_ID
from zoedepth_ros.eval.protocols import get_protocol

EARTH_RADIUS_M = 6378137.0  # the devkit's er
OXTS_FIELDS = 30
IMU_TO_VELO_FILE = "calib_imu_to_velo.txt"
VELO_TO_CAM_FILE = "calib_velo_to_cam.txt"
# A calibration rotation further than this from orthonormal is a broken file, not rounding.
ROTATION_TOLERANCE = 1e-3

_DRIVE = re.compile(r"^(\d{4}_\d{2}_\d{2})_drive_(\d{4})(_sync)?$")
_STAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")


# --- OXTS and the devkit's poses (pure numpy) -----------------------------------------------------


def lat_to_scale(lat: float) -> float:
    """The devkit's `latToScale`: the Mercator scale at latitude `lat` (degrees)."""
    return float(np.cos(lat * np.pi / 180.0))


def latlon_to_mercator(lat: np.ndarray, lon: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's `latlonToMercator`: (x east, y north) in metres of latitudes and longitudes
    in degrees, on the Mercator projection scaled by `scale`."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    x = scale * lon * np.pi * EARTH_RADIUS_M / 180.0
    y = scale * EARTH_RADIUS_M * np.log(np.tan((90.0 + lat) * np.pi / 360.0))
    return x, y


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) @ Ry(pitch) @ Rx(roll), the OXTS orientation as the devkit builds it."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 [R t; 0 0 0 1]."""
    transform = np.eye(4)
    transform[:3, :3] = R
    transform[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return transform


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform, [R^T, -R^T t]."""
    R = T[:3, :3]
    return rigid(R.T, -R.T @ T[:3, 3])


def oxts_poses(oxts: np.ndarray) -> np.ndarray:
    """(N, 4, 4) IMU poses of N OXTS packets (rows lat, lon, alt, roll, pitch, yaw, ...), the
    devkit's `convertOxtsToPose`: Mercator at the first packet's latitude, relative to the first
    pose (pose 0 is the identity; pose k takes IMU-k points to IMU-0 points)."""
    oxts = np.asarray(oxts, dtype=np.float64)
    if oxts.ndim != 2 or oxts.shape[0] < 1 or oxts.shape[1] < 6:
        raise ValueError(f"OXTS packets are an (N, >= 6) array, got shape {oxts.shape}")
    scale = lat_to_scale(oxts[0, 0])
    x, y = latlon_to_mercator(oxts[:, 0], oxts[:, 1], scale)
    absolute = [rigid(rotation_rpy(*row[3:6]), (xi, yi, row[2])) for row, xi, yi in zip(oxts, x, y, strict=True)]
    first_inv = invert_rigid(absolute[0])
    poses = np.stack([first_inv @ T for T in absolute])
    poses[0] = np.eye(4)  # inv(T_0) @ T_0, exactly
    return poses


def nearest_rotation(R: np.ndarray, what: str) -> np.ndarray:
    """The rotation nearest `R` (SVD), for rotations printed with a few digits; ConvertError when
    `R` is not within ROTATION_TOLERANCE of one."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    if np.abs(R.T @ R - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(R) <= 0:
        raise ConvertError(f"{what} is not a rotation matrix: {R.reshape(-1).tolist()}")
    u, _, vt = np.linalg.svd(R)
    return u @ vt


def camera_from_imu(R_imu_velo: np.ndarray, T_imu_velo: np.ndarray, R_velo_cam: np.ndarray,
                    T_velo_cam: np.ndarray, R_rect_00: np.ndarray, P_rect_02: np.ndarray) -> np.ndarray:
    """4x4 T_cam2_imu taking IMU points to camera 2's rectified optical frame:
    T_02 @ R_rect_00 @ [R_velo_cam T_velo_cam] @ [R_imu_velo T_imu_velo], T_02 the translation
    K^-1 P_rect_02[:, 3] (K = P_rect_02[:, :3]). Rotations must be rotations (the caller projects
    printed ones with `nearest_rotation`)."""
    P = np.asarray(P_rect_02, dtype=np.float64).reshape(3, 4)
    offset = np.linalg.solve(P[:, :3], P[:, 3])
    return (rigid(np.eye(3), offset) @ rigid(R_rect_00, np.zeros(3)) @ rigid(R_velo_cam, T_velo_cam)
            @ rigid(R_imu_velo, T_imu_velo))


def camera_poses(oxts: np.ndarray, cam_from_imu: np.ndarray) -> np.ndarray:
    """(N, 4, 4) camera-to-world poses of camera 2's optical frame, world the IMU frame of the
    first packet: oxts_poses(oxts)[k] @ inv(cam_from_imu)."""
    imu_from_cam = invert_rigid(np.asarray(cam_from_imu, dtype=np.float64))
    return np.stack([pose @ imu_from_cam for pose in oxts_poses(oxts)])


# --- files ----------------------------------------------------------------------------------------


def read_oxts(path: Path) -> np.ndarray:
    """The 30 numbers of one OXTS packet file (`oxts/data/%010d.txt`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"cannot read OXTS file {path}: {exc}") from None
    fields = text.split()
    try:
        values = np.array([float(v) for v in fields], dtype=np.float64)
    except ValueError:
        raise ConvertError(f"{path}: an OXTS packet is {OXTS_FIELDS} numbers, got {text.strip()[:200]!r}") from None
    if values.size != OXTS_FIELDS:
        raise ConvertError(f"{path}: an OXTS packet is {OXTS_FIELDS} numbers, got {values.size}")
    if not np.isfinite(values[:6]).all() or abs(values[0]) >= 90:
        raise ConvertError(f"{path}: lat, lon, alt, roll, pitch, yaw must be finite (|lat| < 90), "
                           f"got {values[:6].tolist()}")
    return values


def read_calib_values(path: Path, keys: dict[str, int]) -> dict[str, np.ndarray]:
    """`key: numbers` lines of a KITTI calibration file, for each key of `keys` (key -> how many
    numbers); ConvertError naming the file for a missing key or a wrong count."""
    path = Path(path)
    found: dict[str, str] = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, values = line.partition(":")
            if sep and key.strip() in keys:
                found[key.strip()] = values
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"cannot read calibration file {path}: {exc}") from None
    result = {}
    for key, count in keys.items():
        if key not in found:
            raise ConvertError(f"{path} has no {key} line")
        try:
            numbers = np.array([float(v) for v in found[key].split()], dtype=np.float64)
        except ValueError:
            numbers = np.zeros(0)
        if numbers.size != count or not np.isfinite(numbers).all():
            raise ConvertError(f"{path}: {key} is not {count} finite numbers: {found[key].strip()!r}")
        result[key] = numbers
    return result


def read_camera_from_imu(date_dir: Path) -> np.ndarray:
    """T_cam2_imu (`camera_from_imu`) from the three calibration files of a drive's date folder."""
    imu_velo = read_calib_values(date_dir / IMU_TO_VELO_FILE, {"R": 9, "T": 3})
    velo_cam = read_calib_values(date_dir / VELO_TO_CAM_FILE, {"R": 9, "T": 3})
    cam = read_calib_values(date_dir / CALIB_FILE, {"R_rect_00": 9, "P_rect_02": 12})
    return camera_from_imu(
        nearest_rotation(imu_velo["R"], f"{date_dir / IMU_TO_VELO_FILE} R"), imu_velo["T"],
        nearest_rotation(velo_cam["R"], f"{date_dir / VELO_TO_CAM_FILE} R"), velo_cam["T"],
        nearest_rotation(cam["R_rect_00"], f"{date_dir / CALIB_FILE} R_rect_00"), cam["P_rect_02"],
    )  # fmt: skip


def parse_stamp(text: str) -> int:
    """Nanoseconds since the epoch of a KITTI timestamp `YYYY-MM-DD HH:MM:SS.fffffffff`, read as
    UTC; ValueError when the text is not one."""
    match = _STAMP.match(text.strip())
    if match is None:
        raise ValueError(f"not a timestamp 'YYYY-MM-DD HH:MM:SS.fffffffff': {text.strip()!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = (match.group(7) or "").ljust(9, "0")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds * 10**9 + int(fraction)


def read_timestamps(path: Path) -> list[int]:
    """Stamps (ns, UTC) of the lines of a KITTI timestamps.txt, blank lines ignored at the end."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").rstrip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"cannot read timestamps file {path}: {exc}") from None
    stamps = []
    for number, line in enumerate(lines, start=1):
        try:
            stamps.append(parse_stamp(line))
        except ValueError as exc:
            raise ConvertError(f"{path}:{number}: {exc}") from None
    return stamps


def parse_drive(drive: str) -> tuple[str, str]:
    """(date, `<date>_drive_<NNNN>_sync`) of a drive name, with or without `_sync` or its date
    folder in front (`2011_09_26/2011_09_26_drive_0002_sync`)."""
    name = Path(drive).name
    match = _DRIVE.match(name)
    if match is None:
        raise ConvertError(f"drive {drive!r} is not a KITTI raw drive name like 2011_09_26_drive_0002_sync")
    return match.group(1), f"{match.group(1)}_drive_{match.group(2)}_sync"


def find_gt_dir(gt_root: Path, drive: str) -> Path:
    """`<drive>/proj_depth/groundtruth/image_02` under the annotated-depth root, directly or under
    its train/ or val/ part; ConvertError naming the places looked at when none exists."""
    relative = Path(drive) / "proj_depth" / "groundtruth" / "image_02"
    candidates = [gt_root / relative, gt_root / "train" / relative, gt_root / "val" / relative]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ConvertError(f"no annotated depth of {drive} under {gt_root}: none of "
                       f"{', '.join(str(c) for c in candidates)} exists")


def list_frames(image_dir: Path) -> list[int]:
    """Frame numbers of the `%010d.png` images of a drive folder, in order."""
    if not image_dir.is_dir():
        raise ConvertError(f"no image folder {image_dir} (expected <raw root>/<date>/<drive>_sync/image_02/data)")
    numbers = []
    for path in image_dir.glob("*.png"):
        if not path.stem.isdigit():
            raise ConvertError(f"{path}: KITTI images are named by frame number (%010d.png)")
        numbers.append(int(path.stem))
    if not numbers:
        raise ConvertError(f"{image_dir} holds no .png images")
    return sorted(numbers)


# --- the conversion -------------------------------------------------------------------------------


def convert_kitti_drive(
    raw_root: Path,
    drive: str,
    gt_root: Path,
    out: Path,
    split_name: str | None = None,
    kb_crop_frames: bool = True,
    *,
    options: BagOptions = DEFAULT_BAG_OPTIONS,
) -> tuple[int, int]:
    """Write every frame of a raw drive (the first `limit`), in frame order, with its stamp, pose
    and annotated depth where it has one; returns (frames, frames without GT)."""
    from tqdm import tqdm

    raw_root, gt_root = Path(raw_root), Path(gt_root)
    date, drive = parse_drive(drive)
    date_dir = raw_root / date
    drive_dir = date_dir / drive
    if not drive_dir.is_dir():
        raise ConvertError(f"no drive folder {drive_dir} (expected <raw root>/<date>/<drive>_sync)")
    # Frames 0..N-1, the last image naming N: a hole in the numbers is a damaged download.
    numbers = list(range(list_frames(drive_dir / "image_02" / "data")[-1] + 1))[:options.limit]
    images = [drive_dir / "image_02" / "data" / f"{n:010d}.png" for n in numbers]
    require_files(images, "KITTI images (image_02/data/%010d.png)")
    oxts_files = [drive_dir / "oxts" / "data" / f"{n:010d}.txt" for n in numbers]
    stamps_file = drive_dir / "image_02" / "timestamps.txt"
    calibs = [date_dir / name for name in (IMU_TO_VELO_FILE, VELO_TO_CAM_FILE, CALIB_FILE)]
    require_files(calibs, "calibration files")
    require_files([stamps_file], "image timestamps files")
    require_files(oxts_files, "OXTS files (oxts/data/%010d.txt)")
    gt_dir = find_gt_dir(gt_root, drive)
    gts = [gt_dir / f"{n:010d}.png" for n in numbers]
    gts = [gt if gt.is_file() else None for gt in gts]

    all_stamps = read_timestamps(stamps_file)
    if numbers[-1] >= len(all_stamps):
        raise ConvertError(f"{stamps_file} has {len(all_stamps)} lines; frame {numbers[-1]} needs "
                           f"line {numbers[-1] + 1}")
    stamps = [all_stamps[n] for n in numbers]
    for previous, stamp, n in zip(stamps, stamps[1:], numbers[1:], strict=False):
        if stamp <= previous:
            raise ConvertError(f"{stamps_file}:{n + 1}: the stamp of frame {n} does not follow the previous frame's")
    P = read_projection(date_dir / CALIB_FILE)
    poses = camera_poses(np.stack([read_oxts(path) for path in oxts_files]), read_camera_from_imu(date_dir))

    def frames() -> Iterator[BagFrame]:
        for image_path, gt_path, stamp, pose in zip(images, gts, stamps, poses, strict=True):
            rgb, depth, frame_P = read_frame(image_path, gt_path, P, kb_crop_frames)
            yield BagFrame(stamp, FRAME_ID, rgb, depth, frame_P[:, :3], frame_P, pose=pose)

    metadata = {
        **get_protocol("kitti").to_metadata(),
        "split": split_name or drive,
        "dataset": "kitti",
        "source": f"raw_drive:{date}/{drive}",
        "kb_cropped": "true" if kb_crop_frames else "false",
        "poses": "oxts",
    }
    with options.writer(out, metadata) as writer:
        for frame in tqdm(frames(), total=len(numbers), desc=f"kitti {drive}", unit="frame",
                          disable=not options.progress):
            writer.write(frame)
    return writer.frames_written, sum(gt is None for gt in gts)
