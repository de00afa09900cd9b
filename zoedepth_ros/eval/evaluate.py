"""`zoedepth-ros evaluate`: score evaluation bags with the paper's protocol, and the scoring seam
that a replay node reuses.

Scoring without ROS or torch (what `evaluate --pred-topic` runs, and a replay node can call):

    evaluation = BagEvaluation("nyu_test", protocol)
    score_predictions(predictions, frames, evaluation)   # (stamp_ns, HxW metres) pairs + BagFrames
    # or, with each frame and its prediction in hand: evaluation.add(frame, depth),
    # evaluation.add_missing(frame), evaluation.add_orphan(stamp_ns)
    write_results(out_dir, [evaluation], source={"model": "..."}, complete=True)

Predictions and GT frames are paired by header stamp. Frames without a prediction, predictions
without a frame, and bag messages without partners are counted and reported, never dropped.
Several bags aggregate as the official evaluation averages: the mean over all images (their
accumulators merged), with a per-bag breakdown beside it.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import io
import itertools
import json
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from zoedepth_ros.data.bag import (
    IMAGE,
    BagError,
    BagFrame,
    _raw_pixels,
    _reader_errors,
    decode_depth,
    read_frames,
    read_metadata,
    stamp_to_ns,
    typestore,
)
from zoedepth_ros.errors import ZoeDepthError
from zoedepth_ros.eval.metrics import METRIC_NAMES, MetricsAccumulator, align_prediction, score_frame
from zoedepth_ros.eval.protocols import PROTOCOLS, Protocol, eval_mask, get_protocol, kb_crop

if TYPE_CHECKING:
    from zoedepth_ros.model import DepthEstimator

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
    worst frames and the unpaired counts."""

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
        status = "no_valid_gt" if metrics is None else "scored"
        row = FrameResult(self.name, index, frame.stamp_ns, status, int(mask.sum()), metrics)
        self.rows.append(row)
        if metrics is not None:
            gt_valid = aligned_gt[mask]
            relative = np.clip((aligned_pred[mask] - gt_valid) / gt_valid, HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1])
            self.histogram += np.histogram(relative, bins=HISTOGRAM_EDGES)[0]
            self._keep_if_worst(frame, index, metrics["abs_rel"], aligned_pred, aligned_gt, mask)
        return row

    def _keep_if_worst(self, frame: BagFrame, index: int, abs_rel: float, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> None:
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
        take_pred = not preds_done and (frames_done or last_pred is None or (last_frame is not None and last_pred <= last_frame))
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


# --- reading bags -------------------------------------------------------------------------------


def decode_prediction(msg: Any) -> np.ndarray:
    """HxW float32 metres of a 32FC1 or 16UC1 depth image, for scoring.

    32FC1 values are kept as they are, so that the scorer treats them as the official code does
    (NaN and -inf -> the protocol minimum, +inf -> its maximum); `decode_depth`, made for GT,
    would turn +inf ("out of range", REP 118) into NaN and so into the minimum.
    """
    if msg.encoding == "32FC1":
        return _raw_pixels(msg, np.float32, 1)[:, :, 0]
    return decode_depth(msg)


def read_depth_topic(path: Path, topic: str) -> Iterator[tuple[int, np.ndarray]]:
    """(header stamp, `decode_prediction` of the image) of each 32FC1 / 16UC1 image on `topic`.
    The topic is checked when this is called, the messages are read lazily."""
    from rosbags.rosbag2 import Reader

    errors = _reader_errors()
    try:
        with Reader(path) as reader:
            available = {t: info.msgtype for t, info in reader.topics.items()}
    except errors as exc:
        raise BagError(f"cannot read bag {path} (corrupt or truncated?): {exc}") from exc
    if topic not in available:
        listing = ", ".join(f"{t} [{m}]" for t, m in sorted(available.items())) or "no topics"
        raise BagError(f"bag {path} has no prediction topic {topic}; it has {listing}")
    if available[topic] != IMAGE:
        raise BagError(f"bag {path}: prediction topic {topic} is {available[topic]}, expected {IMAGE} (32FC1 or 16UC1)")

    def messages() -> Iterator[tuple[int, np.ndarray]]:
        ts = typestore()
        try:
            with Reader(path) as reader:
                connections = [c for c in reader.connections if c.topic == topic]
                for connection, _, raw in reader.messages(connections=connections):
                    msg = ts.deserialize_cdr(raw, connection.msgtype)
                    yield stamp_to_ns(msg.header), decode_prediction(msg)
        except errors as exc:
            raise BagError(f"cannot read bag {path} (corrupt or truncated?): {exc}") from exc

    return messages()


def find_bags(paths: Iterable[Path]) -> list[Path]:
    """Each path is a bag, or a directory whose sub-directories are bags (sorted by name)."""
    bags: list[Path] = []
    for path in map(Path, paths):
        if (path / "metadata.yaml").is_file():
            bags.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if (p / "metadata.yaml").is_file())
            if not found:
                raise EvaluationError(f"{path} is neither a bag nor a directory of bags (no metadata.yaml)")
            bags.extend(found)
        else:
            raise EvaluationError(f"no bag at {path}")
    return bags


def bag_protocol(path: Path, override: str | None) -> Protocol:
    """The protocol named on the command line, else the one the bag recorded."""
    if override is not None:
        return get_protocol(override)
    try:
        return Protocol.from_metadata(read_metadata(path))
    except ValueError:
        raise EvaluationError(f"bag {path} records no evaluation protocol; pass --protocol ({', '.join(PROTOCOLS)})") from None


def _progress(iterable: Iterable, name: str, enabled: bool) -> Iterable:
    from tqdm import tqdm

    return tqdm(iterable, desc=name, unit="frame", disable=not enabled)


def evaluate_with_estimator(estimator: DepthEstimator, path: Path, evaluation: BagEvaluation, batch_size: int = 1, progress: bool = True) -> BagEvaluation:
    """Run `estimator` (a DepthEstimator in the official eval mode) on the frames of a bag and
    score them; KB-crop protocols crop the image before the network, as the official loader does."""
    frames = read_frames(path)
    batch: list[tuple[int, BagFrame, np.ndarray]] = []

    def flush() -> None:
        predictions = estimator.predict_batch([rgb for _, _, rgb in batch])
        for (index, frame, _), prediction in zip(batch, predictions):
            evaluation.add(frame, prediction.depth, index)
        batch.clear()

    for index, frame in enumerate(_progress(frames, evaluation.name, progress)):
        try:
            rgb = kb_crop(frame.rgb) if evaluation.protocol.kb_crop else frame.rgb
        except ValueError as exc:
            raise EvaluationError(f"{evaluation.name} frame {index}: {exc}") from None
        if batch and batch[0][2].shape != rgb.shape:
            flush()
        batch.append((index, frame, np.ascontiguousarray(rgb)))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    evaluation.unpaired_messages.update(frames.unpaired)
    return evaluation


# --- results ----------------------------------------------------------------------------------


def _protocol_summary(protocol: Protocol) -> dict[str, Any]:
    return {"name": protocol.name, "min_depth": protocol.min_depth, "max_depth": protocol.max_depth,
            "crop": protocol.crop, "kb_crop": protocol.kb_crop}


def _counts(accumulator: MetricsAccumulator, unpaired: dict[str, Any]) -> dict[str, Any]:
    total = unpaired["frames_without_prediction"] + unpaired["predictions_without_frame"] + sum(unpaired["messages"].values())
    means = accumulator.mean()
    return {
        **{name: means.get(name) for name in METRIC_NAMES},
        "frames": accumulator.frames,
        "frames_skipped": accumulator.skipped,
        "frames_unpaired": total,
        "unpaired": unpaired,
    }


def summarize(evaluations: list[BagEvaluation], source: Mapping[str, Any], complete: bool) -> dict[str, Any]:
    """summary.json: the per-image mean over every frame of every bag, then each bag's own."""
    total = MetricsAccumulator()
    unpaired: dict[str, Any] = {"frames_without_prediction": 0, "predictions_without_frame": 0, "messages": {}}
    bags = []
    for evaluation in evaluations:
        total.merge(evaluation.accumulator)
        own = evaluation.unpaired()
        unpaired["frames_without_prediction"] += own["frames_without_prediction"]
        unpaired["predictions_without_frame"] += own["predictions_without_frame"]
        for topic, count in own["messages"].items():
            unpaired["messages"][topic] = unpaired["messages"].get(topic, 0) + count
        bags.append({
            "name": evaluation.name,
            "path": None if evaluation.path is None else str(evaluation.path),
            "protocol": evaluation.protocol.name,
            "metadata": evaluation.metadata,
            **_counts(evaluation.accumulator, own),
        })
    protocols = {e.protocol for e in evaluations}
    return {
        "complete": complete,
        **_counts(total, unpaired),
        "protocol": _protocol_summary(protocols.pop()) if len(protocols) == 1 else None,
        "model": source.get("model"),
        "pred_topic": source.get("pred_topic"),
        "inference": {k: v for k, v in source.items() if k not in ("model", "pred_topic")} or None,
        "bags": bags,
    }


def _finite_or_none(value: Any) -> Any:
    """JSON has no inf/NaN: an infinite mean (log errors of a 0 m prediction under a protocol whose
    range starts at 0, as the official code allows) becomes null; per_frame.csv keeps 'inf'."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def per_frame_csv(evaluations: list[BagEvaluation]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["bag", "index", "stamp_ns", "status", "valid_pixels", *METRIC_NAMES])
    for evaluation in evaluations:
        # GT frames in bag order, predictions without a frame (no index) by stamp after them
        rows = sorted(evaluation.rows, key=lambda r: (r.index is None, r.index if r.index is not None else 0, r.stamp_ns))
        for row in rows:
            values = ["" if row.metrics is None else repr(row.metrics[name]) for name in METRIC_NAMES]
            writer.writerow([row.bag, "" if row.index is None else row.index, row.stamp_ns, row.status, row.valid_pixels, *values])
    return buffer.getvalue()


def write_results(out: Path, evaluations: list[BagEvaluation], source: Mapping[str, Any], complete: bool = True,
                  worst: int = DEFAULT_WORST) -> dict[str, Any]:
    """Write plots, report.md, per_frame.csv and, last, summary.json into `out`, each file
    atomically; returns the summary."""
    from zoedepth_ros.eval.report import atomic_write, write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(evaluations, source, complete)
    worst_frames = sorted(itertools.chain.from_iterable(e.worst() for e in evaluations), key=lambda w: -w.abs_rel)[:worst]
    write_report(out, summary, evaluations, worst_frames)
    atomic_write(out / "per_frame.csv", per_frame_csv(evaluations))
    atomic_write(out / "summary.json", json.dumps(_finite_or_none(summary), indent=2, allow_nan=False) + "\n")
    return summary


# --- command line ----------------------------------------------------------------------------


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="score evaluation bags with the paper's protocol (summary, per-frame CSV, report)",
        description="Score depth predictions against the ground truth of evaluation bags: either run a model "
                    "in-process with the official evaluation (stretch to the network size, flip average, "
                    "bilinear resize to GT) or score depth images recorded in the bags. Writes summary.json, "
                    "per_frame.csv and report.md with plots into --out. See docs/evaluation.md.",
    )
    p.add_argument("bags", nargs="+", type=Path, metavar="BAG",
                   help="evaluation bag, or a directory of bags (aggregated as one mean over all images)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="SRC", help="preset name, official .pt, Hugging Face directory or project .safetensors")
    source.add_argument("--pred-topic", metavar="TOPIC", help="score the depth images on TOPIC (32FC1 metres or 16UC1 mm)")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), help="scoring protocol (default: the one each bag records)")
    p.add_argument("--out", type=Path, required=True, help="directory for summary.json, per_frame.csv, report.md and plots")
    p.add_argument("--device", default="auto", help="with --model: auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="with --model (default fp32)")
    p.add_argument("--batch-size", type=_at_least(1), default=1, help="with --model: frames per forward pass (default 1)")
    p.add_argument("--kitti-max-depth", type=float, help="with --model: override the KITTI head's maximum depth (metres)")
    p.add_argument("--worst", type=_at_least(0), default=DEFAULT_WORST, help=f"worst frames shown in the report (default {DEFAULT_WORST})")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def _bag_names(bags: list[Path]) -> list[str]:
    names = [bag.name for bag in bags]
    return names if len(set(names)) == len(names) else [str(bag) for bag in bags]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    bags = find_bags(args.bags)
    protocols = [bag_protocol(bag, args.protocol) for bag in bags]
    if len(set(protocols)) > 1:
        listing = ", ".join(f"{bag.name}: {p.name}" for bag, p in zip(bags, protocols))
        raise EvaluationError(f"the bags record different protocols ({listing}); one mean would mix them: "
                              "evaluate them separately or pass --protocol")
    # Each bag is opened (topics checked) before any frame is scored: a typo fails in seconds.
    for bag in bags:
        read_frames(bag)
        if args.pred_topic:
            read_depth_topic(bag, args.pred_topic)

    if args.model:
        from zoedepth_ros.model import DepthEstimator, load_model

        estimator = DepthEstimator(load_model(args.model, kitti_max_depth=args.kitti_max_depth), device=args.device,
                                   precision=args.precision, flip_tta=True, pad=False, mode="eval")
        source = {"model": str(args.model), "device": str(estimator.device), "precision": args.precision,
                  "batch_size": args.batch_size, "mode": "official eval: stretch to img_size, flip TTA, no padding"}
    else:
        source = {"pred_topic": args.pred_topic}

    evaluations: list[BagEvaluation] = []
    complete = True
    # A ROS launch or a batch system stops jobs with SIGTERM: score what is done, as for Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for bag, name, protocol in zip(bags, _bag_names(bags), protocols):
            evaluation = BagEvaluation(name, protocol, worst=args.worst, path=bag, metadata=read_metadata(bag))
            evaluations.append(evaluation)
            if args.model:
                evaluate_with_estimator(estimator, bag, evaluation, args.batch_size, args.progress)
            else:
                frames = read_frames(bag)
                score_predictions(read_depth_topic(bag, args.pred_topic), _progress(frames, name, args.progress), evaluation)
                evaluation.unpaired_messages.update(frames.unpaired)
    except KeyboardInterrupt:
        complete = False
    finally:
        signal.signal(signal.SIGTERM, previous)

    summary = write_results(args.out, evaluations, source, complete=complete, worst=args.worst)
    _print_summary(summary, len(evaluations), args.out)
    if not complete:
        print("interrupted: the outputs hold the frames scored so far (\"complete\": false)", file=sys.stderr)
        return 130
    return 0


def _print_summary(summary: dict[str, Any], bags: int, out: Path) -> None:
    scores = ", ".join(f"{name} {summary[name]:.4f}" for name in ("a1", "abs_rel", "rmse") if summary[name] is not None)
    print(f"scored {summary['frames']} frames from {bags} bag(s) ({summary['frames_skipped']} skipped without valid GT, "
          f"{summary['frames_unpaired']} unpaired){': ' + scores if scores else ''}; wrote {out / 'summary.json'}")
