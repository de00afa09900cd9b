"""`zoedepth-ros replay BAG` (ROS executable `replay_node`): play an evaluation bag through the live
depth node and score what comes back, with the reports of `zoedepth-ros evaluate`.

The replay node publishes each frame of the bag (`image` as rgb8, compressed bags decoded, and
`camera_info`, both relative so they can be remapped), subscribes to the node's `depth/image`,
pairs each depth image with the frame's ground truth by header stamp and scores it through the
seam of zoedepth_ros.eval.evaluate. For protocols with a KB crop it publishes the cropped image
(principal point shifted), as the official loader feeds the network.

Pacing (`--rate-mode`): lockstep (default) sends the next frame when the previous frame's depth
came back or was given up, so the node never drops a frame and the run takes as long as the
node needs; recorded follows the bag's stamps; fixed sends `--rate` frames per second. A frame
is lost when its depth does not come back within `--timeout` seconds, or as soon as the depth of
a later frame comes back first (the node answers frames in the order they arrive and drops the
ones it had no time for), so the run ends promptly after the last answer. A depth image arriving
after its frame was given up is counted as late and not scored. The replay also reads the node's
rejection counters on /diagnostics (1 Hz): a frame the node rejected (say, an `out_of_order_stamp`)
is given up when the counter grows, not after the timeout, and the reasons are reported.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from zoedepth_ros import diagnostics_keys
from zoedepth_ros.argtypes import at_least, positive_float
from zoedepth_ros.camera_info import Intrinsics, depth_camera_info
from zoedepth_ros.data.bag import FrameReader, message_count, read_frames, read_metadata
from zoedepth_ros.data.bag_layout import BagFrame
from zoedepth_ros.depth_codec import decode_prediction
from zoedepth_ros.errors import ZoeDepthError
from zoedepth_ros.eval.evaluate import bag_protocol, print_summary
from zoedepth_ros.eval.protocols import PROTOCOLS
from zoedepth_ros.eval.replay_pairing import RATE_MODES, Pairing, ReplaySettings, due_s, published_view
from zoedepth_ros.eval.results import write_results
from zoedepth_ros.eval.scoring import DEFAULT_WORST, BagEvaluation
from zoedepth_ros.interrupts import sigterm_as_interrupt
from zoedepth_ros.ros.messages import image_msg

NODE_NAME = "zoedepth_replay"
SPIN_STEP_S = 0.05  # longest wait without looking at the clock (expiries, schedule, interruption)
# Each side matches the other's endpoints on its own: seeing the node's endpoints does not mean that
# it sees ours yet, and a depth image published before its writer knows our reader is lost for good.
DISCOVERY_SETTLE_S = 0.5
# The depth node reports on /diagnostics once a second: its first report comes within this.
DIAGNOSTICS_WAIT_S = 2.5


class ReplayError(ZoeDepthError):
    """A replay that cannot start or go on (no depth node, a depth topic of another kind)."""


class ReplayNode(Node):
    """Publishes frames and hands every depth image that comes back to `on_depth(stamp_ns, depth)`.

    Reliable publishers: they also serve best-effort subscribers, where a best-effort publisher
    would not reach reliable ones. A reliable, deep depth subscription: a burst of answers in the
    rate modes must not overwrite each other.
    """

    def __init__(self, topics: dict[str, str], on_depth: Callable[[int, np.ndarray], None],
                 on_rejected: Callable[[collections.Counter[str]], None], **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._on_depth = on_depth
        self._on_rejected = on_rejected
        self.depth_node_status: str | None = None  # the depth node's status name on /diagnostics
        self.node_rejected: collections.Counter[str] | None = None  # its counters, last report
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, topics["image"], reliable)
        self.info_pub = self.create_publisher(CameraInfo, topics["camera_info"], reliable)
        depth_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.depth_sub = self.create_subscription(Image, topics["depth"], self._on_image, depth_qos)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if self.depth_node_status is None or not status.name.startswith(self.depth_node_status):
                continue
            reported = diagnostics_keys.parse_status(diagnostics_keys.status_values(status))
            if reported.frames_rejected is None:  # not active: no counters
                continue
            counters = reported.rejected
            if self.node_rejected is not None and counters - self.node_rejected:
                self._on_rejected(counters - self.node_rejected)
            self.node_rejected = counters

    def _on_image(self, msg: Image) -> None:
        if msg.encoding not in ("32FC1", "16UC1"):
            raise ReplayError(f"{self.depth_sub.topic_name} carries {msg.encoding!r} images, not depth "
                              "(32FC1 metres or 16UC1 mm): is --depth-topic right?")
        self._on_depth(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, decode_prediction(msg))

    def publish(self, frame: BagFrame, crop: bool) -> None:
        rgb, K, P, width, height = published_view(frame, crop)
        header = Header(frame_id=frame.frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(frame.stamp_ns, 10**9)
        intrinsics = Intrinsics(width, height, tuple(map(float, K.flat)), tuple(map(float, P.flat)))
        self.info_pub.publish(depth_camera_info(intrinsics, header))
        self.image_pub.publish(image_msg(header, rgb, "rgb8"))


def _frame_total(frames: FrameReader) -> int:
    """Image messages in the bag: the progress bar's total (frames unless some are unpaired)."""
    return message_count(frames.path, frames.roles["image"])


def replay(node: ReplayNode, executor, frames: FrameReader, pairing: Pairing, settings: ReplaySettings, crop: bool,
           progress: bool = True) -> None:
    """Publish every frame of `frames`, paced by `settings`, and wait for the answers."""
    from tqdm import tqdm

    bar = tqdm(total=_frame_total(frames), desc=pairing.evaluation.name, unit="frame", disable=not progress)

    def spin_until(done: Callable[[], bool], deadline: float = math.inf) -> None:
        while True:
            now = time.monotonic()
            pairing.expire(now)
            bar.set_postfix(received=pairing.received, lost=pairing.lost, refresh=False)
            if done() or now >= deadline:
                return
            executor.spin_once(timeout_sec=min(SPIN_STEP_S, deadline - now))

    start = first_stamp = None
    try:
        for index, frame in enumerate(frames):
            if settings.rate_mode == "lockstep":
                spin_until(lambda: not pairing.in_flight)
            elif start is not None:
                spin_until(lambda: False, start + due_s(settings, index, frame.stamp_ns, first_stamp))
            try:
                node.publish(frame, crop)
            except ValueError as exc:  # a frame smaller than the KB crop
                raise ReplayError(f"{pairing.evaluation.name} frame {index}: {exc}") from None
            now = time.monotonic()
            if start is None:
                start, first_stamp = now, frame.stamp_ns
            pairing.sent(index, frame, now)
            bar.update(1)
        spin_until(lambda: not pairing.in_flight)
    finally:
        bar.close()
    pairing.evaluation.unpaired_messages.update(frames.unpaired)


def wait_for_depth_node(node: ReplayNode, executor, wait_s: float) -> None:
    """Until something subscribes to our image topic and publishes on the depth topic, then a moment
    more for it to match our endpoints too."""
    deadline = time.monotonic() + wait_s
    while not (node.image_pub.get_subscription_count() and node.depth_sub.get_publisher_count()):
        if time.monotonic() > deadline:
            raise ReplayError(
                f"no depth node after {wait_s:g} s: nothing subscribes to {node.image_pub.topic_name} "
                f"({node.image_pub.get_subscription_count()} subscribers) and publishes "
                f"{node.depth_sub.topic_name} ({node.depth_sub.get_publisher_count()} publishers); start the "
                "node (launch/evaluate.launch.py starts both) or remap the topics (--image-topic, --depth-topic)")
        executor.spin_once(timeout_sec=SPIN_STEP_S)
    settled = time.monotonic() + DISCOVERY_SETTLE_S
    while time.monotonic() < settled:
        executor.spin_once(timeout_sec=SPIN_STEP_S)
    publisher = node.get_publishers_info_by_topic(node.depth_sub.topic_name)[0]
    node.depth_node_status = f"{publisher.node_namespace.rstrip('/')}/{publisher.node_name}: "
    reported = time.monotonic() + DIAGNOSTICS_WAIT_S
    while node.node_rejected is None and time.monotonic() < reported:
        executor.spin_once(timeout_sec=SPIN_STEP_S)
    if node.node_rejected is None:
        node.get_logger().warning(
            f"no /diagnostics report from {node.depth_node_status[:-2]}: frames it rejects will be given up only "
            "after --timeout")
    topic = node.image_pub.topic_name
    if any(info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
           for info in node.get_subscriptions_info_by_topic(topic)):
        # Measured: 480x640 frames to a node in another process, one in flight at a time: 3 in 10 lost.
        node.get_logger().warning(
            f"the depth node subscribes to {topic} best effort: from another process, large frames get lost; "
            f"set its parameter qos_overrides.{topic}.subscription.reliability:=reliable (launch/evaluate.launch.py "
            "does)")


# --- command line ----------------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, metavar="BAG", help="evaluation bag (sqlite3 or mcap)")
    p.add_argument("--out", type=Path, required=True,
                   help="directory for summary.json, per_frame.csv, report.md and plots")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), help="scoring protocol (default: the one the bag records)")
    p.add_argument("--rate-mode", choices=RATE_MODES,
                   help="lockstep: next frame when the previous one's depth is back (or lost); recorded: at the "
                        "bag's stamps; fixed: at --rate (default: fixed with --rate, else lockstep)")
    p.add_argument("--rate", type=positive_float, metavar="HZ", help="frames per second (fixed rate mode)")
    p.add_argument("--timeout", type=positive_float, default=ReplaySettings.timeout_s, metavar="S",
                   help=f"a frame whose depth takes longer is lost (default {ReplaySettings.timeout_s:g})")
    p.add_argument("--wait", type=positive_float, default=ReplaySettings.wait_s, metavar="S",
                   help=f"wait this long for the depth node to appear (default {ReplaySettings.wait_s:g})")
    p.add_argument("--image-topic", default="image", metavar="TOPIC",
                   help="where to publish the images (default image)")
    p.add_argument("--camera-info-topic", default="camera_info", metavar="TOPIC",
                   help="where to publish camera info (default camera_info)")
    p.add_argument("--depth-topic", default="depth/image", metavar="TOPIC",
                   help="the node's depth output (default depth/image)")
    p.add_argument("--worst", type=at_least(0), default=DEFAULT_WORST,
                   help=f"worst frames shown in the report (default {DEFAULT_WORST})")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _settings(args: argparse.Namespace) -> ReplaySettings:
    rate_mode = args.rate_mode or ("fixed" if args.rate is not None else "lockstep")
    if (rate_mode == "fixed") != (args.rate is not None):
        raise ReplayError("--rate goes with --rate-mode fixed, and fixed needs --rate")
    return ReplaySettings(rate_mode, args.rate, args.timeout, args.wait)


def run_replay(args: argparse.Namespace, ros_argv: list[str]) -> int:
    """Replay `args.bag`; `ros_argv` is a full argv for rclpy (program name first)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    settings = _settings(args)
    frames = read_frames(args.bag)
    metadata = read_metadata(args.bag)
    protocol = bag_protocol(args.bag, args.protocol)
    crop = protocol.kb_crop
    evaluation = BagEvaluation(args.bag.name, protocol, worst=args.worst, path=args.bag, metadata=metadata)
    pairing = Pairing(evaluation, settings.timeout_s)
    topics = {"image": args.image_topic, "camera_info": args.camera_info_topic, "depth": args.depth_topic}

    complete = True
    with contextlib.ExitStack() as cleanup:  # undone in reverse order, whatever happens
        # A context of our own: callers (tests, a host process) may hold the default one.
        context = rclpy.Context()
        rclpy.init(args=ros_argv, context=context, signal_handler_options=SignalHandlerOptions.NO)
        cleanup.callback(context.try_shutdown)
        node = ReplayNode(topics, pairing.arrived, pairing.rejected, context=context)
        cleanup.callback(node.destroy_node)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        cleanup.callback(executor.shutdown)
        image_topic, depth_topic = node.image_pub.topic_name, node.depth_sub.topic_name
        # Ctrl-C arrives as a KeyboardInterrupt (no rclpy handler), and so does SIGTERM (a launch
        # shutdown): an interrupted replay still writes what it scored.
        cleanup.enter_context(sigterm_as_interrupt())
        try:
            node.get_logger().info(f"waiting for the depth node ({image_topic} -> {depth_topic})")
            wait_for_depth_node(node, executor, settings.wait_s)
            node.get_logger().info(f"replaying {args.bag} ({settings.rate_mode}, protocol {protocol.name})")
            replay(node, executor, frames, pairing, settings, crop, args.progress)
        except KeyboardInterrupt:
            complete = False

    source = {"pred_topic": depth_topic, "replay": settings.rate_mode, **pairing.counts(),
              "rejections": dict(sorted(pairing.rejections.items()))}
    summary = write_results(args.out, [evaluation], source, complete=complete, worst=args.worst)
    counts = pairing.counts()
    print(f"published {counts['frames_published']} frames, received {counts['depth_received']} depth images, "
          f"lost {counts['frames_lost']} frames ({counts['frames_rejected']} rejected by the node, "
          f"{counts['depth_late']} answers came late)")
    reasons = ", ".join(f"{reason} {n}" for reason, n in pairing.rejections.most_common())
    if reasons:
        print(f"the depth node rejected frames: {reasons} (its log says why)", file=sys.stderr)
    print_summary(summary, 1, args.out)
    if not complete:
        print("interrupted: the outputs hold the frames scored so far (\"complete\": false)", file=sys.stderr)
        return 130
    if pairing.published and not pairing.received:
        if not reasons:
            print(f"no depth image came back on {depth_topic}: check that the node reads {image_topic} "
                  "and publishes on the depth topic", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    ros_args = ["--ros-args", *args.ros_args] if args.ros_args is not None else []
    return run_replay(args, ["zoedepth-ros replay", *ros_args])


def add_parser(subparsers, name: str) -> None:
    parser = subparsers.add_parser(
        name,
        help="replay a bag through the live depth node and score it",
        description="Publish an evaluation bag's frames to the running depth node, score the depth images it "
                    "sends back against the bag's ground truth, and write the reports of `evaluate` into --out "
                    "(the ROS executable replay_node does the same). See docs/evaluation.md.",
        epilog="Everything after --ros-args goes to ROS, e.g. --ros-args -r __ns:=/replay",
    )
    _add_arguments(parser)
    # An optional with REMAINDER, as for `node`: a positional one refuses a leading --ros-args.
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, metavar="ARG",
                        help="ROS arguments (-r from:=to, -r __ns:=NS, --log-level ...)")
    parser.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    """The `replay_node` executable; `argv` is a full argv (program name first), sys.argv when None."""
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(prog="replay_node", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(remove_ros_args(argv)[1:])
    try:
        return run_replay(args, argv)
    except ZoeDepthError as exc:
        print(f"replay_node: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
