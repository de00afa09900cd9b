"""Long runs: thousands of frames through Fast DDS, and repeated lifecycle cycles, with memory,
latency and threads watched.

Frames go in a closed loop (send one, wait for all its outputs) from a camera in another process,
so each round trip is one frame's latency and every frame is processed; the inputs are made
reliable so none is lost on the way. A tiny model on one CPU thread keeps a frame at a few tens
of milliseconds, so the default 5,000 frames take about three minutes.

    ZOEDEPTH_SOAK_FRAMES=50000 ZOEDEPTH_SOAK_CYCLES=200 pytest test/test_soak.py -s   # a longer run
"""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ros_helpers import native_threads, reliable_inputs, rss_bytes, send_frame, wait_until

FRAMES = int(os.environ.get("ZOEDEPTH_SOAK_FRAMES", "5000"))
CYCLES = int(os.environ.get("ZOEDEPTH_SOAK_CYCLES", "20"))
WARMUP = max(FRAMES // 10, 50)  # frames before the reference memory and latency are taken
WINDOW = max(FRAMES // 10, 50)  # frames whose median latency is compared, after warm-up and at the end
OUTPUTS = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2,
           "depth/colormap": Image}
SUCCESS = TransitionCallbackReturn.SUCCESS


@pytest.fixture
def harness_options(namespace):
    return {"size": (48, 32), **reliable_inputs(namespace)}


@pytest.mark.serial
@pytest.mark.slow
def test_thousands_of_frames_with_stable_memory_and_latency(ros):
    node = ros.depth_node()
    # Kept: the last few frames' outputs only, so memory growth is the node's.
    collector = ros.collector(OUTPUTS, history=4)
    diagnostics = ros.collector({"/diagnostics": DiagnosticArray}, name="diagnostics_collector", history=4)
    round_trips = np.empty(FRAMES)
    rss = {}
    with ros.spin(), ros.camera() as camera:
        assert node.autostart()
        started = time.monotonic()
        for i in range(FRAMES):
            sent = time.perf_counter()
            send_frame(camera, collector, divmod(10**12 + i * 10**7, 10**9), OUTPUTS, timeout=10.0, seed=i % 8)
            round_trips[i] = time.perf_counter() - sent
            if i + 1 in (WARMUP, FRAMES):
                gc.collect()
                rss[i + 1] = rss_bytes()
        elapsed = time.monotonic() - started
        assert wait_until(lambda: ros.latest_diagnostics(diagnostics).get("frames out") == str(FRAMES), timeout=5.0)
        reported = ros.latest_diagnostics(diagnostics)

    assert reported["frames in"] == str(FRAMES)
    assert reported["frames dropped as stale"] == "0" and reported["frames rejected"] == "0"
    growth = rss[FRAMES] / rss[WARMUP] - 1
    settled = np.median(round_trips[WARMUP:WARMUP + WINDOW])
    final = np.median(round_trips[-WINDOW:])
    slope = np.polyfit(np.arange(FRAMES - WARMUP), round_trips[WARMUP:], 1)[0]
    print(f"\nsoak: {FRAMES} frames in {elapsed:.0f} s; RSS {rss[WARMUP] / 2**20:.1f} MiB after {WARMUP} frames, "
          f"{rss[FRAMES] / 2**20:.1f} MiB at the end ({growth:+.2%}); median round trip {settled * 1e3:.1f} ms "
          f"after warm-up, {final * 1e3:.1f} ms at the end; trend {slope * 1e3 * 1000:+.3f} ms per 1000 frames")
    assert growth < 0.05
    # Shared cores make single frames noisy; a leak-like slow-down moves the median of a window.
    assert final < 1.5 * settled + 0.005


@pytest.mark.slow
def test_lifecycle_cycles_leak_neither_memory_nor_threads(ros):
    node = ros.depth_node(autostart=False)
    collector = ros.collector({"depth/image": Image}, history=4)

    def cycle(i: int) -> None:
        assert node.trigger_configure() == SUCCESS
        assert node.trigger_activate() == SUCCESS
        # A new subscription each time: the camera may publish before it is matched, hence the resends.
        send_frame(camera, collector, (30_000 + i, 0), {"depth/image": Image}, timeout=3.0, attempts=5)
        assert node.trigger_deactivate() == SUCCESS
        assert node.trigger_cleanup() == SUCCESS

    with ros.spin(), ros.camera() as camera:
        # Warm-up: allocator pools, lazily imported modules and DDS resources settle.
        for i in range(3):
            cycle(i)
        gc.collect()
        before = rss_bytes(), threading.active_count(), native_threads()
        for i in range(3, 3 + CYCLES):
            cycle(i)
        gc.collect()
        after = rss_bytes(), threading.active_count(), native_threads()

    print(f"\nlifecycle: {CYCLES} cycles; RSS {before[0] / 2**20:.1f} -> {after[0] / 2**20:.1f} MiB, "
          f"Python threads {before[1]} -> {after[1]}, native threads {before[2]} -> {after[2]}")
    assert after[1:] == before[1:]
    assert after[0] < 1.05 * before[0]
