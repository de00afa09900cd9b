"""Decode `sensor_msgs/Image` and `sensor_msgs/CompressedImage` payloads into HxWx3 uint8 RGB.

Pure numpy/OpenCV so it is testable without rclpy. The result matches
`CvBridge().imgmsg_to_cv2(msg, "rgb8")` (same OpenCV conversion codes, same 16 -> 8 bit scaling
`round(v * 255 / 65535)`, applied after the colour conversion as cv_bridge does) while reading the
message buffer without copying it where the layout allows.

The returned array may be a view of the message buffer (rgb8 input): treat it as read-only and
do not keep it beyond the message's lifetime unless you copy it.

`check_image_msg` and `check_compressed_msg` run every test that needs no decoding (fields,
sizes, the JPEG/PNG structure and PNG checksums) without allocating the picture: microseconds for
a raw image, one CRC pass over a PNG. A node can so reject hostile messages as they arrive; the
decoders run the same checks first.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from zoedepth_ros.errors import RejectedMessage


class ImageDecodeError(RejectedMessage):
    """An image message that cannot be turned into RGB."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    bytes_per_channel: int
    # OpenCV conversion to RGB at the native bit depth; None when the pixels already are RGB.
    to_rgb: int | None


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, None),
    "bgr8": _Layout(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": _Layout(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _Layout(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _Layout(1, 1, cv2.COLOR_GRAY2RGB),
    "rgb16": _Layout(3, 2, None),
    "bgr16": _Layout(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": _Layout(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": _Layout(4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": _Layout(1, 2, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": _Layout(1, 1, cv2.COLOR_BayerRGGB2RGB),
    "bayer_bggr8": _Layout(1, 1, cv2.COLOR_BayerBGGR2RGB),
    "bayer_gbrg8": _Layout(1, 1, cv2.COLOR_BayerGBRG2RGB),
    "bayer_grbg8": _Layout(1, 1, cv2.COLOR_BayerGRBG2RGB),
    "bayer_rggb16": _Layout(1, 2, cv2.COLOR_BayerRGGB2RGB),
    "bayer_bggr16": _Layout(1, 2, cv2.COLOR_BayerBGGR2RGB),
    "bayer_gbrg16": _Layout(1, 2, cv2.COLOR_BayerGBRG2RGB),
    "bayer_grbg16": _Layout(1, 2, cv2.COLOR_BayerGRBG2RGB),
    # "yuv422" and "yuv422_yuy2" are the deprecated spellings of "uyvy" and "yuyv".
    "uyvy": _Layout(2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422": _Layout(2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuyv": _Layout(2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuv422_yuy2": _Layout(2, 1, cv2.COLOR_YUV2RGB_YUY2),
}

# Generic encodings decoded as a colour order they do not state: cv_bridge's cv2_to_imgmsg(frame)
# without an encoding writes OpenCV's BGR(A) pixels as "8UC3"/"8UC4". A node should say once that
# it assumes this (cv_bridge itself refuses to convert them to rgb8).
ASSUMED_ENCODINGS: dict[str, str] = {"8UC3": "bgr8", "8UC4": "bgra8"}
_LAYOUTS.update({generic: _LAYOUTS[named] for generic, named in ASSUMED_ENCODINGS.items()})

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# sensor_msgs' other generic "TYPE_*" encodings (16UC1, 32FC1, 8UC1, ...): depth maps or untyped
# buffers, with no colour order a camera image needs.
_GENERIC_ENCODING = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)(C[1-4])?$")


def _quoted(text: str, limit: int = 40) -> str:
    """`text` quoted for a log line; a hostile sender may put anything of any length there."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _unsupported(encoding: str) -> ImageDecodeError:
    if _GENERIC_ENCODING.match(encoding):
        return ImageDecodeError(
            "not_a_camera_image",
            f"encoding '{encoding}' is a depth/generic buffer, not a camera image: "
            "remap 'image' to a colour or mono camera topic "
            f"(supported: {', '.join(SUPPORTED_ENCODINGS)})",
        )
    return ImageDecodeError(
        "unsupported_encoding",
        f"unsupported image encoding {_quoted(encoding)} (supported: {', '.join(SUPPORTED_ENCODINGS)})",
    )


def _scale_16_to_8(pixels: np.ndarray) -> np.ndarray:
    # Exact integer form of round(v * 255 / 65535) = round(v / 257); no tie can occur.
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _checked_layout(
    encoding: str, height: int, width: int, step: int, data_size: int, max_pixels: int | None
) -> _Layout:
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise _unsupported(encoding)
    if height <= 0 or width <= 0:
        raise ImageDecodeError("empty_image", f"image is {width}x{height}: nothing to decode")
    if max_pixels is not None and height * width > max_pixels:
        raise ImageDecodeError(
            "image_too_large",
            f"image is {width}x{height} = {height * width} pixels, above the limit of {max_pixels}",
        )
    if layout.channels == 2 and width % 2:
        raise ImageDecodeError(
            "bad_layout", f"'{encoding}' packs pixel pairs, so its width must be even (got {width})"
        )
    if encoding.startswith("bayer_") and (width < 2 or height < 2):
        raise ImageDecodeError(
            "bad_layout", f"'{encoding}' needs at least 2x2 pixels to demosaic (got {width}x{height})"
        )
    row_bytes = width * layout.channels * layout.bytes_per_channel
    if step < row_bytes:
        raise ImageDecodeError(
            "bad_step",
            f"step {step} is shorter than a row of {width} '{encoding}' pixels ({row_bytes} bytes)",
        )
    if data_size != step * height:
        raise ImageDecodeError(
            "short_data" if data_size < step * height else "long_data",
            f"data has {data_size} bytes, {width}x{height} '{encoding}' with step {step} "
            f"needs {step * height}",
        )
    return layout


def check_image_msg(msg, *, max_pixels: int | None = None) -> None:
    """Raise the ImageDecodeError that decoding the `sensor_msgs/Image` would raise, without decoding."""
    _checked_layout(msg.encoding, msg.height, msg.width, msg.step, memoryview(msg.data).nbytes, max_pixels)


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool,
    data,
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Return the image as a C-contiguous HxWx3 uint8 RGB array.

    `data` is any buffer (the message's `array.array`, bytes, memoryview) of exactly
    `step * height` bytes. `step` padding is skipped and `is_bigendian` honoured for 16-bit
    encodings. `max_pixels` rejects oversized images from their header, before any allocation.
    Raises ImageDecodeError.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    layout = _checked_layout(encoding, height, width, step, buffer.size, max_pixels)
    row_bytes = width * layout.channels * layout.bytes_per_channel
    rows = buffer.reshape(height, step)[:, :row_bytes]
    if layout.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        rows = rows.view(dtype)
        if not dtype.isnative or step % 2 or not rows.flags.aligned:
            # OpenCV reads 16-bit pixels only native-endian and 2-byte aligned (an odd step
            # errors out or, for Bayer, silently demosaics garbage): copy those.
            rows = rows.astype(np.uint16)
    pixels = rows.reshape(height, width, layout.channels) if layout.channels > 1 else rows
    rgb = pixels if layout.to_rgb is None else cv2.cvtColor(pixels, layout.to_rgb)
    if layout.bytes_per_channel == 2:
        rgb = _scale_16_to_8(rgb)
    return np.ascontiguousarray(rgb)


def decode_image_msg(msg, *, max_pixels: int | None = None) -> np.ndarray:
    """`decode_image` for a `sensor_msgs/Image` (or anything with its fields)."""
    return decode_image(
        msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data,
        max_pixels=max_pixels,
    )


def check_compressed(fmt: str, data, *, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) of a `sensor_msgs/CompressedImage` payload, read without decoding it.

    Rejects (ImageDecodeError) depth payloads, anything but a JPEG or PNG stream, a stream cut
    short or structurally broken (PNG: every chunk's CRC is verified; JPEG: markers up to the
    frame header, end-of-image marker), an empty picture and one above `max_pixels`. A JPEG whose
    entropy-coded data is damaged passes: only decoding can tell.
    """
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(
            "not_a_camera_image",
            f"compressed format {_quoted(fmt)} is a depth image, not a camera image: "
            "remap 'image' to a colour or mono camera topic",
        )
    source_encoding = fmt.split(";", 1)[0].strip() if ";" in fmt else ""
    if source_encoding and _GENERIC_ENCODING.match(source_encoding):
        raise _unsupported(source_encoding)
    view = memoryview(data).cast("B")
    if not view.nbytes:
        raise ImageDecodeError("empty_image", "compressed image has no data")
    if view[:len(_PNG_SIGNATURE)] == _PNG_SIGNATURE:
        width, height = _png_size(view)
    elif view[:2] == b"\xff\xd8":
        width, height = _jpeg_size(view)
    else:
        raise ImageDecodeError(
            "bad_compressed",
            f"{view.nbytes} bytes of compressed image (format {_quoted(fmt)}) are neither a JPEG "
            f"nor a PNG stream (they start with {bytes(view[:8]).hex(' ')})",
        )
    if width == 0 or height == 0:
        raise ImageDecodeError("empty_image", f"compressed image header says {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            "image_too_large",
            f"compressed image is {width}x{height} = {width * height} pixels, "
            f"above the limit of {max_pixels}",
        )
    return width, height


def check_compressed_msg(msg, *, max_pixels: int | None = None) -> tuple[int, int]:
    """`check_compressed` for a `sensor_msgs/CompressedImage`."""
    return check_compressed(msg.format, msg.data, max_pixels=max_pixels)


def decode_compressed(fmt: str, data, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode a `sensor_msgs/CompressedImage` payload (JPEG or PNG) into HxWx3 uint8 RGB.

    `fmt` is the message's `format` field: "jpeg", "png", or image_transport's
    "<encoding>; compressed <codec>". The payload first passes `check_compressed` (so the
    limit holds before the decoder allocates); the codec is detected from the bytes. Raises
    ImageDecodeError.
    """
    check_compressed(fmt, data, max_pixels=max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(
            "bad_compressed",
            f"could not decode {buffer.size} bytes of compressed image (format {_quoted(fmt)}): "
            "corrupt image data",
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_compressed_msg(msg, *, max_pixels: int | None = None) -> np.ndarray:
    """`decode_compressed` for a `sensor_msgs/CompressedImage`."""
    return decode_compressed(msg.format, msg.data, max_pixels=max_pixels)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Real headers hold a few dozen segments before the frame header (a few thousand PNG chunks in
# a large picture); past these bounds a stream is hostile, and walking it would stall the caller.
_JPEG_MAX_MARKERS = 1024
_PNG_MAX_CHUNKS = 1 << 16
# Some drivers hand over a JPEG in a zero-padded buffer; the end-of-image marker precedes that.
_JPEG_TAIL_BYTES = 4096


def compressed_size(data) -> tuple[int, int] | None:
    """(width, height) read from a PNG or JPEG header without decoding; None if not found."""
    view = memoryview(data).cast("B")
    if view[:len(_PNG_SIGNATURE)] == _PNG_SIGNATURE and view[12:16] == b"IHDR":
        return int.from_bytes(view[16:20], "big"), int.from_bytes(view[20:24], "big")
    if view[:2] != b"\xff\xd8":
        return None
    pos = 2
    for _ in range(_JPEG_MAX_MARKERS):
        if pos + 9 > len(view) or view[pos] != 0xFF:
            return None
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_SOF:
            return int.from_bytes(view[pos + 7:pos + 9], "big"), int.from_bytes(view[pos + 5:pos + 7], "big")
        pos += 2 + int.from_bytes(view[pos + 2:pos + 4], "big")
    return None


def _jpeg_size(view: memoryview) -> tuple[int, int]:
    size = compressed_size(view)
    if size is None:
        raise ImageDecodeError(
            "bad_compressed", f"JPEG stream of {view.nbytes} bytes has no readable frame header (SOF marker)"
        )
    if not bytes(view[-_JPEG_TAIL_BYTES:]).rstrip(b"\0").endswith(b"\xff\xd9"):
        raise ImageDecodeError(
            "truncated_compressed",
            f"JPEG stream of {view.nbytes} bytes does not end with the end-of-image marker: cut short",
        )
    return size


def _png_size(view: memoryview) -> tuple[int, int]:
    """Walk the chunks up to IEND, verifying each CRC; the size comes from IHDR."""
    pos, size = len(_PNG_SIGNATURE), None
    for _ in range(_PNG_MAX_CHUNKS):
        if pos + 12 > len(view):
            raise ImageDecodeError(
                "truncated_compressed", f"PNG stream of {view.nbytes} bytes ends before its IEND chunk: cut short"
            )
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > len(view):
            raise ImageDecodeError(
                "truncated_compressed",
                f"PNG chunk {_quoted(kind.decode('latin-1'))} of {length} bytes runs past the end of "
                f"the {view.nbytes}-byte stream: cut short",
            )
        if zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            raise ImageDecodeError(
                "bad_compressed", f"PNG chunk {_quoted(kind.decode('latin-1'))} at byte {pos} fails its CRC: corrupt"
            )
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise ImageDecodeError("bad_compressed", "PNG stream does not start with an IHDR chunk")
            size = int.from_bytes(view[pos + 8:pos + 12], "big"), int.from_bytes(view[pos + 12:pos + 16], "big")
        if kind == b"IEND":
            return size
        pos = end
    raise ImageDecodeError("bad_compressed", f"PNG stream has more than {_PNG_MAX_CHUNKS} chunks")
