"""Procedural scenes: determinism, plausible ranges, exact geometry, and the `synth` command."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoedepth_ros.data.bag import read_frames, read_metadata
from zoedepth_ros.data.synth import default_intrinsics
from zoedepth_ros.data.synth_render import Box, CameraPose, Material, Plane, Scene, Sphere, render
from zoedepth_ros.data.synth_scenes import render_indoor, render_outdoor
from zoedepth_ros.eval.protocols import PROTOCOLS, Protocol

GREY = Material("solid", np.full(3, 0.5), np.zeros(3))
UP = np.array([0.0, 1.0, 0.0])


def small(kind):
    size = {"indoor": (60, 80), "outdoor": (44, 152)}[kind]
    return (*size, default_intrinsics(kind, *size))


@pytest.mark.parametrize("renderer,kind", [(render_indoor, "indoor"), (render_outdoor, "outdoor")])
def test_deterministic_per_seed(renderer, kind):
    first = renderer(np.random.default_rng(7), *small(kind))
    again = renderer(np.random.default_rng(7), *small(kind))
    other = renderer(np.random.default_rng(8), *small(kind))
    assert first[0].tobytes() == again[0].tobytes() and first[1].tobytes() == again[1].tobytes()
    assert first[0].tobytes() != other[0].tobytes()
    assert first[0].dtype == np.uint8 and first[0].shape == (*small(kind)[:2], 3)
    assert first[1].dtype == np.float32 and first[1].shape == small(kind)[:2]


def test_consecutive_frames_differ():
    rng = np.random.default_rng(0)
    a, b = render_indoor(rng, *small("indoor")), render_indoor(rng, *small("indoor"))
    assert not np.array_equal(a[1], b[1])


def test_depth_ranges():
    for seed in range(4):
        _, depth = render_indoor(np.random.default_rng(seed), *small("indoor"))
        assert np.isfinite(depth).all()
        assert depth.min() > 0 and depth.max() <= 10.0
        _, depth = render_outdoor(np.random.default_rng(seed), *small("outdoor"))
        valid = depth[np.isfinite(depth)]
        assert valid.min() > 0 and valid.max() <= 80.0
        assert valid.max() > 30.0  # the street recedes far
        assert np.isnan(depth[0]).any()  # sky (and beyond 80 m) has no ground truth
        assert np.isfinite(depth[-1]).all()  # the road in front of the car is all valid


def test_floor_depth_matches_ray_plane_closed_form():
    height_m, tilt = 1.4, math.radians(20.0)
    K = np.array([[200.0, 0.0, 79.5], [0.0, 210.0, 59.5], [0.0, 0.0, 1.0]])
    scene = Scene([Plane(np.zeros(3), UP, np.array([1.0, 0.0, 0.0]), GREY)], UP, max_depth=100.0)
    pose = CameraPose(np.array([0.3, height_m, -2.0]), yaw=0.4, pitch=-tilt)
    _, depth = render(scene, pose, K, 120, 160)
    for row in (0, 30, 59, 90, 119):
        y_n = (row - K[1, 2]) / K[1, 1]
        denominator = math.sin(tilt) + y_n * math.cos(tilt)
        for col in (0, 80, 159):
            if denominator > 0:
                expected = height_m / denominator
                assert depth[row, col] == pytest.approx(expected, rel=1e-5)
            else:  # above the horizon: the floor is never hit
                assert np.isnan(depth[row, col])


def test_depth_is_z_not_ray_length():
    K = default_intrinsics("indoor", 48, 64)
    wall = Plane(np.array([0.0, 0.0, 3.0]), np.array([0.0, 0.0, -1.0]), np.array([1.0, 0.0, 0.0]), GREY)
    _, depth = render(Scene([wall], UP, 10.0), CameraPose(np.zeros(3)), K, 48, 64)
    np.testing.assert_allclose(depth, 3.0, rtol=1e-6)


def test_box_and_sphere_hits():
    K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
    pose = CameraPose(np.zeros(3))
    sphere = Sphere(np.array([0.0, 0.0, 5.0]), 1.0, GREY)
    box = Box(np.array([0.0, 0.0, 2.5]), np.array([0.2, 0.2, 0.5]), math.radians(30.0), GREY)
    _, depth = render(Scene([sphere], UP, 10.0), pose, K, 48, 64)
    assert depth[24, 32] == pytest.approx(4.0, rel=1e-9)
    assert np.isnan(depth[0, 0])
    _, depth = render(Scene([sphere, box], UP, 10.0), pose, K, 48, 64)
    # Along the optical axis the box's local x and z change at sin and cos of the yaw; the ray
    # is inside the box once inside both slabs |x| <= 0.2 and |z| <= 0.5: the nearer bound.
    yaw = math.radians(30.0)
    entry = min(0.2 / math.sin(yaw), 0.5 / math.cos(yaw))
    assert depth[24, 32] == pytest.approx(2.5 - entry, rel=1e-6)


def test_synth_command_writes_a_readable_bag(tmp_path, capsys):
    from zoedepth_ros.cli import build_parser, main

    out = tmp_path / "street"
    argv = ["synth", str(out), "--kind", "outdoor", "--frames", "2", "--seed", "3", "--size", "44x152",
            "--storage", "mcap", "--image-format", "png"]  # fmt: skip
    assert main(argv) == 0
    reader = read_frames(out)
    frames = list(reader)
    assert len(frames) == 2 and not reader.unpaired
    assert frames[0].rgb.shape == (44, 152, 3)
    assert frames[1].stamp_ns - frames[0].stamp_ns == 100_000_000
    expected_rgb, expected_depth = render_outdoor(np.random.default_rng(3), *small("outdoor"))
    np.testing.assert_array_equal(frames[0].rgb, expected_rgb)
    np.testing.assert_array_equal(frames[0].depth, expected_depth)
    np.testing.assert_allclose(frames[0].K, default_intrinsics("outdoor", 44, 152))
    metadata = read_metadata(out)
    assert metadata["split"] == "synth" and metadata["seed"] == "3"
    assert Protocol.from_metadata(metadata) == PROTOCOLS["synth_outdoor"]

    assert main(argv) == 2  # refuses to overwrite, with a message instead of a traceback
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["synth", str(out), "--size", "640"])
