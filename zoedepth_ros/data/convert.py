"""`zoedepth-ros convert nyu|kitti`: benchmark datasets to evaluation bags (docs/evaluation.md).

The converters (convert_nyu.py, convert_kitti.py) check that every input file exists before a
bag is started, then stream frames into a `BagWriter`, which renames the bag into place only
when the last frame is written: a failure or Ctrl-C leaves no bag behind.
Frames get 10 Hz stamps in split order (frame i at START_STAMP_NS + i * 100 ms), so the i-th
frame of a bag is the i-th entry of its split; `evaluate` reports frames by that index.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from zoedepth_ros.data.bag import BagFrame, BagWriter
from zoedepth_ros.data.synth import FRAME_ID, FRAME_PERIOD_NS, START_STAMP_NS
from zoedepth_ros.errors import ZoeDepthError

# Keeps the error readable when a whole drive or scene is missing.
MAX_LISTED_MISSING = 5


class ConvertError(ZoeDepthError):
    """A dataset that cannot be converted: missing or unreadable files, bad split files."""


def require_files(paths: Iterable[Path], what: str) -> None:
    """ConvertError naming the first missing files (and how many in all) unless all exist."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        listed = ", ".join(str(p) for p in missing[:MAX_LISTED_MISSING])
        more = f" and {len(missing) - MAX_LISTED_MISSING} more" if len(missing) > MAX_LISTED_MISSING else ""
        raise ConvertError(f"{len(missing)} {what} missing: {listed}{more}")


def read_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB of an image file."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConvertError(f"cannot read image {path} (missing, truncated or not an image)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_depth_png(path: Path, scale: float) -> np.ndarray:
    """Metres (float32, NaN = no GT) of a uint16 depth PNG storing value = depth * scale, 0 invalid."""
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ConvertError(f"cannot read depth PNG {path} (missing, truncated or not an image)")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ConvertError(f"{path}: expected a single-channel 16-bit PNG, got {raw.dtype} {raw.shape}")
    return depth_from_uint16(raw, scale)


def depth_from_uint16(raw: np.ndarray, scale: float) -> np.ndarray:
    """Metres (float32, NaN where 0) of integer GT storing depth * scale."""
    # The official loaders divide in float32; doing the same keeps GT bit-identical to theirs.
    return np.where(raw > 0, raw.astype(np.float32) / np.float32(scale), np.float32(np.nan))


def write_bag(
    out: Path,
    frames: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
    count: int,
    metadata: Mapping[str, str],
    *,
    desc: str,
    storage: str = "sqlite3",
    image_format: str = "raw",
    gt_encoding: str = "32FC1",
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Write (rgb, depth, K, P) tuples as frames 0, 1, ... of a bag; returns the frame count."""
    from tqdm import tqdm

    with BagWriter(
        out, storage=storage, image_format=image_format, gt_encoding=gt_encoding,  # type: ignore[arg-type]
        metadata=metadata, overwrite=overwrite,
    ) as writer:  # fmt: skip
        for index, (rgb, depth, K, P) in enumerate(tqdm(frames, total=count, desc=desc, unit="frame", disable=not progress)):
            if depth.shape != rgb.shape[:2]:
                raise ConvertError(f"{desc} frame {index}: depth {depth.shape} and image {rgb.shape[:2]} sizes differ")
            writer.write(BagFrame(START_STAMP_NS + index * FRAME_PERIOD_NS, FRAME_ID, rgb, depth, K, P))
    return writer.frames_written


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_bag_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="bag directory to create")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--image-format", choices=("raw", "jpeg", "png"), default="raw",
                   help="RGB storage: raw rgb8 (default, exact) or compressed")
    p.add_argument("--gt-encoding", choices=("32FC1", "16UC1"), default="32FC1",
                   help="GT storage: 32FC1 metres (default, exact) or 16UC1 millimetres")
    p.add_argument("--limit", type=_positive, metavar="N", help="convert only the first N frames of the split")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="convert NYU Depth v2 or KITTI (Eigen split) to an evaluation bag",
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

    kitti = sub.add_parser(
        "kitti",
        help="KITTI raw drives + annotated depth, Eigen-style split file",
        description="KITTI frames of a split file (lines '<date>/<drive>_sync/image_02/data/N.png "
                    "<gt path or None> <focal>', as BTS eigen_test_files_with_gt.txt), intrinsics from "
                    "calib_cam_to_cam.txt P_rect_02, protocol kitti.",
    )
    _add_bag_options(kitti)
    kitti.add_argument("--raw-root", type=Path, required=True, help="folder holding <date>/<drive>_sync/ and <date>/calib_cam_to_cam.txt")
    kitti.add_argument("--gt-root", type=Path, required=True,
                       help="folder holding <drive>_sync/proj_depth/groundtruth/ (directly or under train/ or val/)")
    kitti.add_argument("--split-file", type=Path, required=True, help="e.g. eigen_test_files_with_gt.txt")
    kitti.add_argument("--split-name", default="eigen_test", help="split name recorded in the bag (default eigen_test)")
    kitti.add_argument("--kb-crop", action=argparse.BooleanOptionalAction, default=True,
                       help="store frames KB-cropped to 352x1216 as the official evaluation feeds the network "
                            "(default); --no-kb-crop keeps full frames (the scorer still crops GT)")
    kitti.set_defaults(func=_run_kitti)


def _bag_kwargs(args: argparse.Namespace) -> dict:
    return dict(storage=args.storage, image_format=args.image_format, gt_encoding=args.gt_encoding,
                overwrite=args.overwrite, limit=args.limit, progress=args.progress)


def _report(path: Path, frames: int, extra: str = "") -> int:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {frames} frames to {path} ({size / 1e6:.1f} MB){extra}")
    return 0


def _run_nyu(args: argparse.Namespace) -> int:
    from zoedepth_ros.data.convert_nyu import convert_nyu_labeled, convert_nyu_official

    if args.labeled is not None:
        if args.splits is None:
            raise ConvertError("--labeled needs --splits (splits.mat, or a text file of 1-based indices)")
        frames = convert_nyu_labeled(args.labeled, args.splits, args.out, split=args.split, depth=args.depth, **_bag_kwargs(args))
    else:
        if args.splits is not None:
            raise ConvertError("--splits goes with --labeled; an official_splits folder is split already")
        if args.depth != "raw":
            raise ConvertError("official_splits folders hold raw depth only; use --labeled for --depth filled")
        frames = convert_nyu_official(args.official_splits, args.out, split=args.split, **_bag_kwargs(args))
    return _report(args.out, frames)


def _run_kitti(args: argparse.Namespace) -> int:
    from zoedepth_ros.data.convert_kitti import convert_kitti

    frames, without_gt = convert_kitti(
        args.raw_root, args.gt_root, args.split_file, args.out,
        split_name=args.split_name, kb_crop_frames=args.kb_crop, **_bag_kwargs(args),
    )  # fmt: skip
    # Official evaluation keeps frames without GT in the list and skips them when scoring.
    return _report(args.out, frames, f"; {without_gt} without GT (skipped when scored)" if without_gt else "")

