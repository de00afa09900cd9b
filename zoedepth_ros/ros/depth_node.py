"""The ROS 2 depth node `zoedepth`: camera images in; metric depth, camera info and cloud out,
for one camera or several (`cameras`) with one model.

A managed (lifecycle) node. configure loads the model, activate subscribes, deactivate
unsubscribes, cleanup frees the model and the device memory; with `autostart` (default) it walks
itself to active, so a plain `ros2 run` works.

Threading: subscription callbacks check each message without decoding it (encoding, size against
`max_image_pixels`, step, data length, JPEG/PNG structure, header frame id and stamp order; a
camera_info's calibration), reject and count a bad one, and park a good frame in its camera's slot
(an older, unprocessed frame is dropped and counted as stale); one worker thread takes the newest
frames of up to `max_batch` cameras (those served least recently first), decodes them, runs them
as one batch per network size and publishes. So every bad message is counted even when frames are
dropped, parameter, lifecycle and camera_info callbacks stay responsive while frames are
processed, every camera gets the same output rate under load, and the input age behind each output
stays under two batch times. A failure
while processing (corrupt pixel data, CUDA out of memory, a device error) is logged, counted and
costs only the frames concerned: a frame that fails to decode costs only its own camera.

Topics (relative, remappable; with `cameras`, each under `<camera>/`): `image` (or
`<image>/compressed` with input_transport "compressed", image_transport's naming), `camera_info` in;
`depth/image` (32FC1 metres, REP 118, NaN = invalid), `depth/image_mm` (16UC1, 0 = invalid),
`depth/camera_info`, `depth/points`, `depth/colormap`, `depth/uncertainty`,
`depth/image/compressedDepth` (image_transport's compressedDepth) out; `/diagnostics` at
1 Hz (with `cameras`, one status per camera besides the node's). Every output carries the input
image's header unchanged.

Its parts: `parameters` (the parameter table, validation), `camera` (one camera's subscriptions,
publishers, checks and counters), `inputs` (the image subscription and its reliability, stamp
checks, the frame slots), `outputs` (the publishers), `diagnostics` (counters, status, throttled
logs), `lifecycle` (a Jazzy workaround). What is left here is the lifecycle, the model and the
worker that batches the cameras' frames.
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
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from zoedepth_ros import diagnostics_keys
from zoedepth_ros.image_codec import ImageDecodeError
from zoedepth_ros.interrupts import sigterm_as_interrupt
from zoedepth_ros.ros.camera import Camera
from zoedepth_ros.ros.diagnostics import BatchStats, ThrottledLog, depth_status, model_values
from zoedepth_ros.ros.inputs import AdmittedFrame, FrameSlots
from zoedepth_ros.ros.lifecycle import guard_change_state
from zoedepth_ros.ros.parameters import PARAMETERS, Settings, descriptor, validate
from zoedepth_ros.ros.processes import keep_freed_buffers

NODE_NAME = "zoedepth"


class DepthNode(LifecycleNode):
    """The `zoedepth` lifecycle node; keyword arguments go to rclpy's Node (namespace, overrides...)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, spec in PARAMETERS.items():
            # A list parameter without a default is declared by type: rclpy would take [] as bytes.
            default = Parameter.Type.STRING_ARRAY if spec.default == () else spec.default
            self.declare_parameter(name, default, descriptor(name))
        self._settings = self._read_settings()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._estimator = None
        self._loaded: dict[str, str] | None = None  # model, device, precision of the loaded model
        self._failure: str | None = None  # why the last configure failed, until one succeeds
        self._log_throttled = ThrottledLog(self.get_logger())
        self._slots = FrameSlots()
        # By name ('' for the single camera of a node without `cameras`); set again at configure.
        self._cameras: dict[str, Camera] = {}
        self._sync_cameras()
        self._batches = BatchStats()
        self._input_timer = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = "unconfigured"

        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        guard_change_state(self)

    def camera(self, name: str = "") -> Camera:
        """The camera `name` ('' for the single camera of a node without `cameras`)."""
        return self._cameras[name]

    def _sync_cameras(self) -> None:
        """One Camera per name of `cameras` (or the single unnamed one); a camera kept keeps its counters."""
        names = list(self._settings.cameras) or [""]
        self._cameras = {name: self._cameras.get(name) or Camera(self, name, self._slots, lambda: self._settings,
                                                                 self._log_throttled)
                         for name in names}

    # ---------------------------------------------------------------- parameters

    def _read_settings(self) -> Settings:
        values = {name: self.get_parameter_or(name).value for name in PARAMETERS}
        values["cameras"] = tuple(values["cameras"] or ())  # None while not set
        return Settings(**values)

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        current = {name: getattr(self._settings, name) for name in PARAMETERS}
        reason = validate(changes, current)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _after_set_parameters(self, params) -> None:
        self._settings = self._read_settings()
        if any(p.name == "input_reliability" for p in params):
            for camera in list(self._cameras.values()):
                if camera.image_input is not None:
                    camera.image_input.reevaluate()
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
        # The precision the engine runs (`auto` resolved) and why, in the log and on /diagnostics.
        self._loaded = model_values(settings.model, str(estimator.device), estimator.precision, engine=settings.engine,
                                    precision_choice=estimator.precision_reason)
        if settings.precision == "auto":
            self.get_logger().info(f"precision auto: {estimator.precision} ({estimator.precision_reason})")
        self._sync_cameras()
        for camera in self._cameras.values():
            camera.configure()
        served = f" for cameras {', '.join(self._cameras)}" if settings.cameras else ""
        self.get_logger().info(f"model '{settings.model}' ready on {estimator.device}{served}")
        self._state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self._settings
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="zoedepth-inference", daemon=True)
        self._worker.start()
        for camera in self._cameras.values():
            camera.activate(compressed=settings.input_transport == "compressed")
            self.get_logger().info(f"active: {settings.input_transport} images from '{camera.image_topic}' "
                                   f"({camera.image_input.reliability}: {camera.image_input.why})")
        self._input_timer = self.create_timer(0.1, self._maintain_inputs)
        self._state = "active"
        return super().on_activate(state)

    def _maintain_inputs(self) -> None:
        for camera in self._cameras.values():
            if camera.image_input is not None:
                camera.image_input.maintain()

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
        """Unsubscribe, then let the worker finish its batch and exit."""
        if self._input_timer is not None:
            self.destroy_timer(self._input_timer)
            self._input_timer = None
        for camera in self._cameras.values():
            camera.deactivate()
        self._stop.set()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        for camera in self._cameras.values():  # what the worker handed off is out before deactivation
            if camera.outputs is not None:
                camera.outputs.finish()
        self._slots.clear()

    def _release(self) -> None:
        for camera in self._cameras.values():
            camera.release()
        self._loaded = None
        if self._estimator is not None:
            self._estimator.release()
            self._estimator = None

    # ---------------------------------------------------------------- worker

    def _work(self) -> None:
        while not self._stop.is_set():
            frames = self._slots.take(self._batch_limit(), timeout=0.1)
            if frames:
                self._process(frames)

    def _batch_limit(self) -> int:
        """Frames per forward: max_batch, or auto (0): one on CPU, where a batch is no faster and
        holds every frame's activations at once; every camera's on an accelerator."""
        if self._settings.max_batch:
            return self._settings.max_batch
        estimator = self._estimator
        return 1 if estimator is None or estimator.device.type == "cpu" else len(self._cameras)

    def _process(self, frames: dict[str, AdmittedFrame]) -> None:
        """Decode each camera's frame (a bad one costs only its camera), then run one batch per
        network size."""
        batches: dict[tuple[int, int], list] = {}
        for name, frame in frames.items():
            camera = self._cameras.get(name)
            if camera is None:
                continue
            try:
                rgb = camera.decode(frame.msg)
                size = self._estimator.network_input_size(*rgb.shape[:2])
            except ImageDecodeError as exc:
                camera.reject(exc.reason, f"image rejected: {exc}")
                continue
            except Exception as exc:  # one bad frame must not stop the node
                camera.reject("processing_error", f"frame failed: {type(exc).__name__}: {exc}", "error")
                continue
            batches.setdefault(size, []).append((camera, frame, rgb))
        for batch in batches.values():
            self._infer(batch)

    def _infer(self, batch: list) -> None:
        """Run one batch of (camera, admitted frame, rgb) and publish each camera's outputs."""
        import torch  # loaded with the model by configure; not at import, so `--help` stays fast

        from zoedepth_ros.inference.engines import EngineError

        def reject_all(reason: str, text: str) -> None:
            for camera, _, _ in batch:
                camera.reject(reason, text, "error")

        out_of_memory = False
        wants_std = [camera.wants_std() for camera, _, _ in batch]
        try:
            started = time.perf_counter()
            predictions = self._estimator.predict_batch([rgb for _, _, rgb in batch], with_std=any(wants_std))
            inference_s = time.perf_counter() - started
        except torch.OutOfMemoryError as exc:
            out_of_memory = True
            reject_all("out_of_memory", f"frame dropped, out of memory on {self._loaded_device()}: {exc}; freeing "
                                        "cached device memory (lower the input resolution or use precision fp16/bf16 "
                                        "if it recurs)")
        except EngineError as exc:  # e.g. an ONNX file exported for another network size
            reject_all("engine_mismatch", f"frame rejected: {exc}")
        except torch.AcceleratorError as exc:
            reject_all("device_error", f"frame dropped, device error on {self._loaded_device()}: {exc}")
        except Exception as exc:  # one bad batch must not stop the node
            reject_all("processing_error", f"frame failed: {type(exc).__name__}: {exc}")
        else:
            self._batches.batch(len(batch), inference_s, predictions[0].forward_s)
            for (camera, frame, rgb), prediction, with_std in zip(batch, predictions, wants_std, strict=True):
                try:
                    camera.publish(frame, rgb, prediction, with_std, inference_s)
                except Exception as exc:
                    camera.reject("processing_error", f"frame failed: {type(exc).__name__}: {exc}", "error")
        if out_of_memory:
            # Only here: inside the except block the traceback still holds the batch's tensors.
            torch.cuda.empty_cache()  # a no-op unless CUDA is in use

    def _loaded_device(self) -> str:
        loaded = self._loaded
        return loaded[diagnostics_keys.DEVICE] if loaded is not None else "?"

    # ---------------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        loaded = self._loaded  # read once: a transition may swap it meanwhile
        if loaded is None:  # not loaded yet (or failed): report what is asked for
            loaded = model_values(self._settings.model, self._settings.device, self._settings.precision)
        active = self._failure is None and self._state == "active"
        name = f"{self.get_fully_qualified_name()}: depth estimation"
        cameras = list(self._cameras.values())
        if cameras == [self._cameras.get("")]:  # one camera: one status, the node's
            values, problems = cameras[0].report(active)
            statuses = [depth_status(name, self._state, values, loaded, self._failure, problems)]
        else:
            statuses, troubled = [], []
            for camera in cameras:
                values, problems = camera.report(active)
                statuses.append(depth_status(f"{self.get_fully_qualified_name()}: camera {camera.name}",
                                             self._state, values, loaded, self._failure, problems))
                if problems:
                    troubled.append(f"{camera.name} ({problems[0]})")
            values = {diagnostics_keys.CAMERAS: ", ".join(self._cameras)}
            node_problems = None
            if active:
                values.update(self._batches.snapshot())
                node_problems = [f"cameras with problems: {'; '.join(troubled)}"] if troubled else []
            statuses.insert(0, depth_status(name, self._state, values, loaded, self._failure, node_problems))
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or SIGTERM; `args` is a full argv (program name first), sys.argv when None."""
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
        # SIGTERM (systemd, docker stop, a launch's escalation) as Ctrl-C: the shutdown transition
        # runs and the node leaves the DDS graph at once, its shared-memory segment removed.
        with sigterm_as_interrupt():
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
