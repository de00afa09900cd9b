"""The benchmark's filter part: what each temporal filter (`zoedepth_ros.inference.temporal_filter`)
costs per frame, on a stream of predictions at the camera frame size.

The stream is a synthetic indoor room filmed by a camera walking forward (`synth --motion
forward`: its images and exact depth), with what a per-frame model adds from frame to frame: a
global scale error (3 % log standard deviation) and per-pixel noise (2 %), at 10 Hz stamps, so
that every branch of the filters runs (pixels that pass, pixels that step, the scale track, and
for motion-ema the camera's motion estimated and the average warped at every frame: its most
expensive case).
"""

from __future__ import annotations

import numpy as np

from zoedepth_ros.bench.timing import interleaved, summary
from zoedepth_ros.inference.temporal_filter import TEMPORAL_FILTERS, make_temporal_filter

PERIOD_NS = 100_000_000
SCALE_NOISE = 0.03
PIXEL_NOISE = 0.02


def prediction_stream(frame: tuple[int, int], count: int, K: np.ndarray,
                      seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` frames of a camera walking forward: (image RGB uint8, noisy prediction HxW float32 metres)."""
    from zoedepth_ros.data.synth_motion import render_sequence

    rng = np.random.default_rng(seed)
    return [(f.rgb, (f.depth * np.exp(rng.normal(0.0, SCALE_NOISE) + rng.normal(0.0, PIXEL_NOISE, f.depth.shape)))
             .astype(np.float32))
            for f in render_sequence("indoor", "forward", count, seed, *frame, K, PERIOD_NS)]


def bench_filter(frame: tuple[int, int], iters: int, warmup: int) -> list[dict]:
    """One row per filter: median / p90 ms per frame of filter(depth, stamp, K, image), candidates
    interleaved."""
    from zoedepth_ros.data.synth import default_intrinsics

    K = default_intrinsics("indoor", *frame)
    stream = prediction_stream(frame, warmup + iters, K)

    def candidate(name: str):
        flt, position = make_temporal_filter(name), iter(range(len(stream)))

        def step() -> None:
            index = next(position)
            rgb, depth = stream[index]
            flt.filter(depth, index * PERIOD_NS, K, rgb)
        return step

    times = interleaved({name: candidate(name) for name in TEMPORAL_FILTERS}, iters, warmup)
    return [{"filter": name, **summary(samples)} for name, samples in times.items()]


def print_filter(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"  {'filter':<12}{'ms/frame':>10}{'p90':>8}")
    for r in rows:
        print(f"  {r['filter']:<12}{r['median_ms']:>10.2f}{r['p90_ms']:>8.2f}")
