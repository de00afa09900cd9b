"""`zoedepth-ros predict`: metric depth of an image file, a directory of images or a video, one
output per frame, optionally filtered over time as the depth node filters a camera's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from zoedepth_ros.argtypes import MODEL_HELP, add_engine_argument, add_precision_argument, device
from zoedepth_ros.depth_codec import depth_to_mm16
from zoedepth_ros.inference.temporal_filter import DEFAULT_TEMPORAL_FILTER, TEMPORAL_FILTERS

OUTPUT_FORMATS = (".npy", ".png")


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(
        name, help="predict metric depth for an image, a directory of images or a video",
        description="Run ZoeDepth on INPUT and write metric depth: .npy (float32 metres) or .png (uint16 "
                    "millimetres, 0 = invalid); optionally a colour picture of it. INPUT is an image file, a "
                    "directory of images (sorted by name) or a video file: for the last two, --output is a "
                    "directory that gets one file per frame, named after the image (or frame_NNNNNN).")
    p.add_argument("input", type=Path, help="image, directory of images, or video (anything OpenCV reads)")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--output", "-o", type=Path, required=True,
                   help="output .npy or .png for an image; a directory for a directory or a video")
    p.add_argument("--format", choices=[s[1:] for s in OUTPUT_FORMATS], default="npy",
                   help="with a directory or a video: each frame as .npy metres or .png millimetres (default npy)")
    p.add_argument("--colormap", type=Path,
                   help="also write a viewable colour PNG of the depth (a directory for a directory or a video)")
    p.add_argument("--temporal-filter", choices=TEMPORAL_FILTERS, default=DEFAULT_TEMPORAL_FILTER,
                   help="filter the frames' depth over time as the depth node's temporal_filter does "
                        "(docs/node.md); it restarts where the stamps start a new sequence. Without --hfov, "
                        "motion-ema averages a still camera's frames and passes a moving one's as predicted "
                        f"(default {DEFAULT_TEMPORAL_FILTER})")
    p.add_argument("--rate", type=float, default=10.0,
                   help="frame rate (Hz) of a directory of images, and of a video that states none: the stamps "
                        "the temporal filter sees (default 10)")
    p.add_argument("--hfov", type=float, metavar="DEG",
                   help="the camera's horizontal field of view (degrees): its intrinsics for the temporal filter, "
                        "which then follows a moving camera (without it, motion-ema averages a still camera's "
                        "frames only)")
    p.add_argument("--device", type=device, default="auto", help="auto, cpu or cuda[:N] (default auto)")
    add_precision_argument(p)
    add_engine_argument(p)
    p.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average with the mirrored image (official infer default: on)")
    p.add_argument("--pad", action=argparse.BooleanOptionalAction, default=True,
                   help="reflect-pad before the network (official infer default: on)")
    p.add_argument("--kitti-max-depth", type=float, help="override the KITTI head's maximum depth (metres)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def _write(depth: np.ndarray, output: Path, colormap: Path | None) -> None:
    import cv2

    from zoedepth_ros.colormap import colorize
    from zoedepth_ros.errors import ZoeDepthError

    if output.suffix == ".npy":
        np.save(output, depth)
    elif not cv2.imwrite(str(output), depth_to_mm16(depth)):
        raise ZoeDepthError(f"cannot write {output}")
    if colormap is not None and not cv2.imwrite(str(colormap), colorize(depth)[..., ::-1]):
        raise ZoeDepthError(f"cannot write {colormap}")


def run(args) -> int:
    from tqdm import tqdm

    from zoedepth_ros.camera_info import pinhole_from_hfov
    from zoedepth_ros.errors import ZoeDepthError
    from zoedepth_ros.image_sources import ImageSource
    from zoedepth_ros.inference import DepthEstimator
    from zoedepth_ros.inference.engines import load_source
    from zoedepth_ros.inference.temporal_filter import make_temporal_filter

    if not 0 < args.rate < float("inf"):
        raise ZoeDepthError(f"--rate must be a positive number of frames per second, not {args.rate}")
    if args.hfov is not None and not 0 < args.hfov < 180:
        raise ZoeDepthError(f"--hfov must be a field of view in (0, 180) degrees, not {args.hfov}")
    source = ImageSource(args.input, args.rate)
    single = source.kind == "image"
    if single and args.output.suffix not in OUTPUT_FORMATS:
        raise ZoeDepthError(f"--output must end in .npy or .png, not {args.output.name}")
    if not single and args.output.suffix in OUTPUT_FORMATS:
        raise ZoeDepthError(f"{args.input} is a {source.kind}: --output must be a directory, not {args.output.name}")
    estimator = DepthEstimator(load_source(args.model, args.kitti_max_depth), device=args.device,
                               precision=args.precision, flip_tta=args.flip_tta, pad=args.pad, engine=args.engine)
    if args.precision == "auto":
        print(f"precision {estimator.precision} ({estimator.precision_reason})", file=sys.stderr)
    flt = make_temporal_filter(args.temporal_filter)
    (args.output.parent if single else args.output).mkdir(parents=True, exist_ok=True)
    if args.colormap is not None:
        (args.colormap.parent if single else args.colormap).mkdir(parents=True, exist_ok=True)
    frames = low = high = 0
    for frame in tqdm(source, total=len(source) or None, desc=args.input.name, unit="frame",
                      disable=not args.progress or single):
        pred = estimator.predict(frame.rgb)
        height, width = pred.depth.shape
        K = None if args.hfov is None else np.reshape(pinhole_from_hfov(width, height, args.hfov).k, (3, 3))
        depth = flt.filter(pred.depth, frame.stamp_ns, K, frame.rgb)
        if single:
            _write(depth, args.output, args.colormap)
        else:
            _write(depth, args.output / f"{frame.name}.{args.format}",
                   None if args.colormap is None else args.colormap / f"{frame.name}.png")
        finite = depth[np.isfinite(depth)]
        low = min(low, float(finite.min())) if frames else float(finite.min())
        high = max(high, float(finite.max())) if frames else float(finite.max())
        frames += 1
    route = f", head {pred.domain}" if single and pred.domain else ""
    where = args.output if single else f"{frames} frames in {args.output}"
    print(f"{where}: {pred.depth.shape[1]}x{pred.depth.shape[0]}, depth {low:.2f}..{high:.2f} m{route}")
    return 0
