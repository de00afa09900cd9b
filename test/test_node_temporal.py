"""The depth node's temporal filter (`temporal_filter`): its depth equals the offline filter applied
to the estimator's predictions in order, each camera of a several-camera node is filtered on its
own, and a new sequence (a stamp gap, stamps going back, a new publisher, a change of the
parameter) gives the unfiltered prediction."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from zoedepth_ros.camera_info import intrinsics_from_camera_info
from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.inference.temporal_filter import DEFAULT_TEMPORAL_FILTER, make_temporal_filter

from image_samples import block_image
from ros_helpers import camera_info, image_array, image_message, stamp_key, wait_until

W, H = 40, 30
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
PERIOD_NS = 100_000_000
# Nothing invalidated: the node's depth is the filter's output itself.
NODE_PARAMS = {"min_depth": 0.0, "max_depth": 1000.0, "publish_points": False, "publish_colormap": False}


class RecordingEstimator(DepthEstimator):
    """The real model; each image's prediction kept by the image's bytes (one image per batch on CPU)."""

    raw: dict[bytes, np.ndarray] = {}

    def predict_batch(self, images, with_std=False):
        predictions = super().predict_batch(images, with_std)
        for rgb, prediction in zip(images, predictions, strict=True):
            RecordingEstimator.raw[rgb.tobytes()] = prediction.depth.copy()
        return predictions


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr("zoedepth_ros.inference.DepthEstimator", RecordingEstimator)
    RecordingEstimator.raw = {}
    return RecordingEstimator


def reliable(namespace: str, cameras: list[str]) -> dict[str, str]:
    return {f"qos_overrides.{namespace}/{prefix}{topic}.subscription.reliability": "reliable"
            for prefix in [f"{c}/" for c in cameras] or [""] for topic in ("image", "camera_info")}


class Camera:
    """One camera's publishers in a client node ('' the single camera), created by `restart` once
    the node subscribes; `restart` again replaces them (a restarted driver: new publishers, sequence
    numbers from 1 again)."""

    def __init__(self, client, name: str = "") -> None:
        self.client, self.name, self.prefix = client, name, f"{name}/" if name else ""
        self.image = self.info = None

    def restart(self) -> None:
        for publisher in (self.image, self.info):
            if publisher is not None:
                self.client.destroy_publisher(publisher)
        self.image = self.client.create_publisher(Image, self.prefix + "image", RELIABLE)
        self.info = self.client.create_publisher(CameraInfo, self.prefix + "camera_info", RELIABLE)
        assert wait_until(lambda: self.image.get_subscription_count() > 0 and self.info.get_subscription_count() > 0,
                          timeout=10.0)

    def send(self, rgb: np.ndarray, stamp_ns: int) -> tuple[int, int]:
        msg = image_message(rgb, "rgb8")
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = "cam_optical_frame"
        info = camera_info(W, H)
        info.header = msg.header
        self.info.publish(info)
        self.image.publish(msg)
        return stamp_key(msg.header)


def picture(seed: int) -> np.ndarray:
    """A frame of one scene with a camera's noise: the same blocks, different noise per seed."""
    noise = np.random.default_rng(seed).normal(0.0, 6.0, (H, W, 3))
    return np.clip(block_image(H, W, 0) + noise, 0, 255).astype(np.uint8)


K = np.reshape(intrinsics_from_camera_info(camera_info(W, H), W, H).k, (3, 3))


def depth_of(collector, camera: Camera, stamp, timeout: float = 20.0) -> np.ndarray:
    got = collector.wait(stamp, [camera.prefix + "depth/image"], timeout)
    assert got is not None, f"no depth of camera {camera.name!r} for {stamp}"
    return image_array(got[camera.prefix + "depth/image"])


def test_the_node_equals_the_offline_filter_and_restarts_at_new_sequences(ros, recorder, namespace):
    node = ros.depth_node(temporal_filter="scale+ema", **NODE_PARAMS, **reliable(namespace, []))
    collector = ros.collector({"depth/image": Image})
    camera = Camera(ros.client("temporal_camera"))
    # (stamp, restarts here): 10 Hz; a gap of 2 s; stamps 1.5 s back; a new publisher (stamps going on).
    # Every stamp once: the collector files outputs by stamp.
    stamps = [(10**10 + i * PERIOD_NS, i == 0) for i in range(5)]
    stamps += [(stamps[-1][0] + 2 * 10**9 + i * PERIOD_NS, i == 0) for i in range(3)]
    stamps += [(stamps[-1][0] - 15 * PERIOD_NS + i * PERIOD_NS, i == 0) for i in range(3)]
    stamps += [(stamps[-1][0] + (i + 1) * PERIOD_NS, i == 0) for i in range(3)]
    offline = make_temporal_filter("scale+ema")
    with ros.spin():
        assert node.autostart()
        camera.restart()
        for i, (stamp_ns, restarts) in enumerate(stamps):
            if i == 11:
                camera.restart()
            rgb = picture(i)
            published = depth_of(collector, camera, camera.send(rgb, stamp_ns))
            raw = recorder.raw[rgb.tobytes()]
            if restarts:
                offline.reset()
                np.testing.assert_array_equal(published, raw, err_msg=f"frame {i}")
            expected = offline.filter(raw, stamp_ns, K, rgb)
            np.testing.assert_array_equal(published, expected, err_msg=f"frame {i}")
            assert restarts or not np.array_equal(published, raw), f"frame {i} was not filtered"

        # A change of the parameter restarts: the next frame is the prediction itself, then filtered
        # (motion-ema: with the image and the camera_info's K, as the node gives them).
        assert node.set_parameters([Parameter("temporal_filter", value="motion-ema")])[0].successful
        offline = make_temporal_filter("motion-ema")
        for i in range(3):
            stamp_ns = stamps[-1][0] + (i + 1) * PERIOD_NS
            rgb = picture(100 + i)
            published = depth_of(collector, camera, camera.send(rgb, stamp_ns))
            np.testing.assert_array_equal(published, offline.filter(recorder.raw[rgb.tobytes()], stamp_ns, K, rgb))
        assert not np.array_equal(published, recorder.raw[rgb.tobytes()])


@pytest.mark.parametrize("method", ["ema", "motion-ema"])
def test_each_camera_is_filtered_on_its_own(ros, recorder, namespace, method):
    cameras = ["left", "right"]
    node = ros.depth_node(cameras=cameras, temporal_filter=method, **NODE_PARAMS, **reliable(namespace, cameras))
    collector = ros.collector({f"{c}/depth/image": Image for c in cameras})
    client = ros.client("temporal_cameras")
    with ros.spin():
        assert node.autostart()
        publishers = {c: Camera(client, c) for c in cameras}
        for camera in publishers.values():
            camera.restart()
        offline = {c: make_temporal_filter(method) for c in cameras}
        for i in range(4):
            for j, name in enumerate(cameras):  # interleaved; the right camera's scene is another
                rgb = picture(10 * i + j) if name == "left" else np.ascontiguousarray(picture(10 * i + j)[::-1])
                stamp_ns = 10**10 + i * PERIOD_NS + j * 1_000_000
                published = depth_of(collector, publishers[name], publishers[name].send(rgb, stamp_ns))
                expected = offline[name].filter(recorder.raw[rgb.tobytes()], stamp_ns, K, rgb)
                np.testing.assert_array_equal(published, expected, err_msg=f"{name} frame {i}")


def test_a_bad_filter_name_is_refused(ros):
    node = ros.depth_node()
    result = node.set_parameters([Parameter("temporal_filter", value="median")])[0]
    assert not result.successful
    assert "temporal_filter must be one of none, scale, ema, scale+ema, motion-ema, not 'median'" in result.reason
    assert node.get_parameter("temporal_filter").value == DEFAULT_TEMPORAL_FILTER
