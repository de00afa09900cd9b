"""The demo's listener (`zoedepth_ros.demo`): a node in the demo's process that keeps the newest
point cloud of the depth node under a namespace and that node's last diagnostics, spun in a
thread while the demo replays its bags.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile
from sensor_msgs.msg import PointCloud2

from zoedepth_ros.diagnostics_keys import status_values


class Listener:
    """Keeps the newest cloud and the node's last diagnostics (both under `lock`)."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.node = rclpy.create_node("zoedepth_demo_listener", namespace=namespace)
        self.clouds: list = []
        self.diagnostics: dict[str, str] = {}
        self.lock = threading.Lock()
        self.node.create_subscription(PointCloud2, "depth/points", self._on_cloud, QoSProfile(depth=2))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, QoSProfile(depth=10))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_cloud(self, msg) -> None:
        with self.lock:
            self.clouds.append(msg)
            del self.clouds[:-1]  # the newest is enough, and clouds are large

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{self.namespace}/zoedepth"):
                with self.lock:
                    self.diagnostics = status_values(status)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@contextlib.contextmanager
def listening(namespace: str) -> Iterator[Listener]:
    """rclpy initialised and a `Listener` of the node under `namespace` spinning, for the block."""
    rclpy.init()
    listener = Listener(namespace)
    try:
        yield listener
    finally:
        listener.close()
        rclpy.try_shutdown()
