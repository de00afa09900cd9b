"""The `zoedepth-ros` command line: one entry point, one subcommand per job.

Each subcommand lives in the module that implements the job and exposes
`add_parser(subparsers)`, which registers its parser and sets `func` to the
handler `func(args) -> int`. Modules are imported lazily by name so that
`zoedepth-ros --help` stays fast and a subcommand never pays for another's
imports (torch, rclpy).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module providing add_parser(); ordered as shown in --help.
SUBCOMMANDS: dict[str, str] = {
    "predict": "zoedepth_ros.predict",
    "weights": "zoedepth_ros.model.weights",
    "synth": "zoedepth_ros.data.synth",
    "node": "zoedepth_ros.node",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoedepth-ros",
        description="Real-time metric depth (ZoeDepth) for ROS 2: inference, node, evaluation, training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(module).add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    from zoedepth_ros.errors import ZoeDepthError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZoeDepthError as exc:
        print(f"zoedepth-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
