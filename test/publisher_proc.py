"""The test camera, in its own process: publishes image + camera_info frames on command.

    python test/publisher_proc.py --namespace /ns --width 40 --height 30 [--qos default|sensor_data]

--qos: the publishers' QoS; default (reliable, keep-last 10, what rclpy/rclcpp give) or
sensor_data (best effort, keep-last 5, what many camera drivers use); without it, reliable
keep-last 5.

Prints "ready" once up, then reads one JSON command per line on stdin and prints "sent N" when it
has published it. Command keys (all optional):
  encoding    Image encoding of the frame (default rgb8); image is block_image(seed)
  padding     junk bytes after every row (default 0)
  compressed  "png"/"jpeg": send a CompressedImage on image/compressed instead
  seed        picture seed (default 0)
  stamp       [sec, nanosec]; null stamps every message with the current time (default)
  info_scale  camera_info calibrated at this multiple of the image size; 0 sends none (default 1)
  count, rate publish the frame `count` times at `rate` Hz (default once)
  wait_s      first wait up to this long for the image topic to have a subscriber (default 10)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import rclpy
from rclpy.qos import QoSProfile, qos_profile_sensor_data, qos_profile_system_default
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from image_samples import block_image
from ros_helpers import camera_info, image_message, wait_until


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--qos", choices=("default", "sensor_data"))
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("test_camera", namespace=args.namespace)
    qos = {None: QoSProfile(depth=5), "default": qos_profile_system_default,
           "sensor_data": qos_profile_sensor_data}[args.qos]
    publishers = {
        "raw": node.create_publisher(Image, "image", qos),
        "compressed": node.create_publisher(CompressedImage, "image/compressed", qos),
    }
    info_publisher = node.create_publisher(CameraInfo, "camera_info", qos)
    print("ready", flush=True)

    for line in sys.stdin:
        command = json.loads(line)
        rgb = block_image(args.height, args.width, command.get("seed", 0))
        msg = image_message(rgb, command.get("encoding", "rgb8"), command.get("padding", 0), command.get("compressed"))
        image_publisher = publishers["compressed" if command.get("compressed") else "raw"]
        wait_until(lambda publisher=image_publisher: publisher.get_subscription_count() > 0,
                   timeout=command.get("wait_s", 10.0))
        scale = command.get("info_scale", 1)
        info = camera_info(args.width, args.height, scale) if scale else None
        count, period = command.get("count", 1), 1.0 / command.get("rate", 30.0)
        for i in range(count):
            started = time.monotonic()
            if command.get("stamp") is None:
                msg.header.stamp = node.get_clock().now().to_msg()
            else:
                msg.header.stamp.sec, msg.header.stamp.nanosec = command["stamp"]
            msg.header.frame_id = "test_camera_optical_frame"
            if info is not None:
                info.header = msg.header
                info_publisher.publish(info)
            image_publisher.publish(msg)
            if i + 1 < count:
                time.sleep(max(0.0, period - (time.monotonic() - started)))
        print(f"sent {count}", flush=True)

    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
