"""The benchmark's engine candidates: our model exported to ONNX once (export time reported apart)
and run by ONNX Runtime / OpenVINO on the same input as the forward part, in each --precision the
engine and this CPU run (`skipped_candidates` says which not and why), with their agreement with our
fp32 output on that input; `--parts parity` adds the full route-by-route check
(`engine_parity.check_engines`: both heads and a mixed batch against our float64).

OpenVINO bf16 compiles the fp32 export with the bf16 inference precision; int8 is the fp32 export
quantized with the scheme of `zoedepth-ros export --precision int8` (`model/quantize.py`) through
NNCF's OpenVINO backend (the export's ONNX backend does not fit in 24 GB at full size), calibrated
here on a few synthetic frames: enough for its speed, not for its accuracy (random weights say
nothing about that; `evaluate` on held-out bags does), compiled as the engine compiles an int8 file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

INT8_CALIBRATION_FRAMES = 4


def skipped_candidates(engines: list[str], precisions: list[str], features=None) -> dict[str, str]:
    """`ENGINE PRECISION` -> why it is not timed: the engine does not run that precision, or this CPU
    has no native instructions for it (`torch` is named `ours`)."""
    from zoedepth_ros.inference.cpu_features import cpu_features
    from zoedepth_ros.inference.precision import RUNS

    features = features or cpu_features()
    skipped = {}
    for engine in engines:
        for precision in precisions:
            name = f"{'ours' if engine == 'torch' else engine} {precision}"
            if precision not in RUNS[engine] or precision == "fp16":
                runs = " and ".join(p for p in RUNS[engine] if p != "fp16")
                skipped[name] = f"engine {engine} runs {runs} on a CPU" + (
                    "; int8 is an export that OpenVINO runs" if precision == "int8" else "")
            elif precision == "bf16" and not features.native_bf16:
                skipped[name] = f"{features.bf16_reason()}: bf16 would be emulated, many times slower"
            elif precision == "int8" and not features.fast_int8:
                skipped[name] = f"{features.int8_reason()}"
    return skipped


def calibration_images(size: tuple[int, int], n: int = INT8_CALIBRATION_FRAMES):
    """`n` structured RGB frames (gradients and noise) at `size` for a speed-only int8 calibration."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    return [np.clip(np.stack([xx * (i + 1) % 256, yy * 2 % 256, (xx + yy) % 256], -1)
                    + rng.integers(0, 40, (*size, 3)), 0, 255).astype(np.uint8) for i in range(n)]


def engine_candidates(ours, x, engines: list[str], precisions: tuple[str, ...] = ("fp32",),
                      skipped: dict[str, str] | None = None) -> tuple[dict, dict[str, float], dict[str, dict]]:
    """(name -> timed callable, name -> export or load seconds, name -> agreement with ours fp32) for
    each engine x precision not in `skipped`."""
    import torch

    from zoedepth_ros.inference.onnx_engines import OnnxEngine
    from zoedepth_ros.model.export import export_onnx

    skipped = skipped or {}
    wanted = [(e, p) for e in engines for p in precisions if f"{e} {p}" not in skipped]
    candidates, setup_s, agreement, runners = {}, {}, {}, {}
    size = tuple(x.shape[-2:])
    # The sessions hold the model in memory once loaded: the file (1.3 GB at full size) goes at once.
    with tempfile.TemporaryDirectory(prefix="zoedepth-bench-") as workdir:
        path, scopes = Path(workdir) / "model.onnx", {}
        started = time.perf_counter()
        export_onnx(ours, path, size=size, batch=x.shape[0], with_std=False, node_scopes=scopes)
        setup_s["ONNX export"] = time.perf_counter() - started
        for engine, precision in wanted:
            started = time.perf_counter()
            if precision == "int8":
                runners[f"{engine} {precision}"] = QuantizedOpenVino(path, scopes, x)
                setup_s[f"{engine} {precision} quantization (NNCF, {INT8_CALIBRATION_FRAMES} frames) and load"] = (
                    time.perf_counter() - started)
                continue
            runners[f"{engine} {precision}"] = OnnxEngine(engine, path, device="cpu", precision=precision)
            setup_s[f"{engine} {precision} load"] = time.perf_counter() - started
    with torch.inference_mode():
        reference = ours(x).metric_depth
    for name, runner in runners.items():
        candidates[name] = lambda runner=runner: runner(x, with_std=False)
        agreement[name] = relative_difference(runner(x, with_std=False).depth, reference)
    return candidates, setup_s, agreement


class QuantizedOpenVino:
    """The int8 candidate: the export at `path` quantized in memory (`quantize_openvino`), compiled
    with the inference precision the openvino engine gives an int8 file on this CPU."""

    def __init__(self, path: Path, scopes: dict[str, str], x):
        import openvino
        import torch

        from zoedepth_ros.inference.onnx_engines import openvino_hint
        from zoedepth_ros.model.quantize import quantize_openvino

        size = tuple(x.shape[-2:])
        model = quantize_openvino(path, scopes, calibration_images(size), size)
        self._compiled = openvino.Core().compile_model(model, "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": openvino_hint("int8", True),
            "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        self._request = self._compiled.create_infer_request()

    def __call__(self, x, with_std: bool = False):
        import torch

        result = self._request.infer({"pixels": x.detach().cpu().numpy()})
        return SimpleNamespace(depth=torch.from_numpy(np.array(result[self._compiled.output("depth")])))


def relative_difference(depth, reference) -> dict[str, float]:
    """Median and max of |depth - reference| / |reference| per pixel."""
    relative = (depth.double() - reference.double()).abs() / reference.double().abs()
    return {"median_rel": relative.median().item(), "max_rel": relative.max().item()}


def bench_parity(ours, size, engines: list[str]) -> list[dict]:
    from zoedepth_ros.bench.engine_parity import check_engines

    with tempfile.TemporaryDirectory(prefix="zoedepth-parity-") as workdir:
        results = check_engines(ours, engines, size, Path(workdir))
    for r in results:
        print("  " + r.line())
    return [{**vars(r), "ok": r.ok} for r in results]
