"""`zoedepth-ros convert nyu|kitti|kitti-drive`: benchmark datasets to evaluation bags
(docs/evaluation.md).

The conversions themselves are convert_nyu.py and convert_kitti.py, on the shared file and bag
helpers of dataset_io.py (atomic bags, 10 Hz stamps in split order), and kitti_drive.py (a whole
raw drive in frame order, its own stamps, OXTS poses on /ground_truth/pose).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoedepth_ros.argtypes import positive_int
from zoedepth_ros.data.convert_kitti import convert_kitti
from zoedepth_ros.data.convert_nyu import convert_nyu_labeled, convert_nyu_official
from zoedepth_ros.data.dataset_io import BagOptions, ConvertError
from zoedepth_ros.data.kitti_drive import convert_kitti_drive


def _add_bag_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="bag directory to create")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--image-format", choices=("raw", "jpeg", "png"), default="raw",
                   help="RGB storage: raw rgb8 (default, exact) or compressed")
    p.add_argument("--gt-encoding", choices=("32FC1", "16UC1"), default="32FC1",
                   help="GT storage: 32FC1 metres (default, exact) or 16UC1 millimetres")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="convert only the first N frames of the split (kitti-drive: of the drive)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="convert NYU Depth v2 or KITTI (Eigen split, or a whole raw drive with poses) to an evaluation bag",
        description="Convert a benchmark split to an evaluation bag (docs/bag-layout.md) that records "
                    "its split and evaluation protocol; see docs/evaluation.md.",
    )
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    nyu = sub.add_parser(
        "nyu",
        help="NYU Depth v2: labeled .mat + splits, or a BTS official_splits folder",
        description="NYU Depth v2 test (or train) split, 480x640, NYU RGB intrinsics, protocol nyu. "
                    "Source: the labeled file (--labeled nyu_depth_v2_labeled.mat --splits splits.mat) "
                    "or the folder BTS/ZoeDepth evaluate (--official-splits official_splits).",
    )
    _add_bag_options(nyu)
    source = nyu.add_mutually_exclusive_group(required=True)
    source.add_argument("--labeled", type=Path, metavar="MAT", help="nyu_depth_v2_labeled.mat (HDF5)")
    source.add_argument("--official-splits", type=Path, metavar="DIR",
                        help="official_splits folder (<split>/<scene>/rgb_XXXXX.jpg + sync_depth_XXXXX.png)")
    nyu.add_argument("--splits", type=Path, metavar="FILE",
                     help="with --labeled: splits.mat (MATLAB v5 or v7.3) or a text file of 1-based indices")
    nyu.add_argument("--split", choices=("test", "train"), default="test")
    nyu.add_argument("--depth", choices=("raw", "filled"), default="raw",
                     help="with --labeled: rawDepths (default, what the benchmark scores) or in-painted depths")
    nyu.set_defaults(func=_run_nyu)

    kitti = _add_kitti_parser(
        sub, "kitti", _run_kitti, split_name_default="eigen_test",
        raw_root_help="folder holding <date>/<drive>_sync/ and <date>/calib_cam_to_cam.txt",
        help="KITTI raw drives + annotated depth, Eigen-style split file",
        description="KITTI frames of a split file (lines '<date>/<drive>_sync/image_02/data/N.png "
                    "<gt path or None> <focal>', as BTS eigen_test_files_with_gt.txt), intrinsics from "
                    "calib_cam_to_cam.txt P_rect_02, protocol kitti.",
    )
    kitti.add_argument("--split-file", type=Path, required=True, help="e.g. eigen_test_files_with_gt.txt")

    drive = _add_kitti_parser(
        sub, "kitti-drive", _run_kitti, split_name_default=None,
        raw_root_help="folder holding <date>/<drive>_sync/ (image_02, oxts) and <date>/calib_*.txt",
        help="one whole KITTI raw drive in frame order, camera poses from OXTS on /ground_truth/pose",
        description="Every frame of a KITTI raw drive (image_02), in frame order, stamped from "
                    "image_02/timestamps.txt, with the pose of camera 2's optical frame from the drive's OXTS "
                    "(the devkit's convertOxtsToPose, then IMU to camera through calib_imu_to_velo.txt, "
                    "calib_velo_to_cam.txt and calib_cam_to_cam.txt) on /ground_truth/pose and the annotated "
                    "depth where the frame has it (frames without it: no GT, skipped when scored); "
                    "protocol kitti. See docs/evaluation.md.",
    )
    drive.add_argument("--drive", required=True, metavar="NAME",
                       help="the drive, e.g. 2011_09_26_drive_0002_sync (the _sync may be left out)")


def _add_kitti_parser(sub: argparse._SubParsersAction, name: str, func, split_name_default: str | None,
                      raw_root_help: str, **texts: str) -> argparse.ArgumentParser:
    """A KITTI subcommand with what both KITTI sources take: the bag options, the raw and GT
    folders, the split name and the KB crop."""
    p = sub.add_parser(name, **texts)
    _add_bag_options(p)
    p.add_argument("--raw-root", type=Path, required=True, help=raw_root_help)
    p.add_argument("--gt-root", type=Path, required=True,
                   help="folder holding <drive>_sync/proj_depth/groundtruth/ (directly or under train/ or val/)")
    p.add_argument("--split-name", default=split_name_default,
                   help=f"split name recorded in the bag (default {split_name_default or 'the drive name'})")
    p.add_argument("--kb-crop", action=argparse.BooleanOptionalAction, default=True,
                   help="store frames KB-cropped to 352x1216 as the official evaluation feeds the network "
                        "(default); --no-kb-crop keeps full frames (the scorer still crops GT)")
    p.set_defaults(func=func)
    return p


def _bag_options(args: argparse.Namespace) -> BagOptions:
    return BagOptions(storage=args.storage, image_format=args.image_format, gt_encoding=args.gt_encoding,
                      overwrite=args.overwrite, limit=args.limit, progress=args.progress)


def _report(path: Path, frames: int, extra: str = "") -> int:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {frames} frames to {path} ({size / 1e6:.1f} MB){extra}")
    return 0


def _run_nyu(args: argparse.Namespace) -> int:
    if args.labeled is not None:
        if args.splits is None:
            raise ConvertError("--labeled needs --splits (splits.mat, or a text file of 1-based indices)")
        frames = convert_nyu_labeled(args.labeled, args.splits, args.out, split=args.split, depth=args.depth,
                                     options=_bag_options(args))
    else:
        if args.splits is not None:
            raise ConvertError("--splits goes with --labeled; an official_splits folder is split already")
        if args.depth != "raw":
            raise ConvertError("official_splits folders hold raw depth only; use --labeled for --depth filled")
        frames = convert_nyu_official(args.official_splits, args.out, split=args.split, options=_bag_options(args))
    return _report(args.out, frames)


def _run_kitti(args: argparse.Namespace) -> int:
    common = {"split_name": args.split_name, "kb_crop_frames": args.kb_crop, "options": _bag_options(args)}
    if args.dataset == "kitti":
        frames, without_gt = convert_kitti(args.raw_root, args.gt_root, args.split_file, args.out, **common)
    else:
        frames, without_gt = convert_kitti_drive(args.raw_root, args.drive, args.gt_root, args.out, **common)
    # Official evaluation keeps frames without GT (in a split's list; a drive's first and last 5
    # frames) and skips them when scoring.
    return _report(args.out, frames, f"; {without_gt} without GT (skipped when scored)" if without_gt else "")
