"""The depth node's /diagnostics protocol: the keys of its status values and their parser.

The node writes its statuses with these keys (`ros/diagnostics.py`, `ros/camera.py`,
`ros/depth_node.py`); replay, the benchmark's clients and the demo read them back through
`parse_status`. No other module spells a key. Importable without ROS: a DiagnosticStatus is read
by its `values` (KeyValue `key`, `value`) alone.

Users read the keys as `diagnostics_keys.NAME` at the time of use, not as names imported once, so
that a key renamed here (test/test_diagnostics_keys.py does) is renamed for writer and readers.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

# Every status: the node's lifecycle state and the model it runs (or, before it is loaded, is asked for).
STATE = "state"
MODEL = "model"
ENGINE = "engine"
DEVICE = "device"
PRECISION = "precision"
PRECISION_CHOICE = "precision choice"  # why this precision: `auto` resolved, or a fallback

# A camera's status (the node's own when it serves one camera). Its input QoS and losses:
INPUT_RELIABILITY = "input reliability"
INPUT_LOSS = "input loss"
# and, while the node is active, its counters since configure and rates since the last report:
INPUT_RATE = "input rate (Hz)"
OUTPUT_RATE = "output rate (Hz)"  # also in the shared model's status, of all cameras' frames
FRAMES_IN = "frames in"
FRAMES_OUT = "frames out"  # also in the shared model's status
FRAMES_STALE = "frames dropped as stale"
FRAMES_MISSED = "frames missed (publisher sequence gaps)"
FRAMES_REJECTED = "frames rejected"  # the sum over the reasons of rejected_key
CAMERA_INFO_IN = "camera_info in"
COMPRESSED_DEPTH_PUBLISHED = "compressedDepth published"  # once it has a subscriber
COMPRESSED_DEPTH_SKIPPED = "compressedDepth skipped (encoder busy)"
REJECTED_PREFIX = "rejected: "  # + the reason: frames rejected for it
ROUTER_PREFIX = "router: "  # + the domain: frames the router sent to its head

# The node's own status when it serves several cameras: their names and, while active, the shared
# model's batches.
CAMERAS = "cameras"
BATCHES = "batches"
FRAMES_PER_BATCH_MEAN = "frames per batch mean"
LARGEST_BATCH = "largest batch"

# Latency windows, each with its mean and LATENCY_PERCENTILES in milliseconds ("n/a" while empty):
# inference = pre-processing + forward + post-processing; forward = the model alone; end to end =
# from the image's stamp to its depth going out (a camera's only).
INFERENCE_LATENCY = "inference latency"
FORWARD_LATENCY = "forward latency"
END_TO_END_LATENCY = "end-to-end latency"
LATENCY_PERCENTILES = (50, 95)  # the p50_ms and p95_ms of Latency
LATENCY_KEY = "{window} {statistic} (ms)"


def rejected_key(reason: str) -> str:
    return REJECTED_PREFIX + reason


def router_key(domain: str) -> str:
    return ROUTER_PREFIX + domain


def latency_mean_key(window: str) -> str:
    return LATENCY_KEY.format(window=window, statistic="mean")


def latency_percentile_key(window: str, percentile: int) -> str:
    return LATENCY_KEY.format(window=window, statistic=f"p{percentile}")


@dataclass(frozen=True)
class Latency:
    """One latency window's figures in milliseconds, each None while the window is empty."""

    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class NodeStatus:
    """A depth node's status on /diagnostics, typed. A figure is None where the status does not
    carry it: a camera's counters and latencies only while the node is active, the batches only in
    the node's own status when it serves several cameras."""

    values: dict[str, str]  # every key/value, in the order published
    state: str | None
    device: str | None
    precision: str | None
    frames_in: int | None
    frames_out: int | None
    frames_rejected: int | None
    rejected: collections.Counter[str]  # frames by reason
    router: dict[str, int]  # frames by domain (head)
    inference: Latency | None
    forward: Latency | None
    batches: int | None


def status_values(status) -> dict[str, str]:
    """A DiagnosticStatus's key/values, in order."""
    return {kv.key: kv.value for kv in status.values}


def parse_status(values: Mapping[str, str]) -> NodeStatus:
    """The typed view of a depth node's status values (`status_values`)."""

    def number(key: str, kind: type) -> int | float | None:
        try:
            return kind(values[key])
        except (KeyError, ValueError):  # not in this status, or "n/a"
            return None

    def latency(window: str) -> Latency | None:
        if latency_mean_key(window) not in values:
            return None
        p50, p95 = (number(latency_percentile_key(window, q), float) for q in LATENCY_PERCENTILES)
        return Latency(number(latency_mean_key(window), float), p50, p95)

    def by_suffix(prefix: str) -> dict[str, int]:
        return {key[len(prefix):]: int(value) for key, value in values.items() if key.startswith(prefix)}

    return NodeStatus(
        values=dict(values), state=values.get(STATE), device=values.get(DEVICE), precision=values.get(PRECISION),
        frames_in=number(FRAMES_IN, int), frames_out=number(FRAMES_OUT, int),
        frames_rejected=number(FRAMES_REJECTED, int), rejected=collections.Counter(by_suffix(REJECTED_PREFIX)),
        router=by_suffix(ROUTER_PREFIX), inference=latency(INFERENCE_LATENCY), forward=latency(FORWARD_LATENCY),
        batches=number(BATCHES, int),
    )
