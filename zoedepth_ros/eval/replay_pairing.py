"""What a replay (`zoedepth-ros replay`, zoedepth_ros.ros.replay) does without ROS: when each frame
is due (the rate modes), what it publishes of a frame (the KB crop, its camera matrices), and the
books of the frames in flight, whose depth is scored when it comes back and counted as lost or
late when it does not."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from zoedepth_ros.data.bag_layout import BagFrame
from zoedepth_ros.eval.protocols import kb_crop, kb_crop_projection
from zoedepth_ros.eval.scoring import BagEvaluation

RATE_MODES = ("lockstep", "recorded", "fixed")


@dataclass(frozen=True)
class ReplaySettings:
    rate_mode: str = "lockstep"
    rate: float | None = None  # frames per second, fixed mode only
    timeout_s: float = 30.0  # a frame whose depth takes longer is lost
    wait_s: float = 120.0  # for the depth node to appear (it loads its model first)


class Pairing:
    """Frames in flight and their fate, recorded in a BagEvaluation: scored when their depth comes
    back, missing when given up. Counts what was published, received, lost and late."""

    def __init__(self, evaluation: BagEvaluation, timeout_s: float) -> None:
        self.evaluation = evaluation
        self.timeout_s = timeout_s
        # stamp -> (index, frame, deadline), in publication order (dicts keep insertion order)
        self.in_flight: dict[int, tuple[int, BagFrame, float]] = {}
        self._given_up: set[int] = set()
        self.published = self.received = self.lost = self.late = 0
        self.rejections: collections.Counter[str] = collections.Counter()

    def sent(self, index: int, frame: BagFrame, now: float) -> None:
        self.in_flight[frame.stamp_ns] = (index, frame, now + self.timeout_s)
        self.published += 1

    def arrived(self, stamp_ns: int, depth: np.ndarray) -> None:
        self.received += 1
        if stamp_ns not in self.in_flight:
            if stamp_ns in self._given_up:
                self.late += 1
            else:  # not ours, or a second answer to a scored frame: as score_predictions counts it
                self.evaluation.add_orphan(stamp_ns)
            return
        for earlier in list(self.in_flight):
            if earlier == stamp_ns:
                break
            self._give_up(earlier)
        index, frame, _ = self.in_flight.pop(stamp_ns)
        self.evaluation.add(frame, depth, index)

    def expire(self, now: float) -> None:
        """Give up the frames whose deadline passed (deadlines grow in publication order)."""
        for stamp, (_, _, deadline) in list(self.in_flight.items()):
            if deadline > now:
                break
            self._give_up(stamp)

    def rejected(self, reasons: collections.Counter[str]) -> None:
        """The node reports rejecting frames for `reasons` (counts): give up that many of the oldest
        frames in flight, the ones it has answered by rejecting."""
        self.rejections.update(reasons)
        for stamp in list(self.in_flight)[:sum(reasons.values())]:
            self._give_up(stamp)

    def _give_up(self, stamp_ns: int) -> None:
        index, frame, _ = self.in_flight.pop(stamp_ns)
        self.evaluation.add_missing(frame, index)
        self._given_up.add(stamp_ns)
        self.lost += 1

    def counts(self) -> dict[str, int]:
        return {"frames_published": self.published, "depth_received": self.received,
                "frames_lost": self.lost, "frames_rejected": self.rejections.total(), "depth_late": self.late}


def due_s(settings: ReplaySettings, index: int, stamp_ns: int, first_stamp_ns: int) -> float:
    """When frame `index` is due, in seconds after the first frame's publication (rate modes)."""
    if settings.rate_mode == "fixed":
        return index / settings.rate
    return (stamp_ns - first_stamp_ns) / 1e9


def published_view(frame: BagFrame, crop: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(rgb, K, P, width, height) to publish for `frame`: KB-cropped, principal point shifted,
    when the protocol crops before the network."""
    P = np.hstack([frame.K, np.zeros((3, 1))]) if frame.P is None else frame.P
    if not crop:
        return frame.rgb, frame.K, P, frame.width, frame.height
    height, width = frame.rgb.shape[:2]
    rgb = kb_crop(frame.rgb)
    return (rgb, kb_crop_projection(frame.K, height, width), kb_crop_projection(P, height, width),
            rgb.shape[1], rgb.shape[0])
