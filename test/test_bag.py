"""Evaluation bag layout: round trips, headers, metadata, pairing, damaged bags, atomic writes."""

from __future__ import annotations

import os
import pickle
import shutil
from collections import defaultdict

import numpy as np
import pytest
import yaml

from zoedepth_ros.data.bag import FrameIndex, message_count, read_frames, read_metadata
from zoedepth_ros.data.bag_layout import (
    DEFAULT_TOPICS,
    BagError,
    BagFrame,
    BagTopics,
    decode_pose,
    decode_rgb,
    make_camera_info_msg,
    make_image_msg,
    make_pose_msg,
    typestore,
)
from zoedepth_ros.data.bag_writer import BagWriter
from zoedepth_ros.depth_codec import decode_depth
from zoedepth_ros.image_codec import decode_image_msg

from bag_samples import raw_messages

H, W = 24, 32
STAMP0 = 1_700_000_000_123_456_789
K = np.array([[30.0, 0.0, 15.5], [0.0, 31.0, 11.5], [0.0, 0.0, 1.0]])


def make_frames(count=3, seed=0):
    """Smooth colour ramps (so JPEG stays close) and depth with NaN holes."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(count):
        rgb = np.stack([xs * 7 + 10 * i, ys * 9, np.full((H, W), 60 + 40 * i)], axis=2).astype(np.uint8)
        depth = rng.uniform(0.5, 60.0, (H, W)).astype(np.float32)
        depth[rng.random((H, W)) < 0.2] = np.nan
        frames.append(BagFrame(STAMP0 + i * 100_000_000, "cam_optical", rgb, depth, K))
    return frames


def write_bag(path, frames, **kwargs):
    with BagWriter(path, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return path


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("image_format", ["raw", "jpeg", "png"])
@pytest.mark.parametrize("gt_encoding", ["32FC1", "16UC1"])
def test_round_trip(tmp_path, storage, image_format, gt_encoding):
    frames = make_frames()
    path = write_bag(tmp_path / "bag", frames, storage=storage, image_format=image_format, gt_encoding=gt_encoding)
    reader = read_frames(path)
    got = list(reader)
    assert reader.frames == 3 and not reader.unpaired
    for sent, back in zip(frames, got, strict=True):
        assert back.stamp_ns == sent.stamp_ns and back.frame_id == "cam_optical"
        assert (back.width, back.height) == (W, H)
        np.testing.assert_array_equal(back.K, K)
        np.testing.assert_array_equal(back.P, np.hstack([K, np.zeros((3, 1))]))
        assert back.rgb.dtype == np.uint8 and back.rgb.shape == (H, W, 3)
        if image_format == "jpeg":
            assert np.abs(back.rgb.astype(int) - sent.rgb).mean() < 3  # colour order kept
        else:
            np.testing.assert_array_equal(back.rgb, sent.rgb)
        assert back.depth.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(back.depth), np.isnan(sent.depth))
        tolerance = 0 if gt_encoding == "32FC1" else 0.0005
        np.testing.assert_allclose(back.depth, sent.depth, atol=tolerance, rtol=0)


def test_headers_log_times_tf_and_metadata_file(tmp_path):
    path = write_bag(tmp_path / "bag", make_frames(), image_format="jpeg",
                     metadata={"split": "test", "protocol": "nyu"})
    by_stamp = defaultdict(dict)
    tf = []
    for topic, log_time, msg in raw_messages(path):
        if topic == DEFAULT_TOPICS.tf_static:
            tf.append((log_time, msg))
            continue
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert log_time == stamp
        by_stamp[stamp][topic] = msg.header
    assert sorted(by_stamp) == [STAMP0 + i * 100_000_000 for i in range(3)]
    for headers in by_stamp.values():
        assert set(headers) == {"/camera/image/compressed", "/camera/camera_info", "/ground_truth/depth"}
        assert len({(h.stamp.sec, h.stamp.nanosec, h.frame_id) for h in headers.values()}) == 1
    [(log_time, msg)] = tf
    assert log_time == STAMP0
    [transform] = msg.transforms
    assert (transform.header.frame_id, transform.child_frame_id) == ("base_link", "cam_optical")
    q = transform.transform.rotation
    assert (q.x, q.y, q.z, q.w) == (-0.5, 0.5, -0.5, 0.5)

    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 9
    tf_topic = next(t for t in info["topics_with_message_count"] if t["topic_metadata"]["name"] == "/tf_static")
    assert tf_topic["topic_metadata"]["offered_qos_profiles"][0]["durability"] == "transient_local"
    assert read_metadata(path) == {
        "layout": "zoedepth_ros.bag/1",
        "image_format": "jpeg",
        "gt_encoding": "32FC1",
        "split": "test",
        "protocol": "nyu",
    }


def test_unpaired_messages_are_counted(tmp_path):
    from rosbags.rosbag2 import Writer

    ts = typestore()
    path = tmp_path / "bag"
    rgb, depth = make_frames(1)[0].rgb, make_frames(1)[0].depth
    plan = [  # frame 1 lacks GT, frame 2 has a second camera_info, frame 3 has only GT
        (1, ("image", "info")),
        (2, ("image", "info", "depth", "info")),
        (3, ("depth",)),
        (4, ("image", "info", "depth")),
    ]
    with Writer(path, version=9) as writer:
        conns = {
            "image": writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=ts),
            "info": writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts),
            "depth": writer.add_connection("/ground_truth/depth", "sensor_msgs/msg/Image", typestore=ts),
        }
        for stamp, roles in plan:
            for role in roles:
                msg = {
                    "image": lambda stamp=stamp: make_image_msg(rgb, stamp, "cam"),
                    "info": lambda stamp=stamp: make_camera_info_msg(K, W, H, stamp, "cam"),
                    "depth": lambda stamp=stamp: make_image_msg(depth, stamp, "cam"),
                }[role]()
                writer.write(conns[role], stamp, ts.serialize_cdr(msg, msg.__msgtype__))
    reader = read_frames(path)
    assert [f.stamp_ns for f in reader] == [2, 4]
    assert reader.frames == 2
    assert reader.unpaired == {"/camera/image": 1, "/camera/camera_info": 2, "/ground_truth/depth": 1}
    counts = {topic: message_count(path, topic) for topic in ("/camera/image", "/camera/camera_info", "/nowhere")}
    assert counts == {"/camera/image": 3, "/camera/camera_info": 4, "/nowhere": 0}
    with pytest.raises(BagError, match="message counts differ"):
        FrameIndex(path)


def test_missing_topic_is_named(tmp_path):
    path = write_bag(tmp_path / "bag", make_frames(1), topics=BagTopics(depth="/gt"))
    with pytest.raises(BagError, match=r"lacks topic\(s\) /ground_truth/depth; it has .*/gt \[sensor_msgs/msg/Image\]"):
        read_frames(path)
    custom = BagTopics(depth="/gt")
    assert len(list(read_frames(path, topics=custom))) == 1
    no_gt = BagTopics(depth=None)
    assert list(read_frames(path, topics=no_gt))[0].depth is None


def test_missing_and_damaged_bags(tmp_path):
    with pytest.raises(BagError, match="no bag at"):
        read_frames(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="metadata.yaml"):
        read_frames(tmp_path / "empty")

    path = write_bag(tmp_path / "bag", make_frames())
    truncated = tmp_path / "truncated"
    shutil.copytree(path, truncated)
    db3 = truncated / "bag.db3"
    db3.write_bytes(db3.read_bytes()[: db3.stat().st_size // 2])
    with pytest.raises(BagError, match="corrupt or truncated"):
        list(read_frames(truncated))

    garbage = tmp_path / "garbage"
    shutil.copytree(path, garbage)
    (garbage / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n\x00")
    with pytest.raises(BagError):
        read_frames(garbage)
    with pytest.raises(BagError):
        read_metadata(garbage)


def test_padded_step_big_endian_and_bgr_decode():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    padded = np.zeros((5, 7 * 3 + 11), dtype=np.uint8)
    padded[:, :21] = rgb[:, :, ::-1].reshape(5, 21)
    bgr_msg = make_image_msg(rgb, 0, "cam")
    bgr_msg.encoding, bgr_msg.step, bgr_msg.data = "bgr8", 32, padded.reshape(-1)
    np.testing.assert_array_equal(decode_rgb(bgr_msg), rgb)

    depth = rng.uniform(0.1, 9.0, (5, 7)).astype(np.float32)
    rows = np.zeros((5, 7 * 4 + 4), dtype=np.uint8)
    rows[:, :28] = depth.astype(">f4").view(np.uint8).reshape(5, 28)
    msg = make_image_msg(depth, 0, "cam")
    msg.is_bigendian, msg.step, msg.data = 1, 32, rows.reshape(-1)
    np.testing.assert_array_equal(decode_depth(msg), depth)

    mm = np.array([[0, 1000, 65535]], dtype=np.uint16)
    expected_m = np.array([[np.nan, 1.0, 65.535]], dtype=np.float32)
    np.testing.assert_array_equal(decode_depth(make_image_msg(mm, 0, "cam")), expected_m)

    short = make_image_msg(rgb, 0, "cam")
    short.step = 20  # fewer bytes than a row of 7 rgb8 pixels
    with pytest.raises(BagError, match="step"):
        decode_rgb(short)
    short.encoding = "hsv8"
    with pytest.raises(BagError, match="unsupported image encoding 'hsv8'"):
        decode_rgb(short)


@pytest.mark.parametrize("encoding", ["rgb8", "bgra8", "mono8", "mono16", "yuv422", "bayer_rggb8"])
def test_camera_images_decode_through_image_codec(encoding):
    """Bags decode camera images with the node's decoder, into arrays of their own."""
    rng = np.random.default_rng(2)
    channels = {"rgb8": 3, "bgra8": 4, "mono8": 1, "mono16": 1, "yuv422": 2, "bayer_rggb8": 1}[encoding]
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    pixels = rng.integers(0, np.iinfo(dtype).max, (6, 8, channels), dtype=dtype, endpoint=True)
    msg = make_image_msg(np.zeros((6, 8, 3), np.uint8), 0, "cam")
    msg.encoding, msg.step, msg.data = encoding, 8 * channels * pixels.itemsize, pixels.view(np.uint8).reshape(-1)
    rgb = decode_rgb(msg)
    np.testing.assert_array_equal(rgb, decode_image_msg(msg))
    assert rgb.shape == (6, 8, 3) and rgb.flags.owndata and rgb.flags.writeable

    compressed = make_image_msg(decode_image_msg(msg), 0, "cam", image_format="png")
    np.testing.assert_array_equal(decode_rgb(compressed), decode_image_msg(msg))
    compressed.data = compressed.data[: len(compressed.data) // 2]
    with pytest.raises(BagError, match="cut short"):
        decode_rgb(compressed)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_frame_index_reads_frames_by_position(tmp_path, storage):
    frames = make_frames(4)
    path = write_bag(tmp_path / "bag", frames, storage=storage, image_format="png", gt_encoding="16UC1")
    streamed = list(read_frames(path))
    index = FrameIndex(path)
    assert len(index) == 4 and index.stamps == [f.stamp_ns for f in frames]
    assert message_count(path, "/camera/image/compressed") == 4
    for position in (2, 0, 3, 1):  # any order
        frame = index.read(position)
        assert frame.stamp_ns == streamed[position].stamp_ns and frame.frame_id == "cam_optical"
        np.testing.assert_array_equal(frame.rgb, streamed[position].rgb)
        np.testing.assert_array_equal(frame.depth, streamed[position].depth)
        np.testing.assert_array_equal(frame.K, K)
    copy = pickle.loads(pickle.dumps(index))  # data loader workers get it pickled, without the open reader
    np.testing.assert_array_equal(copy.read(3).rgb, streamed[3].rgb)
    with pytest.raises(BagError, match="no bag at"):
        FrameIndex(tmp_path / "absent")


def test_failure_mid_write_leaves_nothing(tmp_path):
    frames = make_frames()
    with pytest.raises(RuntimeError):
        with BagWriter(tmp_path / "bag") as writer:
            writer.write(frames[0])
            raise RuntimeError("converter crashed")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="stamps must increase"):
        with BagWriter(tmp_path / "bag") as writer:
            writer.write(frames[1])
            writer.write(frames[0])
    assert os.listdir(tmp_path) == []


def test_overwrite_only_when_asked(tmp_path):
    path = write_bag(tmp_path / "bag", make_frames(1))
    with pytest.raises(BagError, match="exists"):
        write_bag(path, make_frames(2))
    assert len(list(read_frames(path))) == 1
    write_bag(path, make_frames(2), overwrite=True, storage="mcap")
    assert len(list(read_frames(path))) == 2
    assert sorted(os.listdir(tmp_path)) == ["bag"]


def test_16uc1_beyond_range_becomes_invalid(tmp_path):
    frame = make_frames(1)[0]
    frame.depth[0, 0] = 70.0
    with pytest.warns(UserWarning, match="65.535"):
        path = write_bag(tmp_path / "bag", [frame], gt_encoding="16UC1")
    assert np.isnan(next(iter(read_frames(path))).depth[0, 0])


def rotation(axis, angle):
    """Rodrigues' rotation about `axis` by `angle` radians."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def make_poses(count):
    """Camera-to-world poses covering every branch of the quaternion conversion: the identity, half
    turns about each axis (w = 0) and general rotations, with translations."""
    rotations = [np.eye(3), rotation([1, 0, 0], np.pi), rotation([0, 1, 0], np.pi), rotation([0, 0, 1], np.pi),
                 rotation([1, 2, 3], 2.5), rotation([-1, 0.5, 0.2], 0.3)]
    poses = []
    for i in range(count):
        pose = np.eye(4)
        pose[:3, :3] = rotations[i % len(rotations)]
        pose[:3, 3] = [1.5 * i, -0.25 * i, 100.0 + i]
        poses.append(pose)
    return poses


def frames_with_poses(count):
    frames = make_frames(count)
    for frame, pose in zip(frames, make_poses(count), strict=True):
        frame.pose = pose
    return frames


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_poses_round_trip(tmp_path, storage):
    frames = frames_with_poses(6)
    path = write_bag(tmp_path / "bag", frames, storage=storage)
    reader = read_frames(path)
    got = list(reader)
    assert reader.frames == 6 and not reader.unpaired
    index = FrameIndex(path)
    for position, (sent, back) in enumerate(zip(frames, got, strict=True)):
        assert back.pose.dtype == np.float64 and back.pose.shape == (4, 4)
        np.testing.assert_allclose(back.pose, sent.pose, atol=1e-12, rtol=0)
        np.testing.assert_array_equal(index.read(position).pose, back.pose)
    assert message_count(path, "/ground_truth/pose") == 6
    poses = [(t, msg) for topic, t, msg in raw_messages(path) if topic == "/ground_truth/pose"]
    images = [msg.header for topic, _, msg in raw_messages(path) if topic == "/camera/image"]
    for (log_time, msg), image_header, frame in zip(poses, images, frames, strict=True):
        assert msg.__msgtype__ == "geometry_msgs/msg/PoseStamped" and msg.header.frame_id == "world"
        assert msg.header.stamp == image_header.stamp and log_time == frame.stamp_ns
    q = poses[0][1].pose.orientation
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    assert list(read_frames(path, topics=BagTopics(pose=None)))[0].pose is None


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_without_poses_reads_as_before(tmp_path, storage):
    path = write_bag(tmp_path / "bag", make_frames(2), storage=storage)
    assert "/ground_truth/pose" not in {topic for topic, _, _ in raw_messages(path)}
    frames = list(read_frames(path))
    assert len(frames) == 2 and all(frame.pose is None for frame in frames)
    assert FrameIndex(path).read(1).pose is None


def test_writer_holds_every_frame_to_the_first_frames_poses(tmp_path):
    with_pose, without = frames_with_poses(2)[0], make_frames(2)[1]
    with pytest.raises(ValueError, match="lacks a pose"):
        write_bag(tmp_path / "a", [with_pose, without])
    with pytest.raises(ValueError, match="has a pose"):
        write_bag(tmp_path / "b", [make_frames(1)[0], frames_with_poses(2)[1]])
    with pytest.raises(ValueError, match="topics.pose is None"):
        write_bag(tmp_path / "c", [with_pose], topics=BagTopics(pose=None))
    sheared = frames_with_poses(1)[0]
    sheared.pose[0, 1] = 0.5
    with pytest.raises(ValueError, match="rigid transform"):
        write_bag(tmp_path / "d", [sheared])
    assert os.listdir(tmp_path) == []


def test_frame_missing_its_pose_is_unpaired(tmp_path):
    from rosbags.rosbag2 import Writer

    ts = typestore()
    path = tmp_path / "bag"
    frame = make_frames(1)[0]
    with Writer(path, version=9) as writer:
        conns = {
            "image": writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=ts),
            "info": writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts),
            "depth": writer.add_connection("/ground_truth/depth", "sensor_msgs/msg/Image", typestore=ts),
            "pose": writer.add_connection("/ground_truth/pose", "geometry_msgs/msg/PoseStamped", typestore=ts),
        }
        for stamp in (1, 2, 3):
            msgs = {
                "image": make_image_msg(frame.rgb, stamp, "cam"),
                "info": make_camera_info_msg(K, W, H, stamp, "cam"),
                "depth": make_image_msg(frame.depth, stamp, "cam"),
                "pose": make_pose_msg(np.eye(4), stamp),
            }
            if stamp == 2:
                del msgs["pose"]
            for role, msg in msgs.items():
                writer.write(conns[role], stamp, ts.serialize_cdr(msg, msg.__msgtype__))
    reader = read_frames(path)
    assert [f.stamp_ns for f in reader] == [1, 3]
    assert reader.unpaired == {"/camera/image": 1, "/camera/camera_info": 1, "/ground_truth/depth": 1}
    with pytest.raises(BagError, match="message counts differ"):
        FrameIndex(path)


def test_decode_pose_rejects_bad_fields():
    msg = make_pose_msg(make_poses(5)[4], 7)
    np.testing.assert_allclose(decode_pose(msg), make_poses(5)[4], atol=1e-12)
    msg.pose.orientation.w *= 2
    with pytest.raises(BagError, match="unit quaternion"):
        decode_pose(msg)
    msg = make_pose_msg(np.eye(4), 7)
    msg.pose.position.y = float("nan")
    with pytest.raises(BagError, match="non-finite"):
        decode_pose(msg)
