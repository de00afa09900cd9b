"""Faults around a running depth node: camera_info that stops, a camera that restarts (and its
clock with it), a cloud subscriber that leaves or dies, a CUDA out-of-memory or device error in
one frame, and a checkpoint of another architecture. The node must keep serving through each.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from zoedepth_ros.cloud import CloudBuilder
from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.model import CheckpointError, load_model
from zoedepth_ros.ros.processes import stop_process

from ros_helpers import P_CX, P_CY, P_FX, P_FY, REPO, Harness, send_frame, wait_until

DEPTH = {"depth/image": Image}
WITH_CLOUD = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2}
DIAGNOSTICS = {"/diagnostics": DiagnosticArray}


def latest_status(ros, collector) -> DiagnosticStatus | None:
    statuses = ros.diagnostics(collector)
    return statuses[-1] if statuses else None


def p_of(info) -> list[float]:
    return [info.p[i] for i in (0, 2, 5, 6)]


@pytest.mark.slow
def test_camera_info_that_stops_leaves_depth_and_the_last_intrinsics_and_warns(ros, capfd):
    node = ros.depth_node(camera_info_timeout_s=1.0)
    collector = ros.collector(WITH_CLOUD)
    diagnostics = ros.collector(DIAGNOSTICS, name="diagnostics_collector")
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        send_frame(camera, collector, (100, 0), WITH_CLOUD)
        # The camera goes on without camera_info: depth, depth/camera_info and the cloud continue,
        # from the last camera_info received, and once it is older than the timeout a warning.
        for i in range(1, 5):
            outputs = send_frame(camera, collector, (100 + i, 0), WITH_CLOUD, info_scale=0)
            np.testing.assert_allclose(p_of(outputs["depth/camera_info"]), [P_FX, P_CX, P_FY, P_CY])
            time.sleep(0.4)
        assert wait_until(lambda: "no camera_info for" in latest_status(ros, diagnostics).message, timeout=5.0)
        assert latest_status(ros, diagnostics).level == DiagnosticStatus.WARN
        # It comes back: the warning goes.
        send_frame(camera, collector, (110, 0), WITH_CLOUD)
        assert wait_until(lambda: latest_status(ros, diagnostics).level == DiagnosticStatus.OK, timeout=5.0)
    assert "no valid camera_info on" in capfd.readouterr().err


@pytest.mark.slow
def test_a_restarted_camera_is_served_even_when_its_clock_restarted(ros, capfd):
    node = ros.depth_node()
    collector = ros.collector(DEPTH)
    with ros.spin():
        assert node.autostart()
        with ros.camera() as camera:
            send_frame(camera, collector, (500, 0), DEPTH)
            send_frame(camera, collector, (500, 40_000_000), DEPTH)
        # A new camera process (a new DDS participant) whose stamps start 400 s earlier.
        with ros.camera() as camera:
            send_frame(camera, collector, (100, 0), DEPTH, timeout=10.0, attempts=3)
            send_frame(camera, collector, (100, 40_000_000), DEPTH)
    log = capfd.readouterr().err
    assert "image stamps went back 400.0 s (from a new publisher): taking it as a restarted camera" in log
    assert "[" not in log.split("image stamps went back")[1].splitlines()[0]  # a warning, not a rejection


def test_a_pause_starts_a_new_sequence_and_stamps_are_checked_within_it(ros, capfd):
    """The same publisher sends a short sequence again (a bag played twice, shorter than 1 s)."""
    node = ros.depth_node(new_sequence_after_s=1.0)
    collector = ros.collector(DEPTH)
    stamps = [(700, 0), (700, 40_000_000), (700, 80_000_000)]
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        for stamp in stamps:
            send_frame(camera, collector, stamp, DEPTH)
        time.sleep(1.5)
        del collector.received[stamps[0]]
        send_frame(camera, collector, stamps[0], DEPTH)  # the first stamp again, after a pause: served
        camera.send(stamp=list(stamps[0]))  # and once more at once: a duplicate within the new sequence
        assert wait_until(lambda: node.camera().stats.rejected["repeated_stamp"] == 1, timeout=10.0)
        camera.send(stamp=[699, 990_000_000])  # 0.01 s before it, no pause: reordered
        assert wait_until(lambda: node.camera().stats.rejected["out_of_order_stamp"] == 1, timeout=10.0)
    assert "image stamps went back 0.1 s (after 1." in capfd.readouterr().err


# Subscribes to depth/points in a separate process, as a viewer would; killed without warning.
POINTS_VIEWER = """
import sys
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
rclpy.init()
node = rclpy.create_node("points_viewer", namespace=sys.argv[1])
node.create_subscription(PointCloud2, "depth/points", lambda msg: print("points", flush=True),
                         QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
rclpy.spin(node)
"""


@pytest.mark.slow
def test_cloud_subscribers_that_leave_or_die_do_not_stall_the_node(ros, monkeypatch):
    builds = []
    build = CloudBuilder.build
    monkeypatch.setattr(CloudBuilder, "build", lambda self, *args: builds.append(1) or build(self, *args))
    node = ros.depth_node()
    collector = ros.collector({"depth/image": Image, "depth/camera_info": CameraInfo})
    points = ros.collector({"depth/points": PointCloud2}, name="points_collector")
    with ros.spin() as spinner, ros.camera() as camera:
        assert node.autostart()
        send_frame(camera, collector, (700, 0), {"depth/image": Image})
        assert wait_until(lambda: points.messages("depth/points"), timeout=10.0)

        # A subscriber that leaves cleanly: the node stops building clouds, depth goes on.
        spinner.executor.remove_node(points)
        ros.nodes.remove(points)
        points.destroy_node()
        points_publisher = node.camera().outputs.publishers["depth/points"]
        assert wait_until(lambda: points_publisher.get_subscription_count() == 0, timeout=10.0)
        built = len(builds)
        for i in range(1, 3):
            send_frame(camera, collector, (700 + i, 0), {"depth/image": Image, "depth/camera_info": CameraInfo})
        assert len(builds) == built

        # A subscriber that dies (SIGKILL: DDS learns of it only when its lease expires): the
        # reliable, keep-last publisher never waits for it.
        viewer = subprocess.Popen([sys.executable, "-c", POINTS_VIEWER, ros.namespace], stdout=subprocess.DEVNULL,
                                  cwd=REPO)
        try:
            assert wait_until(lambda: points_publisher.get_subscription_count() == 1,
                              timeout=30.0)
            send_frame(camera, collector, (710, 0), DEPTH)
        finally:
            stop_process(viewer, sig=signal.SIGKILL)
        for i in range(1, 6):
            started = time.monotonic()
            send_frame(camera, collector, (710 + i, 0), DEPTH, timeout=5.0)
            assert time.monotonic() - started < 5.0


class FailingEstimator(DepthEstimator):
    """The real model, but the batch whose turn comes in `faults` raises that exception instead."""

    faults: list[BaseException | None] = []

    def predict_batch(self, images, with_std=False):
        fault = FailingEstimator.faults.pop(0) if FailingEstimator.faults else None
        if fault is not None:
            raise fault
        return super().predict_batch(images, with_std)


@pytest.mark.slow
def test_out_of_memory_and_device_errors_cost_one_frame_each(ros, monkeypatch, capfd):
    monkeypatch.setattr("zoedepth_ros.inference.DepthEstimator", FailingEstimator)
    monkeypatch.setattr(FailingEstimator, "faults", [
        None,
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        None,
        torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
        None,
    ])
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(time.monotonic()))
    node = ros.depth_node()
    collector = ros.collector(DEPTH)
    diagnostics = ros.collector(DIAGNOSTICS, name="diagnostics_collector")
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        send_frame(camera, collector, (900, 0), DEPTH)
        for stamp, reason in (((901, 0), "out_of_memory"), ((903, 0), "device_error")):
            camera.send(stamp=list(stamp))
            assert wait_until(
                lambda reason=reason: ros.latest_diagnostics(diagnostics).get(f"rejected: {reason}") == "1",
                timeout=10.0)
            send_frame(camera, collector, (stamp[0] + 1, 0), DEPTH)  # the next frame is served
        assert not {(901, 0), (903, 0)} & set(collector.received)
        assert len(emptied) == 1  # after the out-of-memory frame only
        assert node._worker.is_alive()
    log = capfd.readouterr().err
    assert "frame dropped, out of memory on cpu: CUDA out of memory" in log and "[out_of_memory]" in log
    assert "frame dropped, device error on cpu: CUDA error: an illegal memory access" in log


def test_a_qos_override_stays_on_its_topic(ros, context):
    camera_info_depth = f"qos_overrides.{ros.namespace}/camera_info.subscription.depth"
    node = ros.depth_node(**{camera_info_depth: 7})
    assert node.autostart()
    assert node.get_parameter(camera_info_depth).value == 7
    assert node.get_parameter(f"qos_overrides.{ros.namespace}/image.subscription.depth").value == 1
    other = Harness(context, ros.namespace + "_other", ros.checkpoint)
    try:
        assert other.depth_node().autostart()
        assert other.nodes[0].get_parameter(
            f"qos_overrides.{other.namespace}/camera_info.subscription.depth").value == 1
    finally:
        other.close()


def test_a_checkpoint_of_another_architecture_is_refused_with_the_keys_named(ros, tmp_path, tiny_checkpoint, capfd):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    n, nk = tiny_checkpoint("N", (32, 32)), tiny_checkpoint("NK", (32, 32))
    with safe_open(nk, "pt") as f:
        nk_metadata = f.metadata()
    # Weights of the single-head N model, labelled as the routed two-head NK model.
    mislabelled = tmp_path / "mislabelled.safetensors"
    save_file(load_file(n), str(mislabelled), metadata=nk_metadata)
    named = r"architecture; missing keys: metric_head\.heads\.kitti\..*; shape mismatches: metric_head\.heads\.nyu"
    with pytest.raises(CheckpointError, match=named):
        load_model(mislabelled)

    node = ros.depth_node(model=str(mislabelled))
    assert not node.autostart()
    log = capfd.readouterr().err
    assert "configure failed, node stays unconfigured" in log and "missing keys" in log
