"""compressedDepth in evaluation bags: ground truth written that way reads back within the
quantization bound, `evaluate --pred-topic .../compressedDepth` scores as the raw predictions
do to within the quantization error, and malformed messages are counted rejections."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from compressed_depth_reference import error_bounds

from zoedepth_ros.cli import main
from zoedepth_ros.data.bag import read_frames, read_metadata
from zoedepth_ros.data.bag_layout import (
    BagFrame,
    make_camera_info_msg,
    make_compressed_depth_msg,
    make_image_msg,
    typestore,
)
from zoedepth_ros.data.synth import write_synth_bag
from zoedepth_ros.eval.metrics import METRIC_NAMES
from zoedepth_ros.eval.protocols import get_protocol

from bag_samples import raw_messages

H, W = 48, 64
STAMP0 = 1_700_000_000 * 10**9
PERIOD = 100_000_000
RAW, PNG, RVL = "/cam/depth/image", "/cam/depth/image/compressedDepth", "/cam2/depth/image/compressedDepth"
FACTOR = 1.1
QUANTIZATION = 100.0


def make_frames(count: int, seed: int = 0) -> list[BagFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        depth = rng.uniform(0.5, 8.0, (H, W)).astype(np.float32)
        depth[rng.random((H, W)) < 0.1] = np.nan
        K = np.array([[50.0, 0.0, W / 2], [0.0, 50.0, H / 2], [0.0, 0.0, 1.0]])
        frames.append(BagFrame(STAMP0 + i * PERIOD, "cam_optical", rng.integers(0, 256, (H, W, 3), np.uint8),
                               depth, K))
    return frames


def write_bag(path, frames, predictions, storage="sqlite3"):
    """An evaluation bag (raw GT) with recorded predictions: `predictions` maps a topic to
    (stamp, message) pairs, logged just after their frame as `ros2 bag record` would."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    writer = Writer(path, version=9, storage_plugin=plugin)
    for key, value in get_protocol("synth_indoor").to_metadata().items():
        writer.set_custom_data(key, value)
    writer.open()
    conns = {topic: writer.add_connection(topic, msgtype, typestore=ts) for topic, msgtype in (
        ("/camera/image", "sensor_msgs/msg/Image"), ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
        ("/ground_truth/depth", "sensor_msgs/msg/Image"),
        *((topic, messages[0][1].__msgtype__) for topic, messages in predictions.items()))}
    messages = []
    for f in frames:
        messages += [(f.stamp_ns, "/camera/image", make_image_msg(f.rgb, f.stamp_ns, f.frame_id)),
                     (f.stamp_ns, "/camera/camera_info", make_camera_info_msg(f.K, W, H, f.stamp_ns, f.frame_id)),
                     (f.stamp_ns, "/ground_truth/depth", make_image_msg(f.depth, f.stamp_ns, f.frame_id))]
    messages += [(stamp + 1, topic, msg) for topic, items in predictions.items() for stamp, msg in items]
    for log_time, topic, msg in sorted(messages, key=lambda m: m[0]):
        writer.write(conns[topic], log_time, ts.serialize_cdr(msg, msg.__msgtype__))
    writer.close()
    return path


def evaluate(bag, topic, out):
    assert main(["evaluate", str(bag), "--pred-topic", topic, "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_compressed_predictions_score_as_raw_within_the_quantization_error(tmp_path, storage):
    frames = make_frames(3)
    preds = [(f.stamp_ns, (f.depth * np.float32(FACTOR)).astype(np.float32)) for f in frames]
    bag = write_bag(tmp_path / "bag", frames, {
        RAW: [(s, make_image_msg(p, s, "cam_optical")) for s, p in preds],
        PNG: [(s, make_compressed_depth_msg(p, s, "cam_optical", 10.0)) for s, p in preds],
        RVL: [(s, make_compressed_depth_msg(p, s, "cam_optical", 10.0, fmt="rvl")) for s, p in preds],
    }, storage)
    raw = evaluate(bag, RAW, tmp_path / "raw")
    # Every prediction lies in (0.55, 8.8) m: a pixel moves by at most its bound, d'-d in [low, high].
    valid = np.concatenate([p[np.isfinite(p)] for _, p in preds]).astype(np.float64)
    low, high = error_bounds(valid, QUANTIZATION)
    relative = max(np.abs(low).max(), high.max()) / valid.min() * FACTOR  # per pixel, over its GT
    for topic in (PNG, RVL):
        summary = evaluate(bag, topic, tmp_path / topic.replace("/", "_"))
        assert summary["frames"] == 3 and summary["frames_unpaired"] == 0
        assert summary["a1"] == raw["a1"] == 1.0
        assert summary["abs_rel"] == pytest.approx(raw["abs_rel"], abs=relative)
        assert summary["rmse"] == pytest.approx(raw["rmse"], abs=high.max())
        assert summary["rmse_log"] == pytest.approx(raw["rmse_log"], abs=np.log1p(relative))
        assert summary["abs_rel"] != raw["abs_rel"]  # the quantization is really there


def test_malformed_compressed_predictions_are_counted_rejections(tmp_path):
    frames = make_frames(4)
    good = [make_compressed_depth_msg(f.depth, f.stamp_ns, f.frame_id, 10.0) for f in frames]
    rvl = [make_compressed_depth_msg(f.depth, f.stamp_ns, f.frame_id, 10.0, fmt="rvl") for f in frames]
    good[1].data = good[1].data[:12]  # header only
    good[2].data = good[2].data[:60]  # PNG cut short
    claims = bytearray(rvl[3].data)
    claims[12:20] = struct.pack("<II", W, 2 * H)  # more pixels than the words hold
    rvl[3].data = np.frombuffer(bytes(claims), np.uint8)
    bag = write_bag(tmp_path / "bag", frames, {PNG: [(f.stamp_ns, m) for f, m in zip(frames, good, strict=True)],
                                               RVL: [(f.stamp_ns, m) for f, m in zip(frames, rvl, strict=True)]})
    summary = evaluate(bag, PNG, tmp_path / "png")
    assert summary["frames"] == 2 and summary["unpaired"]["frames_without_prediction"] == 2
    assert summary["unpaired"]["messages"] == {f"{PNG} (rejected: short_header)": 1,
                                               f"{PNG} (rejected: bad_png)": 1}
    summary = evaluate(bag, RVL, tmp_path / "rvl")
    assert summary["frames"] == 3 and summary["unpaired"]["messages"] == {f"{RVL} (rejected: bad_rvl)": 1}
    assert summary["bags"][0]["unpaired"]["messages"] == {f"{RVL} (rejected: bad_rvl)": 1}


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_compressed_ground_truth_reads_back_within_the_bound(tmp_path, storage):
    raw = write_synth_bag(tmp_path / "raw", frames=2, size=(H, W), storage=storage, progress=False)
    assert main(["synth", str(tmp_path / "cd"), "--frames", "2", "--size", f"{H}x{W}", "--storage", storage,
                 "--gt-encoding", "compressedDepth"]) == 0
    compressed = tmp_path / "cd"
    metadata = read_metadata(compressed)
    assert metadata["gt_encoding"] == "compressedDepth" and float(metadata["compressed_depth_max"]) == 10.0
    gt_messages = [m for topic, _, m in raw_messages(compressed) if topic == "/ground_truth/depth/compressedDepth"]
    assert len(gt_messages) == 2 and gt_messages[0].format == "32FC1; compressedDepth png"
    for exact, stored in zip(read_frames(raw), read_frames(compressed), strict=True):
        invalid = np.isnan(exact.depth) | (exact.depth >= 10.0)
        np.testing.assert_array_equal(np.isnan(stored.depth), invalid)
        np.testing.assert_array_equal(stored.rgb, exact.rgb)
        low, high = error_bounds(exact.depth[~invalid], QUANTIZATION)
        error = stored.depth[~invalid].astype(np.float64) - exact.depth[~invalid]
        assert (error >= low).all() and (error <= high).all()
    summary = evaluate(compressed, "/ground_truth/depth/compressedDepth", tmp_path / "out")
    assert summary["frames"] == 2 and summary["abs_rel"] == 0.0
    assert set(METRIC_NAMES) <= set(summary)
