"""The benchmark's forward part: the model forward at the network size, ours against the port, in
fp32 and bf16 autocast, with --compile ours under torch.compile (its compile time reported
apart), and with --engines our model exported to ONNX and run by ONNX Runtime / OpenVINO.
"""

from __future__ import annotations

import time

from zoedepth_ros.bench.timing import interleaved, ratio_rows


def bench_forward(ours, port, size, precisions, iters, warmup, compile=False,
                  engines: tuple[str, ...] = (), engine_precisions: tuple[str, ...] = ("fp32",),
                  skipped: dict[str, str] | None = None) -> tuple[list[dict], dict, dict]:
    """Rows of the forward table, the set-up time (s) of each candidate that has one (compilation,
    ONNX export), and each reduced-precision or ONNX candidate's agreement with our fp32 on the timed
    input. `precisions`: ours (and the port's); `engine_precisions`: the ONNX engines', less `skipped`."""
    import torch

    from zoedepth_ros.inference.torch_engine import compile_model
    from zoedepth_ros.model.zoedepth import low_precision_copy

    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    candidates, refs, compile_s, reduced = {}, {}, {}, {}
    for precision in precisions:
        dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
        # Our engine's reduced precision: weights stored in bf16 once, autocast for the rest;
        # the port gets plain autocast, which is how it is used.
        engine = ours if dtype is None else low_precision_copy(ours, dtype)
        reduced[precision] = engine

        def run(model, call, dtype=dtype):
            def fn():
                with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    call(model)
            return fn

        ours_variants = {f"ours {precision}": engine}
        if compile:
            name = f"ours {precision} compiled"
            ours_variants[name] = compile_model(engine, torch.device("cpu"))
            started = time.perf_counter()
            run(ours_variants[name], lambda m: m(x))()  # the compilation itself, outside the timed rounds
            compile_s[name] = time.perf_counter() - started
        for name, model in ours_variants.items():
            candidates[name] = run(model, lambda m: m(x))
            if name != "ours fp32" and "fp32" in precisions:
                refs[name] = {"vs ours fp32": "ours fp32"}
        if port is not None:
            candidates[f"port {precision}"] = run(port, lambda m: m(pixel_values=x))
            for name in ours_variants:
                refs[name] = {**refs.get(name, {}), f"vs port {precision}": f"port {precision}"}
                if precision != "fp32" and "fp32" in precisions:
                    refs[name]["vs port fp32"] = "port fp32"
    agreement = {}
    if "fp32" in precisions and len(precisions) > 1:
        from zoedepth_ros.bench.engines import relative_difference

        with torch.inference_mode():
            reference = ours(x).metric_depth
        for precision in precisions:
            if precision != "fp32":
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    depth = reduced[precision](x).metric_depth
                agreement[f"ours {precision}"] = relative_difference(depth, reference)
    if engines:
        from zoedepth_ros.bench.engines import engine_candidates

        timed, setup_s, engine_agreement = engine_candidates(ours, x, list(engines), engine_precisions, skipped)
        agreement.update(engine_agreement)
        compile_s.update(setup_s)
        candidates.update(timed)
        for name in timed:
            refs[name] = {"vs ours fp32": "ours fp32", **({"vs port fp32": "port fp32"} if port is not None else {})}
    return ratio_rows(interleaved(candidates, iters, warmup), refs), compile_s, agreement
