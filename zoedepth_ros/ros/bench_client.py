"""The benchmark's DDS client (`zoedepth_ros.bench.node`): this process's side of the node part, a
camera publisher and subscribers to the node's outputs, taking the time when each serialized
output arrives, and the node's own latency figures from /diagnostics.
"""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from zoedepth_ros import diagnostics_keys
from zoedepth_ros.bench.timing import camera_frame


def drive_node(namespace: str, node_proc, node_log, frame, frames: int, warmup: int, rate_s: float,
               forward: dict, compressed_depth: bool = False) -> dict:
    """Closed-loop latencies of depth and of depth + cloud, then open-loop throughput, of the node
    `node_proc` (writing to `node_log`) under `namespace`, with `frame`-sized rgb8 images; the
    overhead is taken against `forward` (this process's forward time) when the node's is missing.
    With `compressed_depth`, also the depth latency with depth/image/compressedDepth subscribed
    against without, in alternating blocks. Initialises and shuts down rclpy."""
    rclpy.init()
    client = rclpy.create_node("zoedepth_bench_camera", namespace=namespace)
    try:
        return _drive(client, node_proc, node_log, frame, frames, warmup, rate_s, forward, compressed_depth)
    finally:
        client.destroy_node()
        rclpy.try_shutdown()


def camera_messages(height: int, width: int) -> tuple[Image, CameraInfo]:
    """The benchmark camera's rgb8 frame and its camera_info (a pinhole, f = 0.8 width)."""
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    f = 0.8 * width
    info.k = [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, width / 2, 0.0, 0.0, f, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.data = camera_frame(height, width).tobytes()
    msg.header.frame_id = "camera_optical_frame"
    return msg, info


def cdr_stamp_ns(serialized: bytes) -> int:
    """header.stamp of a serialized message that starts with a std_msgs/Header (Image, CameraInfo,
    PointCloud2): after the 4-byte CDR encapsulation, int32 sec and uint32 nanosec."""
    byte_order = "<" if serialized[1] & 1 else ">"  # CDR_LE is 0x0001, CDR_BE 0x0000
    sec, nanosec = struct.unpack_from(byte_order + "iI", serialized, 4)
    return sec * 10**9 + nanosec


class Arrivals(dict):
    """When each serialized output arrived (time.time()), by output name and then stamp, with one
    condition that every arrival notifies (as may other reports kept under it, such as
    /diagnostics), so a wait sleeps until the next event instead of polling: the nodes share the
    CPUs. `check_nodes` raises SystemExit once a node it watches has exited."""

    def __init__(self, outputs, check_nodes):
        super().__init__({output: {} for output in outputs})
        self.changed = threading.Condition()
        self.check_nodes = check_nodes

    def recorder(self, output: str):
        """A raw subscription's callback that records `output`'s arrival at its header's stamp."""
        def record(serialized: bytes) -> None:
            now = time.time()
            with self.changed:
                self[output][cdr_stamp_ns(serialized)] = now
                self.changed.notify_all()
        return record

    def wait_for(self, predicate, timeout_s: float) -> bool:
        """Sleep until an event makes `predicate` true (checked under the condition's lock), or
        `timeout_s`; True if it did."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.check_nodes()
                self.changed.wait(min(remaining, 0.5))
        return True


def age_percentiles(arrived: dict[int, float]) -> dict:
    """p50 and p99 (ms) of the ages of outputs at arrival, `arrived` mapping stamp (ns) to time."""
    ages = [(t - s / 1e9) * 1000.0 for s, t in arrived.items()]
    return {f"age_p{q}_ms": float(np.percentile(ages, q)) if ages else float("nan") for q in (50, 99)}


class _NodeDriver:
    """This process's side of the node benchmark: a camera publisher and the output subscribers."""

    def __init__(self, client, node_proc, node_log, frame):
        self.client, self.node_proc, self.node_log = client, node_proc, node_log
        height, width = frame
        self.qos = QoSProfile(depth=5)
        self.image_pub = client.create_publisher(Image, "image", self.qos)
        self.info_pub = client.create_publisher(CameraInfo, "camera_info", self.qos)
        self.msg, self.info = camera_messages(height, width)
        self.arrivals = Arrivals(("depth", "points", "compressedDepth"), self._check_node)
        self.node_status: diagnostics_keys.NodeStatus | None = None  # its last with latencies (/diagnostics)
        # Serialized (raw) outputs: the clock stops when the message is here, as for a C++ consumer
        # such as RViz, not after rclpy has also built Python objects of every pixel.
        client.create_subscription(Image, "depth/image", self.arrivals.recorder("depth"), self.qos, raw=True)
        client.create_subscription(Image, "depth/colormap", lambda m: None, self.qos, raw=True)
        client.create_subscription(CameraInfo, "depth/camera_info", lambda m: None, self.qos, raw=True)
        client.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, self.qos)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            reported = diagnostics_keys.parse_status(diagnostics_keys.status_values(status))
            if status.name.startswith(self.client.get_namespace()) and reported.forward is not None:
                with self.arrivals.changed:
                    self.node_status = reported
                    self.arrivals.changed.notify_all()

    def subscribe_points(self) -> None:
        self.client.create_subscription(PointCloud2, "depth/points", self.arrivals.recorder("points"), self.qos,
                                        raw=True)
        # The node builds clouds only for listeners: frames until it has seen this one (10 s at most).
        self.until_output("points", 10.0)

    def until_output(self, kind: str, timeout: float) -> bool:
        """Send frames one at a time (each after the last one's depth) until one comes back with its
        `kind` output too, which the node publishes once it has discovered this side's subscriber
        (matching here says nothing of the node's side); False if none did within `timeout`."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            stamp = self.send()
            if not self.arrivals.wait_for(lambda stamp=stamp: stamp in self.arrivals["depth"], remaining):
                return False
            # The node publishes a frame's outputs together: `kind` follows its depth at once, or not.
            if self.arrivals.wait_for(lambda stamp=stamp: stamp in self.arrivals[kind], min(0.5, remaining)):
                return True
        return False

    def toggle_compressed_depth(self, on: bool) -> None:
        """Subscribe depth/image/compressedDepth (serialized, arrivals kept), or unsubscribe; return
        once matched (the node encodes only for subscribers) and the node's side had time to see it."""
        if on:
            self.compressed = self.client.create_subscription(
                CompressedImage, "depth/image/compressedDepth", self.arrivals.recorder("compressedDepth"), self.qos,
                raw=True)
            if not self.arrivals.wait_for(lambda: self.compressed.get_publisher_count() > 0, 10):
                raise SystemExit("the node's depth/image/compressedDepth did not match within 10 s")
        else:
            self.client.destroy_subscription(self.compressed)
        time.sleep(0.5)  # discovery reaches the node's side a little after this one's

    def _check_node(self) -> None:
        if self.node_proc.poll() is not None:
            raise SystemExit(f"the node exited: {log_tail(self.node_log)}")

    def send(self) -> int:
        stamp_ns = time.time_ns()
        self.msg.header.stamp.sec, self.msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.info.header = self.msg.header
        self.info_pub.publish(self.info)
        self.image_pub.publish(self.msg)
        return stamp_ns

    def closed_loop(self, kinds: tuple[str, ...], frames: int, warmup: int) -> list[float]:
        """Send a frame, wait for its outputs, repeat: latency without queueing."""
        if not self.arrivals.wait_for(lambda: self.image_pub.get_subscription_count() > 0, 120):
            raise SystemExit("the node did not subscribe to the image within 120 s")
        latencies, lost_in_a_row = [], 0
        for i in range(warmup + frames):
            stamp = self.send()
            if not self.arrivals.wait_for(lambda stamp=stamp: all(stamp in self.arrivals[k] for k in kinds), 10):
                lost_in_a_row += 1
                if lost_in_a_row == 3:
                    raise SystemExit(f"no {'+'.join(kinds)} output for 3 frames; node log: {log_tail(self.node_log)}")
                continue
            lost_in_a_row = 0
            if i >= warmup:
                latencies.append(max(self.arrivals[k][stamp] for k in kinds) - stamp / 1e9)
        return latencies

    def open_loop(self, rate_s: float, duration_s: float) -> dict:
        """Publish at a fixed rate: what comes back, how often, how old."""
        with self.arrivals.changed:
            self.arrivals["depth"].clear()
        sent = []
        started = time.monotonic()
        while time.monotonic() - started < duration_s:
            sent.append(self.send())
            time.sleep(rate_s)
        elapsed = time.monotonic() - started
        # The frames in flight (2 s at most): the node handles them in order, so once the last
        # one is here no earlier one is still coming.
        self.arrivals.wait_for(lambda: sent[-1] in self.arrivals["depth"], 2.0)
        with self.arrivals.changed:
            sent_set = set(sent)
            got = {s: t for s, t in self.arrivals["depth"].items() if s in sent_set}
        span = max(got.values()) - min(got.values()) if len(got) > 1 else 0.0
        return {"sent_hz": len(sent) / elapsed, "sent": len(sent), "received": len(got),
                "output_hz": (len(got) - 1) / span if span else 0.0, **age_percentiles(got)}


def compare_compressed_depth(driver, frames: int, warmup: int, stats) -> dict:
    """Depth latency without and with depth/image/compressedDepth subscribed, in alternating blocks
    of about 10 frames each (drifting load hits both alike), each block after `warmup` frames: the
    p50 of each side's frames, and the median over the rounds of the difference of a round's two
    block p50s (robust to the load changing between rounds). The client
    sends the next frame as soon as the depth is here, so the encode of one frame runs beside the
    next one's inference, as at a camera's rate. Also the compressedDepth messages: how many came
    (the node keeps only the newest frame to encode) and their latency."""
    blocks: dict[bool, list[float]] = {False: [], True: []}
    sent: list[int] = []  # stamps of the frames timed with compressedDepth subscribed
    rounds = max(1, min(10, frames // 10))
    per_block = max(1, frames // rounds)
    paired = []
    for _ in range(rounds):
        without = driver.closed_loop(("depth",), per_block, warmup)
        driver.toggle_compressed_depth(True)
        with driver.arrivals.changed:
            before = set(driver.arrivals["depth"])
        with_ = driver.closed_loop(("depth",), per_block, warmup)
        blocks[False] += without
        blocks[True] += with_
        if without and with_:
            paired.append((np.median(with_) - np.median(without)) * 1000.0)
        with driver.arrivals.changed:
            block = [s for s in driver.arrivals["depth"] if s not in before][warmup:]
        sent += block
        if block:  # the block's last encode, before unsubscribing (none newer replaces it)
            driver.arrivals.wait_for(lambda last=block[-1]: last in driver.arrivals["compressedDepth"], 5)
        driver.toggle_compressed_depth(False)
    with driver.arrivals.changed:
        compressed = {s: driver.arrivals["compressedDepth"][s] - s / 1e9 for s in sent
                      if s in driver.arrivals["compressedDepth"]}
    result = {"without": stats(blocks[False], per_block * rounds), "with": stats(blocks[True], per_block * rounds),
              "compressed_received": len(compressed), "compressed_expected": len(sent)}
    if compressed:
        result["compressed_p50_ms"] = float(np.percentile(list(compressed.values()), 50)) * 1000.0
    if "p50_ms" in result["without"] and "p50_ms" in result["with"]:
        result["difference_p50_ms"] = result["with"]["p50_ms"] - result["without"]["p50_ms"]
    if paired:
        result["paired_difference_ms"] = float(np.median(paired))
        result["rounds"] = len(paired)
    return result


def with_node_latency(result: dict, node_status: diagnostics_keys.NodeStatus | None, forward: dict) -> dict:
    """`result` (closed-loop latencies) with the overhead = latency minus the forward time, both p50,
    the forward timed inside the node (`node_status`: its last status with latencies, None before
    its first) or, only if the node's is missing, in this process (`forward`): the same model runs
    slower there while its outputs of the previous frame are still being serialised and received.
    With the node's inference time, also the transport: latency minus inference."""

    def p50(latency: diagnostics_keys.Latency | None) -> float | None:
        return latency.p50_ms if latency is not None else None

    node_forward = p50(node_status.forward) if node_status is not None else None
    node_inference = p50(node_status.inference) if node_status is not None else None
    if "p50_ms" in result:
        result["forward_p50_ms"] = node_forward if node_forward is not None else forward["median_ms"]
        result["overhead_p50_ms"] = result["p50_ms"] - result["forward_p50_ms"]
        if node_inference is not None:
            result["node_inference_p50_ms"] = node_inference
            result["transport_p50_ms"] = result["p50_ms"] - node_inference
    return result


def _drive(client, node_proc, node_log, frame, frames, warmup, rate_s, forward, compressed_depth=False) -> dict:
    driver = _NodeDriver(client, node_proc, node_log, frame)
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()

    def stats(latencies, expected=frames):
        ms = np.asarray(latencies) * 1000.0
        out = {"frames": int(ms.size), "lost": expected - int(ms.size)}
        if ms.size:
            out.update({f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)})
        return out

    def with_node_timing(result):
        # The node's status once it covers every frame received here (it counts a frame out after
        # publishing it, and reports each second): 3 s at most, then its last status.
        with driver.arrivals.changed:
            received = len(driver.arrivals["depth"])
        driver.arrivals.wait_for(
            lambda: driver.node_status is not None and (driver.node_status.frames_out or 0) >= received, 3.0)
        with driver.arrivals.changed:
            node_status = driver.node_status
        return with_node_latency(result, node_status, forward)

    try:
        results = {"depth": with_node_timing(stats(driver.closed_loop(("depth",), frames, warmup)))}
        if compressed_depth:
            results["compressedDepth"] = compare_compressed_depth(driver, frames, warmup, stats)
            # One forward p50 for both (the node's window spans the alternating blocks).
            for key in ("without", "with"):
                with_node_timing(results["compressedDepth"][key])
        driver.subscribe_points()
        results["depth+cloud"] = with_node_timing(stats(driver.closed_loop(("depth", "points"), frames, warmup)))
        results["open_loop"] = driver.open_loop(rate_s, max(3.0, frames * 0.05))
        return results
    finally:
        executor.shutdown()


def log_tail(log, chars: int = 3000) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-chars:]
