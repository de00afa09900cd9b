"""Depth metrics exactly as the official ZoeDepth evaluation computes them, in float64.

`score_frame` follows `compute_metrics` (isl-org/ZoeDepth, zoedepth/utils/misc.py): resize the
prediction to the GT size (bilinear, align_corners=True), clip it to the protocol range
(+inf -> max, -inf -> min, NaN -> min), mask the GT, then `compute_errors`. The official code
runs in float32; float64 here moves results by about 1e-7 relative.
`MetricsAccumulator` averages per image like the official RunningAverageDict.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from zoedepth_ros.eval.protocols import Protocol, eval_mask, kb_crop

METRIC_NAMES = ("a1", "a2", "a3", "abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "log_10")


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Metrics over matching 1-D arrays of valid GT and clipped prediction (metres)."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape or gt.ndim != 1 or gt.size == 0:
        raise ValueError(f"need two equal non-empty 1-D arrays, got {gt.shape} and {pred.shape}")
    # Protocols with min_depth 0 (iBims, SUN RGB-D, DIML indoor) let a prediction of 0 through,
    # as the official code does; the log metrics are then inf and must not spam warnings.
    with np.errstate(divide="ignore", invalid="ignore"):
        thresh = np.maximum(gt / pred, pred / gt)
        diff = gt - pred
        log_diff = np.log(pred) - np.log(gt)
        # mean(e^2) - mean(e)^2 of a constant error rounds to a tiny negative: that is 0, not NaN.
        silog_var = max(np.mean(log_diff**2) - np.mean(log_diff) ** 2, 0.0)
        return {
            "a1": float(np.mean(thresh < 1.25)),
            "a2": float(np.mean(thresh < 1.25**2)),
            "a3": float(np.mean(thresh < 1.25**3)),
            "abs_rel": float(np.mean(np.abs(diff) / gt)),
            "sq_rel": float(np.mean(diff**2 / gt)),
            "rmse": float(np.sqrt(np.mean(diff**2))),
            "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
            "silog": float(100.0 * np.sqrt(silog_var)),
            "log_10": float(np.mean(np.abs(np.log10(gt) - np.log10(pred)))),
        }


def resize_bilinear(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW bilinear resize with align_corners=True semantics (torch.nn.functional.interpolate)."""
    in_h, in_w = image.shape
    out_h, out_w = shape
    ys = np.linspace(0.0, in_h - 1, out_h)
    xs = np.linspace(0.0, in_w - 1, out_w)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    wy = (ys - y0)[:, None]
    wx = (xs - x0)[None, :]
    src = np.asarray(image, dtype=np.float64)
    top = src[y0][:, x0] * (1.0 - wx) + src[y0][:, x1] * wx
    bottom = src[y1][:, x0] * (1.0 - wx) + src[y1][:, x1] * wx
    return top * (1.0 - wy) + bottom * wy


def align_prediction(pred: np.ndarray, gt: np.ndarray, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    """The float64 (prediction, GT) pair that `score_frame` compares, before masking.

    With a KB-crop protocol the GT is cropped to 352x1216 (a no-op on already-cropped GT);
    a prediction at the uncropped GT size is cropped with it, any other size is resized to
    the cropped GT. The prediction is then clipped to the protocol range.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"pred and gt must be HxW, got {pred.shape} and {gt.shape}")
    if protocol.kb_crop:
        if pred.shape == gt.shape:
            pred = kb_crop(pred)
        gt = kb_crop(gt)
    if pred.shape != gt.shape:
        pred = resize_bilinear(pred, gt.shape)
    pred = np.clip(np.asarray(pred, dtype=np.float64), protocol.min_depth, protocol.max_depth)
    pred[np.isnan(pred)] = protocol.min_depth
    return pred, gt


def score_frame(pred: np.ndarray, gt: np.ndarray, protocol: Protocol) -> dict[str, float] | None:
    """Metrics of one HxW prediction against its HxW metric GT (NaN = no GT), aligned as
    `align_prediction` describes. Returns None when no GT pixel survives the mask: the official
    evaluation skips such images (`has_valid_depth`) rather than averaging a NaN into the result.
    """
    pred, gt = align_prediction(pred, gt, protocol)
    mask = eval_mask(gt, protocol)
    if not mask.any():
        return None
    return compute_errors(gt[mask], pred[mask])


class MetricsAccumulator:
    """Mean of per-image metrics over frames (each image weighs the same, whatever its number
    of valid pixels), with counts of scored and skipped (no valid GT) frames."""

    def __init__(self) -> None:
        self._sums = dict.fromkeys(METRIC_NAMES, 0.0)
        self.frames = 0
        self.skipped = 0

    def update(self, metrics: Mapping[str, float] | None) -> None:
        """Add one frame's `score_frame` result; None counts as a skipped frame."""
        if metrics is None:
            self.skipped += 1
            return
        if set(metrics) != set(METRIC_NAMES):
            raise ValueError(f"expected metrics {METRIC_NAMES}, got {sorted(metrics)}")
        for name in METRIC_NAMES:
            self._sums[name] += float(metrics[name])
        self.frames += 1

    def merge(self, other: MetricsAccumulator) -> MetricsAccumulator:
        """Fold another accumulator (another bag) into this one; returns self."""
        for name in METRIC_NAMES:
            self._sums[name] += other._sums[name]
        self.frames += other.frames
        self.skipped += other.skipped
        return self

    def mean(self) -> dict[str, float]:
        """Per-image mean of every metric; empty when no frame was scored."""
        if self.frames == 0:
            return {}
        return {name: self._sums[name] / self.frames for name in METRIC_NAMES}
