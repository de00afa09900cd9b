"""report.md and its plots for `zoedepth-ros evaluate` (written by `results.write_results`).

Figures are drawn on bare matplotlib `Figure`s (Agg canvas, no pyplot state), so reports can be
written from any thread, a node's included, without a display. Every file is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoedepth_ros.eval.metrics import METRIC_NAMES
from zoedepth_ros.eval.scoring import HISTOGRAM_EDGES
from zoedepth_ros.eval.temporal import MIN_STATIC_FRAMES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from zoedepth_ros.eval.scoring import BagEvaluation, WorstFrame

HISTOGRAM_PNG = "error_histogram.png"
PER_FRAME_PNG = "per_frame_abs_rel.png"
WORST_PNG = "worst_frames.png"
TEMPORAL_PNG = "temporal_pairs.png"
# Relative errors beyond 50 % all look alike; a fixed scale makes rows comparable.
ERROR_MAP_MAX = 0.5


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to a temporary sibling and rename it over `path`: readers see the old file
    or the new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _series_png(fig: Figure, ax, xlabel: str, ylabel: str) -> bytes:
    """The PNG of a plot of errors over frames: labelled axes, errors from 0, a legend if any line has a label."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")
    return _png(fig)


def error_histogram_png(evaluations: Sequence[BagEvaluation]) -> bytes:
    """Share of valid pixels per signed relative error bin, over all bags."""
    from matplotlib.figure import Figure

    counts = np.sum([e.histogram for e in evaluations], axis=0) if evaluations else np.zeros(len(HISTOGRAM_EDGES) - 1)
    total = counts.sum()
    share = counts / total if total else counts.astype(np.float64)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(HISTOGRAM_EDGES[:-1] * 100, share * 100, width=np.diff(HISTOGRAM_EDGES) * 100, align="edge",
           color="tab:blue")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("(pred - gt) / gt  [%]   (above +100 % counted in the last bin)")
    ax.set_ylabel("valid pixels [%]")
    ax.set_title(f"Per-pixel relative error, {int(total)} valid pixels")
    return _png(fig)


def per_frame_png(evaluations: Sequence[BagEvaluation], mean_abs_rel: float | None) -> bytes:
    """abs_rel of each scored frame in bag order, one colour per bag, with the overall mean."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.add_subplot()
    start = 0
    labelled = len(evaluations) <= 12
    for evaluation in evaluations:
        scored = sorted((r.index, r.metrics["abs_rel"]) for r in evaluation.rows if r.metrics is not None)
        x = np.arange(start, start + len(scored))
        ax.plot(x, [v for _, v in scored], marker=".", linestyle="-", linewidth=0.6,
                label=evaluation.name if labelled else None)
        start += len(scored)
    if mean_abs_rel is not None:
        ax.axhline(mean_abs_rel, color="black", linestyle="--", linewidth=0.8, label=f"mean {mean_abs_rel:.4f}")
    return _series_png(fig, ax, "scored frame (bags one after the other)", "abs_rel")


def temporal_pairs_png(evaluations: Sequence[BagEvaluation]) -> bytes:
    """Per-pair temporal error over time: 100 x the mean of a pair's two directions (what the
    TAE averages), against the later frame's time in its bag, one colour per bag."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.add_subplot()
    labelled = len(evaluations) <= 12
    for evaluation in evaluations:
        pairs = evaluation.temporal.pairs
        if not pairs:
            continue
        start = pairs[0].stamp_from
        x = [(p.stamp_to - start) / 1e9 for p in pairs]
        y = [100.0 * float(np.mean([e for e in (p.forward, p.backward) if e is not None])) for p in pairs]
        ax.plot(x, y, marker=".", linestyle="-", linewidth=0.6, label=evaluation.name if labelled else None)
    return _series_png(fig, ax, "time of the pair's later frame since the bag's first pair [s]",
                       "pair error x 100 (mean of both directions)")


def worst_frames_png(worst: Sequence[WorstFrame]) -> bytes:
    """One row per frame: image, prediction, ground truth (same depth colours), relative error."""
    import matplotlib
    from matplotlib.figure import Figure

    from zoedepth_ros.colormap import colorize

    error_cmap = matplotlib.colormaps["magma"].with_extremes(bad="black")
    height, width = worst[0].gt.shape
    panel_w, title_h = 4.0, 0.35
    panel_h = panel_w * height / width
    fig = Figure(figsize=(4 * panel_w + 0.8, len(worst) * (panel_h + title_h)))
    # Fixed margins instead of a layout engine: the engine costs seconds on a dozen panels.
    fig.subplots_adjust(left=0.005, right=0.94, bottom=0.01, top=1 - title_h / (len(worst) * (panel_h + title_h)) * 0.8,
                        wspace=0.02, hspace=title_h / panel_h * 1.2)
    axes = fig.subplots(len(worst), 4, squeeze=False)
    for row, frame in zip(axes, worst, strict=True):
        gt_shown = np.where(frame.mask, frame.gt, np.nan)
        vmin, vmax = float(frame.gt[frame.mask].min()), float(frame.gt[frame.mask].max())
        error = np.where(frame.mask, np.abs(frame.pred - frame.gt) / np.where(frame.mask, frame.gt, 1.0), np.nan)
        row[0].imshow(frame.rgb)
        row[0].set_title(f"{frame.bag} #{frame.index}: abs_rel {frame.abs_rel:.3f}", fontsize="small")
        row[1].imshow(colorize(frame.pred, vmin, vmax))
        row[1].set_title("prediction (scored range)", fontsize="small")
        row[2].imshow(colorize(gt_shown, vmin, vmax))
        row[2].set_title(f"ground truth {vmin:.2f}-{vmax:.2f} m (valid pixels)", fontsize="small")
        image = row[3].imshow(np.ma.masked_invalid(error), cmap=error_cmap, vmin=0.0, vmax=ERROR_MAP_MAX,
                              interpolation="nearest")
        row[3].set_title("|pred - gt| / gt", fontsize="small")
        for ax in row:
            ax.set_axis_off()
    fig.colorbar(image, cax=fig.add_axes((0.95, 0.05, 0.012, 0.9)),
                 label=f"|pred - gt| / gt (clipped at {ERROR_MAP_MAX})")
    return _png(fig)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _metrics_table(summary: dict[str, Any]) -> list[str]:
    header = ["", "frames", "skipped", "unpaired", *METRIC_NAMES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    entries = [(f"`{bag['name']}`", bag) for bag in summary["bags"]]
    if len(entries) != 1:
        entries.append(("**all bags (mean over images)**", summary))
    for label, entry in entries:
        cells = [label, str(entry["frames"]), str(entry["frames_skipped"]), str(entry["frames_unpaired"]),
                 *(_fmt(entry[name]) for name in METRIC_NAMES)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _temporal_lines(summary: dict[str, Any]) -> list[str]:
    """The temporal section: TAE, pairs, flicker and static frames per bag (and overall)."""
    header = ["", "TAE", "pairs", "flicker", "static frames"]
    lines = ["## Temporal consistency", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    entries = [(f"`{bag['name']}`", bag["temporal"]) for bag in summary["bags"]]
    if len(entries) != 1:
        entries.append(("**all bags**", summary["temporal"]))
    for label, temporal in entries:
        if temporal is None:
            lines.append(f"| {label} | no poses | - | - | - |")
            continue
        cells = [label, _fmt(temporal["tae"]), str(temporal["pairs"]), _fmt(temporal["flicker"]),
                 str(temporal["static_frames"])]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "",
            "TAE: 100 x the mean AbsRel of each frame's depth warped by the ground-truth poses onto the next frame's "
            "and back, over consecutive pairs within a sequence (lower is better). Flicker: median over pixels of "
            f"the temporal standard deviation of log depth where the camera holds still for {MIN_STATIC_FRAMES} "
            "frames or more. Every pair: `temporal_pairs.csv`.", "", f"![per-pair temporal error]({TEMPORAL_PNG})", ""]


def _unpaired_text(unpaired: dict[str, Any]) -> str:
    parts = [f"{unpaired['frames_without_prediction']} GT frames without prediction",
             f"{unpaired['predictions_without_frame']} predictions without GT frame"]
    parts += [f"{count} on {topic} without partners" for topic, count in unpaired["messages"].items()]
    return "; ".join(parts)


def report_markdown(summary: dict[str, Any], worst: Sequence[WorstFrame]) -> str:
    protocol = summary["protocol"]
    lines = [f"# Depth evaluation{': ' + protocol['name'] if protocol else ''}", ""]
    if not summary["complete"]:
        lines += ["> **Incomplete run**: interrupted; the numbers cover the frames scored before the interruption.", ""]
    if summary["model"] is not None:
        inference = summary["inference"] or {}
        details = ", ".join(f"{k} {v}" for k, v in inference.items())
        lines.append(f"- Predictions: model `{summary['model']}` run in-process ({details}).")
    else:
        lines.append(f"- Predictions: depth images on `{summary['pred_topic']}`, paired with GT by header stamp.")
    if protocol:
        crop = protocol["crop"] or "no"
        lines.append(
            f"- Protocol `{protocol['name']}`: GT valid in ({protocol['min_depth']:g}, {protocol['max_depth']:g}) m, "
            f"{crop} crop{', KB crop' if protocol['kb_crop'] else ''}; predictions clipped to the range; "
            "metrics per image, then the mean over images."
        )
    lines += [
        f"- Frames: **{summary['frames']} scored**, {summary['frames_skipped']} skipped (no valid GT pixel), "
        f"{summary['frames_unpaired']} unpaired ({_unpaired_text(summary['unpaired'])}).",
        "",
        "## Metrics",
        "",
        *_metrics_table(summary),
        "",
        "a1-a3: share of pixels with max(pred/gt, gt/pred) below 1.25, 1.25^2, 1.25^3 (higher is better); "
        "the others are errors (lower is better), rmse in metres.",
        "",
        "## Error histogram",
        "",
        f"![per-pixel relative error]({HISTOGRAM_PNG})",
        "",
        "## Per-frame abs_rel",
        "",
        f"![abs_rel per frame]({PER_FRAME_PNG})",
        "",
        *(_temporal_lines(summary) if summary["temporal"] is not None else []),
        "## Worst frames",
        "",
    ]
    if worst:
        lines += ["| bag | frame | stamp (ns) | abs_rel |", "|---|---|---|---|"]
        lines += [f"| `{w.bag}` | {w.index} | {w.stamp_ns} | {w.abs_rel:.4f} |" for w in worst]
        lines += ["", "Image, prediction, ground truth (shared depth colours, near red, far blue; black = not scored) "
                  "and relative error, as scored (after crops and resizing).", "", f"![worst frames]({WORST_PNG})"]
    else:
        lines.append("No frame was scored.")
    lines += ["", "Every frame: `per_frame.csv`. Machine-readable summary: `summary.json`.", ""]
    return "\n".join(lines)


def write_report(out: Path, summary: dict[str, Any], evaluations: Sequence[BagEvaluation],
                 worst: Sequence[WorstFrame]) -> None:
    """The plots and report.md of `summary` into `out`."""
    out = Path(out)
    atomic_write(out / HISTOGRAM_PNG, error_histogram_png(evaluations))
    atomic_write(out / PER_FRAME_PNG, per_frame_png(evaluations, summary["abs_rel"]))
    if summary["temporal"] is not None:
        atomic_write(out / TEMPORAL_PNG, temporal_pairs_png(evaluations))
    else:
        (out / TEMPORAL_PNG).unlink(missing_ok=True)
    if worst:
        atomic_write(out / WORST_PNG, worst_frames_png(worst))
    else:
        (out / WORST_PNG).unlink(missing_ok=True)
    atomic_write(out / "report.md", report_markdown(summary, worst))
