"""Which precision an engine runs: `auto` resolved for this machine, and the checks that refuse a
precision the engine or the CPU cannot run natively. Importable without torch.

- `torch`: fp32, bf16 or fp16 autocast on any device (bf16 on a CPU without native bf16 is emulated
  by PyTorch: slow, but it is what was asked for); `auto` picks bf16 on a CPU with native bf16
  (AVX512_BF16 or AMX), fp32 otherwise (and on CUDA, where bf16 or fp16 are asked for explicitly).
- `openvino`: fp32 (the `f32` inference precision), fp16 (an fp16 export), bf16 (an fp32 export
  compiled with OpenVINO's `bf16` inference precision; CPUs with native bf16 only: elsewhere a
  configuration error naming the missing instruction sets, never OpenVINO's emulation), int8 (a
  calibrated int8 export); `auto` takes an exported file's own precision (bf16 for an fp32 file
  on a CPU with native bf16), and bf16 on such a CPU for a checkpoint, fp32 otherwise.
- `onnxruntime`: fp32, fp16 (`auto`: the file's, else fp32); `tensorrt`: fp32, fp16 (`auto`: the
  file's, else fp32).
"""

from __future__ import annotations

from .cpu_features import CpuFeatures, cpu_features
from .engine_names import EXPORT_OF, PRECISIONS

RUNS = {"torch": ("fp32", "bf16", "fp16"), "onnxruntime": ("fp32", "fp16"),
        "openvino": ("fp32", "bf16", "fp16", "int8"), "tensorrt": ("fp32", "fp16")}


def choose_precision(engine: str, asked: str, on_cpu: bool, file_precision: str | None = None,
                     features: CpuFeatures | None = None) -> tuple[str, str]:
    """(the precision `engine` runs, why) for the precision `asked`; ValueError when it cannot run it.

    `on_cpu`: the engine runs on the host CPU; `file_precision`: the precision of the exported file
    it was given (None for a checkpoint)."""
    from .engines import EngineError

    if asked not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, not {asked!r}")
    features = features or cpu_features()
    if asked == "auto":
        precision, why = _auto(engine, on_cpu, file_precision, features)
    else:
        precision, why = asked, "asked for"
    if precision not in RUNS[engine]:
        hint = (" (int8 runs with engine openvino)" if precision == "int8" else
                " (bf16 is for engines torch and openvino)" if precision == "bf16" else "")
        raise EngineError(f"precision {precision} does not run on engine {engine!r} (it runs "
                          f"{', '.join(RUNS[engine])}){hint}")
    if engine == "openvino" and precision == "bf16":
        if not on_cpu:
            raise EngineError("precision bf16 with engine openvino runs on CPUs with native bf16; on an Intel GPU "
                              "use fp16 (or set device cpu)")
        if not features.native_bf16:
            raise EngineError(f"precision bf16 with engine openvino needs a CPU with native bf16: "
                              f"{features.bf16_reason()}, and OpenVINO would emulate it many times slower. "
                              "Use precision fp32 or auto")
    if precision == "int8" and file_precision != "int8":
        raise EngineError("precision int8 runs an int8 export calibrated on your frames: write one with "
                          "`zoedepth-ros export MODEL -o model_int8.onnx --precision int8 --calibration BAG` "
                          "and set it as the model")
    if file_precision is not None and EXPORT_OF[precision] != file_precision:
        raise EngineError(f"the file was exported in {file_precision}; set precision {file_precision} "
                          f"{'or auto ' if precision != 'auto' else ''}to run it (asked for {asked})")
    return precision, why


def _auto(engine: str, on_cpu: bool, file_precision: str | None, features: CpuFeatures) -> tuple[str, str]:
    if file_precision in ("fp16", "int8"):
        return file_precision, f"auto: the exported file is {file_precision}"
    if engine in ("torch", "openvino") and on_cpu:
        if features.native_bf16:
            return "bf16", f"auto: {features.bf16_reason()} on this CPU"
        return "fp32", f"auto: {features.bf16_reason()}, so fp32"
    if engine in ("torch", "openvino"):
        return "fp32", "auto: fp32 off the CPU (ask for bf16 or fp16 explicitly on a GPU)"
    return "fp32", f"auto: engine {engine} runs fp32 unless given an fp16 export"
