"""argparse `type=` converters shared by the subcommands: a bad value is a usage error that says
what was expected, not a traceback."""

from __future__ import annotations

import argparse

# What `load_model` takes, in the help of every command that takes a model.
CHECKPOINT_HELP = "preset name, official .pt, Hugging Face directory or repository id, project .safetensors"
# ... and with an engine other than torch, an exported file.
MODEL_HELP = CHECKPOINT_HELP + ", or an export for --engine (docs/engines.md)"


def hw_size(text: str) -> tuple[int, int]:
    """`HxW` (e.g. 480x640) as (height, width), both positive."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 480x640, not {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, not {text!r}")
    return height, width


def at_least(minimum: int):
    """A converter of whole numbers not below `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


positive_int = at_least(1)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N (engine_names.DEVICE_PATTERN); whether CUDA is there is checked
    when the model loads."""
    from zoedepth_ros.inference.engine_names import DEVICE_PATTERN

    if not DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, not {text!r}")
    return text


def add_precision_argument(parser: argparse.ArgumentParser, help: str = "") -> None:
    """The `--precision` option of the commands that run the estimator (engine_names.PRECISIONS)."""
    from zoedepth_ros.inference.engine_names import PRECISIONS

    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help=(help + "; " if help else "") + "auto: the fastest this machine runs natively (bf16 "
                             "on a CPU with avx512_bf16 or amx_bf16 for torch and openvino, an export's own "
                             "precision), int8: an int8 export with engine openvino (default fp32)")


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    """The `--engine` option of the commands that run the estimator."""
    from zoedepth_ros.inference.engine_names import ENGINES

    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="what runs the network (default torch); the others take an exported .onnx (openvino "
                             "also an int8 .xml) as --model, or export the checkpoint once into the export cache")
