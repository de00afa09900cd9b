"""compressedDepth codec: quantization exactly as the plugin's code, round trips through png and
rvl, the bytes checked by an independent decoder (compressed_depth_reference.py), rejections."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from compressed_depth_reference import (
    error_bounds,
    plugin_params,
    plugin_quantize_pixel,
    reference_decode,
    rvl_compress,
    rvl_decompress,
)

from zoedepth_ros.compressed_depth import (
    CompressedDepthError,
    decode_compressed_depth,
    encode_compressed_depth,
    nearest_depth,
    quantization_error_bound,
    quantize,
    rvl_decode,
    rvl_encode,
)
from zoedepth_ros.depth_codec import DepthDecodeError

H, W = 48, 64


def depth_map(seed: int, depth_max: float) -> np.ndarray:
    """Random depth over [0.01, 1.2 depth_max] with every special value the plugin meets."""
    rng = np.random.default_rng(seed)
    depth = np.exp(rng.uniform(np.log(0.01), np.log(1.2 * depth_max), (H, W))).astype(np.float32)
    depth[0, :6] = [np.nan, np.inf, -np.inf, 0.0, -1.5, depth_max]
    depth[1, :3] = [np.nextafter(np.float32(depth_max), np.float32(0)), 2 * depth_max, 1e-6]
    depth[2:6, 10:30] = np.nan  # a hole: zero runs for RVL
    return depth


@pytest.mark.parametrize(("depth_max", "quantization"), [(10.0, 100.0), (80.0, 100.0), (80.0, 150.0), (3.5, 7.0)])
def test_quantization_is_the_plugins(depth_max, quantization):
    depth = depth_map(int(depth_max * quantization), depth_max)
    want = np.array([plugin_quantize_pixel(d, depth_max, quantization) for d in depth.reshape(-1)],
                    dtype=np.uint16).reshape(H, W)
    got = quantize(depth, depth_max, quantization)
    np.testing.assert_array_equal(got, want)
    assert (got[0, :6] == 0).all()  # NaN, inf, -inf, zero, negative, at the maximum
    assert got[1, 0] >= 1 and got[1, 1] == 0 and got[1, 2] == 65535
    a, b = plugin_params(depth_max, quantization)
    assert nearest_depth(depth_max, quantization) == pytest.approx(float(a) / (65535 - float(b)))


@pytest.mark.parametrize("fmt", ["png", "rvl"])
@pytest.mark.parametrize(("depth_max", "quantization"), [(10.0, 100.0), (80.0, 100.0)])
def test_round_trip_decodes_as_the_plugin(fmt, depth_max, quantization):
    depth = depth_map(7, depth_max)
    message_format, data = encode_compressed_depth(depth, fmt, depth_max=depth_max, quantization=quantization)
    assert message_format == f"32FC1; compressedDepth {fmt}"
    a, b = plugin_params(depth_max, quantization)
    assert struct.unpack("<iff", data[:12]) == (0, float(a), float(b))
    decoded = decode_compressed_depth(message_format, data)
    q = np.array([plugin_quantize_pixel(d, depth_max, quantization) for d in depth.reshape(-1)]).reshape(H, W)
    np.testing.assert_array_equal(np.isnan(decoded), q == 0)
    with np.errstate(divide="ignore"):
        want = np.where(q > 0, a / (q.astype(np.float32) - b), np.nan).astype(np.float32)
    np.testing.assert_array_equal(decoded, want)  # bit for bit A / (q - B) in float32
    representable = (q > 0) & (q < 65535)
    low, high = error_bounds(depth[representable], quantization)
    error = decoded[representable].astype(np.float64) - depth[representable]
    assert (error >= low).all() and (error <= high).all()
    # The bound itself: d^2 / (A - d), tight to a few percent on random depths.
    bound = quantization_error_bound(depth[representable].astype(np.float64), quantization)
    assert (error / bound).max() > 0.9


@pytest.mark.parametrize("fmt", ["png", "rvl"])
def test_independent_decoder_reads_the_output(fmt):
    depth = depth_map(11, 10.0)
    message_format, data = encode_compressed_depth(depth, fmt, depth_max=10.0, png_level=3)
    decoded = reference_decode(message_format, data)
    invalid = ~np.isfinite(depth) | (depth <= 0) | (depth >= 10.0)
    np.testing.assert_array_equal(np.isnan(decoded), invalid)
    representable = ~invalid & (depth >= nearest_depth(10.0, 100.0))
    low, high = error_bounds(depth[representable], 100.0)
    error = decoded[representable].astype(np.float64) - depth[representable]
    assert (error >= low).all() and (error <= high).all()
    # Nearer than the nearest representable depth: saturated there, never a wrapped-around far depth.
    near = ~invalid & ~representable
    assert near.any()
    np.testing.assert_allclose(decoded[near], nearest_depth(10.0, 100.0), rtol=1e-4)


def test_rvl_bytes_are_the_plugins():
    rng = np.random.default_rng(3)
    runs = np.repeat(rng.integers(0, 6, 400), rng.integers(1, 12, 400)).astype(np.uint16)
    for pixels in (runs, rng.integers(0, 65536, 500).astype(np.uint16), np.zeros(37, np.uint16),
                   np.full(41, 42, np.uint16), np.array([0, 65535, 0, 1, 65535], np.uint16)):
        words = rvl_encode(pixels)
        assert words == rvl_compress(pixels)
        np.testing.assert_array_equal(rvl_decompress(words, pixels.size), pixels)
        np.testing.assert_array_equal(rvl_decode(words, pixels.size), pixels)


def test_png_level_changes_size_not_content():
    depth = depth_map(5, 10.0)
    sizes = []
    for level in (0, 9):
        fmt, data = encode_compressed_depth(depth, "png", png_level=level)
        sizes.append(len(data))
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED),
                                      quantize(depth, 10.0, 100.0))
    assert sizes[1] < sizes[0]


def test_16uc1_messages_are_millimetres():
    mm = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    png = cv2.imencode(".png", mm)[1].tobytes()
    rvl = struct.pack("<II", W, H) + rvl_encode(mm)
    for fmt, payload in (("16UC1; compressedDepth png", png), ("16UC1; compressedDepth rvl", rvl),
                         ("16UC1; compressedDepth", png)):
        decoded = decode_compressed_depth(fmt, struct.pack("<iff", 0, 0.0, 0.0) + payload)
        assert np.isnan(decoded[0, 0])
        np.testing.assert_array_equal(decoded.reshape(-1)[1:], np.arange(1, H * W, dtype=np.float32) / 1000)


def _valid(fmt: str) -> bytes:
    return encode_compressed_depth(depth_map(2, 10.0), fmt)[1]


def _rvl_claiming(cols: int, rows: int) -> bytes:
    data = _valid("rvl")
    return data[:12] + struct.pack("<II", cols, rows) + data[20:]


MALFORMED = {
    "short header": ("32FC1; compressedDepth png", _valid("png")[:12], "short_header"),
    "empty": ("32FC1; compressedDepth rvl", b"", "short_header"),
    "png cut short": ("32FC1; compressedDepth png", _valid("png")[:200], "bad_png"),
    "png corrupt": ("32FC1; compressedDepth png", _valid("png")[:100] + b"\x00" * 8 + _valid("png")[108:], "bad_png"),
    "not png": ("32FC1; compressedDepth png", struct.pack("<iff", 0, 1.0, 0.0) + b"\xff\xd8junk" * 10, "bad_png"),
    "8-bit png": ("32FC1; compressedDepth png",
                  struct.pack("<iff", 0, 1.0, 0.0) + cv2.imencode(".png", np.ones((4, 4), np.uint8))[1].tobytes(),
                  "bad_png"),
    "rvl claims more pixels": ("32FC1; compressedDepth rvl", _rvl_claiming(W, H + 1), "bad_rvl"),
    "rvl claims far more": ("32FC1; compressedDepth rvl", _rvl_claiming(100_000, 100_000), "bad_rvl"),
    "rvl zero size": ("32FC1; compressedDepth rvl", _rvl_claiming(0, H), "bad_rvl"),
    "rvl cut short": ("32FC1; compressedDepth rvl", _valid("rvl")[:-40], "bad_rvl"),
    "rvl no size": ("32FC1; compressedDepth rvl", _valid("rvl")[:16], "bad_rvl"),
    "wrong codec": ("32FC1; compressedDepth jpeg", _valid("png"), "bad_format"),
    "not depth": ("rgb8; compressedDepth png", _valid("png"), "bad_format"),
    "bad header": ("32FC1; compressedDepth png", struct.pack("<iff", 1, 10100.0, -1009.0) + _valid("png")[12:],
                   "bad_header"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_are_named_errors(case):
    fmt, data, reason = MALFORMED[case]
    with pytest.raises(CompressedDepthError) as info:
        decode_compressed_depth(fmt, data)
    assert info.value.reason == reason
    assert isinstance(info.value, DepthDecodeError)


def test_encoder_refuses_bad_arguments():
    with pytest.raises(ValueError, match="png or rvl"):
        encode_compressed_depth(np.ones((2, 2)), "jpeg")
    with pytest.raises(ValueError, match="HxW"):
        encode_compressed_depth(np.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="depth_max"):
        encode_compressed_depth(np.ones((2, 2)), depth_max=0.0)
    with pytest.raises(ValueError, match="PNG level"):
        encode_compressed_depth(np.ones((2, 2)), png_level=10)
