"""Organized point cloud: layout, exact back-projection, NaN semantics, colour, buffer reuse."""

from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

from zoedepth_ros.camera_info import Intrinsics, pinhole_from_hfov
from zoedepth_ros.cloud import FLOAT32, CloudBuilder, to_pointcloud2

H, W = 23, 30  # not multiples of 4: decimated clouds must round up


def intrinsics(fx=40.0, fy=42.0, cx=14.2, cy=11.7, width=W, height=H) -> Intrinsics:
    k = (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0)
    return Intrinsics(width, height, k, (fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0))


def depth_map(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 10.0, size=(H, W)).astype(np.float32)
    depth[3, 4] = np.nan
    depth[5, 8] = np.inf
    depth[8, 12] = -np.inf
    depth[0, 0] = 0.0  # a valid point at the optical centre, not an invalid one
    return depth


def points(cloud) -> np.ndarray:
    """(h, w, point_step/4) float32 view of the cloud bytes, read as a consumer would."""
    return np.frombuffer(cloud.data, "<f4").reshape(cloud.height, cloud.width, cloud.point_step // 4)


def expected_xyz(depth: np.ndarray, intr: Intrinsics, stride: int) -> np.ndarray:
    """Back-projection pixel by pixel, in float64, independently of the builder."""
    rows = range(0, depth.shape[0], stride)
    cols = range(0, depth.shape[1], stride)
    out = np.empty((len(rows), len(cols), 3))
    fx, fy, cx, cy = intr.pinhole
    for i, v in enumerate(rows):
        for j, u in enumerate(cols):
            z = float(depth[v, u])
            out[i, j] = ((np.nan,) * 3 if not np.isfinite(z)
                         else ((u - cx) * z / fx, (v - cy) * z / fy, z))
    return out


@pytest.mark.parametrize("colour", [False, True], ids=["xyz", "xyzrgb"])
@pytest.mark.parametrize("stride", [1, 4])
def test_every_point_is_the_back_projection_of_its_pixel(stride, colour):
    depth, intr = depth_map(), intrinsics()
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8) if colour else None
    cloud = CloudBuilder().build(depth, intr, stride, rgb)

    assert (cloud.height, cloud.width) == (-(-H // stride), -(-W // stride))
    assert cloud.point_step == (32 if colour else 16)
    assert cloud.row_step == cloud.width * cloud.point_step
    assert len(cloud.data) == cloud.height * cloud.row_step
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == (
        [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]
        + ([("rgb", 16, FLOAT32, 1)] if colour else [])
    )
    np.testing.assert_allclose(points(cloud)[..., :3], expected_xyz(depth, intr, stride), rtol=1e-6, atol=1e-6)


def test_invalid_depth_gives_all_nan_points_and_zero_stays_valid():
    cloud = CloudBuilder().build(depth_map(), intrinsics())
    xyz = points(cloud)[..., :3]
    for v, u in [(3, 4), (5, 8), (8, 12)]:
        assert np.isnan(xyz[v, u]).all()
    np.testing.assert_array_equal(xyz[0, 0], [0.0, 0.0, 0.0])
    assert np.isfinite(xyz).all(axis=2).sum() == H * W - 3


def test_colour_is_packed_bgr0_and_padding_is_zero():
    rgb = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    cloud = CloudBuilder().build(depth_map(), intrinsics(), 4, rgb)
    raw = np.frombuffer(cloud.data, np.uint8).reshape(cloud.height, cloud.width, 32)
    sampled = rgb[::4, ::4]
    np.testing.assert_array_equal(raw[..., 16], sampled[..., 2])
    np.testing.assert_array_equal(raw[..., 17], sampled[..., 1])
    np.testing.assert_array_equal(raw[..., 18], sampled[..., 0])
    assert not raw[..., 19].any() and not raw[..., 12:16].any() and not raw[..., 20:].any()
    packed = raw[..., 16:20].copy().view("<u4")[..., 0]
    np.testing.assert_array_equal(
        packed, (sampled[..., 0].astype(np.uint32) << 16) | (sampled[..., 1].astype(np.uint32) << 8) | sampled[..., 2]
    )


def test_reused_builder_follows_changes_and_never_alters_earlier_clouds():
    builder = CloudBuilder()
    depth = depth_map()
    first = builder.build(depth, intrinsics())
    snapshot = bytes(first.data)
    for intr, stride, rgb in [
        (intrinsics(fx=80.0, cx=3.0), 1, None),
        (intrinsics(fx=80.0, cx=3.0), 4, np.zeros((H, W, 3), np.uint8)),
        (intrinsics(), 1, None),
    ]:
        cloud = builder.build(depth * 2, intr, stride, rgb)
        np.testing.assert_allclose(points(cloud)[..., :3], expected_xyz(depth * 2, intr, stride), rtol=1e-6, atol=1e-6)
    assert bytes(first.data) == snapshot


@pytest.mark.parametrize(
    "depth, intr, stride, rgb, match",
    [
        (np.zeros((H, W), np.float32), intrinsics(width=W + 1), 1, None, "intrinsics are for 31x23"),
        (np.zeros((H, W, 1), np.float32), intrinsics(), 1, None, "HxW"),
        (np.zeros((H, W), np.float32), intrinsics(), 0, None, "stride"),
        (np.zeros((H, W), np.float32), intrinsics(), 1, np.zeros((H, W), np.uint8), "rgb must be"),
    ],
)
def test_inconsistent_inputs_are_rejected(depth, intr, stride, rgb, match):
    with pytest.raises(ValueError, match=match):
        CloudBuilder().build(depth, intr, stride, rgb)


def test_pointcloud2_message():
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec = 7
    cloud = CloudBuilder().build(depth_map(), intrinsics(), 4, np.zeros((H, W, 3), np.uint8))
    msg = to_pointcloud2(cloud, header)
    assert msg.header == header
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (6, 8, 32, 256)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 16, 7, 1)
    ]
    assert msg.is_dense is False and msg.is_bigendian is False
    assert msg.data == cloud.data


def test_full_resolution_cloud_of_a_guessed_camera_is_finite():
    intr = pinhole_from_hfov(64, 48, 70.0)
    cloud = CloudBuilder().build(np.full((48, 64), 2.0, np.float32), intr)
    xyz = points(cloud)[..., :3]
    assert np.isfinite(xyz).all()
    assert xyz[..., 0].min() == pytest.approx(-xyz[..., 0].max())  # principal point at the centre


@pytest.mark.parametrize("colour", [False, True])
def test_matches_sensor_msgs_py(colour):
    point_cloud2 = pytest.importorskip(
        "sensor_msgs_py.point_cloud2",
        reason="sensor_msgs_py is not installable here (ROS apt package); runs on a robot",
    )
    depth, intr = depth_map(), intrinsics()
    rgb = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8) if colour else None
    msg = to_pointcloud2(CloudBuilder().build(depth, intr, 4, rgb), Header(frame_id="f"))
    theirs = point_cloud2.read_points_numpy(msg, field_names=("x", "y", "z"), skip_nans=False)
    np.testing.assert_allclose(theirs.reshape(msg.height, msg.width, 3), expected_xyz(depth, intr, 4),
                               rtol=1e-6, atol=1e-6)
