"""The benchmark's engine candidates: our model exported to ONNX once (export time reported apart)
and run by ONNX Runtime / OpenVINO on the same input as the forward part, in each --precision the
engine and this CPU run (`skipped_candidates` says which not and why), with their agreement with our
fp32 output on that input; `--parts parity` adds the full route-by-route check
(`engine_parity.check_engines`: both heads and a mixed batch against our float64).

OpenVINO bf16 compiles the fp32 export with the bf16 inference precision; int8 is the export
quantized with NNCF (`model/quantize.py`), calibrated here on a few synthetic frames: enough for its
speed, not for its accuracy (random weights say nothing about that; `evaluate` on held-out bags does).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

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
    import numpy as np

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
        files = {"fp32": Path(workdir) / "model.onnx", "int8": Path(workdir) / "model_int8.onnx"}
        if any(p != "int8" for _, p in wanted):
            started = time.perf_counter()
            export_onnx(ours, files["fp32"], size=size, batch=x.shape[0], with_std=False)
            setup_s["ONNX export"] = time.perf_counter() - started
        if any(p == "int8" for _, p in wanted):
            from zoedepth_ros.model.quantize import quantize_int8

            started = time.perf_counter()
            quantize_int8(ours, files["int8"], calibration_images(size), size=size, batch=x.shape[0],
                          with_std=False, provenance={"bags": {}, "frames": INT8_CALIBRATION_FRAMES,
                                                      "note": "benchmark: synthetic frames, speed only"})
            setup_s["int8 export (NNCF, 4 frames)"] = time.perf_counter() - started
        for engine, precision in wanted:
            started = time.perf_counter()
            runners[f"{engine} {precision}"] = OnnxEngine(engine, files["int8" if precision == "int8" else "fp32"],
                                                          device="cpu", precision=precision)
            setup_s[f"{engine} {precision} load"] = time.perf_counter() - started
    with torch.inference_mode():
        reference = ours(x).metric_depth
    for name, runner in runners.items():
        candidates[name] = lambda runner=runner: runner(x, with_std=False)
        agreement[name] = relative_difference(runner(x, with_std=False).depth, reference)
    return candidates, setup_s, agreement


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
