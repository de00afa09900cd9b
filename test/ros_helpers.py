"""ROS plumbing for the node tests: the test camera process, output collection, spinning.

DDS isolation (domain id, localhost discovery, Fast DDS) comes from test/conftest.py, which sets
it before rclpy loads; the camera subprocess inherits it.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from image_samples import encode, pack

TEST_DIR = Path(__file__).resolve().parent
REPO = TEST_DIR.parent

# The test camera: P deliberately differs from K, so using K instead of P shows up.
FX, FY, CX, CY = 30.0, 32.0, 19.3, 14.6
P_FX, P_FY, P_CX, P_CY = 27.0, 29.0, 18.9, 15.1


def stamp_key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def camera_info(width: int, height: int, scale: int = 1) -> CameraInfo:
    """The test camera's info, calibrated at `scale` times the image resolution."""
    info = CameraInfo(width=width * scale, height=height * scale, distortion_model="plumb_bob")
    info.k = [FX * scale, 0.0, CX * scale, 0.0, FY * scale, CY * scale, 0.0, 0.0, 1.0]
    info.p = [P_FX * scale, 0.0, P_CX * scale, 0.0, 0.0, P_FY * scale, P_CY * scale, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    return info


def image_message(rgb: np.ndarray, encoding: str, padding: int = 0, compressed: str | None = None):
    """`rgb` as the Image (or CompressedImage, `compressed` = "png"/"jpeg") a camera would send."""
    if compressed is not None:
        ok, data = cv2.imencode("." + compressed, rgb[..., ::-1])
        assert ok
        return CompressedImage(format=f"rgb8; {compressed} compressed bgr8", data=data.tobytes())
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0)
    msg.step, msg.data = pack(encode(rgb, encoding), padding)
    return msg


class CameraProcess:
    """test/publisher_proc.py in a subprocess, driven one JSON command per line."""

    def __init__(self, namespace: str, width: int, height: int, timeout: float = 30.0):
        self.proc = subprocess.Popen(
            [sys.executable, str(TEST_DIR / "publisher_proc.py"), "--namespace", namespace,
             "--width", str(width), "--height", str(height)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("ready", timeout)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def expect(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"test camera did not say '{word}' within {timeout} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.startswith(word):
                return line

    def send(self, timeout: float = 30.0, **command) -> None:
        """Run one command (see publisher_proc.py) and wait until it has been published."""
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        self.expect("sent", timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> CameraProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Collector(Node):
    """Subscribes to the node's outputs and files every message by its header stamp."""

    def __init__(self, namespace: str, topics: dict[str, type], context) -> None:
        super().__init__("output_collector", namespace=namespace, context=context)
        self._cond = threading.Condition()
        self.received: dict[tuple[int, int], dict[str, object]] = {}
        self._by_topic: dict[str, list] = {topic: [] for topic in topics}
        self.arrivals: list[tuple[float, object]] = []  # (wall time, depth/image header)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msg_type in topics.items():
            self.create_subscription(msg_type, topic, lambda msg, t=topic: self._store(t, msg), reliable)

    def _store(self, topic: str, msg) -> None:
        with self._cond:
            if topic == "depth/image":
                self.arrivals.append((time.time(), msg.header))
            self.received.setdefault(stamp_key(msg.header), {})[topic] = msg
            self._by_topic[topic].append(msg)
            self._cond.notify_all()

    def messages(self, topic: str) -> list:
        """Everything received on `topic` so far, oldest first."""
        with self._cond:
            return list(self._by_topic[topic])

    def wait(self, stamp: tuple[int, int], topics, timeout: float) -> dict[str, object] | None:
        """The messages of every topic in `topics` stamped `stamp`, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not set(topics) <= set(self.received.get(stamp, {})):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return dict(self.received[stamp])


class Spinner:
    """Spins an executor in a background thread for the duration of a `with` block."""

    def __init__(self, context, *nodes) -> None:
        self.executor = rclpy.executors.SingleThreadedExecutor(context=context)
        for node in nodes:
            self.executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except rclpy.executors.ExternalShutdownException:
            pass

    def __enter__(self) -> Spinner:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown(timeout_sec=5)
        self._thread.join(timeout=5)


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
