"""Temporal metrics (zoedepth_ros/eval/temporal.py): TAE and static flicker pinned on closed-form
cases, the z-buffer, what breaks a pair, and the `temporal` of summary.json through `evaluate
--pred-topic` (both storages), the KB crop and the replay's pairing.

Expected values are computed here, independently: by hand for scaled predictions on a still
camera, and by a per-pixel loop (`reference_abs_rel`) for moving cameras.
"""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest

from zoedepth_ros.cli import main
from zoedepth_ros.data.bag import read_frames
from zoedepth_ros.data.bag_layout import BagFrame, make_camera_info_msg, make_image_msg, make_pose_msg, typestore
from zoedepth_ros.data.synth import write_synth_bag
from zoedepth_ros.eval.protocols import eval_mask, get_protocol
from zoedepth_ros.eval.replay_pairing import Pairing
from zoedepth_ros.eval.scoring import BagEvaluation, score_predictions
from zoedepth_ros.eval.temporal import TemporalAccumulator, temporal_summary, warp_abs_rel, warp_depth

H, W = 48, 64
K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
LO, HI = 1e-3, 10.0  # synth_indoor's range
PROTOCOL = get_protocol("synth_indoor")
STAMP0 = 1_700_000_000 * 10**9
PERIOD = 100_000_000
PRED_TOPIC = "/depth/image"
# The inside of a box (planes n . X = c of the world), the camera at the first pose looking along +z.
BOX = [((1.0, 0.0, 0.0), -3.0), ((1.0, 0.0, 0.0), 3.0), ((0.0, 1.0, 0.0), -2.0), ((0.0, 1.0, 0.0), 1.2),
       ((0.0, 0.0, 1.0), 8.0)]


def pose(tx=0.0, ty=0.0, tz=0.0, yaw_deg=0.0):
    """Camera-to-world: rotation about the optical frame's y (down) axis, then the position."""
    a = math.radians(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]]
    T[:3, 3] = (tx, ty, tz)
    return T


def box_depth(T, shape=(H, W), K=K, planes=BOX):
    """Exact depth along the optical axis of the nearest plane in front of the camera, per pixel."""
    height, width = shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])  # z = 1: s is the depth
    directions = T[:3, :3] @ rays
    depth = np.full(u.size, np.inf)
    for normal, c in planes:
        normal = np.asarray(normal)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (c - normal @ T[:3, 3]) / (normal @ directions)
        depth = np.where((s > 0) & (s < depth), s, depth)
    return depth.reshape(height, width)


def moving_poses(count, step_m=0.15, yaw_deg=3.0):
    return [pose(tx=0.05 * k, tz=step_m * k, yaw_deg=yaw_deg * k) for k in range(count)]


def reference_abs_rel(d_from, d_to, K, T_from, T_to, valid_from=None, valid_to=None):
    """The definition pixel by pixel: back-project, move, project to the nearest pixel, keep the
    nearest point per pixel, AbsRel over the landed pixels valid in `to`."""
    relative = np.linalg.inv(T_to) @ T_from
    K_inv = np.linalg.inv(K)
    nearest = {}
    for v in range(d_from.shape[0]):
        for u in range(d_from.shape[1]):
            z = float(d_from[v, u])
            if not (np.isfinite(z) and LO < z < HI) or (valid_from is not None and not valid_from[v, u]):
                continue
            q = relative[:3, :3] @ (z * (K_inv @ (u, v, 1.0))) + relative[:3, 3]
            if q[2] <= 0:
                continue
            x, y, w = K @ q
            ui, vi = math.floor(x / w + 0.5), math.floor(y / w + 0.5)
            if 0 <= ui < d_to.shape[1] and 0 <= vi < d_to.shape[0]:
                nearest[(vi, ui)] = min(nearest.get((vi, ui), math.inf), q[2])
    errors = []
    for (vi, ui), z in nearest.items():
        d = float(d_to[vi, ui])
        if np.isfinite(d) and LO < d < HI and (valid_to is None or valid_to[vi, ui]):
            errors.append(abs(d - z) / d)
    return float(np.mean(errors)) if errors else None


def scaled_static_tae(scales):
    """TAE of s_k x one exact depth on a still camera, by hand: per pair |s_{k+1} - s_k| / s_{k+1}
    forward and |s_{k+1} - s_k| / s_k backward, x 100, the mean over both and every pair."""
    errors = []
    for a, b in zip(scales, scales[1:], strict=False):
        errors += [abs(b - a) / b, abs(b - a) / a]
    return 100.0 * sum(errors) / len(errors)


def accumulate(depths, poses, stamps=None, K=K):
    accumulator = TemporalAccumulator(LO, HI)
    for k, (depth, T) in enumerate(zip(depths, poses, strict=True)):
        accumulator.add(k, STAMP0 + k * PERIOD if stamps is None else stamps[k], depth, K, T)
    return accumulator


def still_depth(seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 6.0, (H, W))
    depth[rng.random((H, W)) < 0.1] = np.nan
    return depth


# --- the definition --------------------------------------------------------------------------


def test_ground_truth_on_a_still_camera_scores_exactly_zero():
    depth = still_depth()
    still = pose(tx=1.0, tz=-2.0, yaw_deg=30.0)  # any pose, held
    summary = temporal_summary([accumulate([depth] * 4, [still] * 4)])
    assert summary == {"tae": 0.0, "pairs": 3, "flicker": 0.0, "static_frames": 4}


def test_exact_depth_on_a_moving_camera_is_consistent_up_to_the_pixel_rounding():
    poses = moving_poses(4)
    depths = [box_depth(T) for T in poses]
    accumulator = accumulate(depths, poses)
    summary = temporal_summary([accumulator])
    assert summary["pairs"] == 3 and summary["flicker"] is None and summary["static_frames"] == 0
    assert 0.0 < summary["tae"] < 1.0, summary
    for k, pair in enumerate(accumulator.pairs):
        assert pair.forward == pytest.approx(reference_abs_rel(depths[k], depths[k + 1], K, poses[k], poses[k + 1]),
                                             rel=1e-9)
        assert pair.backward == pytest.approx(reference_abs_rel(depths[k + 1], depths[k], K, poses[k + 1], poses[k]),
                                              rel=1e-9)
    # The relative pose the other way round (inv(T_k) T_{k+1}) moves the points the wrong way.
    wrong = warp_abs_rel(depths[0], depths[1], K, poses[1], poses[0], LO, HI)
    assert wrong > 5 * accumulator.pairs[0].forward
    # The error is the nearest-pixel rounding: twice the resolution (same field of view), about half.
    K_fine = K * [[2], [2], [1]] + [[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]
    fine = temporal_summary([accumulate([box_depth(T, (2 * H, 2 * W), K_fine) for T in poses], poses, K=K_fine)])
    assert fine["tae"] < 0.65 * summary["tae"], (fine, summary)


def test_predictions_scaled_per_frame_on_a_still_camera_give_the_hand_computed_tae():
    scales = [1.0, 1.2, 0.9, 1.05, 1.05]
    depth = box_depth(np.eye(4))
    summary = temporal_summary([accumulate([s * depth for s in scales], [np.eye(4)] * len(scales))])
    assert summary["pairs"] == 4
    assert summary["tae"] == pytest.approx(scaled_static_tae(scales), rel=1e-12)
    assert summary["tae"] == pytest.approx(100 * (0.2 / 1.2 + 0.2 + 0.3 / 0.9 + 0.3 / 1.2 + 0.15 / 1.05 + 0.15 / 0.9)
                                           / 8, rel=1e-12)


@pytest.mark.parametrize("near_first", [True, False])
def test_the_nearest_point_wins_where_several_land_on_one_pixel(near_first):
    """A near point (1 m) and a far one (5 m) of one row land on one pixel after a sideways move
    of 0.2 m (10 px and 2 px of parallax at fx 50): the near one occludes, whatever the pixel order."""
    row = 20
    shift = 0.2 if near_first else -0.2
    near_col, far_col = (10, 18) if near_first else (30, 22)
    source = np.full((H, W), np.nan)
    source[row, near_col], source[row, far_col] = 1.0, 5.0
    relative = pose(tx=shift)  # points move by +shift in the other camera
    warped = warp_depth(source, K, relative, LO, HI)
    assert warped[row, 20] == 1.0
    assert np.isinf(np.delete(warped.ravel(), row * W + 20)).all()
    target = np.full((H, W), np.nan)
    target[row, 20] = 1.0  # what the other camera sees there: the near object
    # camera-to-world poses whose relative pose inv(T_to) T_from is `relative`
    assert warp_abs_rel(source, target, K, relative, np.eye(4), LO, HI) == 0.0


def test_points_behind_the_camera_or_outside_the_image_are_dropped():
    depth = box_depth(np.eye(4))
    turned = pose(yaw_deg=180.0)  # everything behind
    assert warp_abs_rel(depth, depth, K, np.eye(4), turned, LO, HI) is None
    assert np.isinf(warp_depth(depth, K, np.linalg.inv(turned), LO, HI)).all()
    aside = pose(tx=50.0)  # far to the side: everything projects outside
    assert warp_abs_rel(depth, depth, K, np.eye(4), aside, LO, HI) is None
    empty = np.full((H, W), np.nan)
    assert warp_abs_rel(empty, depth, K, np.eye(4), np.eye(4), LO, HI) is None


def test_validity_is_the_protocol_range_with_strict_bounds():
    depth = np.full((H, W), 2.0)
    depth[:, :8] = HI  # at the range's end: invalid, as eval_mask says
    depth[:, 8:16] = np.inf
    other = np.full((H, W), 2.0)
    other[:, :16] = 5.0  # valid, but nothing valid lands there
    other[0, 16:] = HI  # landed on, but invalid
    other[1, 16:] = LO
    assert warp_abs_rel(depth, other, K, np.eye(4), np.eye(4), LO, HI) == 0.0
    mask = np.zeros((H, W), bool)
    mask[:10] = True
    assert warp_abs_rel(depth, depth * 1.1, K, np.eye(4), np.eye(4), LO, HI, valid_to=mask) == pytest.approx(0.1 / 1.1)
    assert warp_abs_rel(depth, depth * 1.1, K, np.eye(4), np.eye(4), LO, HI, valid_from=np.zeros((H, W), bool)) is None


def test_a_warp_of_a_vga_frame_is_vectorised():
    K_vga = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])
    depth = box_depth(np.eye(4), (480, 640), K_vga)
    moved = pose(tx=0.05, tz=0.1, yaw_deg=1.0)
    target = box_depth(moved, (480, 640), K_vga)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        warp_abs_rel(depth, target, K_vga, np.eye(4), moved, LO, HI)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.2, timings  # ~26 ms on a 2-core EPYC; a loop over pixels takes seconds


# --- what breaks a pair ------------------------------------------------------------------------


def test_a_gap_in_the_stamps_over_a_second_starts_a_new_sequence():
    scales = [1.0, 1.1, 2.0, 2.2]
    depth = box_depth(np.eye(4))
    gap = [STAMP0, STAMP0 + PERIOD, STAMP0 + PERIOD + 1_100_000_000, STAMP0 + 2 * PERIOD + 1_100_000_000]
    accumulator = accumulate([s * depth for s in scales], [np.eye(4)] * 4, stamps=gap)
    summary = temporal_summary([accumulator])
    assert summary["pairs"] == 2
    assert [(p.stamp_from, p.stamp_to) for p in accumulator.pairs] == [(gap[0], gap[1]), (gap[2], gap[3])]
    expected = 100 * (0.1 / 1.1 + 0.1 + 0.2 / 2.2 + 0.2 / 2.0) / 4
    assert summary["tae"] == pytest.approx(expected, rel=1e-12)
    # Neither stretch of two still frames is a static stretch (three at least).
    assert summary["flicker"] is None and summary["static_frames"] == 0


def test_a_frame_without_prediction_or_pose_breaks_the_chain():
    depth = box_depth(np.eye(4))
    accumulator = TemporalAccumulator(LO, HI)
    for k, s in enumerate([1.0, 1.5, 1.5, 1.5, 1.5]):
        if k != 1:  # frame 1: no prediction (or no pose), never added
            accumulator.add(k, STAMP0 + k * PERIOD, s * depth, K, np.eye(4))
    assert len(accumulator.pairs) == 2 and temporal_summary([accumulator])["tae"] == 0.0
    # frames out of order make no pair either
    accumulator.add(6, STAMP0 + 6 * PERIOD, depth, K, np.eye(4))
    accumulator.add(5, STAMP0 + 5 * PERIOD, depth, K, np.eye(4))
    assert len(accumulator.pairs) == 2


def test_frames_without_pose_in_a_bag_with_poses_are_not_paired():
    frames = moving_frames(4)
    frames[1].pose = None
    evaluation = score_predictions([(f.stamp_ns, f.depth) for f in frames], frames, BagEvaluation("b", PROTOCOL))
    assert [(p.stamp_from, p.stamp_to) for p in evaluation.temporal.pairs] == [(frames[2].stamp_ns,
                                                                                 frames[3].stamp_ns)]


def test_a_change_of_k_breaks_the_chain():
    depth = box_depth(np.eye(4))
    accumulator = TemporalAccumulator(LO, HI)
    accumulator.add(0, STAMP0, depth, K, np.eye(4))
    accumulator.add(1, STAMP0 + PERIOD, depth, K * [[1.1], [1.1], [1]], np.eye(4))
    assert accumulator.pairs == []


# --- flicker ---------------------------------------------------------------------------------


def test_flicker_of_a_still_camera_is_the_median_temporal_std_of_log_depth():
    rng = np.random.default_rng(3)
    base = box_depth(np.eye(4))
    sigma = 0.02
    noise = rng.normal(0.0, sigma, (20, H, W))
    depths = [base * np.exp(n) for n in noise]
    summary = temporal_summary([accumulate(depths, [np.eye(4)] * 20)])
    expected = np.median(np.std(np.log(np.stack(depths)), axis=0))
    assert summary["flicker"] == pytest.approx(expected, rel=1e-6)
    assert summary["flicker"] == pytest.approx(sigma, rel=0.1)  # 20 samples of the known noise
    assert summary["static_frames"] == 20


def test_flicker_of_several_stretches_is_the_median_over_all_their_pixels():
    """Stretch one: every pixel, log depth alternating +-0.01 (std 0.01 exactly); stretch two,
    after the camera moved: a quarter of the pixels valid, +-0.03. The pixel-weighted median is
    0.01 (the mean of the stretch medians would be 0.02)."""
    base = box_depth(np.eye(4))
    moved = pose(tz=0.5)
    second = box_depth(moved)
    partial = second.copy()
    partial[: H // 2] = np.nan
    partial[:, : W // 2] = np.nan
    depths = [base * math.exp(0.01 * (-1) ** k) for k in range(4)]
    depths += [second * math.exp(0.03 * (-1) ** k) for k in range(3)] + [partial * math.exp(0.03)]
    poses = [np.eye(4)] * 4 + [moved] * 4
    summary = temporal_summary([accumulate(depths, poses)])
    assert summary["flicker"] == pytest.approx(0.01, rel=1e-6)
    assert summary["static_frames"] == 8 and summary["pairs"] == 7
    # the second stretch alone: std of (+a, -a, +a, +a) = a sqrt(3) / 2
    alone = temporal_summary([accumulate(depths[4:], poses[4:])])
    assert alone["flicker"] == pytest.approx(0.03 * math.sqrt(3) / 2, rel=1e-6)


# --- through the evaluation ------------------------------------------------------------------


def moving_frames(count, cut_after=None, seed=0):
    """Box-scene frames on a moving camera with NaN holes in the GT; `cut_after`: a 2 s gap."""
    rng = np.random.default_rng(seed)
    frames, stamp = [], STAMP0
    for k, T in enumerate(moving_poses(count)):
        depth = box_depth(T).astype(np.float32)
        depth[rng.random((H, W)) < 0.05] = np.nan
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        frames.append(BagFrame(stamp, "cam_optical", rgb, depth, K, pose=T))
        stamp += PERIOD + (2_000_000_000 if k == cut_after else 0)
    return frames


def expected_tae(frames, predictions):
    """The TAE over consecutive pairs within a sequence, by the per-pixel reference, on the pixels
    with valid GT (the evaluation scores where the GT is valid)."""
    errors, pairs = [], 0
    for k in range(len(frames) - 1):
        a, b = frames[k], frames[k + 1]
        if b.stamp_ns - a.stamp_ns > 1_000_000_000:
            continue
        valid_a, valid_b = np.isfinite(a.depth), np.isfinite(b.depth)
        pa, pb = predictions[k].astype(np.float64), predictions[k + 1].astype(np.float64)
        errors += [reference_abs_rel(pa, pb, a.K, a.pose, b.pose, valid_a, valid_b),
                   reference_abs_rel(pb, pa, b.K, b.pose, a.pose, valid_b, valid_a)]
        pairs += 1
    return 100.0 * float(np.mean(errors)), pairs


def write_pose_bag(path, frames, predictions, storage):
    """An evaluation bag with /ground_truth/pose (the project's message builders) and recorded
    predictions on PRED_TOPIC, as a `ros2 bag record` of a replay would hold them."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    writer = Writer(path, version=9, storage_plugin=plugin)
    for key, value in PROTOCOL.to_metadata().items():
        writer.set_custom_data(key, value)
    writer.open()
    topics = {"image": ("/camera/image", "sensor_msgs/msg/Image"),
              "info": ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
              "gt": ("/ground_truth/depth", "sensor_msgs/msg/Image"),
              "pose": ("/ground_truth/pose", "geometry_msgs/msg/PoseStamped"),
              "pred": (PRED_TOPIC, "sensor_msgs/msg/Image")}
    conns = {role: writer.add_connection(topic, msgtype, typestore=ts) for role, (topic, msgtype) in topics.items()}
    messages = []
    for f, pred in zip(frames, predictions, strict=True):
        messages += [(f.stamp_ns, conns["image"], make_image_msg(f.rgb, f.stamp_ns, f.frame_id)),
                     (f.stamp_ns, conns["info"], make_camera_info_msg(f.K, W, H, f.stamp_ns, f.frame_id)),
                     (f.stamp_ns, conns["gt"], make_image_msg(f.depth, f.stamp_ns, f.frame_id)),
                     (f.stamp_ns, conns["pose"], make_pose_msg(f.pose, f.stamp_ns)),
                     (f.stamp_ns + 1, conns["pred"], make_image_msg(pred, f.stamp_ns, f.frame_id))]
    for log_time, conn, msg in sorted(messages, key=lambda m: m[0]):
        writer.write(conn, log_time, ts.serialize_cdr(msg, msg.__msgtype__))
    writer.close()
    return path


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_evaluate_pred_topic_reports_the_tae_of_predictions_scaled_per_frame(tmp_path, storage):
    frames = moving_frames(6, cut_after=2)
    scales = [1.0, 1.1, 0.95, 1.0, 1.2, 1.05]
    predictions = [(f.depth * np.float32(s)).astype(np.float32) for f, s in zip(frames, scales, strict=True)]
    bag = write_pose_bag(tmp_path / "bag", frames, predictions, storage)
    assert all(f.pose is not None for f in read_frames(bag))
    out = tmp_path / "out"
    assert main(["evaluate", str(bag), "--pred-topic", PRED_TOPIC, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    tae, pairs = expected_tae(frames, predictions)
    assert pairs == 4  # five consecutive pairs, one across the cut
    temporal = summary["temporal"]
    assert temporal["tae"] == pytest.approx(tae, rel=1e-9)
    assert temporal["pairs"] == 4 and temporal["flicker"] is None and temporal["static_frames"] == 0
    assert summary["bags"][0]["temporal"] == temporal
    with open(out / "temporal_pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["stamp_from"]), int(r["stamp_to"])) for r in rows] == [
        (frames[k].stamp_ns, frames[k + 1].stamp_ns) for k in (0, 1, 3, 4)]
    errors = [float(r[key]) for r in rows for key in ("abs_rel_forward", "abs_rel_backward")]
    assert 100 * np.mean(errors) == pytest.approx(tae, rel=1e-9)
    report = (out / "report.md").read_text()
    assert "## Temporal consistency" in report and f"{tae:.4f}" in report
    assert (out / "temporal_pairs.png").stat().st_size > 0


def test_a_bag_without_poses_has_a_null_temporal_and_no_pairs_file(tmp_path):
    bag = write_synth_bag(tmp_path / "bag", frames=2, size=(H, W), progress=False)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "temporal_pairs.csv").write_text("stale")
    assert main(["evaluate", str(bag), "--pred-topic", "/ground_truth/depth", "--out", str(out),
                 "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["temporal"] is None and summary["bags"][0]["temporal"] is None
    assert not (out / "temporal_pairs.csv").exists() and not (out / "temporal_pairs.png").exists()
    assert "Temporal" not in (out / "report.md").read_text()


def test_a_still_camera_through_the_scoring_gives_its_flicker_and_static_frames():
    frames = [BagFrame(STAMP0 + k * PERIOD, "cam", np.zeros((H, W, 3), np.uint8),
                       box_depth(np.eye(4)).astype(np.float32), K, pose=np.eye(4)) for k in range(5)]
    offsets = [0.02, -0.02, 0.02, -0.02, 0.02]  # log-depth std 0.0195959 (= 0.02 sqrt(24) / 5)
    predictions = [(f.stamp_ns, f.depth * math.exp(o)) for f, o in zip(frames, offsets, strict=True)]
    evaluation = score_predictions(predictions, frames, BagEvaluation("still", PROTOCOL))
    summary = temporal_summary([evaluation.temporal])
    assert summary["flicker"] == pytest.approx(float(np.std(offsets)), rel=1e-6)
    assert summary["static_frames"] == 5 and summary["pairs"] == 4


def test_kb_crop_protocols_warp_the_cropped_prediction_with_the_crop_s_k():
    """KITTI: the prediction is scored on the 352x1216 KB crop, whose principal point sits at
    (cx - 13, cy - 23) for a 375x1242 frame; a prediction at either size is the same."""
    protocol = get_protocol("kitti")
    K_kitti = np.array([[720.0, 0.0, 610.0], [0.0, 720.0, 180.0], [0.0, 0.0, 1.0]])
    street = [((0.0, 1.0, 0.0), 1.6), ((1.0, 0.0, 0.0), -6.0), ((1.0, 0.0, 0.0), 6.0), ((0.0, 0.0, 1.0), 60.0)]
    poses = [pose(), pose(tx=0.3, tz=1.5, yaw_deg=4.0)]
    gts = [box_depth(T, (375, 1242), K_kitti, street).astype(np.float32) for T in poses]
    frames = [BagFrame(STAMP0 + k * PERIOD, "cam", np.zeros((375, 1242, 3), np.uint8), gt, K_kitti, pose=T)
              for k, (gt, T) in enumerate(zip(gts, poses, strict=True))]
    preds = [gt * np.float32(s) for gt, s in zip(gts, (1.0, 1.1), strict=True)]
    full = BagEvaluation("full", protocol)
    cropped = BagEvaluation("cropped", protocol)
    for k, (frame, pred) in enumerate(zip(frames, preds, strict=True)):
        full.add(frame, pred, k)
        cropped.add(frame, pred[23:, 13:13 + 1216], k)
    K_crop = K_kitti - [[0, 0, 13], [0, 0, 23], [0, 0, 0]]
    crop = [p[23:, 13:13 + 1216].astype(np.float64) for p in preds]
    masks = [eval_mask(gt[23:, 13:13 + 1216].astype(np.float64), protocol) for gt in gts]
    rng = (protocol.min_depth, protocol.max_depth)

    def pair_errors(K_used):
        return (warp_abs_rel(crop[0], crop[1], K_used, poses[0], poses[1], *rng, valid_from=masks[0],
                             valid_to=masks[1]),
                warp_abs_rel(crop[1], crop[0], K_used, poses[1], poses[0], *rng, valid_from=masks[1],
                             valid_to=masks[0]))

    forward, backward = pair_errors(K_crop)
    for evaluation in (full, cropped):
        (pair,) = evaluation.temporal.pairs
        assert (pair.forward, pair.backward) == pytest.approx((forward, backward), rel=1e-12)
    # the uncropped K would give other numbers: the comparison pins the shift
    assert pair_errors(K_kitti) != pytest.approx((forward, backward), rel=1e-6)
    assert full.temporal.pairs == cropped.temporal.pairs


def test_the_replay_s_pairing_feeds_the_temporal_metrics_and_a_lost_frame_breaks_the_chain():
    frames = moving_frames(5)
    evaluation = BagEvaluation("replayed", PROTOCOL)
    pairing = Pairing(evaluation, timeout_s=5.0)
    for k, frame in enumerate(frames):
        pairing.sent(k, frame, now=0.0)
    for k in (0, 1, 3, 4):  # frame 2's depth never comes: given up when frame 3's arrives
        pairing.arrived(frames[k].stamp_ns, frames[k].depth)
    assert pairing.lost == 1
    assert [(p.stamp_from, p.stamp_to) for p in evaluation.temporal.pairs] == [
        (frames[0].stamp_ns, frames[1].stamp_ns), (frames[3].stamp_ns, frames[4].stamp_ns)]
    summary = temporal_summary([evaluation.temporal])
    depths = [f.depth for f in frames]
    assert summary["pairs"] == 2
    assert summary["tae"] == pytest.approx((expected_tae(frames[:2], depths[:2])[0]
                                            + expected_tae(frames[3:], depths[3:])[0]) / 2, rel=1e-9)
