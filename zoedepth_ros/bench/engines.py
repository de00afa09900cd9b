"""The benchmark's engine candidates: our model exported to ONNX once (export time reported apart)
and run by ONNX Runtime / OpenVINO on the same input as the forward part, with their agreement
with our fp32 output on that input; `--parts parity` adds the full route-by-route check
(`engine_parity.check_engines`: both heads and a mixed batch against our float64).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def engine_candidates(ours, x, engines: list[str]) -> tuple[dict, dict[str, float], dict[str, dict]]:
    """(name -> timed callable, name -> export or load seconds, name -> agreement with ours fp32)."""
    import torch

    from zoedepth_ros.inference.onnx_engines import OnnxEngine
    from zoedepth_ros.model.export import export_onnx

    candidates, setup_s, agreement, runners = {}, {}, {}, {}
    # The sessions hold the model in memory once loaded: the file (1.3 GB at full size) goes at once.
    with tempfile.TemporaryDirectory(prefix="zoedepth-bench-") as workdir:
        path = Path(workdir) / "model.onnx"
        started = time.perf_counter()
        export_onnx(ours, path, size=tuple(x.shape[-2:]), batch=x.shape[0], with_std=False)
        setup_s["ONNX export"] = time.perf_counter() - started
        for engine in engines:
            started = time.perf_counter()
            runners[engine] = OnnxEngine(engine, path, device="cpu")
            setup_s[f"{engine} load"] = time.perf_counter() - started
    with torch.inference_mode():
        reference = ours(x).metric_depth
    for engine, runner in runners.items():
        name = f"{engine} fp32"
        candidates[name] = lambda runner=runner: runner(x, with_std=False)
        relative = ((runner(x, with_std=False).depth.double() - reference.double()).abs() / reference.double().abs())
        agreement[name] = {"median_rel": relative.median().item(), "max_rel": relative.max().item()}
    return candidates, setup_s, agreement


def bench_parity(ours, size, engines: list[str]) -> list[dict]:
    from zoedepth_ros.bench.engine_parity import check_engines

    with tempfile.TemporaryDirectory(prefix="zoedepth-parity-") as workdir:
        results = check_engines(ours, engines, size, Path(workdir))
    for r in results:
        print("  " + r.line())
    return [{**vars(r), "ok": r.ok} for r in results]
