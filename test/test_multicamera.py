"""One depth node serving several cameras (`cameras`): each camera's outputs equal a single-camera
node's, frames of cameras that share a network size run as one batch (each routed to its own
head), every camera gets the same output rate under saturation, and one camera's bad messages,
death or restart never cost another camera its outputs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.model import save_checkpoint

from image_samples import block_image
from ros_helpers import BatchRecorder, CameraProcess, camera_info, image_message, stamp_key, wait_until

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
OUTPUTS = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2}


def _routed_images(model, size):
    """Two (H, W, 3) images the model routes to different heads, once its router threshold is
    moved half way between their logit gaps (as test_router does with tensors)."""
    candidates = [np.clip(block_image(*size, seed) * (0.2 + 0.15 * seed), 0, 255).astype(np.uint8)
                  for seed in range(12)]
    estimator = DepthEstimator(model, device="cpu")
    logits = np.stack([p.domain_logits for p in estimator.predict_batch(candidates)])
    gap = logits[:, 1] - logits[:, 0]
    lo, hi = int(gap.argmin()), int(gap.argmax())
    with torch.no_grad():
        model.metric_head.router.classifier[2].bias[1] -= float(0.5 * (gap[lo] + gap[hi]))
    return candidates[lo], candidates[hi]


@pytest.fixture(scope="module")
def split_routes(tmp_path_factory, tiny_model):
    """(checkpoint, indoor image, outdoor image): a tiny NK whose router sends the two 30x40 images
    to different heads."""
    model = tiny_model("NK", (32, 32))
    indoor, outdoor = _routed_images(model, (30, 40))
    path = save_checkpoint(model, tmp_path_factory.mktemp("split_routes") / "nk.safetensors")
    domains = [p.domain for p in DepthEstimator(str(path), device="cpu").predict_batch([indoor, outdoor])]
    assert domains == ["nyu", "kitti"], domains
    return str(path), indoor, outdoor


@pytest.fixture
def checkpoint(split_routes):
    return split_routes[0]


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr("zoedepth_ros.inference.DepthEstimator", BatchRecorder)
    BatchRecorder.batches, BatchRecorder.DELAY_S = [], 0.0
    return BatchRecorder


def _reliable_inputs(namespace: str, cameras: list[str]) -> dict[str, object]:
    """Reliable inputs for every camera: these tests count every frame."""
    return {f"qos_overrides.{namespace}/{prefix}{topic}.subscription.reliability": "reliable"
            for prefix in [f"{c}/" for c in cameras] or [""] for topic in ("image", "camera_info")}


class Publishers:
    """Image and camera_info publishers of the named cameras ('' the single camera), in one client node."""

    def __init__(self, client, cameras: list[str]) -> None:
        self.client = client
        self.image = {c: client.create_publisher(Image, f"{c}/image" if c else "image", RELIABLE) for c in cameras}
        self.info = {c: client.create_publisher(CameraInfo, f"{c}/camera_info" if c else "camera_info", RELIABLE)
                     for c in cameras}

    def matched(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in [*self.image.values(), *self.info.values()])

    def send(self, camera: str, rgb: np.ndarray, stamp: tuple[int, int] | None = None, with_info: bool = True):
        msg = image_message(rgb, "rgb8")
        if stamp is None:
            msg.header.stamp = self.client.get_clock().now().to_msg()
        else:
            msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.header.frame_id = f"{camera or 'single'}_optical_frame"
        if with_info:
            info = camera_info(rgb.shape[1], rgb.shape[0])
            info.header = msg.header
            self.info[camera].publish(info)
        self.image[camera].publish(msg)
        return stamp_key(msg.header)


def _outputs(collector, camera: str, stamp, timeout: float = 20.0) -> dict:
    prefix = f"{camera}/" if camera else ""
    got = collector.wait(stamp, [prefix + t for t in OUTPUTS], timeout)
    assert got is not None, f"no outputs of camera {camera!r} for {stamp}"
    return {t: got[prefix + t] for t in OUTPUTS}


def _same_outputs(multi: dict, single: dict) -> None:
    """The multi-camera node's outputs of one frame equal the single-camera node's (1e-5 relative)."""
    a, b = (np.frombuffer(m["depth/image"].data, np.float32) for m in (multi, single))
    np.testing.assert_allclose(a, b, rtol=1e-5, equal_nan=True)
    ia, ib = multi["depth/camera_info"], single["depth/camera_info"]
    assert (ia.width, ia.height, list(ia.k), list(ia.p), list(ia.d)) == (ib.width, ib.height, list(ib.k),
                                                                         list(ib.p), list(ib.d))
    ca, cb = multi["depth/points"], single["depth/points"]
    assert (ca.width, ca.height, ca.point_step, [f.name for f in ca.fields]) == (
        cb.width, cb.height, cb.point_step, [f.name for f in cb.fields])
    np.testing.assert_allclose(np.frombuffer(ca.data, np.float32), np.frombuffer(cb.data, np.float32),
                               rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.slow
def test_each_camera_equals_a_single_camera_node(ros, split_routes, recorder):
    """Four cameras: an indoor and an outdoor frame and a frame at twice the resolution share one
    network size, so one batch (each frame on its own head); a wide frame runs in a batch of its
    own. Each camera's depth, camera_info and cloud equal those of a single-camera node."""
    _, indoor, outdoor = split_routes
    large = np.repeat(np.repeat(outdoor, 2, axis=0), 2, axis=1)  # 60x80
    wide = np.ascontiguousarray(np.concatenate([indoor, outdoor], axis=1))  # 30x80
    frames = {"indoor": indoor, "outdoor": outdoor, "large": large, "wide": wide}
    cameras = list(frames)
    multi = ros.depth_node(cameras=cameras, max_batch=4, **_reliable_inputs(ros.namespace, cameras))
    single = ros.depth_node("zoedepth_single", **_reliable_inputs(ros.namespace, []))
    collector = ros.collector({f"{p}{t}": m for p in ["", *(f"{c}/" for c in cameras)] for t, m in OUTPUTS.items()})
    publishers = Publishers(ros.client("cameras"), ["", *cameras])
    with ros.spin():
        assert multi.autostart() and single.autostart()
        assert wait_until(publishers.matched, timeout=20.0)
        # A first frame occupies the (slowed) model while the others arrive: they then run together.
        recorder.DELAY_S = 0.8
        warmup = publishers.send("indoor", indoor, (1, 0))
        time.sleep(0.3)
        stamps = {camera: publishers.send(camera, rgb, (10 + i, 0)) for i, (camera, rgb) in enumerate(frames.items())}
        got = {camera: _outputs(collector, camera, stamp) for camera, stamp in stamps.items()}
        _outputs(collector, "indoor", warmup)
        recorder.DELAY_S = 0.0
        batched = [b for b in recorder.batches if len(b["shapes"]) > 1]
        for camera, rgb in frames.items():
            expected = _outputs(collector, "", publishers.send("", rgb, stamps[camera]))
            _same_outputs(got[camera], expected)
            assert got[camera]["depth/image"].header.frame_id == f"{camera}_optical_frame"
    # The batch of one network size: both heads in it; the wide frame alone.
    assert len(batched) == 1, recorder.batches
    assert sorted(zip(batched[0]["shapes"], batched[0]["domains"], strict=True)) == [
        ((30, 40, 3), "kitti"), ((30, 40, 3), "nyu"), ((60, 80, 3), "kitti")]
    assert [(30, 80, 3)] in [b["shapes"] for b in recorder.batches]


def _camera_statuses(ros, collector) -> dict[str, DiagnosticStatus]:
    """The latest status of the node and of each camera, by name suffix ("depth estimation", "camera C")."""
    latest = {}
    for status in ros.diagnostics(collector):
        latest[status.name.split(": ", 1)[1]] = status
    return latest


@pytest.mark.serial
@pytest.mark.slow
@pytest.mark.parametrize("max_batch, batch_size", [(3, 3), (2, 2), (0, 1)], ids=["all", "capped", "auto-cpu"])
def test_saturated_cameras_share_the_model_fairly(ros, recorder, max_batch, batch_size):
    """Three cameras at 30 Hz on a model that takes 0.1 s a batch: each camera's output rate
    within 10 % of the others', and every output at most two batches old (one camera's bound).
    Batches hold every camera's frame, or max_batch frames (auto: one on CPU), the cameras left
    out going first in the next batch."""
    cameras = ["a", "b", "c"]
    node = ros.depth_node(cameras=cameras, publish_points=False, max_batch=max_batch,
                          **_reliable_inputs(ros.namespace, cameras))
    collector = ros.collector({f"{c}/depth/image": Image for c in cameras})
    diagnostics = ros.collector({"/diagnostics": DiagnosticArray}, name="diagnostics_collector")
    publishers = Publishers(ros.client("cameras"), cameras)
    rgb = block_image(30, 40, 3)
    stop = threading.Event()

    def stream():
        period, next_at = 1.0 / 30.0, time.monotonic()
        while not stop.is_set():
            for camera in cameras:
                publishers.send(camera, rgb)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    with ros.spin():
        assert node.autostart()
        assert wait_until(publishers.matched, timeout=20.0)
        recorder.DELAY_S = 0.1
        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        try:
            time.sleep(1.0)  # past the start
            before = {c: len(collector.messages(f"{c}/depth/image")) for c in cameras}
            time.sleep(6.0)
            counts = {c: len(collector.messages(f"{c}/depth/image")) - before[c] for c in cameras}
        finally:
            stop.set()
            streamer.join()
        assert ros.wait_report(diagnostics)  # a diagnostics report after the run
        statuses = _camera_statuses(ros, diagnostics)
    assert min(counts.values()) >= 0.9 * max(counts.values()) > 0, counts
    # Saturated: more frames came in than the model could take, and the batches were full.
    assert sum(counts.values()) < 0.8 * 6.0 * 30 * len(cameras), counts
    sizes = [len(b["shapes"]) for b in recorder.batches[-20:]]
    assert max(sizes) == batch_size and np.mean(sizes) > batch_size - 0.5, sizes
    longest_batch = max(b["seconds"] for b in recorder.batches)
    for camera in cameras:
        ages = list(node.camera(camera).stats.end_to_end_s)
        assert ages and max(ages) < 2 * longest_batch + 0.25, (camera, max(ages), longest_batch)
    assert {f"camera {c}" for c in cameras} <= set(statuses)
    values = {kv.key: kv.value for kv in statuses["depth estimation"].values}
    assert values["cameras"] == "a, b, c" and float(values["frames per batch mean"]) > batch_size - 0.5
    assert values["largest batch"] == str(batch_size)


class GoodCamera:
    """Camera `good` streaming valid frames at 10 Hz in a thread; counts nothing itself."""

    def __init__(self, publishers: Publishers) -> None:
        self._publishers, self._stop = publishers, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rgb = block_image(30, 40, 5)
        while not self._stop.wait(0.1):
            self._publishers.send("good", rgb)

    def __enter__(self) -> GoodCamera:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_a_failing_camera_never_costs_another_its_outputs(ros, namespace):
    """Camera `bad` sends garbage images and camera_info, then its driver process dies and
    restarts with an older clock; camera `good` is served throughout, and each camera's
    diagnostics say what happened to it alone. Per-camera qos_overrides apply to that camera."""
    cameras = ["good", "bad"]
    node = ros.depth_node(cameras=cameras, publish_points=False, **{
        **_reliable_inputs(namespace, ["good"]),
        f"qos_overrides.{namespace}/bad/image.subscription.reliability": "best_effort"})
    collector = ros.collector({f"{c}/depth/image": Image for c in cameras})
    diagnostics = ros.collector({"/diagnostics": DiagnosticArray}, name="diagnostics_collector")
    publishers = Publishers(ros.client("cameras"), cameras)
    served = lambda: len(collector.messages("good/depth/image"))  # noqa: E731

    def good_keeps_going(timeout: float = 10.0) -> None:
        start = served()
        assert wait_until(lambda: served() >= start + 5, timeout=timeout), "camera good is no longer served"

    with ros.spin():
        assert node.autostart()
        assert node.camera("bad").image_input.reliability == "best_effort"
        assert node.camera("good").image_input.reliability == "reliable"
        assert wait_until(publishers.matched, timeout=20.0)
        with GoodCamera(publishers):
            good_keeps_going()
            # Garbage on camera bad: a short buffer, an unknown encoding, no frame id, a camera_info with NaN.
            rgb = block_image(30, 40, 1)
            short = image_message(rgb, "rgb8")
            short.data = bytes(short.data)[:100]
            unknown = image_message(rgb, "rgb8")
            unknown.encoding = "no_such_encoding"
            anonymous = image_message(rgb, "rgb8")
            info = camera_info(40, 30)
            info.k = [float("nan")] * 9
            for msg in (short, unknown, anonymous):
                msg.header.stamp = publishers.client.get_clock().now().to_msg()
                msg.header.frame_id = "" if msg is anonymous else "bad_optical_frame"
                publishers.image["bad"].publish(msg)
                publishers.info["bad"].publish(info)
                time.sleep(0.05)
            good_keeps_going()
            assert wait_until(lambda: sum(node.camera("bad").stats.rejected.values()) >= 6, timeout=10.0), \
                node.camera("bad").stats.rejected
            # The bad camera's driver, as a process: it runs, dies (SIGKILL) and restarts with an older clock.
            for start_sec in (2000, 1000):
                with CameraProcess(f"{namespace}/bad", 40, 30) as driver:
                    before = len(collector.messages("bad/depth/image"))
                    for i in range(3):
                        driver.send(stamp=[start_sec + i, 0])
                        time.sleep(0.2)
                    assert wait_until(lambda n=before: len(collector.messages("bad/depth/image")) > n, timeout=10.0)
                    driver.proc.kill()
                    good_keeps_going()
        assert ros.wait_report(diagnostics)  # a diagnostics report after it all
        statuses = _camera_statuses(ros, diagnostics)
    assert not node.camera("good").stats.rejected, node.camera("good").stats.rejected
    rejected = node.camera("bad").stats.rejected
    assert {"short_data", "unsupported_encoding", "empty_frame_id"} <= set(rejected), rejected
    assert any(reason.startswith("camera_info: ") for reason in rejected), rejected
    good_values = {kv.key: kv.value for kv in statuses["camera good"].values}
    assert good_values.get("frames rejected") == "0", good_values
    bad_values = {kv.key: kv.value for kv in statuses["camera bad"].values}
    assert int(bad_values["frames rejected"]) >= 6 and int(bad_values["frames out"]) >= 6, bad_values
