"""The temporal filters (zoedepth_ros.inference.temporal_filter): restart rules, what they do to a
constant, a noisy static and a moving scene, their lag, scene changes, isolation and cost."""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest

from zoedepth_ros.inference.temporal_filter import (
    EMA_ALPHA,
    EMA_STEP,
    MOTION_STEP,
    SCALE_MAX_CORRECTION,
    TEMPORAL_FILTERS,
    make_temporal_filter,
    step_lag,
)

FILTERS = [name for name in TEMPORAL_FILTERS if name != "none"]
PERIOD_NS = 100_000_000  # 10 Hz
K = np.array([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])


def scene(seed: int, shape=(48, 64)) -> np.ndarray:
    """A depth map with structure: 1..20 m, a few invalid pixels."""
    rng = np.random.default_rng(seed)
    depth = np.exp(rng.uniform(0.0, 3.0, shape)).astype(np.float32)
    depth[0, :3] = np.nan
    return depth


def noisy(depth: np.ndarray, rng, global_sigma=0.03, pixel_sigma=0.03) -> np.ndarray:
    """What a per-frame model adds: a wandering global scale and per-pixel noise (log normal)."""
    noise = rng.normal(0.0, global_sigma) + rng.normal(0.0, pixel_sigma, depth.shape)
    return (depth * np.exp(noise)).astype(np.float32)


def run(flt, frames, start_ns=PERIOD_NS, K=K):
    return [flt.filter(depth, start_ns + i * PERIOD_NS, K) for i, depth in enumerate(frames)]


def flicker(frames) -> float:
    """Median over pixels of the temporal standard deviation of log depth."""
    logs = np.log(np.stack(frames))
    return float(np.nanmedian(logs.std(axis=0)))


def settled(name: str, depth: np.ndarray, frames: int = 6):
    """A filter that has seen `frames` noisy frames of `depth`; the stamp of its next frame."""
    rng = np.random.default_rng(1)
    flt = make_temporal_filter(name)
    run(flt, [noisy(depth, rng) for _ in range(frames)])
    return flt, PERIOD_NS * (frames + 1)


@pytest.mark.parametrize("name", FILTERS)
def test_every_restart_rule_gives_the_input_itself(name):
    depth = scene(0)
    cases = {
        "gap": lambda flt, stamp: flt.filter(depth, stamp + 2 * 10**9, K),  # more than new_sequence_after_s
        "stamp back": lambda flt, stamp: flt.filter(depth, stamp - 5 * PERIOD_NS, K),
        "repeated stamp": lambda flt, stamp: flt.filter(depth, stamp - PERIOD_NS, K),
        "K changes": lambda flt, stamp: flt.filter(depth, stamp, K * np.array([[1.01], [1.0], [1.0]])),
        "size changes": lambda flt, stamp: flt.filter(scene(0, (48, 60)), stamp, K),
        "reset": lambda flt, stamp: (flt.reset(), flt.filter(depth, stamp, K))[1],
    }
    for case, restart in cases.items():
        flt, stamp = settled(name, scene(0))
        before = flt.restarts
        out = restart(flt, stamp)
        assert flt.restarts == before + 1, case
        expected = scene(0, (48, 60)) if case == "size changes" else depth
        assert out.dtype == np.float32 and out.tobytes() == expected.tobytes(), case
    # and none of these is a restart: the next frame, a K that stays, K unknown
    flt, stamp = settled(name, scene(0))
    flt.filter(depth, stamp, K.copy())
    flt.filter(depth, stamp + PERIOD_NS, None)
    assert flt.restarts == 1
    assert make_temporal_filter(name).filter(depth, 123, None) is depth  # the very first frame


@pytest.mark.parametrize("name", TEMPORAL_FILTERS)
def test_a_constant_input_passes_unchanged(name):
    depth = scene(0)
    outputs = run(make_temporal_filter(name), [depth] * 10)
    for out in outputs:
        np.testing.assert_allclose(out, depth, rtol=2e-6)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(depth))  # invalid stays invalid


@pytest.mark.parametrize("name, factor", [("scale", 0.9), ("ema", 0.75), ("scale+ema", 0.6)])
def test_noise_on_a_static_scene_is_reduced(name, factor):
    """Flicker (global 3 % + per-pixel 3 % log-normal noise) against the unfiltered frames, after
    the first frames; `scale` removes only the global part."""
    rng = np.random.default_rng(2)
    frames = [noisy(scene(0), rng) for _ in range(30)]
    filtered = run(make_temporal_filter(name), frames)
    assert flicker(filtered[5:]) < factor * flicker(frames[5:])
    # and the filtered frames are nearer the truth than the noisy ones
    truth = scene(0)
    error = [np.nanmean(np.abs(np.log(f / truth))) for f in (filtered[5:], frames[5:])]
    assert error[0] < error[1]


def test_global_scale_noise_alone_is_halved_by_scale():
    rng = np.random.default_rng(3)
    frames = [noisy(scene(0), rng, pixel_sigma=0.0) for _ in range(40)]
    medians = [np.nanmedian(np.log(f)) for f in run(make_temporal_filter("scale"), frames)[5:]]
    assert np.std(medians) < 0.6 * np.std([np.nanmedian(np.log(f)) for f in frames[5:]])


@pytest.mark.parametrize("name", ["scale", "scale+ema"])
def test_a_camera_moving_forward_is_followed_without_lag(name):
    """The whole scene 4 % nearer each frame (walking speed at a few metres, 10 Hz), noisy: after
    a few frames the filter's global error is within 1 % and its per-pixel error below the
    unfiltered one."""
    rng = np.random.default_rng(4)
    truth = [scene(0) * np.float32(0.96 ** i) for i in range(30)]
    frames = [noisy(t, rng) for t in truth]
    filtered = run(make_temporal_filter(name), frames)
    bias = [np.nanmedian(np.log(f / t)) for f, t in zip(filtered[8:], truth[8:], strict=True)]
    assert abs(np.mean(bias)) < 0.01, bias
    error = [np.nanmean(np.abs(np.log(f / t))) for f, t in zip(filtered[8:], truth[8:], strict=True)]
    unfiltered = [np.nanmean(np.abs(np.log(f / t))) for f, t in zip(frames[8:], truth[8:], strict=True)]
    assert np.mean(error) < np.mean(unfiltered)


def expected_ema_lag(ratio: float, tolerance: float = 0.05) -> int:
    """Frames until a global step of `ratio` is followed within `tolerance` by the per-pixel EMA,
    in closed form: a step beyond EMA_STEP passes at once; a smaller one leaves (1 - alpha)^k of
    itself after its k-th frame."""
    step = math.log(ratio)
    if abs(step) > EMA_STEP:
        return 0
    bound = math.log(1 + tolerance) if step < 0 else -math.log(1 - tolerance)
    frames = 0
    while (1 - EMA_ALPHA) ** (frames + 1) * abs(step) > bound:
        frames += 1
    return frames


def test_the_lag_of_a_true_step():
    ratios = np.concatenate([np.geomspace(1.01, 1.5, 40), 1 / np.geomspace(1.01, 1.5, 40)])
    ratios = ratios[np.abs(np.abs(np.log(ratios)) - EMA_STEP) > 1e-4]  # not on the threshold itself
    for ratio in ratios:
        assert step_lag("ema", ratio) == expected_ema_lag(ratio), ratio
        assert step_lag("none", ratio) == 0
    # The lags docs/node.md states: the worst over step sizes, in frames after the step's own.
    worst = {name: max(step_lag(name, ratio) for ratio in ratios) for name in FILTERS}
    assert worst == {"scale": 2, "ema": 1, "scale+ema": 2, "motion-ema": 8}
    # motion-ema's widest step: up to its threshold (a factor of 2) the lag stays within the same
    wide = np.concatenate([np.geomspace(1.5, 1.99, 10), 1 / np.geomspace(1.5, 1.99, 10)])
    assert max(step_lag("motion-ema", ratio) for ratio in wide) <= 8
    # a step larger than the thresholds (a near object, a cut) is followed at once
    beyond = {name: math.exp(MOTION_STEP) * 1.01 if name == "motion-ema" else 1.5 for name in FILTERS}
    assert all(step_lag(name, beyond[name]) == step_lag(name, 1 / beyond[name]) == 0 for name in FILTERS)


@pytest.mark.parametrize("name", FILTERS)
def test_a_scene_change_without_a_pause_does_not_smear(name):
    """Another scene (the same depth range) at the next stamp: nothing of the old one shows. The
    per-pixel average restarts (most pixels stepped); the scale stage only scales the new frame,
    within its bound, from the first frame on; motion-ema corrects a pixel by at most its step: no
    pixel is off by more than that, where the old scene differs by a factor of 2 or more at most
    pixels."""
    rng = np.random.default_rng(5)
    flt, stamp = settled(name, scene(0))
    new = [noisy(scene(9), rng) for _ in range(4)]
    outputs = [flt.filter(depth, stamp + i * PERIOD_NS, K) for i, depth in enumerate(new)]
    assert np.nanmedian(np.abs(np.log(scene(0) / scene(9)))) > math.log(2)
    if name == "ema":
        assert outputs[0].tobytes() == new[0].tobytes()
    bound = MOTION_STEP if name == "motion-ema" else SCALE_MAX_CORRECTION + EMA_STEP
    for out, depth in zip(outputs, new, strict=True):
        assert np.nanmax(np.abs(np.log(out / depth))) <= bound
        if name == "scale":  # one factor for the whole frame: the structure is the new frame's
            ratio = out / depth
            np.testing.assert_allclose(ratio[np.isfinite(ratio)], np.nanmedian(ratio), rtol=1e-5)


@pytest.mark.parametrize("name", FILTERS)
def test_two_instances_share_no_state(name):
    rng = np.random.default_rng(6)
    frames_a = [noisy(scene(0), rng) for _ in range(8)]
    frames_b = [noisy(scene(1), rng) for _ in range(8)]
    alone = run(make_temporal_filter(name), frames_a)
    a, b = make_temporal_filter(name), make_temporal_filter(name)
    interleaved = []
    for i, (fa, fb) in enumerate(zip(frames_a, frames_b, strict=True)):
        interleaved.append(a.filter(fa, PERIOD_NS * (i + 1), K))
        b.filter(fb, PERIOD_NS * (i + 1) + 5, K * 2)
    for x, y in zip(alone, interleaved, strict=True):
        assert x.tobytes() == y.tobytes()


def test_bad_names_and_shapes_are_errors():
    with pytest.raises(ValueError, match="unknown temporal filter 'median': choose from none, scale"):
        make_temporal_filter("median")
    with pytest.raises(ValueError, match="depth must be HxW"):
        make_temporal_filter("ema").filter(np.zeros((4, 4, 1), np.float32), 1)


@functools.cache
def walking_stream() -> tuple[np.ndarray, list]:
    """What `benchmark --parts filter` times: a camera walking through the synthetic room at 640x480
    (K, then (image, noisy prediction) per frame)."""
    from zoedepth_ros.bench.filter import prediction_stream
    from zoedepth_ros.data.synth import default_intrinsics

    K_vga = default_intrinsics("indoor", 480, 640)
    return K_vga, prediction_stream((480, 640), 6, K_vga)


@pytest.mark.serial
@pytest.mark.parametrize("name", FILTERS)
def test_cost_of_a_640x480_frame(name):
    """The figure docs/benchmarks.md states comes from `benchmark --parts filter` (motion-ema
    estimates the camera's motion at every frame there); this bounds it loosely (shared test
    machines) at 3x the 3 ms asked for."""
    K_vga, stream = walking_stream()
    flt = make_temporal_filter(name)
    times = []
    for i, (rgb, depth) in enumerate(stream):
        started = time.perf_counter()
        flt.filter(depth, PERIOD_NS * (i + 1), K_vga, rgb)
        times.append(time.perf_counter() - started)
    assert flt.restarts == 1  # filtered every frame after the first
    assert np.median(times[1:]) < 9e-3, times


def test_the_lag_table_of_the_node_docs():
    """docs/node.md's lag table is what step_lag gives ("x2 or more": just past 2; "x0.5 or less":
    just under 0.5)."""
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[1] / "docs" / "node.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| true step of the depth |"))

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    nudge = {"or more": 1.02, "or less": 0.98}
    ratios = []
    for cell in cells(lines[header])[1:]:
        value, _, rest = cell[1:].partition(" ")
        ratios.append(float(value) * nudge.get(rest, 1.0))
    rows = {cells(line)[0].strip("`"): [int(c) for c in cells(line)[1:]] for line in lines[header + 2:header + 4]}
    assert set(rows) == {"motion-ema", "ema"}
    for name, lags in rows.items():
        assert [step_lag(name, ratio) for ratio in ratios] == lags, name
