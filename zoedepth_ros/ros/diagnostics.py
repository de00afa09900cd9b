"""What the depth node reports: the counters and latency windows behind /diagnostics, its status
there, and throttled log lines."""

from __future__ import annotations

import collections
import math
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

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
                "input rate (Hz)": f"{(self.inputs - inputs) / elapsed:.2f}",
                "output rate (Hz)": f"{(self.outputs - outputs) / elapsed:.2f}",
                "frames in": str(self.inputs),
                "frames out": str(self.outputs),
                "frames dropped as stale": str(self.stale),
                "frames missed (publisher sequence gaps)": str(self.missed),
                "frames rejected": str(sum(self.rejected.values())),
                "camera_info in": str(self.camera_infos),
            }
            recent = self.rejected - rejected
            # inference = pre-processing + forward + post-processing; forward = the model alone.
            values.update(_latencies({"inference latency": self.inference_s, "forward latency": self.forward_s,
                                      "end-to-end latency": self.end_to_end_s}))
            values.update({f"rejected: {reason}": str(n) for reason, n in sorted(self.rejected.items())})
            values.update({f"router: {domain}": str(n) for domain, n in sorted(self.domains.items())})
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
                "output rate (Hz)": f"{(self.frames - frames) / max(now - then, 1e-9):.2f}",
                "batches": str(self.batches),
                "frames out": str(self.frames),
                "frames per batch mean": f"{np.mean(self.sizes):.2f}" if self.sizes else "n/a",
                "largest batch": str(max(self.sizes, default=0)),
            }
            values.update(_latencies({"inference latency": self.inference_s, "forward latency": self.forward_s}))
        return values


def _latencies(windows: dict[str, collections.deque[float]]) -> dict[str, str]:
    """Mean, p50 and p95 in milliseconds of each window of seconds, "n/a" for an empty one."""
    values = {}
    for label, window in windows.items():
        samples = np.asarray(window) * 1000.0
        values[f"{label} mean (ms)"] = f"{samples.mean():.1f}" if samples.size else "n/a"
        for q in (50, 95):
            values[f"{label} p{q} (ms)"] = f"{np.percentile(samples, q):.1f}" if samples.size else "n/a"
    return values


def depth_status(name: str, values: dict[str, str], loaded: dict[str, str], failure: str | None,
                 problems: list[str] | None) -> DiagnosticStatus:
    """The node's status: ERROR with `failure` (why the last configure failed); OK with the
    lifecycle state (values["state"]) while not active (`problems` None); when active, WARN naming
    the `problems`, or OK with the output rate. `loaded`: the model, device and precision."""
    status = DiagnosticStatus(name=name)
    if failure is not None:
        status.level, status.message = DiagnosticStatus.ERROR, failure
    elif problems is None:
        status.level, status.message = DiagnosticStatus.OK, values["state"]
    elif problems:
        status.level, status.message = DiagnosticStatus.WARN, "; ".join(problems)
    else:
        status.level, status.message = DiagnosticStatus.OK, f"active, {values['output rate (Hz)']} Hz out"
    status.hardware_id = loaded["device"]
    status.values = [KeyValue(key=k, value=v) for k, v in {**values, **loaded}.items()]
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
