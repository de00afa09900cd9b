"""Temporal consistency of depth sequences with ground-truth camera poses, pure numpy: the TAE of
Video Depth Anything's benchmark and the flicker of a camera that holds still (docs/evaluation.md).

TAE (temporal alignment error), on metric depth without scale alignment: for each consecutive
pair of frames, every valid pixel of frame k is back-projected with K, moved by the ground-truth
relative pose inv(T_{k+1}) T_k (camera-to-world poses of the optical frame), projected to the
nearest pixel of frame k+1 (the nearest point wins where several land on one pixel: a z-buffer),
and compared there as AbsRel = mean |d_{k+1} - d_warped| / d_{k+1} (`warp_abs_rel`); the same from
k+1 to k. TAE = 100 x the mean over both directions and all pairs.

Flicker: over a stretch of at least `MIN_STATIC_FRAMES` frames whose ground-truth poses do not
change (`is_static`), the temporal standard deviation of log depth of each pixel valid in every
frame of the stretch; the flicker is the median over the pixels of all stretches together (each
pixel of each stretch weighs the same, so a long-held view of many valid pixels weighs more).

A pair is counted only between frames that follow each other (consecutive frame indices, both
with depth and pose, the same image size and K) within one sequence by their stamps
(`zoedepth_ros.sequences.starts_new_sequence`); anything else breaks the chain, and a static
stretch with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoedepth_ros.sequences import starts_new_sequence

# Consecutive poses closer than this are one pose (the camera holds still): at a focal length
# under 1000 px either moves the image by less than a tenth of a pixel.
STATIC_TRANSLATION_M = 1e-4
STATIC_ROTATION_RAD = 1e-4
# A static stretch needs this many frames: two give a standard deviation from one difference.
MIN_STATIC_FRAMES = 3


def valid_depth(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Pixels whose depth is finite and strictly inside (min_depth, max_depth), the inequalities
    of the evaluation protocols (`zoedepth_ros.eval.protocols.eval_mask`)."""
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > min_depth) & (depth < max_depth)


def _check_inputs(depth: np.ndarray, K: np.ndarray, *poses: np.ndarray) -> None:
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got shape {depth.shape}")
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] == 0 or K[1, 1] == 0:
        raise ValueError(f"K must be a finite 3x3 camera matrix with non-zero focal lengths, got {K.tolist()}")
    for pose in poses:
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)) or not np.allclose(pose[3], (0, 0, 0, 1)):
            raise ValueError(f"a pose must be a finite 4x4 homogeneous transform, got {pose.tolist()}")


def warp_depth(depth: np.ndarray, K: np.ndarray, relative: np.ndarray, min_depth: float, max_depth: float,
               valid: np.ndarray | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Depth of `depth`'s valid pixels seen from another camera of the same K: each pixel (centres
    at integer coordinates, OpenCV convention) is back-projected, moved by `relative` (4x4, this
    camera to the other), and projected to the nearest pixel of an image of `shape` (default:
    `depth`'s). Returns that image's depth along its optical axis, the nearest point where several
    land on one pixel, +inf where none lands; points behind the camera or outside are dropped.
    `valid` (HxW bool) further restricts the source pixels."""
    depth = np.asarray(depth, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    relative = np.asarray(relative, dtype=np.float64)
    _check_inputs(depth, K, relative)
    height, width = shape or depth.shape
    mask = valid_depth(depth, min_depth, max_depth)
    if valid is not None:
        mask &= valid
    rows, cols = np.nonzero(mask)
    z = depth[rows, cols]
    # Pixel (u, v) at depth z is the point z K^-1 (u, v, 1); in the other camera K (R p + t) projects
    # it: one matrix K R K^-1 on (u z, v z, z) plus K t.
    matrix = K @ relative[:3, :3] @ np.linalg.inv(K)
    offset = K @ relative[:3, 3]
    uz, vz = cols * z, rows * z
    x, y, z_to = (matrix[i, 0] * uz + matrix[i, 1] * vz + matrix[i, 2] * z + offset[i] for i in range(3))
    ahead = z_to > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.floor(x / z_to + 0.5)
        v = np.floor(y / z_to + 0.5)
    inside = ahead & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    target = v[inside].astype(np.intp) * width + u[inside].astype(np.intp)
    zbuffer = np.full(height * width, np.inf)
    np.minimum.at(zbuffer, target, z_to[inside])  # the nearest point of each pixel wins
    return zbuffer.reshape(height, width)


def warp_abs_rel(depth_from: np.ndarray, depth_to: np.ndarray, K: np.ndarray, pose_from: np.ndarray,
                 pose_to: np.ndarray, min_depth: float, max_depth: float, *, valid_from: np.ndarray | None = None,
                 valid_to: np.ndarray | None = None) -> float | None:
    """AbsRel of `depth_from` warped into frame `to` (`warp_depth` with the relative pose
    inv(pose_to) @ pose_from, camera-to-world 4x4 poses) against `depth_to`, over the pixels where
    a point landed and `depth_to` is valid: mean |d_to - d_warped| / d_to. Valid = finite and
    strictly inside (min_depth, max_depth), and inside `valid_from` / `valid_to` where given
    (the evaluation passes the GT mask of each frame). None when no pixel qualifies."""
    depth_to = np.asarray(depth_to, dtype=np.float64)
    pose_from = np.asarray(pose_from, dtype=np.float64)
    pose_to = np.asarray(pose_to, dtype=np.float64)
    _check_inputs(depth_to, np.asarray(K, dtype=np.float64), pose_from, pose_to)
    # One pose twice is no motion at all; inv(T) @ T would be the identity only to rounding.
    relative = np.eye(4) if np.array_equal(pose_from, pose_to) else np.linalg.inv(pose_to) @ pose_from
    warped = warp_depth(depth_from, K, relative, min_depth, max_depth, valid_from, depth_to.shape)
    target = valid_depth(depth_to, min_depth, max_depth) & np.isfinite(warped)
    if valid_to is not None:
        target &= valid_to
    if not target.any():
        return None
    d_to = depth_to[target]
    return float(np.mean(np.abs(d_to - warped[target]) / d_to))


def is_static(pose_a: np.ndarray, pose_b: np.ndarray) -> bool:
    """True when two camera-to-world poses are one pose within STATIC_TRANSLATION_M and
    STATIC_ROTATION_RAD."""
    relative = np.linalg.inv(np.asarray(pose_a, dtype=np.float64)) @ np.asarray(pose_b, dtype=np.float64)
    # |R - I|_F = 2 sqrt(2) sin(angle / 2): sqrt(2) x the angle for small angles, exact near 0
    # where the arccos of the trace loses its digits.
    rotation = np.linalg.norm(relative[:3, :3] - np.eye(3)) / np.sqrt(2)
    return bool(np.linalg.norm(relative[:3, 3]) <= STATIC_TRANSLATION_M and rotation <= STATIC_ROTATION_RAD)


@dataclass(frozen=True)
class PairError:
    """One consecutive pair: AbsRel of frame `from` warped onto `to` (forward) and back (backward);
    None where no pixel qualified."""

    stamp_from: int
    stamp_to: int
    forward: float | None
    backward: float | None


@dataclass
class _Frame:
    index: int
    stamp_ns: int
    depth: np.ndarray
    valid: np.ndarray  # depth valid and inside the caller's mask
    K: np.ndarray
    pose: np.ndarray


class _Stretch:
    """Running per-pixel sums of log depth over a static stretch, relative to its first frame (so
    the sums stay small and the variance keeps its digits)."""

    def __init__(self, first: _Frame) -> None:
        self.reference = np.log(np.where(first.valid, first.depth, 1.0))
        self.valid = first.valid.copy()
        self.sum = np.zeros_like(self.reference)
        self.sum_sq = np.zeros_like(self.reference)
        self.frames = 1

    def add(self, frame: _Frame) -> None:
        self.valid &= frame.valid
        offset = np.log(np.where(frame.valid, frame.depth, 1.0)) - self.reference
        self.sum += offset
        self.sum_sq += offset**2
        self.frames += 1

    def stds(self) -> np.ndarray:
        """Temporal standard deviation (population) of log depth of each pixel valid throughout."""
        mean = self.sum[self.valid] / self.frames
        return np.sqrt(np.maximum(self.sum_sq[self.valid] / self.frames - mean**2, 0.0)).astype(np.float32)


class TemporalAccumulator:
    """TAE pairs and static stretches of one bag, fed frame by frame in frame order with each
    frame's index in the bag: a frame never added (no prediction, no pose) leaves a gap in the
    indices, which breaks the chain, as do frames out of order."""

    def __init__(self, min_depth: float, max_depth: float) -> None:
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.pairs: list[PairError] = []
        self.frames_with_pose = 0
        self._previous: _Frame | None = None
        self._stretch: _Stretch | None = None
        self._static_stds: list[np.ndarray] = []  # of each closed stretch
        self._static_frames = 0  # of the closed stretches

    def add(self, index: int, stamp_ns: int, depth: np.ndarray, K: np.ndarray, pose: np.ndarray,
            valid: np.ndarray | None = None) -> PairError | None:
        """Frame `index` (its position in the bag) with its HxW depth, the K of that image and its
        camera-to-world pose; `valid` (HxW bool) restricts the pixels that count. Returns the pair
        it closes with the previous frame, if any."""
        depth = np.asarray(depth, dtype=np.float64)
        K = np.asarray(K, dtype=np.float64)
        pose = np.asarray(pose, dtype=np.float64)
        _check_inputs(depth, K, pose)
        mask = valid_depth(depth, self.min_depth, self.max_depth)
        if valid is not None:
            if valid.shape != depth.shape:
                raise ValueError(f"mask {valid.shape} and depth {depth.shape} sizes differ")
            mask &= valid
        frame = _Frame(int(index), int(stamp_ns), depth, mask, K, pose)
        self.frames_with_pose += 1
        previous, self._previous = self._previous, frame
        if not self._follows(previous, frame):
            self._close_stretch()
            return None
        assert previous is not None
        pair = PairError(previous.stamp_ns, frame.stamp_ns,
                         self._abs_rel(previous, frame), self._abs_rel(frame, previous))
        if pair.forward is not None or pair.backward is not None:
            self.pairs.append(pair)
        if is_static(previous.pose, frame.pose):
            if self._stretch is None:
                self._stretch = _Stretch(previous)
            self._stretch.add(frame)
        else:
            self._close_stretch()
        return pair

    @staticmethod
    def _follows(previous: _Frame | None, frame: _Frame) -> bool:
        return (previous is not None and frame.index == previous.index + 1
                and not starts_new_sequence(previous.stamp_ns, frame.stamp_ns)
                and previous.depth.shape == frame.depth.shape and np.array_equal(previous.K, frame.K))

    def _abs_rel(self, source: _Frame, target: _Frame) -> float | None:
        return warp_abs_rel(source.depth, target.depth, source.K, source.pose, target.pose, self.min_depth,
                            self.max_depth, valid_from=source.valid, valid_to=target.valid)

    def _close_stretch(self) -> None:
        if self._stretch is not None and self._stretch.frames >= MIN_STATIC_FRAMES:
            self._static_stds.append(self._stretch.stds())
            self._static_frames += self._stretch.frames
        self._stretch = None

    def static_stds(self) -> list[np.ndarray]:
        """Per-pixel temporal std of log depth of every static stretch so far, the open one included."""
        stretch = self._stretch
        if stretch is not None and stretch.frames >= MIN_STATIC_FRAMES:
            return [*self._static_stds, stretch.stds()]
        return list(self._static_stds)

    def static_frames(self) -> int:
        stretch = self._stretch
        open_frames = stretch.frames if stretch is not None and stretch.frames >= MIN_STATIC_FRAMES else 0
        return self._static_frames + open_frames


def temporal_summary(accumulators: list[TemporalAccumulator]) -> dict[str, float | int | None] | None:
    """`{"tae", "pairs", "flicker", "static_frames"}` over the pairs and static stretches of
    `accumulators` (one bag, or all bags together: TAE the mean over every direction of every
    pair, flicker the median over every pixel of every stretch); None when no frame had a pose."""
    if not any(a.frames_with_pose for a in accumulators):
        return None
    pairs = [pair for a in accumulators for pair in a.pairs]
    errors = [e for pair in pairs for e in (pair.forward, pair.backward) if e is not None]
    stds = [s for a in accumulators for s in a.static_stds()]
    pixels = np.concatenate(stds) if stds else np.zeros(0, dtype=np.float32)
    return {
        "tae": 100.0 * float(np.mean(errors)) if errors else None,
        "pairs": len(pairs),
        "flicker": float(np.median(pixels)) if pixels.size else None,
        "static_frames": sum(a.static_frames() for a in accumulators),
    }
