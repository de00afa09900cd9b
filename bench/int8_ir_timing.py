"""Time an int8 export against our eager fp32 forward on the same weights, in one process: the
figures of docs/engines.md ("int8", full size).

    .venv/bin/python bench/int8_ir_timing.py CHECKPOINT EXPORT [--iters 5] [--threads 2]

EXPORT (`.xml` or `.onnx`, from `zoedepth-ros export CHECKPOINT --precision int8 ...`) runs on
engine openvino as the node runs it (precision auto: int8, the float rest in bf16 where the CPU has
native bf16); CHECKPOINT runs as our PyTorch model in fp32. Both take the same random input at
the export's network size, batch 1, in interleaved rounds (one run of each per round, so that both
see the same load on a shared machine): median and max of --iters rounds after one warm-up each,
then the per-pixel relative difference of the int8 depth to the fp32 depth (random weights say
nothing about accuracy; `evaluate` on held-out bags does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zoedepth_ros.inference.engine_factory import make_engine
from zoedepth_ros.inference.engines import EngineOptions
from zoedepth_ros.model import load_model


def interleaved(fns: dict, iters: int) -> dict[str, tuple[float, float]]:
    """name -> (median, max) seconds of `fns`, run in turn in each of `iters` rounds after a warm-up."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: (statistics.median(t), max(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("export")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    engine = make_engine("openvino", args.export, EngineOptions(device="cpu", precision="auto"))
    print(f"openvino: load and compile {time.perf_counter() - started:.1f} s, precision {engine.precision} "
          f"({engine.precision_reason})")
    torch.manual_seed(0)
    x = torch.rand(1, 3, *engine.network_target) * 2 - 1
    model = load_model(args.checkpoint).eval()
    with torch.inference_mode():
        times = interleaved({"int8": lambda: engine(x, with_std=False), "fp32": lambda: model(x)}, args.iters)
        reference = model(x).metric_depth
    int8_depth = engine(x, with_std=False).depth
    (int8_median, int8_max), (fp32_median, fp32_max) = times["int8"], times["fp32"]
    relative = (int8_depth.double() - reference.double()).abs() / reference.double().abs()
    print(f"ours eager fp32: median {fp32_median * 1e3:.0f} ms (max {fp32_max * 1e3:.0f})")
    print(f"openvino {engine.precision}: median {int8_median * 1e3:.0f} ms (max {int8_max * 1e3:.0f}), "
          f"{int8_median / fp32_median:.3f}x ours fp32")
    print(f"depth against ours fp32: median relative difference {relative.median().item():.2e}, "
          f"max {relative.max().item():.2e}")


if __name__ == "__main__":
    main()
