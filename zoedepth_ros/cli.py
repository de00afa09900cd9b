"""The `zoedepth-ros` command line: one entry point, one subcommand per job.

Each subcommand lives in the module that implements the job and exposes
`add_parser(subparsers, name)`, which registers its parser and sets `func` to the
handler `func(args) -> int`. Only the chosen subcommand's module is imported, so a
command never pays for another's imports (torch, rclpy) and `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable

# subcommand name -> (module providing add_parser(), one-line help); ordered as shown in --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("zoedepth_ros.demo", "run the end-to-end demo: live node + replay over DDS, scored report"),
    "predict": ("zoedepth_ros.predict", "predict metric depth for an image file"),
    "node": ("zoedepth_ros.ros.depth_node", "run the ROS 2 depth node (pass ROS arguments after --ros-args)"),
    "synth": ("zoedepth_ros.data.synth", "write a synthetic indoor/outdoor bag with exact metric ground truth"),
    "convert": ("zoedepth_ros.data.convert", "convert NYU Depth v2 or KITTI to evaluation bags"),
    "evaluate": ("zoedepth_ros.eval.evaluate", "score a model or recorded depth on bags with the paper's protocol"),
    "replay": ("zoedepth_ros.ros.replay", "replay a bag through the live depth node and score it"),
    "train": ("zoedepth_ros.train.trainer", "train or fine-tune ZoeDepth (single process or torchrun)"),
    "benchmark": ("zoedepth_ros.benchmark", "time our engine against the transformers port (same weights)"),
    "weights": ("zoedepth_ros.model.weights_command", "manage model weights: fetch, convert, list the cache"),
    "export": ("zoedepth_ros.model.export_command", "export a model to ONNX (encoder, decoder, heads and router)"),
}


def build_parser(load: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; `load` limits which subcommand modules are imported (None: all)."""
    parser = argparse.ArgumentParser(
        prog="zoedepth-ros",
        description="Real-time metric depth (ZoeDepth) for ROS 2: inference, node, evaluation, training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    load = set(SUBCOMMANDS if load is None else load)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name in load:
            importlib.import_module(module).add_parser(sub, name)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    from zoedepth_ros.errors import ZoeDepthError

    argv = sys.argv[1:] if argv is None else argv
    chosen = [argv[0]] if argv and argv[0] in SUBCOMMANDS else []
    args = build_parser(chosen).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZoeDepthError as exc:
        print(f"zoedepth-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
