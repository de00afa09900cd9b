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
"""

from __future__ import annotations

import argparse
import array
import collections
import contextlib
import copy
import ctypes
import math
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, make_dataclass
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from zoedepth_ros.camera_info import (
    CameraInfoError, check_camera_info, depth_camera_info, intrinsics_from_camera_info, pinhole_from_hfov,
)
from zoedepth_ros.cloud import CloudBuilder, to_pointcloud2
from zoedepth_ros.colormap import colorize
from zoedepth_ros.image_codec import (
    ASSUMED_ENCODINGS, ImageDecodeError, check_compressed_msg, check_image_msg, decode_compressed_msg, decode_image_msg,
)
from zoedepth_ros.predict import depth_to_mm16

NODE_NAME = "zoedepth"

# Newest frame only: a backlog of camera frames is latency, never throughput.
INPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)
# Reliable, so RViz and depth_image_proc (reliable by default) receive it; shallow, so a slow
# subscriber is never fed stale depth.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)


def _qos(profile: QoSProfile) -> QoSProfile:
    """A copy for one entity: rclpy writes the entity's QoS overrides into the profile it is given,
    which would carry them to every later entity (of any node) created from the same profile."""
    return copy.copy(profile)

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
LATENCY_WINDOW = 200  # frames behind the mean/p95 latencies in /diagnostics
THROTTLE_S = 5.0
# A stamp this far behind the previous frame's is a restarted camera, a clock reset or a looping
# bag, not a reordered frame: accepted (with a warning) as the start of a new sequence, so one
# bogus far-future stamp cannot lock the node out either.
STAMP_RESTART_S = 1.0
# A best-effort frame larger than one UDP fragment is lost whenever any of its fragments is.
UDP_FRAGMENT_BYTES = 64 * 1024
# Frames missing from a publisher's sequence numbers before the log and /diagnostics name the cause.
LOSS_REPORT_FRAMES = 3


@dataclass(frozen=True)
class _Param:
    default: object
    description: str
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    applies_on: str = ""  # "configure"/"activate" when changing it takes a lifecycle transition
    read_only: bool = False


PARAMETERS: dict[str, _Param] = {
    "model": _Param(
        "ZoeD_M12_NK",
        "Model: a preset (ZoeD_M12_NK, ZoeD_M12_N, ZoeD_M12_K) from the local weights cache, or the "
        "path of an official .pt, a Hugging Face directory or a project .safetensors checkpoint.",
        applies_on="configure",
    ),
    "device": _Param("auto", "Inference device: auto (CUDA when available), cpu, cuda or cuda:N.",
                     applies_on="configure"),
    "precision": _Param("fp32", "Inference precision; bf16/fp16 use autocast on the device.",
                        choices=("fp32", "bf16", "fp16"), applies_on="configure"),
    "flip_tta": _Param(False, "Average with the prediction of the mirrored image (twice the compute).",
                       applies_on="configure"),
    "compile": _Param(False, "Run the model through torch.compile (static shapes: the first frame of a camera "
                             "size compiles, minutes for the full model on CPU; later frames are faster).",
                      applies_on="configure"),
    "mode": _Param("infer", "Pre- and post-processing: infer (keep-aspect resize, bicubic upsampling, for "
                            "cameras) or eval (the official evaluation's stretch to the network size and "
                            "bilinear upsampling, to reproduce `zoedepth-ros evaluate --model` with flip_tta).",
                   choices=("infer", "eval"), applies_on="configure"),
    "min_depth": _Param(0.1, "Depth below this (metres) is published as NaN (invalid).", range=(0.0, 1000.0)),
    "max_depth": _Param(80.0, "Depth above this (metres) is published as NaN (invalid).", range=(0.0, 1000.0)),
    "publish_points": _Param(True, "Publish depth/points (needs camera_info or fallback_hfov_deg)."),
    "points_stride": _Param(1, "Cloud decimation: every Nth row and column; the cloud stays organized.",
                            range=(1, 64)),
    "points_color": _Param(False, "Add the packed rgb field (from the input image) to depth/points."),
    "publish_colormap": _Param(True, "Publish depth/colormap, a viewable rgb8 rendering of the depth."),
    "colormap_fixed_range": _Param(False, "Colour depth over [colormap_min, colormap_max] (stable "
                                          "colours) instead of each frame's own range."),
    "colormap_min": _Param(0.5, "Near end (metres) of the fixed colormap range.", range=(0.0, 1000.0)),
    "colormap_max": _Param(10.0, "Far end (metres) of the fixed colormap range.", range=(0.0, 1000.0)),
    "publish_uncertainty": _Param(False, "Publish depth/uncertainty: 32FC1 standard deviation (metres) "
                                         "of the per-pixel depth distribution (extra compute)."),
    "publish_depth_mm": _Param(False, "Also publish depth/image_mm: 16UC1 millimetres, 0 = invalid."),
    "input_reliability": _Param(
        "auto", "Reliability of the image subscription. auto: reliable when every image publisher offers "
                "reliable, best effort otherwise (re-evaluated as publishers come and go); reliable; "
                "best_effort. A qos_overrides.<image topic>.subscription.reliability parameter takes precedence.",
        choices=("auto", "reliable", "best_effort")),
    "input_transport": _Param("raw", "raw: subscribe sensor_msgs/Image on 'image'; compressed: "
                                     "sensor_msgs/CompressedImage (jpeg/png) on '<image>/compressed'.",
                              choices=("raw", "compressed"), applies_on="activate"),
    "max_image_pixels": _Param(16_777_216, "Images with more pixels (width x height, read from the message "
                                           "or the JPEG/PNG header) are rejected before anything is decoded "
                                           "or allocated.", range=(1, 1 << 30)),
    "new_sequence_after_s": _Param(1.0, "After this many seconds without an admitted image, the next one starts "
                                        "a new sequence: its stamp is not compared with the previous one's (a "
                                        "replayed or looping bag, a restarted driver). A new publisher does too.",
                                   range=(0.0, 3600.0)),
    "camera_info_timeout_s": _Param(5.0, "Warn (log and /diagnostics) when images arrive but no valid "
                                         "camera_info came for this long; the last one stays in use. "
                                         "0 disables the warning.", range=(0.0, 3600.0)),
    "fallback_hfov_deg": _Param(0.0, "Without camera_info, guess a pinhole camera with this horizontal "
                                     "field of view (degrees) for depth/camera_info and depth/points; "
                                     "0 disables the guess.", range=(0.0, 179.0)),
    "autostart": _Param(True, "Configure and activate at startup (otherwise wait for lifecycle "
                              "transitions).", read_only=True),
}


# A consistent snapshot of the parameters, swapped atomically for the worker thread.
Settings = make_dataclass("Settings", [(name, type(spec.default)) for name, spec in PARAMETERS.items()], frozen=True)


def _descriptor(name: str, spec: _Param) -> ParameterDescriptor:
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    if spec.applies_on:
        text += f" Takes effect on the next {spec.applies_on} transition."
    descriptor = ParameterDescriptor(name=name, description=text, read_only=spec.read_only)
    if spec.range is not None:
        if isinstance(spec.default, int):
            descriptor.integer_range = [IntegerRange(from_value=spec.range[0], to_value=spec.range[1], step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=spec.range[0], to_value=spec.range[1])]
    return descriptor


def validate(changes: dict[str, object], current: dict[str, object]) -> str | None:
    """Why `changes` (name -> new value) cannot be applied on top of `current`, or None."""
    for name, value in changes.items():
        spec = PARAMETERS.get(name)
        if spec is None:
            continue
        if spec.choices and value not in spec.choices:
            return f"{name} must be one of {', '.join(spec.choices)}, not '{value}'"
        if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
            return f"{name} must be in [{spec.range[0]}, {spec.range[1]}], not {value}"
    if "device" in changes and not DEVICE_PATTERN.match(str(changes["device"])):
        return f"device must be auto, cpu, cuda or cuda:N, not '{changes['device']}'"
    if "model" in changes and not str(changes["model"]).strip():
        return "model must name a preset or a checkpoint path"
    merged = {**current, **changes}
    if not merged["min_depth"] < merged["max_depth"]:
        return f"min_depth ({merged['min_depth']}) must be below max_depth ({merged['max_depth']})"
    if not merged["colormap_min"] < merged["colormap_max"]:
        return f"colormap_min ({merged['colormap_min']}) must be below colormap_max ({merged['colormap_max']})"
    return None


class _Mailbox:
    """One slot holding the newest unprocessed frame."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None

    def put(self, item) -> bool:
        """Store `item`; True when it replaced a frame nobody processed."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float):
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
        return item

    def clear(self) -> None:
        with self._cond:
            self._item = None


class _Stats:
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
            for label, window in (("inference latency", self.inference_s), ("forward latency", self.forward_s),
                                  ("end-to-end latency", self.end_to_end_s)):
                samples = np.asarray(window) * 1000.0
                values[f"{label} mean (ms)"] = f"{samples.mean():.1f}" if samples.size else "n/a"
                for q in (50, 95):
                    values[f"{label} p{q} (ms)"] = f"{np.percentile(samples, q):.1f}" if samples.size else "n/a"
            values.update({f"rejected: {reason}": str(n) for reason, n in sorted(self.rejected.items())})
            values.update({f"router: {domain}": str(n) for domain, n in sorted(self.domains.items())})
        return values, recent, self.missed - missed


def _image_msg(header, pixels: np.ndarray, encoding: str) -> Image:
    msg = Image()
    msg.header = header
    msg.height, msg.width = pixels.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    pixels = np.ascontiguousarray(pixels)
    msg.step = pixels.strides[0]
    # Straight into the field's own type: the setter then copies it with one memcpy (pixels.tobytes()
    # would add a copy; a numpy array is copied element by element).
    data = array.array("B")
    data.frombytes(pixels.reshape(-1).view(np.uint8))
    msg.data = data
    return msg


class DepthNode(LifecycleNode):
    """The `zoedepth` lifecycle node; keyword arguments go to rclpy's Node (namespace, overrides...)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, spec in PARAMETERS.items():
            self.declare_parameter(name, spec.default, _descriptor(name, spec))
        self._settings = self._read_settings()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._estimator = None
        self._loaded: dict[str, str] | None = None  # model, device, precision of the loaded model
        self._failure: str | None = None  # why the last configure failed, until one succeeds
        self._outputs: dict[str, object] = {}
        self._camera_info_sub = None
        self._camera_info: CameraInfo | None = None
        self._camera_info_at = 0.0  # monotonic arrival time of _camera_info
        # The image subscription, its message type and resolved topic (set at each activation);
        # input_reliability auto re-creates it when the publishers' offers change.
        self._image_sub = None
        self._image_type: type = Image
        self._image_topic = ""
        self._image_reliability_why = ""
        self._input_qos_due = False  # publishers came or went: re-evaluate the image subscription
        self._input_timer = None
        self._last_stamp_ns: int | None = None  # of the last image admitted to the mailbox
        self._last_admitted_at = -math.inf  # monotonic
        self._last_sequence: int | None = None  # publication sequence number of the last image received
        self._loss_problem: str | None = None  # why frames go missing, once found out
        self._assumed_encodings: set[str] = set()  # generic encodings already warned about
        self._mailbox = _Mailbox()
        # chosen by input_transport at each activation
        self._check, self._decode = check_image_msg, decode_image_msg
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._cloud_builder = CloudBuilder()
        self._stats = _Stats()
        self._last_log: dict[str, float] = {}
        self._state = "unconfigured"

        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self._guard_change_state()

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
        self._input_qos_due |= any(p.name == "input_reliability" for p in params)
        configured = self._state in ("inactive", "active")
        for p in params:
            applies_on = PARAMETERS[p.name].applies_on if p.name in PARAMETERS else ""
            pending = (applies_on == "configure" and configured) or (applies_on == "activate" and self._state == "active")
            if pending:
                self.get_logger().info(
                    f"{p.name} set to {p.value!r}: takes effect on the next {applies_on} "
                    f"(node is {self._state})"
                )

    # ---------------------------------------------------------------- lifecycle

    def _guard_change_state(self) -> None:
        """Refuse change_state requests naming, by id, a transition the current state does not have.

        rclpy on Jazzy raises out of the service callback for them ("Transition is not registered"),
        which ends the executor's spin and the process; fixed upstream only after Jazzy. A label the
        state does not have is already refused by rclpy, and so stays.
        """
        service = self._service_change_state
        change_state = service.callback

        def guarded(request, response):
            transition = request.transition
            if not transition.label:
                available = {t[0] for t in self._state_machine.available_transitions}
                if transition.id not in available:
                    state = self._state_machine.current_state[1]
                    self.get_logger().warning(
                        f"change_state refused: transition id {transition.id} is not available in state "
                        f"{state} (available: {', '.join(str(i) for i in sorted(available)) or 'none'})")
                    response.success = False
                    return response
            return change_state(request, response)

        service.callback = guarded

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
            f"loading model '{settings.model}' (device {settings.device}, {settings.precision}, "
            f"flip_tta {settings.flip_tta}, compile {settings.compile})"
        )
        try:
            from zoedepth_ros.model import DepthEstimator, load_model

            model = load_model(settings.model, map_location="cpu")
            estimator = DepthEstimator(
                model, device=settings.device, precision=settings.precision, flip_tta=settings.flip_tta,
                mode=settings.mode, compile=settings.compile,
            )
        except Exception as exc:  # a bad checkpoint, device or precision must not kill the node
            self._failure = f"cannot load model '{settings.model}': {exc}"
            self.get_logger().error(f"configure failed, node stays unconfigured: {self._failure}")
            return TransitionCallbackReturn.FAILURE
        self._failure = None
        self._estimator = estimator
        self._loaded = {"model": settings.model, "device": str(estimator.device), "precision": settings.precision}
        self._outputs = {
            topic: self.create_lifecycle_publisher(
                msg_type, topic, _qos(OUTPUT_QOS), qos_overriding_options=QoSOverridingOptions.with_default_policies()
            )
            for topic, msg_type in (
                ("depth/image", Image),
                ("depth/image_mm", Image),
                ("depth/camera_info", CameraInfo),
                ("depth/points", PointCloud2),
                ("depth/colormap", Image),
                ("depth/uncertainty", Image),
            )
        }
        self.get_logger().info(f"model '{settings.model}' ready on {estimator.device}")
        self._state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self._settings
        compressed = settings.input_transport == "compressed"
        # Everything the callbacks use is in place before a subscription can deliver.
        self._check = check_compressed_msg if compressed else check_image_msg
        self._decode = decode_compressed_msg if compressed else decode_image_msg
        self._last_stamp_ns = None
        self._loss_problem = None
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="zoedepth-inference", daemon=True)
        self._worker.start()
        # camera_info first: a camera that starts publishing when it sees the image subscription
        # then finds this one matched too, and its first frame comes with intrinsics.
        self._camera_info_sub = self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, _qos(INPUT_QOS),
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        self._image_type = CompressedImage if compressed else Image
        self._image_topic = self.resolve_topic_name("image") + ("/compressed" if compressed else "")
        self._subscribe_image()
        self._input_timer = self.create_timer(0.1, self._maintain_image_subscription)
        self.get_logger().info(f"active: {settings.input_transport} images from '{self._image_topic}' "
                               f"({self._image_reliability()}: {self._image_reliability_why})")
        self._state = "active"
        return super().on_activate(state)

    # ---------------------------------------------------------------- input QoS

    def _reliability_override(self) -> str | None:
        """The image subscription's reliability as a qos_overrides parameter gives it, if one does."""
        override = self._parameter_overrides.get(f"qos_overrides.{self._image_topic}.subscription.reliability")
        return None if override is None else str(override.value)

    def _wanted_reliability(self) -> tuple[ReliabilityPolicy, str]:
        """The reliability the image subscription should have now, and why."""
        override = self._reliability_override()
        if override is not None:
            # rclpy applies (and validates) it; this is only what to report.
            policy = ReliabilityPolicy.__members__.get(override.upper(), ReliabilityPolicy.UNKNOWN)
            return policy, "set by its qos_overrides parameter"
        setting = self._settings.input_reliability
        if setting != "auto":
            return ReliabilityPolicy[setting.upper()], f"input_reliability {setting}"
        offers = [info.qos_profile.reliability for info in self.get_publishers_info_by_topic(self._image_topic)]
        best_effort = sum(offer == ReliabilityPolicy.BEST_EFFORT for offer in offers)
        if not offers:
            # Reliable: a reliable publisher then matches at once, with no frame sent to a subscription
            # about to be replaced; a best-effort one is reported incompatible, and answered.
            return ReliabilityPolicy.RELIABLE, "auto, no publisher yet"
        if best_effort:
            return ReliabilityPolicy.BEST_EFFORT, f"auto, {best_effort} of {len(offers)} publishers offer best effort"
        return ReliabilityPolicy.RELIABLE, f"auto, all {len(offers)} publishers offer reliable"

    def _subscribe_image(self) -> None:
        """(Re)create the image subscription: keep-last 1, with the reliability wanted now.

        Only history and depth are declared as qos_overrides parameters, unless the user gave the
        reliability one: rclpy would otherwise declare it at the first subscription's reliability and
        apply that value to every later one, freezing auto.
        """
        policy, why = self._wanted_reliability()
        qos = _qos(INPUT_QOS)
        kinds = [QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH]
        if self._reliability_override() is None:
            qos.reliability = policy
        else:
            kinds.append(QoSPolicyKind.RELIABILITY)
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
        self._image_sub = self.create_subscription(
            self._image_type, self._image_topic, self._on_image, qos,
            qos_overriding_options=QoSOverridingOptions(kinds),
            event_callbacks=SubscriptionEventCallbacks(
                matched=self._on_publishers_changed, incompatible_qos=self._on_publishers_changed),
        )
        self._image_reliability_why = why
        self._last_sequence = None

    def _image_reliability(self) -> str:
        sub = self._image_sub
        return "none" if sub is None else sub.qos_profile.reliability.name.lower()

    def _on_publishers_changed(self, _event) -> None:
        # Not here: replacing a subscription from inside its own event callback.
        self._input_qos_due = True

    def _maintain_image_subscription(self) -> None:
        if not self._input_qos_due or self._image_sub is None:
            return
        self._input_qos_due = False
        policy, why = self._wanted_reliability()
        if policy == self._image_sub.qos_profile.reliability or self._reliability_override() is not None:
            self._image_reliability_why = why
            return
        self._subscribe_image()
        self.get_logger().info(f"image input on '{self._image_topic}' is now {self._image_reliability()} ({why})")

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
        for sub in (self._camera_info_sub, self._image_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        self._camera_info_sub = self._image_sub = None
        self._stop.set()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        self._mailbox.clear()

    def _release(self) -> None:
        for pub in self._outputs.values():
            self.destroy_lifecycle_publisher(pub)
        self._outputs = {}
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
        sequence = info.get("publication_sequence_number") if info else None  # None on some RMWs
        last, self._last_sequence = self._last_sequence, sequence
        if sequence is None or last is None:
            return False
        if sequence <= last:
            return True
        missed = sequence - last - 1
        if missed:
            self._stats.frames_missed(missed)
            self._explain_missed_frames(memoryview(msg.data).nbytes)
        return False

    def _explain_missed_frames(self, frame_bytes: int) -> None:
        """Say once, in the log and on /diagnostics, why frames go missing when the cause is known:
        best-effort frames larger than a UDP fragment, with no shared-memory path from the publisher."""
        if (self._loss_problem is not None or self._stats.missed < LOSS_REPORT_FRAMES
                or self._image_reliability() != "best_effort" or frame_bytes <= UDP_FRAGMENT_BYTES):
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
        if not header.frame_id:
            raise ImageDecodeError(
                "empty_frame_id", "header has an empty frame_id: outputs would be in no frame (set the "
                                  "camera driver's frame id, e.g. its optical frame)")
        stamp = header.stamp
        if stamp.sec < 0 or stamp.nanosec >= 1_000_000_000:
            raise ImageDecodeError("bad_stamp", f"header stamp {stamp.sec} s {stamp.nanosec} ns is not a valid time")
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        now = time.monotonic()
        last = self._last_stamp_ns
        if last is not None and stamp_ns <= last:
            behind_s = (last - stamp_ns) / 1e9
            pause_s = now - self._last_admitted_at
            if new_publisher:
                cause = "from a new publisher"
            elif pause_s > self._settings.new_sequence_after_s:
                cause = f"after {pause_s:.1f} s without images"
            elif behind_s > STAMP_RESTART_S:
                cause = f"by more than {STAMP_RESTART_S:g} s"
            elif stamp_ns == last:
                raise ImageDecodeError("repeated_stamp", f"stamp {stamp.sec}.{stamp.nanosec:09d} repeats the previous "
                                                         "frame's: a duplicate (or a driver that does not stamp)")
            else:
                raise ImageDecodeError("out_of_order_stamp", f"stamp {stamp.sec}.{stamp.nanosec:09d} is "
                                                             f"{behind_s:.3f} s older than the previous frame's")
            self._log_throttled("stamp_restart", "warn",
                                f"image stamps went back {behind_s:.1f} s ({cause}): taking it as a restarted camera, "
                                "a clock reset or a replayed or looping bag, and starting the sequence again")
        self._last_stamp_ns, self._last_admitted_at = stamp_ns, now

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

    def _log_throttled(self, key: str, level: str, text: str) -> None:
        """Log `text` at `level` ("warn" or "error") unless `key` was logged in the last THROTTLE_S."""
        now = time.monotonic()
        if now - self._last_log.get(key, -math.inf) < THROTTLE_S:
            return
        self._last_log[key] = now
        # rclpy binds one severity to each calling line and raises ValueError for another one.
        if level == "error":
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    # ---------------------------------------------------------------- worker

    def _work(self) -> None:
        import torch  # loaded with the model by configure; not at import, so `--help` stays fast

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

    def _subscribed(self, topic: str) -> bool:
        return self._outputs[topic].get_subscription_count() > 0

    def _process(self, msg) -> None:
        settings = self._settings
        rgb = self._decode(msg)
        header = msg.header
        want_std = settings.publish_uncertainty and self._subscribed("depth/uncertainty")
        started = time.perf_counter()
        prediction = self._estimator.predict(rgb, with_std=want_std)
        inference_s = time.perf_counter() - started

        depth = prediction.depth
        valid = (depth >= settings.min_depth) & (depth <= settings.max_depth)  # False for NaN
        depth = np.where(valid, depth, np.float32(np.nan)).astype(np.float32, copy=False)
        self._outputs["depth/image"].publish(_image_msg(header, depth, "32FC1"))

        if settings.publish_depth_mm and self._subscribed("depth/image_mm"):
            self._outputs["depth/image_mm"].publish(_image_msg(header, depth_to_mm16(depth), "16UC1"))

        intrinsics, info_source = self._intrinsics(depth.shape[1], depth.shape[0])
        if intrinsics is not None:
            self._outputs["depth/camera_info"].publish(depth_camera_info(intrinsics, header, info_source))
            if settings.publish_points and self._subscribed("depth/points"):
                cloud = self._cloud_builder.build(
                    depth, intrinsics, settings.points_stride, rgb if settings.points_color else None
                )
                self._outputs["depth/points"].publish(to_pointcloud2(cloud, header))

        if settings.publish_colormap and self._subscribed("depth/colormap"):
            vmin, vmax = (settings.colormap_min, settings.colormap_max) if settings.colormap_fixed_range else (None, None)
            self._outputs["depth/colormap"].publish(_image_msg(header, colorize(depth, vmin, vmax), "rgb8"))

        if want_std:
            std = np.where(valid, prediction.std, np.float32(np.nan)).astype(np.float32, copy=False)
            self._outputs["depth/uncertainty"].publish(_image_msg(header, std, "32FC1"))

        stamp_ns = Time.from_msg(header.stamp).nanoseconds
        end_to_end = (self.get_clock().now().nanoseconds - stamp_ns) / 1e9 if stamp_ns else None
        self._stats.output(inference_s, self._estimator.last_forward_s, end_to_end, prediction.domain)

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
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: depth estimation")
        loaded = self._loaded  # read once: a transition may swap it meanwhile
        values = {"state": self._state}
        if self._image_sub is not None:
            values["input reliability"] = f"{self._image_reliability()} ({self._image_reliability_why})"
        if self._loss_problem is not None:
            values["input loss"] = self._loss_problem
        if self._failure is not None:
            status.level, status.message = DiagnosticStatus.ERROR, self._failure
        elif self._state != "active":
            status.level, status.message = DiagnosticStatus.OK, self._state
        else:
            snapshot, recent, missed = self._stats.snapshot()
            values.update(snapshot)
            status.level = DiagnosticStatus.OK
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
            if problems:
                status.level, status.message = DiagnosticStatus.WARN, "; ".join(problems)
            else:
                status.message = f"active, {values['output rate (Hz)']} Hz out"
        if loaded is None:  # not loaded yet (or failed): report what is asked for
            loaded = {"model": self._settings.model, "device": self._settings.device,
                      "precision": self._settings.precision}
        status.hardware_id = loaded["device"]
        values.update(loaded)
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


DDS_PROFILE_NAME = "fastdds_large_images.xml"
DDS_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"  # what Fast DDS 2.x (ROS 2 Jazzy) reads


def shipped_dds_profile() -> Path:
    """config/fastdds_large_images.xml: in the source tree, or in share/zoedepth_ros after a colcon
    install (the package then lives in <prefix>/lib/pythonX.Y/site-packages)."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "config" / DDS_PROFILE_NAME]
    if len(here.parents) > 3:
        candidates.append(here.parents[3] / "share" / "zoedepth_ros" / "config" / DDS_PROFILE_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{DDS_PROFILE_NAME} not found in {' or '.join(str(p.parent) for p in candidates)}")


@contextlib.contextmanager
def dds_profile(profile: str | os.PathLike | None):
    """Within the block, Fast DDS participants created by this process and its children (the node
    of `node_process`) use `profile`; None means Fast DDS defaults. Fast DDS reads the variable
    when a process creates its first participant: enter before rclpy.init."""
    saved = os.environ.get(DDS_PROFILE_VARIABLE)
    if profile is None:
        os.environ.pop(DDS_PROFILE_VARIABLE, None)
    else:
        os.environ[DDS_PROFILE_VARIABLE] = str(profile)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(DDS_PROFILE_VARIABLE, None)
        else:
            os.environ[DDS_PROFILE_VARIABLE] = saved


@contextlib.contextmanager
def node_process(namespace: str, parameters: dict[str, object], log):
    """`zoedepth-ros node` in its own process under `namespace` (benchmark, demo), stopped on exit.

    Its image input is reliable whatever publishes (input_reliability reliable): between processes,
    best effort loses most large frames (keep-last 1 still never builds a backlog). `log` receives its output: a file,
    as an undrained pipe would block the node. It inherits this process's environment, so its
    Fast DDS profile too (`dds_profile`).
    """
    cmd = [sys.executable, "-m", "zoedepth_ros.cli", "node", "--ros-args", "-r", f"__ns:={namespace}",
           "-p", "input_reliability:=reliable"]
    for name, value in parameters.items():
        cmd += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def keep_freed_buffers() -> bool:
    """Let glibc keep freed multi-megabyte blocks in the heap for the next frame; True if applied.

    Each frame allocates and frees several buffers of 1-5 MB (rclpy's C copy of every output,
    Fast DDS's serialized payloads). glibc hands blocks that large straight back to the kernel, and
    the next frame page-faults the same memory in again: ~8 ms per 640x480 cloud on a 2-core CPU
    (docs/benchmarks.md). Blocks up to 32 MB (glibc's ceiling for this setting) now come from the
    heap, which keeps up to 256 MB of free space instead of trimming it. Other C libraries: no-op.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))


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
