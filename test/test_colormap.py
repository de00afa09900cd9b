"""The depth colour picture: turbo, near red and far blue, invalid black, ranges clamp."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zoedepth_ros.colormap import colorize

TURBO_RGB = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1]


def test_fixed_range_follows_turbo_from_near_to_far_and_clamps():
    depth = np.array([[1.0, 2.0, 3.0, 0.2, 50.0]], np.float32)
    rgb = colorize(depth, vmin=1.0, vmax=3.0)
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    # Within one table step of the turbo colour at (vmax - d) / span.
    for j, expected in enumerate((255, 128, 1)):
        assert np.abs(rgb[0, j].astype(int) - TURBO_RGB[expected]).max() <= 12
    assert rgb[0, 0, 0] > rgb[0, 0, 2] and rgb[0, 2, 2] > rgb[0, 2, 0]  # near red, far blue
    np.testing.assert_array_equal(rgb[0, 3], rgb[0, 0])  # nearer than vmin: the nearest colour
    np.testing.assert_array_equal(rgb[0, 4], rgb[0, 2])  # beyond vmax: the farthest, never black


def test_invalid_pixels_are_black_and_no_valid_pixel_is():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 80.0, (48, 64)).astype(np.float32)
    depth[::5, ::3] = np.nan
    depth[1, 1], depth[2, 2] = np.inf, -np.inf
    rgb = colorize(depth)
    invalid = ~np.isfinite(depth)
    assert not rgb[invalid].any()
    assert rgb[~invalid].any(axis=-1).all()


@pytest.mark.parametrize("fixed", [False, True])
def test_frame_range_spans_the_table(fixed):
    depth = np.linspace(2.0, 6.0, 64, dtype=np.float32).reshape(8, 8)
    rgb = colorize(depth, 2.0, 6.0) if fixed else colorize(depth)
    np.testing.assert_array_equal(rgb[0, 0], TURBO_RGB[255])
    np.testing.assert_array_equal(rgb[-1, -1], TURBO_RGB[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_strided_input(dtype):
    depth = np.linspace(1.0, 9.0, 96, dtype=dtype).reshape(8, 12)
    np.testing.assert_array_equal(colorize(depth[:, ::2]), colorize(np.ascontiguousarray(depth[:, ::2], np.float32)))


def test_all_invalid_and_bad_shapes():
    assert not colorize(np.full((4, 4), np.nan, np.float32)).any()
    with pytest.raises(ValueError, match="HxW"):
        colorize(np.zeros((4, 4, 1), np.float32))
