"""`zoedepth-ros predict`: metric depth of one image file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from zoedepth_ros.argtypes import add_engine_argument
from zoedepth_ros.depth_codec import depth_to_mm16


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(
        name, help="predict metric depth for an image file",
        description="Run ZoeDepth on IMAGE and write metric depth: .npy (float32 metres) or .png "
                    "(uint16 millimetres, 0 = invalid); optionally a colour picture of it.")
    p.add_argument("image", type=Path, help="input image (any format OpenCV reads)")
    p.add_argument("--model", required=True,
                   help="preset name, official .pt, Hugging Face directory or project .safetensors")
    p.add_argument("--output", "-o", type=Path, required=True, help="output .npy or .png")
    p.add_argument("--colormap", type=Path, help="also write a viewable colour PNG of the depth")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    add_engine_argument(p)
    p.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average with the mirrored image (official infer default: on)")
    p.add_argument("--pad", action=argparse.BooleanOptionalAction, default=True,
                   help="reflect-pad before the network (official infer default: on)")
    p.add_argument("--kitti-max-depth", type=float, help="override the KITTI head's maximum depth (metres)")
    p.set_defaults(func=run)


def run(args) -> int:
    import cv2

    from zoedepth_ros.colormap import colorize
    from zoedepth_ros.errors import ZoeDepthError
    from zoedepth_ros.inference import DepthEstimator
    from zoedepth_ros.inference.engines import load_source

    if args.output.suffix not in (".npy", ".png"):
        raise ZoeDepthError(f"--output must end in .npy or .png, not {args.output.name}")
    bgr = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ZoeDepthError(f"cannot read image {args.image}")
    estimator = DepthEstimator(load_source(args.model, args.kitti_max_depth), device=args.device,
                               precision=args.precision, flip_tta=args.flip_tta, pad=args.pad, engine=args.engine)
    pred = estimator.predict(np.ascontiguousarray(bgr[..., ::-1]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.suffix == ".npy":
        np.save(args.output, pred.depth)
    elif not cv2.imwrite(str(args.output), depth_to_mm16(pred.depth)):
        raise ZoeDepthError(f"cannot write {args.output}")
    if args.colormap is not None and not cv2.imwrite(str(args.colormap), colorize(pred.depth)[..., ::-1]):
        raise ZoeDepthError(f"cannot write {args.colormap}")
    finite = pred.depth[np.isfinite(pred.depth)]
    route = f", head {pred.domain}" if pred.domain else ""
    print(f"{args.output}: {pred.depth.shape[1]}x{pred.depth.shape[0]}, "
          f"depth {finite.min():.2f}..{finite.max():.2f} m{route}")
    return 0
