"""The depth node's inputs: their QoS, the image subscription and its reliability, the publishers'
sequence numbers, the stamp order of admitted frames, and the frame slots (one per camera) the
inference worker takes its batches from."""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions

from zoedepth_ros.image_codec import ImageDecodeError
from zoedepth_ros.sequences import STAMP_RESTART_S, starts_new_sequence

# Newest frame only: a backlog of camera frames is latency, never throughput.
INPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)


def own_qos(profile: QoSProfile) -> QoSProfile:
    """A copy for one entity: rclpy writes the entity's QoS overrides into the profile it is given,
    which would carry them to every later entity (of any node) created from the same profile."""
    return copy.copy(profile)


class ImageSubscription:
    """The image subscription of an active node: keep-last 1, reliable or best effort as
    input_reliability asks (auto: following the publishers' offers, re-created when they change);
    it also follows the publishers' sequence numbers of what it receives. It subscribes at
    `subscribe`, so that the node holds it before `callback` can run."""

    def __init__(self, node, msg_type: type, topic: str, callback: Callable, setting: Callable[[], str]) -> None:
        """`setting` gives the current input_reliability parameter."""
        self._node = node
        self.msg_type, self.topic = msg_type, topic
        self._callback, self._setting = callback, setting
        self.subscription = None
        self.why = ""  # why it has its reliability
        self._due = False  # publishers came or went, or the setting changed: re-evaluate
        self._last_sequence: int | None = None  # publication sequence number of the last image received

    @property
    def reliability(self) -> str:
        """reliable, best_effort, or none before `subscribe` and after `destroy`."""
        subscription = self.subscription
        return "none" if subscription is None else subscription.qos_profile.reliability.name.lower()

    def _override(self) -> str | None:
        """The reliability as a qos_overrides parameter gives it, if one does."""
        # rclpy has no public way to ask whether the user gave a parameter (a declared one always has
        # a value): its overrides (command line, params file, constructor) are the only record.
        override = self._node._parameter_overrides.get(f"qos_overrides.{self.topic}.subscription.reliability")
        return None if override is None else str(override.value)

    def _wanted(self) -> tuple[ReliabilityPolicy, str]:
        """The reliability the subscription should have now, and why."""
        override = self._override()
        if override is not None:
            # rclpy applies (and validates) it; this is only what to report.
            policy = ReliabilityPolicy.__members__.get(override.upper(), ReliabilityPolicy.UNKNOWN)
            return policy, "set by its qos_overrides parameter"
        setting = self._setting()
        if setting != "auto":
            return ReliabilityPolicy[setting.upper()], f"input_reliability {setting}"
        offers = [info.qos_profile.reliability for info in self._node.get_publishers_info_by_topic(self.topic)]
        best_effort = sum(offer == ReliabilityPolicy.BEST_EFFORT for offer in offers)
        if not offers:
            # Reliable: a reliable publisher then matches at once, with no frame sent to a subscription
            # about to be replaced; a best-effort one is reported incompatible, and answered.
            return ReliabilityPolicy.RELIABLE, "auto, no publisher yet"
        if best_effort:
            return ReliabilityPolicy.BEST_EFFORT, f"auto, {best_effort} of {len(offers)} publishers offer best effort"
        return ReliabilityPolicy.RELIABLE, f"auto, all {len(offers)} publishers offer reliable"

    def subscribe(self) -> None:
        """(Re)create the subscription: keep-last 1, with the reliability wanted now.

        Only history and depth are declared as qos_overrides parameters, unless the user gave the
        reliability one: rclpy would otherwise declare it at the first subscription's reliability and
        apply that value to every later one, freezing auto.
        """
        policy, why = self._wanted()
        qos = own_qos(INPUT_QOS)
        kinds = [QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH]
        if self._override() is None:
            qos.reliability = policy
        else:
            kinds.append(QoSPolicyKind.RELIABILITY)
        if self.subscription is not None:
            self._node.destroy_subscription(self.subscription)
        self.subscription = self._node.create_subscription(
            self.msg_type, self.topic, self._callback, qos,
            qos_overriding_options=QoSOverridingOptions(kinds),
            event_callbacks=SubscriptionEventCallbacks(
                matched=self._on_publishers_changed, incompatible_qos=self._on_publishers_changed),
        )
        self.why = why
        self._last_sequence = None

    def _on_publishers_changed(self, _event) -> None:
        # Not here: replacing a subscription from inside its own event callback.
        self._due = True

    def reevaluate(self) -> None:
        """Check the reliability again at the next `maintain` (input_reliability changed)."""
        self._due = True

    def maintain(self) -> None:
        """Re-create the subscription when the reliability it should have changed (a timer's job)."""
        if not self._due or self.subscription is None:
            return
        self._due = False
        policy, why = self._wanted()
        if policy == self.subscription.qos_profile.reliability or self._override() is not None:
            self.why = why
            return
        self.subscribe()
        self._node.get_logger().info(f"image input on '{self.topic}' is now {self.reliability} ({why})")

    def follow_sequence(self, info) -> tuple[bool, int]:
        """(the sequence started again: a new publisher, such as a restarted driver or another
        replay; frames missing from the publisher's sequence numbers since the last image), from
        the message info of an image received."""
        sequence = info.get("publication_sequence_number") if info else None  # None on some RMWs
        last, self._last_sequence = self._last_sequence, sequence
        if sequence is None or last is None:
            return False, 0
        if sequence <= last:
            return True, 0
        return False, sequence - last - 1

    def destroy(self) -> None:
        if self.subscription is not None:
            self._node.destroy_subscription(self.subscription)
            self.subscription = None


class StampOrder:
    """Header checks for the frames admitted to processing: a frame id, a valid stamp, and within a
    sequence, increasing stamps. Stamps may go back only from a new publisher, after a pause of
    new_sequence_after_s or by more than STAMP_RESTART_S. A new sequence (what restarts the
    temporal filter) starts at the first frame after `restart`, from a new publisher, and where
    `starts_new_sequence` says so on the admitted stamps (stamps that went back, a gap over
    new_sequence_after_s): the rule `evaluate` applies to a bag's stamps."""

    def __init__(self) -> None:
        self.last_stamp_ns: int | None = None  # of the last image admitted
        self.last_admitted_at = -math.inf  # monotonic

    def restart(self) -> None:
        """The next stamp is not compared with the previous one (an activation)."""
        self.last_stamp_ns = None

    def admit(self, header, new_publisher: bool, new_sequence_after_s: float) -> tuple[bool, str | None]:
        """Raise ImageDecodeError for a header the outputs (which carry it) cannot use; otherwise
        its stamp becomes the one the next frame's is compared with. Returns (the frame starts a
        new sequence, a warning when that is because the stamps went back, else None)."""
        if not header.frame_id:
            raise ImageDecodeError(
                "empty_frame_id", "header has an empty frame_id: outputs would be in no frame (set the "
                                  "camera driver's frame id, e.g. its optical frame)")
        stamp = header.stamp
        if stamp.sec < 0 or stamp.nanosec >= 1_000_000_000:
            raise ImageDecodeError("bad_stamp", f"header stamp {stamp.sec} s {stamp.nanosec} ns is not a valid time")
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        now = time.monotonic()
        last = self.last_stamp_ns
        warning = None
        if last is not None and stamp_ns <= last:
            behind_s = (last - stamp_ns) / 1e9
            pause_s = now - self.last_admitted_at
            if new_publisher:
                cause = "from a new publisher"
            elif pause_s > new_sequence_after_s:
                cause = f"after {pause_s:.1f} s without images"
            elif behind_s > STAMP_RESTART_S:
                cause = f"by more than {STAMP_RESTART_S:g} s"
            elif stamp_ns == last:
                raise ImageDecodeError("repeated_stamp", f"stamp {stamp.sec}.{stamp.nanosec:09d} repeats the previous "
                                                         "frame's: a duplicate (or a driver that does not stamp)")
            else:
                raise ImageDecodeError("out_of_order_stamp", f"stamp {stamp.sec}.{stamp.nanosec:09d} is "
                                                             f"{behind_s:.3f} s older than the previous frame's")
            warning = (f"image stamps went back {behind_s:.1f} s ({cause}): taking it as a restarted camera, "
                       "a clock reset or a replayed or looping bag, and starting the sequence again")
        new_sequence = new_publisher or starts_new_sequence(last, stamp_ns, new_sequence_after_s)
        self.last_stamp_ns, self.last_admitted_at = stamp_ns, now
        return new_sequence, warning


@dataclass
class AdmittedFrame:
    """A frame the callbacks admitted: its message, and whether it starts a new sequence."""

    msg: object
    new_sequence: bool = False


class FrameSlots:
    """The newest unprocessed frame of each camera, one slot per camera, for the inference worker.
    It takes up to `limit` waiting frames at once, the cameras served least recently first: under
    load every camera gets one frame per round, and a frame left waiting is replaced by a newer one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frames: dict[str, AdmittedFrame] = {}
        self._served: dict[str, int] = {}  # camera -> turn it was last taken in
        self._turn = 0

    def put(self, camera: str, frame: AdmittedFrame) -> bool:
        """Store `frame` as `camera`'s newest; True when it replaced a frame nobody processed. A
        replaced frame that started a sequence hands that on: the sequence then starts at `frame`."""
        with self._cond:
            replaced = self._frames.get(camera)
            if replaced is not None and replaced.new_sequence:
                frame.new_sequence = True
            self._frames[camera] = frame
            self._cond.notify()
        return replaced is not None

    def take(self, limit: int, timeout: float) -> dict[str, AdmittedFrame]:
        """camera -> frame for up to `limit` cameras with a waiting frame (those served least
        recently), emptying their slots; waits up to `timeout` s for one when none is waiting ({}
        then)."""
        with self._cond:
            if not self._frames:
                self._cond.wait(timeout)
            chosen = sorted(self._frames, key=lambda camera: self._served.get(camera, -1))[:limit]
            taken = {}
            for camera in chosen:  # each gets its own turn number: no ties, a strict rotation
                taken[camera] = self._frames.pop(camera)
                self._turn += 1
                self._served[camera] = self._turn
        return taken

    def clear(self) -> None:
        with self._cond:
            self._frames = {}
            self._served = {}
