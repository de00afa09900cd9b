"""Timing shared by the benchmark's parts: candidates run in interleaved rounds (alternating order,
warm-up untimed), summarised as median / p90 with ratios against a reference candidate, and the
synthetic camera frame the estimator and node parts feed.
"""

from __future__ import annotations

import time

import numpy as np


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
    """Median and p90 in milliseconds, and the count, of samples in seconds."""
    ms = np.asarray(samples) * 1000.0
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "n": int(ms.size)}


def ratio_rows(times: dict[str, list[float]], reference_of: dict[str, dict[str, str]]) -> list[dict]:
    """One table row per candidate: its `summary`, and for each label -> reference candidate in
    `reference_of[name]` the ratio of its median to the reference's."""
    rows = []
    for name, samples in times.items():
        row = {"name": name, **summary(samples)}
        for label, ref in reference_of.get(name, {}).items():
            row[label] = row["median_ms"] / float(np.median(times[ref]) * 1000.0)
        rows.append(row)
    return rows


def camera_frame(height: int, width: int) -> np.ndarray:
    """A structured picture (gradients and blocks), not noise: resizing costs as on a real frame."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)),
                    ((xx // 40 + yy // 40) % 2) * 200], -1)
    return rgb.astype(np.uint8)
