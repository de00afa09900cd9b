"""Depth to a viewable RGB picture, shared by the node, `predict` and the reports."""

from __future__ import annotations

import functools

import cv2
import numpy as np


@functools.cache
def _turbo_rgb_table() -> np.ndarray:
    """256x1x3 colour table for cv2.applyColorMap: turbo in RGB order (the table's channel order is
    the output's, so no BGR->RGB pass per frame), with entry 0 black for invalid pixels."""
    turbo_bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)
    table = np.ascontiguousarray(turbo_bgr[..., ::-1])
    table[0] = 0
    return table


def colorize(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map metric depth (HxW, NaN = invalid) to an RGB uint8 image with the turbo colormap.

    Near is red, far is blue. `vmin`/`vmax` fix the range (stable colours across frames); left as
    None they follow the frame's own finite range. Invalid pixels are black, never a colour that
    could be read as a depth. A few whole-image passes in OpenCV (~1 ms at 640x480): the node
    colours every frame.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"colorize expects an HxW depth map, got shape {depth.shape}")
    finite = np.isfinite(depth)
    if vmin is None or vmax is None:
        lo, hi = cv2.minMaxLoc(depth, finite.view(np.uint8))[:2] if finite.any() else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = max(float(vmax) - float(vmin), 1e-6)
    # Table index 255 at vmin .. 1 at vmax, rounded and saturated in one pass (non-finite -> 0);
    # beyond vmax saturates to 0 too and is lifted to 1, the farthest colour; invalid -> 0, black.
    index = cv2.addWeighted(depth, -254.0 / span, depth, 0.0, 1.0 + 254.0 * float(vmax) / span, dtype=cv2.CV_8U)
    np.maximum(index, 1, out=index)
    index[~finite] = 0
    return cv2.applyColorMap(index, _turbo_rgb_table())
