"""`zoedepth-ros evaluate`: score evaluation bags with the paper's protocol (docs/evaluation.md).

The command finds the bags and their protocol, runs a model in-process (`--model`) or reads
recorded depth (`--pred-topic`), and scores through `scoring.py`; `results.py` writes
summary.json, per_frame.csv and the report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoedepth_ros.argtypes import MODEL_HELP, add_engine_argument, add_precision_argument, at_least, device
from zoedepth_ros.data.bag import read_depth_topic, read_frames, read_metadata
from zoedepth_ros.data.bag_layout import BagFrame
from zoedepth_ros.eval.protocols import PROTOCOLS, Protocol, get_protocol, kb_crop, kb_crop_projection
from zoedepth_ros.eval.recipe import ESTIMATOR_OPTIONS, predict_in_batches
from zoedepth_ros.eval.results import write_results
from zoedepth_ros.eval.scoring import DEFAULT_WORST, BagEvaluation, EvaluationError, score_predictions
from zoedepth_ros.inference.temporal_filter import TEMPORAL_FILTERS, TemporalFilter, make_temporal_filter
from zoedepth_ros.interrupts import sigterm_as_interrupt

if TYPE_CHECKING:
    from zoedepth_ros.inference import DepthEstimator


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
        raise EvaluationError(
            f"bag {path} records no evaluation protocol; pass --protocol ({', '.join(PROTOCOLS)})") from None


def _progress(iterable: Iterable, name: str, enabled: bool) -> Iterable:
    from tqdm import tqdm

    return tqdm(iterable, desc=name, unit="frame", disable=not enabled)


def evaluate_with_estimator(estimator: DepthEstimator, path: Path, evaluation: BagEvaluation, batch_size: int = 1,
                            progress: bool = True, temporal_filter: str = "none") -> BagEvaluation:
    """Run `estimator` (a DepthEstimator in the official eval mode) on the frames of a bag and
    score them; KB-crop protocols crop the image before the network, as the official loader does.
    `temporal_filter` filters the predictions in the bag's order, as the depth node filters a
    camera's (one filter per bag, restarted by the stamps and a change of size or K)."""
    frames = read_frames(path)
    flt = make_temporal_filter(temporal_filter)

    def network_inputs() -> Iterator[tuple[int, BagFrame, np.ndarray]]:
        for index, frame in enumerate(_progress(frames, evaluation.name, progress)):
            try:
                rgb = kb_crop(frame.rgb) if evaluation.protocol.kb_crop else frame.rgb
            except ValueError as exc:
                raise EvaluationError(f"{evaluation.name} frame {index}: {exc}") from None
            yield index, frame, np.ascontiguousarray(rgb)

    for (index, frame, rgb), prediction in predict_in_batches(estimator, network_inputs(), lambda item: item[2],
                                                               batch_size):
        K = kb_crop_projection(frame.K, *frame.rgb.shape[:2]) if evaluation.protocol.kb_crop else frame.K
        evaluation.add(frame, flt.filter(prediction.depth, frame.stamp_ns, K, rgb), index)
    evaluation.unpaired_messages.update(frames.unpaired)
    return evaluation


def filter_recorded(predictions: Iterable[tuple[int, np.ndarray]], bag: Path,
                    flt: TemporalFilter) -> Iterator[tuple[int, np.ndarray]]:
    """Recorded (stamp_ns, depth) predictions filtered in their order, each with the image and K of
    the bag's frame of its stamp where there is one of the depth's size (the bag's frames are read a
    second time, alongside): what the node gave its filter when it published them. A prediction
    without such a frame is filtered without them (motion-ema then takes the camera as still)."""
    frames = iter(read_frames(bag))
    frame = next(frames, None)
    for stamp, depth in predictions:
        while frame is not None and frame.stamp_ns < stamp:
            frame = next(frames, None)
        same = frame is not None and frame.stamp_ns == stamp and frame.rgb.shape[:2] == depth.shape
        yield stamp, flt.filter(depth, stamp, frame.K if same else None, frame.rgb if same else None)


# --- command line ----------------------------------------------------------------------------


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
    source.add_argument("--model", metavar="SRC", help=MODEL_HELP)
    source.add_argument("--pred-topic", metavar="TOPIC",
                        help="score the depth images on TOPIC (32FC1 metres or 16UC1 mm, or a compressedDepth topic)")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), help="scoring protocol (default: the one each bag records)")
    p.add_argument("--out", type=Path, required=True,
                   help="directory for summary.json, per_frame.csv, report.md and plots")
    p.add_argument("--device", type=device, default="auto", help="with --model: auto, cpu or cuda[:N] (default auto)")
    add_precision_argument(p, "with --model")
    add_engine_argument(p)
    p.add_argument("--batch-size", type=at_least(1), default=1,
                   help="with --model: frames per forward pass (default 1)")
    p.add_argument("--kitti-max-depth", type=float,
                   help="with --model: override the KITTI head's maximum depth (metres)")
    p.add_argument("--temporal-filter", choices=TEMPORAL_FILTERS, default="none",
                   help="filter each bag's predictions over time as the depth node's temporal_filter does, in stamp "
                        "order, restarting where the stamps start a new sequence (docs/node.md; default none)")
    p.add_argument("--worst", type=at_least(0), default=DEFAULT_WORST,
                   help=f"worst frames shown in the report (default {DEFAULT_WORST})")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def _bag_names(bags: list[Path]) -> list[str]:
    names = [bag.name for bag in bags]
    return names if len(set(names)) == len(names) else [str(bag) for bag in bags]


def _score_bag(args: argparse.Namespace, estimator: DepthEstimator | None, bag: Path,
               evaluation: BagEvaluation) -> None:
    """Score `bag` into `evaluation`: the estimator's predictions, or those recorded on --pred-topic."""
    if estimator is not None:
        evaluate_with_estimator(estimator, bag, evaluation, args.batch_size, args.progress, args.temporal_filter)
        return
    frames = read_frames(bag)
    # An undecodable prediction (a corrupt compressedDepth PNG or RVL...) is counted with its reason
    # among the bag's unpaired messages, and its frame as without prediction.
    predictions = read_depth_topic(bag, args.pred_topic, rejected=evaluation.unpaired_messages)
    if args.temporal_filter != "none":
        predictions = filter_recorded(predictions, bag, make_temporal_filter(args.temporal_filter))
    score_predictions(predictions, _progress(frames, evaluation.name, args.progress), evaluation)
    evaluation.unpaired_messages.update(frames.unpaired)


def run(args: argparse.Namespace) -> int:
    bags = find_bags(args.bags)
    protocols = [bag_protocol(bag, args.protocol) for bag in bags]
    if len(set(protocols)) > 1:
        listing = ", ".join(f"{bag.name}: {p.name}" for bag, p in zip(bags, protocols, strict=True))
        raise EvaluationError(f"the bags record different protocols ({listing}); one mean would mix them: "
                              "evaluate them separately or pass --protocol")
    # Each bag is opened (topics checked) before any frame is scored: a typo fails in seconds.
    for bag in bags:
        read_frames(bag)
        if args.pred_topic:
            read_depth_topic(bag, args.pred_topic)

    if args.model:
        from zoedepth_ros.inference import DepthEstimator
        from zoedepth_ros.inference.engines import load_source

        estimator = DepthEstimator(load_source(args.model, args.kitti_max_depth), device=args.device,
                                   precision=args.precision, engine=args.engine, **ESTIMATOR_OPTIONS)
        source = {"model": str(args.model), "engine": args.engine, "device": str(estimator.device),
                  "precision": estimator.precision, "precision_reason": estimator.precision_reason,
                  "batch_size": args.batch_size,
                  "mode": "official eval: stretch to img_size, flip TTA, no padding"}
        if args.precision == "auto":
            print(f"precision {estimator.precision} ({estimator.precision_reason})", file=sys.stderr)
    else:
        estimator = None
        source = {"pred_topic": args.pred_topic}
    source["temporal_filter"] = args.temporal_filter

    evaluations: list[BagEvaluation] = []
    complete = True
    # A ROS launch or a batch system stops jobs with SIGTERM: score what is done, as for Ctrl-C.
    try:
        with sigterm_as_interrupt():
            for bag, name, protocol in zip(bags, _bag_names(bags), protocols, strict=True):
                evaluation = BagEvaluation(name, protocol, worst=args.worst, path=bag, metadata=read_metadata(bag))
                evaluations.append(evaluation)
                _score_bag(args, estimator, bag, evaluation)
    except KeyboardInterrupt:
        complete = False

    summary = write_results(args.out, evaluations, source, complete=complete, worst=args.worst)
    print_summary(summary, len(evaluations), args.out)
    if not complete:
        print("interrupted: the outputs hold the frames scored so far (\"complete\": false)", file=sys.stderr)
        return 130
    return 0


def print_summary(summary: dict[str, Any], bags: int, out: Path) -> None:
    scores = ", ".join(f"{name} {summary[name]:.4f}" for name in ("a1", "abs_rel", "rmse") if summary[name] is not None)
    print(f"scored {summary['frames']} frames from {bags} bag(s) "
          f"({summary['frames_skipped']} skipped without valid GT, {summary['frames_unpaired']} unpaired)"
          f"{': ' + scores if scores else ''}; wrote {out / 'summary.json'}")
