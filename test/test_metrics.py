"""Metrics and protocols against an independent transcription of the official evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoedepth_ros.eval.metrics import (
    METRIC_NAMES,
    MetricsAccumulator,
    compute_errors,
    resize_bilinear,
    score_frame,
)
from zoedepth_ros.eval.protocols import PROTOCOLS, Protocol, eval_mask, get_protocol, kb_crop


def reference_scores(pred, gt, lo, hi, rows, cols):
    """The official compute_metrics step by step, with the crop window given as numbers."""
    p = np.array(pred, dtype=np.float64)
    p[p < lo] = lo
    p[p > hi] = hi
    p[np.isinf(p)] = hi
    p[np.isnan(p)] = lo
    window = np.zeros(gt.shape, dtype=bool)
    window[rows[0] : rows[1], cols[0] : cols[1]] = True
    valid = (gt > lo) & (gt < hi) & window
    g, q = gt[valid].astype(np.float64), p[valid]
    ratio = np.maximum(g / q, q / g)
    e = np.log(q) - np.log(g)
    return {
        "a1": np.mean(ratio < 1.25),
        "a2": np.mean(ratio < 1.5625),
        "a3": np.mean(ratio < 1.953125),
        "abs_rel": np.mean(np.abs(g - q) / g),
        "sq_rel": np.mean((g - q) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - q) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(q)) ** 2)),
        "silog": 100 * np.sqrt(np.mean(e**2) - np.mean(e) ** 2),
        "log_10": np.mean(np.abs(np.log10(g) - np.log10(q))),
    }


def noisy_prediction(gt, rng):
    """GT times a random factor, with zeros, negatives, +-inf and NaN sprinkled in."""
    pred = np.nan_to_num(gt, nan=5.0) * rng.uniform(0.6, 1.5, gt.shape)
    flat = pred.reshape(-1)
    for value in (0.0, -1.0, np.inf, -np.inf, np.nan, 200.0):
        flat[rng.choice(flat.size, flat.size // 50, replace=False)] = value
    return pred.astype(np.float32)


def assert_scores_close(actual, expected):
    assert set(actual) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert actual[name] == pytest.approx(float(expected[name]), rel=1e-6, abs=1e-9), name


def test_nyu_matches_reference():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.0, 12.0, (480, 640))  # some beyond 10 m
    gt[rng.random(gt.shape) < 0.1] = 0.0
    gt[rng.random(gt.shape) < 0.1] = np.nan
    pred = noisy_prediction(gt, rng)
    expected = reference_scores(pred, gt, 1e-3, 10.0, (45, 471), (41, 601))
    assert_scores_close(score_frame(pred, gt, PROTOCOLS["nyu"]), expected)


def test_kitti_kb_and_garg_crop_match_reference():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 90.0, (375, 1242))
    gt[rng.random(gt.shape) < 0.85] = 0.0  # LiDAR GT is sparse
    pred = noisy_prediction(gt, rng)
    # KB crop of 375x1242: top 23, left 13; Garg crop of 352x1216: rows 143:349, cols 43:1172.
    cropped_gt, cropped_pred = gt[23:375, 13:1229], pred[23:375, 13:1229]
    expected = reference_scores(cropped_pred, cropped_gt, 1e-3, 80.0, (143, 349), (43, 1172))
    kitti = PROTOCOLS["kitti"]
    assert_scores_close(score_frame(pred, gt, kitti), expected)
    # A prediction made on the KB-cropped image scores the same against full-size GT.
    assert_scores_close(score_frame(cropped_pred, gt, kitti), expected)


def test_kb_crop_geometry():
    image = np.arange(376 * 1241 * 3).reshape(376, 1241, 3)
    cropped = kb_crop(image)
    assert cropped.shape == (352, 1216, 3)
    assert (cropped[0, 0] == image[24, 12]).all()
    assert kb_crop(cropped).shape == (352, 1216, 3)  # idempotent on cropped data
    with pytest.raises(ValueError):
        kb_crop(np.zeros((300, 1216)))


def test_scaled_prediction_closed_form():
    rng = np.random.default_rng(2)
    gt = rng.uniform(0.5, 8.0, (480, 640))
    metrics = score_frame(1.1 * gt, gt, PROTOCOLS["nyu"])
    inside = gt[45:471, 41:601]
    assert metrics["a1"] == metrics["a2"] == metrics["a3"] == 1.0
    assert metrics["abs_rel"] == pytest.approx(0.1, rel=1e-9)
    assert metrics["sq_rel"] == pytest.approx(0.01 * inside.mean(), rel=1e-9)
    assert metrics["rmse"] == pytest.approx(0.1 * math.sqrt((inside**2).mean()), rel=1e-9)
    assert metrics["rmse_log"] == pytest.approx(math.log(1.1), rel=1e-9)
    assert metrics["silog"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["log_10"] == pytest.approx(math.log10(1.1), rel=1e-9)


def test_prediction_is_resized_like_torch_align_corners():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    small = rng.uniform(1.0, 9.0, (37, 53))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(small)[None, None], size=(96, 128), mode="bilinear", align_corners=True
    )[0, 0].numpy()
    np.testing.assert_allclose(resize_bilinear(small, (96, 128)), expected, rtol=1e-12)


def test_eigen_crop_is_the_fixed_nyu_window_at_any_size():
    gt = np.full((768, 1024), 5.0)
    mask = eval_mask(gt, PROTOCOLS["hypersim_test"])
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600] and not mask[471, 600] and not mask[45, 601]


def test_range_is_strict_and_nan_is_invalid():
    protocol = Protocol("t", 1.0, 5.0, None, False)
    gt = np.array([[1.0, 1.5, 5.0, np.nan, 4.99]])
    assert eval_mask(gt, protocol).tolist() == [[False, True, False, False, True]]


def test_no_valid_pixel_returns_none():
    gt = np.full((480, 640), np.nan)
    assert score_frame(np.ones((480, 640)), gt, PROTOCOLS["nyu"]) is None
    gt[0, 0] = 2.0  # outside the eigen crop
    assert score_frame(np.ones((480, 640)), gt, PROTOCOLS["nyu"]) is None


def test_compute_errors_rejects_bad_input():
    with pytest.raises(ValueError):
        compute_errors(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        compute_errors(np.ones(3), np.ones(4))


def test_per_image_mean_not_pooled():
    rng = np.random.default_rng(4)
    protocol = PROTOCOLS["synth_indoor"]
    gt_a = rng.uniform(1.0, 6.0, (40, 40))
    gt_b = rng.uniform(1.0, 6.0, (40, 40))  # 1.5 x 6 m stays below the 10 m clip
    gt_b[:, 4:] = np.nan  # image b has far fewer valid pixels
    pred_a, pred_b = gt_a * 1.05, gt_b * 1.5
    acc = MetricsAccumulator()
    per_image = [score_frame(pred_a, gt_a, protocol), score_frame(pred_b, gt_b, protocol)]
    for metrics in per_image:
        acc.update(metrics)
    mean = acc.mean()
    for name in METRIC_NAMES:
        assert mean[name] == pytest.approx((per_image[0][name] + per_image[1][name]) / 2, rel=1e-12)
    valid_b = ~np.isnan(gt_b)
    pooled = compute_errors(
        np.concatenate([gt_a.ravel(), gt_b[valid_b]]), np.concatenate([pred_a.ravel(), pred_b[valid_b]])
    )
    assert mean["abs_rel"] == pytest.approx((0.05 + 0.5) / 2)
    assert abs(mean["abs_rel"] - pooled["abs_rel"]) > 0.1


def test_accumulator_counts_and_merge():
    rng = np.random.default_rng(5)
    results = [{name: float(v) for name, v in zip(METRIC_NAMES, rng.random(9), strict=True)} for _ in range(5)]
    whole, first, second = MetricsAccumulator(), MetricsAccumulator(), MetricsAccumulator()
    for i, metrics in enumerate(results):
        whole.update(metrics)
        (first if i < 2 else second).update(metrics)
    first.update(None)
    merged = first.merge(second)
    assert (merged.frames, merged.skipped) == (5, 1)
    for name in METRIC_NAMES:
        assert merged.mean()[name] == pytest.approx(whole.mean()[name], rel=1e-12)
        assert whole.mean()[name] == pytest.approx(np.mean([r[name] for r in results]), rel=1e-12)
    assert MetricsAccumulator().mean() == {}
    with pytest.raises(ValueError):
        whole.update({"a1": 1.0})


# (min_depth_eval, max_depth_eval, crop, do_kb_crop) of DATASETS_CONFIG in the official config.py.
OFFICIAL = {
    "nyu": (1e-3, 10, "eigen", False),
    "kitti": (1e-3, 80, "garg", True),
    "ibims": (0, 10, "eigen", False),
    "sunrgbd": (0, 8, "eigen", False),
    "diml_indoor": (0, 10, "eigen", False),
    "diml_outdoor": (2, 80, "garg", False),
    "diode_indoor": (1e-3, 10, "eigen", False),
    "diode_outdoor": (1e-3, 80, "garg", False),
    "hypersim_test": (1e-3, 80, "eigen", False),
    "vkitti": (1e-3, 80, "garg", True),
    "vkitti2": (1e-3, 80, "garg", True),
    "ddad": (1e-3, 80, "garg", True),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_registry_matches_official_config(name):
    p = get_protocol(name)
    assert (p.min_depth, p.max_depth, p.crop, p.kb_crop) == OFFICIAL[name]


def test_protocol_metadata_round_trip_and_errors():
    for protocol in PROTOCOLS.values():
        metadata = protocol.to_metadata()
        assert all(isinstance(v, str) for v in metadata.values())
        assert Protocol.from_metadata(metadata) == protocol
    with pytest.raises(ValueError, match="lacks"):
        Protocol.from_metadata({"protocol": "x"})
    with pytest.raises(KeyError, match="known"):
        get_protocol("nope")
    with pytest.raises(ValueError):
        Protocol("bad", 1.0, 1.0, None, False)
