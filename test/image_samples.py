"""Test images in every sensor_msgs encoding, built independently of the decoder under test.

Shared by the codec tests and the camera process of the node tests (test/publisher_proc.py).
"""

from __future__ import annotations

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


def yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """(H, W, 2) bytes of `rgb` in YUV 4:2:2, `order` "uyvy" or "yuyv" (YUY2).

    BT.601 video range, as OpenCV's YUV 4:2:2 conversions; chroma is the mean of each pixel
    pair. Written out here because OpenCV 4.6 (Ubuntu 24.04's) has only the decoding direction.
    """
    x = rgb.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u = np.repeat((u[:, 0::2] + u[:, 1::2]) / 2, 2, axis=1)
    v = np.repeat((v[:, 0::2] + v[:, 1::2]) / 2, 2, axis=1)
    chroma = np.where(np.arange(rgb.shape[1]) % 2 == 0, u, v)  # U on even pixels, V on odd
    planes = (chroma, y) if order == "uyvy" else (y, chroma)
    return np.clip(np.round(np.stack(planes, axis=-1)), 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Pixels of `rgb` in `encoding` (mono takes the red channel; 16-bit values are v * 257)."""
    gray = rgb[..., 0]
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    # OpenCV's own channel orders under sensor_msgs' generic names (cv_bridge without an encoding)
    encoding = {"8UC3": "bgr8", "8UC4": "bgra8"}.get(encoding, encoding)
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
            "uyvy": yuv422(rgb, "uyvy"),
            "yuv422": yuv422(rgb, "uyvy"),
            "yuyv": yuv422(rgb, "yuyv"),
            "yuv422_yuy2": yuv422(rgb, "yuyv"),
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
