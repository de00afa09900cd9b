"""`zoedepth-ros benchmark`: our engine side by side with the transformers port, same weights.

Parts (interleaved iterations in alternating order, medians after warm-up, ratios against the reference):
- forward:   the model forward at the network size (ours vs the port, fp32 and bf16 autocast;
             with --compile also ours under torch.compile, its compile time reported apart);
- estimator: a camera frame through pre-processing, forward (with and without flip TTA) and
             post-processing (ours vs the port's image processor + model + post-processing);
- node:      the depth node in its own process, a publisher/subscriber process (this one) over
             DDS: closed-loop latency p50/p95/p99 of depth (+ camera_info, colormap) and of
             depth + organized cloud, open-loop throughput, and the node overhead (latency minus
             the forward time of the same model measured here).
Random weights are fine for speed. The port's weights are drawn once and mapped into ours, so
both compute the same function.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from zoedepth_ros.argtypes import hw_size

PARTS = ("forward", "estimator", "node")


# --------------------------------------------------------------------------------------- models


def _hf_config(cfg):
    """A transformers ZoeDepthConfig describing the same architecture as our `cfg`."""
    from transformers import BeitConfig
    from transformers import ZoeDepthConfig as HFZoeDepthConfig

    backbone = BeitConfig(
        image_size=cfg.pretrain_size, patch_size=cfg.patch_size, num_hidden_layers=cfg.depth,
        hidden_size=cfg.embed_dim, intermediate_size=cfg.mlp_dim, num_attention_heads=cfg.num_heads,
        use_relative_position_bias=True, reshape_hidden_states=False, layer_norm_eps=cfg.layer_norm_eps,
        out_features=[f"stage{t + 1}" for t in cfg.taps],
    )
    kw = dict(
        backbone_config=backbone, neck_hidden_sizes=list(cfg.neck_channels), fusion_hidden_size=cfg.fusion_channels,
        bottleneck_features=cfg.fusion_channels, num_relative_features=cfg.relative_features,
        bin_embedding_dim=cfg.bin_embedding_dim, bin_centers_type=cfg.bin_centers_type,
        num_attractors=list(cfg.attractors), attractor_kind=cfg.attractor_kind,
        min_temp=cfg.min_temp, max_temp=cfg.max_temp,
        bin_configurations=[dict(name=h.name, n_bins=h.n_bins, min_depth=h.min_depth, max_depth=h.max_depth)
                            for h in cfg.heads],
    )
    if cfg.routed:
        kw.update(num_patch_transformer_layers=cfg.router_layers, patch_transformer_hidden_size=cfg.router_dim,
                  patch_transformer_intermediate_size=cfg.router_ffn_dim,
                  patch_transformer_num_attention_heads=cfg.router_heads)
    return HFZoeDepthConfig(**kw)


def arch_config(name: str):
    """The model package's architecture `name` (config_from_arch); an unknown name ends the command."""
    from zoedepth_ros.model import PRESETS, config_from_arch

    try:
        return config_from_arch(name)
    except ValueError:  # without overrides, only an unknown name
        raise SystemExit(f"unknown --arch {name!r}: use one of {', '.join(PRESETS)} or tiny-N/tiny-K/tiny-NK") from None


def build_models(arch: str, reference: bool, seed: int = 0):
    """(ours, port or None) with identical random weights."""
    import torch

    from zoedepth_ros.model import ZoeDepth
    from zoedepth_ros.model.checkpoint import build_from_state, hf_config, hf_to_ours

    cfg = arch_config(arch)
    torch.manual_seed(seed)
    if reference and cfg.routed:
        cfg = cfg.replace(router_dim=128)  # the port hard-codes the router classifier's width
    if not reference:
        return ZoeDepth(cfg).eval(), None
    try:
        from transformers import ZoeDepthForDepthEstimation
    except ImportError:
        raise SystemExit("--reference hf needs transformers (pip install -r requirements/test.txt)") from None
    port = ZoeDepthForDepthEstimation(_hf_config(cfg)).eval()
    ours_cfg = hf_config(port.config.to_dict()).replace(img_size=cfg.img_size)
    renamed, unmatched = hf_to_ours(port.state_dict(), ours_cfg)
    return build_from_state(ours_cfg, renamed, unmatched, "benchmark"), port


# --------------------------------------------------------------------------------------- timing


def interleaved(candidates: dict, iters: int, warmup: int) -> dict[str, list[float]]:
    """Run each candidate once per round, round after round, so drifting load hits all alike; the
    order reverses every round, so that no candidate always runs first (warm caches, allocator)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(warmup + iters):
        order = list(candidates.items())
        for name, fn in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - started)
    return times


def summary(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000.0
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "n": int(ms.size)}


def _rows(times: dict[str, list[float]], reference_of: dict[str, str]) -> list[dict]:
    rows = []
    for name, samples in times.items():
        row = {"name": name, **summary(samples)}
        for label, ref in reference_of.get(name, {}).items():
            row[label] = row["median_ms"] / float(np.median(times[ref]) * 1000.0)
        rows.append(row)
    return rows


def bench_forward(ours, port, size, precisions, iters, warmup, compile=False) -> tuple[list[dict], dict]:
    """Rows of the forward table, and the compile time (s) of each compiled candidate."""
    import torch

    from zoedepth_ros.model.estimator import compile_model, low_precision_copy

    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    candidates, refs, compile_s = {}, {}, {}
    for precision in precisions:
        dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
        # Our engine's reduced precision: weights stored in bf16 once, autocast for the rest;
        # the port gets plain autocast, which is how it is used.
        engine = ours if dtype is None else low_precision_copy(ours, dtype)

        def run(model, call, dtype=dtype):
            def fn():
                with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    call(model)
            return fn

        engines = {f"ours {precision}": engine}
        if compile:
            name = f"ours {precision} compiled"
            engines[name] = compile_model(engine, torch.device("cpu"))
            started = time.perf_counter()
            run(engines[name], lambda m: m(x))()  # the compilation itself, outside the timed rounds
            compile_s[name] = time.perf_counter() - started
        for name, model in engines.items():
            candidates[name] = run(model, lambda m: m(x))
        if port is not None:
            candidates[f"port {precision}"] = run(port, lambda m: m(pixel_values=x))
            for name in engines:
                refs[name] = {f"vs port {precision}": f"port {precision}"}
                if precision != "fp32" and "fp32" in precisions:
                    refs[name]["vs port fp32"] = "port fp32"
    return _rows(interleaved(candidates, iters, warmup), refs), compile_s


def _camera_frame(height: int, width: int) -> np.ndarray:
    """A structured picture (gradients and blocks), not noise: resizing costs as on a real frame."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)),
                    ((xx // 40 + yy // 40) % 2) * 200], -1)
    return rgb.astype(np.uint8)


def bench_estimator(ours, port, frame, precisions, iters, warmup) -> list[dict]:
    import torch

    from zoedepth_ros.model import DepthEstimator

    rgb = _camera_frame(*frame)
    candidates, refs = {}, {}
    processor = None
    if port is not None:
        from transformers import ZoeDepthImageProcessor

        processor = ZoeDepthImageProcessor()
    for precision in precisions:
        dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
        for flip in (False, True):
            tag = f"{precision}{' flip' if flip else ''}"
            est = DepthEstimator(ours, device="cpu", precision=precision, flip_tta=flip)
            candidates[f"ours {tag}"] = lambda est=est: est.predict(rgb)
            if processor is None:
                continue

            def port_infer(flip=flip, dtype=dtype):
                with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    inputs = processor(images=rgb, return_tensors="pt")
                    out = port(**inputs)
                    flipped = port(pixel_values=inputs["pixel_values"].flip(-1)) if flip else None
                    return processor.post_process_depth_estimation(out, source_sizes=[frame], outputs_flipped=flipped)

            candidates[f"port {tag}"] = port_infer
            refs[f"ours {tag}"] = {f"vs port {tag}": f"port {tag}"}
    return _rows(interleaved(candidates, iters, warmup), refs)


# --------------------------------------------------------------------------------------- node


def bench_node(arch: str, img_size, frame, frames: int, warmup: int, rate_s: float, profile: str | None) -> dict:
    """Node in a subprocess; this process publishes 'frame'-sized rgb8 images and listens. Both
    use the Fast DDS `profile` (None: Fast DDS defaults)."""
    import rclpy
    import torch

    from zoedepth_ros.model import ZoeDepth, save_checkpoint
    from zoedepth_ros.model.estimator import network_size
    from zoedepth_ros.ros.processes import dds_profile, node_process

    cfg = arch_config(arch).replace(img_size=tuple(img_size))
    height, width = frame
    torch.manual_seed(0)
    model = ZoeDepth(cfg).eval()
    x = torch.randn(1, 3, *network_size(height, width, cfg.img_size))
    with torch.inference_mode():
        forward = summary(interleaved({"f": lambda: model(x)}, iters=max(5, frames // 4), warmup=2)["f"])

    namespace = f"/zoedepth_bench_{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(model, Path(tmp) / "bench.safetensors")
        params = {"model": ckpt, "device": "cpu", "points_stride": 1, "publish_colormap": True,
                  "publish_points": True, "min_depth": 0.0, "max_depth": 1000.0}
        with (dds_profile(profile), open(Path(tmp) / "node.log", "w+") as log,
              node_process(namespace, params, log) as node):
            rclpy.init()
            client = rclpy.create_node("zoedepth_bench_camera", namespace=namespace)
            try:
                return {"forward": forward, **_drive_node(client, node, log, frame, frames, warmup, rate_s, forward)}
            finally:
                client.destroy_node()
                rclpy.try_shutdown()


def _cdr_stamp_ns(serialized: bytes) -> int:
    """header.stamp of a serialized message that starts with a std_msgs/Header (Image, CameraInfo,
    PointCloud2): after the 4-byte CDR encapsulation, int32 sec and uint32 nanosec."""
    byte_order = "<" if serialized[1] & 1 else ">"  # CDR_LE is 0x0001, CDR_BE 0x0000
    sec, nanosec = struct.unpack_from(byte_order + "iI", serialized, 4)
    return sec * 10**9 + nanosec


class _NodeDriver:
    """This process's side of the node benchmark: a camera publisher and the output subscribers."""

    def __init__(self, client, node_proc, node_log, frame):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CameraInfo, Image

        self.client, self.node_proc, self.node_log = client, node_proc, node_log
        height, width = frame
        self.qos = QoSProfile(depth=5)
        self.image_pub = client.create_publisher(Image, "image", self.qos)
        self.info_pub = client.create_publisher(CameraInfo, "camera_info", self.qos)
        self.info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        f = 0.8 * width
        self.info.k = [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
        self.info.p = [f, 0.0, width / 2, 0.0, 0.0, f, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        self.info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        self.info.d = [0.0] * 5
        self.msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
        self.msg.data = _camera_frame(height, width).tobytes()
        self.msg.header.frame_id = "camera_optical_frame"
        self.arrivals: dict[str, dict[int, float]] = {"depth": {}, "points": {}}
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.node_diagnostics: dict[str, str] = {}  # the node's own latency figures (/diagnostics)
        # Serialized (raw) outputs: the clock stops when the message is here, as for a C++ consumer
        # such as RViz, not after rclpy has also built Python objects of every pixel.
        client.create_subscription(Image, "depth/image", self._on("depth"), self.qos, raw=True)
        client.create_subscription(Image, "depth/colormap", lambda m: None, self.qos, raw=True)
        client.create_subscription(CameraInfo, "depth/camera_info", lambda m: None, self.qos, raw=True)
        client.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, self.qos)

    def _on(self, kind):
        def callback(serialized: bytes):
            now = time.time()
            with self.arrived:
                self.arrivals[kind][_cdr_stamp_ns(serialized)] = now
                self.arrived.notify_all()
        return callback

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.startswith(self.client.get_namespace()) and "forward latency p50 (ms)" in values:
                with self.lock:
                    self.node_diagnostics = values

    def subscribe_points(self) -> None:
        from sensor_msgs.msg import PointCloud2

        self.client.create_subscription(PointCloud2, "depth/points", self._on("points"), self.qos, raw=True)
        time.sleep(1.0)  # let the node see the listener: it builds clouds only for listeners

    def wait_for(self, predicate, timeout: float) -> bool:
        """Sleep until an output makes `predicate` true (no polling: the node shares the CPUs)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self.node_proc.poll() is not None:
                    raise SystemExit(f"the node exited: {_tail(self.node_log)}")
                self.arrived.wait(min(remaining, 0.5))
        return True

    def send(self) -> int:
        stamp_ns = time.time_ns()
        self.msg.header.stamp.sec, self.msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.info.header = self.msg.header
        self.info_pub.publish(self.info)
        self.image_pub.publish(self.msg)
        return stamp_ns

    def closed_loop(self, kinds: tuple[str, ...], frames: int, warmup: int) -> list[float]:
        """Send a frame, wait for its outputs, repeat: latency without queueing."""
        if not self.wait_for(lambda: self.image_pub.get_subscription_count() > 0, 120):
            raise SystemExit("the node did not subscribe to the image within 120 s")
        latencies, lost_in_a_row = [], 0
        for i in range(warmup + frames):
            stamp = self.send()
            if not self.wait_for(lambda stamp=stamp: all(stamp in self.arrivals[k] for k in kinds), 10):
                lost_in_a_row += 1
                if lost_in_a_row == 3:
                    raise SystemExit(f"no {'+'.join(kinds)} output for 3 frames; node log: {_tail(self.node_log)}")
                continue
            lost_in_a_row = 0
            if i >= warmup:
                latencies.append(max(self.arrivals[k][stamp] for k in kinds) - stamp / 1e9)
        return latencies

    def open_loop(self, rate_s: float, duration_s: float) -> dict:
        """Publish at a fixed rate: what comes back, how often, how old."""
        with self.lock:
            self.arrivals["depth"].clear()
        sent = []
        started = time.monotonic()
        while time.monotonic() - started < duration_s:
            sent.append(self.send())
            time.sleep(rate_s)
        elapsed = time.monotonic() - started
        time.sleep(2.0)
        with self.lock:
            sent_set = set(sent)
            got = {s: t for s, t in self.arrivals["depth"].items() if s in sent_set}
        span = max(got.values()) - min(got.values()) if len(got) > 1 else 0.0
        ages = [(t - s / 1e9) * 1000.0 for s, t in got.items()]
        return {
            "sent_hz": len(sent) / elapsed, "sent": len(sent), "received": len(got),
            "output_hz": (len(got) - 1) / span if span else 0.0,
            "age_p50_ms": float(np.percentile(ages, 50)) if ages else float("nan"),
            "age_p99_ms": float(np.percentile(ages, 99)) if ages else float("nan"),
        }


def _drive_node(client, node_proc, node_log, frame, frames, warmup, rate_s, forward) -> dict:
    from rclpy.executors import SingleThreadedExecutor

    driver = _NodeDriver(client, node_proc, node_log, frame)
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()

    def stats(latencies):
        ms = np.asarray(latencies) * 1000.0
        out = {"frames": int(ms.size), "lost": frames - int(ms.size)}
        if ms.size:
            out.update({f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)})
        return out

    def with_node_timing(result):
        """Overhead = latency minus the forward time, both p50, the forward timed inside the node
        (this process's figure only if the node's is missing): the same model runs slower there
        while its outputs of the previous frame are still being serialised and received."""
        time.sleep(1.2)  # one more /diagnostics period
        with driver.lock:
            values = dict(driver.node_diagnostics)

        def number(key):
            try:
                return float(values[key])
            except (KeyError, ValueError):
                return None

        node_forward, node_inference = number("forward latency p50 (ms)"), number("inference latency p50 (ms)")
        if "p50_ms" in result:
            result["forward_p50_ms"] = node_forward if node_forward is not None else forward["median_ms"]
            result["overhead_p50_ms"] = result["p50_ms"] - result["forward_p50_ms"]
            if node_inference is not None:
                result["node_inference_p50_ms"] = node_inference
                result["transport_p50_ms"] = result["p50_ms"] - node_inference
        return result

    try:
        results = {"depth": with_node_timing(stats(driver.closed_loop(("depth",), frames, warmup)))}
        driver.subscribe_points()
        results["depth+cloud"] = with_node_timing(stats(driver.closed_loop(("depth", "points"), frames, warmup)))
        results["open_loop"] = driver.open_loop(rate_s, max(3.0, frames * 0.05))
        return results
    finally:
        executor.shutdown()


def _tail(log, chars: int = 3000) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-chars:]


# --------------------------------------------------------------------------------------- CLI


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"{platform.python_implementation()} {platform.python_version()}")


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    ratio_keys = sorted({k for r in rows for k in r if k.startswith("vs ")})
    widths = [max(16, len(k) + 2) for k in ratio_keys]
    print(f"  {'':<22}{'median ms':>11}{'p90 ms':>10}"
          + "".join(f"{k:>{w}}" for k, w in zip(ratio_keys, widths, strict=True)))
    for r in rows:
        print(f"  {r['name']:<22}{r['median_ms']:>11.1f}{r['p90_ms']:>10.1f}"
              + "".join(f"{r[k]:>{w - 1}.3f}x" if k in r else " " * w
                        for k, w in zip(ratio_keys, widths, strict=True)))


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="time our engine against the transformers port (same weights)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="forward,estimator,node", help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--arch", default="ZoeD_M12_NK", help="preset (ZoeD_M12_NK, ...) or tiny-NK/tiny-N/tiny-K")
    p.add_argument("--node-arch", default="tiny-NK", help="model of the node part (small, so overhead shows)")
    p.add_argument("--node-img-size", type=hw_size, default=(96, 128),
                   help="img_size of the node part's model (multiples of 32): small, so that the forward "
                        "neither dominates the latency nor competes with the node's other work (default 96x128)")
    p.add_argument("--size", type=hw_size, default=(384, 512),
                   help="network input HxW for the forward part (multiples of 32)")
    p.add_argument("--frame", type=hw_size, default=(480, 640),
                   help="camera frame HxW for the estimator and node parts")
    p.add_argument("--precision", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--reference", default="hf", choices=["hf", "none"], help="reference implementation")
    p.add_argument("--iters", type=int, default=5, help="timed rounds per candidate")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--node-frames", type=int, default=100, help="closed-loop frames per node configuration")
    p.add_argument("--node-rate", type=float, default=100.0, help="open-loop publish rate (Hz)")
    p.add_argument("--compile", action="store_true",
                   help="forward part: also time our model under torch.compile (inductor, frozen weights)")
    p.add_argument("--dds-profile", default="shipped", metavar="shipped|none|FILE",
                   help="node part: Fast DDS profile of the node and this process: shipped "
                        "(config/fastdds_large_images.xml, the default), none (Fast DDS defaults) or an XML file")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown --parts {sorted(unknown)}; choose from {PARTS}")
    precisions = [p.strip() for p in args.precision.split(",")]
    for flag, size in (("--size", args.size), ("--node-img-size", args.node_img_size)):
        if any(v % 32 for v in size):
            raise SystemExit(f"{flag} {'x'.join(map(str, size))}: both sides must be multiples of 32")
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "command": " ".join(sys.argv),
               "arch": args.arch, "size": "x".join(map(str, args.size)), "frame": "x".join(map(str, args.frame))}
    print(f"zoedepth-ros benchmark on {results['machine']}")
    if "forward" in parts or "estimator" in parts:
        ours, port = build_models(args.arch, args.reference == "hf")
        if "forward" in parts:
            results["forward"], compile_s = bench_forward(ours, port, args.size, precisions, args.iters, args.warmup,
                                                          compile=args.compile)
            print_table(f"(a) forward {args.arch} at {results['size']}, batch 1", results["forward"])
            if compile_s:
                results["compile_s"] = compile_s
                print("  compilation (first call, untimed): "
                      + ", ".join(f"{k} {v:.0f} s" for k, v in compile_s.items()))
        if "estimator" in parts:
            results["estimator"] = bench_estimator(ours, port, args.frame, precisions, args.iters, args.warmup)
            print_table(f"(b) estimator on a {results['frame']} frame (pre + forward + post)", results["estimator"])
        del ours, port
    if "node" in parts:
        from zoedepth_ros.ros.processes import shipped_dds_profile

        profile = None if args.dds_profile == "none" else str(shipped_dds_profile() if args.dds_profile == "shipped"
                                                               else args.dds_profile)
        if profile is not None and not Path(profile).is_file():
            raise SystemExit(f"--dds-profile {profile}: no such file (use shipped, none or an XML file)")
        node = bench_node(args.node_arch, args.node_img_size, args.frame, args.node_frames, warmup=5,
                          rate_s=1.0 / args.node_rate, profile=profile)
        results["node"] = {**node, "dds_profile": profile or "Fast DDS defaults"}
        print(f"\n(c) node end to end, {args.node_arch} at img_size {'x'.join(map(str, args.node_img_size))}, "
              f"{results['frame']} rgb8 over DDS "
              f"(model forward here {node['forward']['median_ms']:.1f} ms; "
              f"DDS profile: {results['node']['dds_profile']})")
        for key in ("depth", "depth+cloud"):
            r = node[key]
            print(f"  {key:<12} p50 {r.get('p50_ms', float('nan')):7.1f} ms  p95 {r.get('p95_ms', float('nan')):7.1f}"
                  f"  p99 {r.get('p99_ms', float('nan')):7.1f}"
                  f"  overhead p50 {r.get('overhead_p50_ms', float('nan')):6.1f} ms"
                  f"  ({r['frames']} frames, {r['lost']} lost)")
            if "transport_p50_ms" in r:
                print(f"  {'':<12} in the node: forward {r['forward_p50_ms']:.1f} ms, pre + forward + post "
                      f"{r['node_inference_p50_ms']:.1f} ms (p50); "
                      f"latency minus the latter {r['transport_p50_ms']:.1f} ms "
                      "(decode, outputs, DDS both ways)")
        o = node["open_loop"]
        print(f"  open loop: sent {o['sent_hz']:.0f} Hz, output {o['output_hz']:.1f} Hz,"
              f" age p50 {o['age_p50_ms']:.1f} ms, p99 {o['age_p99_ms']:.1f} ms")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nresults written to {args.out}")
    return 0
