"""`make_engine`: the engine a configuration asks for, checked before anything heavy is loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..model.checkpoint import load_model
from ..model.zoedepth import PRECISIONS, ZoeDepth
from .engine_names import ENGINES
from .engines import EngineError, is_onnx_file, resolve_device
from .torch_engine import TorchEngine


def make_engine(engine: str, model, device: str = "auto", precision: str = "fp32", compile: bool = False,
                compile_backend: str | Callable = "inductor", cache_dir: Path | None = None):
    """The engine `engine` for `model`: a ZoeDepth, any `load_model` source, or an exported `.onnx`."""
    if engine not in ENGINES:
        raise EngineError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if engine == "torch":
        if is_onnx_file(model):
            raise EngineError(f"{model}: an ONNX file runs with engine onnxruntime, openvino or tensorrt, not torch")
        if not isinstance(model, ZoeDepth):
            model = load_model(model, map_location="cpu")
        return TorchEngine(model, resolve_device(device), precision, compile, compile_backend)
    if compile:
        raise EngineError(f"compile applies to engine torch only; engine {engine!r} optimises its own graph")
    if precision == "bf16":
        raise EngineError(f"engine {engine!r} runs fp32 or fp16, not bf16 (bf16 is for engine torch)")
    if engine == "tensorrt":
        from .tensorrt_engine import TensorRtEngine

        return TensorRtEngine(model, device, precision, cache_dir)
    from .onnx_engines import OnnxEngine

    return OnnxEngine(engine, model, device, precision, cache_dir)
