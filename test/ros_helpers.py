"""ROS plumbing for the node tests: the test camera process, output collection, spinning, a
per-test harness, launch files, and process measurements for the soak and fuzz tests.

DDS isolation (domain id, localhost discovery, Fast DDS) comes from test/conftest.py, which sets
it before rclpy loads; the camera subprocess inherits it. The fixtures built on these (`context`,
`ros`, `checkpoint`, ...) are in conftest.py too.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.ros.processes import stop_process

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

    def __init__(self, namespace: str, width: int, height: int, timeout: float = 30.0, qos: str | None = None,
                 env: dict[str, str] | None = None):
        """`qos`: publisher_proc.py's --qos; `env`: the process's environment (default: this one's)."""
        # A thread reads its output line by line, from a pipe of our own: Popen's would also be
        # drained by stop_process, at the same time.
        read_end, write_end = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, str(TEST_DIR / "publisher_proc.py"), "--namespace", namespace,
             "--width", str(width), "--height", str(height), *(["--qos", qos] if qos else [])],
            stdin=subprocess.PIPE, stdout=write_end, text=True, cwd=REPO, env=env,
        )
        os.close(write_end)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(os.fdopen(read_end),), daemon=True).start()
        self.expect("ready", timeout)

    def _read(self, output) -> None:
        with output:
            for line in output:
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
        """End of its commands (stdin closed): it shuts down rclpy and exits, or is killed after 10 s."""
        stop_process(self.proc, timeout=10, sig=None)

    def __enter__(self) -> CameraProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Collector(Node):
    """Subscribes to the node's outputs and files every message by its header stamp.

    `history` bounds what is kept to the messages of that many most recent stamps (per topic:
    that many messages), so a long run measures the node's memory, not the collector's.
    """

    def __init__(self, namespace: str, topics: dict[str, type], context, history: int | None = None,
                 name: str = "output_collector") -> None:
        super().__init__(name, namespace=namespace, context=context)
        self._cond = threading.Condition()
        self._history = history
        self.received: dict[tuple[int, int], dict[str, object]] = {}
        self._by_topic: dict[str, collections.deque] = {topic: collections.deque(maxlen=history) for topic in topics}
        self.arrivals: list[tuple[float, object]] = []  # (wall time, depth/image header)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msg_type in topics.items():
            self.create_subscription(msg_type, topic, lambda msg, t=topic: self._store(t, msg), reliable)

    def _store(self, topic: str, msg) -> None:
        with self._cond:
            if topic == "depth/image":
                self.arrivals.append((time.time(), msg.header))
            self.received.setdefault(stamp_key(msg.header), {})[topic] = msg
            if self._history is not None and len(self.received) > self._history:
                del self.received[next(iter(self.received))]
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
    """Spins an executor in a background thread for the duration of a `with` block.

    An exception escaping a callback ends rclpy's spin, and with it every node on the executor:
    it is kept in `errors` and fails the `with` block.
    """

    def __init__(self, context, *nodes) -> None:
        self.executor = rclpy.executors.SingleThreadedExecutor(context=context)
        for node in nodes:
            self.executor.add_node(node)
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except rclpy.executors.ExternalShutdownException:
            pass
        except Exception as exc:
            self.errors.append(exc)
            raise

    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Spinner:
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.executor.shutdown(timeout_sec=5)
        self._thread.join(timeout=5)
        if self.errors and exc_type is None:
            raise AssertionError(f"an exception escaped a callback: {self.errors[0]!r}") from self.errors[0]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_done(future, timeout: float) -> bool:
    """Whether the rclpy `future` (a service call's, ...) is done within `timeout`: woken by its
    completion, where polling `future.done` would add up to an interval to every call."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    return done.wait(timeout) or future.done()


@contextlib.contextmanager
def ros_context():
    """A private rclpy context for one test module."""
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


class Harness:
    """One test's ROS world: its own namespace, and the nodes it creates, destroyed by `close`.

    `node_params` are the depth node's parameters for every node of the test, on top of the
    model and the CPU device; `size` is the test camera's (width, height). The environment
    variable ZOEDEPTH_TEST_TEMPORAL_FILTER runs every node with that temporal_filter (a test
    that sets its own keeps it): `ZOEDEPTH_TEST_TEMPORAL_FILTER=scale+ema pytest test/test_node.py`
    shows the node's behaviour unchanged with the filter on.
    """

    def __init__(self, context, namespace: str, checkpoint: str, size: tuple[int, int] = (40, 30),
                 **node_params) -> None:
        self.context, self.namespace, self.checkpoint = context, namespace, checkpoint
        self.size = size
        forced = {"temporal_filter": os.environ["ZOEDEPTH_TEST_TEMPORAL_FILTER"]} \
            if os.environ.get("ZOEDEPTH_TEST_TEMPORAL_FILTER") else {}
        self.node_params = {"model": checkpoint, "device": "cpu", **forced, **node_params}
        self.nodes: list = []

    def _add(self, node):
        self.nodes.append(node)
        return node

    def depth_node(self, node_name: str = "zoedepth", **params):
        from zoedepth_ros.ros.depth_node import DepthNode

        params = {**self.node_params, **params}
        return self._add(DepthNode(
            node_name, namespace=self.namespace, context=self.context,
            parameter_overrides=[Parameter(name, value=value) for name, value in params.items()],
        ))

    def collector(self, topics: dict[str, type], **kwargs) -> Collector:
        return self._add(Collector(self.namespace, topics, self.context, **kwargs))

    def client(self, name: str):
        return self._add(rclpy.create_node(name, namespace=self.namespace, context=self.context))

    def spin(self) -> Spinner:
        """Spin every node created so far in the background (a `with` block)."""
        return Spinner(self.context, *self.nodes)

    def camera(self) -> CameraProcess:
        return CameraProcess(self.namespace, *self.size)

    def diagnostics(self, collector) -> list:
        """The depth node's statuses on /diagnostics, oldest first (other tests' nodes left out)."""
        return [status for array in collector.messages("/diagnostics") for status in array.status
                if status.name.startswith(f"{self.namespace}/zoedepth")]

    def latest_diagnostics(self, collector) -> dict[str, str]:
        statuses = self.diagnostics(collector)
        return {v.key: v.value for v in statuses[-1].values} if statuses else {}

    def wait_report(self, collector, timeout: float = 10.0) -> bool:
        """Wait for a /diagnostics report of the depth node stamped after this call (one a second):
        what it says covers everything before the call. Instead of sleeping past a report period."""
        since = time.time()

        def reported() -> bool:
            return any(array.header.stamp.sec + array.header.stamp.nanosec * 1e-9 >= since
                       and any(s.name.startswith(f"{self.namespace}/zoedepth") for s in array.status)
                       for array in reversed(collector.messages("/diagnostics")))

        return wait_until(reported, timeout, interval=0.02)

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes = []


def reliable_inputs(namespace: str, depth: int = 1) -> dict[str, object]:
    """QoS override parameters making the node's inputs reliable: tests that count every message
    (or wait for each frame's output) must not lose any to best effort."""
    params = {}
    for topic in ("image", "image/compressed", "camera_info"):
        params[f"qos_overrides.{namespace}/{topic}.subscription.reliability"] = "reliable"
        params[f"qos_overrides.{namespace}/{topic}.subscription.depth"] = depth
    return params


def image_array(msg: Image) -> np.ndarray:
    dtype = {"32FC1": "<f4", "16UC1": "<u2", "rgb8": np.uint8}[msg.encoding]
    pixels = np.frombuffer(msg.data, dtype).reshape(msg.height, msg.width, -1)
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


class BatchRecorder(DepthEstimator):
    """The real model, each batch's image shapes, domains and duration kept (class attributes: the
    node makes its own instance); every batch takes at least DELAY_S (a slow model: the cameras'
    frames queue up behind it). A test patches it in as zoedepth_ros.inference.DepthEstimator."""

    DELAY_S = 0.0
    batches: list[dict] = []

    def predict_batch(self, images, with_std=False):
        started = time.perf_counter()
        time.sleep(BatchRecorder.DELAY_S)
        predictions = super().predict_batch(images, with_std)
        BatchRecorder.batches.append({"shapes": [image.shape for image in images],
                                      "domains": [p.domain for p in predictions],
                                      "seconds": time.perf_counter() - started})
        return predictions


def send_frame(camera, collector, stamp, topics, timeout=20.0, attempts=2, **command):
    """Publish one frame and return the outputs stamped with it (resent: the input may be best effort)."""
    for _ in range(attempts):
        camera.send(stamp=list(stamp), **command)
        outputs = collector.wait(stamp, topics, timeout)
        if outputs is not None:
            return outputs
    raise AssertionError(f"no {sorted(topics)} for frame {stamp} ({command})")


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_bytes() -> int:
    """Resident memory of this process (Linux)."""
    return _proc_status("VmRSS") * 1024


def native_threads() -> int:
    """Threads of this process, native ones (DDS, torch) included (Linux)."""
    return _proc_status("Threads")


def launch_description(path: Path):
    """The LaunchDescription of the launch file at `path`. The file is compiled first, so a syntax
    error fails everywhere; the rest skips the test where launch_ros (a ROS apt package, not on
    PyPI) is missing."""
    compile(path.read_text(), str(path), "exec")
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros is not installable here (ROS apt package); runs on a robot")
    spec = importlib.util.spec_from_file_location(path.name.removesuffix(".py").replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()
