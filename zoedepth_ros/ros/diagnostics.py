"""What the depth node reports: the counters and latency windows behind /diagnostics, its status
there, and throttled log lines."""

from __future__ import annotations

import collections
import math
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from zoedepth_ros import diagnostics_keys

LATENCY_WINDOW = 200  # frames behind the mean/p95 latencies in /diagnostics
THROTTLE_S = 5.0  # a log line of one kind at most this often


class Stats:
    """Counters and latency windows behind /diagnostics, shared by callbacks and the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inputs = 0
        self.camera_infos = 0
        self.outputs = 0
        self.stale = 0
        self.missed = 0  # frames the publisher sent that never reached the subscription
        self.rejected: collections.Counter[str] = collections.Counter()
        self.domains: collections.Counter[str] = collections.Counter()
        self.inference_s: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.forward_s: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.end_to_end_s: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._last = (time.monotonic(), 0, 0, collections.Counter(), 0)

    def frame_in(self, dropped_stale: bool = False) -> None:
        with self._lock:
            self.inputs += 1
            self.stale += dropped_stale

    def frames_missed(self, count: int) -> None:
        with self._lock:
            self.missed += count

    def camera_info_in(self) -> None:
        with self._lock:
            self.camera_infos += 1

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def output(self, inference_s: float, forward_s: float, end_to_end_s: float | None, domain: str | None) -> None:
        with self._lock:
            self.outputs += 1
            self.inference_s.append(inference_s)
            self.forward_s.append(forward_s)
            if end_to_end_s is not None:
                self.end_to_end_s.append(end_to_end_s)
            if domain is not None:
                self.domains[domain] += 1

    def snapshot(self) -> tuple[dict[str, str], collections.Counter[str], int]:
        """(diagnostic key/values, rejections by reason, frames missed), the last two and the rates
        since the previous snapshot."""
        with self._lock:
            now = time.monotonic()
            then, inputs, outputs, rejected, missed = self._last
            self._last = (now, self.inputs, self.outputs, self.rejected.copy(), self.missed)
            elapsed = max(now - then, 1e-9)
            values = {
                diagnostics_keys.INPUT_RATE: f"{(self.inputs - inputs) / elapsed:.2f}",
                diagnostics_keys.OUTPUT_RATE: f"{(self.outputs - outputs) / elapsed:.2f}",
                diagnostics_keys.FRAMES_IN: str(self.inputs),
                diagnostics_keys.FRAMES_OUT: str(self.outputs),
                diagnostics_keys.FRAMES_STALE: str(self.stale),
                diagnostics_keys.FRAMES_MISSED: str(self.missed),
                diagnostics_keys.FRAMES_REJECTED: str(sum(self.rejected.values())),
                diagnostics_keys.CAMERA_INFO_IN: str(self.camera_infos),
            }
            recent = self.rejected - rejected
            values.update(_latencies({diagnostics_keys.INFERENCE_LATENCY: self.inference_s,
                                      diagnostics_keys.FORWARD_LATENCY: self.forward_s,
                                      diagnostics_keys.END_TO_END_LATENCY: self.end_to_end_s}))
            values.update({diagnostics_keys.rejected_key(reason): str(n)
                           for reason, n in sorted(self.rejected.items())})
            values.update({diagnostics_keys.router_key(domain): str(n) for domain, n in sorted(self.domains.items())})
        return values, recent, self.missed - missed


class BatchStats:
    """The shared model's side of a node serving several cameras: the batches it ran, their frames,
    and the inference and forward time of each batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches = 0
        self.frames = 0
        self.sizes: collections.deque[int] = collections.deque(maxlen=LATENCY_WINDOW)
        self.inference_s: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.forward_s: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._last = (time.monotonic(), 0)

    def batch(self, frames: int, inference_s: float, forward_s: float) -> None:
        with self._lock:
            self.batches += 1
            self.frames += frames
            self.sizes.append(frames)
            self.inference_s.append(inference_s)
            self.forward_s.append(forward_s)

    def snapshot(self) -> dict[str, str]:
        """Diagnostic key/values; the rate since the previous snapshot."""
        with self._lock:
            now = time.monotonic()
            then, frames = self._last
            self._last = (now, self.frames)
            values = {
                diagnostics_keys.OUTPUT_RATE: f"{(self.frames - frames) / max(now - then, 1e-9):.2f}",
                diagnostics_keys.BATCHES: str(self.batches),
                diagnostics_keys.FRAMES_OUT: str(self.frames),
                diagnostics_keys.FRAMES_PER_BATCH_MEAN: f"{np.mean(self.sizes):.2f}" if self.sizes else "n/a",
                diagnostics_keys.LARGEST_BATCH: str(max(self.sizes, default=0)),
            }
            values.update(_latencies({diagnostics_keys.INFERENCE_LATENCY: self.inference_s,
                                      diagnostics_keys.FORWARD_LATENCY: self.forward_s}))
        return values


def _latencies(windows: dict[str, collections.deque[float]]) -> dict[str, str]:
    """Mean and percentiles in milliseconds of each window of seconds, "n/a" for an empty one."""
    values = {}
    for label, window in windows.items():
        samples = np.asarray(window) * 1000.0
        values[diagnostics_keys.latency_mean_key(label)] = f"{samples.mean():.1f}" if samples.size else "n/a"
        for q in diagnostics_keys.LATENCY_PERCENTILES:
            values[diagnostics_keys.latency_percentile_key(label, q)] = (
                f"{np.percentile(samples, q):.1f}" if samples.size else "n/a")
    return values


def model_values(model: str, device: str, precision: str, engine: str | None = None,
                 precision_choice: str | None = None) -> dict[str, str]:
    """The model's values in every status (`loaded` of depth_status): before the model is loaded,
    the one asked for; once loaded, also its engine and why it runs this precision."""
    values = {diagnostics_keys.MODEL: model}
    if engine is not None:
        values[diagnostics_keys.ENGINE] = engine
    values.update({diagnostics_keys.DEVICE: device, diagnostics_keys.PRECISION: precision})
    if precision_choice is not None:
        values[diagnostics_keys.PRECISION_CHOICE] = precision_choice
    return values


def depth_status(name: str, state: str, values: dict[str, str], loaded: dict[str, str], failure: str | None,
                 problems: list[str] | None) -> DiagnosticStatus:
    """The node's status: ERROR with `failure` (why the last configure failed); OK with the
    lifecycle `state` while not active (`problems` None); when active, WARN naming the `problems`,
    or OK with the output rate. Its values: the state, `values`, then `loaded` (model_values)."""
    status = DiagnosticStatus(name=name)
    if failure is not None:
        status.level, status.message = DiagnosticStatus.ERROR, failure
    elif problems is None:
        status.level, status.message = DiagnosticStatus.OK, state
    elif problems:
        status.level, status.message = DiagnosticStatus.WARN, "; ".join(problems)
    else:
        status.level, status.message = DiagnosticStatus.OK, f"active, {values[diagnostics_keys.OUTPUT_RATE]} Hz out"
    status.hardware_id = loaded[diagnostics_keys.DEVICE]
    status.values = [KeyValue(key=k, value=v) for k, v in {diagnostics_keys.STATE: state, **values, **loaded}.items()]
    return status


class ThrottledLog:
    """Logs through an rclpy logger, each kind (a key) at most once per THROTTLE_S."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self._last: dict[str, float] = {}  # key -> monotonic time logged

    def __call__(self, key: str, level: str, text: str) -> None:
        """Log `text` at `level` ("warn" or "error") unless `key` was logged in the last THROTTLE_S."""
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < THROTTLE_S:
            return
        self._last[key] = now
        # rclpy binds one severity to each calling line and raises ValueError for another one.
        if level == "error":
            self._logger.error(text)
        else:
            self._logger.warning(text)
