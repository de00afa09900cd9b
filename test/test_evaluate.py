"""`zoedepth-ros evaluate` and its scoring seam: exact scores of known predictions, stamp pairing
and unpaired counts, the in-process model path, multi-bag aggregation, interruption, reports."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys

import numpy as np
import pytest

from zoedepth_ros.cli import main
from zoedepth_ros.data.bag import read_frames
from zoedepth_ros.data.bag_layout import BagFrame, make_camera_info_msg, make_image_msg, typestore
from zoedepth_ros.data.synth import write_synth_bag
from zoedepth_ros.eval.metrics import METRIC_NAMES, MetricsAccumulator, score_frame
from zoedepth_ros.eval.protocols import get_protocol
from zoedepth_ros.eval.results import write_results
from zoedepth_ros.eval.scoring import BagEvaluation, score_predictions

H, W = 48, 64
STAMP0 = 1_700_000_000 * 10**9
PERIOD = 100_000_000
PRED_TOPIC = "/depth/image"
PROTOCOL = get_protocol("synth_indoor")


def make_frames(count, seed=0):
    """GT in 0.5..8 m (so 1.1 x GT stays inside the 10 m range) with NaN holes."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = rng.uniform(0.5, 8.0, (H, W)).astype(np.float32)
        depth[rng.random((H, W)) < 0.1] = np.nan
        K = np.array([[50.0, 0.0, W / 2], [0.0, 50.0, H / 2], [0.0, 0.0, 1.0]])
        frames.append(BagFrame(STAMP0 + i * PERIOD, "cam_optical", rgb, depth, K))
    return frames


def write_prediction_bag(path, frames, predictions, storage="sqlite3", metadata=None):
    """An evaluation bag plus a prediction topic, as `ros2 bag record` of a replay would hold:
    predictions are (stamp, HxW float32 metres or uint16 mm) logged just after their frame."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    writer = Writer(path, version=9, storage_plugin=plugin)
    for key, value in (PROTOCOL.to_metadata() if metadata is None else metadata).items():
        writer.set_custom_data(key, value)
    writer.open()
    topics = {"image": "/camera/image", "info": "/camera/camera_info", "gt": "/ground_truth/depth", "pred": PRED_TOPIC}
    types = {"info": "sensor_msgs/msg/CameraInfo"}
    conns = {role: writer.add_connection(topic, types.get(role, "sensor_msgs/msg/Image"), typestore=ts)
             for role, topic in topics.items()}
    messages = []
    for f in frames:
        messages += [
            (f.stamp_ns, conns["image"], make_image_msg(f.rgb, f.stamp_ns, f.frame_id)),
            (f.stamp_ns, conns["info"], make_camera_info_msg(f.K, W, H, f.stamp_ns, f.frame_id)),
            (f.stamp_ns, conns["gt"], make_image_msg(f.depth, f.stamp_ns, f.frame_id)),
        ]
    messages += [(stamp + 1, conns["pred"], make_image_msg(pred, stamp, "cam_optical")) for stamp, pred in predictions]
    for log_time, conn, msg in sorted(messages, key=lambda m: m[0]):
        writer.write(conn, log_time, ts.serialize_cdr(msg, msg.__msgtype__))
    writer.close()
    return path


def scaled(frames, factor):
    return [(f.stamp_ns, (f.depth * np.float32(factor)).astype(np.float32)) for f in frames]


def read_summary(out):
    return json.loads((out / "summary.json").read_text())


def read_rows(out):
    with open(out / "per_frame.csv", newline="") as f:
        return list(csv.DictReader(f))


def closed_form(frames, factor):
    """Per-image means of the metrics of pred = factor x GT (all valid GT inside the range)."""
    per_frame = []
    for f in frames:
        gt = f.depth[np.isfinite(f.depth)].astype(np.float64)
        thresh = max(factor, 1 / factor)
        per_frame.append({
            "a1": float(thresh < 1.25), "a2": float(thresh < 1.25**2), "a3": float(thresh < 1.25**3),
            "abs_rel": abs(factor - 1), "sq_rel": (factor - 1) ** 2 * gt.mean(),
            "rmse": abs(factor - 1) * math.sqrt((gt**2).mean()), "rmse_log": abs(math.log(factor)),
            "silog": 0.0, "log_10": abs(math.log10(factor)),
        })  # fmt: skip
    return {name: float(np.mean([m[name] for m in per_frame])) for name in METRIC_NAMES}


def assert_no_partials(out):
    assert not [p.name for p in out.iterdir() if ".partial" in p.name]


def test_ground_truth_as_prediction_scores_perfectly(tmp_path):
    bag = write_synth_bag(tmp_path / "synth", frames=3, size=(60, 80), progress=False)
    out = tmp_path / "out"
    assert main(["evaluate", str(bag), "--pred-topic", "/ground_truth/depth", "--out", str(out), "--no-progress"]) == 0
    summary = read_summary(out)
    assert summary["complete"] is True and summary["frames"] == 3 and summary["frames_unpaired"] == 0
    assert summary["a1"] == 1.0 and summary["abs_rel"] == 0.0 and summary["rmse"] == 0.0
    assert summary["protocol"]["name"] == "synth_indoor" and summary["pred_topic"] == "/ground_truth/depth"
    assert [r["status"] for r in read_rows(out)] == ["scored"] * 3
    for name in ("report.md", "error_histogram.png", "per_frame_abs_rel.png", "worst_frames.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "worst_frames.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "**3 scored**" in (out / "report.md").read_text()
    assert_no_partials(out)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_scaled_prediction_matches_closed_form(tmp_path, storage):
    frames = make_frames(3)
    bag = write_prediction_bag(tmp_path / "bag", frames, scaled(frames, 1.1), storage=storage)
    out = tmp_path / "out"
    assert main(["evaluate", str(bag), "--pred-topic", PRED_TOPIC, "--out", str(out), "--no-progress"]) == 0
    summary = read_summary(out)
    expected = closed_form(frames, 1.1)
    for name in METRIC_NAMES:
        # predictions travel as float32: relative error of 1e-7 per pixel
        assert summary[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-4), name
    assert summary["frames"] == 3 and summary["frames_skipped"] == 0


def test_16uc1_predictions_in_millimetres(tmp_path):
    frames = make_frames(2)
    for f in frames:  # GT on the millimetre grid, so the 16UC1 prediction is exact
        f.depth = np.round(f.depth * 1000) / np.float32(1000)
    preds = [(f.stamp_ns, np.nan_to_num(np.round(f.depth * 1000), nan=0).astype(np.uint16)) for f in frames]
    bag = write_prediction_bag(tmp_path / "bag", frames, preds)
    out = tmp_path / "out"
    assert main(["evaluate", str(bag), "--pred-topic", PRED_TOPIC, "--out", str(out), "--no-progress"]) == 0
    summary = read_summary(out)
    assert summary["a1"] == 1.0 and summary["abs_rel"] == pytest.approx(0.0, abs=1e-7)


def test_non_finite_predictions_are_scored_as_the_official_code_does(tmp_path):
    """+inf (out of range, REP 118) counts as the protocol maximum, NaN as its minimum."""
    frames = make_frames(1)
    pred = frames[0].depth.copy()
    pred[:10] = np.inf
    pred[10:20] = np.nan
    bag = write_prediction_bag(tmp_path / "bag", frames, [(frames[0].stamp_ns, pred)])
    out = tmp_path / "out"
    assert main(["evaluate", str(bag), "--pred-topic", PRED_TOPIC, "--out", str(out), "--no-progress",
                 "--worst", "0"]) == 0
    official = np.where(np.isinf(pred), PROTOCOL.max_depth, pred.astype(np.float64))
    official[np.isnan(official)] = PROTOCOL.min_depth
    expected = score_frame(official, frames[0].depth, PROTOCOL)
    summary = read_summary(out)
    for name in METRIC_NAMES:
        assert summary[name] == pytest.approx(expected[name], rel=1e-12), name
    assert not (out / "worst_frames.png").exists()


def test_unpaired_frames_and_predictions_are_reported(tmp_path):
    frames = make_frames(4)
    preds = scaled(frames, 1.1)
    del preds[1]  # frame 1 never predicted
    preds.append((frames[-1].stamp_ns + PERIOD // 2, preds[0][1]))  # a prediction between frames
    bag = write_prediction_bag(tmp_path / "bag", frames, preds)
    out = tmp_path / "out"
    assert main(["evaluate", str(bag), "--pred-topic", PRED_TOPIC, "--out", str(out), "--no-progress"]) == 0
    summary = read_summary(out)
    assert summary["frames"] == 3
    assert summary["frames_unpaired"] == 2
    assert summary["unpaired"]["frames_without_prediction"] == 1
    assert summary["unpaired"]["predictions_without_frame"] == 1
    rows = read_rows(out)
    assert [(r["index"], r["status"]) for r in rows] == [
        ("0", "scored"), ("1", "no_prediction"), ("2", "scored"), ("3", "scored"), ("", "no_gt_frame")]
    assert summary["abs_rel"] == pytest.approx(closed_form([frames[0], frames[2], frames[3]], 1.1)["abs_rel"], rel=1e-5)
    assert "1 GT frames without prediction; 1 predictions without GT frame" in (out / "report.md").read_text()


def test_seam_pairs_streams_by_stamp_in_memory(tmp_path):
    """What a replay node does: GT frames and (stamp, depth) predictions, no bag for predictions."""
    frames = make_frames(5, seed=3)
    preds = scaled(frames, 0.9)
    preds = [preds[0], preds[2], preds[4]]  # the node dropped frames 1 and 3
    evaluation = score_predictions(iter(preds), iter(frames), BagEvaluation("replay", PROTOCOL))
    assert [(r.index, r.status) for r in evaluation.rows] == [
        (0, "scored"), (1, "no_prediction"), (2, "scored"), (3, "no_prediction"), (4, "scored")]
    summary = write_results(tmp_path / "out", [evaluation], {"model": "node replay"})
    assert summary["frames"] == 3 and summary["unpaired"]["frames_without_prediction"] == 2
    assert summary["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert read_summary(tmp_path / "out")["model"] == "node replay"
    # predictions only, or frames only: everything unpaired, nothing scored
    alone = score_predictions(iter(preds), iter([]), BagEvaluation("x", PROTOCOL))
    assert [r.status for r in alone.rows] == ["no_gt_frame"] * 3 and alone.accumulator.frames == 0


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, one_torch_thread):
    # A small network input, and one thread (one_torch_thread).
    return tiny_checkpoint("NK", (96, 128))


@pytest.mark.parametrize("storage,batch_size", [("sqlite3", 1), ("mcap", 2)])
def test_model_in_process_equals_scoring_the_estimator_directly(tmp_path, checkpoint, storage, batch_size):
    from zoedepth_ros.inference import DepthEstimator
    from zoedepth_ros.model import load_model

    bag = write_synth_bag(tmp_path / "synth", frames=3, size=(96, 128), storage=storage, progress=False)
    out = tmp_path / "out"
    rc = main(["evaluate", str(bag), "--model", str(checkpoint), "--device", "cpu", "--batch-size", str(batch_size),
               "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = read_summary(out)

    estimator = DepthEstimator(load_model(checkpoint), device="cpu", flip_tta=True, pad=False, mode="eval")
    expected = MetricsAccumulator()
    for frame in read_frames(bag):
        expected.update(score_frame(estimator.predict(frame.rgb).depth, frame.depth, PROTOCOL))
    assert summary["frames"] == expected.frames == 3
    for name, value in expected.mean().items():
        # batching may change the last float32 bits of a convolution
        assert summary[name] == pytest.approx(value, rel=1e-9 if batch_size == 1 else 1e-5), name
    assert summary["model"] == str(checkpoint) and summary["inference"]["device"] == "cpu"
    assert len(read_rows(out)) == 3 and (out / "worst_frames.png").is_file()


def test_bags_of_a_directory_aggregate_as_the_mean_over_images(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    a, b = make_frames(2, seed=1), make_frames(3, seed=2)
    write_prediction_bag(runs / "a", a, scaled(a, 1.1))
    write_prediction_bag(runs / "b", b, scaled(b, 0.7), storage="mcap")
    out = tmp_path / "out"
    assert main(["evaluate", str(runs), "--pred-topic", PRED_TOPIC, "--out", str(out), "--no-progress"]) == 0
    summary = read_summary(out)

    per_image = [score_frame(p, f.depth, PROTOCOL)
                 for f, (_, p) in zip(a + b, scaled(a, 1.1) + scaled(b, 0.7), strict=True)]
    assert summary["frames"] == 5
    for name in METRIC_NAMES:
        assert summary[name] == pytest.approx(np.mean([m[name] for m in per_image]), rel=1e-12), name
    # the mean over images, not the mean of the two bag means
    assert summary["abs_rel"] == pytest.approx((2 * 0.1 + 3 * 0.3) / 5, rel=1e-5)
    assert [(bag["name"], bag["frames"]) for bag in summary["bags"]] == [("a", 2), ("b", 3)]
    assert summary["bags"][0]["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert summary["bags"][1]["abs_rel"] == pytest.approx(0.3, rel=1e-5)
    assert "all bags (mean over images)" in (out / "report.md").read_text()
    assert {r["bag"] for r in read_rows(out)} == {"a", "b"}


# A real SIGTERM, as a ROS launch or a batch system sends it, in a process of its own: a signal sent
# to the test runner itself would also reach whatever native threads earlier tests left in it.
_SIGTERM_RUN = """
import os, signal, sys
from zoedepth_ros.cli import main
from zoedepth_ros.eval.scoring import BagEvaluation

original, calls = BagEvaluation.add, []

def interrupted_add(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(self, *args, **kwargs)

BagEvaluation.add = interrupted_add
rc = main(sys.argv[1:])
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the SIGTERM handler stayed"
sys.exit(rc)
"""


@pytest.mark.parametrize("how", ["keyboard", "sigterm"])
def test_interruption_writes_a_consistent_partial_summary(tmp_path, monkeypatch, how):
    frames = make_frames(4)
    bag = write_prediction_bag(tmp_path / "bag", frames, scaled(frames, 1.1))
    out = tmp_path / "out"
    argv = ["evaluate", str(bag), "--pred-topic", PRED_TOPIC, "--out", str(out), "--no-progress"]
    if how == "keyboard":
        original = BagEvaluation.add
        calls = []

        def interrupted_add(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return original(self, *args, **kwargs)

        monkeypatch.setattr(BagEvaluation, "add", interrupted_add)
        handler = signal.getsignal(signal.SIGTERM)
        assert main(argv) == 130
        assert signal.getsignal(signal.SIGTERM) is handler
    else:
        run = subprocess.run([sys.executable, "-c", _SIGTERM_RUN, *argv], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 130, run.stderr[-2000:]
    summary = read_summary(out)
    assert summary["complete"] is False
    scored = summary["frames"]
    assert scored in (2, 3)  # SIGTERM lands at the next bytecode, before or after the third add
    assert len([r for r in read_rows(out) if r["status"] == "scored"]) == scored
    assert summary["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert "Incomplete run" in (out / "report.md").read_text()
    assert_no_partials(out)


def test_user_errors(tmp_path, capsys):
    frames = make_frames(1)
    bag = write_prediction_bag(tmp_path / "bag", frames, scaled(frames, 1.0))
    out = str(tmp_path / "out")
    assert main(["evaluate", str(bag), "--pred-topic", "/nope", "--out", out]) == 2
    assert "has no prediction topic /nope" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing"), "--pred-topic", PRED_TOPIC, "--out", out]) == 2
    assert "no bag at" in capsys.readouterr().err

    bare = write_prediction_bag(tmp_path / "bare", frames, scaled(frames, 1.0), metadata={})
    assert main(["evaluate", str(bare), "--pred-topic", PRED_TOPIC, "--out", out]) == 2
    assert "records no evaluation protocol; pass --protocol" in capsys.readouterr().err
    assert main(["evaluate", str(bare), "--pred-topic", PRED_TOPIC, "--protocol", "synth_indoor", "--out", out,
                 "--no-progress"]) == 0

    kitti = write_prediction_bag(tmp_path / "kitti", frames, scaled(frames, 1.0),
                                 metadata=get_protocol("kitti").to_metadata())
    assert main(["evaluate", str(bag), str(kitti), "--pred-topic", PRED_TOPIC, "--out", out]) == 2
    assert "different protocols" in capsys.readouterr().err
    # a KITTI protocol needs frames of at least the KB crop
    assert main(["evaluate", str(kitti), "--pred-topic", PRED_TOPIC, "--out", out, "--no-progress"]) == 2
    assert "KB crop needs at least 352x1216" in capsys.readouterr().err
