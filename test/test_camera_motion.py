"""The camera's motion from two images and the earlier depth (zoedepth_ros.inference.camera_motion),
and the `motion-ema` temporal filter that warps its average with it, on a textured plane filmed by
a camera whose motion is known."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from zoedepth_ros.inference.camera_motion import STILL, CameraMotion, CameraMotionEstimator, warp_coordinates
from zoedepth_ros.inference.temporal_filter import make_temporal_filter

SIZE = (240, 320)  # height, width
K = np.array([[260.0, 0.0, 159.5], [0.0, 260.0, 119.5], [0.0, 0.0, 1.0]])
PLANE_Z = 4.0  # metres, the plane facing the first camera
PERIOD_NS = 100_000_000


def texture(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random RGB texture three times the image size, and the camera matrix of a camera at
    the first camera's place that sees all of it."""
    rng = np.random.default_rng(seed)
    height, width = 3 * SIZE[0], 3 * SIZE[1]
    noise = rng.uniform(0, 255, (height // 4, width // 4, 3)).astype(np.float32)
    image = cv2.GaussianBlur(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 2.0)
    K_big = K.copy()
    K_big[0, 2], K_big[1, 2] = (width - 1) / 2, (height - 1) / 2
    return np.clip(image, 0, 255).astype(np.uint8), K_big


def pose(frame: int, speed_m: float, yaw_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """X_k = R X_0 + t: the camera of frame k moved `speed_m` forward and turned `yaw_deg` per frame."""
    R = cv2.Rodrigues(np.array([0.0, math.radians(yaw_deg * frame), 0.0]))[0]
    return R, -R @ np.array([0.0, 0.0, speed_m * frame])


def render(frame: int, speed_m: float = 0.0, yaw_deg: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The image (uint8 RGB) and true depth (float32 metres) of frame k of the plane z = PLANE_Z."""
    image, K_big = texture(seed)
    R, t = pose(frame, speed_m, yaw_deg)
    normal = np.array([0.0, 0.0, 1.0])
    H = K @ (R + np.outer(t, normal) / PLANE_Z) @ np.linalg.inv(K_big)  # texture pixel -> frame pixel
    rgb = cv2.warpPerspective(image, H, (SIZE[1], SIZE[0]), flags=cv2.INTER_LINEAR)
    normal_k, offset_k = R @ normal, PLANE_Z + (R @ normal) @ t
    ys, xs = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64) @ np.linalg.inv(K).T
    return rgb, (offset_k / (rays @ normal_k)).astype(np.float32)


@pytest.mark.parametrize("speed_m, yaw_deg", [(0.15, 0.0), (0.0, 2.0), (0.1, 1.0)])
def test_a_known_motion_is_recovered(speed_m, yaw_deg):
    """What the filter uses of the motion, the warp of the new frame onto the earlier one, within
    0.5 px and 0.3 % of depth of the true one. (On a plane, a small turn and a sideways step warp
    alike: R and t alone are not pinned down, the warp is.)"""
    estimator = CameraMotionEstimator()
    rgb0, depth0 = render(0)
    rgb1, depth1 = render(1, speed_m, yaw_deg)
    estimator.start(rgb0, depth0.shape)
    motion = estimator.estimate(rgb1, depth0, K)
    assert motion is not None and not motion.still
    assert motion.inlier_fraction > 0.8
    grid = tuple(np.meshgrid(np.arange(SIZE[1], dtype=np.float32), np.arange(SIZE[0], dtype=np.float32)))
    estimated = warp_coordinates(motion, K, 1.0 / depth1, grid)
    true = warp_coordinates(CameraMotion(*pose(1, speed_m, yaw_deg), 1.0), K, 1.0 / depth1, grid)
    moved = np.hypot(true[0] - grid[0], true[1] - grid[1])
    assert np.median(moved) > 3.0  # a motion the filter has to follow
    assert np.max(np.hypot(estimated[0] - true[0], estimated[1] - true[1])) < 0.5
    np.testing.assert_allclose(estimated[2], true[2], rtol=3e-3)


def test_a_still_camera_is_still():
    """A still camera whose images differ by sensor noise only: STILL, not a motion made of the
    noise of the flow."""
    estimator = CameraMotionEstimator()
    rgb0, depth0 = render(0)
    rng = np.random.default_rng(1)
    estimator.start(rgb0, depth0.shape)
    grainy = np.clip(rgb0 + rng.normal(0, 3, rgb0.shape), 0, 255).astype(np.uint8)
    assert estimator.estimate(grainy, depth0, K) is STILL


def test_the_warp_is_the_projection_of_the_moved_points():
    """warp_coordinates against projecting each pixel's 3D point by hand."""
    rng = np.random.default_rng(2)
    motion = CameraMotion(cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))[0], np.array([0.05, -0.02, -0.1]), 1.0)
    depth = rng.uniform(1.0, 10.0, (6, 8)).astype(np.float32)
    grid = tuple(np.meshgrid(np.arange(8, dtype=np.float32), np.arange(6, dtype=np.float32)))
    map_x, map_y, ratio = warp_coordinates(motion, K, 1.0 / depth, grid)
    pixels = np.stack([grid[0], grid[1], np.ones_like(grid[0])], -1).astype(np.float64)
    new_points = (pixels @ np.linalg.inv(K).T) * depth[..., None]
    old_points = (new_points - motion.t) @ motion.R  # R^T (X - t), row vectors
    projected = old_points @ K.T
    np.testing.assert_allclose(map_x, projected[..., 0] / projected[..., 2], atol=2e-3)
    np.testing.assert_allclose(map_y, projected[..., 1] / projected[..., 2], atol=2e-3)
    np.testing.assert_allclose(ratio, old_points[..., 2] / depth, rtol=1e-5)


def noisy_sequence(frames: int, speed_m: float, yaw_deg: float, sigma: float = 0.04):
    """Frames of the plane with the truth times a noise as a network's is: smooth (the network's
    output is upsampled from a coarser grid), log-normal, new at every frame."""
    rng = np.random.default_rng(3)
    for k in range(frames):
        rgb, truth = render(k, speed_m, yaw_deg)
        coarse = rng.normal(0.0, sigma, (SIZE[0] // 16, SIZE[1] // 16)).astype(np.float32)
        noise = cv2.resize(coarse, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_CUBIC)
        yield rgb, truth, (truth * np.exp(noise)).astype(np.float32)


@pytest.mark.parametrize("speed_m, yaw_deg", [(0.12, 0.0), (0.0, 1.5)])
def test_motion_ema_follows_a_moving_camera_and_averages_its_noise(speed_m, yaw_deg):
    """The camera walks towards the plane (3 % nearer per frame) or turns: the filter's depth has no
    lag (its median error against the truth within 1 %) and less noise than the prediction; the
    same frames without the images (the camera taken as still) lag behind the forward walk."""
    with_motion, without = make_temporal_filter("motion-ema"), make_temporal_filter("motion-ema")
    errors, raw_errors, still_bias = [], [], []
    for k, (rgb, truth, predicted) in enumerate(noisy_sequence(10, speed_m, yaw_deg)):
        out = with_motion.filter(predicted, PERIOD_NS * (k + 1), K, rgb)
        still = without.filter(predicted, PERIOD_NS * (k + 1), K)
        if k >= 4:
            errors.append(np.log(out / truth))
            raw_errors.append(np.log(predicted / truth))
            still_bias.append(np.median(np.log(still / truth)))
    errors, raw_errors = np.stack(errors), np.stack(raw_errors)
    assert abs(np.median(errors)) < 0.01
    assert np.mean(np.abs(errors)) < 0.7 * np.mean(np.abs(raw_errors))
    if speed_m:
        assert np.mean(still_bias) > 0.02  # the still average trails the approaching plane


def test_motion_ema_holds_a_still_view_still():
    """A still camera (the images differ by sensor noise), its predictions with a smooth noise of 2 %
    per frame: after the first frames the filtered depth shimmers less than half as much as the
    prediction (the average holds), and it is nearer the truth."""
    rng = np.random.default_rng(5)
    rgb0, truth = render(0)
    flt = make_temporal_filter("motion-ema")
    outputs, predictions = [], []
    for k in range(16):
        rgb = np.clip(rgb0 + rng.normal(0, 2, rgb0.shape), 0, 255).astype(np.uint8)
        coarse = rng.normal(0.0, 0.02, (SIZE[0] // 16, SIZE[1] // 16)).astype(np.float32)
        predicted = (truth * np.exp(cv2.resize(coarse, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_CUBIC)))
        predictions.append(predicted.astype(np.float32))
        outputs.append(flt.filter(predictions[-1], PERIOD_NS * (k + 1), K, rgb))
    flicker = [float(np.median(np.log(np.stack(frames[4:])).std(axis=0))) for frames in (outputs, predictions)]
    assert flicker[0] < 0.5 * flicker[1], flicker
    error = [float(np.mean(np.abs(np.log(np.stack(frames[4:]) / truth)))) for frames in (outputs, predictions)]
    assert error[0] < error[1], error


def test_motion_ema_without_intrinsics_passes_a_moving_camera():
    """K unknown (`predict` on a video): a still camera is averaged, a moving one passes unfiltered
    (the motion cannot be followed without K), never smeared."""
    flt = make_temporal_filter("motion-ema")
    for k, (rgb, _, predicted) in enumerate(noisy_sequence(4, 0.15, 0.0)):
        out = flt.filter(predicted, PERIOD_NS * (k + 1), None, rgb)
        assert out.tobytes() == predicted.tobytes(), k


def test_motion_ema_restarts_at_another_scene_without_a_pause():
    """The camera cuts to another scene (another texture, three times as near) at the next stamp: the
    first frame of it is the prediction itself, and the next ones average only the new scene."""
    flt = make_temporal_filter("motion-ema")
    for k, (rgb, _, predicted) in enumerate(noisy_sequence(4, 0.1, 0.0)):
        flt.filter(predicted, PERIOD_NS * (k + 1), K, rgb)
    rng = np.random.default_rng(4)
    for k in range(3):
        rgb, truth = render(0, seed=7)
        predicted = (truth / np.float32(3) * np.exp(rng.normal(0.0, 0.01, truth.shape))).astype(np.float32)
        out = flt.filter(predicted, PERIOD_NS * (k + 5), K, rgb)
        if k == 0:
            assert out.tobytes() == predicted.tobytes()
        assert np.max(np.abs(np.log(out / predicted))) < 0.05


def test_motion_ema_is_deterministic():
    """The node and `evaluate` must filter alike: the same frames give the same bytes."""
    frames = list(noisy_sequence(5, 0.1, 1.0))
    outputs = []
    for _ in range(2):
        flt = make_temporal_filter("motion-ema")
        outputs.append([flt.filter(d, PERIOD_NS * (k + 1), K, rgb).tobytes() for k, (rgb, _, d) in enumerate(frames)])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (1, 500), (500, 1), (17, 23), (64, 48)])
def test_motion_ema_takes_any_frame_size_and_invalid_depth(shape):
    """What a node may be given: tiny and thin images, depth all invalid or partly, K far from the
    image, motion or none: no exception, the output keeps the input's shape and invalid pixels."""
    rng = np.random.default_rng(6)
    height, width = shape
    K_odd = np.array([[1e4, 0.0, -50.0], [0.0, 1e-3, 3e3], [0.0, 0.0, 1.0]])
    for K_frame in (K_odd, np.array([[width, 0.0, width / 2], [0.0, width, height / 2], [0.0, 0.0, 1.0]])):
        flt = make_temporal_filter("motion-ema")
        for k in range(5):
            rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            depth = rng.uniform(0.5, 5.0, shape).astype(np.float32)
            depth[rng.random(shape) < 0.3] = np.nan
            if k == 2:
                depth[:] = np.nan
            if k == 3:
                depth[0, 0] = np.inf
            out = flt.filter(depth, PERIOD_NS * (k + 1), K_frame, rgb)
            assert out.shape == shape and out.dtype == np.float32
            np.testing.assert_array_equal(np.isnan(out), np.isnan(depth))


def test_normalised_rays_invert_K_with_skew():
    from zoedepth_ros.inference.camera_motion import normalised

    K_skew = np.array([[500.0, 3.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]])
    pixels = np.random.default_rng(7).uniform(0, 640, (20, 2))
    expected = np.c_[pixels, np.ones(20)] @ np.linalg.inv(K_skew).T
    np.testing.assert_allclose(normalised(pixels, K_skew), expected, rtol=1e-12, atol=1e-12)
