"""`zoedepth-ros replay`: pairing and pacing rules, and the acceptance check that replaying a bag
through the live depth node over DDS gives the summary of the in-process `evaluate --model`.

The depth node runs in this process (its own context, a background executor) or as a process of
its own; the replay runs in this process through the CLI, or as a process when it is signalled.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from zoedepth_ros.cli import main
from zoedepth_ros.data.bag_layout import BagFrame
from zoedepth_ros.data.synth import write_synth_bag
from zoedepth_ros.eval.metrics import METRIC_NAMES
from zoedepth_ros.eval.protocols import get_protocol
from zoedepth_ros.eval.recipe import NODE_PARAMETERS
from zoedepth_ros.eval.replay_pairing import Pairing, ReplaySettings, due_s, published_view
from zoedepth_ros.eval.scoring import BagEvaluation
from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.ros.processes import stop_process

from ros_helpers import REPO, Spinner, launch_description

SIZE = (96, 128)  # the bags' frames, and the tiny model's network input
LAUNCH_FILE = REPO / "launch" / "evaluate.launch.py"
# The depth node as the launch file sets it up for a replay: evaluate's processing, nothing invalidated.
REPLAY_PARAMS = {"device": "cpu", **NODE_PARAMETERS, "max_depth": 1000.0, "temporal_filter": "none",
                 "publish_points": False, "publish_colormap": False}


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("NK", SIZE)


@pytest.fixture
def depth_node(context, checkpoint, namespace):
    """`start(**params)` starts the depth node in this process (REPLAY_PARAMS, then `params`) and
    returns the Spinner to spin it with; the nodes are destroyed at teardown."""
    from zoedepth_ros.ros.depth_node import DepthNode

    started = []

    def start(**params):
        params = {"model": checkpoint, **REPLAY_PARAMS, **params}
        node = DepthNode(namespace=namespace, context=context,
                         parameter_overrides=[Parameter(name, value=value) for name, value in params.items()])
        started.append(node)
        assert node.autostart()
        return Spinner(context, node)

    yield start
    for node in started:
        node.destroy_node()


def reliable_image(namespace):
    return {f"qos_overrides.{namespace}/image.subscription.reliability": "reliable"}


def evaluate(bag, out, checkpoint):
    rc = main(["evaluate", str(bag), "--model", checkpoint, "--device", "cpu", "--out", str(out), "--no-progress"])
    assert rc == 0
    return json.loads((out / "summary.json").read_text())


def replay(bag, out, namespace, *options):
    rc = main(["replay", str(bag), "--out", str(out), "--no-progress", "--wait", "60", *options,
               "--ros-args", "-r", f"__ns:={namespace}"])
    return rc, json.loads((out / "summary.json").read_text())


def assert_same_scores(replayed, evaluated):
    assert replayed["frames"] == evaluated["frames"] and replayed["frames_skipped"] == evaluated["frames_skipped"]
    assert replayed["frames_unpaired"] == 0
    for name in METRIC_NAMES:
        assert replayed[name] == pytest.approx(evaluated[name], rel=1e-5, abs=1e-6), name


# --- rules, without DDS --------------------------------------------------------------------


def frame(i):
    rgb = np.zeros((4, 6, 3), np.uint8)
    return BagFrame(1_000_000_000 + i * 100_000_000, "cam", rgb, np.full((4, 6), 2.0, np.float32), np.eye(3))


def test_pairing_scores_answers_and_gives_up_on_dropped_and_slow_frames():
    pairing = Pairing(BagEvaluation("b", get_protocol("synth_indoor")), timeout_s=5.0)
    frames = [frame(i) for i in range(5)]
    for i, f in enumerate(frames[:4]):
        pairing.sent(i, f, now=float(i))
    pairing.arrived(frames[0].stamp_ns, np.full((4, 6), 2.0, np.float32))
    pairing.arrived(frames[2].stamp_ns, np.full((4, 6), 2.2, np.float32))  # the node skipped frame 1
    pairing.expire(now=8.5)  # frame 3's deadline (3 + 5) passed
    pairing.arrived(frames[1].stamp_ns, np.ones((4, 6), np.float32))  # after it was given up
    pairing.arrived(frames[2].stamp_ns, np.ones((4, 6), np.float32))  # a second answer
    pairing.arrived(frames[4].stamp_ns, np.ones((4, 6), np.float32))  # never published
    assert not pairing.in_flight
    assert pairing.counts() == {"frames_published": 4, "depth_received": 5, "frames_lost": 2, "frames_rejected": 0,
                                "depth_late": 1}
    rows = sorted(pairing.evaluation.rows, key=lambda r: (r.index is None, r.index or 0, r.stamp_ns))
    assert [(r.index, r.status) for r in rows] == [
        (0, "scored"), (1, "no_prediction"), (2, "scored"), (3, "no_prediction"),
        (None, "no_gt_frame"), (None, "no_gt_frame")]
    assert pairing.evaluation.accumulator.mean()["abs_rel"] == pytest.approx(0.05)


def test_pairing_gives_up_the_oldest_frames_the_node_rejected():
    pairing = Pairing(BagEvaluation("b", get_protocol("synth_indoor")), timeout_s=30.0)
    frames = [frame(i) for i in range(3)]
    for i, f in enumerate(frames):
        pairing.sent(i, f, now=0.0)
    pairing.rejected(collections.Counter({"out_of_order_stamp": 2}))
    assert list(pairing.in_flight) == [frames[2].stamp_ns]
    pairing.arrived(frames[2].stamp_ns, np.full((4, 6), 2.0, np.float32))
    assert pairing.counts()["frames_rejected"] == 2 and pairing.counts()["frames_lost"] == 2
    assert pairing.rejections == {"out_of_order_stamp": 2}


def test_pacing_and_the_kb_cropped_view():
    fixed, recorded = ReplaySettings("fixed", rate=4.0), ReplaySettings("recorded")
    assert due_s(fixed, 3, 0, 0) == 0.75
    assert due_s(recorded, 3, 1_250_000_000, 1_000_000_000) == 0.25

    K = np.array([[700.0, 0, 620.0], [0, 700.0, 187.0], [0, 0, 1]])
    full = BagFrame(0, "cam", np.zeros((375, 1242, 3), np.uint8), np.zeros((375, 1242), np.float32), K)
    rgb, K_crop, P_crop, width, height = published_view(full, crop=True)
    assert rgb.shape == (352, 1216, 3) and (width, height) == (1216, 352)
    # the crop keeps the bottom rows and the centred columns: origin (13, 23)
    assert (K_crop[0, 2], K_crop[1, 2], P_crop[0, 2], P_crop[1, 2]) == (607.0, 164.0, 607.0, 164.0)
    assert published_view(full, crop=False)[0] is full.rgb


def test_rate_options_are_checked(capsys):
    assert main(["replay", "bag", "--out", "out", "--rate-mode", "fixed"]) == 2
    assert "fixed needs --rate" in capsys.readouterr().err


def test_without_a_depth_node_it_says_what_is_missing(tmp_path, namespace, capsys):
    bag = write_synth_bag(tmp_path / "bag", frames=1, size=SIZE, progress=False)
    rc = main(["replay", str(bag), "--out", str(tmp_path / "out"), "--wait", "1", "--no-progress",
               "--ros-args", "-r", f"__ns:={namespace}"])
    assert rc == 2
    assert f"nothing subscribes to {namespace}/image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- through the live node ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replay_through_the_node_equals_evaluate(tmp_path, checkpoint, depth_node, namespace, storage):
    bag = write_synth_bag(tmp_path / "bag", frames=3, size=SIZE, storage=storage, progress=False)
    evaluated = evaluate(bag, tmp_path / "evaluate", checkpoint)
    # The node's image input stays best effort: in one process nothing gets lost (and a QoS override
    # here would leak into later nodes of this process: rclpy writes it into the node's INPUT_QOS).
    with depth_node():
        rc, replayed = replay(bag, tmp_path / "replay", namespace)
    assert rc == 0
    assert_same_scores(replayed, evaluated)
    assert replayed["inference"] == {"replay": "lockstep", "frames_published": 3, "depth_received": 3,
                                     "frames_lost": 0, "frames_rejected": 0, "depth_late": 0, "rejections": {}}
    assert replayed["pred_topic"] == f"{namespace}/depth/image" and replayed["complete"] is True
    assert (tmp_path / "replay" / "per_frame.csv").read_text().count("scored") == 3


@pytest.mark.slow
@pytest.mark.parametrize("method, motion", [("scale+ema", "static"), ("motion-ema", "forward")])
def test_replay_through_a_filtering_node_equals_evaluate_with_the_filter(tmp_path, checkpoint, depth_node, namespace,
                                                                         method, motion):
    """The node's temporal_filter and `evaluate --temporal-filter` filter the same predictions in the
    same order with the same restarts (motion-ema: with the same images and K, the camera walking):
    the same scores, TAE and flicker included."""
    bag = write_synth_bag(tmp_path / "bag", frames=4, size=SIZE, motion=motion, progress=False)
    rc = main(["evaluate", str(bag), "--model", checkpoint, "--device", "cpu", "--out", str(tmp_path / "evaluate"),
               "--no-progress", "--temporal-filter", method])
    assert rc == 0
    evaluated = json.loads((tmp_path / "evaluate" / "summary.json").read_text())
    unfiltered = evaluate(bag, tmp_path / "unfiltered", checkpoint)
    with depth_node(temporal_filter=method):
        rc, replayed = replay(bag, tmp_path / "replay", namespace)
    assert rc == 0
    assert_same_scores(replayed, evaluated)
    metrics = ("tae", "flicker") if motion == "static" else ("tae",)
    for name in metrics:
        assert replayed["temporal"][name] == pytest.approx(evaluated["temporal"][name], rel=1e-5), name
    assert replayed["temporal"]["pairs"] == evaluated["temporal"]["pairs"] == 3
    # The filter did something: without it the temporal error is another (the tiny random model's
    # depth of a walk changes by more than the motion between frames: motion-ema mostly restarts).
    assert evaluated["temporal"][metrics[-1]] != pytest.approx(unfiltered["temporal"][metrics[-1]],
                                                                rel=1e-3 if motion == "static" else 1e-7)


@pytest.mark.slow
def test_bags_with_the_same_stamps_replay_back_to_back(tmp_path, depth_node, namespace):
    """A second bag starting at the first one's stamps (each shorter than a second) is a new
    sequence for the node: every frame of both is scored, none rejected."""
    bags = [write_synth_bag(tmp_path / f"bag{i}", frames=6, seed=i, size=SIZE, progress=False) for i in (1, 2)]
    with depth_node() as spinner:
        results = [replay(bag, tmp_path / f"replay{i}", namespace) for i, bag in enumerate(bags)]
        node = spinner.executor.get_nodes()[0]
        assert sum(node.camera().stats.rejected.values()) == 0, node.camera().stats.rejected
    for rc, summary in results:
        assert rc == 0
        assert summary["frames"] == 6 and summary["inference"]["frames_rejected"] == 0, summary["inference"]


@pytest.mark.slow
def test_a_replay_to_a_node_that_rejects_its_frames_ends_promptly_and_says_why(tmp_path, depth_node, namespace,
                                                                                capsys):
    bag = write_synth_bag(tmp_path / "bag", frames=4, size=SIZE, progress=False)
    with depth_node(max_image_pixels=100):  # smaller than every frame
        started = time.monotonic()
        rc, summary = replay(bag, tmp_path / "replay", namespace, "--timeout", "60")
        elapsed = time.monotonic() - started
    assert rc == 1
    assert summary["inference"]["frames_rejected"] == 4 and summary["inference"]["rejections"] == {"image_too_large": 4}
    assert elapsed < 20, elapsed  # about a diagnostics period per frame, never the 60 s timeout
    assert "the depth node rejected frames: image_too_large 4" in capsys.readouterr().err


@pytest.mark.slow
def test_replay_to_a_node_process_at_the_recorded_rate(tmp_path, checkpoint, namespace, capfd):
    """Across processes, with the reliable image input the launch file sets, and JPEG frames."""
    bag = write_synth_bag(tmp_path / "bag", frames=3, size=SIZE, image_format="jpeg", progress=False)
    evaluated = evaluate(bag, tmp_path / "evaluate", checkpoint)
    params = {"model": checkpoint, **REPLAY_PARAMS, **reliable_image(namespace)}
    command = [sys.executable, "-m", "zoedepth_ros.cli", "node", "--ros-args", "-r", f"__ns:={namespace}"]
    for name, value in params.items():
        command += ["-p", f"{name}:={json.dumps(value) if not isinstance(value, str) else value}"]
    node = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        started = time.monotonic()
        # the recorded rate (10 Hz) is slower than the tiny model: nothing may get lost
        rc, replayed = replay(bag, tmp_path / "replay", namespace, "--rate-mode", "recorded", "--timeout", "20")
        elapsed = time.monotonic() - started
    finally:
        output = stop_process(node, sig=signal.SIGINT)
    assert rc == 0, output
    assert_same_scores(replayed, evaluated)
    assert replayed["inference"]["frames_lost"] == 0 and elapsed < 60, (replayed["inference"], elapsed)
    assert node.returncode == 0 and "Traceback" not in output, output
    assert "best effort" not in capfd.readouterr().err  # the QoS override given with -p took effect


class SlowEstimator(DepthEstimator):
    DELAY_S = 0.4

    def predict_batch(self, images, with_std=False):
        time.sleep(self.DELAY_S)
        return super().predict_batch(images, with_std)


@pytest.mark.slow
def test_a_rate_above_the_node_counts_the_lost_frames(tmp_path, depth_node, namespace, monkeypatch):
    """The node keeps only the newest frame: frames it skipped are given up as soon as a later
    frame's depth comes back, not after the timeout."""
    monkeypatch.setattr("zoedepth_ros.inference.DepthEstimator", SlowEstimator)
    bag = write_synth_bag(tmp_path / "bag", frames=6, size=SIZE, progress=False)
    with depth_node():
        started = time.monotonic()
        rc, summary = replay(bag, tmp_path / "replay", namespace, "--rate", "50", "--timeout", "30")
        elapsed = time.monotonic() - started
    assert rc == 0
    counts = summary["inference"]
    assert counts["replay"] == "fixed" and counts["frames_published"] == 6 and counts["depth_late"] == 0
    assert counts["frames_lost"] >= 1 and counts["depth_received"] + counts["frames_lost"] == 6, counts
    assert summary["frames"] == counts["depth_received"]
    assert summary["unpaired"]["frames_without_prediction"] == counts["frames_lost"]
    assert elapsed < 20, elapsed  # not one 30 s timeout


@pytest.mark.slow
def test_sigterm_writes_what_was_scored(tmp_path, context, namespace):
    """A launch shutdown (SIGTERM) while a frame is in flight: the reports are written, incomplete.
    The stand-in node subscribes best effort, as the depth node does by default: a warning says so."""
    bag = write_synth_bag(tmp_path / "bag", frames=2, size=SIZE, progress=False)
    silent = rclpy.create_node("silent_depth_node", namespace=namespace, context=context)
    got_image = threading.Event()
    silent.create_subscription(Image, "image", lambda msg: got_image.set(), qos_profile_sensor_data)
    silent.create_publisher(Image, "depth/image", 1)  # never publishes
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "zoedepth_ros.cli", "replay", str(bag), "--out", str(out),
                             "--no-progress", "--ros-args", "-r", f"__ns:={namespace}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with Spinner(context, silent):
            assert got_image.wait(60)
            time.sleep(0.5)  # for the replay to book the frame it sent (a signal may land in between)
            output = stop_process(proc, timeout=30, sig=signal.SIGTERM)
    finally:
        stop_process(proc, sig=signal.SIGKILL)  # nothing left to do unless the test failed before
        silent.destroy_node()
    assert proc.returncode == 130, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["frames"] == 0
    assert summary["inference"]["frames_published"] == 1
    assert "interrupted" in output and "Traceback" not in output
    assert f"the depth node subscribes to {namespace}/image best effort" in output


# --- launch file ----------------------------------------------------------------------------


def test_launch_file_starts_the_depth_node_and_the_replay():
    description = launch_description(LAUNCH_FILE)
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    declared = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert {"bag", "model", "device", "out", "protocol"} <= declared
    context = LaunchContext()
    context.launch_configurations.update({
        "bag": "b", "out": "o", "model": "m", "device": "cpu", "precision": "fp32", "protocol": "nyu",
        "max_depth": "1000.0", "rate_mode": "lockstep", "namespace": "zoedepth_eval",
        "temporal_filter": "none"})
    opaque = next(a for a in description.entities if isinstance(a, OpaqueFunction))
    nodes = [a for a in opaque.execute(context) if hasattr(a, "node_executable")]
    assert sorted(n.node_executable for n in nodes) == ["depth_node", "replay_node"]
