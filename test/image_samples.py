"""Test images in every sensor_msgs encoding, built independently of the decoder under test.

Shared by the codec tests and the camera process of the node tests (test/publisher_proc.py).
"""

from __future__ import annotations

import cv2
import numpy as np


def block_image(height: int, width: int, seed: int = 0, block: int = 8) -> np.ndarray:
    """RGB image of solid `block`-pixel squares: demosaicing is exact away from square edges."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(-(-height // block), -(-width // block), 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)[:height, :width])


def mosaic(rgb: np.ndarray, order: str) -> np.ndarray:
    """Bayer mosaic of `rgb`; `order` names the colours of the top-left 2x2 cell, row by row."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for i, c in enumerate(order):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[c]]
    return out


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Pixels of `rgb` in `encoding` (mono takes the red channel; 16-bit values are v * 257)."""
    gray = rgb[..., 0]
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    base = encoding[:-2] if encoding.endswith("16") else encoding[:-1] if encoding.endswith("8") else encoding
    if base.startswith("bayer_"):
        pixels = mosaic(rgb, base[len("bayer_"):])
    else:
        pixels = {
            "rgb": rgb,
            "bgr": rgb[..., ::-1],
            "rgba": np.concatenate([rgb, alpha], axis=2),
            "bgra": np.concatenate([rgb[..., ::-1], alpha], axis=2),
            "mono": gray,
            "uyvy": cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY),
            "yuv422": cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY),
            "yuyv": cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2),
            "yuv422_yuy2": cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2),
            "32FC1": gray.astype(np.float32),  # a depth image: not a camera image, to be rejected
        }[base]
    if encoding.endswith("16"):
        pixels = pixels.astype(np.uint16) * 257  # 8-bit v comes back as exactly v after 16 -> 8 bits
    return np.ascontiguousarray(pixels)


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """What decoding `encode(rgb, encoding)` should give back, before demosaic/YUV rounding."""
    return np.repeat(rgb[..., :1], 3, axis=2) if encoding.startswith("mono") else rgb


def pack(pixels: np.ndarray, padding: int = 0, bigendian: bool = False) -> tuple[int, bytes]:
    """(step, data) of an Image holding `pixels` with `padding` junk bytes after every row."""
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if bigendian else "<u2")
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], padding), 0xAB, np.uint8)], axis=1)
    return padded.shape[1], padded.tobytes()
