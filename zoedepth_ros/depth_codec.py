"""Depth image encodings without ROS: metric depth as the 16-bit millimetre images that
`depth/image_mm` publishes and `zoedepth-ros predict` writes as PNG."""

from __future__ import annotations

import numpy as np


def depth_to_mm16(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres, 0 where invalid (non-finite, <= 0) or beyond 65.535 m."""
    mm = np.where(np.isfinite(depth) & (depth > 0), np.rint(depth * 1000.0), 0.0)
    return np.where(mm > 65535, 0, mm).astype(np.uint16)
