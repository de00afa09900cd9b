"""The prepared GPU check (`bench/gpu_check.sh`): correctness, then speed side by side, in one run.

Correctness, on the device: CUDA fp32 against CPU fp32; bf16 and fp16 against fp32 (AbsRel and
delta1 on camera-like frames); ONNX Runtime and TensorRT against PyTorch; per-sample routing of a
mixed indoor/outdoor batch in every engine; no NaN or inf on black, white and noise frames.
Speed, interleaved rounds at the network size, batch 1: eager fp32, eager bf16, compiled bf16
(CUDA graphs), ONNX Runtime (CUDA provider), TensorRT fp16, the transformers port eager fp32; the
estimator on a 640x480 frame; the node end to end over DDS at 640x480 with depth + cloud (FPS,
latency p50/p99, the node's peak GPU memory); several cameras (N = 1, 2, 4) served by one node
against N single-camera nodes (`zoedepth_ros.bench.multicam`: per-camera FPS and age, RSS and GPU
memory against one single-camera node's). Writes gpu_check.json and gpu_check.md to --out.

`--dry-run` runs every part that does not need a GPU on the CPU with a tiny model (the test suite
does, so that the script cannot rot); the GPU-only rows are then reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _frames() -> dict[str, np.ndarray]:
    from zoedepth_ros.bench.timing import camera_frame

    rng = np.random.default_rng(0)
    return {"camera": camera_frame(480, 640), "black": np.zeros((480, 640, 3), np.uint8),
            "white": np.full((480, 640, 3), 255, np.uint8),
            "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)}


def _agreement(got: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """AbsRel of `got` against `expected` and the share of pixels within 1.25x (delta1)."""
    ratio = np.maximum(got / expected, expected / got)
    return {"abs_rel": float(np.mean(np.abs(got - expected) / expected)), "delta1": float(np.mean(ratio < 1.25)),
            "max_rel": float(np.max(np.abs(got - expected) / expected))}


class GpuCheck:
    def __init__(self, args):
        import torch

        from zoedepth_ros.bench.models import arch_config, build_models
        from zoedepth_ros.model import ZoeDepth

        self.args, self.torch = args, torch
        self.device = "cpu" if args.dry_run else "cuda"
        # Our own initialisation, whose depth maps vary (the port's gives near-constant depth); the
        # port keeps its own random weights: speed does not depend on their values.
        self.port = build_models(args.arch, reference=True)[1]
        torch.manual_seed(1)
        self.ours = ZoeDepth(arch_config(args.arch)).eval()
        self.results: dict = {"arch": args.arch, "device": self.device, "dry_run": args.dry_run,
                              "checks": [], "timing": [], "skipped": []}
        self.workdir = Path(tempfile.mkdtemp(prefix="zoedepth-gpu-check-"))
        self.frames = _frames()

    # -- bookkeeping

    def check(self, name: str, ok: bool, **figures) -> None:
        self.results["checks"].append({"name": name, "ok": bool(ok), **figures})
        print(f"  {'ok  ' if ok else 'FAIL'} {name} {json.dumps(figures)}", flush=True)

    def skip(self, name: str, why: str) -> None:
        self.results["skipped"].append({"name": name, "why": why})
        print(f"  skip {name}: {why}", flush=True)

    def estimator(self, **options):
        from zoedepth_ros.inference import DepthEstimator

        return DepthEstimator(self.ours, device=options.pop("device", self.device),
                              cache_dir=self.workdir / "cache", **options)

    def engines(self) -> list[tuple[str, str]]:
        """(engine, precision) pairs to check and time here, besides eager PyTorch."""
        if not hasattr(self, "_engines"):
            self._engines = self._find_engines()
        return self._engines

    def _find_engines(self) -> list[tuple[str, str]]:
        import importlib.util

        found = []
        if importlib.util.find_spec("onnxruntime") is not None:
            found.append(("onnxruntime", "fp32"))
        if self.device == "cuda" and importlib.util.find_spec("tensorrt") is not None:
            found += [("tensorrt", "fp32"), ("tensorrt", "fp16")]
        elif self.device == "cuda":
            self.skip("tensorrt", "the tensorrt package is not installed")
        else:
            self.skip("tensorrt", "needs an NVIDIA GPU")
        return found

    # -- correctness

    def correctness(self) -> None:
        print("correctness", flush=True)
        camera = self.frames["camera"]
        reference = self.estimator(precision="fp32").predict(camera).depth
        if self.device == "cuda":
            cpu = self.estimator(device="cpu").predict(camera).depth
            self.check("CUDA fp32 vs CPU fp32", _agreement(reference, cpu)["max_rel"] < 1e-3,
                       **_agreement(reference, cpu))
        else:
            self.skip("CUDA fp32 vs CPU fp32", "no GPU (dry run)")
        for precision in ("bf16", "fp16"):
            if self.device == "cpu" and precision == "fp16":
                self.skip("fp16 vs fp32", "fp16 autocast is a GPU precision")
                continue
            got = self.estimator(precision=precision).predict(camera).depth
            figures = _agreement(got, reference)
            self.check(f"{precision} vs fp32", figures["abs_rel"] < 0.02 and figures["delta1"] > 0.99, **figures)
        for engine, precision in self.engines():
            est = self.estimator(engine=engine, precision=precision)
            figures = _agreement(est.predict(camera).depth, reference)
            limit = 1e-4 if precision == "fp32" and engine == "onnxruntime" else 0.02
            self.check(f"{engine} {precision} vs torch fp32", figures["abs_rel"] < limit, **figures)
        self.routing()
        self.finite()

    def routing(self) -> None:
        """A mixed batch: each engine routes each sample as PyTorch does."""
        import copy

        from zoedepth_ros.bench.engine_parity import split_routes
        from zoedepth_ros.inference.engine_factory import make_engine
        from zoedepth_ros.inference.engines import EngineOptions

        if not self.ours.config.routed:
            self.skip("per-sample routing", f"{self.args.arch} has one head")
            return
        model = copy.deepcopy(self.ours)
        batch = split_routes(model, tuple(self.args.size))["mixed batch"]
        torch = self.torch
        with torch.inference_mode():
            expected = model(batch).domain.tolist()
        for engine, precision in [("torch", "fp32"), *self.engines()]:
            options = EngineOptions(self.device, precision, cache_dir=self.workdir / "routing")
            runner = make_engine(engine, model, options)
            with torch.inference_mode():
                got = runner(batch.to(runner.device), with_std=False).domain.tolist()
            self.check(f"per-sample routing, {engine} {precision}", got == expected and len(set(got)) == 2,
                       expected=expected, got=got)

    def finite(self) -> None:
        for engine, precision in [("torch", "fp32"), *([("torch", "bf16")]), *self.engines()]:
            est = self.estimator(engine=engine, precision=precision)
            bad = [name for name, frame in self.frames.items()
                   if not np.isfinite(est.predict(frame, with_std=True).depth).all()]
            self.check(f"finite depth on black/white/noise, {engine} {precision}", not bad, non_finite=bad)

    # -- speed

    def timing(self) -> None:
        from zoedepth_ros.bench.timing import interleaved, ratio_rows
        from zoedepth_ros.inference.engine_factory import make_engine
        from zoedepth_ros.inference.engines import EngineOptions
        from zoedepth_ros.inference.torch_engine import compile_model
        from zoedepth_ros.model.zoedepth import low_precision_copy

        torch = self.torch
        print("timing", flush=True)
        device = torch.device(self.device)
        x = torch.randn(1, 3, *self.args.size, generator=torch.Generator().manual_seed(0)).to(device)
        fp32 = self.ours.to(device)
        bf16 = low_precision_copy(fp32, torch.bfloat16)

        def timed(call, dtype=None):
            def run():
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    call()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            return run

        candidates = {"eager fp32": timed(lambda: fp32(x)), "eager bf16": timed(lambda: bf16(x), torch.bfloat16)}
        if self.args.compile:
            compiled = compile_model(bf16, device)
            started = time.perf_counter()
            timed(lambda: compiled(x), torch.bfloat16)()
            self.results["compile_s"] = time.perf_counter() - started
            candidates["compiled bf16" + (" (CUDA graphs)" if device.type == "cuda" else "")] = timed(
                lambda: compiled(x.clone()), torch.bfloat16)
        for engine, precision in self.engines():
            options = EngineOptions(self.device, precision, cache_dir=self.workdir / "cache")
            runner = make_engine(engine, self.ours, options)
            host = x.to(runner.device)
            runner(host, with_std=False)  # export / build outside the timed rounds
            candidates[f"{engine} {precision}"] = timed(lambda runner=runner, host=host: runner(host, with_std=False))
        port = self.port.to(device)
        candidates["transformers port fp32"] = timed(lambda: port(pixel_values=x))
        refs = {name: {"vs eager fp32": "eager fp32", "vs port fp32": "transformers port fp32"} for name in candidates}
        rows = ratio_rows(interleaved(candidates, self.args.iters, warmup=2), refs)
        self.results["timing"] = rows
        for row in rows:
            print(f"  {row['name']:<28} {row['median_ms']:8.2f} ms  {row['vs eager fp32']:.3f}x eager fp32", flush=True)
        self.ours.cpu()
        self.port.cpu()

    def estimator_timing(self) -> None:
        from zoedepth_ros.bench.timing import interleaved, summary

        camera = self.frames["camera"]
        options = {"fp32": dict(precision="fp32"), "bf16": dict(precision="bf16")}
        options.update({f"{e} {p}": dict(engine=e, precision=p) for e, p in self.engines()})
        estimators = {name: self.estimator(**kw) for name, kw in options.items()}
        for est in estimators.values():
            est.predict(camera)
        times = interleaved({n: (lambda e=e: e.predict(camera)) for n, e in estimators.items()},
                            self.args.iters, warmup=1)
        self.results["estimator_640x480"] = {name: summary(samples) for name, samples in times.items()}

    def node(self) -> None:
        from zoedepth_ros.bench.gpu_memory import GpuMemoryPeak, is_node_process
        from zoedepth_ros.bench.node import bench_node
        from zoedepth_ros.ros.processes import shipped_dds_profile

        peak = GpuMemoryPeak(is_node_process) if self.device == "cuda" else None
        params = {"precision": "bf16"} if self.device == "cuda" else {}
        profile = str(shipped_dds_profile())
        try:
            result = bench_node(self.args.arch, tuple(self.args.size), (480, 640), self.args.node_frames, warmup=5,
                                rate_s=1 / 30, profile=profile, device=self.device, node_params=params)
        finally:
            if peak is not None:
                peak.stop()
        result["node_params"], result["dds_profile"] = params, profile
        if peak is not None:
            result["node_peak_gpu_mib"] = max(peak.peak_mib.values(), default=0)
        self.results["node"] = result

    def multicam(self) -> None:
        from zoedepth_ros.bench.multicam import bench_multicam
        from zoedepth_ros.ros.processes import shipped_dds_profile

        params = {"precision": "bf16"} if self.device == "cuda" else {}
        counts = [int(c) for c in self.args.multicam_cameras.split(",")]
        profile = str(shipped_dds_profile())
        rows = bench_multicam(self.args.arch, tuple(self.args.size), (480, 640), counts, rate_hz=30.0,
                              duration_s=self.args.multicam_seconds, profile=profile,
                              device=self.device, node_params=params)
        self.results["multicam"] = {"node_params": params, "rate_hz": 30.0, "seconds": self.args.multicam_seconds,
                                    "dds_profile": profile, "rows": rows}

    # -- report

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(self.results, indent=2))
        lines = [f"# GPU check: {self.results.get('machine', '')}", "",
                 f"{self.args.arch} at {self.args.size[0]}x{self.args.size[1]}, device {self.device}"
                 f"{' (dry run)' if self.args.dry_run else ''}", "", "| check | result |", "|---|---|"]
        lines += [f"| {c['name']} | {'ok' if c['ok'] else 'FAIL'} |" for c in self.results["checks"]]
        lines += ["", "| forward, batch 1 | median ms | vs eager fp32 | vs port fp32 |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['median_ms']:.2f} | {r['vs eager fp32']:.3f}x | {r['vs port fp32']:.3f}x |"
                  for r in self.results["timing"]]
        node = self.results.get("node")
        if node:
            depth, cloud, loop = node["depth"], node["depth+cloud"], node["open_loop"]
            lines += ["", "| node 640x480 | p50 ms | p99 ms |", "|---|---|---|",
                      f"| depth | {depth['p50_ms']:.1f} | {depth['p99_ms']:.1f} |",
                      f"| depth + cloud | {cloud['p50_ms']:.1f} | {cloud['p99_ms']:.1f} |", "",
                      f"open loop: {loop['output_hz']:.1f} FPS out of {loop['sent_hz']:.0f} Hz sent"
                      + (f"; node peak GPU memory {node['node_peak_gpu_mib']} MiB" if "node_peak_gpu_mib" in node
                         else "")]
        multicam = self.results.get("multicam")
        if multicam:
            from zoedepth_ros.bench.multicam import markdown_rows

            lines += ["", f"several cameras, 640x480 at {multicam['rate_hz']:g} Hz each, "
                      f"{multicam['seconds']:g} s per setup:", "", *markdown_rows(multicam["rows"])]
        if self.results["skipped"]:
            lines += ["", "Skipped: " + "; ".join(f"{s['name']} ({s['why']})" for s in self.results["skipped"])]
        (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")


def main(argv: list[str] | None = None) -> int:
    from zoedepth_ros.argtypes import hw_size
    from zoedepth_ros.bench.report import machine

    p = argparse.ArgumentParser(prog="python -m zoedepth_ros.bench.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--dry-run", action="store_true", help="CPU only, tiny model: what runs without a GPU")
    p.add_argument("--arch", help="architecture (default ZoeD_M12_NK; tiny-NK with --dry-run)")
    p.add_argument("--size", type=hw_size, help="network input HxW (default 384x512; 192x256 with --dry-run)")
    p.add_argument("--iters", type=int, default=20, help="timed rounds (default 20)")
    p.add_argument("--node-frames", type=int, default=100, help="closed-loop frames of the node part")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled bf16 row")
    p.add_argument("--multicam-cameras", help="camera counts of the multicam part (default 1,2,4; 1,2 with --dry-run)")
    p.add_argument("--multicam-seconds", type=float, help="measured seconds per multicam setup (default 5; 1.5 "
                   "with --dry-run)")
    p.add_argument("--parts", default="correctness,timing,estimator,node,multicam",
                   help="comma list of the parts to run")
    args = p.parse_args(argv)
    args.arch = args.arch or ("tiny-NK" if args.dry_run else "ZoeD_M12_NK")
    args.size = args.size or ((192, 256) if args.dry_run else (384, 512))
    args.multicam_cameras = args.multicam_cameras or ("1,2" if args.dry_run else "1,2,4")
    args.multicam_seconds = args.multicam_seconds or (1.5 if args.dry_run else 5.0)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run for the CPU parts", file=sys.stderr)
        return 2
    check = GpuCheck(args)
    check.results["machine"] = machine() + (f", {torch.cuda.get_device_name()}" if not args.dry_run else "")
    print(f"gpu_check on {check.results['machine']}", flush=True)
    parts = {"correctness": check.correctness, "timing": check.timing, "estimator": check.estimator_timing,
             "node": check.node, "multicam": check.multicam}
    try:
        for name in args.parts.split(","):
            parts[name.strip()]()
    finally:
        check.write(args.out)
        shutil.rmtree(check.workdir, ignore_errors=True)
    failed = [c["name"] for c in check.results["checks"] if not c["ok"]]
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
