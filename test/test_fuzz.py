"""Message fuzzing: malformed and hostile Image, CompressedImage and CameraInfo messages, sent
through Fast DDS to a live depth node, with valid frames interleaved.

Every message has a known fate, worked out here when it is generated: rejected under a given
reason, or processed into depth that must equal the model's prediction for the decoded picture.
At the end the node's /diagnostics must count exactly the messages published and, per reason,
exactly the rejections expected; the log must name each reason, throttled; no exception may have
escaped a callback; resident memory must be stable.

Delivery is made lossless (reliable inputs, batches shorter than the subscription depth) so the
counts can be exact. The final frame of each batch (a valid frame or a payload that only the
decoder can reject) is sent alone and awaited: the node keeps only the newest frame, and a second
one would replace it unprocessed, by design.

    ZOEDEPTH_FUZZ_MESSAGES=200000 ZOEDEPTH_FUZZ_SEED=7 pytest test/test_fuzz.py   # a longer run
"""

from __future__ import annotations

import collections
import os
import re
import time
import tracemalloc
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from zoedepth_ros.camera_info import intrinsics_from_camera_info
from zoedepth_ros.image_codec import ImageDecodeError, decode_compressed_msg, decode_image_msg
from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.inference.temporal_filter import DEFAULT_TEMPORAL_FILTER, MOTION_STEP
from zoedepth_ros.ros.diagnostics import THROTTLE_S

from image_samples import block_image
from ros_helpers import (
    camera_info,
    image_array,
    image_message,
    reliable_inputs,
    rss_bytes,
    stamp_key,
    wait_until,
)

MESSAGES = int(os.environ.get("ZOEDEPTH_FUZZ_MESSAGES", "10000"))
SEED = int(os.environ.get("ZOEDEPTH_FUZZ_SEED", "20240611"))
W, H = 48, 32
LIMIT = 20_000  # max_image_pixels: 125 x 160 is exactly at it
FRAME_ID = "fuzz_camera_optical_frame"
MIN_DEPTH, MAX_DEPTH = 0.1, 80.0
QUEUE = 100  # subscription and publisher depth; batches stay below it
VALID_RAW = [("rgb8", 0), ("bgr8", 5), ("mono16", 2), ("bayer_grbg8", 0), ("yuyv", 0)]
UNKNOWN_ENCODINGS = ["", "RGB8", "nv12", "rgb8 ", "jpeg", "x" * 300, "bayer_rggb32", "ëncoding", "rgb8\n"]
GENERIC_ENCODINGS = ["32FC1", "16UC1", "8UC1", "64FC1", "8SC4"]


@dataclass
class Case:
    topic: str  # "image", "image/compressed" or "camera_info"
    msg: object
    reason: str | None  # expected rejection (None: the message is admitted)


def _png_chunk_fixed(data: bytearray, pos: int) -> None:
    """Recompute the CRC of the PNG chunk at `pos`, so only a decoder notices what was changed."""
    length = int.from_bytes(data[pos:pos + 4], "big")
    data[pos + 8 + length:pos + 12 + length] = zlib.crc32(bytes(data[pos + 4:pos + 8 + length])).to_bytes(4, "big")


class Fuzzer:
    """Seeded generator of messages, tracking the node state that decides their fate: the last
    admitted stamp and whether the camera_info the node holds fits the images."""

    def __init__(self, rng: np.random.Generator, compressed: bool) -> None:
        self.rng, self.compressed = rng, compressed
        self.topic = "image/compressed" if compressed else "image"
        self.last_admitted_ns: int | None = None
        self.next_ns = 1_700_000_000 * 10**9
        self.info: CameraInfo | None = None  # the one the node holds, as far as the messages tell
        self.pictures = [block_image(H, W, seed) for seed in range(4)]

    # ------------------------------------------------------------ headers

    def _random_header(self, msg, frame_id: str = FRAME_ID) -> None:
        msg.header.frame_id = frame_id
        msg.header.stamp.sec = int(self.rng.integers(0, 2**31))
        msg.header.stamp.nanosec = int(self.rng.integers(0, 10**9))

    def _stamp(self, msg, stamp_ns: int) -> None:
        msg.header.frame_id = FRAME_ID
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)

    def _admit(self, msg) -> None:
        self.next_ns += int(self.rng.integers(1, 50)) * 10**6
        self._stamp(msg, self.next_ns)
        self.last_admitted_ns = self.next_ns

    # ------------------------------------------------------------ pictures

    def _picture(self) -> np.ndarray:
        return self.pictures[int(self.rng.integers(len(self.pictures)))]

    def _good_payload(self):
        """A well-formed message of the phase's type, without header."""
        if self.compressed:
            return image_message(self._picture(), "rgb8", compressed=str(self.rng.choice(["png", "jpeg"])))
        encoding, padding = VALID_RAW[int(self.rng.integers(len(VALID_RAW)))]
        return image_message(self._picture(), encoding, padding)

    def valid_frame(self) -> Case:
        if not self.compressed and self.rng.random() < 0.05:
            msg = image_message(block_image(125, 160, 9), "rgb8")  # exactly max_image_pixels
        else:
            msg = self._good_payload()
        self._admit(msg)
        return Case(self.topic, msg, None)

    def decoder_only_frame(self) -> Case:
        """A compressed payload with intact structure and damaged contents: only decoding tells."""
        codec = str(self.rng.choice(["png", "jpeg"]))
        data = bytearray(image_message(self._picture(), "rgb8", compressed=codec).data)
        if codec == "png":
            pos = data.index(b"IDAT") - 4
            length = int.from_bytes(data[pos:pos + 4], "big")
            data[pos + 8 + int(self.rng.integers(2, length))] ^= int(self.rng.integers(1, 256))
            _png_chunk_fixed(data, pos)
        else:
            scan = data.index(b"\xff\xda")
            for at in self.rng.integers(scan + 20, len(data) - 2, size=3):
                data[at] = 0x00 if data[at - 1] == 0xFF else data[at] ^ 0x5A  # keep markers intact
        msg = CompressedImage(format=f"rgb8; {codec} compressed bgr8", data=bytes(data))
        self._admit(msg)
        return Case(self.topic, msg, None)

    # ------------------------------------------------------------ hostile images

    def _raw(self, encoding="rgb8", height=H, width=W, step=None, size=None) -> Image:
        step = width * 3 if step is None else step
        msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=step)
        msg.data = bytes(step * height if size is None else size)
        self._random_header(msg)
        return msg

    def _raw_case(self, reason: str) -> Image:
        rng = self.rng
        if reason == "unsupported_encoding":
            return self._raw(encoding=str(rng.choice(UNKNOWN_ENCODINGS)))
        if reason == "not_a_camera_image":
            return self._raw(encoding=str(rng.choice(GENERIC_ENCODINGS)), step=W * 4)
        if reason == "empty_image":
            return self._raw(height=0) if rng.random() < 0.5 else self._raw(width=0, step=0)
        if reason == "image_too_large":
            if rng.random() < 0.1:  # with all its data: rejected all the same, nothing decoded
                msg = image_message(block_image(160, 160, 3), "rgb8")
                self._random_header(msg)
                return msg
            height = int(rng.integers(1, 2**32))
            width = int(rng.integers(LIMIT // height + 1, 2**32))
            return self._raw(height=height, width=width, step=0, size=int(rng.integers(0, 64)))
        if reason == "bad_layout":
            if rng.random() < 0.5:
                return self._raw(encoding="yuyv", width=W - 1, step=(W - 1) * 2)
            return self._raw(encoding="bayer_rggb8", height=1, step=W)
        if reason == "bad_step":
            return self._raw(step=int(rng.integers(0, W * 3)))
        if reason == "short_data":
            return self._raw(size=int(rng.integers(0, W * 3 * H)))
        if reason == "long_data":
            return self._raw(size=W * 3 * H + int(rng.integers(1, 5000)))
        raise AssertionError(reason)

    def _compressed_case(self, reason: str) -> CompressedImage:
        rng = self.rng
        if reason == "not_a_camera_image":
            msg = CompressedImage(format=str(rng.choice(["16UC1; compressedDepth png", "32FC1; png compressed"])),
                                  data=image_message(self._picture(), "rgb8", compressed="png").data)
        elif reason == "empty_image":
            if rng.random() < 0.5:
                msg = CompressedImage(format="png", data=b"")
            else:
                data = bytearray(image_message(self._picture(), "rgb8", compressed="png").data)
                data[16:20] = (0).to_bytes(4, "big")  # IHDR width
                _png_chunk_fixed(data, 8)
                msg = CompressedImage(format="png", data=bytes(data))
        elif reason == "bad_compressed":
            kind = int(rng.integers(3))
            codec = "png" if kind == 0 else "jpeg"
            data = bytearray(image_message(self._picture(), "rgb8", compressed=codec).data)
            if kind == 0:  # a flipped bit in the image data chunk, its type or its CRC
                pos = data.index(b"IDAT") - 4
                length = int.from_bytes(data[pos:pos + 4], "big")
                data[int(rng.integers(pos + 4, pos + 12 + length))] ^= 1 << int(rng.integers(8))
            elif kind == 1:  # no structure at all
                data = bytearray(rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes())
                data[0] = 0x42
            else:  # a JPEG start, then no frame header
                data[2:] = bytes([0x00]) + rng.integers(0, 256, 500, dtype=np.uint8).tobytes()
            msg = CompressedImage(format=codec, data=bytes(data))
        elif reason == "truncated_compressed":
            codec = str(rng.choice(["png", "jpeg"]))
            data = image_message(self._picture(), "rgb8", compressed=codec).data
            start = 33 if codec == "png" else len(data) // 2  # past the PNG IHDR / the JPEG frame header
            msg = CompressedImage(format=codec, data=bytes(data[:int(rng.integers(start, len(data)))]))
        elif reason == "image_too_large":
            codec = str(rng.choice(["png", "jpeg"]))
            if rng.random() < 0.5:
                msg = image_message(block_image(160, 160, 3), "rgb8", compressed=codec)
            else:  # a header that claims a huge picture (the decoder would allocate it)
                data = bytearray(image_message(self._picture(), "rgb8", compressed="png").data)
                data[16:24] = (60_000).to_bytes(4, "big") * 2
                _png_chunk_fixed(data, 8)
                msg = CompressedImage(format="png", data=bytes(data))
        else:
            raise AssertionError(reason)
        self._random_header(msg)
        return msg

    def _header_case(self, reason: str):
        msg = self._good_payload()
        if reason == "empty_frame_id":
            self._random_header(msg, frame_id="")
        elif reason == "bad_stamp":
            self._random_header(msg)
            if self.rng.random() < 0.5:
                msg.header.stamp.nanosec = int(self.rng.integers(10**9, 2**32))
            else:
                msg.header.stamp.sec = int(self.rng.integers(-(2**31), 0))
        elif reason == "repeated_stamp":
            self._stamp(msg, self.last_admitted_ns)
        elif reason == "out_of_order_stamp":  # within a second: reordered, not a restarted camera
            self._stamp(msg, self.last_admitted_ns - int(self.rng.integers(1, 900)) * 10**6)
        else:
            raise AssertionError(reason)
        return msg

    RAW_REASONS = ("unsupported_encoding", "not_a_camera_image", "empty_image", "image_too_large", "bad_layout",
                   "bad_step", "short_data", "long_data")
    COMPRESSED_REASONS = ("not_a_camera_image", "empty_image", "bad_compressed", "truncated_compressed",
                          "image_too_large")
    HEADER_REASONS = ("empty_frame_id", "bad_stamp", "repeated_stamp", "out_of_order_stamp")

    def bad_image(self) -> Case:
        reasons = (self.COMPRESSED_REASONS if self.compressed else self.RAW_REASONS) + self.HEADER_REASONS
        reason = reasons[int(self.rng.integers(len(reasons)))]
        if reason in self.HEADER_REASONS:
            msg = self._header_case(reason)
        elif self.compressed:
            msg = self._compressed_case(reason)
        else:
            msg = self._raw_case(reason)
        return Case(self.topic, msg, reason)

    # ------------------------------------------------------------ camera_info

    INFO_REASONS = ("bad_intrinsics", "uncalibrated", "no_resolution", "bad_roi", "bad_binning", "bad_distortion",
                    "bad_rectification")

    def camera_info_case(self) -> Case:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:  # valid, possibly calibrated at twice the resolution (scaled) or frameless
            info = camera_info(W, H, scale=int(rng.integers(1, 3)))
            info.header.frame_id = str(rng.choice([FRAME_ID, ""]))
            self.info = info
            return Case("camera_info", info, None)
        if roll < 0.35:  # valid in itself, but binned to another size than the images
            info = camera_info(W, H, scale=2)
            info.binning_x = info.binning_y = 4
            self.info = info
            return Case("camera_info", info, None)
        reason = self.INFO_REASONS[int(rng.integers(len(self.INFO_REASONS)))]
        info = camera_info(W, H)
        if reason == "bad_intrinsics":
            if rng.random() < 0.5:  # a non-finite entry anywhere in K or P
                field = str(rng.choice(["k", "p"]))
                values = list(getattr(info, field))
                values[int(rng.integers(len(values)))] = float(rng.choice([np.nan, np.inf, -np.inf]))
                setattr(info, field, values)
            else:  # a zero or negative focal length (P's, the one in use)
                p = list(info.p)
                p[int(rng.choice([0, 5]))] = float(rng.choice([0.0, -1.0, -1e9]))
                info.p = p
        elif reason == "uncalibrated":
            info.k, info.p = [0.0] * 9, [0.0] * 12
        elif reason == "no_resolution":
            if rng.random() < 0.5:
                info.width = 0
            else:
                info.height = 0
        elif reason == "bad_roi":
            info.roi.x_offset, info.roi.width, info.roi.height = W - 4, 8, H
        elif reason == "bad_binning":
            info.binning_x = int(rng.integers(W + 1, 2**32))
        elif reason == "bad_distortion":
            d = list(info.d)
            d[int(rng.integers(len(d)))] = float(rng.choice([np.nan, np.inf]))
            info.d = d
        elif reason == "bad_rectification":
            r = list(info.r)
            r[int(rng.integers(9))] = np.nan
            info.r = r
        return Case("camera_info", info, f"camera_info: {reason}")


class Oracle:
    """What the node must publish for an admitted frame: the model's depth for the decoded
    picture (or the decoder's rejection), and depth/camera_info from the camera_info it holds."""

    def __init__(self, checkpoint: str) -> None:
        self.estimator = DepthEstimator(checkpoint, device="cpu")
        self._known: dict[tuple, np.ndarray | str] = {}  # valid frames reuse a few pictures

    def depth(self, msg) -> np.ndarray | str:
        compressed = isinstance(msg, CompressedImage)
        key = (msg.format,) if compressed else (msg.encoding, msg.height, msg.width, msg.step)
        key += (bytes(msg.data),)
        if key not in self._known:
            try:
                rgb = decode_compressed_msg(msg) if compressed else decode_image_msg(msg)
            except ImageDecodeError as exc:
                self._known[key] = exc.reason
            else:
                depth = self.estimator.predict(rgb).depth
                self._known[key] = np.where((depth >= MIN_DEPTH) & (depth <= MAX_DEPTH), depth, np.float32(np.nan))
        return self._known[key]


class Run:
    """Publishes cases to the node and keeps the books: what was sent, what must be counted."""

    def __init__(self, ros, node, collector, oracle, filtered: bool = False) -> None:
        self.node, self.collector, self.oracle = node, collector, oracle
        self.filtered = filtered  # the node runs a temporal filter: its depth is the oracle's, averaged
        fuzzer = ros.client("fuzzer")
        qos = QoSProfile(depth=QUEUE)
        self.publishers = {
            "image": fuzzer.create_publisher(Image, "image", qos),
            "image/compressed": fuzzer.create_publisher(CompressedImage, "image/compressed", qos),
            "camera_info": fuzzer.create_publisher(CameraInfo, "camera_info", qos),
        }
        self.sent = collections.Counter()  # per topic
        self.expected = collections.Counter()  # rejections per reason
        self.frames_checked = 0

    def _images_sent(self) -> int:
        return self.sent["image"] + self.sent["image/compressed"]

    def _publish(self, case: Case) -> None:
        self.publishers[case.topic].publish(case.msg)
        self.sent[case.topic] += 1
        if case.reason is not None:
            self.expected[case.reason] += 1

    def _wait_counted(self) -> None:
        stats = self.node.camera().stats
        assert wait_until(lambda: (stats.inputs, stats.camera_infos) == (self._images_sent(), self.sent["camera_info"]),
                          timeout=30.0, interval=0.001), (stats.inputs, stats.camera_infos, self.sent)

    def batch(self, cases: list[Case]) -> None:
        for case in cases:
            self._publish(case)
        self._wait_counted()

    def final(self, case: Case, info: CameraInfo | None) -> None:
        """Send one admitted frame alone and check what became of it."""
        want = self.oracle.depth(case.msg)
        stamp = stamp_key(case.msg.header)
        stats = self.node.camera().stats
        if isinstance(want, str):  # the decoder refuses it
            self.expected[want] += 1
            self._publish(case)
            assert wait_until(lambda: stats.rejected[want] == self.expected[want], timeout=30.0, interval=0.001)
            return
        fits = info is not None and info.binning_x <= 1
        if not fits:  # depth only, the frame counted under the camera_info's fault
            self.expected["camera_info: size_mismatch"] += 1
        self._publish(case)
        outputs = self.collector.wait(stamp, ["depth/image", "depth/camera_info"] if fits else ["depth/image"], 60.0)
        assert outputs is not None, f"no depth for admitted frame {stamp}"
        depth_msg = outputs["depth/image"]
        assert depth_msg.header == case.msg.header
        depth = image_array(depth_msg)
        if self.filtered:
            # Averaged with the frames the node processed before (which of the batch's, it decides):
            # never further than the filter's step from this frame's prediction, and a pixel valid in
            # both is most of them (the range masking after the filter may move a pixel at its ends).
            both = ~np.isnan(depth) & ~np.isnan(want)
            assert np.count_nonzero(both) >= 0.9 * np.count_nonzero(~np.isnan(want))
            assert np.all(np.abs(np.log(depth[both] / want[both])) <= MOTION_STEP + 1e-5)
        else:
            np.testing.assert_array_equal(np.isnan(depth), np.isnan(want))
            np.testing.assert_allclose(depth[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-5, atol=1e-6)
        if fits:
            expected_p = intrinsics_from_camera_info(info, depth_msg.width, depth_msg.height).p
            np.testing.assert_allclose(outputs["depth/camera_info"].p, expected_p, rtol=1e-12)
        self.frames_checked += 1

    def phase(self, fuzzer: Fuzzer, messages: int, rng: np.random.Generator, rss: list[int]) -> None:
        info = fuzzer.camera_info_case()
        while info.reason is not None or info.msg.binning_x > 1:
            info = fuzzer.camera_info_case()
        self.batch([info])
        self.final(fuzzer.valid_frame(), fuzzer.info)
        start = sum(self.sent.values())
        while sum(self.sent.values()) - start < messages:
            cases = [fuzzer.camera_info_case() if rng.random() < 0.15 else fuzzer.bad_image()
                     for _ in range(int(rng.integers(20, 60)))]
            self.batch(cases)
            decoder_only = fuzzer.compressed and rng.random() < 0.25
            self.final(fuzzer.decoder_only_frame() if decoder_only else fuzzer.valid_frame(), fuzzer.info)
            if not rss and sum(self.sent.values()) >= MESSAGES // 10:
                rss.append(rss_bytes())  # the reference, once a thousand messages have warmed the node up


def test_oversized_images_are_rejected_before_any_allocation(monkeypatch):
    def no_decoding(*args):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    claim = Image(height=100_000, width=100_000, encoding="rgb8", step=300_000, data=bytes(12))
    png = bytearray(image_message(block_image(H, W), "rgb8", compressed="png").data)
    png[16:24] = (60_000).to_bytes(4, "big") * 2
    _png_chunk_fixed(png, 8)
    tracemalloc.start()
    try:
        compressed_claim = CompressedImage(format="png", data=png)
        for decode, msg in ((decode_image_msg, claim), (decode_compressed_msg, compressed_claim)):
            with pytest.raises(ImageDecodeError, match=f"above the limit of {LIMIT}") as err:
                decode(msg, max_pixels=LIMIT)
            assert err.value.reason == "image_too_large"
        assert tracemalloc.get_traced_memory()[1] < 1 << 16  # 30 GB and 10 GB pictures, claimed
    finally:
        tracemalloc.stop()


def reason_counts(diagnostics: dict[str, str]) -> collections.Counter:
    return collections.Counter({key[len("rejected: "):]: int(value) for key, value in diagnostics.items()
                                if key.startswith("rejected: ")})


@pytest.fixture
def harness_options(namespace):
    return {"min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH, "max_image_pixels": LIMIT, "new_sequence_after_s": 3600.0,
            **reliable_inputs(namespace, depth=QUEUE)}


@pytest.mark.slow
@pytest.mark.parametrize("temporal_filter", ["none", DEFAULT_TEMPORAL_FILTER])
def test_fuzzed_messages_are_each_rejected_counted_and_logged(ros, capfd, temporal_filter):
    """Without a filter each admitted frame's depth is its own prediction, to float rounding; with
    the node's default filter, within the filter's step of it (the filter keeps state across the
    fuzzed frames: odd sizes, encodings, camera_infos)."""
    node = ros.depth_node(temporal_filter=temporal_filter)
    outputs = ros.collector({"depth/image": Image, "depth/camera_info": CameraInfo}, history=16)
    diagnostics = ros.collector({"/diagnostics": DiagnosticArray}, name="diagnostics_collector")
    run = Run(ros, node, outputs, Oracle(ros.checkpoint), filtered=temporal_filter != "none")
    rng = np.random.default_rng(SEED)
    rss: list[int] = []
    started = time.monotonic()
    with ros.spin() as spinner:
        assert node.autostart()
        for compressed, share in ((False, 0.6), (True, 0.4)):
            if compressed:
                assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
                assert node.set_parameters([Parameter("input_transport", value="compressed")])[0].successful
                assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            topic = "image/compressed" if compressed else "image"
            assert wait_until(lambda topic=topic: run.publishers[topic].get_subscription_count() == 1
                                     and run.publishers["camera_info"].get_subscription_count() == 1, timeout=10.0)
            run.phase(Fuzzer(rng, compressed), int(MESSAGES * share), rng, rss)
        rss.append(rss_bytes())
        total_images, total_infos = run._images_sent(), run.sent["camera_info"]
        assert wait_until(lambda: ros.latest_diagnostics(diagnostics).get("frames in") == str(total_images)
                          and ros.latest_diagnostics(diagnostics).get("camera_info in") == str(total_infos),
                          timeout=5.0)
        reported = ros.latest_diagnostics(diagnostics)
        assert spinner.alive() and node._worker.is_alive()
    elapsed = time.monotonic() - started

    assert sum(run.sent.values()) >= MESSAGES
    assert reason_counts(reported) == run.expected
    assert int(reported["frames rejected"]) == sum(run.expected.values())
    assert reported["frames dropped as stale"] == "0"
    assert int(reported["frames out"]) == run.frames_checked
    assert run.frames_checked >= MESSAGES // 100 and run.expected["camera_info: size_mismatch"]
    assert rss[-1] < 1.05 * rss[0], f"RSS grew from {rss[0] / 2**20:.0f} to {rss[-1] / 2**20:.0f} MiB"

    # Every reason is logged by name, at most once per THROTTLE_S.
    log = capfd.readouterr().err
    lines = collections.Counter(re.findall(r"\[([a-z_]+(?:: [a-z_]+)?)\]$", log, re.MULTILINE))
    assert set(lines) == set(run.expected)
    most = elapsed / THROTTLE_S + 1
    assert max(lines.values()) <= most, lines
    print(f"\nfuzz: {sum(run.sent.values())} messages ({dict(run.sent)}) in {elapsed:.0f} s, "
          f"{run.frames_checked} frames checked, RSS {rss[0] / 2**20:.0f} -> {rss[-1] / 2**20:.0f} MiB, "
          f"{sum(lines.values())} log lines; rejected: {dict(sorted(run.expected.items()))}")
