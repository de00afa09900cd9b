"""sensor_msgs builders shared by the depth node and the replay node."""

from __future__ import annotations

import array
import sys

import numpy as np
from sensor_msgs.msg import Image


def image_msg(header, pixels: np.ndarray, encoding: str) -> Image:
    """An Image carrying `header` and `pixels` ((H, W) or (H, W, C), any dtype) as `encoding`, in
    the machine's byte order."""
    msg = Image()
    msg.header = header
    msg.height, msg.width = pixels.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    pixels = np.ascontiguousarray(pixels)
    msg.step = pixels.strides[0]
    # Straight into the field's own type: the setter then copies it with one memcpy (pixels.tobytes()
    # would add a copy; a numpy array is copied element by element).
    data = array.array("B")
    data.frombytes(pixels.reshape(-1).view(np.uint8))
    msg.data = data
    return msg
