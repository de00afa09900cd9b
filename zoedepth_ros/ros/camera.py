"""One camera of the depth node: its subscriptions (image, camera_info), its publishers, the checks
of its messages and its counters. A node without `cameras` has one, with no topic prefix; with
`cameras`, one per name, each on `<name>/...`. Nothing a camera receives reaches another camera:
each has its own stamp order, camera_info, rejections and throttled warnings.

The callbacks run on the executor; `decode` and `publish` on the inference worker. The frames the
callbacks admit go to the node's FrameSlots under the camera's name, marked where they start a new
sequence; `publish` runs a frame through the camera's output stages (outputs.py), its own temporal
filter first.
"""

from __future__ import annotations

import time

from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from zoedepth_ros import diagnostics_keys
from zoedepth_ros.camera_info import (
    CameraInfoError,
    check_camera_info,
    intrinsics_from_camera_info,
    pinhole_from_hfov,
)
from zoedepth_ros.cameras import topic_prefix
from zoedepth_ros.image_codec import (
    ASSUMED_ENCODINGS,
    ImageDecodeError,
    check_compressed_msg,
    check_image_msg,
    decode_compressed_msg,
    decode_image_msg,
)
from zoedepth_ros.ros.diagnostics import Stats
from zoedepth_ros.ros.inputs import INPUT_QOS, AdmittedFrame, FrameSlots, ImageSubscription, StampOrder, own_qos
from zoedepth_ros.ros.outputs import DepthOutputs, OutputFrame
from zoedepth_ros.ros.processes import DDS_PROFILE_NAME, DDS_PROFILE_VARIABLE

# A best-effort frame larger than one UDP fragment is lost whenever any of its fragments is.
UDP_FRAGMENT_BYTES = 64 * 1024
# Frames missing from a publisher's sequence numbers before the log and /diagnostics name the cause.
LOSS_REPORT_FRAMES = 3


class Camera:
    """`name` '' is a node's single camera. `settings()` gives the node's current Settings, `log`
    is the node's ThrottledLog (keys and texts are tagged with the camera here)."""

    def __init__(self, node, name: str, slots: FrameSlots, settings, log) -> None:
        self._node, self.name, self._slots = node, name, slots
        self._settings, self._node_log = settings, log
        self.prefix = topic_prefix(name)
        self._tag = f"camera '{name}': " if name else ""
        self.stats = Stats()
        self.outputs: DepthOutputs | None = None  # while configured
        self.camera_info: CameraInfo | None = None
        self._camera_info_at = 0.0  # monotonic arrival time of camera_info
        self._camera_info_sub = None
        self.image_input: ImageSubscription | None = None  # while active
        self.image_topic = ""  # resolved, set at each activation
        self._stamps = StampOrder()
        self.loss_problem: str | None = None  # why frames go missing, once found out
        self._assumed_encodings: set[str] = set()  # generic encodings already warned about
        self._check, self.decode = check_image_msg, decode_image_msg  # by input_transport at activation

    # ---------------------------------------------------------------- lifecycle

    def configure(self) -> None:
        self.outputs = DepthOutputs(self._node, self.prefix)

    def activate(self, compressed: bool) -> None:
        """Subscribe; everything the callbacks use is in place before a subscription can deliver."""
        node = self._node
        self._check = check_compressed_msg if compressed else check_image_msg
        self.decode = decode_compressed_msg if compressed else decode_image_msg
        self._stamps.restart()
        self.loss_problem = None
        # camera_info first: a camera that starts publishing when it sees the image subscription
        # then finds this one matched too, and its first frame comes with intrinsics.
        self._camera_info_sub = node.create_subscription(
            CameraInfo, self.prefix + "camera_info", self._on_camera_info, own_qos(INPUT_QOS),
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        self.image_topic = node.resolve_topic_name(self.prefix + "image") + ("/compressed" if compressed else "")
        # input_reliability auto re-creates the subscription when the publishers' offers change.
        self.image_input = ImageSubscription(node, CompressedImage if compressed else Image, self.image_topic,
                                             self._on_image, lambda: self._settings().input_reliability)
        self.image_input.subscribe()

    def deactivate(self) -> None:
        if self._camera_info_sub is not None:
            self._node.destroy_subscription(self._camera_info_sub)
        if self.image_input is not None:
            self.image_input.destroy()
        self._camera_info_sub = self.image_input = None

    def release(self) -> None:
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None

    # ---------------------------------------------------------------- callbacks

    def _on_image(self, msg, info) -> None:
        # Nothing may escape a callback: it would end the executor's spin, and the node with it.
        try:
            new_publisher = self._follow_sequence(msg, info)
            self._check(msg, max_pixels=self._settings().max_image_pixels)
            new_sequence, warning = self._stamps.admit(msg.header, new_publisher, self._settings().new_sequence_after_s)
            if warning is not None:
                self.log("stamp_restart", "warn", warning)
        except ImageDecodeError as exc:
            self.stats.frame_in()
            self.reject(exc.reason, f"image rejected: {exc}")
            return
        except Exception as exc:
            self.stats.frame_in()
            self.reject("check_error", f"image rejected, checking it failed: {type(exc).__name__}: {exc}", "error")
            return
        encoding = getattr(msg, "encoding", "")
        if encoding in ASSUMED_ENCODINGS and encoding not in self._assumed_encodings:
            self._assumed_encodings.add(encoding)
            self._node.get_logger().warning(
                f"images on '{self.image_topic}' are '{encoding}', a generic type with no colour order: "
                f"taking them as OpenCV's {ASSUMED_ENCODINGS[encoding]} (what cv_bridge's cv2_to_imgmsg writes "
                f"without an encoding); publish them as {ASSUMED_ENCODINGS[encoding]} to say so")
        # The worker restarts the temporal filter at this frame (or the newer one that replaces it):
        # it, not this thread, runs the filter, and later than this callback.
        self.stats.frame_in(dropped_stale=self._slots.put(self.name, AdmittedFrame(msg, new_sequence)))

    def _follow_sequence(self, msg, info) -> bool:
        """Count the frames missing from the publisher's sequence numbers; True when the sequence
        started again (a new publisher: a restarted driver, another replay)."""
        image_input = self.image_input  # None once deactivation began
        if image_input is None:
            return False
        new_publisher, missed = image_input.follow_sequence(info)
        if missed:
            self.stats.frames_missed(missed)
            self._explain_missed_frames(memoryview(msg.data).nbytes, image_input.reliability)
        return new_publisher

    def _explain_missed_frames(self, frame_bytes: int, reliability: str) -> None:
        """Say once, in the log and on /diagnostics, why frames go missing when the cause is known:
        best-effort frames larger than a UDP fragment, with no shared-memory path from the publisher."""
        if (self.loss_problem is not None or self.stats.missed < LOSS_REPORT_FRAMES
                or reliability != "best_effort" or frame_bytes <= UDP_FRAGMENT_BYTES):
            return
        self.loss_problem = (
            f"best-effort frames of {frame_bytes / 1e6:.1f} MB are being lost ({self.stats.missed} so far): they "
            f"cross from the camera's process in 64 KB UDP fragments and one lost fragment loses the frame. Remedy: "
            f"export {DDS_PROFILE_VARIABLE}=<share/zoedepth_ros/config/{DDS_PROFILE_NAME}> in the camera "
            "driver's environment (whole frames through shared memory), or have it publish reliable "
            "(input_reliability auto follows)")
        self._node.get_logger().warning(f"image input on '{self.image_topic}': {self.loss_problem}")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.stats.camera_info_in()
        try:
            check_camera_info(msg)
        except CameraInfoError as exc:
            self.reject(f"camera_info: {exc.reason}", f"camera_info rejected, the last valid one stays in use: {exc}")
            return
        except Exception as exc:
            self.reject("camera_info: check_error",
                        f"camera_info rejected, checking it failed: {type(exc).__name__}: {exc}", "error")
            return
        if any(msg.d) and self.camera_info is None:
            self._node.get_logger().info(
                f"{self._tag}camera_info has distortion coefficients: depth and cloud are in the input image's "
                "pixels, which are distorted; feed a rectified image (image_rect) for exact geometry"
            )
        self.camera_info, self._camera_info_at = msg, time.monotonic()

    def log(self, key: str, level: str, text: str) -> None:
        """A throttled log line of this camera (its own throttle, apart from other cameras')."""
        self._node_log(f"{self.name}:{key}", level, self._tag + text)

    def reject(self, reason: str, text: str, level: str = "warn") -> None:
        """Count a rejection under `reason` and log it, tagged with the reason as /diagnostics
        counts it, once per THROTTLE_S for each reason."""
        self.stats.reject(reason)
        self.log(f"rejected:{reason}", level, f"{text} [{reason}]")

    # ---------------------------------------------------------------- worker side

    def wants_std(self) -> bool:
        outputs = self.outputs
        return self._settings().publish_uncertainty and outputs is not None and outputs.subscribed("depth/uncertainty")

    def publish(self, frame: AdmittedFrame, rgb, prediction, with_std: bool, inference_s: float) -> None:
        """Publish the outputs of `prediction` for the admitted `frame` (decoded to `rgb`)."""
        outputs = self.outputs
        intrinsics, info_source = self._intrinsics(prediction.depth.shape[1], prediction.depth.shape[0])
        output = OutputFrame(frame.msg.header, self._settings(), rgb, prediction.depth,
                             prediction.std if with_std else None, intrinsics, info_source, frame.new_sequence)
        outputs.publish(output)
        stamp_ns = output.stamp_ns
        end_to_end = (self._node.get_clock().now().nanoseconds - stamp_ns) / 1e9 if stamp_ns else None
        self.stats.output(inference_s, prediction.forward_s, end_to_end, prediction.domain)

    def _intrinsics(self, width: int, height: int):
        """(intrinsics of the depth image, camera_info they came from) or (None, None)."""
        topic = self._node.resolve_topic_name(self.prefix + "camera_info")
        info = self.camera_info
        if info is not None:
            age_s = self.camera_info_age_s()
            if age_s is not None:
                self.log("camera_info:stale", "warn",
                         f"no valid camera_info on '{topic}' for {age_s:.1f} s (camera_info_timeout_s "
                         f"{self._settings().camera_info_timeout_s}): still using the last one")
            try:
                return intrinsics_from_camera_info(info, width, height), info
            except CameraInfoError as exc:
                self.reject(
                    f"camera_info: {exc.reason}",
                    f"camera_info unusable, publishing depth without depth/camera_info and depth/points: {exc}",
                    "error",
                )
                return None, None
        hfov = self._settings().fallback_hfov_deg
        if hfov > 0.0:
            self.log("camera_info:guess", "warn",
                     f"no camera_info on '{topic}': using a guessed pinhole camera (fallback_hfov_deg {hfov}) "
                     "for depth/camera_info and depth/points")
            return pinhole_from_hfov(width, height, hfov), None
        self.log("camera_info:missing", "warn",
                 f"no camera_info on '{topic}' yet: publishing depth only; depth/points and depth/camera_info "
                 "need the camera intrinsics (or set fallback_hfov_deg)")
        return None, None

    def camera_info_age_s(self) -> float | None:
        """Seconds since the last valid camera_info when that exceeds camera_info_timeout_s, else None."""
        timeout = self._settings().camera_info_timeout_s
        age_s = time.monotonic() - self._camera_info_at
        return age_s if self.camera_info is not None and timeout > 0.0 and age_s > timeout else None

    # ---------------------------------------------------------------- diagnostics

    def report(self, active: bool) -> tuple[dict[str, str], list[str] | None]:
        """(diagnostic values, problems) of this camera; problems None while the node is not active."""
        image_input = self.image_input
        values = {}
        if image_input is not None:
            values[diagnostics_keys.INPUT_RELIABILITY] = f"{image_input.reliability} ({image_input.why})"
        if self.loss_problem is not None:
            values[diagnostics_keys.INPUT_LOSS] = self.loss_problem
        if not active:
            return values, None
        snapshot, recent, missed = self.stats.snapshot()
        values.update(snapshot)
        outputs = self.outputs
        if outputs is not None and outputs.compressed_depth.encoded:
            # Its encoder keeps the newest frame only: what it skipped says it cannot keep up.
            values[diagnostics_keys.COMPRESSED_DEPTH_PUBLISHED] = str(outputs.compressed_depth.encoded)
            values[diagnostics_keys.COMPRESSED_DEPTH_SKIPPED] = str(outputs.compressed_depth.replaced)
        problems = []
        if self.camera_info is None and self._settings().fallback_hfov_deg == 0.0:
            problems.append("no camera_info: publishing depth only")
        age_s = self.camera_info_age_s()
        if age_s is not None:
            problems.append(f"no camera_info for {age_s:.0f} s: using the last one")
        if missed and self.loss_problem is not None:
            problems.append(f"{missed} frames lost since the last report: {self.loss_problem}")
        if recent:
            counts = ", ".join(f"{reason} {n}" for reason, n in recent.most_common(3))
            problems.append(f"{sum(recent.values())} rejected since the last report ({counts})")
        return values, problems
