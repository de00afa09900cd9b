"""KITTI to an evaluation bag: raw drives, annotated depth and an Eigen-style split file.

Split lines are `<date>/<drive>_sync/image_02/data/<frame>.png <gt path or None> <focal>`, as in
BTS's `eigen_test_files_with_gt.txt` (697 lines, 652 with GT); the GT path is relative to the
annotated-depth root (`<drive>_sync/proj_depth/groundtruth/image_02/<frame>.png`, uint16,
depth = value / 256, 0 = no GT), found directly under it or under its `train/` or `val/` part.
Lines without GT become frames without GT (all NaN): the official evaluation keeps them in its
list and skips them when scoring, and so does `evaluate`.

Intrinsics come from `P_rect_02` of `<date>/calib_cam_to_cam.txt`; images are rectified, so
they are published with D = 0. By default frames are KB-cropped to 352x1216 (the official
evaluation crops image and GT before the network) with the principal point moved accordingly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoedepth_ros.data.dataset_io import (
    DEFAULT_BAG_OPTIONS,
    BagOptions,
    ConvertError,
    read_depth_png,
    read_rgb,
    require_files,
    write_bag,
)
from zoedepth_ros.eval.protocols import KB_CROP_HEIGHT, KB_CROP_WIDTH, get_protocol, kb_crop, kb_crop_projection

GT_SCALE = 256.0
CALIB_FILE = "calib_cam_to_cam.txt"
CALIB_KEY = "P_rect_02"


def parse_split_file(path: Path) -> list[tuple[str, str | None]]:
    """(image path, GT path or None) of each line of an Eigen-style split file."""
    path = Path(path)
    require_files([path], "split file")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or len(Path(fields[0]).parts) < 2:
            raise ConvertError(f"{path}:{number}: expected "
                               f"'<date>/<drive>_sync/image_02/data/N.png <gt path or None> <focal>', got {line!r}")
        entries.append((fields[0], None if fields[1] == "None" else fields[1]))
    if not entries:
        raise ConvertError(f"{path} lists no frames")
    return entries


def read_projection(path: Path) -> np.ndarray:
    """3x4 P_rect_02 of a KITTI calib_cam_to_cam.txt."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        key, _, values = line.partition(":")
        if key.strip() == CALIB_KEY:
            try:
                return np.array([float(v) for v in values.split()], dtype=np.float64).reshape(3, 4)
            except ValueError:
                raise ConvertError(f"{path}: {CALIB_KEY} is not 12 numbers: {values.strip()!r}") from None
    raise ConvertError(f"{path} has no {CALIB_KEY} line")


def resolve_gt(gt_root: Path, relative: str) -> Path:
    """The GT file under the annotated-depth root, which KITTI ships split into train/ and val/."""
    candidates = [gt_root / relative, gt_root / "train" / relative, gt_root / "val" / relative]
    return next((c for c in candidates if c.is_file()), candidates[0])


def read_frame(image_path: Path, gt_path: Path | None, P: np.ndarray,
               kb_crop_frames: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB, GT depth in metres (NaN = none; all NaN without a GT file), 3x4 projection) of one KITTI
    frame, KB-cropped (projection included) when `kb_crop_frames`."""
    rgb = read_rgb(image_path)
    depth = np.full(rgb.shape[:2], np.nan, np.float32) if gt_path is None else read_depth_png(gt_path, GT_SCALE)
    if depth.shape != rgb.shape[:2]:
        raise ConvertError(f"{gt_path} is {depth.shape[0]}x{depth.shape[1]}, its image {image_path} "
                           f"{rgb.shape[0]}x{rgb.shape[1]}")
    if kb_crop_frames:
        if rgb.shape[0] < KB_CROP_HEIGHT or rgb.shape[1] < KB_CROP_WIDTH:
            raise ConvertError(f"{image_path} is {rgb.shape[0]}x{rgb.shape[1]}, smaller than the "
                               f"{KB_CROP_HEIGHT}x{KB_CROP_WIDTH} KB crop (use --no-kb-crop)")
        P = kb_crop_projection(P, *rgb.shape[:2])
        rgb, depth = kb_crop(rgb), kb_crop(depth)
    return np.ascontiguousarray(rgb), np.ascontiguousarray(depth), P


def convert_kitti(
    raw_root: Path,
    gt_root: Path,
    split_file: Path,
    out: Path,
    split_name: str = "eigen_test",
    kb_crop_frames: bool = True,
    *,
    options: BagOptions = DEFAULT_BAG_OPTIONS,
) -> tuple[int, int]:
    """Write the frames of a split file as a bag; returns (frames, frames without GT)."""
    raw_root, gt_root = Path(raw_root), Path(gt_root)
    entries = parse_split_file(split_file)[:options.limit]
    images = [raw_root / image for image, _ in entries]
    gts = [None if gt is None else resolve_gt(gt_root, gt) for _, gt in entries]
    calibs = {date: raw_root / date / CALIB_FILE for date in sorted({Path(image).parts[0] for image, _ in entries})}
    require_files(calibs.values(), f"calibration files ({CALIB_FILE})")
    require_files(images, "KITTI images")
    require_files([gt for gt in gts if gt is not None], "KITTI GT depth PNGs")
    projections = {date: read_projection(path) for date, path in calibs.items()}

    def frames():
        for (image, _), image_path, gt_path in zip(entries, images, gts, strict=True):
            rgb, depth, P = read_frame(image_path, gt_path, projections[Path(image).parts[0]], kb_crop_frames)
            yield rgb, depth, P[:, :3], P

    metadata = {
        **get_protocol("kitti").to_metadata(),
        "split": split_name,
        "dataset": "kitti",
        "source": f"split_file:{Path(split_file).name}",
        "kb_cropped": "true" if kb_crop_frames else "false",
    }
    count = write_bag(out, frames(), len(entries), metadata, desc=f"kitti {split_name}", options=options)
    return count, sum(gt is None for gt in gts)
