"""The depth node over real rclpy and Fast DDS, on CPU, with a tiny random-weight model.

The camera runs in its own process (test/publisher_proc.py); the node and the collecting
subscriber run in this process, spun by a background executor. Every test uses its own namespace.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from zoedepth_ros.image_codec import SUPPORTED_ENCODINGS, decode_compressed_msg, decode_image_msg
from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.ros.parameters import PARAMETERS, Settings, validate
from zoedepth_ros.ros.processes import stop_process

from image_samples import block_image
from ros_helpers import (
    P_CX,
    P_CY,
    P_FX,
    P_FY,
    REPO,
    BatchRecorder,
    image_array,
    image_message,
    launch_description,
    send_frame,
    stamp_key,
    wait_until,
)

W, H = 40, 30  # not multiples of 4: decimated clouds round up
OUTPUTS = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2, "depth/colormap": Image}
FRAME_ID = "test_camera_optical_frame"
MIN_DEPTH, MAX_DEPTH = 0.5, 50.0


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    # Both heads and the router; a 64x64 network input keeps a CPU forward pass around a tenth of a second.
    return tiny_checkpoint("NK", (64, 64))


@pytest.fixture
def harness_options():
    return {"size": (W, H), "min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH}


class RampedEstimator(DepthEstimator):
    """The real model, its depth stretched by a column ramp (0.05 m .. 200 m) with a NaN and an
    inf, so that every frame has pixels below min_depth, above max_depth and non-finite."""

    raw: list[np.ndarray] = []

    def predict_batch(self, images, with_std=False):
        predictions = super().predict_batch(images, with_std)
        for rgb, prediction in zip(images, predictions, strict=True):
            ramp = np.geomspace(0.07, 290.0, rgb.shape[1], dtype=np.float32)
            prediction.depth = prediction.depth * ramp
            prediction.depth[0, 0], prediction.depth[1, 1] = np.nan, np.inf
            RampedEstimator.raw.append(prediction.depth.copy())
        return predictions


class RecordingEstimator(DepthEstimator):
    """The real model, every prediction kept: what the node was given to publish."""

    predictions: list = []

    def predict_batch(self, images, with_std=False):
        predictions = super().predict_batch(images, with_std)
        RecordingEstimator.predictions.extend(predictions)
        return predictions




def check_depth(depth_msg, stamp, raw: np.ndarray):
    assert stamp_key(depth_msg.header) == stamp and depth_msg.header.frame_id == FRAME_ID
    assert (depth_msg.encoding, depth_msg.width, depth_msg.height) == ("32FC1", W, H)
    assert depth_msg.step == W * 4 and depth_msg.is_bigendian == (sys.byteorder == "big")
    depth = image_array(depth_msg)
    inside = (raw >= MIN_DEPTH) & (raw <= MAX_DEPTH)
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(np.isnan(depth), ~inside)  # NaN exactly where invalid, never 0.0
    np.testing.assert_array_equal(depth[inside], raw[inside])
    return depth


def check_cloud(cloud_msg, depth_msg, info_msg, stride: int, colour_of: np.ndarray | None):
    assert cloud_msg.header == depth_msg.header and info_msg.header == depth_msg.header
    rows, cols = -(-H // stride), -(-W // stride)
    assert (cloud_msg.height, cloud_msg.width) == (rows, cols)
    assert cloud_msg.point_step == (32 if colour_of is not None else 16)
    assert cloud_msg.row_step == cols * cloud_msg.point_step
    assert not cloud_msg.is_dense and not cloud_msg.is_bigendian
    names = [(f.name, f.offset, f.datatype) for f in cloud_msg.fields]
    assert names[:3] == [("x", 0, 7), ("y", 4, 7), ("z", 8, 7)]
    assert names[3:] == ([("rgb", 16, 7)] if colour_of is not None else [])

    points = np.frombuffer(cloud_msg.data, "<f4").reshape(rows, cols, cloud_msg.point_step // 4)
    fx, cx, fy, cy = info_msg.p[0], info_msg.p[2], info_msg.p[5], info_msg.p[6]
    z = image_array(depth_msg).astype(np.float64)[::stride, ::stride]
    v, u = np.mgrid[0:H:stride, 0:W:stride]
    expected = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)
    np.testing.assert_allclose(points[..., :3], expected, rtol=1e-5, atol=1e-6)
    if colour_of is not None:
        bgr0 = points[..., 4:5].copy().view(np.uint8)
        np.testing.assert_array_equal(bgr0[..., 2::-1], colour_of[::stride, ::stride])
        assert not bgr0[..., 3].any()


def check_colormap(colormap_msg, depth_msg):
    assert colormap_msg.header == depth_msg.header
    assert (colormap_msg.encoding, colormap_msg.width, colormap_msg.height) == ("rgb8", W, H)
    assert not image_array(colormap_msg)[np.isnan(image_array(depth_msg))].any()  # invalid is black


@pytest.mark.slow
def test_outputs_for_every_encoding_stride_and_colour(ros, monkeypatch):
    monkeypatch.setattr("zoedepth_ros.inference.DepthEstimator", RampedEstimator)
    # The depth as predicted, to the bit: the temporal filter's place in the output chain is
    # test_node_temporal.py's (the node's depth there equals the offline filter's, bit for bit).
    node = ros.depth_node(temporal_filter="none")
    collector = ros.collector(OUTPUTS)
    # Every encoding, each with colour (its decoded pixels come back in the cloud), strides and
    # row padding alternating; then both strides without colour and a camera_info calibrated at
    # twice the image size.
    cases = [(encoding, 4 if i % 2 else 1, True, 8 if i % 2 == 0 else 0, 1)
             for i, encoding in enumerate(SUPPORTED_ENCODINGS)]
    cases += [("rgb8", 1, False, 0, 1), ("bgr8", 4, False, 3, 1), ("rgb8", 4, True, 0, 2)]
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        for i, (encoding, stride, colour, padding, info_scale) in enumerate(cases):
            assert node.set_parameters(
                [Parameter("points_stride", value=stride), Parameter("points_color", value=colour)]
            )[0].successful
            stamp = (1000 + i, 1234)
            outputs = send_frame(camera, collector, stamp, OUTPUTS, encoding=encoding, padding=padding, seed=i,
                                 info_scale=info_scale)
            depth_msg, info_msg = outputs["depth/image"], outputs["depth/camera_info"]
            check_depth(depth_msg, stamp, RampedEstimator.raw[-1])
            assert (info_msg.width, info_msg.height) == (W, H)
            np.testing.assert_allclose([info_msg.p[i] for i in (0, 2, 5, 6)], [P_FX, P_CX, P_FY, P_CY])
            sent = image_message(block_image(H, W, i), encoding, padding)
            check_cloud(outputs["depth/points"], depth_msg, info_msg, stride,
                        decode_image_msg(sent) if colour else None)
            check_colormap(outputs["depth/colormap"], depth_msg)


@pytest.mark.slow
def test_compressed_input_and_optional_outputs(ros, monkeypatch):
    monkeypatch.setattr("zoedepth_ros.inference.DepthEstimator", RecordingEstimator)
    monkeypatch.setattr(RecordingEstimator, "predictions", [])
    # The depth as predicted, to the bit (the temporal filter's place: test_node_temporal.py).
    node = ros.depth_node(input_transport="compressed", points_color=True, publish_depth_mm=True,
                          publish_uncertainty=True, temporal_filter="none")
    topics = {**OUTPUTS, "depth/image_mm": Image, "depth/uncertainty": Image}
    collector = ros.collector(topics)
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        # QoS is overridable per topic; inputs keep only the newest frame, outputs are reliable.
        assert node.get_parameter(f"qos_overrides.{ros.namespace}/image/compressed.subscription.depth").value == 1
        assert node.get_parameter(
            f"qos_overrides.{ros.namespace}/depth/points.publisher.reliability").value == "reliable"
        for i, codec in enumerate(["png", "jpeg"]):
            stamp = (2000 + i, 0)
            outputs = send_frame(camera, collector, stamp, topics, compressed=codec, seed=i)
            depth_msg = outputs["depth/image"]
            assert stamp_key(depth_msg.header) == stamp and (depth_msg.width, depth_msg.height) == (W, H)
            depth = image_array(depth_msg)
            # The frame's prediction (a resent frame is the same picture, so the same prediction).
            predicted = RecordingEstimator.predictions[-1]
            valid = ~np.isnan(depth)
            assert valid.any()
            np.testing.assert_array_equal(depth[valid], predicted.depth[valid])
            sent = image_message(block_image(H, W, i), "rgb8", compressed=codec)
            check_cloud(outputs["depth/points"], depth_msg, outputs["depth/camera_info"], 1,
                        decode_compressed_msg(sent))

            mm_msg, std_msg = outputs["depth/image_mm"], outputs["depth/uncertainty"]
            assert mm_msg.header == depth_msg.header and mm_msg.encoding == "16UC1"
            mm = image_array(mm_msg)
            np.testing.assert_array_equal(mm == 0, np.isnan(depth))
            np.testing.assert_array_equal(mm[mm > 0], np.rint(depth[mm > 0] * 1000))
            assert std_msg.header == depth_msg.header and std_msg.encoding == "32FC1"
            # The prediction's spread where the depth is valid, NaN where it is not.
            std = image_array(std_msg)
            np.testing.assert_array_equal(np.isnan(std), ~valid)
            np.testing.assert_array_equal(std[valid], predicted.std[valid])


@pytest.mark.serial
@pytest.mark.slow
def test_latency_stays_bounded_with_a_fast_camera_and_a_slow_model(ros, monkeypatch):
    # Inference clearly slower than the camera: the real model plus a second.
    monkeypatch.setattr("zoedepth_ros.inference.DepthEstimator", BatchRecorder)
    monkeypatch.setattr(BatchRecorder, "DELAY_S", 1.0)
    monkeypatch.setattr(BatchRecorder, "batches", [])
    node = ros.depth_node(min_depth=0.001, max_depth=1000.0)
    collector = ros.collector({"depth/image": Image, "/diagnostics": DiagnosticArray})
    client = ros.client("latency_client")
    parameters = AsyncParameterClient(client, f"{ros.namespace}/zoedepth")
    get_state = client.create_client(GetState, f"{ros.namespace}/zoedepth/get_state")
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        assert parameters.wait_for_services(10.0) and get_state.wait_for_service(10.0)
        streaming = threading.Thread(target=camera.send, kwargs=dict(stamp=None, count=150, rate=30.0, timeout=60),
                                     daemon=True)
        streaming.start()
        assert wait_until(lambda: collector.arrivals, timeout=20.0)

        # Mid-inference, parameter and lifecycle services answer at once.
        response_s = []
        for request in (lambda: parameters.get_parameters(["points_stride"]),
                        lambda: get_state.call_async(GetState.Request())):
            started = time.monotonic()
            future = request()
            assert wait_until(future.done, timeout=5.0)
            response_s.append(time.monotonic() - started)
        streaming.join(timeout=60)
        # The camera outran the model: older frames were dropped, not queued.
        assert wait_until(lambda: int(ros.latest_diagnostics(collector).get("frames dropped as stale", 0)) > 0,
                          timeout=5.0)
        reported = ros.latest_diagnostics(collector)
        for key in ("input rate (Hz)", "output rate (Hz)", "inference latency mean (ms)", "inference latency p95 (ms)",
                    "inference latency p50 (ms)", "forward latency p50 (ms)",
                    "end-to-end latency mean (ms)", "end-to-end latency p95 (ms)", "model", "device", "precision"):
            assert key in reported, (key, reported)
        assert any(key.startswith("router: ") for key in reported), reported
        assert int(reported["frames in"]) > int(reported["frames out"]) > 0, reported
        # Rates cover one 1 s window each and a frame takes over 1 s, so any single window may hold
        # no output: judge them over every window of the stream.
        windows = [{v.key: float(v.value) for v in status.values if v.key.endswith("rate (Hz)")}
                   for status in ros.diagnostics(collector)]
        windows = [w for w in windows if w]  # statuses published before activation carry no rates
        assert max(w["input rate (Hz)"] for w in windows) > 10, windows
        assert 0 < max(w["output rate (Hz)"] for w in windows) <= 1.5 / BatchRecorder.DELAY_S, windows

    ages = [arrived - (header.stamp.sec + header.stamp.nanosec * 1e-9) for arrived, header in collector.arrivals]
    durations = [batch["seconds"] for batch in BatchRecorder.batches]
    inference_s = max(durations)
    assert len(ages) >= 3
    assert max(ages) < 2 * inference_s, (ages, durations)
    assert max(response_s) < BatchRecorder.DELAY_S / 2, response_s


def change_state(client, service, transition: int) -> bool:
    future = service.call_async(ChangeState.Request(transition=Transition(id=transition)))
    assert wait_until(future.done, timeout=30.0)
    return future.result().success


@pytest.mark.slow
def test_bad_model_fails_cleanly_and_a_reconfigure_recovers(ros, capfd):
    bad = "/nonexistent/zoedepth.safetensors"
    node = ros.depth_node(model=bad)
    collector = ros.collector({**OUTPUTS, "/diagnostics": DiagnosticArray})
    client = ros.client("lifecycle_client")
    change = client.create_client(ChangeState, f"{ros.namespace}/zoedepth/change_state")
    get_state = client.create_client(GetState, f"{ros.namespace}/zoedepth/get_state")
    with ros.spin():
        assert not node.autostart()
        assert get_state.wait_for_service(10.0)
        future = get_state.call_async(GetState.Request())
        assert wait_until(future.done, timeout=10.0)
        assert future.result().current_state.label == "unconfigured"
        log = capfd.readouterr().err
        assert "configure failed" in log and bad in log
        assert wait_until(lambda: any(s.level == s.ERROR and bad in s.message
                                      for s in ros.diagnostics(collector)), timeout=5.0)

        assert node.set_parameters([Parameter("model", value=ros.checkpoint)])[0].successful
        assert change_state(client, change, Transition.TRANSITION_CONFIGURE)
        assert change_state(client, change, Transition.TRANSITION_ACTIVATE)
        with ros.camera() as camera:
            # Without camera_info: depth only, no invented intrinsics.
            outputs = send_frame(camera, collector, (3000, 0), {"depth/image": Image}, info_scale=0)
            # An explicit field of view enables the pinhole guess.
            assert node.set_parameters([Parameter("fallback_hfov_deg", value=90.0)])[0].successful
            outputs = send_frame(camera, collector, (3001, 0), OUTPUTS, info_scale=0)
            # The next frame's camera_info and cloud came in order on the same reliable writers: any
            # of the first frame's would have come before them.
            assert not {"depth/camera_info", "depth/points"} & set(collector.received[(3000, 0)])
            info = outputs["depth/camera_info"]
            np.testing.assert_allclose([info.p[0], info.p[2], info.p[5], info.p[6]],
                                       [W / 2, (W - 1) / 2, W / 2, (H - 1) / 2])
            check_cloud(outputs["depth/points"], outputs["depth/image"], info, 1, None)


@pytest.mark.slow
def test_opencv_frames_without_an_encoding_are_served_with_one_warning(ros, capfd):
    """cv_bridge's cv2_to_imgmsg(frame) writes 8UC3/8UC4: taken as BGR/BGRA, said once per encoding."""
    node = ros.depth_node()
    collector = ros.collector({"depth/image": Image})
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        for i, encoding in enumerate(["8UC3", "8UC3", "8UC4", "8UC3"]):
            send_frame(camera, collector, (6000 + i, 0), {"depth/image": Image}, encoding=encoding)
    log = capfd.readouterr().err
    assert log.count("are '8UC3', a generic type with no colour order: taking them as OpenCV's bgr8") == 1
    assert log.count("are '8UC4', a generic type with no colour order: taking them as OpenCV's bgra8") == 1
    assert sum(node.camera().stats.rejected.values()) == 0


@pytest.mark.slow
def test_a_depth_image_as_input_is_rejected_and_counted(ros, capfd):
    node = ros.depth_node()
    collector = ros.collector({"depth/image": Image, "/diagnostics": DiagnosticArray})
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        send_frame(camera, collector, (5000, 0), {"depth/image": Image})
        camera.send(stamp=[5001, 0], encoding="32FC1")
        assert wait_until(lambda: ros.latest_diagnostics(collector).get("rejected: not_a_camera_image") == "1",
                          timeout=10.0)
        assert (5001, 0) not in collector.received
        send_frame(camera, collector, (5002, 0), {"depth/image": Image})  # and the node carries on
    assert "image rejected: encoding '32FC1' is a depth/generic buffer" in capfd.readouterr().err


def test_bad_parameter_values_are_rejected_and_the_old_value_kept(ros):
    node = ros.depth_node()
    for name, value, reason in [
        ("min_depth", 100.0, "must be below max_depth"),
        ("precision", "fp8", "must be one of auto, fp32, bf16, fp16, int8"),
        ("device", "tpu", "device must be"),
        ("input_transport", "theora", "must be one of raw, compressed"),
        ("points_stride", 0, ""),
        ("autostart", False, ""),
    ]:
        before = node.get_parameter(name).value
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, (name, result.reason)
        assert node.get_parameter(name).value == before
    assert validate({"min_depth": 1.0, "max_depth": 2.0}, {"min_depth": 5.0, "max_depth": 80.0,
                                                            "colormap_min": 0.5, "colormap_max": 10.0}) is None


@pytest.mark.slow
def test_runs_from_the_params_file_through_the_cli(ros):
    command = [sys.executable, "-m", "zoedepth_ros.cli", "node", "--ros-args",
               "--params-file", str(REPO / "config" / "zoedepth.yaml"),
               "-p", f"model:={ros.checkpoint}", "-p", "device:=cpu", "-r", f"__ns:={ros.namespace}"]
    node_proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    collector = ros.collector(OUTPUTS)
    parameters = AsyncParameterClient(ros.client("params_client"), f"{ros.namespace}/zoedepth")
    try:
        with ros.spin(), ros.camera() as camera:
            # The node process first imports torch and loads the model: allow it time.
            outputs = send_frame(camera, collector, (4000, 0), OUTPUTS, timeout=60.0, wait_s=60.0)
            assert (outputs["depth/points"].height, outputs["depth/points"].width) == (H, W)  # points_stride 1
            assert parameters.wait_for_services(10.0)
            future = parameters.get_parameters(["max_depth", "publish_colormap", "input_transport"])
            assert wait_until(future.done, timeout=10.0)
            values = future.result().values
            assert (values[0].double_value, values[1].bool_value, values[2].string_value) == (80.0, True, "raw")
            segments = dds_segments(node_proc.pid)
            assert segments  # Fast DDS's shared-memory transport: what a killed process leaves behind
    finally:
        # SIGTERM, as systemd, docker stop or a launch's escalation send it: a shutdown like Ctrl-C's.
        output = stop_process(node_proc, sig=signal.SIGTERM)
    assert node_proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert not [s for s in segments if s.exists()], segments


def dds_segments(pid: int) -> set[Path]:
    """The Fast DDS shared-memory segment(s) of process `pid`'s participants: those whose `_el` file
    the process holds a lock on (how Fast DDS tells a live segment from a zombie), with that file.
    The port segments, shared by every participant, are left out."""
    inodes = {line.split()[5].rsplit(":", 1)[-1] for line in Path("/proc/locks").read_text().splitlines()
              if line.split()[4] == str(pid)}
    owned = {path for path in Path("/dev/shm").glob("fastrtps_*_el")
             if "fastrtps_port" not in path.name and str(path.stat().st_ino) in inodes}
    return owned | {path.with_name(path.name.removesuffix("_el")) for path in owned}


def test_cli_passes_ros_arguments_through():
    from zoedepth_ros.cli import build_parser

    args = build_parser().parse_args(["node", "--ros-args", "-p", "model:=x", "--params-file", "f.yaml"])
    assert args.ros_args == ["-p", "model:=x", "--params-file", "f.yaml"]
    assert build_parser().parse_args(["node"]).ros_args is None


def test_params_file_lists_every_parameter_with_its_default():
    values = yaml.safe_load((REPO / "config" / "zoedepth.yaml").read_text())["/**"]["ros__parameters"]
    # The camera list's default (not set) is written as an empty list.
    assert values == {name: list(spec.default) if isinstance(spec.default, tuple) else spec.default
                      for name, spec in PARAMETERS.items()}


def test_settings_has_one_field_per_parameter_typed_as_its_default():
    fields = dataclasses.fields(Settings)
    assert [f.name for f in fields] == list(PARAMETERS)
    assert {f.name: f.type.split("[")[0] for f in fields} == {name: type(spec.default).__name__
                                                              for name, spec in PARAMETERS.items()}


def test_rviz_config_shows_image_colormap_and_points():
    config = yaml.safe_load((REPO / "config" / "zoedepth.rviz").read_text())["Visualization Manager"]
    shown = {(d["Class"], d["Topic"]["Value"]) for d in config["Displays"] if "Topic" in d}
    assert shown == {
        ("rviz_default_plugins/Image", "/camera/image_raw"),
        ("rviz_default_plugins/Image", "/depth/colormap"),
        ("rviz_default_plugins/PointCloud2", "/depth/points"),
    }


def test_launch_file_builds_its_description():
    description = launch_description(REPO / "launch" / "zoedepth.launch.py")
    names = {action.name for action in description.entities if hasattr(action, "default_value")}
    assert {"camera", "image", "camera_info", "cameras", "camera_image", "model", "engine", "device",
            "input_reliability", "temporal_filter", "params_file", "rviz"} <= names


_FRESH_ALLOCATION = """
import ctypes, sys
from zoedepth_ros.ros.processes import keep_freed_buffers
libc = ctypes.CDLL(None)
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_buffers()
before = libc.mallinfo2().hblkhd
block = bytearray(5 << 20)  # a 640x480 cloud's size
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator")
def test_node_keeps_large_freed_blocks_in_the_heap():
    """A fresh process maps a 5 MB block straight from the kernel (and would unmap it on free);
    after keep_freed_buffers it comes from the heap, where the next frame finds it again."""
    def mapped_bytes(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FRESH_ALLOCATION, mode], capture_output=True, text=True,
                             check=True)
        return int(out.stdout)

    assert mapped_bytes("default") >= 5 << 20
    assert mapped_bytes("keep") == 0
