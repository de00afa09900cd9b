"""The synthetic scenes: furnished rooms (indoor, within 10 m) and streets (outdoor, within 80 m),
drawn at random from a numpy Generator (the same seed gives the same scene, so the same bytes)
and rendered by `zoedepth_ros.data.synth_render`, so that the images carry the usual depth cues
(perspective, texture gradients, shading, occlusion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from zoedepth_ros.data.synth_render import (
    Box,
    CameraPose,
    Material,
    Plane,
    Primitive,
    Scene,
    Sphere,
    StreetMaterial,
    render,
)

Kind = Literal["indoor", "outdoor"]

INDOOR_RANGE_M = 10.0
OUTDOOR_RANGE_M = 80.0


def _random_material(rng: np.random.Generator, kinds: Sequence[str], scale: tuple[float, float]) -> Material:
    kind = str(rng.choice(list(kinds)))
    color_a = rng.uniform(0.15, 0.9, 3)
    # The second colour is a related shade, so patterns read as texture and not as noise.
    color_b = np.clip(color_a * rng.uniform(0.45, 0.8) + rng.uniform(-0.08, 0.08, 3), 0.02, 1.0)
    noise = rng.uniform(0.0, 1.0, (32, 32)) if kind == "noise" else None
    return Material(kind, color_a, color_b, float(rng.uniform(*scale)), noise)  # type: ignore[arg-type]


def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _box_room(width: float, depth: float, height: float, floor: Material, walls: Material,
              ceiling: Material, back: float = 0.0) -> list[Plane]:
    """Inward-facing planes of the room x in [-w/2, w/2], y in [0, h], z in [back, d]; from
    inside, the nearest plane hit is the room surface the ray leaves through."""
    x, y, z = np.eye(3)
    return [
        Plane(np.zeros(3), y, x, floor),
        Plane(np.array([0.0, height, 0.0]), -y, x, ceiling),
        Plane(np.array([-width / 2, 0.0, 0.0]), x, z, walls),
        Plane(np.array([width / 2, 0.0, 0.0]), -x, z, walls),
        Plane(np.array([0.0, 0.0, back]), z, x, walls),
        Plane(np.array([0.0, 0.0, depth]), -z, x, walls),
    ]


def indoor_scene(rng: np.random.Generator, lead_in: float = 0.0) -> tuple[Scene, CameraPose]:
    """A furnished box room (diagonal under 10 m) and a camera standing near its back wall.
    `lead_in` > 0 moves the back wall that many metres further back (the same draws, so the same
    room otherwise): free floor behind the camera for a walk that ends at its pose."""
    width, depth, height = rng.uniform(3.0, 5.0), rng.uniform(4.0, 7.5), rng.uniform(2.4, 3.0)
    pose = CameraPose(
        position=np.array([rng.uniform(-0.3, 0.3) * width, rng.uniform(1.0, 1.6), rng.uniform(0.3, 1.2)]),
        yaw=math.radians(rng.uniform(-25.0, 25.0)),
        pitch=math.radians(rng.uniform(-15.0, 5.0)),
    )
    primitives: list[Primitive] = list(
        _box_room(
            width,
            depth,
            height,
            floor=_random_material(rng, ("checker", "stripes", "noise"), (0.25, 0.6)),
            walls=_random_material(rng, ("solid", "stripes", "noise"), (0.2, 0.8)),
            ceiling=Material("solid", np.full(3, rng.uniform(0.8, 0.95)), np.zeros(3)),
            back=-lead_in,
        )
    )
    near_z = pose.position[2] + 1.2  # keep furniture in front of, and clear of, the camera
    boxes = []
    for _ in range(rng.integers(2, 5)):
        half = np.array([rng.uniform(0.2, 0.75), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6)])
        reach = np.linalg.norm(half[[0, 2]])
        center = np.array(
            [
                rng.uniform(-width / 2 + reach, width / 2 - reach),
                half[1],
                rng.uniform(near_z + reach, max(near_z + reach, depth - reach)),
            ]
        )
        box = Box(center, half, rng.uniform(0.0, math.pi),
                  _random_material(rng, ("solid", "checker", "stripes", "noise"), (0.1, 0.4)))
        boxes.append(box)
        primitives.append(box)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(0.12, 0.45)
        if rng.uniform() < 0.5:
            support = boxes[rng.integers(len(boxes))]
            center = support.center + np.array([0.0, support.half[1] + radius, 0.0])
        else:
            center = np.array(
                [rng.uniform(-width / 2 + radius, width / 2 - radius), radius,
                 rng.uniform(near_z + radius, depth - radius)]
            )
        primitives.append(Sphere(center, radius, _random_material(rng, ("solid", "stripes", "checker"), (0.05, 0.2))))
    light = _unit([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(-0.6, 0.6)])
    return Scene(primitives, light, INDOOR_RANGE_M, ambient=0.35), pose


def _facades(rng: np.random.Generator, side: float, kerb: float, start: float, end: float,
             clip: bool = False) -> list[Primitive]:
    """Buildings on one side of the street from z = start until past `end` (up to `end` with
    `clip`), with alleys between some of them."""
    facades: list[Primitive] = []
    z = start
    while z < end:
        frontage = rng.uniform(6.0, 18.0)
        if clip:
            frontage = min(frontage, end - z)
        if rng.uniform() > 0.12:  # otherwise an alley
            half = np.array([rng.uniform(4.0, 8.0), rng.uniform(3.0, 15.0), frontage / 2])
            setback = rng.uniform(0.0, 2.0)
            # One storey (and one window bay) per texture cell.
            facade = Material("grid", rng.uniform(0.35, 0.85, 3), rng.uniform(0.05, 0.3, 3),
                              float(rng.uniform(2.5, 3.5)))
            center = np.array([side * (kerb + setback + half[0]), half[1], z + frontage / 2])
            facades.append(Box(center, half, 0.0, facade))
        z += frontage
    return facades


STREET_START = -15.0  # z of the first buildings, behind the camera


def outdoor_scene(rng: np.random.Generator, lead_in: float = 0.0) -> tuple[Scene, CameraPose]:
    """A street: road with markings, pavements, facades on both sides, cars and trees. `lead_in`
    > 0 continues the buildings that many metres further back (drawn after everything else, so
    the same street otherwise): free road behind the camera for a drive that ends at its pose."""
    road_half = rng.uniform(3.5, 6.0)
    kerb = road_half + rng.uniform(1.5, 3.0)
    asphalt = Material("noise", np.full(3, rng.uniform(0.22, 0.3)), np.full(3, rng.uniform(0.33, 0.42)), 0.5,
                       rng.uniform(0, 1, (32, 32)))
    pavement = Material("checker", np.full(3, rng.uniform(0.55, 0.65)), np.full(3, rng.uniform(0.45, 0.55)), 0.6)
    primitives: list[Primitive] = [Plane(np.zeros(3), np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]),
                                         StreetMaterial(road_half, asphalt, pavement))]
    for side in (-1.0, 1.0):
        primitives.extend(_facades(rng, side, kerb, STREET_START, 130.0))
        for _ in range(rng.integers(1, 4)):
            trunk_z = rng.uniform(5.0, 70.0)
            trunk_x = side * (road_half + 0.6)
            bark = Material("solid", np.array([0.35, 0.25, 0.15]), np.zeros(3))
            primitives.append(Box(np.array([trunk_x, 1.5, trunk_z]), np.array([0.15, 1.5, 0.15]), 0.0, bark))
            leaves = Material("noise", np.array([0.15, 0.45, 0.12]), np.array([0.08, 0.25, 0.06]), 0.4,
                              rng.uniform(0, 1, (32, 32)))
            primitives.append(Sphere(np.array([trunk_x, 3.0 + rng.uniform(0.5, 1.5), trunk_z]), rng.uniform(1.0, 2.0),
                                     leaves))
    for _ in range(rng.integers(2, 7)):
        half = np.array([rng.uniform(0.85, 1.0), rng.uniform(0.7, 0.85), rng.uniform(2.0, 2.4)])
        lane = rng.choice([-1.0, 1.0]) * road_half / 2
        center = np.array([lane + rng.uniform(-0.4, 0.4), half[1], rng.uniform(7.0, 70.0)])
        paint = Material("solid", rng.uniform(0.05, 0.95, 3), np.zeros(3))
        primitives.append(Box(center, half, math.radians(rng.uniform(-8.0, 8.0)), paint))
    pose = CameraPose(
        position=np.array([road_half / 2 + rng.uniform(-0.5, 0.5), 1.65 + rng.uniform(-0.05, 0.05), 0.0]),
        yaw=math.radians(rng.uniform(-5.0, 5.0)),
        pitch=math.radians(rng.uniform(-3.0, 1.0)),
    )
    light = _unit([rng.uniform(-1.0, 1.0), rng.uniform(0.6, 1.5), rng.uniform(-1.0, 1.0)])
    if lead_in > 0:
        for side in (-1.0, 1.0):
            primitives.extend(_facades(rng, side, kerb, STREET_START - lead_in, STREET_START, clip=True))
    return Scene(primitives, light, OUTDOOR_RANGE_M, ambient=0.4, fog_distance=250.0), pose


def render_indoor(rng: np.random.Generator, height: int, width: int, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A new room seen from a new pose: HxWx3 uint8 RGB, HxW float32 depth in (0, 10) m."""
    scene, pose = indoor_scene(rng)
    return render(scene, pose, K, height, width)


def render_outdoor(rng: np.random.Generator, height: int, width: int, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A new street from a new pose: RGB, and depth with NaN for sky and beyond 80 m."""
    scene, pose = outdoor_scene(rng)
    return render(scene, pose, K, height, width)


RENDERERS = {"indoor": render_indoor, "outdoor": render_outdoor}
SCENES = {"indoor": indoor_scene, "outdoor": outdoor_scene}
