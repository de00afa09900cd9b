"""Image decoding: every supported encoding, row padding, byte order, rejections, compressed input."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from zoedepth_ros.image_codec import (
    ASSUMED_ENCODINGS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    compressed_size,
    decode_compressed,
    decode_image,
)

from image_samples import block_image, encode, expected_rgb, pack

H, W = 24, 32
BAYER_ORDERS = ("rggb", "bggr", "gbrg", "grbg")


def check_decoded(decoded: np.ndarray, rgb: np.ndarray, encoding: str) -> None:
    assert decoded.shape == (H, W, 3) and decoded.dtype == np.uint8
    assert decoded.flags["C_CONTIGUOUS"]
    want = expected_rgb(rgb, encoding)
    if encoding.startswith("bayer_"):
        # Demosaicing interpolates across block edges and borders; interiors must be exact.
        interior = np.zeros((H, W), bool)
        for y0 in range(0, H, 8):
            for x0 in range(0, W, 8):
                interior[y0 + 2:y0 + 6, x0 + 2:x0 + 6] = True
        np.testing.assert_array_equal(decoded[interior], want[interior])
    elif encoding in ("uyvy", "yuv422", "yuyv", "yuv422_yuy2"):
        # YUV 4:2:2 shares chroma between pixel pairs; blocks are 8 wide so pairs agree.
        assert np.abs(decoded.astype(int) - want).max() <= 3
    else:
        np.testing.assert_array_equal(decoded, want)


@pytest.mark.parametrize("padding", [0, 7], ids=["dense", "padded"])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_encoding_decodes_to_rgb(encoding, padding):
    rgb = block_image(H, W)
    step, data = pack(encode(rgb, encoding), padding)
    decoded = decode_image(encoding, H, W, step, False, array.array("B", data))
    check_decoded(decoded, rgb, encoding)


@pytest.mark.parametrize("encoding", [e for e in SUPPORTED_ENCODINGS if e.endswith("16")])
def test_big_endian_16_bit(encoding):
    rgb = block_image(H, W, seed=1)
    step, data = pack(encode(rgb, encoding), padding=3, bigendian=True)
    check_decoded(decode_image(encoding, H, W, step, True, data), rgb, encoding)


def test_16_bit_scaling_rounds_like_cv_bridge():
    values = np.arange(0, 65536, dtype=np.uint16).reshape(256, 256)
    step, data = pack(values)
    decoded = decode_image("mono16", 256, 256, step, False, data)[..., 0]
    np.testing.assert_array_equal(decoded, np.round(values * (255.0 / 65535.0)).astype(np.uint8))


def test_rgb8_is_read_without_copying():
    rgb = block_image(H, W)
    buffer = array.array("B", rgb.tobytes())
    decoded = decode_image("rgb8", H, W, W * 3, False, buffer)
    assert np.shares_memory(decoded, np.frombuffer(buffer, np.uint8))


def test_bayer_orders_put_red_where_the_pattern_says():
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 255
    for order in BAYER_ORDERS:
        encoding = f"bayer_{order}8"
        step, data = pack(encode(red, encoding))
        decoded = decode_image(encoding, H, W, step, False, data)
        np.testing.assert_array_equal(decoded[4:-4, 4:-4], red[4:-4, 4:-4], err_msg=encoding)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "8UC1", "64FC1"])
def test_depth_and_generic_encodings_are_rejected(encoding):
    with pytest.raises(ImageDecodeError, match=f"'{encoding}' is a depth/generic") as err:
        decode_image(encoding, H, W, W * 4, False, bytes(H * W * 4))
    assert err.value.reason == "not_a_camera_image"


@pytest.mark.parametrize(
    "encoding, height, width, step, size, reason, match",
    [
        ("nv24", H, W, W, H * W, "unsupported_encoding", "unsupported image encoding 'nv24'"),
        ("rgb8", H, W, W * 3 - 1, H * W * 3, "bad_step", "step 95 is shorter"),
        ("rgb8", H, W, W * 3, H * W * 3 - 1, "short_data", "needs 2304"),
        ("uyvy", H, W - 1, W * 2, H * W * 2, "bad_layout", "width must be even"),
        ("bayer_rggb8", 1, W, W, W, "bad_layout", "at least 2x2"),
        ("mono8", 0, W, W, 0, "empty_image", "nothing to decode"),
    ],
)
def test_malformed_images_are_rejected_with_the_cause(encoding, height, width, step, size, reason, match):
    with pytest.raises(ImageDecodeError, match=match) as err:
        decode_image(encoding, height, width, step, False, bytes(size))
    assert err.value.reason == reason


def test_oversized_image_is_rejected_before_reading_data():
    with pytest.raises(ImageDecodeError, match="above the limit") as err:
        decode_image("rgb8", 10_000, 10_000, 30_000, False, b"", max_pixels=1_000_000)
    assert err.value.reason == "image_too_large"


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8"])
def test_png_decodes_exactly(fmt):
    rgb = block_image(H, W, seed=2)
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    np.testing.assert_array_equal(decode_compressed(fmt, png.tobytes()), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "bgr8; jpeg compressed bgr8"])
def test_jpeg_decodes(fmt):
    # A solid colour survives JPEG's chroma subsampling, so channel order is checked tightly.
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[:] = (200, 40, 90)
    ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    decoded = decode_compressed(fmt, array.array("B", jpeg.tobytes()))
    assert decoded.shape == (H, W, 3)
    assert np.abs(decoded.astype(int) - rgb).max() <= 2


def test_compressed_grayscale_becomes_rgb():
    gray = block_image(H, W, seed=4)[..., 0]
    ok, png = cv2.imencode(".png", gray)
    np.testing.assert_array_equal(decode_compressed("png", png.tobytes()), np.stack([gray] * 3, axis=2))


@pytest.mark.parametrize(
    "fmt, data, reason",
    [
        ("16UC1; compressedDepth png", b"\x89PNG", "not_a_camera_image"),
        ("32FC1; png compressed", b"\x89PNG", "not_a_camera_image"),
        ("jpeg", b"not an image at all", "bad_compressed"),
        ("jpeg", b"", "empty_image"),
    ],
)
def test_bad_compressed_images_are_rejected(fmt, data, reason):
    with pytest.raises(ImageDecodeError) as err:
        decode_compressed(fmt, data)
    assert err.value.reason == reason


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_size_is_read_from_the_header(ext):
    ok, encoded = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert compressed_size(encoded.tobytes()) == (53, 37)
    with pytest.raises(ImageDecodeError, match="53x37 = 1961 pixels") as err:
        decode_compressed("png" if ext == ".png" else "jpeg", encoded.tobytes(), max_pixels=1000)
    assert err.value.reason == "image_too_large"


def test_matches_cv_bridge_for_every_encoding():
    cv_bridge = pytest.importorskip(
        "cv_bridge", reason="cv_bridge is not installable here (ROS apt package); runs on a robot"
    )
    from sensor_msgs.msg import Image

    bridge = cv_bridge.CvBridge()
    rgb = block_image(H, W, seed=5)
    for encoding in SUPPORTED_ENCODINGS:
        # cv_bridge's Python side slices rows as step / pixel size: padding must be whole pixels
        # of every encoding (1, 2, 3, 4, 6 or 8 bytes), hence 24.
        for padding in (0, 24):
            msg = Image(height=H, width=W, encoding=encoding, is_bigendian=0)
            msg.step, data = pack(encode(rgb, encoding), padding)
            msg.data = data
            ours = decode_image(encoding, H, W, msg.step, False, msg.data)
            theirs = bridge.imgmsg_to_cv2(msg, "rgb8")
            # Demosaicing and YUV conversion may differ by a rounding step between OpenCV builds.
            tolerance = 1 if encoding.startswith(("bayer_", "uyvy", "yuv", "yuyv")) else 0
            assert np.abs(ours.astype(int) - theirs).max() <= tolerance, (encoding, padding)


@pytest.mark.parametrize("encoding, to_opencv", [("8UC3", cv2.COLOR_RGB2BGR), ("8UC4", cv2.COLOR_RGB2BGRA)])
def test_opencv_frames_sent_without_an_encoding_decode_as_bgr(encoding, to_opencv):
    """cv_bridge's cv2_to_imgmsg(frame) without an encoding labels OpenCV's BGR(A) frame 8UC3/8UC4."""
    rgb = block_image(H, W, seed=4)
    frame = cv2.cvtColor(rgb, to_opencv)
    decoded = decode_image(encoding, H, W, frame.strides[0], False, frame.tobytes())
    np.testing.assert_array_equal(decoded, rgb)
    assert ASSUMED_ENCODINGS[encoding] == {"8UC3": "bgr8", "8UC4": "bgra8"}[encoding]
