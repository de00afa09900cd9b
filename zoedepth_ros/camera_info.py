"""Pinhole intrinsics for the depth image, from a `sensor_msgs/CameraInfo`.

Follows what `depth_image_proc` and `image_geometry` do: fx, fy, cx, cy come from P (K when P is
all zero); binning and ROI map the calibrated resolution onto the published image (x_offset and
y_offset first, then division by the binning factors); a camera_info whose resolution simply
differs from the image (an upstream resize that left it alone) is scaled by width and height ratios
(fx, cx by sx; fy, cy by sy), as image_proc's resize does.

Functions take the message duck-typed (fields `width`, `height`, `k`, `p`, `d`, `r`,
`distortion_model`, `binning_x`, `binning_y`, `roi`) so they are testable without rclpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoedepth_ros.errors import RejectedMessage


class CameraInfoError(RejectedMessage):
    """A camera_info that cannot describe the image."""


@dataclass(frozen=True)
class Intrinsics:
    """Calibration of one image resolution: K (3x3) and P (3x4), row-major, both filled."""

    width: int
    height: int
    k: tuple[float, ...]
    p: tuple[float, ...]

    @property
    def pinhole(self) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy of P: the rectified image's, the ones depth is published and projected in."""
        return self.p[0], self.p[5], self.p[2], self.p[6]


def _pinhole_k(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _make(width: int, height: int, k: np.ndarray, p: np.ndarray) -> Intrinsics:
    return Intrinsics(
        width, height, tuple(float(v) for v in k.ravel()), tuple(float(v) for v in p.ravel())
    )


@dataclass(frozen=True)
class _Calibration:
    """What a camera_info says about its camera, whatever the image: K and P filled, ROI, binning."""

    k: np.ndarray
    p: np.ndarray
    x_off: int
    y_off: int
    roi_w: int
    roi_h: int
    bin_x: int
    bin_y: int
    full_frame: bool

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the images this calibration describes after ROI and binning."""
        return self.roi_w // self.bin_x, self.roi_h // self.bin_y


_NON_FINITE_REASONS = {"k": "bad_intrinsics", "p": "bad_intrinsics", "d": "bad_distortion", "r": "bad_rectification"}


def _calibration(info) -> _Calibration:
    for field, reason in _NON_FINITE_REASONS.items():
        values = np.asarray(getattr(info, field), dtype=np.float64)
        if not np.isfinite(values).all():
            raise CameraInfoError(
                reason, f"camera_info {field.upper()} has non-finite values: every entry must be finite"
            )
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    p = np.asarray(info.p, dtype=np.float64).reshape(3, 4)
    if not p.any() and not k.any():
        raise CameraInfoError(
            "uncalibrated", "camera_info has all-zero K and P: the camera is not calibrated"
        )
    if not p.any():
        p = np.hstack([k, np.zeros((3, 1))])
    elif not k.any():
        k = p[:, :3].copy()
    fx, fy, cx, cy = p[0, 0], p[1, 1], p[0, 2], p[1, 2]
    if not (fx > 0 and fy > 0):
        raise CameraInfoError(
            "bad_intrinsics",
            f"camera_info intrinsics are invalid (fx={fx}, fy={fy}, cx={cx}, cy={cy}): "
            "fx and fy must be positive and all finite",
        )
    if info.width == 0 or info.height == 0:
        raise CameraInfoError(
            "no_resolution",
            f"camera_info is {info.width}x{info.height}: cannot tell which resolution its "
            "intrinsics are for",
        )

    roi = info.roi
    full_frame = roi.x_offset == 0 and roi.y_offset == 0 and roi.width == 0 and roi.height == 0
    x_off, y_off = (0, 0) if full_frame else (roi.x_offset, roi.y_offset)
    roi_w, roi_h = (info.width, info.height) if full_frame else (roi.width, roi.height)
    if roi_w == 0 or roi_h == 0 or x_off + roi_w > info.width or y_off + roi_h > info.height:
        raise CameraInfoError(
            "bad_roi",
            f"camera_info ROI {roi_w}x{roi_h}+{x_off}+{y_off} does not fit its "
            f"{info.width}x{info.height} calibration",
        )
    # Binning 0 means 1, as in image_geometry.
    bin_x, bin_y = max(int(info.binning_x), 1), max(int(info.binning_y), 1)
    calibration = _Calibration(k, p, x_off, y_off, roi_w, roi_h, bin_x, bin_y, full_frame)
    if 0 in calibration.image_size:
        raise CameraInfoError(
            "bad_binning",
            f"camera_info binning {bin_x}x{bin_y} of its {roi_w}x{roi_h} ROI leaves no pixel",
        )
    return calibration


def check_camera_info(info) -> None:
    """Raise CameraInfoError when `info` is unusable whatever image it comes with.

    Checks everything `intrinsics_from_camera_info` checks except the match with the image size:
    cheap enough to run on every message as it arrives.
    """
    _calibration(info)


def intrinsics_from_camera_info(info, image_width: int, image_height: int) -> Intrinsics:
    """Intrinsics of an `image_width` x `image_height` image described by `info`.

    Raises CameraInfoError when the camera_info is uncalibrated or malformed, or when its
    binning/ROI produce a resolution other than the image's.
    """
    c = _calibration(info)
    binned_w, binned_h = c.image_size
    uses_binning_or_roi = not c.full_frame or c.bin_x > 1 or c.bin_y > 1
    if uses_binning_or_roi and (binned_w, binned_h) != (image_width, image_height):
        raise CameraInfoError(
            "size_mismatch",
            f"camera_info binning {c.bin_x}x{c.bin_y} and ROI {c.roi_w}x{c.roi_h}+{c.x_off}+{c.y_off} give "
            f"{binned_w}x{binned_h} images, but the image is {image_width}x{image_height}",
        )

    sx, sy = image_width / binned_w, image_height / binned_h
    # Maps calibrated pixel coordinates onto image pixel coordinates.
    to_image = np.array(
        [[sx / c.bin_x, 0.0, -sx * c.x_off / c.bin_x], [0.0, sy / c.bin_y, -sy * c.y_off / c.bin_y], [0.0, 0.0, 1.0]]
    )
    return _make(image_width, image_height, to_image @ c.k, to_image @ c.p)


def pinhole_from_hfov(width: int, height: int, hfov_deg: float) -> Intrinsics:
    """A guessed pinhole camera with square pixels and the principal point at the image centre."""
    if not 0.0 < hfov_deg < 180.0:
        raise CameraInfoError("bad_fov", f"horizontal field of view {hfov_deg} deg is not in (0, 180)")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    # Pixel centres sit at integer coordinates (ROS convention), so the centre is (W-1)/2.
    k = _pinhole_k(f, f, (width - 1) / 2.0, (height - 1) / 2.0)
    return _make(width, height, k, np.hstack([k, np.zeros((3, 1))]))


def depth_camera_info(intrinsics: Intrinsics, header, source=None):
    """The `sensor_msgs/CameraInfo` to publish next to the depth image.

    Size, K and P describe the depth image; distortion and R are copied from `source` (the input
    camera_info; plumb_bob with zero distortion when None, i.e. a guessed pinhole). Binning and
    ROI are already folded into K and P, so they are cleared.
    """
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header = header
    msg.width, msg.height = intrinsics.width, intrinsics.height
    msg.k, msg.p = list(intrinsics.k), list(intrinsics.p)
    if source is None:
        msg.distortion_model = "plumb_bob"
        msg.d = [0.0] * 5
        msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    else:
        msg.distortion_model = source.distortion_model
        msg.d = list(source.d)
        msg.r = list(source.r)
    return msg
