"""Intrinsics from CameraInfo: P over K, scaling, binning, ROI, validation, republished info."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from zoedepth_ros.camera_info import (
    CameraInfoError,
    depth_camera_info,
    intrinsics_from_camera_info,
    pinhole_from_hfov,
)


def camera_info(width=640, height=480, k=(500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0), p=None, **fields):
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = list(k)
    info.p = list(p) if p is not None else [k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.1, -0.2, 0.001, 0.002, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    for name, value in fields.items():
        setattr(info, name, value)
    return info


def test_p_wins_over_k():
    info = camera_info(p=(400.0, 0.0, 310.0, 0.0, 0.0, 410.0, 230.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    intr = intrinsics_from_camera_info(info, 640, 480)
    assert intr.pinhole == (400.0, 410.0, 310.0, 230.0)
    assert intr.k == tuple(info.k)
    assert (intr.width, intr.height) == (640, 480)


def test_zero_p_falls_back_to_k_and_is_filled():
    intr = intrinsics_from_camera_info(camera_info(p=[0.0] * 12), 640, 480)
    assert intr.pinhole == (500.0, 505.0, 320.0, 240.0)
    assert intr.p == (500.0, 0.0, 320.0, 0.0, 0.0, 505.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def test_zero_k_is_filled_from_p():
    info = camera_info(k=[0.0] * 9, p=(400.0, 0.0, 310.0, -40.0, 0.0, 410.0, 230.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    intr = intrinsics_from_camera_info(info, 640, 480)
    assert intr.k == (400.0, 0.0, 310.0, 0.0, 410.0, 230.0, 0.0, 0.0, 1.0)


def test_different_resolution_is_scaled():
    info = camera_info(width=1280, height=960, k=(1000.0, 0.0, 640.0, 0.0, 1010.0, 480.0, 0.0, 0.0, 1.0))
    info.p[3] = -100.0  # stereo baseline term scales with fx
    intr = intrinsics_from_camera_info(info, 640, 480)
    assert intr.pinhole == (500.0, 505.0, 320.0, 240.0)
    assert intr.p[3] == -50.0
    assert intr.k == (500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0)


def test_binning_is_honoured():
    info = camera_info(width=1280, height=960, k=(1000.0, 0.0, 640.0, 0.0, 1010.0, 480.0, 0.0, 0.0, 1.0),
                       binning_x=2, binning_y=4)
    intr = intrinsics_from_camera_info(info, 640, 240)
    assert intr.pinhole == (500.0, 252.5, 320.0, 120.0)


def test_roi_is_honoured_offset_then_binning():
    info = camera_info(width=1280, height=960, k=(1000.0, 0.0, 640.0, 0.0, 1010.0, 480.0, 0.0, 0.0, 1.0),
                       binning_x=2, binning_y=2)
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 60, 800, 600
    intr = intrinsics_from_camera_info(info, 400, 300)
    assert intr.pinhole == (500.0, 505.0, (640.0 - 100) / 2, (480.0 - 60) / 2)


def test_binning_that_does_not_give_the_image_size_is_rejected():
    info = camera_info(width=1280, height=960, binning_x=2, binning_y=2)
    with pytest.raises(CameraInfoError, match="give 640x480 images, but the image is 320x240") as err:
        intrinsics_from_camera_info(info, 320, 240)
    assert err.value.reason == "size_mismatch"


@pytest.mark.parametrize(
    "change, reason, match",
    [
        (dict(k=[0.0] * 9, p=[0.0] * 12), "uncalibrated", "not calibrated"),
        (dict(k=(-1.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0), p=[0.0] * 12), "bad_intrinsics", "positive"),
        (dict(k=(500.0, 0.0, math.nan, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0), p=[0.0] * 12), "bad_intrinsics", "finite"),
        (dict(width=0, height=0), "no_resolution", "0x0"),
    ],
)
def test_unusable_camera_info_is_rejected(change, reason, match):
    with pytest.raises(CameraInfoError, match=match) as err:
        intrinsics_from_camera_info(camera_info(**change), 640, 480)
    assert err.value.reason == reason


@pytest.mark.parametrize("roi", [(600, 0, 100, 480), (0, 0, 0, 480), (10, 10, 0, 0)])
def test_roi_outside_the_calibration_is_rejected(roi):
    info = camera_info()
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = roi
    with pytest.raises(CameraInfoError, match="does not fit") as err:
        intrinsics_from_camera_info(info, 100, 480)
    assert err.value.reason == "bad_roi"


def test_pinhole_guess_from_field_of_view():
    intr = pinhole_from_hfov(640, 480, 90.0)
    fx, fy, cx, cy = intr.pinhole
    assert fx == pytest.approx(320.0) and fy == pytest.approx(320.0)
    assert (cx, cy) == (319.5, 239.5)
    assert intr.k[0] == fx and intr.k[4] == fy
    with pytest.raises(CameraInfoError, match="not in \\(0, 180\\)"):
        pinhole_from_hfov(640, 480, 180.0)


def test_depth_camera_info_describes_the_depth_image():
    source = camera_info(width=1280, height=960, binning_x=2, binning_y=2)
    intr = intrinsics_from_camera_info(source, 640, 480)
    header = Header(frame_id="cam_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = depth_camera_info(intr, header, source)
    assert msg.header == header
    assert (msg.width, msg.height) == (640, 480)
    np.testing.assert_array_equal(msg.k, intr.k)
    np.testing.assert_array_equal(msg.p, intr.p)
    assert list(msg.d) == list(source.d) and msg.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(msg.r, source.r)
    assert (msg.binning_x, msg.binning_y, msg.roi.width, msg.roi.height) == (0, 0, 0, 0)


def test_depth_camera_info_for_a_guessed_pinhole():
    msg = depth_camera_info(pinhole_from_hfov(64, 48, 60.0), Header(frame_id="f"))
    assert msg.distortion_model == "plumb_bob" and list(msg.d) == [0.0] * 5
    np.testing.assert_array_equal(msg.r, np.eye(3).ravel())
