"""What every engine shares: their output, errors, optional packages, devices and batch buckets.

The engines that run a ZoeDepth network for the estimator: one interface, four back ends.

An engine takes a batch of normalised pixels at the network size and returns metric depth, the
router's logits and the per-pixel std (`EngineOutput`); the estimator does all pre- and
post-processing around it, so those are identical whatever runs the network.

- `torch`: our PyTorch model (fp32, bf16/fp16 autocast, optionally torch.compile; torch_engine.py);
- `onnxruntime`, `openvino`: an ONNX export (see `onnx_engines.py`);
- `tensorrt`: a TensorRT engine built from an ONNX export (see `tensorrt_engine.py`).

The optional packages are imported only when their engine is asked for; a missing one is a
configuration error that names the package to install. `engine_factory.make_engine` picks one.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ..errors import ZoeDepthError
from ..model.checkpoint import load_model

# engine -> (module to import, pip package that provides it)
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime (or onnxruntime-gpu)"),
             "openvino": ("openvino", "openvino"), "tensorrt": ("tensorrt", "tensorrt")}


class EngineError(ZoeDepthError, ValueError):
    """An engine that cannot run as configured (missing package, device, precision)."""


@dataclass(frozen=True)
class EngineOptions:
    """How to run an engine: the options DepthEstimator and the benchmarks hand to make_engine."""

    device: str = "auto"  # auto, cpu, cuda[:N] (engine_names.DEVICE_PATTERN)
    precision: str = "fp32"  # one of engine_names.PRECISIONS; auto resolved by precision.py
    compile: bool = False  # torch only: torch.compile the model
    compile_backend: str | Callable = "inductor"
    cache_dir: Path | None = None  # where exports made from checkpoints are kept (export_cache.py)


@runtime_checkable
class Engine(Protocol):
    """What DepthEstimator needs of an engine (torch_engine, onnx_engines, tensorrt_engine)."""

    config: Any  # the model's ZoeDepthConfig (head names, image size)
    device: torch.device  # where its inputs go
    network_target: tuple[int, int]  # the size frames are resized around (the export's, for a file)
    flip_in_graph: bool  # the graph averages the mirrored image itself (an export with --flip-tta)
    precision: str  # the precision it runs (auto resolved)
    precision_reason: str  # why that one

    def __call__(self, pixels: torch.Tensor, with_std: bool) -> EngineOutput: ...

    def release(self) -> None: ...


@dataclass
class EngineOutput:
    depth: torch.Tensor  # (B, 1, H, W) float32 metres at the network size
    logits: torch.Tensor | None  # (B, n_heads) router logits; None for single-head models
    domain: torch.Tensor  # (B,) index of the head each sample went through
    std: torch.Tensor | None  # (B, 1, H, W) when asked for


def require(engine: str):
    """The engine's Python package, or EngineError saying which package to install."""
    module, package = _PACKAGES[engine]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineError(f"engine {engine!r} needs the Python package {package}: pip install {package.split()[0]} "
                          f"({exc})") from None


def read_export(path: Path, precision: str):
    """The checked metadata of an exported file an engine is asked to run in `precision` (bf16
    runs an fp32 file)."""
    from ..model.export import read_export_info
    from .engine_names import EXPORT_OF

    info = read_export_info(path)
    if info.precision != EXPORT_OF.get(precision, precision):
        raise EngineError(f"{path} was exported in {info.precision}; set precision {info.precision} "
                          f"to run it (asked for {precision})")
    return info


# What `zoedepth-ros export` writes: an ONNX file, or an int8 export as an OpenVINO IR (.xml + .bin).
EXPORT_SUFFIXES = (".onnx", ".xml")


def is_export_file(source) -> bool:
    """`source` names an exported file (`.onnx`, or an OpenVINO IR `.xml`) rather than a model."""
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in EXPORT_SUFFIXES


def is_openvino_ir(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".xml"


def check_file_engine(engine: str, source) -> None:
    """EngineError when `engine` cannot run the exported file `source`: an OpenVINO IR runs on
    engine openvino only; an `.onnx` on any engine but torch."""
    if is_openvino_ir(source) and engine != "openvino":
        raise EngineError(f"{source} is an OpenVINO IR (an int8 export written as .xml): run it with engine "
                          f"openvino (precision int8 or auto), not {engine}; for engine {engine} export the "
                          f"model to an .onnx (zoedepth-ros export MODEL -o NAME.onnx)")
    if is_export_file(source) and engine == "torch":
        raise EngineError(f"{source}: an ONNX file runs with engine onnxruntime, openvino or tensorrt, not torch")


def load_source(source, kitti_max_depth: float | None = None):
    """What an estimator takes for the command-line source `source`: the path of an exported
    `.onnx` or `.xml` as it is (its metadata fixes the model), any other source loaded with
    `load_model`."""
    if not is_export_file(source):
        return load_model(source, map_location="cpu", kitti_max_depth=kitti_max_depth)
    if kitti_max_depth is not None:
        raise EngineError(f"{source}: --kitti-max-depth applies when exporting (zoedepth-ros export "
                          "--kitti-max-depth), not to an exported file")
    return Path(source)


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EngineError(f"unsupported device {device!r}: use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise EngineError(f"unsupported device {device!r}: use auto, cpu or cuda[:N]")
    return dev


def batch_bucket(n: int) -> int:
    """Batch size a static-shape engine runs `n` images at: the next power of two."""
    return 1 << (n - 1).bit_length()
