"""Depth image encodings without ROS: metric depth to and from the pixels of 32FC1 (metres) and
16UC1 (millimetres, REP 118) images. The node's `depth/image_mm` and `zoedepth-ros predict`'s PNGs
are `depth_to_mm16`; evaluation bags store ground truth with `encode_depth` and read it back with
`decode_depth`; recorded or live predictions are read with `decode_prediction`. Messages are taken
by their fields (`encoding`, `height`, `width`, `step`, `is_bigendian`, `data`), so rclpy and
rosbags messages alike."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from zoedepth_ros.errors import ZoeDepthError

DepthEncoding = Literal["32FC1", "16UC1"]
MAX_16UC1_DEPTH_M = 65.535
_DEPTH_DTYPES = {"32FC1": np.dtype(np.float32), "16UC1": np.dtype(np.uint16)}


class DepthDecodeError(ZoeDepthError):
    """A depth image whose pixels cannot be read (encoding, step or size); the message says why."""


def depth_to_mm16(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres, 0 where invalid (non-finite, <= 0) or beyond 65.535 m."""
    mm = np.where(np.isfinite(depth) & (depth > 0), np.rint(depth * 1000.0), 0.0)
    return np.where(mm > 65535, 0, mm).astype(np.uint16)


def encode_depth(depth: np.ndarray, encoding: DepthEncoding) -> np.ndarray:
    """Metres (NaN, inf, <= 0 invalid) to the array of a 32FC1 or 16UC1 ground-truth image; 16UC1
    millimetres are rounded in float64, and a warning says when pixels lie beyond its range."""
    depth = np.asarray(depth, dtype=np.float32)
    if encoding == "32FC1":
        # REP 118: a float 0.0 is a valid point at the camera origin, so invalid is NaN.
        valid = np.isfinite(depth) & (depth > 0)
        return np.where(valid, depth, np.float32(np.nan)).astype(np.float32)
    if encoding == "16UC1":
        metres = depth.astype(np.float64)
        if np.any(np.isfinite(metres) & (np.rint(metres * 1000.0) > 65535)):
            warnings.warn(
                f"16UC1 ground truth holds at most {MAX_16UC1_DEPTH_M} m; deeper pixels are written as invalid",
                stacklevel=3,
            )
        return depth_to_mm16(metres)
    raise ValueError(f"gt_encoding must be '32FC1' or '16UC1', not {encoding!r}")


def depth_pixels(msg: Any) -> np.ndarray:
    """HxW array of a 32FC1 (float32) or 16UC1 (uint16) Image, honouring `step` row padding and
    `is_bigendian`; DepthDecodeError for another encoding or too few bytes."""
    dtype = _DEPTH_DTYPES.get(msg.encoding)
    if dtype is None:
        raise DepthDecodeError(f"unsupported depth encoding {msg.encoding!r} (32FC1 or 16UC1)")
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * dtype.itemsize
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if step < row_bytes or buf.size < step * height:
        raise DepthDecodeError(
            f"{msg.encoding} image {width}x{height}: step {step} and {buf.size} data bytes "
            f"do not hold {row_bytes}-byte rows"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(dtype.newbyteorder("="))


def decode_depth(msg: Any) -> np.ndarray:
    """HxW float32 metres of ground truth from a 32FC1 (metres) or 16UC1 (millimetres) Image;
    everything that is not a positive finite depth (NaN, +-inf, 0) becomes NaN."""
    depth = depth_pixels(msg)
    if msg.encoding == "32FC1":
        return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan)).astype(np.float32)
    return np.where(depth > 0, depth.astype(np.float32) / np.float32(1000.0), np.float32(np.nan))


def decode_prediction(msg: Any) -> np.ndarray:
    """HxW float32 metres of a predicted 32FC1 or 16UC1 depth image (a bag's or a live node's), for
    scoring.

    32FC1 values are kept as they are, so that the scorer treats them as the official code does
    (NaN and -inf -> the protocol minimum, +inf -> its maximum); `decode_depth`, made for GT,
    would turn +inf ("out of range", REP 118) into NaN and so into the minimum.
    """
    if msg.encoding == "32FC1":
        return depth_pixels(msg)
    return decode_depth(msg)
