"""The depth node's outputs: one camera's lifecycle publishers, and the chain of stages a frame's
prediction goes through to reach them: the temporal filter, the range masking, then one stage per
published topic. A stage is one entry of `DepthOutputs.stages`, called with the frame's
`OutputFrame` (which it may update for the stages after it, by replacing its arrays, never by
writing into them: the compressedDepth stage reads them on its own thread). Every output carries
the input image's header unchanged."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

import zoedepth_ros
from zoedepth_ros.camera_info import Intrinsics, depth_camera_info
from zoedepth_ros.cloud import CloudBuilder, to_pointcloud2
from zoedepth_ros.colormap import colorize
from zoedepth_ros.depth_codec import depth_to_mm16
from zoedepth_ros.inference.temporal_filter import TemporalFilter, make_temporal_filter
from zoedepth_ros.ros.inputs import own_qos
from zoedepth_ros.ros.messages import image_msg
from zoedepth_ros.ros.parameters import Settings
from zoedepth_ros.ros.processes import stop_process

# Reliable, so RViz and depth_image_proc (reliable by default) receive it; shallow, so a slow
# subscriber is never fed stale depth.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)
OUTPUT_TOPICS: dict[str, type] = {
    "depth/image": Image,  # 32FC1 metres, NaN = invalid (REP 118)
    "depth/image_mm": Image,  # 16UC1 millimetres, 0 = invalid
    "depth/camera_info": CameraInfo,
    "depth/points": PointCloud2,
    "depth/colormap": Image,  # rgb8
    "depth/uncertainty": Image,  # 32FC1 metres
    "depth/image/compressedDepth": CompressedImage,  # image_transport's compressedDepth of depth/image
}


@dataclass
class OutputFrame:
    """One frame on its way through a camera's output stages."""

    header: object  # the input image's, carried by every output
    settings: Settings
    rgb: np.ndarray  # the decoded input image
    depth: np.ndarray  # HxW metres, as predicted, then as the stages leave it
    std: np.ndarray | None  # the prediction's spread, when depth/uncertainty is published
    intrinsics: Intrinsics | None  # of the depth image; None: no depth/camera_info and depth/points
    info: CameraInfo | None  # the camera_info they came from (None: guessed, or none)
    new_sequence: bool = False  # the frame starts a new sequence of its camera

    @property
    def stamp_ns(self) -> int:
        return self.header.stamp.sec * 1_000_000_000 + self.header.stamp.nanosec


class TemporalFilterStage:
    """The camera's temporal filter (`temporal_filter`), restarted at each new sequence; a change
    of the parameter starts a new filter. The filter's own gap rule is off: the camera decides the
    sequences on every frame it admits, of which the worker may process only some (a model slower
    than new_sequence_after_s would otherwise restart the filter at every frame)."""

    def __init__(self) -> None:
        self.filter: TemporalFilter | None = None

    def __call__(self, frame: OutputFrame) -> None:
        name = frame.settings.temporal_filter
        if self.filter is None or self.filter.name != name:
            self.filter = make_temporal_filter(name, new_sequence_after_s=math.inf)
        elif frame.new_sequence:
            self.filter.reset()
        # Only a real camera_info's K counts: a guessed one (fallback_hfov_deg) says nothing of the camera.
        K = None if frame.info is None or frame.intrinsics is None else np.reshape(frame.intrinsics.k, (3, 3))
        frame.depth = self.filter.filter(frame.depth, frame.stamp_ns, K, frame.rgb)


def mask_range(frame: OutputFrame) -> None:
    """Depth outside [min_depth, max_depth] (and NaN) becomes invalid, in the depth and its spread."""
    settings = frame.settings
    valid = (frame.depth >= settings.min_depth) & (frame.depth <= settings.max_depth)  # False for NaN
    frame.depth = np.where(valid, frame.depth, np.float32(np.nan)).astype(np.float32, copy=False)
    if frame.std is not None:
        frame.std = np.where(valid, frame.std, np.float32(np.nan)).astype(np.float32, copy=False)


def compressed_depth_max(settings: Settings) -> float:
    """The depth_max of depth/image/compressedDepth: compressed_depth_max, or (0) one float32 step
    above max_depth, since the plugin's format stores depth at its maximum as invalid and
    depth/image keeps depth equal to max_depth."""
    if settings.compressed_depth_max > 0.0:
        return settings.compressed_depth_max
    return float(np.nextafter(np.float32(settings.max_depth), np.float32(np.inf)))


class EncoderProcess:
    """`python -m zoedepth_ros.compressed_depth` (`serve_encoder`): encodes compressedDepth for the
    node in a process of its own, at the lowest CPU priority, started with the first frame to
    encode and again after it died. It ends when its stdin closes: at `close`, or when the node is
    gone, however it ended."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def encode(self, depth: np.ndarray, fmt: str, **options) -> tuple[str, bytes]:
        """`encode_compressed_depth(depth, fmt, **options)`, done in the process."""
        if self._proc is None:
            # The package's own location first: the child must import this zoedepth_ros.
            package_root = str(Path(zoedepth_ros.__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                              os.environ.get("PYTHONPATH")]))}
            self._proc = subprocess.Popen([sys.executable, "-m", "zoedepth_ros.compressed_depth"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            pickle.dump((depth, fmt, options), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
            reply = pickle.load(self._proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            self.close()  # the next frame starts another
            raise RuntimeError(f"the encoder process ended ({type(exc).__name__}: {exc})") from None
        if reply[0] != "ok":
            raise ValueError(reply[1])
        return reply[1], reply[2]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, timeout=5.0, sig=None)


class CompressedDepthStage:
    """depth/image/compressedDepth, encoded off the worker: PNG level 9 takes ~25 ms a 640x480 frame,
    which in the worker would delay the camera's next frame by as much. The stage, last in the
    chain, only hands the frame over to a thread of its own that keeps the newest frame only (one
    not yet taken when the next comes is replaced and counted in `replaced`), so a slow encoder
    never queues frames nor ages its output. The thread has the encode done by an EncoderProcess:
    in a thread of the node, numpy's RVL delayed the next frames' depth by 4-17 ms on 2 cores
    (docs/benchmarks.md), taking the GIL back between its array operations."""

    def __init__(self, publisher, subscribed, logger) -> None:
        self._publisher, self._subscribed, self._logger = publisher, subscribed, logger
        self._cond = threading.Condition()
        self._pending: OutputFrame | None = None
        self._busy = self._stopping = False
        self._thread: threading.Thread | None = None
        self._encoder = EncoderProcess()  # used by the thread only
        self.encoded = self.replaced = 0

    def __call__(self, frame: OutputFrame) -> None:
        if not self._subscribed():
            return
        with self._cond:
            if self._stopping:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="zoedepth-compressed-depth", daemon=True)
                self._thread.start()
            self.replaced += self._pending is not None
            self._pending = frame
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._pending is None:
                    break
                frame, self._pending, self._busy = self._pending, None, True
            try:
                self._publish(frame)
            except Exception as exc:  # a failed encode costs its own message only
                self._logger.error(f"depth/image/compressedDepth not published: {type(exc).__name__}: {exc}",
                                   throttle_duration_sec=5.0)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        self._encoder.close()

    def _publish(self, frame: OutputFrame) -> None:
        settings = frame.settings
        fmt, data = self._encoder.encode(frame.depth, settings.compressed_depth_format,
                                         depth_max=compressed_depth_max(settings),
                                         quantization=settings.compressed_depth_quantization,
                                         png_level=settings.compressed_depth_png_level)
        self._publisher.publish(CompressedImage(header=frame.header, format=fmt, data=data))
        self.encoded += 1

    def finish(self, timeout: float = 5.0) -> None:
        """Wait until the frame handed over last is published (before the publishers deactivate)."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def stop(self) -> None:
        """Publish what is pending, then end the thread and its encoder process (before the
        publishers go)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10.0)


class DepthOutputs:
    """The publishers of one camera of a configured node (created with it, destroyed by `destroy`),
    on `prefix` + OUTPUT_TOPICS, keyed by OUTPUT_TOPICS, and the stages that feed them. The optional
    outputs are computed only while something subscribes to them."""

    def __init__(self, node, prefix: str = "") -> None:
        self._node = node
        self.publishers = {
            topic: node.create_lifecycle_publisher(
                msg_type, prefix + topic, own_qos(OUTPUT_QOS),
                qos_overriding_options=QoSOverridingOptions.with_default_policies(),
            )
            for topic, msg_type in OUTPUT_TOPICS.items()
        }
        self._cloud_builder = CloudBuilder()
        self.temporal_filter = TemporalFilterStage()
        self.compressed_depth = CompressedDepthStage(self.publishers["depth/image/compressedDepth"],
                                                     lambda: self.subscribed("depth/image/compressedDepth"),
                                                     node.get_logger())
        # compressedDepth last: its hand-over to its thread comes after every other output is out.
        self.stages = [self.temporal_filter, mask_range, self._depth, self._depth_mm, self._camera_info,
                       self._points, self._colormap, self._uncertainty, self.compressed_depth]

    def subscribed(self, topic: str) -> bool:
        return self.publishers[topic].get_subscription_count() > 0

    def publish(self, frame: OutputFrame) -> None:
        """Run `frame` through every stage."""
        for stage in self.stages:
            stage(frame)

    def _depth(self, frame: OutputFrame) -> None:
        self.publishers["depth/image"].publish(image_msg(frame.header, frame.depth, "32FC1"))

    def _depth_mm(self, frame: OutputFrame) -> None:
        if frame.settings.publish_depth_mm and self.subscribed("depth/image_mm"):
            self.publishers["depth/image_mm"].publish(image_msg(frame.header, depth_to_mm16(frame.depth), "16UC1"))

    def _camera_info(self, frame: OutputFrame) -> None:
        if frame.intrinsics is not None:
            self.publishers["depth/camera_info"].publish(depth_camera_info(frame.intrinsics, frame.header, frame.info))

    def _points(self, frame: OutputFrame) -> None:
        settings = frame.settings
        if frame.intrinsics is not None and settings.publish_points and self.subscribed("depth/points"):
            cloud = self._cloud_builder.build(frame.depth, frame.intrinsics, settings.points_stride,
                                              frame.rgb if settings.points_color else None)
            self.publishers["depth/points"].publish(to_pointcloud2(cloud, frame.header))

    def _colormap(self, frame: OutputFrame) -> None:
        settings = frame.settings
        if settings.publish_colormap and self.subscribed("depth/colormap"):
            vmin, vmax = ((settings.colormap_min, settings.colormap_max) if settings.colormap_fixed_range
                          else (None, None))
            self.publishers["depth/colormap"].publish(image_msg(frame.header, colorize(frame.depth, vmin, vmax),
                                                                "rgb8"))

    def _uncertainty(self, frame: OutputFrame) -> None:
        if frame.std is not None:
            self.publishers["depth/uncertainty"].publish(image_msg(frame.header, frame.std, "32FC1"))

    def finish(self) -> None:
        """Wait for the outputs still being built off the worker (the compressedDepth encode)."""
        self.compressed_depth.finish()

    def destroy(self) -> None:
        self.compressed_depth.stop()
        for publisher in self.publishers.values():
            self._node.destroy_lifecycle_publisher(publisher)
        self.publishers = {}
