"""Sequences for `synth --motion`: one scene (`zoedepth_ros.data.synth_scenes`) rendered along a
camera trajectory, with the camera's pose per frame and the noise a real camera adds from frame
to frame, so that temporal consistency can be measured against exact ground truth.

Motions (10 Hz frames, speeds per kind):

- `static`: the camera stands at the scene's pose;
- `forward`: it walks (indoor, 1.4 m/s) or drives (outdoor, 10 m/s) straight along the room or
  street, ending at the scene's pose; the scene is lengthened behind that pose by the distance
  travelled (`lead_in`), so the camera never passes through furniture, cars or walls;
- `turn`: it turns in place to the right at 30 deg/s;
- `fast`: `forward` at 4x the speed while the view sways left and right (1 s period) with a peak
  yaw rate of 4x 30 deg/s;
- `cut`: a static camera in one scene for the first half of the frames, then in another scene,
  the two halves `cut_gap_s` (plus one frame period) apart in the stamps.

Poses are camera-to-world transforms of the optical frame in a REP 103 `world` (x forward along
the room or street, y left, z up, origin on the floor or road at the scene's origin); the scenes'
own coordinates are x right, y up, z forward (`zoedepth_ros.data.synth_render`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from zoedepth_ros.data.synth_render import CameraPose, render
from zoedepth_ros.data.synth_scenes import SCENES, Kind

Motion = Literal["static", "forward", "turn", "fast", "cut"]
MOTIONS: tuple[Motion, ...] = ("static", "forward", "turn", "fast", "cut")
SPEED_MPS = {"indoor": 1.4, "outdoor": 10.0}  # walking pace; urban driving
TURN_RATE_DPS = 30.0
FAST_FACTOR = 4.0
FAST_SWAY_PERIOD_S = 1.0
# Longer than the node's new_sequence_after_s (1 s), so the second half is a new sequence.
DEFAULT_CUT_GAP_S = 2.0

# Scene axes (x right, y up, z forward) to REP 103 world axes (x forward, y left, z up). Both the
# scene frame and this matrix are reflections, so the product with a scene rotation is a rotation.
SCENE_TO_WORLD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

# Seed stream of the camera noise, apart from the scene draws: the scene of a seed does not
# depend on whether noise was drawn before it.
_NOISE_STREAM = 1


def world_pose(pose: CameraPose) -> np.ndarray:
    """4x4 camera-to-world transform of the optical frame, in the REP 103 world."""
    transform = np.eye(4)
    transform[:3, :3] = SCENE_TO_WORLD @ pose.rotation()
    transform[:3, 3] = SCENE_TO_WORLD @ pose.position
    return transform


def _speed(motion: Motion, kind: Kind) -> float:
    return {"forward": 1.0, "fast": FAST_FACTOR}.get(motion, 0.0) * SPEED_MPS[kind]


def lead_in_m(motion: Motion, kind: Kind, count: int, period_s: float) -> float:
    """Metres the camera travels over `count` frames: how far the scene must reach behind its pose."""
    return _speed(motion, kind) * (count - 1) * period_s


def trajectory(base: CameraPose, motion: Motion, kind: Kind, count: int, period_s: float) -> list[CameraPose]:
    """The camera pose of each of `count` frames `period_s` apart (scene coordinates); a moving
    camera travels along the scene's z axis and ends at `base`."""
    if motion == "cut":
        raise ValueError("a cut is two static sequences: build each with motion 'static'")
    speed = _speed(motion, kind)
    start_z = base.position[2] - lead_in_m(motion, kind, count, period_s)
    turn_rate = math.radians(TURN_RATE_DPS)
    # Peak yaw rate of a sway A sin(2 pi t / P) is 2 pi A / P.
    sway = FAST_FACTOR * turn_rate * FAST_SWAY_PERIOD_S / (2 * math.pi)
    poses = []
    for index in range(count):
        t = index * period_s
        yaw = base.yaw
        if motion == "turn":
            yaw += turn_rate * t
        elif motion == "fast":
            yaw += sway * math.sin(2 * math.pi * t / FAST_SWAY_PERIOD_S)
        position = np.array([base.position[0], base.position[1], start_z + speed * t])
        poses.append(CameraPose(position, yaw, base.pitch))
    return poses


class CameraNoise:
    """What a real camera adds to each frame, on 8-bit values: a small exposure drift (log gain
    an AR(1) process, 2 % standard deviation, 0.8 correlation from frame to frame), shot noise
    (variance proportional to the signal: 15 electrons per level, 3 levels of noise at mid grey)
    and read noise (1 level), independent per pixel and channel, then rounding and clipping."""

    def __init__(self, rng: np.random.Generator, exposure_std: float = 0.02, exposure_corr: float = 0.8,
                 electrons_per_level: float = 15.0, read_noise: float = 1.0) -> None:
        self.rng = rng
        self.exposure_std = exposure_std
        self.exposure_corr = exposure_corr
        self.electrons_per_level = electrons_per_level
        self.read_noise = read_noise
        self._log_gain: float | None = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        innovation = self.rng.standard_normal() * self.exposure_std
        if self._log_gain is None:
            self._log_gain = innovation
        else:
            rho = self.exposure_corr
            self._log_gain = rho * self._log_gain + math.sqrt(1 - rho * rho) * innovation
        signal = rgb.astype(np.float64) * math.exp(self._log_gain)
        std = np.sqrt(signal / self.electrons_per_level + self.read_noise**2)
        noisy = signal + std * self.rng.standard_normal(rgb.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@dataclass
class SequenceFrame:
    offset_ns: int  # stamp after the first frame's
    rgb: np.ndarray
    depth: np.ndarray
    pose: np.ndarray  # 4x4 camera-to-world, REP 103 world


def cut_index(frames: int) -> int:
    """The first frame of a cut sequence's second scene."""
    return frames // 2


def render_sequence(kind: Kind, motion: Motion, frames: int, seed: int, height: int, width: int, K: np.ndarray,
                    period_ns: int, cut_gap_s: float = DEFAULT_CUT_GAP_S) -> Iterator[SequenceFrame]:
    """The frames of one motion sequence, rendered lazily; the same seed gives the same frames."""
    if kind not in SCENES:
        raise ValueError(f"kind must be 'indoor' or 'outdoor', not {kind!r}")
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {', '.join(MOTIONS)}, not {motion!r}")
    if motion == "cut" and frames < 2:
        raise ValueError("a cut needs at least 2 frames")
    if not (math.isfinite(cut_gap_s) and cut_gap_s >= 0):
        raise ValueError(f"cut_gap_s must be a finite number of seconds >= 0, got {cut_gap_s}")
    scene_rng = np.random.default_rng(seed)
    noise = CameraNoise(np.random.default_rng([seed, _NOISE_STREAM]))
    period_s = period_ns / 1e9
    if motion == "cut":
        split = cut_index(frames)
        gap_ns = round(cut_gap_s * 1e9)
        parts = [("static", split, 0), ("static", frames - split, split * period_ns + gap_ns)]
    else:
        parts = [(motion, frames, 0)]
    for part_motion, count, start_ns in parts:
        scene, base = SCENES[kind](scene_rng, lead_in_m(part_motion, kind, count, period_s))
        for index, pose in enumerate(trajectory(base, part_motion, kind, count, period_s)):
            rgb, depth = render(scene, pose, K, height, width)
            yield SequenceFrame(start_ns + index * period_ns, noise(rgb), depth, world_pose(pose))
