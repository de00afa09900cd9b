"""Procedural scenes with exact metric ground truth, for testing the pipeline without datasets.

Scenes are ray cast in numpy (planes, yaw-rotated boxes, spheres) through a pinhole camera,
with procedural textures and Lambertian shading from one light direction, so that the images
carry the usual depth cues (perspective, texture gradients, shading, occlusion). Everything is
drawn from a numpy Generator: the same seed gives the same bytes.

Conventions: world X right, Y up, Z forward; camera optical frame x right, y down, z forward
(REP 103); pixel centres at integer coordinates (OpenCV). Depth is the z coordinate of the hit
point in the optical frame, not the ray length. Pixels without geometry (sky) or farther than
the scene's range carry no ground truth (NaN), like a range-limited sensor.

Bags record the `synth_indoor` / `synth_outdoor` protocols: the NYU eigen crop and the KITTI
KB crop are tied to those datasets' image sizes, which synthetic frames need not have.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from zoedepth_ros.argtypes import hw_size, positive_int
from zoedepth_ros.data.bag import BagFrame, BagWriter, GtEncoding, ImageFormat, Storage
from zoedepth_ros.eval.protocols import get_protocol

Kind = Literal["indoor", "outdoor"]

EPS = 1e-6
# NYU Depth v2 RGB intrinsics at 480x640; KITTI P_rect_02 moved into the 352x1216 KB crop.
NYU_SIZE = (480, 640)
NYU_FOCAL = (518.8579, 519.4696)
NYU_CENTER = (325.5824, 253.7362)
KITTI_SIZE = (352, 1216)
KITTI_FOCAL = (721.5377, 721.5377)
KITTI_CENTER = (596.5593, 149.854)
DEFAULT_SIZE = {"indoor": NYU_SIZE, "outdoor": KITTI_SIZE}
INDOOR_RANGE_M = 10.0
OUTDOOR_RANGE_M = 80.0
FRAME_ID = "camera_optical_frame"
START_STAMP_NS = 1_700_000_000 * 10**9
FRAME_PERIOD_NS = 100_000_000  # 10 Hz, KITTI's rate


def default_intrinsics(kind: Kind, height: int, width: int) -> np.ndarray:
    """NYU-like (indoor) or KITTI-like (outdoor) K, scaled to height x width."""
    (base_h, base_w), (fx, fy), (cx, cy) = {
        "indoor": (NYU_SIZE, NYU_FOCAL, NYU_CENTER),
        "outdoor": (KITTI_SIZE, KITTI_FOCAL, KITTI_CENTER),
    }[kind]
    sx, sy = width / base_w, height / base_h
    return np.array([[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]])


# --- textures -------------------------------------------------------------------------------


@dataclass
class Material:
    """Albedo as a function of surface coordinates (metres): `kind` picks the pattern."""

    kind: Literal["solid", "checker", "stripes", "noise", "grid"]
    color_a: np.ndarray
    color_b: np.ndarray
    scale: float = 1.0
    noise: np.ndarray | None = None  # value-noise lattice for kind "noise"

    def albedo(self, uv: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(3, N) colours in [0, 1] for (2, N) surface coordinates of (3, N) world points."""
        u, v = uv[0] / self.scale, uv[1] / self.scale
        if self.kind == "solid":
            mix = np.zeros_like(u)
        elif self.kind == "checker":
            mix = (np.floor(u) + np.floor(v)) % 2
        elif self.kind == "stripes":
            mix = np.floor(u) % 2
        elif self.kind == "noise":
            mix = _value_noise(self.noise, u, v)
        else:  # grid: window panes inside a facade
            fu, fv = u - np.floor(u), v - np.floor(v)
            mix = ((fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.8)).astype(np.float64)
        return self.color_a[:, None] + mix * (self.color_b - self.color_a)[:, None]


@dataclass
class StreetMaterial:
    """Ground of the street: asphalt with lane markings, pavement beyond the kerbs."""

    road_half_width: float
    asphalt: Material
    pavement: Material
    marking: np.ndarray = field(default_factory=lambda: np.array([0.92, 0.92, 0.88]))

    def albedo(self, uv: np.ndarray, points: np.ndarray) -> np.ndarray:
        x, z = points[0], points[2]
        color = np.where(
            np.abs(x) < self.road_half_width,
            self.asphalt.albedo(uv, points),
            self.pavement.albedo(uv, points),
        )
        centre_dashes = (np.abs(x) < 0.08) & (np.mod(z, 9.0) < 3.0)
        edge_lines = np.abs(np.abs(x) - (self.road_half_width - 0.3)) < 0.08
        color[:, centre_dashes | edge_lines] = self.marking[:, None]
        return color


def _value_noise(lattice: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear value noise on a wrapping lattice, two octaves, in [0, 1]."""
    n = lattice.shape[0]
    out = np.zeros_like(u)
    for octave, weight in ((1.0, 0.65), (4.0, 0.35)):
        su, sv = u * octave, v * octave
        iu, iv = np.floor(su), np.floor(sv)
        fu, fv = su - iu, sv - iv
        i0, j0 = iu.astype(np.int64) % n, iv.astype(np.int64) % n
        i1, j1 = (i0 + 1) % n, (j0 + 1) % n
        top = lattice[j0, i0] * (1 - fu) + lattice[j0, i1] * fu
        bottom = lattice[j1, i0] * (1 - fu) + lattice[j1, i1] * fu
        out += weight * (top * (1 - fv) + bottom * fv)
    return out


def _random_material(rng: np.random.Generator, kinds: Sequence[str], scale: tuple[float, float]) -> Material:
    kind = str(rng.choice(list(kinds)))
    color_a = rng.uniform(0.15, 0.9, 3)
    # The second colour is a related shade, so patterns read as texture and not as noise.
    color_b = np.clip(color_a * rng.uniform(0.45, 0.8) + rng.uniform(-0.08, 0.08, 3), 0.02, 1.0)
    noise = rng.uniform(0.0, 1.0, (32, 32)) if kind == "noise" else None
    return Material(kind, color_a, color_b, float(rng.uniform(*scale)), noise)  # type: ignore[arg-type]


# --- geometry -------------------------------------------------------------------------------
# Rays, points and normals are component-major (3, N) arrays: numpy multiplies a (3, 3) by a
# (3, N) matrix an order of magnitude faster than an (N, 3) by a (3, 3) one.


def _corner_signs() -> np.ndarray:
    return np.array(np.meshgrid([-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0])).reshape(3, -1)


@dataclass
class Plane:
    point: np.ndarray
    normal: np.ndarray
    u_axis: np.ndarray
    material: Material | StreetMaterial

    def corners(self) -> None:
        return None  # unbounded: every ray is tested

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        denom = self.normal @ dirs
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((self.point - origin) @ self.normal) / denom
        return np.where((np.abs(denom) > EPS) & (t > EPS), t, np.inf)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rel = points - self.point[:, None]
        v_axis = np.cross(self.normal, self.u_axis)
        uv = np.stack([self.u_axis @ rel, v_axis @ rel])
        return np.broadcast_to(self.normal[:, None], points.shape), uv


def _yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation about world Y; columns are the local axes in world coordinates."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class Box:
    center: np.ndarray
    half: np.ndarray
    yaw: float
    material: Material

    def __post_init__(self) -> None:
        self.rotation = _yaw_matrix(self.yaw)

    def corners(self) -> np.ndarray:
        return self.center[:, None] + self.rotation @ (_corner_signs() * self.half[:, None])

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        local_origin = self.rotation.T @ (origin - self.center)
        local_dirs = self.rotation.T @ dirs if self.yaw else dirs
        t_near = np.full(dirs.shape[1], -np.inf)
        t_far = np.full(dirs.shape[1], np.inf)
        for axis in range(3):  # slab test
            d = local_dirs[axis]
            inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
            t1 = (-self.half[axis] - local_origin[axis]) * inv
            t2 = (self.half[axis] - local_origin[axis]) * inv
            np.maximum(t_near, np.minimum(t1, t2), out=t_near)
            np.minimum(t_far, np.maximum(t1, t2), out=t_far)
        return np.where((t_near <= t_far) & (t_near > EPS), t_near, np.inf)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        local = self.rotation.T @ (points - self.center[:, None])
        axis = np.argmax(np.abs(local) / self.half[:, None], axis=0)
        cols = np.arange(points.shape[1])
        local_normal = np.zeros_like(local)
        local_normal[axis, cols] = np.sign(local[axis, cols])
        # Texture axes: the two box axes in the face, y (up) second so stripes stand upright.
        shifted = local + self.half[:, None]
        u = np.where(axis == 0, shifted[2], shifted[0])
        v = np.where(axis == 1, shifted[2], shifted[1])
        return self.rotation @ local_normal, np.stack([u, v])


@dataclass
class Sphere:
    center: np.ndarray
    radius: float
    material: Material

    def corners(self) -> np.ndarray:
        return self.center[:, None] + _corner_signs() * self.radius

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        oc = origin - self.center
        a = np.einsum("ij,ij->j", dirs, dirs)
        b = oc @ dirs
        c = oc @ oc - self.radius**2
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        return np.where((disc > 0) & (t > EPS), t, np.inf)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        normal = (points - self.center[:, None]) / self.radius
        lon = np.arctan2(normal[0], normal[2])
        lat = np.arcsin(np.clip(normal[1], -1.0, 1.0))
        return normal, np.stack([lon * self.radius, lat * self.radius])


Primitive = Plane | Box | Sphere


@dataclass
class Scene:
    primitives: list[Primitive]
    light_dir: np.ndarray  # unit vector towards the light
    max_depth: float
    ambient: float = 0.3
    sky_top: np.ndarray = field(default_factory=lambda: np.array([0.35, 0.55, 0.9]))
    sky_horizon: np.ndarray = field(default_factory=lambda: np.array([0.8, 0.87, 0.95]))
    fog_distance: float | None = None  # metres; haze that fades distant surfaces to the horizon


@dataclass(frozen=True)
class CameraPose:
    """Camera position (world, metres); yaw turns the view from +Z towards +X, pitch > 0 looks up."""

    position: np.ndarray
    yaw: float = 0.0
    pitch: float = 0.0

    def rotation(self) -> np.ndarray:
        """Optical-to-world rotation: columns are the optical x, y, z axes in world coordinates."""
        cy, sy, cp, sp = math.cos(self.yaw), math.sin(self.yaw), math.cos(self.pitch), math.sin(self.pitch)
        forward = np.array([sy * cp, sp, cy * cp])
        right = np.array([cy, 0.0, -sy])
        down = np.cross(right, forward)
        return np.stack([right, down, forward], axis=1)


def _pixel_window(
    corners: np.ndarray | None, pose: CameraPose, K: np.ndarray, height: int, width: int
) -> tuple[slice, slice] | None:
    """Rows and columns that can see a primitive: the image box of its projected bounding
    corners (exact hull bound when all are in front of the camera); None when it is out of view."""
    full = (slice(0, height), slice(0, width))
    if corners is None:
        return full
    cam = pose.rotation().T @ (corners - pose.position[:, None])
    z = cam[2]
    if np.all(z <= EPS):
        return None
    if np.any(z <= EPS):
        return full
    u = K[0, 0] * cam[0] / z + K[0, 2]
    v = K[1, 1] * cam[1] / z + K[1, 2]
    c0, c1 = max(math.floor(u.min()), 0), min(math.ceil(u.max()) + 1, width)
    r0, r1 = max(math.floor(v.min()), 0), min(math.ceil(v.max()) + 1, height)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def render(scene: Scene, pose: CameraPose, K: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray cast the scene: HxWx3 uint8 RGB and HxW float32 z-depth (NaN = no GT)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # Optical-frame directions with z = 1: the ray parameter of a hit is its z-depth.
    optical = np.ones((3, height, width))
    optical[0] = ((np.arange(width, dtype=np.float64) - cx) / fx)[None, :]
    optical[1] = ((np.arange(height, dtype=np.float64) - cy) / fy)[:, None]
    dirs = (pose.rotation() @ optical.reshape(3, -1)).reshape(3, height, width)
    origin = np.asarray(pose.position, dtype=np.float64)

    t_best = np.full((height, width), np.inf)
    owner = np.full((height, width), -1)
    windows = []
    for index, primitive in enumerate(scene.primitives):
        window = _pixel_window(primitive.corners(), pose, K, height, width)
        windows.append(window)
        if window is None:
            continue
        block = dirs[(slice(None), *window)]
        t = primitive.intersect(origin, block.reshape(3, -1)).reshape(block.shape[1:])
        closer = t < t_best[window]
        t_best[window] = np.where(closer, t, t_best[window])
        owner[window] = np.where(closer, index, owner[window])

    ray_length = np.sqrt(np.einsum("ihw,ihw->hw", dirs, dirs))
    elevation = np.clip(dirs[1] / ray_length, 0.0, 1.0)
    color = scene.sky_horizon[:, None, None] + elevation * (scene.sky_top - scene.sky_horizon)[:, None, None]
    for index, (primitive, window) in enumerate(zip(scene.primitives, windows, strict=True)):
        if window is None:
            continue
        sel = owner[window] == index
        if not sel.any():
            continue
        ray = dirs[(slice(None), *window)][:, sel]
        t = t_best[window][sel]
        points = origin[:, None] + t * ray
        normal, uv = primitive.surface(points)
        facing = np.where(np.einsum("ij,ij->j", normal, ray) > 0, -normal, normal)
        lambert = np.clip(scene.light_dir @ facing, 0.0, 1.0)
        surface_color = primitive.material.albedo(uv, points) * (scene.ambient + (1.0 - scene.ambient) * lambert)
        if scene.fog_distance is not None:
            haze = 1.0 - np.exp(-t * ray_length[window][sel] / scene.fog_distance)
            surface_color = surface_color + haze * (scene.sky_horizon[:, None] - surface_color)
        color[(slice(None), *window)][:, sel] = surface_color

    rgb = np.clip(np.rint(color.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    depth = np.where(t_best <= scene.max_depth, t_best, np.nan).astype(np.float32)
    return rgb, depth


# --- scenes ---------------------------------------------------------------------------------


def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _box_room(width: float, depth: float, height: float, floor: Material, walls: Material,
              ceiling: Material) -> list[Plane]:
    """Inward-facing planes of the room x in [-w/2, w/2], y in [0, h], z in [0, d]; from inside,
    the nearest plane hit is the room surface the ray leaves through."""
    x, y, z = np.eye(3)
    return [
        Plane(np.zeros(3), y, x, floor),
        Plane(np.array([0.0, height, 0.0]), -y, x, ceiling),
        Plane(np.array([-width / 2, 0.0, 0.0]), x, z, walls),
        Plane(np.array([width / 2, 0.0, 0.0]), -x, z, walls),
        Plane(np.zeros(3), z, x, walls),
        Plane(np.array([0.0, 0.0, depth]), -z, x, walls),
    ]


def indoor_scene(rng: np.random.Generator) -> tuple[Scene, CameraPose]:
    """A furnished box room (diagonal under 10 m) and a camera standing near its back wall."""
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


def outdoor_scene(rng: np.random.Generator) -> tuple[Scene, CameraPose]:
    """A street: road with markings, pavements, facades on both sides, cars and trees."""
    road_half = rng.uniform(3.5, 6.0)
    kerb = road_half + rng.uniform(1.5, 3.0)
    asphalt = Material("noise", np.full(3, rng.uniform(0.22, 0.3)), np.full(3, rng.uniform(0.33, 0.42)), 0.5,
                       rng.uniform(0, 1, (32, 32)))
    pavement = Material("checker", np.full(3, rng.uniform(0.55, 0.65)), np.full(3, rng.uniform(0.45, 0.55)), 0.6)
    primitives: list[Primitive] = [Plane(np.zeros(3), np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]),
                                         StreetMaterial(road_half, asphalt, pavement))]
    for side in (-1.0, 1.0):
        z = -15.0
        while z < 130.0:
            frontage = rng.uniform(6.0, 18.0)
            if rng.uniform() > 0.12:  # otherwise an alley
                half = np.array([rng.uniform(4.0, 8.0), rng.uniform(3.0, 15.0), frontage / 2])
                setback = rng.uniform(0.0, 2.0)
                # One storey (and one window bay) per texture cell.
                facade = Material("grid", rng.uniform(0.35, 0.85, 3), rng.uniform(0.05, 0.3, 3),
                                  float(rng.uniform(2.5, 3.5)))
                center = np.array([side * (kerb + setback + half[0]), half[1], z + frontage / 2])
                primitives.append(Box(center, half, 0.0, facade))
            z += frontage
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


def write_synth_bag(
    path: str | Path,
    kind: Kind = "indoor",
    frames: int = 10,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    storage: Storage = "sqlite3",
    image_format: ImageFormat = "raw",
    gt_encoding: GtEncoding = "32FC1",
    overwrite: bool = False,
    progress: bool = True,
    start_ns: int = START_STAMP_NS,
) -> Path:
    """Write `frames` rendered frames (10 Hz stamps from `start_ns`) as an evaluation bag; returns its path."""
    from tqdm import tqdm

    if kind not in RENDERERS:
        raise ValueError(f"kind must be 'indoor' or 'outdoor', not {kind!r}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    height, width = size or DEFAULT_SIZE[kind]
    K = default_intrinsics(kind, height, width)
    rng = np.random.default_rng(seed)
    metadata = {
        **get_protocol(f"synth_{kind}").to_metadata(),
        "split": "synth",
        "generator": "zoedepth_ros.data.synth",
        "kind": kind,
        "seed": str(seed),
    }
    with BagWriter(
        path, storage=storage, image_format=image_format, gt_encoding=gt_encoding, metadata=metadata,
        overwrite=overwrite,
    ) as writer:
        for index in tqdm(range(frames), desc=f"synth {kind}", unit="frame", disable=not progress):
            rgb, depth = RENDERERS[kind](rng, height, width, K)
            writer.write(BagFrame(start_ns + index * FRAME_PERIOD_NS, FRAME_ID, rgb, depth, K, None))
    return Path(path)


# --- command line ---------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="write a bag of procedurally rendered frames with exact metric ground truth",
        description=(
            "Render indoor rooms (NYU-like camera, 0-10 m) or outdoor streets (KITTI-like camera, "
            "0-80 m, sky without GT) and write them as an evaluation bag (docs/bag-layout.md)."
        ),
    )
    p.add_argument("out", type=Path, help="bag directory to create")
    p.add_argument("--kind", choices=tuple(RENDERERS), default="indoor")
    p.add_argument("--frames", type=positive_int, default=10, help="number of frames, 10 Hz stamps (default 10)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same frames (default 0)")
    p.add_argument("--size", type=hw_size, metavar="HxW", help="image size (default 480x640 indoor, 352x1216 outdoor)")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--image-format", choices=("raw", "jpeg", "png"), default="raw")
    p.add_argument("--gt-encoding", choices=("32FC1", "16UC1"), default="32FC1")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    path = write_synth_bag(
        args.out,
        kind=args.kind,
        frames=args.frames,
        seed=args.seed,
        size=args.size,
        storage=args.storage,
        image_format=args.image_format,
        gt_encoding=args.gt_encoding,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.frames} {args.kind} frames to {path}")
    return 0
