"""The multi-camera benchmark's DDS client (`zoedepth_ros.bench.multicam`): one process publishing
rgb8 frames and camera_info on several cameras at a fixed rate (open loop) and timing each camera's
depth output from its stamp to its arrival, whichever node (one with `cameras`, or one node per
camera) serves it.
"""

from __future__ import annotations

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image

from zoedepth_ros.diagnostics_keys import status_values
from zoedepth_ros.ros.bench_client import Arrivals, age_percentiles, camera_messages, log_tail


def drive_cameras(cameras: dict[str, str], nodes: list, frame, rate_hz: float, duration_s: float,
                  ready_timeout_s: float = 600.0) -> dict:
    """Open-loop load on every camera of `cameras` (label -> absolute topic prefix, under which
    `image`, `camera_info` go in and `depth/image` comes out), served by `nodes` ((process, log)
    pairs, checked for an early exit). Waits until every camera has answered once (model loaded,
    first forward done: warm-up, not timed), then publishes at `rate_hz` per camera for
    `duration_s`. Per camera: frames sent, outputs, output FPS and age p50/p99; plus the last
    /diagnostics values of each status whose node published them. Initialises and shuts down rclpy."""
    rclpy.init()
    client = rclpy.create_node(f"zoedepth_multicam_bench_{id(cameras):x}")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    try:
        driver = _CameraDriver(client, cameras, nodes, frame)
        threading.Thread(target=executor.spin, daemon=True).start()
        return driver.run(rate_hz, duration_s, ready_timeout_s)
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()


class _CameraDriver:
    def __init__(self, client, cameras: dict[str, str], nodes: list, frame):
        self.client, self.cameras, self.nodes = client, cameras, nodes
        height, width = frame
        # Reliable (the QoS default), as the node's input is (node_process): best effort between
        # processes loses most 640x480 frames, which would measure the transport, not the node.
        qos = QoSProfile(depth=5)
        self.image_pubs = {c: client.create_publisher(Image, f"{p}/image", qos) for c, p in cameras.items()}
        self.info_pubs = {c: client.create_publisher(CameraInfo, f"{p}/camera_info", qos) for c, p in cameras.items()}
        self.msg, self.info = camera_messages(height, width)
        self.arrivals = Arrivals(cameras, self._check_nodes)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.reported_at: dict[str, float] = {}  # status name -> when its last values came (monotonic)
        for c, p in cameras.items():
            # Raw: the clock stops when the serialized depth is here (as for a C++ consumer), not
            # after rclpy has built Python objects of every pixel.
            client.create_subscription(Image, f"{p}/depth/image", self.arrivals.recorder(c), qos, raw=True)
        client.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, QoSProfile(depth=10))

    def _on_diagnostics(self, msg) -> None:
        with self.arrivals.changed:
            for status in msg.status:
                self.diagnostics[status.name] = status_values(status)
                self.reported_at[status.name] = time.monotonic()
            self.arrivals.changed.notify_all()

    def _check_nodes(self) -> None:
        for proc, log in self.nodes:
            if proc.poll() is not None:
                raise SystemExit(f"a depth node exited (code {proc.returncode}): {log_tail(log)}")

    def _send_all(self, sent: dict[str, list[int]] | None = None) -> None:
        for camera in self.cameras:
            stamp_ns = time.time_ns()
            self.msg.header.stamp.sec, self.msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
            self.info.header = self.msg.header
            self.info_pubs[camera].publish(self.info)
            self.image_pubs[camera].publish(self.msg)
            if sent is not None:
                sent[camera].append(stamp_ns)

    def _publish_until(self, period_s: float, done, timeout_s: float, sent=None) -> bool:
        """Publish on every camera each `period_s` until `done()` or `timeout_s`; True if done."""
        deadline = time.monotonic() + timeout_s
        next_tick = time.monotonic()
        while time.monotonic() < deadline:
            with self.arrivals.changed:
                if done():
                    return True
            self._check_nodes()
            self._send_all(sent)
            next_tick += period_s
            # Sleep, do not spin: the nodes share the CPUs. A late tick is not made up for.
            time.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick = max(next_tick, time.monotonic() - period_s)
        with self.arrivals.changed:
            return done()

    def run(self, rate_hz: float, duration_s: float, ready_timeout_s: float) -> dict:
        period_s = 1.0 / rate_hz
        deadline = time.monotonic() + ready_timeout_s
        while not all(p.get_subscription_count() > 0 for p in self.image_pubs.values()):
            if time.monotonic() > deadline:
                raise SystemExit(f"the node(s) did not subscribe to every camera within {ready_timeout_s:.0f} s")
            self._check_nodes()
            time.sleep(0.2)
        # Warm-up: every camera answered once (first forward, allocator, DDS discovery of outputs).
        if not self._publish_until(period_s, lambda: all(self.arrivals.values()), deadline - time.monotonic()):
            missing = [c for c, a in self.arrivals.items() if not a]
            raise SystemExit(f"no depth output for cameras {missing} within {ready_timeout_s:.0f} s")
        warm_latency_s = max(t - s / 1e9 for a in self.arrivals.values() for s, t in a.items())
        with self.arrivals.changed:
            for a in self.arrivals.values():
                a.clear()
        sent: dict[str, list[int]] = {c: [] for c in self.cameras}
        started = time.time()
        self._publish_until(period_s, lambda: False, duration_s, sent)
        ended = time.time()
        # Let frames in flight finish (up to ~2 forwards) so their ages count; FPS counts only
        # the outputs that arrived within the window. Each camera's frames are handled in order:
        # once its last one is here, no earlier one is still coming.
        self.arrivals.wait_for(lambda: all(s[-1] in self.arrivals[c] for c, s in sent.items() if s),
                               min(max(2.0, 2 * warm_latency_s), 60.0))
        # Then one more /diagnostics report of every status (each comes once a second; 1.1 s at most).
        after = time.monotonic()
        self.arrivals.wait_for(lambda: all(t > after for t in self.reported_at.values()), 1.1)
        with self.arrivals.changed:
            arrivals = {c: dict(a) for c, a in self.arrivals.items()}
            diagnostics = dict(self.diagnostics)
        per_camera = {}
        for camera, stamps in sent.items():
            stamp_set = set(stamps)
            got = {s: t for s, t in arrivals[camera].items() if s in stamp_set}
            in_window = [t for t in arrivals[camera].values() if started <= t <= ended]
            per_camera[camera] = {"sent": len(stamps), "received": len(got),
                                  "fps": len(in_window) / (ended - started), **age_percentiles(got)}
        return {"cameras": per_camera, "window_s": ended - started, "sent_hz": rate_hz,
                "diagnostics": diagnostics}
