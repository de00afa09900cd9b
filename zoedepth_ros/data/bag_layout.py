"""The evaluation bag layout, without opening a bag: topic names and message types, the frame
record (`BagFrame`), and the rosbags typestore messages of a frame, built (`make_image_msg`,
`make_camera_info_msg`, `make_tf_static_msg`) and decoded (`decode_rgb`, through
`zoedepth_ros.image_codec` as the depth node decodes; depth images through
`zoedepth_ros.depth_codec`). `zoedepth_ros.data.bag` writes and reads the bags themselves;
docs/bag-layout.md describes the layout in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from zoedepth_ros.depth_codec import DepthDecodeError, decode_depth
from zoedepth_ros.errors import ZoeDepthError

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

LAYOUT = "zoedepth_ros.bag/1"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
# base_link (x forward, y left, z up) -> optical frame (x right, y down, z forward), REP 103.
OPTICAL_ROTATION_XYZW = (-0.5, 0.5, -0.5, 0.5)

ImageFormat = Literal["raw", "jpeg", "png"]


class BagError(ZoeDepthError):
    """A bag that cannot be written or read as an evaluation bag; the message says why."""


@dataclass(frozen=True)
class BagTopics:
    """Topic names of the layout. The reader takes RGB from `image` when the bag has it,
    otherwise from `compressed_image`; `depth=None` reads bags without ground truth."""

    image: str = "/camera/image"
    compressed_image: str = "/camera/image/compressed"
    camera_info: str = "/camera/camera_info"
    depth: str | None = "/ground_truth/depth"
    tf_static: str = "/tf_static"


DEFAULT_TOPICS = BagTopics()


@dataclass
class BagFrame:
    """One RGB frame with its calibration and metric ground truth (NaN = no GT)."""

    stamp_ns: int
    frame_id: str
    rgb: np.ndarray  # HxWx3 uint8, RGB order
    depth: np.ndarray | None  # HxW float32 metres along the optical axis, NaN invalid
    K: np.ndarray  # 3x3
    P: np.ndarray | None = None  # 3x4; None when writing means [K | 0]
    width: int = 0  # 0: the image width
    height: int = 0  # 0: the image height

    def __post_init__(self) -> None:
        height, width = self.rgb.shape[:2]
        self.width = self.width or width
        self.height = self.height or height


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def make_header(stamp_ns: int, frame_id: str) -> Any:
    ts = typestore()
    stamp = ts.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return ts.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def stamp_to_ns(header: Any) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


_RAW_ENCODINGS = {
    np.dtype(np.uint8): {3: "rgb8", 1: "mono8"},
    np.dtype(np.float32): {1: "32FC1"},
    np.dtype(np.uint16): {1: "16UC1"},
}


def make_image_msg(array: np.ndarray, stamp_ns: int, frame_id: str, image_format: ImageFormat = "raw") -> Any:
    """sensor_msgs/Image from HxWx3 uint8 RGB (rgb8), HxW uint8 (mono8), float32 (32FC1) or
    uint16 (16UC1); with image_format jpeg/png, a sensor_msgs/CompressedImage of RGB."""
    ts = typestore()
    header = make_header(stamp_ns, frame_id)
    if image_format != "raw":
        import cv2

        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"{image_format} compression takes HxWx3 uint8 RGB, got {array.dtype} {array.shape}")
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpeg" else []
        ok, encoded = cv2.imencode(".jpg" if image_format == "jpeg" else ".png", array[:, :, ::-1], params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {array.shape} image as {image_format}")
        # image_transport's format string: what was compressed; OpenCV always decodes to bgr8.
        fmt = f"rgb8; {image_format} compressed bgr8"
        return ts.types[COMPRESSED_IMAGE](header=header, format=fmt, data=encoded.reshape(-1))
    channels = array.shape[2] if array.ndim == 3 else 1
    encoding = _RAW_ENCODINGS.get(array.dtype, {}).get(channels)
    if encoding is None or array.ndim not in (2, 3):
        raise ValueError(f"no raw encoding for {array.dtype} array of shape {array.shape}")
    height, width = array.shape[:2]
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return ts.types[IMAGE](
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * array.dtype.itemsize,
        data=data.view(np.uint8).reshape(-1),
    )


def make_camera_info_msg(
    K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str, P: np.ndarray | None = None
) -> Any:
    """sensor_msgs/CameraInfo of a rectified pinhole camera: D zero, R identity, P = [K | 0]
    unless given (consumers such as depth_image_proc read fx, fy, cx, cy from P)."""
    ts = typestore()
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.hstack([K, np.zeros((3, 1))]) if P is None else np.asarray(P, dtype=np.float64).reshape(3, 4)
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts.types[CAMERA_INFO](
        header=make_header(stamp_ns, frame_id),
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.reshape(-1).copy(),
        r=np.eye(3).reshape(-1),
        p=P.reshape(-1).copy(),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def make_tf_static_msg(
    parent: str,
    child: str,
    stamp_ns: int,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rotation_xyzw: tuple[float, float, float, float] = OPTICAL_ROTATION_XYZW,
) -> Any:
    """tf2_msgs/TFMessage with one transform parent -> child."""
    ts = typestore()
    transform = ts.types["geometry_msgs/msg/Transform"](
        translation=ts.types["geometry_msgs/msg/Vector3"](*map(float, translation)),
        rotation=ts.types["geometry_msgs/msg/Quaternion"](*map(float, rotation_xyzw)),
    )
    stamped = ts.types["geometry_msgs/msg/TransformStamped"](
        header=make_header(stamp_ns, parent), child_frame_id=child, transform=transform
    )
    return ts.types[TF_MESSAGE](transforms=[stamped])


def decode_rgb(msg: Any) -> np.ndarray:
    """HxWx3 uint8 RGB of a camera Image or CompressedImage, decoded by `zoedepth_ros.image_codec`
    (every encoding the node takes; `step` padding and `is_bigendian` honoured). The array is the
    caller's own (never a view of the message buffer); an undecodable message is a BagError."""
    from zoedepth_ros.image_codec import ImageDecodeError, decode_compressed_msg, decode_image_msg

    try:
        rgb = decode_compressed_msg(msg) if msg.__msgtype__ == COMPRESSED_IMAGE else decode_image_msg(msg)
    except ImageDecodeError as exc:
        raise BagError(str(exc)) from None
    return rgb if rgb.flags.owndata and rgb.flags.writeable else rgb.copy()


def assemble_frame(stamp: int, parts: dict[str, Any]) -> BagFrame:
    """The BagFrame of one frame's messages (role -> message: image, camera_info, maybe depth)."""
    info = parts["camera_info"]
    rgb = decode_rgb(parts["image"])
    try:
        depth = decode_depth(parts["depth"]) if "depth" in parts else None
    except DepthDecodeError as exc:
        raise BagError(str(exc)) from None
    if depth is not None and depth.shape != rgb.shape[:2]:
        raise BagError(f"frame {stamp}: GT {depth.shape} and image {rgb.shape[:2]} sizes differ")
    return BagFrame(
        stamp_ns=stamp,
        frame_id=parts["image"].header.frame_id,
        rgb=rgb,
        depth=depth,
        K=np.asarray(info.k, dtype=np.float64).reshape(3, 3),
        P=np.asarray(info.p, dtype=np.float64).reshape(3, 4),
        width=int(info.width),
        height=int(info.height),
    )
