"""The outputs of an evaluation: summary.json, per_frame.csv, temporal_pairs.csv (bags with
ground-truth poses) and the report (`report.py`), as `zoedepth-ros evaluate` and the replay node
write them.

Several bags aggregate as the official evaluation averages: the mean over all images (their
accumulators merged), with a per-bag breakdown beside it. The temporal metrics aggregate the same
way: TAE the mean over every pair of every bag, flicker the median over every pixel of every
static stretch (`zoedepth_ros.eval.temporal.temporal_summary`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zoedepth_ros.eval.metrics import METRIC_NAMES, MetricsAccumulator
from zoedepth_ros.eval.protocols import Protocol
from zoedepth_ros.eval.report import atomic_write, write_report
from zoedepth_ros.eval.scoring import DEFAULT_WORST, BagEvaluation
from zoedepth_ros.eval.temporal import temporal_summary

TEMPORAL_PAIRS_CSV = "temporal_pairs.csv"


def _protocol_summary(protocol: Protocol) -> dict[str, Any]:
    return {"name": protocol.name, "min_depth": protocol.min_depth, "max_depth": protocol.max_depth,
            "crop": protocol.crop, "kb_crop": protocol.kb_crop}


def _counts(accumulator: MetricsAccumulator, unpaired: dict[str, Any]) -> dict[str, Any]:
    total = (unpaired["frames_without_prediction"] + unpaired["predictions_without_frame"]
             + sum(unpaired["messages"].values()))
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
            "temporal": temporal_summary([evaluation.temporal]),
        })
    protocols = {e.protocol for e in evaluations}
    return {
        "complete": complete,
        **_counts(total, unpaired),
        "protocol": _protocol_summary(protocols.pop()) if len(protocols) == 1 else None,
        "model": source.get("model"),
        "pred_topic": source.get("pred_topic"),
        # None where the depth came filtered by a node whose setting the scorer does not know (replay).
        "temporal_filter": source.get("temporal_filter"),
        "inference": {k: v for k, v in source.items() if k not in ("model", "pred_topic", "temporal_filter")}
        or None,
        "temporal": temporal_summary([e.temporal for e in evaluations]),
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
        rows = sorted(evaluation.rows,
                      key=lambda r: (r.index is None, r.index if r.index is not None else 0, r.stamp_ns))
        for row in rows:
            values = ["" if row.metrics is None else repr(row.metrics[name]) for name in METRIC_NAMES]
            writer.writerow([row.bag, "" if row.index is None else row.index, row.stamp_ns, row.status,
                             row.valid_pixels, *values])
    return buffer.getvalue()


def temporal_pairs_csv(evaluations: list[BagEvaluation]) -> str:
    """Every counted pair of frames: AbsRel of the earlier frame's depth warped onto the later
    (forward) and back (backward); empty where no pixel qualified."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["bag", "stamp_from", "stamp_to", "abs_rel_forward", "abs_rel_backward"])
    for evaluation in evaluations:
        for pair in evaluation.temporal.pairs:
            writer.writerow([evaluation.name, pair.stamp_from, pair.stamp_to,
                             *("" if e is None else repr(e) for e in (pair.forward, pair.backward))])
    return buffer.getvalue()


def write_results(out: Path, evaluations: list[BagEvaluation], source: Mapping[str, Any], complete: bool = True,
                  worst: int = DEFAULT_WORST) -> dict[str, Any]:
    """Write plots, report.md, per_frame.csv, temporal_pairs.csv (where a bag has poses; a stale
    one is removed otherwise) and, last, summary.json into `out`, each file atomically; returns
    the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(evaluations, source, complete)
    worst_frames = sorted(itertools.chain.from_iterable(e.worst() for e in evaluations),
                          key=lambda w: -w.abs_rel)[:worst]
    write_report(out, summary, evaluations, worst_frames)
    atomic_write(out / "per_frame.csv", per_frame_csv(evaluations))
    if summary["temporal"] is not None:
        atomic_write(out / TEMPORAL_PAIRS_CSV, temporal_pairs_csv(evaluations))
    else:
        (out / TEMPORAL_PAIRS_CSV).unlink(missing_ok=True)
    atomic_write(out / "summary.json", json.dumps(_finite_or_none(summary), indent=2, allow_nan=False) + "\n")
    return summary
