"""Export MODEL (a preset from the weights cache, an official .pt, a Hugging Face directory or
repository id, a project .safetensors) to one ONNX file with static shapes, or with --precision
int8 -o NAME.xml to an OpenVINO IR (NAME.xml + NAME.bin, for the openvino engine).

Input: `pixels`, (BATCH, 3, H, W) float32 RGB in [0, 1] normalised with mean 0.5 and std 0.5.
Outputs: `depth` (BATCH, 1, H, W) metres, `logits` (NK: router logits, each sample routed to its
own head inside the graph) and with --std `std` (BATCH, 1, H, W). The file's metadata holds what a
loader needs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..argtypes import CHECKPOINT_HELP, at_least, hw_size
from ..inference.engine_names import EXPORT_PRECISIONS

DEFAULT_MAX_FRAMES = 300  # quantize.DEFAULT_MAX_FRAMES, without importing torch for --help


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="export a model to ONNX (encoder, decoder, heads, NK router: one file)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=CHECKPOINT_HELP)
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the .onnx file to write; with --precision int8 also NAME.xml: an OpenVINO IR (NAME.xml "
                        "and NAME.bin, engine openvino), quantized through NNCF's OpenVINO backend, which fits "
                        "the full model in less memory than the .onnx's calibration")
    p.add_argument("--size", type=hw_size, help="network input HxW, multiples of 32 (default: the model's "
                                                "img_size, 384x512 for N and NK, 384x768 for K)")
    p.add_argument("--batch", type=at_least(1), default=1, help="images per call (default 1)")
    p.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32",
                   help="fp16 stores the encoder and decoder in float16; int8 quantizes them with NNCF, "
                        "calibrated on the frames of --calibration (engine openvino); the bins head stays "
                        "float32 in both")
    p.add_argument("--calibration", nargs="+", type=Path, metavar="BAG",
                   help="int8: evaluation bags (zoedepth-ros convert / synth) whose frames calibrate the "
                        "quantization; use frames like the robot's, not the ones you evaluate it on")
    p.add_argument("--calibration-frames", type=at_least(1), default=DEFAULT_MAX_FRAMES,
                   help=f"int8: at most this many frames, spread over the bags (default {DEFAULT_MAX_FRAMES})")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--flip-tta", action="store_true",
                   help="average each image with its mirror inside the graph (twice the compute)")
    p.add_argument("--std", action="store_true", help="add the `std` output (per-pixel depth uncertainty)")
    p.add_argument("--kitti-max-depth", type=float, help="override the KITTI head's maximum depth (metres)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ZoeDepthError
    from .checkpoint import load_model
    from .export import export_onnx, read_export_info
    from .openvino_ir import IR_SUFFIX, ir_bytes

    suffix = args.output.suffix.lower()
    if suffix not in (".onnx", IR_SUFFIX):
        raise ZoeDepthError(f"--output must end in .onnx (or {IR_SUFFIX} for an int8 OpenVINO IR), not "
                            f"{args.output.name}")
    if suffix == IR_SUFFIX and args.precision != "int8":
        raise ZoeDepthError(f"--output {args.output.name}: an OpenVINO IR ({IR_SUFFIX}) is written for --precision "
                            f"int8 only; export {args.precision} to an .onnx (-o "
                            f"{args.output.with_suffix('.onnx').name}), which engine openvino runs too")
    if (args.precision == "int8") != bool(args.calibration):
        raise ZoeDepthError("--precision int8 needs --calibration BAG [BAG ...] (frames to calibrate on)"
                            if args.precision == "int8" else "--calibration applies to --precision int8")
    started = time.perf_counter()
    print(f"loading {args.model} ...", flush=True)
    model = load_model(args.model, kitti_max_depth=args.kitti_max_depth)
    size = args.size or model.config.img_size
    print(f"exporting at {size[0]}x{size[1]}, batch {args.batch}, {args.precision}"
          f"{', flip TTA' if args.flip_tta else ''} (about a minute for the full model) ...", flush=True)
    if args.precision == "int8":
        from .quantize import calibration_frames, quantize_int8

        frames, provenance = calibration_frames(args.calibration, args.calibration_frames, args.progress)
        print(f"calibrating on {len(frames)} frames of {len(args.calibration)} bag(s) with NNCF (the model runs "
              "twice on each frame: many minutes for the full model) ...", flush=True)
        quantize_int8(model, args.output, frames, size=size, batch=args.batch, flip_tta=args.flip_tta,
                      with_std=args.std, source=str(args.model), provenance=provenance)
    else:
        export_onnx(model, args.output, size=size, batch=args.batch, precision=args.precision,
                    flip_tta=args.flip_tta, with_std=args.std, source=str(args.model))
    info = read_export_info(args.output)  # what a loader will see
    size_bytes = ir_bytes(args.output) if suffix == IR_SUFFIX else args.output.stat().st_size
    wrote = f"{args.output} and its .bin" if suffix == IR_SUFFIX else str(args.output)
    print(f"wrote {wrote} ({size_bytes / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s: "
          f"heads {', '.join(info.config.head_names)}, input pixels {info.batch}x3x{info.size[0]}x{info.size[1]}, "
          f"outputs {', '.join(info.outputs)}, {info.precision}; run it with --engine "
          f"{'openvino' if info.precision == 'int8' else 'onnxruntime, openvino or tensorrt'}")
    return 0
