"""Depth to a viewable RGB picture, shared by the node, `predict` and the reports."""

from __future__ import annotations

import cv2
import numpy as np


def colorize(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map metric depth (HxW, NaN = invalid) to an RGB uint8 image with the turbo colormap.

    Near is red, far is blue. `vmin`/`vmax` fix the range (stable colours across frames); left as
    None they follow the frame's own finite range. Invalid pixels are black, never a colour that
    could be read as a depth.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"colorize expects an HxW depth map, got shape {depth.shape}")
    finite = np.isfinite(depth)
    if vmin is None or vmax is None:
        values = depth[finite]
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = max(float(vmax) - float(vmin), 1e-6)
    scaled = np.clip((float(vmax) - np.where(finite, depth, vmax)) / span, 0.0, 1.0)
    rgb = cv2.applyColorMap((scaled * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    rgb = np.ascontiguousarray(rgb)
    rgb[~finite] = 0
    return rgb
