"""`zoedepth-ros synth`: evaluation bags of procedural scenes with exact metric ground truth, for
testing the pipeline without datasets.

The scenes (`zoedepth_ros.data.synth_scenes`) are seen through NYU-like (indoor) or KITTI-like
(outdoor) cameras and written at 10 Hz stamps. Bags record the `synth_indoor` / `synth_outdoor`
protocols: the NYU eigen crop and the KITTI KB crop are tied to those datasets' image sizes, which
synthetic frames need not have. Without a motion every frame is a new scene; with one
(`zoedepth_ros.data.synth_motion`) one scene is seen along a camera trajectory, with camera noise
and the pose of every frame on `/ground_truth/pose`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from zoedepth_ros.argtypes import hw_size, positive_int
from zoedepth_ros.data.bag_layout import GT_ENCODINGS, BagFrame, GtEncoding, ImageFormat
from zoedepth_ros.data.bag_writer import BagWriter, Storage
from zoedepth_ros.data.synth_motion import DEFAULT_CUT_GAP_S, MOTIONS, Motion, cut_index, render_sequence
from zoedepth_ros.data.synth_scenes import RENDERERS, Kind
from zoedepth_ros.errors import ZoeDepthError
from zoedepth_ros.eval.protocols import get_protocol

# NYU Depth v2 RGB intrinsics at 480x640; KITTI P_rect_02 moved into the 352x1216 KB crop.
NYU_SIZE = (480, 640)
NYU_FOCAL = (518.8579, 519.4696)
NYU_CENTER = (325.5824, 253.7362)
KITTI_SIZE = (352, 1216)
KITTI_FOCAL = (721.5377, 721.5377)
KITTI_CENTER = (596.5593, 149.854)
DEFAULT_SIZE = {"indoor": NYU_SIZE, "outdoor": KITTI_SIZE}
FRAME_ID = "camera_optical_frame"
START_STAMP_NS = 1_700_000_000 * 10**9
FRAME_PERIOD_NS = 100_000_000  # 10 Hz, KITTI's rate


def default_intrinsics(kind: Kind, height: int, width: int) -> np.ndarray:
    """NYU-like (indoor) or KITTI-like (outdoor) K, scaled to height x width."""
    (base_h, base_w), (fx, fy), (cx, cy) = {
        "indoor": (NYU_SIZE, NYU_FOCAL, NYU_CENTER),
        "outdoor": (KITTI_SIZE, KITTI_FOCAL, KITTI_CENTER),
    }[kind]
    sx, sy = width / base_w, height / base_h
    return np.array([[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]])


def write_synth_bag(
    path: str | Path,
    kind: Kind = "indoor",
    frames: int = 10,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    storage: Storage = "sqlite3",
    image_format: ImageFormat = "raw",
    gt_encoding: GtEncoding = "32FC1",
    overwrite: bool = False,
    progress: bool = True,
    start_ns: int = START_STAMP_NS,
    motion: Motion | None = None,
    cut_gap_s: float = DEFAULT_CUT_GAP_S,
) -> Path:
    """Write `frames` rendered frames (10 Hz stamps from `start_ns`) as an evaluation bag; returns its
    path. Without `motion`, a new scene per frame; with one, a sequence with poses
    (`zoedepth_ros.data.synth_motion`; `cut_gap_s` is the extra gap in the stamps of a cut)."""
    from tqdm import tqdm

    if kind not in RENDERERS:
        raise ValueError(f"kind must be 'indoor' or 'outdoor', not {kind!r}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if motion is not None and motion not in MOTIONS:
        raise ValueError(f"motion must be one of {', '.join(MOTIONS)}, not {motion!r}")
    height, width = size or DEFAULT_SIZE[kind]
    K = default_intrinsics(kind, height, width)
    metadata = {
        **get_protocol(f"synth_{kind}").to_metadata(),
        "split": "synth",
        "generator": "zoedepth_ros.data.synth",
        "kind": kind,
        "seed": str(seed),
    }
    if motion is not None:
        metadata["motion"] = motion
        if motion == "cut":
            metadata.update(cut_index=str(cut_index(frames)), cut_gap_s=repr(float(cut_gap_s)))
        sequence = render_sequence(kind, motion, frames, seed, height, width, K, FRAME_PERIOD_NS, cut_gap_s)
    with BagWriter(
        path, storage=storage, image_format=image_format, gt_encoding=gt_encoding, metadata=metadata,
        overwrite=overwrite,
    ) as writer:
        desc = f"synth {kind}" if motion is None else f"synth {kind} {motion}"
        if motion is None:
            rng = np.random.default_rng(seed)
            for index in tqdm(range(frames), desc=desc, unit="frame", disable=not progress):
                rgb, depth = RENDERERS[kind](rng, height, width, K)
                writer.write(BagFrame(start_ns + index * FRAME_PERIOD_NS, FRAME_ID, rgb, depth, K, None))
        else:
            for frame in tqdm(sequence, total=frames, desc=desc, unit="frame", disable=not progress):
                writer.write(BagFrame(start_ns + frame.offset_ns, FRAME_ID, frame.rgb, frame.depth, K, None,
                                      pose=frame.pose))
    return Path(path)


# --- command line ---------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="write a bag of procedurally rendered frames with exact metric ground truth",
        description=(
            "Render indoor rooms (NYU-like camera, 0-10 m) or outdoor streets (KITTI-like camera, "
            "0-80 m, sky without GT) and write them as an evaluation bag (docs/bag-layout.md). "
            "Without --motion every frame is a new scene; with it, one scene seen along a camera "
            "trajectory, each frame with its pose on /ground_truth/pose and camera noise."
        ),
    )
    p.add_argument("out", type=Path, help="bag directory to create")
    p.add_argument("--kind", choices=tuple(RENDERERS), default="indoor")
    p.add_argument("--frames", type=positive_int, default=10, help="number of frames, 10 Hz stamps (default 10)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same frames (default 0)")
    p.add_argument("--size", type=hw_size, metavar="HxW", help="image size (default 480x640 indoor, 352x1216 outdoor)")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--image-format", choices=("raw", "jpeg", "png"), default="raw")
    p.add_argument("--gt-encoding", choices=GT_ENCODINGS, default="32FC1",
                   help="ground truth as 32FC1 metres, 16UC1 millimetres, or image_transport's compressedDepth "
                        "PNG up to the protocol's max_depth (default 32FC1)")
    p.add_argument(
        "--motion", choices=MOTIONS,
        help="one scene along a camera trajectory: static (camera still), forward (1.4 m/s indoor, 10 m/s "
             "outdoor), turn (in place, 30 deg/s), fast (forward at 4x with a swaying view, 120 deg/s peak), "
             "cut (half the frames in one scene, half in another, static camera); shot and read noise and "
             "exposure drift on every frame (default: a new scene per frame, no noise, no poses)",
    )  # fmt: skip
    p.add_argument("--cut-gap", type=_seconds, metavar="SECONDS",
                   help=f"with --motion cut: extra seconds in the stamps between the two scenes (default "
                        f"{DEFAULT_CUT_GAP_S}, a new sequence for the node; 0: consecutive stamps)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.set_defaults(func=_run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not 0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text}")
    return value


def _run(args: argparse.Namespace) -> int:
    if args.cut_gap is not None and args.motion != "cut":
        raise ZoeDepthError("--cut-gap needs --motion cut")
    path = write_synth_bag(
        args.out,
        kind=args.kind,
        frames=args.frames,
        seed=args.seed,
        size=args.size,
        storage=args.storage,
        image_format=args.image_format,
        gt_encoding=args.gt_encoding,
        overwrite=args.overwrite,
        motion=args.motion,
        cut_gap_s=DEFAULT_CUT_GAP_S if args.cut_gap is None else args.cut_gap,
    )
    print(f"wrote {args.frames} {args.kind} frames to {path}")
    return 0
