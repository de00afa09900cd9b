"""The depth node's depth/image/compressedDepth over real rclpy and Fast DDS: decoded by the tests'
own reading of the plugin's format (compressed_depth_reference.py, not the project's decoder),
png and rvl give the node's depth/image to within the quantization bound with the same NaN mask;
nothing is encoded while nobody subscribes; each camera of a two-camera node has its own; bad
parameter values are refused; a bag recorded from the node scores the same on both topics."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from compressed_depth_reference import error_bounds, plugin_params, reference_decode
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from test_compressed_depth_bags import H as BAG_H
from test_compressed_depth_bags import W as BAG_W
from test_compressed_depth_bags import evaluate, write_bag
from test_node import RampedEstimator

from zoedepth_ros.compressed_depth import encode_compressed_depth, nearest_depth
from zoedepth_ros.data.bag import read_frames
from zoedepth_ros.data.bag_layout import make_header, make_image_msg, typestore
from zoedepth_ros.data.synth import write_synth_bag

from ros_helpers import (
    CameraProcess,
    image_array,
    image_message,
    reliable_inputs,
    send_frame,
    stamp_key,
    wait_until,
)

W, H = 40, 30
MIN_DEPTH, MAX_DEPTH = 0.5, 50.0
COMPRESSED = "depth/image/compressedDepth"
TOPICS = {"depth/image": Image, COMPRESSED: CompressedImage}


@pytest.fixture
def harness_options(namespace):
    return {"size": (W, H), "min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH, "publish_points": False,
            "publish_colormap": False, **reliable_inputs(namespace)}


@pytest.fixture
def ramped(monkeypatch):
    """Depth from 0.07 m to a few km with a NaN and an inf in every frame."""
    monkeypatch.setattr("zoedepth_ros.inference.DepthEstimator", RampedEstimator)
    monkeypatch.setattr(RampedEstimator, "raw", [])


def check_compressed(compressed_msg, depth_msg, fmt: str, depth_max: float | None, quantization: float,
                     png_level: int = 9) -> None:
    """`compressed_msg` is depth_msg's depth in the plugin's format: same header, decoded by the
    reference decoder to within the bound, NaN exactly where depth/image is NaN or at or beyond
    `depth_max` (None: the node's default, every depth kept)."""
    assert compressed_msg.header == depth_msg.header
    assert compressed_msg.format == f"32FC1; compressedDepth {fmt}"
    depth = image_array(depth_msg)
    data = bytes(compressed_msg.data)
    kind, a, b = struct.unpack("<iff", data[:12])
    # np.float32(inf): with numpy 1.26 a Python inf would make nextafter step in float64.
    default_max = float(np.nextafter(np.float32(MAX_DEPTH), np.float32(np.inf)))
    effective_max = depth_max if depth_max is not None else default_max
    assert (kind, np.float32(a), np.float32(b)) == (0, *plugin_params(effective_max, quantization))
    decoded = reference_decode(compressed_msg.format, data)
    invalid = np.isnan(depth) if depth_max is None else np.isnan(depth) | (depth >= depth_max)
    assert (~invalid).sum() > 10 and invalid.sum() > 2
    np.testing.assert_array_equal(np.isnan(decoded), invalid)
    low, high = error_bounds(depth[~invalid], quantization)
    error = decoded[~invalid].astype(np.float64) - depth[~invalid]
    assert np.all((error >= low) & (error <= high)), np.abs(error).max()
    # Byte for byte what the codec makes of the published depth with these parameters.
    assert (compressed_msg.format, data) == encode_compressed_depth(
        depth, fmt, depth_max=effective_max, quantization=quantization, png_level=png_level)


def test_png_and_rvl_decode_to_the_depth_image_within_the_bound(ros, ramped):
    node = ros.depth_node()
    collector = ros.collector(TOPICS)
    cases = [("png", None, 100.0, 9), ("rvl", None, 100.0, 9), ("png", 20.0, 150.0, 1), ("rvl", 7.5, 30.0, 9)]
    # Nearer than nearest_depth saturates (read back as that depth, past the bound): not here.
    assert all(nearest_depth(depth_max or MAX_DEPTH, q) < MIN_DEPTH for _, depth_max, q, _ in cases)
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        for i, (fmt, depth_max, quantization, level) in enumerate(cases):
            assert all(r.successful for r in node.set_parameters([
                Parameter("compressed_depth_format", value=fmt),
                Parameter("compressed_depth_max", value=depth_max or 0.0),
                Parameter("compressed_depth_quantization", value=quantization),
                Parameter("compressed_depth_png_level", value=level)]))
            stamp = (7000 + i, 500)
            outputs = send_frame(camera, collector, stamp, TOPICS, seed=i)
            check_compressed(outputs[COMPRESSED], outputs["depth/image"], fmt, depth_max, quantization, level)


def test_not_encoded_while_nobody_subscribes(ros, ramped):
    node = ros.depth_node()
    collector = ros.collector({"depth/image": Image})
    listener = ros.client("compressed_listener")
    received = []
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        stage = node.camera().outputs.compressed_depth
        publisher = node.camera().outputs.publishers[COMPRESSED]
        for i in range(2):
            send_frame(camera, collector, (8000 + i, 0), ["depth/image"], seed=i)
        # A frame counts in the camera's outputs once its last stage, compressedDepth's, has run;
        # its depth/image goes out before that.
        assert wait_until(lambda: node.camera().stats.outputs == 2, timeout=10.0)
        assert (stage.encoded, stage.replaced) == (0, 0)

        subscription = listener.create_subscription(
            CompressedImage, COMPRESSED, received.append, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        # Matched on both sides: a reader drops what a writer it has not matched yet sends it, and
        # the writer may count the reader first.
        assert wait_until(lambda: publisher.get_subscription_count() == 1 and subscription.get_publisher_count() == 1,
                          timeout=10.0)
        send_frame(camera, collector, (8002, 0), ["depth/image"], seed=2)
        # The encoder process starts with this frame and encodes at nice 19: slow on busy cores.
        assert wait_until(lambda: [stamp_key(m.header) for m in received] == [(8002, 0)], timeout=30.0), \
            (stage.encoded, stage.replaced, [stamp_key(m.header) for m in received])
        assert wait_until(lambda: stage.encoded == 1, timeout=5.0)
        reported, _ = node.camera().report(active=True)  # on /diagnostics, once something was encoded
        assert (reported["compressedDepth published"], reported["compressedDepth skipped (encoder busy)"]) == ("1", "0")

        listener.destroy_subscription(subscription)
        assert wait_until(lambda: publisher.get_subscription_count() == 0, timeout=10.0)
        for i in range(3, 5):
            send_frame(camera, collector, (8000 + i, 0), ["depth/image"], seed=i)
        assert wait_until(lambda: node.camera().stats.outputs == 5, timeout=10.0)
        assert stage.encoded == 1


def test_an_encode_in_flight_is_published_before_deactivation(ros, monkeypatch, capfd):
    """Deactivation waits for the frame handed to the encoder: its message goes out while the
    publisher is still active, instead of being dropped with rclpy's 'not activated' warning."""
    from zoedepth_ros.ros.outputs import EncoderProcess

    encode = EncoderProcess.encode

    def slow_encode(*args, **kwargs):
        time.sleep(0.5)
        return encode(*args, **kwargs)

    monkeypatch.setattr(EncoderProcess, "encode", slow_encode)
    node = ros.depth_node()
    collector = ros.collector(TOPICS)
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        send_frame(camera, collector, (8500, 0), TOPICS)  # matched and running
        camera.send(stamp=[8501, 0], seed=1)
        assert collector.wait((8501, 0), ["depth/image"], 20.0) is not None
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS  # the encode is still sleeping
        assert collector.wait((8501, 0), [COMPRESSED], 5.0) is not None
    assert "not activated" not in capfd.readouterr().err


def test_each_camera_of_a_two_camera_node_gets_its_own(ros, ramped, namespace):
    cameras = ["left", "right"]
    params = {f"qos_overrides.{namespace}/{c}/{topic}.subscription.reliability": "reliable"
              for c in cameras for topic in ("image", "camera_info")}
    node = ros.depth_node(cameras=cameras, compressed_depth_format="rvl", **params)
    topics = {f"{c}/{topic}": msg_type for c in cameras for topic, msg_type in TOPICS.items()}
    collector = ros.collector(topics)
    with (ros.spin(), CameraProcess(f"{namespace}/left", W, H) as left,
          CameraProcess(f"{namespace}/right", W, H) as right):
        assert node.autostart()
        for i in range(2):
            # Same stamp on both cameras, different pictures: each message must be its own camera's.
            stamp = (9000 + i, 0)
            for name, driver, seed in (("left", left, i), ("right", right, 10 + i)):
                outputs = send_frame(driver, collector, stamp, [f"{name}/{t}" for t in TOPICS], seed=seed)
                check_compressed(outputs[f"{name}/{COMPRESSED}"], outputs[f"{name}/depth/image"], "rvl", None, 100.0)
            got = collector.wait(stamp, topics, 10.0)
            assert not np.array_equal(image_array(got["left/depth/image"]), image_array(got["right/depth/image"]))
            assert bytes(got[f"left/{COMPRESSED}"].data) != bytes(got[f"right/{COMPRESSED}"].data)
    assert all(node.camera(name).outputs.compressed_depth.encoded >= 2 for name in cameras)


def test_bad_values_are_refused_with_a_reason(ros):
    node = ros.depth_node()
    for name, value, reason in [
        ("compressed_depth_format", "jpeg", "compressed_depth_format must be one of png, rvl, not 'jpeg'"),
        ("compressed_depth_png_level", 10, ""),
        ("compressed_depth_png_level", -1, ""),
        ("compressed_depth_quantization", 0.0, ""),
        ("compressed_depth_max", -1.0, ""),
        ("compressed_depth_max", 0.3, "compressed_depth_max (0.3) must be 0 (max_depth) or above min_depth (0.5)"),
    ]:
        before = node.get_parameter(name).value
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, (name, value, result.reason)
        assert node.get_parameter(name).value == before
    # min_depth may not rise to a set compressed_depth_max either.
    assert node.set_parameters([Parameter("compressed_depth_max", value=2.0)])[0].successful
    result = node.set_parameters([Parameter("min_depth", value=3.0)])[0]
    assert not result.successful and "compressed_depth_max (2.0) must be 0" in result.reason


def record_from_the_node(ros, frames) -> dict[str, list]:
    """Play `frames` (BagFrame) to the node one at a time, as a replay does, and record its
    depth/image and depth/image/compressedDepth as `ros2 bag record` would store them (rosbags
    messages, the node's bytes unchanged), keyed by the bag topics /cam/depth/image[/compressedDepth]."""
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    client = ros.client("bag_player")
    image_pub = client.create_publisher(Image, "image", reliable)
    info_pub = client.create_publisher(CameraInfo, "camera_info", reliable)
    collector = ros.collector(TOPICS)
    node = ros.depth_node()
    compressed_type = typestore().types["sensor_msgs/msg/CompressedImage"]
    recorded = {"/cam/depth/image": [], "/cam/depth/image/compressedDepth": []}
    with ros.spin():
        assert node.autostart()
        assert wait_until(lambda: image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0,
                          timeout=10.0)
        for frame in frames:
            msg = image_message(frame.rgb, "rgb8")
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(frame.stamp_ns, 10**9)
            msg.header.frame_id = frame.frame_id
            k = [float(v) for v in frame.K.reshape(-1)]
            info = CameraInfo(header=msg.header, width=BAG_W, height=BAG_H, distortion_model="plumb_bob", k=k,
                              p=k[:3] + [0.0] + k[3:6] + [0.0] + k[6:] + [0.0], d=[0.0] * 5,
                              r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
            info_pub.publish(info)
            image_pub.publish(msg)
            got = collector.wait(stamp_key(msg.header), TOPICS, 20.0)
            assert got is not None, f"no outputs for frame {frame.stamp_ns}"
            depth_msg, compressed_msg = got["depth/image"], got[COMPRESSED]
            recorded["/cam/depth/image"].append(
                (frame.stamp_ns, make_image_msg(image_array(depth_msg), frame.stamp_ns, frame.frame_id)))
            recorded["/cam/depth/image/compressedDepth"].append((frame.stamp_ns, compressed_type(
                header=make_header(frame.stamp_ns, frame.frame_id), format=compressed_msg.format,
                data=np.frombuffer(bytes(compressed_msg.data), np.uint8))))
    return recorded


def test_a_bag_recorded_from_the_node_scores_the_same_on_both_topics(ros, ramped, tmp_path):
    frames = list(read_frames(write_synth_bag(tmp_path / "synth", frames=3, size=(BAG_H, BAG_W), progress=False)))
    recorded = record_from_the_node(ros, frames)
    predictions = [image_array_of(msg) for _, msg in recorded["/cam/depth/image"]]
    valid = np.concatenate([p[np.isfinite(p)] for p in predictions]).astype(np.float64)
    assert valid.size > 100 and valid.max() > 20.0  # the ramp reaches where the error is centimetres
    # Each predicted pixel p is read back as p + e, 0 <= e < high(p) <= r p: abs_rel moves by at most
    # r (1 + abs_rel), rmse by at most max(e) (triangle inequality), rmse_log by at most log(1 + r).
    _, high = error_bounds(valid, 100.0)
    r = float((high / valid).max())
    for storage in ("sqlite3", "mcap"):
        bag = write_bag(tmp_path / f"recorded_{storage}", frames, recorded, storage)
        raw = evaluate(bag, "/cam/depth/image", tmp_path / f"raw_{storage}")
        compressed = evaluate(bag, "/cam/depth/image/compressedDepth", tmp_path / f"compressed_{storage}")
        assert raw["frames"] == compressed["frames"] == 3
        assert compressed["frames_unpaired"] == raw["frames_unpaired"] == 0
        assert compressed["abs_rel"] == pytest.approx(raw["abs_rel"], abs=r * (1 + raw["abs_rel"]))
        assert compressed["rmse"] == pytest.approx(raw["rmse"], abs=float(high.max()))
        assert compressed["rmse_log"] == pytest.approx(raw["rmse_log"], abs=float(np.log1p(r)))
        assert compressed["abs_rel"] != raw["abs_rel"]  # the quantization is really there


def image_array_of(msg) -> np.ndarray:
    """HxW float32 of a rosbags 32FC1 Image."""
    return np.frombuffer(msg.data.tobytes(), "<f4").reshape(msg.height, msg.width)


def test_the_encoder_process_encodes_as_the_codec_and_survives_its_death():
    from zoedepth_ros.ros.outputs import EncoderProcess

    depth = np.geomspace(0.3, 40.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    depth[::7, ::5] = np.nan
    encoder = EncoderProcess()
    try:
        for fmt in ("png", "rvl"):
            assert encoder.encode(depth, fmt, depth_max=20.0, quantization=150.0, png_level=3) == \
                encode_compressed_depth(depth, fmt, depth_max=20.0, quantization=150.0, png_level=3)
        with pytest.raises(ValueError, match="compressedDepth format must be png or rvl, not 'jpeg'"):
            encoder.encode(depth, "jpeg")
        first = encoder._proc
        first.kill()
        first.wait()
        with pytest.raises(RuntimeError, match="the encoder process ended"):
            encoder.encode(depth, "png")
        assert encoder.encode(depth, "png") == encode_compressed_depth(depth, "png")  # a new process
        assert encoder._proc.pid != first.pid
    finally:
        last = encoder._proc
        encoder.close()
    assert last.returncode == 0  # ended by its stdin closing, not killed
