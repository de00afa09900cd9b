"""The ROS 2 depth node `zoedepth`: camera image in; metric depth, camera info and cloud out.

A managed (lifecycle) node. configure loads the model, activate subscribes, deactivate
unsubscribes, cleanup frees the model and the device memory; with `autostart` (default) it walks
itself to active, so a plain `ros2 run` works.

Threading: subscription callbacks check each message without decoding it (encoding, size against
`max_image_pixels`, step, data length, JPEG/PNG structure, header frame id and stamp order; a
camera_info's calibration), reject and count a bad one, and park a good frame in a one-slot mailbox
(an older, unprocessed frame is dropped and counted as stale); one worker thread runs decoding,
inference and publishing. So every bad message is counted even when frames are dropped, parameter,
lifecycle and camera_info callbacks stay responsive while a frame is processed, and the input age
behind each output stays under two inference times. A failure while processing one frame (corrupt
pixel data, CUDA out of memory, a device error) is logged, counted and costs only that frame.

Topics (relative, remappable): `image` (or `<image>/compressed` with input_transport
"compressed", image_transport's naming), `camera_info` in; `depth/image` (32FC1 metres, REP 118,
NaN = invalid), `depth/image_mm` (16UC1, 0 = invalid), `depth/camera_info`, `depth/points`,
`depth/colormap`, `depth/uncertainty` out; `/diagnostics` at 1 Hz. Every output carries the input
image's header unchanged.

Its parts: `parameters` (the parameter table, validation), `inputs` (the image subscription and
its reliability, stamp checks, the mailbox), `outputs` (the publishers), `diagnostics` (counters,
status, throttled logs), `lifecycle` (a Jazzy workaround). What is left here, ~500 lines, is the
one class whose callbacks and worker share its state; splitting it further would scatter that.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from zoedepth_ros.camera_info import (
    CameraInfoError,
    check_camera_info,
    intrinsics_from_camera_info,
    pinhole_from_hfov,
)
from zoedepth_ros.image_codec import (
    ASSUMED_ENCODINGS,
    ImageDecodeError,
    check_compressed_msg,
    check_image_msg,
    decode_compressed_msg,
    decode_image_msg,
)
from zoedepth_ros.ros.diagnostics import Stats, ThrottledLog, depth_status
from zoedepth_ros.ros.inputs import INPUT_QOS, ImageSubscription, Mailbox, StampOrder, own_qos
from zoedepth_ros.ros.lifecycle import guard_change_state
from zoedepth_ros.ros.outputs import DepthOutputs
from zoedepth_ros.ros.parameters import PARAMETERS, Settings, descriptor, validate
from zoedepth_ros.ros.processes import DDS_PROFILE_NAME, DDS_PROFILE_VARIABLE, keep_freed_buffers

NODE_NAME = "zoedepth"
# A best-effort frame larger than one UDP fragment is lost whenever any of its fragments is.
UDP_FRAGMENT_BYTES = 64 * 1024
# Frames missing from a publisher's sequence numbers before the log and /diagnostics name the cause.
LOSS_REPORT_FRAMES = 3


class DepthNode(LifecycleNode):
    """The `zoedepth` lifecycle node; keyword arguments go to rclpy's Node (namespace, overrides...)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, spec in PARAMETERS.items():
            self.declare_parameter(name, spec.default, descriptor(name))
        self._settings = self._read_settings()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._estimator = None
        self._loaded: dict[str, str] | None = None  # model, device, precision of the loaded model
        self._failure: str | None = None  # why the last configure failed, until one succeeds
        self._outputs: DepthOutputs | None = None  # while configured
        self._camera_info_sub = None
        self._camera_info: CameraInfo | None = None
        self._camera_info_at = 0.0  # monotonic arrival time of _camera_info
        # The image subscription (while active) and its resolved topic (set at each activation).
        self._image_input: ImageSubscription | None = None
        self._image_topic = ""
        self._input_timer = None
        self._stamps = StampOrder()
        self._loss_problem: str | None = None  # why frames go missing, once found out
        self._assumed_encodings: set[str] = set()  # generic encodings already warned about
        self._mailbox = Mailbox()
        # chosen by input_transport at each activation
        self._check, self._decode = check_image_msg, decode_image_msg
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._stats = Stats()
        self._log_throttled = ThrottledLog(self.get_logger())
        self._state = "unconfigured"

        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        guard_change_state(self)

    # ---------------------------------------------------------------- parameters

    def _read_settings(self) -> Settings:
        return Settings(**{name: self.get_parameter(name).value for name in PARAMETERS})

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        current = {name: getattr(self._settings, name) for name in PARAMETERS}
        reason = validate(changes, current)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _after_set_parameters(self, params) -> None:
        self._settings = self._read_settings()
        image_input = self._image_input
        if image_input is not None and any(p.name == "input_reliability" for p in params):
            image_input.reevaluate()
        configured = self._state in ("inactive", "active")
        for p in params:
            applies_on = PARAMETERS[p.name].applies_on if p.name in PARAMETERS else ""
            pending = ((applies_on == "configure" and configured)
                       or (applies_on == "activate" and self._state == "active"))
            if pending:
                self.get_logger().info(
                    f"{p.name} set to {p.value!r}: takes effect on the next {applies_on} "
                    f"(node is {self._state})"
                )

    # ---------------------------------------------------------------- lifecycle

    def autostart(self) -> bool:
        """Configure and activate when the `autostart` parameter says so; True if active."""
        if not self._settings.autostart:
            return False
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self._settings
        self.get_logger().info(
            f"loading model '{settings.model}' (engine {settings.engine}, device {settings.device}, "
            f"{settings.precision}, flip_tta {settings.flip_tta}, compile {settings.compile})"
        )
        try:
            from zoedepth_ros.inference import DepthEstimator

            estimator = DepthEstimator(
                settings.model, device=settings.device, precision=settings.precision, flip_tta=settings.flip_tta,
                mode=settings.mode, compile=settings.compile, engine=settings.engine,
            )
        except Exception as exc:  # a bad checkpoint, device or precision must not kill the node
            self._failure = f"cannot load model '{settings.model}': {exc}"
            self.get_logger().error(f"configure failed, node stays unconfigured: {self._failure}")
            return TransitionCallbackReturn.FAILURE
        self._failure = None
        self._estimator = estimator
        self._loaded = {"model": settings.model, "engine": settings.engine, "device": str(estimator.device),
                        "precision": settings.precision}
        self._outputs = DepthOutputs(self)
        self.get_logger().info(f"model '{settings.model}' ready on {estimator.device}")
        self._state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self._settings
        compressed = settings.input_transport == "compressed"
        # Everything the callbacks use is in place before a subscription can deliver.
        self._check = check_compressed_msg if compressed else check_image_msg
        self._decode = decode_compressed_msg if compressed else decode_image_msg
        self._stamps.restart()
        self._loss_problem = None
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="zoedepth-inference", daemon=True)
        self._worker.start()
        # camera_info first: a camera that starts publishing when it sees the image subscription
        # then finds this one matched too, and its first frame comes with intrinsics.
        self._camera_info_sub = self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, own_qos(INPUT_QOS),
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        self._image_topic = self.resolve_topic_name("image") + ("/compressed" if compressed else "")
        # input_reliability auto re-creates the subscription when the publishers' offers change.
        self._image_input = ImageSubscription(self, CompressedImage if compressed else Image, self._image_topic,
                                              self._on_image, lambda: self._settings.input_reliability)
        self._image_input.subscribe()
        self._input_timer = self.create_timer(0.1, self._image_input.maintain)
        self.get_logger().info(f"active: {settings.input_transport} images from '{self._image_topic}' "
                               f"({self._image_input.reliability}: {self._image_input.why})")
        self._state = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        self._state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Also safe without a shutdown transition: the worker stops before the handles go."""
        self._stop_processing()
        self._release()
        super().destroy_node()

    def _stop_processing(self) -> None:
        """Unsubscribe, then let the worker finish its frame and exit."""
        if self._input_timer is not None:
            self.destroy_timer(self._input_timer)
            self._input_timer = None
        if self._camera_info_sub is not None:
            self.destroy_subscription(self._camera_info_sub)
        if self._image_input is not None:
            self._image_input.destroy()
        self._camera_info_sub = self._image_input = None
        self._stop.set()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        self._mailbox.clear()

    def _release(self) -> None:
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        self._loaded = None
        if self._estimator is not None:
            self._estimator.release()
            self._estimator = None

    # ---------------------------------------------------------------- callbacks

    def _on_image(self, msg, info) -> None:
        # Nothing may escape a callback: it would end the executor's spin, and the node with it.
        try:
            new_publisher = self._follow_sequence(msg, info)
            self._check(msg, max_pixels=self._settings.max_image_pixels)
            self._check_header(msg.header, new_publisher)
        except ImageDecodeError as exc:
            self._stats.frame_in()
            self._reject(exc.reason, f"image rejected: {exc}")
            return
        except Exception as exc:
            self._stats.frame_in()
            self._reject("check_error", f"image rejected, checking it failed: {type(exc).__name__}: {exc}", "error")
            return
        encoding = getattr(msg, "encoding", "")
        if encoding in ASSUMED_ENCODINGS and encoding not in self._assumed_encodings:
            self._assumed_encodings.add(encoding)
            self.get_logger().warning(
                f"images on '{self._image_topic}' are '{encoding}', a generic type with no colour order: "
                f"taking them as OpenCV's {ASSUMED_ENCODINGS[encoding]} (what cv_bridge's cv2_to_imgmsg writes "
                f"without an encoding); publish them as {ASSUMED_ENCODINGS[encoding]} to say so")
        self._stats.frame_in(dropped_stale=self._mailbox.put(msg))

    def _follow_sequence(self, msg, info) -> bool:
        """Count the frames missing from the publisher's sequence numbers; True when the sequence
        started again (a new publisher: a restarted driver, another replay)."""
        image_input = self._image_input  # None once deactivation began
        if image_input is None:
            return False
        new_publisher, missed = image_input.follow_sequence(info)
        if missed:
            self._stats.frames_missed(missed)
            self._explain_missed_frames(memoryview(msg.data).nbytes, image_input.reliability)
        return new_publisher

    def _explain_missed_frames(self, frame_bytes: int, reliability: str) -> None:
        """Say once, in the log and on /diagnostics, why frames go missing when the cause is known:
        best-effort frames larger than a UDP fragment, with no shared-memory path from the publisher."""
        if (self._loss_problem is not None or self._stats.missed < LOSS_REPORT_FRAMES
                or reliability != "best_effort" or frame_bytes <= UDP_FRAGMENT_BYTES):
            return
        self._loss_problem = (
            f"best-effort frames of {frame_bytes / 1e6:.1f} MB are being lost ({self._stats.missed} so far): they "
            f"cross from the camera's process in 64 KB UDP fragments and one lost fragment loses the frame. Remedy: "
            f"export {DDS_PROFILE_VARIABLE}=<share/zoedepth_ros/config/{DDS_PROFILE_NAME}> in the camera "
            "driver's environment (whole frames through shared memory), or have it publish reliable "
            "(input_reliability auto follows)")
        self.get_logger().warning(f"image input on '{self._image_topic}': {self._loss_problem}")

    def _check_header(self, header, new_publisher: bool = False) -> None:
        """Raise ImageDecodeError for a header the outputs (which carry it) cannot use; otherwise
        its stamp becomes the one the next frame's is compared with. Stamps are compared within a
        sequence only: a new publisher or a pause of new_sequence_after_s starts a new one."""
        warning = self._stamps.admit(header, new_publisher, self._settings.new_sequence_after_s)
        if warning is not None:
            self._log_throttled("stamp_restart", "warn", warning)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._stats.camera_info_in()
        try:
            check_camera_info(msg)
        except CameraInfoError as exc:
            self._reject(f"camera_info: {exc.reason}", f"camera_info rejected, the last valid one stays in use: {exc}")
            return
        except Exception as exc:
            self._reject("camera_info: check_error",
                         f"camera_info rejected, checking it failed: {type(exc).__name__}: {exc}", "error")
            return
        if any(msg.d) and self._camera_info is None:
            self.get_logger().info(
                "camera_info has distortion coefficients: depth and cloud are in the input image's "
                "pixels, which are distorted; feed a rectified image (image_rect) for exact geometry"
            )
        self._camera_info, self._camera_info_at = msg, time.monotonic()

    def _reject(self, reason: str, text: str, level: str = "warn") -> None:
        """Count a rejection under `reason` and log it, tagged with the reason as /diagnostics
        counts it, once per THROTTLE_S for each reason."""
        self._stats.reject(reason)
        self._log_throttled(f"rejected:{reason}", level, f"{text} [{reason}]")

    # ---------------------------------------------------------------- worker

    def _work(self) -> None:
        import torch  # loaded with the model by configure; not at import, so `--help` stays fast

        from zoedepth_ros.inference.engines import EngineError

        while not self._stop.is_set():
            msg = self._mailbox.take(timeout=0.1)
            if msg is None:
                continue
            out_of_memory = False
            try:
                self._process(msg)
            except ImageDecodeError as exc:
                self._reject(exc.reason, f"image rejected: {exc}")
            except torch.OutOfMemoryError as exc:
                out_of_memory = True
                self._reject("out_of_memory", f"frame dropped, out of memory on {self._loaded_device()}: {exc}; "
                                              "freeing cached device memory (lower the input resolution or use "
                                              "precision fp16/bf16 if it recurs)", "error")
            except EngineError as exc:  # e.g. an ONNX file exported for another network size
                self._reject("engine_mismatch", f"frame rejected: {exc}", "error")
            except torch.AcceleratorError as exc:
                self._reject("device_error", f"frame dropped, device error on {self._loaded_device()}: {exc}", "error")
            except Exception as exc:  # one bad frame must not stop the node
                self._reject("processing_error", f"frame failed: {type(exc).__name__}: {exc}", "error")
            if out_of_memory:
                # Only here: inside the except block the traceback still holds the frame's tensors.
                torch.cuda.empty_cache()  # a no-op unless CUDA is in use

    def _loaded_device(self) -> str:
        loaded = self._loaded
        return loaded["device"] if loaded is not None else "?"

    def _process(self, msg) -> None:
        settings, outputs = self._settings, self._outputs
        rgb = self._decode(msg)
        header = msg.header
        want_std = settings.publish_uncertainty and outputs.subscribed("depth/uncertainty")
        started = time.perf_counter()
        prediction = self._estimator.predict(rgb, with_std=want_std)
        inference_s = time.perf_counter() - started
        intrinsics, info_source = self._intrinsics(prediction.depth.shape[1], prediction.depth.shape[0])
        outputs.publish(header, settings, rgb, prediction.depth, prediction.std if want_std else None,
                        intrinsics, info_source)
        stamp_ns = Time.from_msg(header.stamp).nanoseconds
        end_to_end = (self.get_clock().now().nanoseconds - stamp_ns) / 1e9 if stamp_ns else None
        self._stats.output(inference_s, prediction.forward_s, end_to_end, prediction.domain)

    def _intrinsics(self, width: int, height: int):
        """(intrinsics of the depth image, camera_info they came from) or (None, None)."""
        info = self._camera_info
        if info is not None:
            age_s = self._camera_info_age_s()
            if age_s is not None:
                self._log_throttled(
                    "camera_info:stale", "warn",
                    f"no valid camera_info on '{self.resolve_topic_name('camera_info')}' for {age_s:.1f} s "
                    f"(camera_info_timeout_s {self._settings.camera_info_timeout_s}): still using the last one",
                )
            try:
                return intrinsics_from_camera_info(info, width, height), info
            except CameraInfoError as exc:
                self._reject(
                    f"camera_info: {exc.reason}",
                    f"camera_info unusable, publishing depth without depth/camera_info and depth/points: {exc}",
                    "error",
                )
                return None, None
        hfov = self._settings.fallback_hfov_deg
        if hfov > 0.0:
            self._log_throttled(
                "camera_info:guess", "warn",
                f"no camera_info on '{self.resolve_topic_name('camera_info')}': using a guessed pinhole "
                f"camera (fallback_hfov_deg {hfov}) for depth/camera_info and depth/points",
            )
            return pinhole_from_hfov(width, height, hfov), None
        self._log_throttled(
            "camera_info:missing", "warn",
            f"no camera_info on '{self.resolve_topic_name('camera_info')}' yet: publishing depth only; "
            "depth/points and depth/camera_info need the camera intrinsics (or set fallback_hfov_deg)",
        )
        return None, None

    def _camera_info_age_s(self) -> float | None:
        """Seconds since the last valid camera_info when that exceeds camera_info_timeout_s, else None."""
        timeout = self._settings.camera_info_timeout_s
        age_s = time.monotonic() - self._camera_info_at
        return age_s if self._camera_info is not None and timeout > 0.0 and age_s > timeout else None

    # ---------------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        loaded = self._loaded  # read once: a transition may swap it meanwhile
        image_input = self._image_input
        values = {"state": self._state}
        if image_input is not None:
            values["input reliability"] = f"{image_input.reliability} ({image_input.why})"
        if self._loss_problem is not None:
            values["input loss"] = self._loss_problem
        problems = None
        if self._failure is None and self._state == "active":
            snapshot, recent, missed = self._stats.snapshot()
            values.update(snapshot)
            problems = []
            if self._camera_info is None and self._settings.fallback_hfov_deg == 0.0:
                problems.append("no camera_info: publishing depth only")
            age_s = self._camera_info_age_s()
            if age_s is not None:
                problems.append(f"no camera_info for {age_s:.0f} s: using the last one")
            if missed and self._loss_problem is not None:
                problems.append(f"{missed} frames lost since the last report: {self._loss_problem}")
            if recent:
                counts = ", ".join(f"{reason} {n}" for reason, n in recent.most_common(3))
                problems.append(f"{sum(recent.values())} rejected since the last report ({counts})")
        if loaded is None:  # not loaded yet (or failed): report what is asked for
            loaded = {"model": self._settings.model, "device": self._settings.device,
                      "precision": self._settings.precision}
        status = depth_status(f"{self.get_fully_qualified_name()}: depth estimation", values, loaded, self._failure,
                              problems)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C; `args` is a full argv (program name first), sys.argv when None."""
    # Ctrl-C as a KeyboardInterrupt rather than rclpy's handler, which would invalidate the
    # context before the shutdown transition could release the model.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # The executor thread and the inference worker share the GIL: hand it over within 1 ms
    # (CPython's default is 5 ms), so a frame that arrives while the other thread runs Python
    # does not wait for a whole switch interval.
    sys.setswitchinterval(0.001)
    keep_freed_buffers()
    node = DepthNode()
    try:
        node.autostart()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node._state != "finalized" and node.context.ok():
            node.trigger_shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _run(args: argparse.Namespace) -> int:
    ros_args = ["--ros-args", *args.ros_args] if args.ros_args is not None else []
    return main(["zoedepth-ros node", *ros_args])


def add_parser(subparsers, name: str) -> None:
    parser = subparsers.add_parser(
        name,
        help="run the ROS 2 depth node",
        description="Run the ROS 2 depth node `zoedepth` (the ROS executable depth_node does the same).",
        epilog="Everything after --ros-args goes to ROS, e.g. zoedepth-ros node --ros-args "
               "--params-file config/zoedepth.yaml -r image:=/camera/image_rect -p device:=cuda",
    )
    # An optional with REMAINDER, not a positional: a positional REMAINDER refuses to start
    # with an option-like token such as --ros-args.
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, metavar="ARG",
                        help="ROS arguments (-p name:=value, --params-file FILE, -r from:=to, --log-level ...)")
    parser.set_defaults(func=_run)


if __name__ == "__main__":
    sys.exit(main())
