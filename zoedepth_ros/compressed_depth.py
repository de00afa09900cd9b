"""image_transport's `compressedDepth` format (the compressed_depth_image_transport plugin) without
ROS: pure numpy, OpenCV for the PNG. What the node publishes on `depth/image/compressedDepth`,
what `evaluate --pred-topic .../compressedDepth` and evaluation bags with compressedDepth ground
truth read back.

A message's `format` is "<encoding>; compressedDepth png" or "...rvl", its `data` a 12-byte
header (little-endian, the plugin's `ConfigHeader` as x86 and ARM lay it out: int32 format 0 =
inverse depth, float32 depthQuantA, float32 depthQuantB) and then the payload: a 16-bit grey PNG,
or for RVL the uint32 columns and rows followed by the RVL words (run lengths of zeros and
non-zeros, zig-zag deltas of the non-zeros, 3-bit variable-length nibbles packed eight to a
little-endian 32-bit word, the first nibble in the word's top bits).

32FC1 depth d (metres) is stored as the uint16 inverse depth q = trunc(A / d + B), with
A = Q (Q + 1) (Q = `quantization`) and B = 1 - A / depth_max, every step in float32 as the plugin
computes it, and read back as A / (q - B); q = 0 is invalid (NaN). The plugin stores NaN and depth
at or beyond depth_max as 0. Where its C++ float-to-uint16 conversion is undefined this module
chooses: depth <= 0 (0.0, negative, -inf) is 0 (what x86 builds give for 0.0), and depth nearer
than the nearest representable one, A / (65535 - B), saturates to 65535 (x86 builds wrap around
to a wrong far depth), so a near obstacle stays near. The decoded depth d' of a valid pixel obeys
0 <= d' - d < d^2 / (A - d) (`quantization_error_bound`), up to float32 rounding.
16UC1 messages (millimetres, no quantization) are decoded too.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO, Literal

import cv2
import numpy as np

from zoedepth_ros.depth_codec import DepthDecodeError
from zoedepth_ros.errors import RejectedMessage
from zoedepth_ros.image_codec import ImageDecodeError, check_compressed

CompressedDepthFormat = Literal["png", "rvl"]
FORMATS: tuple[str, ...] = ("png", "rvl")
TRANSPORT = "compressedDepth"
# The plugin's defaults (compressed_depth_publisher.cpp: kDefaultPngLevel, kDefaultDepthMax,
# KDefaultDepthQuantization).
DEFAULT_DEPTH_MAX = 10.0
DEFAULT_QUANTIZATION = 100.0
DEFAULT_PNG_LEVEL = 9
HEADER = struct.Struct("<iff")  # ConfigHeader: compressionFormat (INV_DEPTH = 0), depthParam[2]
INV_DEPTH = 0
_RVL_SIZE = struct.Struct("<II")  # cols, rows before the RVL words
# The plugin refuses an RVL image of more pixels than 5 per payload byte (RVL compresses at most
# about 4x) and more than INT_MAX: a corrupt size would otherwise allocate gigabytes.
_RVL_PIXELS_PER_BYTE = 5
_INT_MAX = 2**31 - 1
_VLE_MAX_NIBBLES = 10  # 30 bits: the plugin's decoder shifts by a negative amount past that


class CompressedDepthError(DepthDecodeError, RejectedMessage):
    """A compressedDepth message that cannot be decoded; its reasons: bad_format, short_header,
    bad_header, bad_png, bad_rvl, size_mismatch."""


def quantization_params(depth_max: float, quantization: float) -> tuple[np.float32, np.float32]:
    """(depthQuantA, depthQuantB) in float32, as the plugin computes them."""
    if not (math.isfinite(depth_max) and depth_max > 0):
        raise ValueError(f"compressedDepth depth_max must be a positive number of metres, not {depth_max}")
    if not (math.isfinite(quantization) and quantization > 0):
        raise ValueError(f"compressedDepth quantization must be positive, not {quantization}")
    z0 = np.float32(quantization)
    a = z0 * (z0 + np.float32(1.0))
    b = np.float32(1.0) - a / np.float32(depth_max)
    return np.float32(a), np.float32(b)


def nearest_depth(depth_max: float, quantization: float) -> float:
    """The nearest depth (metres) the inverse depth reaches, A / (65535 - B); nearer saturates."""
    a, b = quantization_params(depth_max, quantization)
    return float(a) / (65535.0 - float(b))


def quantization_error_bound(depth: np.ndarray | float, quantization: float) -> np.ndarray | float:
    """d^2 / (A - d): the decoded depth of a valid pixel at depth d lies in [d, d + bound) (before
    float32 rounding); for d << A about d^2 / (Q (Q + 1)). It does not depend on depth_max."""
    a = quantization * (quantization + 1.0)
    return np.square(depth) / (a - np.asarray(depth, dtype=np.float64))


def quantize(depth: np.ndarray, depth_max: float, quantization: float) -> np.ndarray:
    """HxW float32 metres -> HxW uint16 inverse depth, 0 = invalid (see the module docstring)."""
    a, b = quantization_params(depth_max, quantization)
    depth = np.asarray(depth, dtype=np.float32)
    valid = (depth > 0) & (depth < np.float32(depth_max))  # False for NaN
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inverse = a / np.where(valid, depth, np.float32(1.0)) + b  # float32 throughout, as in C++
    inverse = np.minimum(inverse, np.float32(65535.0))
    return np.where(valid, np.trunc(inverse), 0).astype(np.uint16)


def dequantize(inverse: np.ndarray, a: float, b: float) -> np.ndarray:
    """HxW uint16 inverse depth -> float32 metres A / (q - B), NaN where q = 0."""
    a32, b32 = np.float32(a), np.float32(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = a32 / (inverse.astype(np.float32) - b32)
    return np.where(inverse > 0, depth, np.float32(np.nan)).astype(np.float32)


# --- RVL ---------------------------------------------------------------------------------------


def _vle_nibbles(values: np.ndarray) -> np.ndarray:
    """The nibbles of each non-negative value: 3 bits each, least significant first, the top bit
    set on all but a value's last nibble."""
    values = values.astype(np.int64)
    counts = np.ones(values.size, dtype=np.int64)
    rest = values >> 3
    while rest.any():
        counts += rest > 0
        rest >>= 3
    starts = np.cumsum(counts) - counts
    order = np.arange(int(counts.sum())) - np.repeat(starts, counts)
    groups = (np.repeat(values, counts) >> (3 * order)) & 7
    more = order < np.repeat(counts, counts) - 1
    return (groups | (more << 3)).astype(np.uint32)


def rvl_encode(pixels: np.ndarray) -> bytes:
    """The RVL words of a flat uint16 array (the plugin's CompressRVL output)."""
    pixels = np.asarray(pixels, dtype=np.uint16).reshape(-1)
    if pixels.size == 0:
        return b""
    nonzero = pixels != 0
    change = np.flatnonzero(nonzero[1:] != nonzero[:-1]) + 1
    bounds = np.concatenate(([0], change, [pixels.size]))
    lengths = np.diff(bounds)
    if nonzero[0]:  # runs alternate zeros, non-zeros, starting with a (maybe empty) zero run
        lengths = np.concatenate(([0], lengths))
    if lengths.size % 2:
        lengths = np.concatenate((lengths, [0]))
    runs = lengths.reshape(-1, 2)  # (zeros, nonzeros) per step of the plugin's loop
    values = pixels[nonzero].astype(np.int64)
    delta = values - np.concatenate(([0], values[:-1]))  # from the previous non-zero, across zero runs
    zigzag = (delta << 1) ^ (delta >> 63)
    # stream: zeros_0, nonzeros_0, the nonzeros_0 deltas, zeros_1, ...
    heads = 2 * np.arange(len(runs)) + np.concatenate(([0], np.cumsum(runs[:, 1])[:-1]))
    stream = np.empty(2 * len(runs) + values.size, dtype=np.int64)
    is_head = np.zeros(stream.size, dtype=bool)
    is_head[heads] = is_head[heads + 1] = True
    stream[heads], stream[heads + 1] = runs[:, 0], runs[:, 1]
    stream[~is_head] = zigzag
    nibbles = _vle_nibbles(stream)
    nibbles = np.concatenate((nibbles, np.zeros(-nibbles.size % 8, dtype=np.uint32))).reshape(-1, 8)
    words = (nibbles << np.arange(28, -1, -4, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    return words.astype("<u4").tobytes()


def _vle_values(words: bytes) -> np.ndarray:
    """Every complete value in the RVL words (padding nibbles read as zeros, as in the plugin)."""
    data = np.frombuffer(words, dtype=np.uint8)
    data = data[: data.size - data.size % 4].view("<u4").astype(np.uint32)
    nibbles = ((data[:, None] >> np.arange(28, -1, -4, dtype=np.uint32)) & 0xF).reshape(-1)
    ends = np.flatnonzero(nibbles < 8)
    if ends.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _VLE_MAX_NIBBLES:
        raise CompressedDepthError("bad_rvl", f"RVL value of {int(lengths.max())} nibbles: more than 30 bits, corrupt")
    order = np.arange(ends[-1] + 1) - np.repeat(starts, lengths)
    groups = (nibbles[: ends[-1] + 1] & 7).astype(np.int64) << (3 * order)
    return np.add.reduceat(groups, starts)


def rvl_decode(words: bytes, num_pixels: int) -> np.ndarray:
    """`num_pixels` uint16 values from RVL words; CompressedDepthError (bad_rvl) where the words
    hold fewer pixels, or runs past `num_pixels` (the plugin would write past its image)."""
    values = _vle_values(words)
    runs: list[tuple[int, int, int]] = []  # (first pixel, zeros, nonzeros) per step
    position = pixel = 0
    while pixel < num_pixels:
        if position + 2 > values.size:
            raise CompressedDepthError(
                "bad_rvl", f"RVL data ends after {pixel} of the {num_pixels} pixels it claims")
        zeros, nonzeros = int(values[position]), int(values[position + 1])
        if pixel + zeros + nonzeros > num_pixels:
            raise CompressedDepthError(
                "bad_rvl", f"RVL runs reach pixel {pixel + zeros + nonzeros} of a {num_pixels}-pixel image")
        if position + 2 + nonzeros > values.size:
            raise CompressedDepthError(
                "bad_rvl", f"RVL data ends inside a run of {nonzeros} values at pixel {pixel + zeros}")
        runs.append((pixel, zeros, nonzeros))
        position += 2 + nonzeros
        pixel += zeros + nonzeros
    out = np.zeros(num_pixels, dtype=np.uint16)
    if not runs:
        return out
    firsts = np.array([r[0] + r[1] for r in runs], dtype=np.int64)
    counts = np.array([r[2] for r in runs], dtype=np.int64)
    value_starts = 2 * np.arange(len(runs)) + 2 + np.concatenate(([0], np.cumsum(counts)[:-1]))
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    zigzag = values[np.repeat(value_starts, counts) + offsets]
    delta = (zigzag >> 1) ^ -(zigzag & 1)
    out[np.repeat(firsts, counts) + offsets] = (np.cumsum(delta) & 0xFFFF).astype(np.uint16)
    return out


# --- messages ----------------------------------------------------------------------------------


def format_string(fmt: CompressedDepthFormat, encoding: str = "32FC1") -> str:
    """The message `format` the plugin writes: "<encoding>; compressedDepth <fmt>"."""
    return f"{encoding}; {TRANSPORT} {fmt}"


def encode_compressed_depth(depth: np.ndarray, fmt: CompressedDepthFormat = "png", *,
                            depth_max: float = DEFAULT_DEPTH_MAX, quantization: float = DEFAULT_QUANTIZATION,
                            png_level: int = DEFAULT_PNG_LEVEL) -> tuple[str, bytes]:
    """(format, data) of the compressedDepth message of an HxW 32FC1 depth image (metres)."""
    if fmt not in FORMATS:
        raise ValueError(f"compressedDepth format must be png or rvl, not {fmt!r}")
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2 or depth.size == 0:
        raise ValueError(f"compressedDepth encodes a non-empty HxW depth image, got shape {depth.shape}")
    a, b = quantization_params(depth_max, quantization)
    inverse = quantize(depth, depth_max, quantization)
    if fmt == "png":
        if not 0 <= int(png_level) <= 9:
            raise ValueError(f"PNG level must be in [0, 9], not {png_level}")
        ok, png = cv2.imencode(".png", inverse, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
        if not ok:
            raise ValueError(f"OpenCV could not encode a {inverse.shape} 16-bit PNG")
        payload = png.tobytes()
    else:
        rows, cols = inverse.shape
        payload = _RVL_SIZE.pack(cols, rows) + rvl_encode(inverse)
    return format_string(fmt), HEADER.pack(INV_DEPTH, a, b) + payload


def _split_format(fmt: str) -> tuple[str, str]:
    """(image encoding, png | rvl) of a message format, read as the plugin reads it."""
    encoding, sep, ending = fmt.partition(";")
    encoding = encoding.strip()
    if not sep:  # the plugin's oldest messages carry the encoding alone and are PNG
        codec = "png"
    elif f"{TRANSPORT} png" in ending:
        codec = "png"
    elif f"{TRANSPORT} rvl" in ending:
        codec = "rvl"
    elif TRANSPORT in ending and f"{TRANSPORT} " not in ending:
        codec = "png"
    else:
        raise CompressedDepthError("bad_format", f"format {fmt[:60]!r} is not '<encoding>; compressedDepth png|rvl'")
    if encoding not in ("32FC1", "16UC1"):
        raise CompressedDepthError("bad_format", 
                                   f"compressedDepth of {encoding[:20]!r}: only 32FC1 and 16UC1 hold depth")
    return encoding, codec


def _decode_png(payload: bytes, max_pixels: int | None) -> np.ndarray:
    try:
        check_compressed("png", payload, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise CompressedDepthError("bad_png", f"compressedDepth PNG: {exc}") from None
    if payload[24] != 16 or payload[25] != 0:  # IHDR bit depth, colour type
        raise CompressedDepthError(
            "bad_png", f"compressedDepth PNG is {payload[24]}-bit of colour type {payload[25]}, not 16-bit grey")
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16 or image.ndim != 2:
        raise CompressedDepthError("bad_png", f"compressedDepth PNG of {len(payload)} bytes does not decode")
    return image


def _decode_rvl(payload: bytes, max_pixels: int | None) -> np.ndarray:
    if len(payload) < _RVL_SIZE.size:
        raise CompressedDepthError("bad_rvl", f"compressedDepth RVL payload of {len(payload)} bytes has no size")
    cols, rows = _RVL_SIZE.unpack_from(payload)
    pixels = rows * cols
    if pixels == 0 or pixels > _INT_MAX or pixels > _RVL_PIXELS_PER_BYTE * len(payload):
        raise CompressedDepthError(
            "bad_rvl", f"compressedDepth RVL image claims {cols}x{rows} pixels in {len(payload)} bytes")
    if max_pixels is not None and pixels > max_pixels:
        raise CompressedDepthError("bad_rvl", f"compressedDepth RVL image {cols}x{rows} is above {max_pixels} pixels")
    return rvl_decode(payload[_RVL_SIZE.size:], pixels).reshape(rows, cols)


def decode_compressed_depth(fmt: str, data: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """HxW float32 metres of a compressedDepth message (`format`, `data`), NaN = invalid; a
    16UC1 one in millimetres / 1000. CompressedDepthError says why a message cannot be read."""
    encoding, codec = _split_format(fmt)
    data = bytes(data)
    if len(data) <= HEADER.size:  # the plugin needs more than the header too
        raise CompressedDepthError("short_header", f"compressedDepth message of {len(data)} bytes: no payload "
                                                   f"after the {HEADER.size}-byte header")
    kind, a, b = HEADER.unpack_from(data)
    payload = data[HEADER.size:]
    inverse = _decode_png(payload, max_pixels) if codec == "png" else _decode_rvl(payload, max_pixels)
    if encoding == "16UC1":  # raw millimetres; the plugin leaves the header's parameters unset
        return np.where(inverse > 0, inverse.astype(np.float32) / np.float32(1000.0), np.float32(np.nan))
    if kind != INV_DEPTH or not (math.isfinite(a) and math.isfinite(b) and a > 0):
        raise CompressedDepthError("bad_header", f"compressedDepth header (format {kind}, A {a}, B {b}) is not "
                                                 "inverse-depth quantization")
    return dequantize(inverse, a, b)


def decode_compressed_depth_msg(msg: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """`decode_compressed_depth` of a sensor_msgs/CompressedImage (rclpy or rosbags)."""
    return decode_compressed_depth(msg.format, msg.data, max_pixels=max_pixels)


# --- an encoder process ------------------------------------------------------------------------


def serve_encoder(requests: BinaryIO, replies: BinaryIO) -> None:
    """Encode until `requests` ends: each request a pickled (depth, fmt, keyword options) of
    `encode_compressed_depth`, each reply a pickled ("ok", format, data) or ("error", message).
    `python -m zoedepth_ros.compressed_depth` runs it on stdin and stdout: the depth node's encoder
    process (zoedepth_ros.ros.outputs), which keeps the encode off the node's GIL."""
    while True:
        try:
            depth, fmt, options = pickle.load(requests)
        except EOFError:  # the node closed the pipe, or is gone
            return
        try:
            reply = ("ok", *encode_compressed_depth(depth, fmt, **options))
        except Exception as exc:  # the node logs it; the process goes on
            reply = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the node, which ends this by closing stdin
    try:
        os.nice(19)  # the lowest CPU priority: the node's inference comes first
    except OSError:
        pass
    serve_encoder(sys.stdin.buffer, sys.stdout.buffer)
