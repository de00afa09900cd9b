"""The evaluation bag layout, without opening a bag: topic names and message types, the frame
record (`BagFrame`), and the rosbags typestore messages of a frame, built (`make_image_msg`,
`make_camera_info_msg`, `make_tf_static_msg`, `make_pose_msg`) and decoded (`decode_rgb`, through
`zoedepth_ros.image_codec` as the depth node decodes; depth images through
`zoedepth_ros.depth_codec`, compressedDepth ones through `zoedepth_ros.compressed_depth`;
`decode_pose`). `zoedepth_ros.data.bag` writes and reads the bags themselves;
docs/bag-layout.md describes the layout in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from zoedepth_ros.compressed_depth import DEFAULT_QUANTIZATION, decode_compressed_depth_msg, encode_compressed_depth
from zoedepth_ros.depth_codec import DepthDecodeError, decode_depth, decode_prediction
from zoedepth_ros.errors import ZoeDepthError

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

LAYOUT = "zoedepth_ros.bag/1"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
# The fixed frame of /ground_truth/pose (REP 103: x forward, y left, z up at the first pose).
WORLD_FRAME = "world"
# base_link (x forward, y left, z up) -> optical frame (x right, y down, z forward), REP 103.
OPTICAL_ROTATION_XYZW = (-0.5, 0.5, -0.5, 0.5)

ImageFormat = Literal["raw", "jpeg", "png"]
# Ground truth as an Image (32FC1 metres, 16UC1 millimetres) or image_transport's compressedDepth
# (a CompressedImage on `<depth topic>/compressedDepth`, PNG of the quantized inverse depth).
GtEncoding = Literal["32FC1", "16UC1", "compressedDepth"]
GT_ENCODINGS: tuple[str, ...] = ("32FC1", "16UC1", "compressedDepth")
COMPRESSED_DEPTH_SUFFIX = "/compressedDepth"


class BagError(ZoeDepthError):
    """A bag that cannot be written or read as an evaluation bag; the message says why."""


@dataclass(frozen=True)
class BagTopics:
    """Topic names of the layout. The reader takes RGB from `image` when the bag has it,
    otherwise from `compressed_image`; `depth=None` reads bags without ground truth. `pose` is
    read where the bag has that topic (frames get `pose=None` otherwise); `pose=None` ignores it."""

    image: str = "/camera/image"
    compressed_image: str = "/camera/image/compressed"
    camera_info: str = "/camera/camera_info"
    depth: str | None = "/ground_truth/depth"
    tf_static: str = "/tf_static"
    pose: str | None = "/ground_truth/pose"


DEFAULT_TOPICS = BagTopics()


@dataclass
class BagFrame:
    """One RGB frame with its calibration and metric ground truth (NaN = no GT), and where the
    bag records motion, the camera's pose: the 4x4 float64 transform taking points of the optical
    frame (`frame_id`) to the fixed `world` frame (camera-to-world)."""

    stamp_ns: int
    frame_id: str
    rgb: np.ndarray  # HxWx3 uint8, RGB order
    depth: np.ndarray | None  # HxW float32 metres along the optical axis, NaN invalid
    K: np.ndarray  # 3x3
    P: np.ndarray | None = None  # 3x4; None when writing means [K | 0]
    width: int = 0  # 0: the image width
    height: int = 0  # 0: the image height
    pose: np.ndarray | None = None  # 4x4 float64 camera-to-world, None: not recorded

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


def make_compressed_depth_msg(depth: np.ndarray, stamp_ns: int, frame_id: str, depth_max: float,
                              quantization: float = DEFAULT_QUANTIZATION, fmt: str = "png") -> Any:
    """sensor_msgs/CompressedImage of HxW float32 metres in image_transport's compressedDepth
    format (`zoedepth_ros.compressed_depth`): depth at or beyond `depth_max`, NaN and <= 0 stored
    as invalid."""
    message_format, data = encode_compressed_depth(depth, fmt, depth_max=depth_max, quantization=quantization)
    return typestore().types[COMPRESSED_IMAGE](
        header=make_header(stamp_ns, frame_id), format=message_format, data=np.frombuffer(data, dtype=np.uint8)
    )


def decode_depth_msg(msg: Any, prediction: bool = False) -> np.ndarray:
    """HxW float32 metres of a depth Image (`decode_depth`, or with `prediction` `decode_prediction`)
    or a compressedDepth CompressedImage (NaN = invalid); DepthDecodeError (CompressedDepthError
    with its `reason` for compressedDepth) when the message cannot be read."""
    if msg.__msgtype__ == COMPRESSED_IMAGE:
        return decode_compressed_depth_msg(msg)
    return decode_prediction(msg) if prediction else decode_depth(msg)


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


def _rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix, w >= 0 (Shepperd's method: the largest of the four
    squares is computed first, so no branch divides by a small number)."""
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    squares = [1 + 2 * R[0, 0] - trace, 1 + 2 * R[1, 1] - trace, 1 + 2 * R[2, 2] - trace, 1 + trace]
    i = int(np.argmax(squares))
    big = np.sqrt(squares[i]) / 2  # the largest of |x|, |y|, |z|, |w|
    if i == 3:
        q = [(R[2, 1] - R[1, 2]) / 4, (R[0, 2] - R[2, 0]) / 4, (R[1, 0] - R[0, 1]) / 4, big**2]
    elif i == 0:
        q = [big**2, (R[0, 1] + R[1, 0]) / 4, (R[0, 2] + R[2, 0]) / 4, (R[2, 1] - R[1, 2]) / 4]
    elif i == 1:
        q = [(R[0, 1] + R[1, 0]) / 4, big**2, (R[1, 2] + R[2, 1]) / 4, (R[0, 2] - R[2, 0]) / 4]
    else:
        q = [(R[0, 2] + R[2, 0]) / 4, (R[1, 2] + R[2, 1]) / 4, big**2, (R[1, 0] - R[0, 1]) / 4]
    x, y, z, w = (value / big for value in q)
    return (-x, -y, -z, -w) if w < 0 else (x, y, z, w)


def _quaternion_to_rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def check_pose(pose: np.ndarray) -> np.ndarray:
    """`pose` as a 4x4 float64 rigid transform; ValueError unless it is one (finite, last row
    0 0 0 1, rotation orthonormal with determinant +1 to 1e-6)."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise ValueError(f"a pose is a finite 4x4 transform, got shape {pose.shape}")
    R = pose[:3, :3]
    if not np.array_equal(pose[3], [0, 0, 0, 1]) or np.abs(R.T @ R - np.eye(3)).max() > 1e-6 or np.linalg.det(R) < 0:
        raise ValueError("a pose is a rigid transform: rotation orthonormal with determinant +1, last row 0 0 0 1")
    return pose


def make_pose_msg(pose: np.ndarray, stamp_ns: int, frame_id: str = WORLD_FRAME) -> Any:
    """geometry_msgs/PoseStamped of a 4x4 camera-to-world transform: the camera's position and
    orientation expressed in `frame_id` (the fixed world frame). ValueError for a non-rigid pose."""
    pose = check_pose(pose)
    ts = typestore()
    position = ts.types["geometry_msgs/msg/Point"](*map(float, pose[:3, 3]))
    orientation = ts.types["geometry_msgs/msg/Quaternion"](*map(float, _rotation_to_quaternion(pose[:3, :3])))
    return ts.types[POSE_STAMPED](
        header=make_header(stamp_ns, frame_id),
        pose=ts.types["geometry_msgs/msg/Pose"](position=position, orientation=orientation),
    )


def decode_pose(msg: Any) -> np.ndarray:
    """The 4x4 float64 transform of a PoseStamped (`make_pose_msg`'s inverse). A non-finite field
    or an orientation that is not a unit quaternion (to 1e-3) is a BagError."""
    p, q = msg.pose.position, msg.pose.orientation
    values = np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)
    if not np.isfinite(values).all():
        raise BagError(f"pose at stamp {stamp_to_ns(msg.header)} has a non-finite field")
    norm = float(np.linalg.norm(values[3:]))
    if abs(norm - 1) > 1e-3:
        raise BagError(f"pose at stamp {stamp_to_ns(msg.header)}: orientation is not a unit quaternion (norm {norm})")
    pose = np.eye(4)
    pose[:3, :3] = _quaternion_to_rotation(*(values[3:] / norm))
    pose[:3, 3] = values[:3]
    return pose


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
    """The BagFrame of one frame's messages (role -> message: image, camera_info, maybe depth and
    pose)."""
    info = parts["camera_info"]
    rgb = decode_rgb(parts["image"])
    pose = decode_pose(parts["pose"]) if "pose" in parts else None
    try:
        depth = decode_depth_msg(parts["depth"]) if "depth" in parts else None
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
        pose=pose,
    )
