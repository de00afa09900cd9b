"""Organized `sensor_msgs/PointCloud2` from a metric depth image, in pure numpy.

Layout is the one RViz, PCL and depth_image_proc consumers expect: x, y, z FLOAT32 at 0/4/8 with
point_step 16, or with colour a packed `rgb` FLOAT32 at 16 (bytes b, g, r, 0 of a little-endian
word) with point_step 32; little-endian; organized (ceil(H/stride) x ceil(W/stride)), NaN for
invalid points, is_dense false. Point (row i, col j) is depth pixel (u, v) = (j*stride, i*stride)
back-projected in the optical frame: x = (u - cx) z / fx, y = (v - cy) z / fy, z = depth.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np

from zoedepth_ros.camera_info import Intrinsics

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32


@dataclass(frozen=True)
class CloudField:
    name: str
    offset: int
    datatype: int
    count: int = 1


XYZ_FIELDS = (CloudField("x", 0, FLOAT32), CloudField("y", 4, FLOAT32), CloudField("z", 8, FLOAT32))
XYZRGB_FIELDS = XYZ_FIELDS + (CloudField("rgb", 16, FLOAT32),)


@dataclass(frozen=True)
class CloudData:
    """A built cloud: its bytes (a snapshot, safe to keep) and the PointCloud2 layout they follow.
    The bytes are an array.array('B'), the type of PointCloud2.data (one memcpy into the message)."""

    data: array.array
    height: int
    width: int
    point_step: int
    row_step: int
    fields: tuple[CloudField, ...]


class CloudBuilder:
    """Builds clouds frame after frame, reusing ray tables and the output buffer.

    Ray tables are cached per (image size, intrinsics, stride) and the float buffer per cloud
    shape, so a steady camera costs three multiplies and one copy per frame. Not thread-safe:
    use one builder per thread.
    """

    def __init__(self) -> None:
        self._rays_key: tuple | None = None
        self._rays: tuple[np.ndarray, np.ndarray] | None = None
        self._buffer: np.ndarray | None = None

    def _ray_tables(self, intrinsics: Intrinsics, stride: int) -> tuple[np.ndarray, np.ndarray]:
        key = (intrinsics, stride)
        if key != self._rays_key:
            u = np.arange(0, intrinsics.width, stride, dtype=np.float64)
            v = np.arange(0, intrinsics.height, stride, dtype=np.float64)
            fx, fy, cx, cy = intrinsics.pinhole
            ray_x = ((u - cx) / fx).astype(np.float32)[None, :]
            ray_y = ((v - cy) / fy).astype(np.float32)[:, None]
            self._rays_key, self._rays = key, (ray_x, ray_y)
        return self._rays

    def _output(self, height: int, width: int, floats_per_point: int) -> np.ndarray:
        shape = (height, width, floats_per_point)
        if self._buffer is None or self._buffer.shape != shape:
            # Zeroed once: the padding words after xyz (and rgb's unused byte) stay 0 forever.
            self._buffer = np.zeros(shape, dtype="<f4")
        return self._buffer

    def build(
        self,
        depth: np.ndarray,
        intrinsics: Intrinsics,
        stride: int = 1,
        rgb: np.ndarray | None = None,
    ) -> CloudData:
        """Cloud of `depth` (HxW float32 metres; NaN/inf invalid), optionally coloured by `rgb`
        (HxWx3 uint8 RGB). `intrinsics` must describe the depth image's resolution."""
        if depth.ndim != 2:
            raise ValueError(f"depth must be HxW, got shape {depth.shape}")
        if depth.shape != (intrinsics.height, intrinsics.width):
            raise ValueError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height} images, "
                f"depth is {depth.shape[1]}x{depth.shape[0]}"
            )
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if rgb is not None and rgb.shape != depth.shape + (3,):
            raise ValueError(f"rgb must be {depth.shape + (3,)} uint8, got {rgb.shape}")

        ray_x, ray_y = self._ray_tables(intrinsics, stride)
        z = depth[::stride, ::stride]
        fields = XYZ_FIELDS if rgb is None else XYZRGB_FIELDS
        out = self._output(z.shape[0], z.shape[1], 4 if rgb is None else 8)
        np.copyto(out[..., 2], z)
        # inf (REP 118: too close / no return) is not a point either.
        out[..., 2][~np.isfinite(out[..., 2])] = np.nan
        np.multiply(out[..., 2], ray_x, out=out[..., 0])
        np.multiply(out[..., 2], ray_y, out=out[..., 1])
        if rgb is not None:
            colour = out.view(np.uint8).reshape(out.shape[:2] + (out.shape[2] * 4,))
            sampled = rgb[::stride, ::stride]
            colour[..., 16] = sampled[..., 2]
            colour[..., 17] = sampled[..., 1]
            colour[..., 18] = sampled[..., 0]

        point_step = out.shape[2] * 4
        data = array.array("B")
        data.frombytes(out.reshape(-1).view(np.uint8))  # the one copy out of the reused buffer
        return CloudData(data, out.shape[0], out.shape[1], point_step, out.shape[1] * point_step, fields)


def to_pointcloud2(cloud: CloudData, header):
    """The `sensor_msgs/PointCloud2` message for `cloud`, stamped with `header`."""
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = cloud.height, cloud.width
    msg.fields = [
        PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in cloud.fields
    ]
    msg.is_bigendian = False
    msg.point_step, msg.row_step = cloud.point_step, cloud.row_step
    # An array.array('B') is the field's own type: one memcpy (a numpy array would be copied
    # element by element).
    msg.data = cloud.data
    msg.is_dense = False
    return msg
