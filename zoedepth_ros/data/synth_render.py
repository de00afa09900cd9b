"""The ray caster of the synthetic scenes (`zoedepth_ros.data.synth_scenes`): planes, yaw-rotated
boxes and spheres with procedural textures (`Material`), shaded Lambertian from one light
direction, seen through a pinhole camera; `render` gives the image and its exact z-depth.

Conventions: world X right, Y up, Z forward; camera optical frame x right, y down, z forward
(REP 103); pixel centres at integer coordinates (OpenCV). Depth is the z coordinate of the hit
point in the optical frame, not the ray length. Pixels without geometry (sky) or farther than
the scene's range carry no ground truth (NaN), like a range-limited sensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

EPS = 1e-6


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
