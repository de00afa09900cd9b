"""`zoedepth-ros export`: any model source to one self-contained ONNX file (see export.py)."""

from __future__ import annotations

import time
from pathlib import Path

from ..argtypes import at_least, hw_size


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(
        name, help="export a model to ONNX (encoder, decoder, heads and the NK router in one file)",
        description="Export MODEL (a preset from the weights cache, an official .pt, a Hugging Face "
                    "directory or repository id, a project .safetensors) to one ONNX file with static "
                    "shapes. Input: `pixels`, (BATCH, 3, H, W) float32 RGB in [0, 1] normalised with "
                    "mean 0.5 and std 0.5. Outputs: `depth` (BATCH, 1, H, W) metres, `logits` (NK: "
                    "router logits, each sample routed to its own head inside the graph) and with --std "
                    "`std` (BATCH, 1, H, W). The file's metadata holds what a loader needs.")
    p.add_argument("model", help="preset name, official .pt, Hugging Face directory or id, project .safetensors")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--size", type=hw_size, help="network input HxW, multiples of 32 (default: the model's "
                                                "img_size, 384x512 for N and NK, 384x768 for K)")
    p.add_argument("--batch", type=at_least(1), default=1, help="images per call (default 1)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16 stores the encoder and decoder in float16; the bins head stays float32")
    p.add_argument("--flip-tta", action="store_true",
                   help="average each image with its mirror inside the graph (twice the compute)")
    p.add_argument("--std", action="store_true", help="add the `std` output (per-pixel depth uncertainty)")
    p.add_argument("--kitti-max-depth", type=float, help="override the KITTI head's maximum depth (metres)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ZoeDepthError
    from .checkpoint import load_model
    from .export import export_onnx, read_export_info

    if args.output.suffix.lower() != ".onnx":
        raise ZoeDepthError(f"--output must end in .onnx, not {args.output.name}")
    started = time.perf_counter()
    print(f"loading {args.model} ...", flush=True)
    model = load_model(args.model, kitti_max_depth=args.kitti_max_depth)
    size = args.size or model.config.img_size
    print(f"exporting at {size[0]}x{size[1]}, batch {args.batch}, {args.precision}"
          f"{', flip TTA' if args.flip_tta else ''} (about a minute for the full model) ...", flush=True)
    export_onnx(model, args.output, size=size, batch=args.batch, precision=args.precision, flip_tta=args.flip_tta,
                with_std=args.std, source=str(args.model))
    info = read_export_info(args.output)  # what a loader will see
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s: "
          f"heads {', '.join(info.config.head_names)}, input pixels {info.batch}x3x{info.size[0]}x{info.size[1]}, "
          f"outputs {', '.join(info.outputs)}; run it with --engine onnxruntime, openvino or tensorrt")
    return 0
