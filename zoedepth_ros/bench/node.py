"""The benchmark's node part: the depth node in its own process, this process publishing camera
frames and listening over DDS (`zoedepth_ros.ros.bench_client`): closed-loop latency p50/p95/p99
of depth (+ camera_info, colormap) and of depth + organized cloud, open-loop throughput, and the
node overhead (latency minus the forward time of the same model, measured here and in the node);
optionally the depth latency with depth/image/compressedDepth subscribed against without.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from zoedepth_ros.bench.models import arch_config
from zoedepth_ros.bench.timing import interleaved, summary


def bench_node(arch: str, img_size, frame, frames: int, warmup: int, rate_s: float, profile: str | None,
               device: str = "cpu", node_params: dict | None = None, compressed_depth: str | None = None) -> dict:
    """Node in a subprocess; this process publishes 'frame'-sized rgb8 images and listens. Both
    use the Fast DDS `profile` (None: Fast DDS defaults). The node runs on `device` with
    `node_params` (engine, precision, compile...) on top of the defaults here; the forward time
    the overhead is measured against is that of fp32 eager PyTorch on `device`. `compressed_depth`
    (png, rvl): also the depth latency with depth/image/compressedDepth in that format subscribed
    against without."""
    import torch

    from zoedepth_ros.inference.estimator import network_size
    from zoedepth_ros.model import ZoeDepth, save_checkpoint
    from zoedepth_ros.ros.bench_client import drive_node
    from zoedepth_ros.ros.processes import dds_profile, node_process

    cfg = arch_config(arch).replace(img_size=tuple(img_size))
    height, width = frame
    torch.manual_seed(0)
    model = ZoeDepth(cfg).eval()
    x = torch.randn(1, 3, *network_size(height, width, cfg.img_size))
    on_device, x_device = model.to(device), x.to(device)

    def forward_once():
        on_device(x_device)
        if x_device.device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        forward = summary(interleaved({"f": forward_once}, iters=max(5, frames // 4), warmup=2)["f"])
    model, x_device = model.cpu(), None
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the node measures its own memory; this process's must not mix in

    namespace = f"/zoedepth_bench_{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(model, Path(tmp) / "bench.safetensors")
        params = {"model": ckpt, "device": device, "points_stride": 1, "publish_colormap": True,
                  "publish_points": True, "min_depth": 0.0, "max_depth": 1000.0, **(node_params or {})}
        if compressed_depth:
            params["compressed_depth_format"] = compressed_depth
        with (dds_profile(profile), open(Path(tmp) / "node.log", "w+") as log,
              node_process(namespace, params, log) as node):
            return {"forward": forward, **drive_node(namespace, node, log, frame, frames, warmup, rate_s, forward,
                                                     compressed_depth=bool(compressed_depth))}
