"""`make_engine`: the engine a configuration asks for, checked before anything heavy is loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..model.checkpoint import load_model
from ..model.zoedepth import ZoeDepth
from .engine_names import ENGINES, PRECISIONS
from .engines import EngineError, is_onnx_file, resolve_device
from .precision import choose_precision
from .torch_engine import TorchEngine


def make_engine(engine: str, model, device: str = "auto", precision: str = "fp32", compile: bool = False,
                compile_backend: str | Callable = "inductor", cache_dir: Path | None = None):
    """The engine `engine` for `model`: a ZoeDepth, any `load_model` source, or an exported `.onnx`.

    `precision` is one of engine_names.PRECISIONS; the engine's `precision` is the one it runs (auto
    resolved, precision.py) and its `precision_reason` says why."""
    if engine not in ENGINES:
        raise EngineError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if engine == "torch":
        if is_onnx_file(model):
            raise EngineError(f"{model}: an ONNX file runs with engine onnxruntime, openvino or tensorrt, not torch")
        device = resolve_device(device)
        precision, why = choose_precision("torch", precision, device.type == "cpu")
        if not isinstance(model, ZoeDepth):
            model = load_model(model, map_location="cpu")
        torch_engine = TorchEngine(model, device, precision, compile, compile_backend)
        torch_engine.precision_reason = why
        return torch_engine
    if compile:
        raise EngineError(f"compile applies to engine torch only; engine {engine!r} optimises its own graph")
    if engine == "tensorrt":
        from .tensorrt_engine import TensorRtEngine

        return TensorRtEngine(model, device, precision, cache_dir)
    from .onnx_engines import OnnxEngine

    return OnnxEngine(engine, model, device, precision, cache_dir)
