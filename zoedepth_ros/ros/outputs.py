"""The depth node's outputs: its lifecycle publishers, and what one frame's prediction publishes on
them. Every output carries the input image's header unchanged."""

from __future__ import annotations

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from zoedepth_ros.camera_info import Intrinsics, depth_camera_info
from zoedepth_ros.cloud import CloudBuilder, to_pointcloud2
from zoedepth_ros.colormap import colorize
from zoedepth_ros.depth_codec import depth_to_mm16
from zoedepth_ros.ros.inputs import own_qos
from zoedepth_ros.ros.messages import image_msg
from zoedepth_ros.ros.parameters import Settings

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
}


class DepthOutputs:
    """The publishers of one camera of a configured node (created with it, destroyed by `destroy`),
    on `prefix` + OUTPUT_TOPICS, keyed by OUTPUT_TOPICS. The optional outputs are computed only
    while something subscribes to them."""

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

    def subscribed(self, topic: str) -> bool:
        return self.publishers[topic].get_subscription_count() > 0

    def publish(self, header, settings: Settings, rgb: np.ndarray, depth: np.ndarray, std: np.ndarray | None,
                intrinsics: Intrinsics | None, info: CameraInfo | None) -> None:
        """Publish one frame: `depth` (metres) and `std` as predicted for `rgb`, the intrinsics of
        the depth image (None: no depth/camera_info and depth/points) and the camera_info they came
        from (None: guessed). Depth outside [min_depth, max_depth] becomes invalid."""
        valid = (depth >= settings.min_depth) & (depth <= settings.max_depth)  # False for NaN
        depth = np.where(valid, depth, np.float32(np.nan)).astype(np.float32, copy=False)
        self.publishers["depth/image"].publish(image_msg(header, depth, "32FC1"))

        if settings.publish_depth_mm and self.subscribed("depth/image_mm"):
            self.publishers["depth/image_mm"].publish(image_msg(header, depth_to_mm16(depth), "16UC1"))

        if intrinsics is not None:
            self.publishers["depth/camera_info"].publish(depth_camera_info(intrinsics, header, info))
            if settings.publish_points and self.subscribed("depth/points"):
                cloud = self._cloud_builder.build(
                    depth, intrinsics, settings.points_stride, rgb if settings.points_color else None
                )
                self.publishers["depth/points"].publish(to_pointcloud2(cloud, header))

        if settings.publish_colormap and self.subscribed("depth/colormap"):
            vmin, vmax = ((settings.colormap_min, settings.colormap_max) if settings.colormap_fixed_range
                          else (None, None))
            self.publishers["depth/colormap"].publish(image_msg(header, colorize(depth, vmin, vmax), "rgb8"))

        if std is not None:
            std = np.where(valid, std, np.float32(np.nan)).astype(np.float32, copy=False)
            self.publishers["depth/uncertainty"].publish(image_msg(header, std, "32FC1"))

    def destroy(self) -> None:
        for publisher in self.publishers.values():
            self._node.destroy_lifecycle_publisher(publisher)
        self.publishers = {}
