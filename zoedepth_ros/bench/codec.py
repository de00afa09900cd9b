"""The benchmark's codec part: what recording the node's depth costs per frame, raw 32FC1 against
image_transport's compressedDepth (PNG at a few levels, RVL), encode and decode time and bytes.

The depth is realistic, not noise: the exact ground truth of the synthetic scenes
(`zoedepth_ros.data.synth_scenes`, as `zoedepth-ros synth` writes it) at the frame size, indoor
(under 10 m, quantized up to 10 m) and outdoor (up to 80 m, sky invalid, quantized up to 80 m).
"""

from __future__ import annotations

import numpy as np

from zoedepth_ros.bench.timing import interleaved, summary
from zoedepth_ros.compressed_depth import decode_compressed_depth, encode_compressed_depth

SCENES = {"indoor": 10.0, "outdoor": 80.0}  # scene kind -> compressedDepth maximum (m)
PNG_LEVELS = (1, 3, 9)  # fastest, OpenCV's own default, the plugin's default (and the smallest)


def scene_depth(kind: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    """The ground truth of the first frame `write_synth_bag(kind, seed=seed, size=(height, width))` writes."""
    from zoedepth_ros.data.synth import default_intrinsics
    from zoedepth_ros.data.synth_scenes import RENDERERS

    _, depth = RENDERERS[kind](np.random.default_rng(seed), height, width, default_intrinsics(kind, height, width))
    return depth.astype(np.float32)


def _scene_rows(kind: str, depth_max: float, frame: tuple[int, int], iters: int, warmup: int,
                levels: tuple[int, ...]) -> list[dict]:
    depth = scene_depth(kind, *frame)
    codecs: dict[str, tuple[str, int] | None] = {
        "raw": None, "rvl": ("rvl", 9), **{f"png level {level}": ("png", level) for level in levels}}
    encoded: dict[str, tuple[str, bytes]] = {}

    def encoder(name: str, spec: tuple[str, int] | None):
        def run() -> None:
            if spec is None:
                encoded[name] = ("32FC1", depth.tobytes())
            else:
                encoded[name] = encode_compressed_depth(depth, spec[0], depth_max=depth_max, png_level=spec[1])
        return run

    def decoder(name: str):
        fmt, data = encoded[name]
        if fmt == "32FC1":
            return lambda: np.frombuffer(data, dtype=np.float32).reshape(frame).copy()
        return lambda: decode_compressed_depth(fmt, data)

    encode_times = interleaved({name: encoder(name, spec) for name, spec in codecs.items()}, iters, warmup)
    decode_times = interleaved({name: decoder(name) for name in codecs}, iters, warmup)
    raw_bytes = len(encoded["raw"][1])
    return [{"scene": kind, "depth_max_m": depth_max, "codec": name,
             "encode": summary(encode_times[name]), "decode": summary(decode_times[name]),
             "bytes": len(encoded[name][1]), "ratio": raw_bytes / len(encoded[name][1]),
             "valid_fraction": float(np.isfinite(depth).mean())} for name in codecs]


def bench_codec(frame: tuple[int, int], iters: int, warmup: int, levels: tuple[int, ...] = PNG_LEVELS) -> list[dict]:
    """One row per scene and codec: encode and decode median / p90 ms, bytes per frame and the
    ratio to raw. Raw is the 32FC1 message payload (a copy of the array's bytes)."""
    return [row for kind, depth_max in SCENES.items()
            for row in _scene_rows(kind, depth_max, frame, iters, warmup, levels)]


def print_codec(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"  {'scene':<9}{'codec':<13}{'encode ms':>10}{'p90':>8}{'decode ms':>11}{'bytes/frame':>13}{'vs raw':>9}")
    for r in rows:
        print(f"  {r['scene']:<9}{r['codec']:<13}{r['encode']['median_ms']:>10.2f}{r['encode']['p90_ms']:>8.2f}"
              f"{r['decode']['median_ms']:>11.2f}{r['bytes']:>13,}{r['ratio']:>8.1f}x")
