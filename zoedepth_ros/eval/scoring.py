"""Scoring predictions against evaluation bags with the paper's protocol, without ROS or torch:
the seam that `zoedepth-ros evaluate` and the replay node share.

    evaluation = BagEvaluation("nyu_test", protocol)
    score_predictions(predictions, frames, evaluation)   # (stamp_ns, HxW metres) pairs + BagFrames
    # or, with each frame and its prediction in hand: evaluation.add(frame, depth),
    # evaluation.add_missing(frame), evaluation.add_orphan(stamp_ns)

then `zoedepth_ros.eval.results.write_results` writes the outputs. Predictions and GT frames are
paired by header stamp. Frames without a prediction, predictions without a frame, and bag messages
without partners are counted and reported, never dropped. Frames with a ground-truth pose also feed
the temporal metrics (`zoedepth_ros.eval.temporal`: TAE over consecutive pairs, static flicker).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoedepth_ros.data.bag_layout import BagFrame
from zoedepth_ros.errors import ZoeDepthError
from zoedepth_ros.eval.metrics import MetricsAccumulator, align_prediction, score_frame
from zoedepth_ros.eval.protocols import Protocol, eval_mask, kb_crop, kb_crop_origin
from zoedepth_ros.eval.temporal import TemporalAccumulator

# Signed relative error (pred - gt) / gt of every valid pixel; above +100 % lands in the last bin.
HISTOGRAM_EDGES = np.linspace(-1.0, 1.0, 101)
DEFAULT_WORST = 4


class EvaluationError(ZoeDepthError):
    """Bags, protocols or options that cannot be evaluated; the message says why."""


@dataclass
class FrameResult:
    """One row of per_frame.csv. status: scored, no_valid_gt (skipped, as the official evaluation
    skips images without GT), no_prediction (GT frame never predicted), no_gt_frame (prediction
    whose stamp matches no GT frame)."""

    bag: str
    index: int | None  # position of the GT frame in its bag; None for a prediction without frame
    stamp_ns: int
    status: str
    valid_pixels: int = 0
    metrics: dict[str, float] | None = None


@dataclass
class WorstFrame:
    """What the report shows of a badly predicted frame, aligned as it was scored."""

    bag: str
    index: int
    stamp_ns: int
    abs_rel: float
    rgb: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    mask: np.ndarray


class BagEvaluation:
    """Running result of one bag: per-image metrics, per-frame rows, pixel error histogram, the
    worst frames, the unpaired counts and the temporal metrics (`temporal`)."""

    def __init__(self, name: str, protocol: Protocol, *, worst: int = DEFAULT_WORST,
                 path: Path | None = None, metadata: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.protocol = protocol
        self.path = path
        self.metadata = dict(metadata or {})
        # The rows are the record the metrics are computed from: appending one is atomic, so an
        # interruption at any point leaves counts and means that agree with per_frame.csv.
        self.rows: list[FrameResult] = []
        self.histogram = np.zeros(len(HISTOGRAM_EDGES) - 1, dtype=np.int64)
        # messages of the bag itself without partners (image / camera info / GT), per topic
        self.unpaired_messages: Counter[str] = Counter()
        self._worst_count = worst
        self._worst: list[tuple[float, int, WorstFrame]] = []  # min-heap: the mildest kept frame on top
        self._frames_seen = 0
        self.temporal = TemporalAccumulator(protocol.min_depth, protocol.max_depth)

    def _next_index(self, index: int | None) -> int:
        index = self._frames_seen if index is None else index
        self._frames_seen += 1
        return index

    def add(self, frame: BagFrame, pred: np.ndarray, index: int | None = None) -> FrameResult:
        """Score `pred` (HxW metres, any size: resized to the GT) against `frame`'s GT."""
        index = self._next_index(index)
        if frame.depth is None:
            raise EvaluationError(f"{self.name} frame {index}: the frame carries no ground truth")
        try:
            metrics = score_frame(pred, frame.depth, self.protocol)
            aligned_pred, aligned_gt = align_prediction(pred, frame.depth, self.protocol)
        except ValueError as exc:
            raise EvaluationError(f"{self.name} frame {index}: {exc}") from None
        mask = eval_mask(aligned_gt, self.protocol)
        self._add_temporal(frame, index, aligned_pred, mask)
        status = "no_valid_gt" if metrics is None else "scored"
        row = FrameResult(self.name, index, frame.stamp_ns, status, int(mask.sum()), metrics)
        self.rows.append(row)
        if metrics is not None:
            gt_valid = aligned_gt[mask]
            relative = np.clip((aligned_pred[mask] - gt_valid) / gt_valid, HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1])
            self.histogram += np.histogram(relative, bins=HISTOGRAM_EDGES)[0]
            self._keep_if_worst(frame, index, metrics["abs_rel"], aligned_pred, aligned_gt, mask)
        return row

    def _add_temporal(self, frame: BagFrame, index: int, aligned_pred: np.ndarray, mask: np.ndarray) -> None:
        """The prediction as scored (at GT size, clipped, KB-cropped where the protocol crops) on
        the pixels the GT scores, with the K of that image: the crop moves the principal point."""
        if frame.pose is None:  # the gap in the indices breaks the chain
            return
        K = np.asarray(frame.K, dtype=np.float64)
        if self.protocol.kb_crop:
            top, left = kb_crop_origin(*frame.depth.shape)
            K = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]]) @ K
        try:
            self.temporal.add(index, frame.stamp_ns, aligned_pred, K, frame.pose, valid=mask)
        except ValueError as exc:
            raise EvaluationError(f"{self.name} frame {index}: {exc}") from None

    def _keep_if_worst(self, frame: BagFrame, index: int, abs_rel: float, pred: np.ndarray, gt: np.ndarray,
                       mask: np.ndarray) -> None:
        if self._worst_count < 1:
            return
        if len(self._worst) == self._worst_count and abs_rel <= self._worst[0][0]:
            return
        rgb = kb_crop(frame.rgb) if self.protocol.kb_crop else frame.rgb
        worst = WorstFrame(self.name, index, frame.stamp_ns, abs_rel, rgb.copy(),
                           pred.astype(np.float32), gt.astype(np.float32), mask)
        item = (abs_rel, self._frames_seen, worst)  # the call count breaks ties: indices may repeat
        if len(self._worst) < self._worst_count:
            heapq.heappush(self._worst, item)
        else:
            heapq.heapreplace(self._worst, item)

    def add_missing(self, frame: BagFrame, index: int | None = None) -> FrameResult:
        """A GT frame that got no prediction."""
        row = FrameResult(self.name, self._next_index(index), frame.stamp_ns, "no_prediction")
        self.rows.append(row)
        return row

    def add_orphan(self, stamp_ns: int) -> FrameResult:
        """A prediction whose stamp matches no GT frame."""
        row = FrameResult(self.name, None, int(stamp_ns), "no_gt_frame")
        self.rows.append(row)
        return row

    @property
    def accumulator(self) -> MetricsAccumulator:
        """Per-image mean of the scored frames, with the count of skipped ones."""
        accumulator = MetricsAccumulator()
        for row in self.rows:
            if row.status in ("scored", "no_valid_gt"):
                accumulator.update(row.metrics)
        return accumulator

    def worst(self) -> list[WorstFrame]:
        """The kept worst frames, worst first."""
        return [item[2] for item in sorted(self._worst, key=lambda item: (-item[0], item[2].index))]

    def unpaired(self) -> dict[str, Any]:
        statuses = Counter(row.status for row in self.rows)
        return {
            "frames_without_prediction": statuses["no_prediction"],
            "predictions_without_frame": statuses["no_gt_frame"],
            "messages": dict(sorted(self.unpaired_messages.items())),
        }


def score_predictions(
    predictions: Iterable[tuple[int, np.ndarray]],
    frames: Iterable[BagFrame],
    evaluation: BagEvaluation,
) -> BagEvaluation:
    """Pair (stamp_ns, HxW metres) predictions with GT frames by stamp and score them.

    The two streams are read in step, the one behind in stamp advancing, and an item is declared
    unpaired once the other stream has passed its stamp (or ended). With stamps increasing in
    each stream, as in a bag or a node's output, only the frames in flight are held in memory;
    an item arriving after the other stream passed its stamp counts as unpaired. Frame indices
    are positions in `frames`. Counts of unpaired messages inside a bag (`FrameReader.unpaired`,
    known once it is read) go to `evaluation.unpaired_messages`: the caller adds them.
    """
    pred_iter, frame_iter = iter(predictions), enumerate(frames)
    pending_preds: dict[int, np.ndarray] = {}
    pending_frames: dict[int, tuple[int, BagFrame]] = {}
    last_pred = last_frame = None
    preds_done = frames_done = False
    while not (preds_done and frames_done):
        take_pred = not preds_done and (frames_done or last_pred is None
                                        or (last_frame is not None and last_pred <= last_frame))
        if take_pred:
            item = next(pred_iter, None)
            if item is None:
                preds_done = True
            else:
                stamp, pred = int(item[0]), item[1]
                last_pred = stamp
                if stamp in pending_frames:
                    index, frame = pending_frames.pop(stamp)
                    evaluation.add(frame, pred, index)
                elif stamp in pending_preds:  # a second prediction for one stamp
                    evaluation.add_orphan(stamp)
                else:
                    pending_preds[stamp] = pred
        else:
            item = next(frame_iter, None)
            if item is None:
                frames_done = True
            else:
                index, frame = item
                last_frame = frame.stamp_ns
                if frame.stamp_ns in pending_preds:
                    evaluation.add(frame, pending_preds.pop(frame.stamp_ns), index)
                elif frame.stamp_ns in pending_frames:
                    evaluation.add_missing(frame, index)
                else:
                    pending_frames[frame.stamp_ns] = (index, frame)
        for stamp in [s for s in pending_frames if preds_done or (last_pred is not None and s < last_pred)]:
            index, frame = pending_frames.pop(stamp)
            evaluation.add_missing(frame, index)
        for stamp in [s for s in pending_preds if frames_done or (last_frame is not None and s < last_frame)]:
            del pending_preds[stamp]
            evaluation.add_orphan(stamp)
    return evaluation
