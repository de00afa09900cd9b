"""`make_engine`: the engine a configuration asks for, checked before anything heavy is loaded."""

from __future__ import annotations

from ..model.checkpoint import load_model
from ..model.zoedepth import ZoeDepth
from .engine_names import ENGINES, PRECISIONS
from .engines import Engine, EngineError, EngineOptions, check_file_engine, resolve_device
from .precision import choose_precision
from .torch_engine import TorchEngine

DEFAULT_OPTIONS = EngineOptions()


def make_engine(engine: str, model, options: EngineOptions = DEFAULT_OPTIONS) -> Engine:
    """The engine `engine` for `model`: a ZoeDepth, any `load_model` source, or an exported `.onnx`
    (or int8 OpenVINO IR `.xml`, engine openvino).

    `options.precision` is one of engine_names.PRECISIONS; the engine's `precision` is the one it runs
    (auto resolved, precision.py) and its `precision_reason` says why."""
    if engine not in ENGINES:
        raise EngineError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if options.precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, not {options.precision!r}")
    check_file_engine(engine, model)
    if engine == "torch":
        device = resolve_device(options.device)
        precision, why = choose_precision("torch", options.precision, device.type == "cpu")
        if not isinstance(model, ZoeDepth):
            model = load_model(model, map_location="cpu")
        return TorchEngine(model, device, precision, options.compile, options.compile_backend, precision_reason=why)
    if options.compile:
        raise EngineError(f"compile applies to engine torch only; engine {engine!r} optimises its own graph")
    if engine == "tensorrt":
        from .tensorrt_engine import TensorRtEngine

        return TensorRtEngine(model, options.device, options.precision, options.cache_dir)
    from .onnx_engines import OnnxEngine

    return OnnxEngine(engine, model, options.device, options.precision, options.cache_dir)
