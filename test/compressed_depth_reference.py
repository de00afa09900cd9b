"""A second reading of image_transport's compressedDepth format, written for the tests from the
plugin's published format (compressed_depth_image_transport: codec.cpp, rvl_codec.cpp,
compression_common.h) and sharing no code with `zoedepth_ros.compressed_depth`: the tests hold
the project's encoder and the node's messages to it.

The error bound: a depth d (0 < d < depth_max) is stored as q = trunc(A / d + B), A = Q (Q + 1),
B = 1 - A / depth_max, and read back as d' = A / (q - B). From A/d + B - 1 < q <= A/d + B follows
0 <= d' - d < d^2 / (A - d). The float32 arithmetic of both ends moves q by at most 2^-8 (the
float32 spacing below 65536) and d' by a few ulp, hence `FLOAT_SLACK` and the 1e-6 d term.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

FLOAT_SLACK = 2.0**-7


def plugin_params(depth_max: float, quantization: float) -> tuple[np.float32, np.float32]:
    """codec.cpp: depthQuantA = depthZ0 * (depthZ0 + 1.0f); depthQuantB = 1.0f - depthQuantA / depthMax."""
    z0 = np.float32(quantization)
    a = np.float32(z0 * (z0 + np.float32(1.0)))
    return a, np.float32(np.float32(1.0) - a / np.float32(depth_max))


def plugin_quantize_pixel(d: float, depth_max: float, quantization: float) -> int:
    """One pixel as codec.cpp quantizes it, pixel by pixel in float32; where C++ leaves the
    float-to-uint16 conversion undefined (d <= 0, and values past 65535), the project's documented
    choice: 0 for d <= 0, 65535 for depth nearer than the nearest representable one."""
    a, b = plugin_params(depth_max, quantization)
    d = np.float32(d)
    if not d < np.float32(depth_max):  # NaN, +inf and depth at or beyond the maximum
        return 0
    if not d > 0:
        return 0
    value = np.float32(a / d) + b
    return 65535 if value >= 65535 else int(value)  # C++ truncates toward zero


def error_bounds(depth: np.ndarray, quantization: float) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) allowed decoded-minus-true depth for each valid pixel."""
    d = depth.astype(np.float64)
    a = quantization * (quantization + 1.0)
    high = d * d * (1 + FLOAT_SLACK) / (a - d * (1 + FLOAT_SLACK)) + 1e-6 * d
    low = -(d * d * FLOAT_SLACK / a + 1e-6 * d)
    return low, high


def rvl_decompress(words: bytes, num_pixels: int) -> np.ndarray:
    """rvl_codec.cpp's DecompressRVL, one nibble at a time."""
    stream = struct.unpack(f"<{len(words) // 4}I", words[: len(words) // 4 * 4])
    state = {"word": 0, "left": 0, "next": 0}

    def vle() -> int:
        value, shift = 0, 0
        while True:
            if state["left"] == 0:
                state["word"] = stream[state["next"]]
                state["next"] += 1
                state["left"] = 8
            nibble = state["word"] >> 28
            state["word"] = (state["word"] << 4) & 0xFFFFFFFF
            state["left"] -= 1
            value |= (nibble & 7) << shift
            shift += 3
            if not nibble & 8:
                return value

    out, previous = [], 0
    while len(out) < num_pixels:
        zeros = vle()
        out.extend([0] * zeros)
        for _ in range(vle()):
            positive = vle()
            previous = (previous + ((positive >> 1) ^ -(positive & 1))) & 0xFFFF
            out.append(previous)
    assert len(out) == num_pixels, "RVL runs past the image"
    return np.array(out, dtype=np.uint16)


def rvl_compress(pixels: np.ndarray) -> bytes:
    """rvl_codec.cpp's CompressRVL, one pixel at a time."""
    words: list[int] = []
    state = {"word": 0, "nibbles": 0}

    def vle(value: int) -> None:
        while True:
            nibble = value & 7
            value >>= 3
            if value:
                nibble |= 8
            state["word"] = ((state["word"] << 4) | nibble) & 0xFFFFFFFF
            state["nibbles"] += 1
            if state["nibbles"] == 8:
                words.append(state["word"])
                state["word"] = state["nibbles"] = 0
            if not value:
                return

    flat = [int(v) for v in np.asarray(pixels).reshape(-1)]
    i, previous = 0, 0
    while i < len(flat):
        zeros = 0
        while i < len(flat) and flat[i] == 0:
            zeros, i = zeros + 1, i + 1
        vle(zeros)
        nonzeros = 0
        while i + nonzeros < len(flat) and flat[i + nonzeros] != 0:
            nonzeros += 1
        vle(nonzeros)
        for _ in range(nonzeros):
            delta = flat[i] - previous
            vle(((delta << 1) ^ (delta >> 31)) & 0xFFFFFFFF)
            previous, i = flat[i], i + 1
    if state["nibbles"]:
        words.append((state["word"] << 4 * (8 - state["nibbles"])) & 0xFFFFFFFF)
    return struct.pack(f"<{len(words)}I", *words)


def reference_decode(fmt: str, data: bytes) -> np.ndarray:
    """HxW float32 metres of a "32FC1; compressedDepth png|rvl" message, as codec.cpp decodes it:
    the 12-byte ConfigHeader (int32 format, float32 A, float32 B), then the PNG (cv::imdecode,
    IMREAD_UNCHANGED) or uint32 cols, uint32 rows and the RVL words; q = 0 -> NaN, else A / (q - B)."""
    assert fmt in ("32FC1; compressedDepth png", "32FC1; compressedDepth rvl"), fmt
    data = bytes(data)
    kind, a, b = struct.unpack("<iff", data[:12])
    assert kind == 0  # INV_DEPTH
    payload = data[12:]
    if fmt.endswith("png"):
        inverse = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        assert inverse.dtype == np.uint16 and inverse.ndim == 2
    else:
        cols, rows = struct.unpack("<II", payload[:8])
        inverse = rvl_decompress(payload[8:], cols * rows).reshape(rows, cols)
    a32, b32 = np.float32(a), np.float32(b)
    out = np.full(inverse.shape, np.nan, dtype=np.float32)
    valid = inverse != 0
    out[valid] = a32 / (inverse[valid].astype(np.float32) - b32)
    return out
