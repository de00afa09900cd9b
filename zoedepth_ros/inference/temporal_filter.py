"""Temporal filters of a depth stream, one camera's: what the depth node, `evaluate
--temporal-filter` and `predict` apply to each prediction in stamp order, so that live and offline
results stay identical. ROS-free numpy, no pose needed.

    flt = make_temporal_filter("ema")
    for stamp_ns, depth, K in stream:          # HxW float32 metres, NaN invalid; K 3x3 or None
        filtered = flt.filter(depth, stamp_ns, K)

Methods (TEMPORAL_FILTERS):
- none: every frame as predicted.
- scale: stabilises the frame's global metric scale, the dominant temporal error of a per-frame
  metric model, without touching its structure: the median log depth of each frame is tracked by
  a level-and-trend (alpha-beta) filter over the stamps, so that a camera moving forward (a
  steady change of the median) is followed without lag, and the frame is multiplied by
  exp(level - median), the correction bounded. A jump of the median beyond SCALE_JUMP (a cut, a
  head switch) restarts it.
- ema: a per-pixel exponential average in log depth with a step threshold (librealsense's temporal
  filter, in log depth rather than disparity: the threshold is then relative): a pixel whose log
  depth changes by more than EMA_STEP takes the new value at once, so true changes pass; when
  most pixels step at once (a scene change) the whole frame restarts.
- scale+ema: scale, then ema.
- motion-ema: a per-pixel running average of log depth that follows the camera: its motion from
  frame to frame is estimated from the images and the depth (camera_motion.py: optical flow, PnP),
  and the average is carried along it; a still camera's output holds still. It needs the image
  and K of each frame (without K a moving camera passes unfiltered; without images the camera is
  taken as still). The node's default.

A filter restarts (its output is then its input, bitwise) at the first frame, when the stamps
start a new sequence (`zoedepth_ros.sequences.starts_new_sequence`: stamps not increasing, or a
gap over new_sequence_after_s), when the image size or a known K changes (K None: unknown, never a
change), and at `reset()` (what only the node sees: a new publisher). No state is shared between
instances: one per camera.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from zoedepth_ros.inference.camera_motion import CameraMotionEstimator, warp_coordinates
from zoedepth_ros.sequences import NEW_SEQUENCE_AFTER_S, starts_new_sequence

TEMPORAL_FILTERS = ("none", "scale", "ema", "scale+ema", "motion-ema")
# The node's `temporal_filter` and `predict --temporal-filter` default to this (`evaluate` to none:
# the paper's protocol scores each frame alone).
DEFAULT_TEMPORAL_FILTER = "motion-ema"

# --- scale: the alpha-beta filter on each frame's median log depth --------------------------------
# Weight of the measured median in the level (0..1): lower smooths more and follows a turn slower.
SCALE_GAIN = 0.3
# Weight of the innovation in the trend; a^2 / (2 - a) is the critically damped choice for SCALE_GAIN.
SCALE_TREND_GAIN = SCALE_GAIN ** 2 / (2.0 - SCALE_GAIN)
# A median this far (log) from the prediction is a new scene or a head switch, not noise: restart.
SCALE_JUMP = math.log(1.2)
# The correction never scales a frame by more than this (log): a wrong track costs at most 10 %.
SCALE_MAX_CORRECTION = math.log(1.1)
# The median is taken on every Nth row and column (19,200 samples of a 640x480 frame).
SCALE_SAMPLE_STRIDE = 4
# Fewer valid samples than this: no trustworthy median; the frame passes and the filter restarts.
SCALE_MIN_SAMPLES = 16

# --- ema: per-pixel exponential average in log depth -----------------------------------------------
# Weight of the new frame (0..1): lower smooths more and follows a small true change slower.
EMA_ALPHA = 0.4
# A pixel whose log depth changes more than this (10 %) takes the new value: a true change, not noise.
EMA_STEP = math.log(1.1)
# When fewer than this fraction of the valid pixels stay within EMA_STEP, the scene changed: restart.
EMA_CUT_KEEP_FRACTION = 0.5

# --- motion-ema: a running average of log depth carried by the camera's motion -----------------------
# The new frame's weight in a pixel's average is 1/frames (at most MOTION_MAX_FRAMES) while it differs
# from the average by no more than MOTION_NOISE (5 %), rising linearly to 1 at MOTION_STEP (a factor
# of 2), beyond which the pixel takes the new value: the model's error of a surface changes with the
# view by 10-50 % (outdoors), and averaging those views is what steadies a moving camera's depth,
# while a true change is followed within a few frames (`step_lag`).
MOTION_NOISE = math.log(1.05)
MOTION_STEP = math.log(2.0)
MOTION_MAX_FRAMES = 8
# While the camera moves, a carried average counts for e^(-|change of log depth| / this) of its
# frames: the model's error of a surface changes with its distance, and averaging it over distances
# biased the demo model outdoors (abs_rel +5 % on a forward drive with full weight).
MOTION_DEPTH_SPAN = 0.25
# While the camera holds still, an output pixel holds its value until its average moves by more
# than this (0.5 %): a still wall does not shimmer with the sensor's noise.
MOTION_HOLD = math.log(1.005)

def median_log_depth(depth: np.ndarray) -> float | None:
    """The median log depth of the valid pixels of a sample of `depth`, or None with too few."""
    sample = depth[::SCALE_SAMPLE_STRIDE, ::SCALE_SAMPLE_STRIDE]
    values = sample[(sample > 0) & (sample < np.inf)]  # False for NaN
    if values.size < SCALE_MIN_SAMPLES:
        return None
    return float(np.median(np.log(values, dtype=np.float64)))


class ScaleStabiliser:
    """The `scale` stage: level and trend (per second) of the frames' median log depth."""

    def __init__(self) -> None:
        self._level = self._trend = 0.0

    def start(self, depth: np.ndarray, image: np.ndarray | None = None, K: np.ndarray | None = None) -> np.ndarray:
        median = median_log_depth(depth)
        self._level, self._trend = (0.0 if median is None else median), 0.0
        return depth

    def step(self, depth: np.ndarray, dt_s: float, image: np.ndarray | None = None,
             K: np.ndarray | None = None) -> np.ndarray:
        median = median_log_depth(depth)
        if median is None:
            return self.start(depth)
        predicted = self._level + self._trend * dt_s
        innovation = median - predicted
        if abs(innovation) > SCALE_JUMP:
            return self.start(depth)
        self._level = predicted + SCALE_GAIN * innovation
        self._trend += SCALE_TREND_GAIN * innovation / dt_s
        correction = min(max(self._level - median, -SCALE_MAX_CORRECTION), SCALE_MAX_CORRECTION)
        return depth * np.float32(math.exp(correction))


class LogEma:
    """The `ema` stage: the per-pixel state is the averaged log depth (NaN or inf where the last
    input was invalid, so that the next valid value restarts the pixel). Its buffers are reused
    from frame to frame.

    With `follow_median` the state first moves by the change of the frame's median log depth: the
    average is then one of the structure around the median, and a camera moving forward (the whole
    scene nearer) costs no lag. Behind the scale stage, whose output median is the smoothed level,
    that keeps the level's smoothing and adds the per-pixel one."""

    def __init__(self, follow_median: bool = False) -> None:
        self._follow_median, self._median = follow_median, None
        self._state = self._log = self._diff = self._scratch = self._keep = self._finite = None

    def start(self, depth: np.ndarray, image: np.ndarray | None = None, K: np.ndarray | None = None) -> np.ndarray:
        if self._state is None or self._state.shape != depth.shape:
            self._state, self._log, self._diff, self._scratch = (np.empty(depth.shape, np.float32) for _ in range(4))
            self._keep, self._finite = np.empty(depth.shape, bool), np.empty(depth.shape, bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(depth, out=self._state)
        self._median = median_log_depth(depth) if self._follow_median else None
        return depth

    def step(self, depth: np.ndarray, dt_s: float, image: np.ndarray | None = None,
             K: np.ndarray | None = None) -> np.ndarray:
        x, diff, keep = self._log, self._diff, self._keep
        if self._follow_median:
            median = median_log_depth(depth)
            if median is None or self._median is None:
                return self.start(depth)
            self._state += np.float32(median - self._median)
            self._median = median
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(depth, out=x)  # NaN below 0, -inf at 0, inf at inf: never kept below
            np.subtract(x, self._state, out=diff)
            np.less_equal(np.abs(diff, out=self._scratch), np.float32(EMA_STEP), out=keep)  # False for NaN
        if np.count_nonzero(keep) < EMA_CUT_KEEP_FRACTION * np.count_nonzero(np.isfinite(x, out=self._finite)):
            return self.start(depth)
        # state <- state + alpha * diff where kept, the new log depth elsewhere
        np.multiply(diff, np.float32(EMA_ALPHA), out=diff)
        np.add(self._state, diff, out=diff)
        np.copyto(x, diff, where=keep)
        self._state, self._log = x, self._state
        out = depth.copy()
        np.exp(self._state, out=out, where=keep)
        return out


class MotionAverage:
    """The `motion-ema` stage: a per-pixel running average of log depth over the last frames, each
    frame's average carried to the next one through the camera's motion (camera_motion.py), on a
    quarter-size grid; the full-size depth is multiplied by the upsampled correction, so that its
    edges stay as predicted.

    A pixel near its carried average joins it with the weight of one of up to MOTION_MAX_FRAMES
    frames (a running mean: the first frames of a sequence weigh alike instead of the first one
    lingering), more the further it is (MOTION_NOISE, MOTION_STEP); beyond MOTION_STEP (something
    moved, an occlusion, a new view) it takes the new value; when most pixels are beyond, the scene
    changed and the stage restarts. While the camera moves, an average counts for fewer frames
    where the pixel's depth changed (MOTION_DEPTH_SPAN). While it holds still (camera_motion's
    STILL_ bounds) the average is not moved (the noise of a motion estimate would blur it) and the
    output holds (changes within MOTION_HOLD are not passed on). A motion that cannot be estimated
    restarts the stage (its output is then the prediction), and so does a moving camera whose
    intrinsics are unknown (K None: `predict` on files). Without images (recorded depth) the
    camera is taken as still."""

    def __init__(self) -> None:
        self._motion = CameraMotionEstimator()
        # quarter size x 3: the average log depth, the frames it counts for, the log depth last output
        self._state: np.ndarray | None = None
        self._previous: np.ndarray | None = None  # the last output, full size: where the motion is sampled
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _small_log(depth: np.ndarray) -> np.ndarray:
        height, width = CameraMotionEstimator.flow_size(depth.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            small = cv2.resize(depth, (width, height), interpolation=cv2.INTER_AREA)  # NaN spreads: invalid
            return np.log(small)

    def start(self, depth: np.ndarray, image: np.ndarray | None = None, K: np.ndarray | None = None) -> np.ndarray:
        log = self._small_log(depth)
        self._state = np.stack([log, np.ones_like(log), log], axis=-1)
        self._previous = depth
        if image is not None:
            self._motion.start(image, depth.shape)
        return depth

    def _carried(self, depth: np.ndarray, log: np.ndarray, image: np.ndarray | None,
                 K: np.ndarray | None) -> tuple[np.ndarray, bool] | None:
        """The state carried to the new frame by the camera's motion, and whether the camera held
        still; None when the motion cannot be estimated."""
        if image is None:
            return self._state, True
        motion = self._motion.estimate(image, self._previous, K)
        if motion is None:
            return None
        if motion.still:
            return self._state, True
        height, width = log.shape
        scale_y, scale_x = height / depth.shape[0], width / depth.shape[1]
        K_small = np.array([[K[0, 0] * scale_x, 0.0, (K[0, 2] + 0.5) * scale_x - 0.5],
                            [0.0, K[1, 1] * scale_y, (K[1, 2] + 0.5) * scale_y - 0.5], [0.0, 0.0, 1.0]])
        if self._grid is None or self._grid[0].shape != log.shape:
            self._grid = tuple(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)))
        map_x, map_y, ratio = warp_coordinates(motion, K_small, np.exp(-log), self._grid)
        carried = cv2.remap(self._state, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(np.nan, 0.0, np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = np.log(ratio)
        carried[..., 0] -= log_ratio  # log z_new = log z_old - log(ratio)
        carried[..., 1] = np.minimum(carried[..., 1], np.float32(MOTION_MAX_FRAMES - 1))
        carried[..., 1] *= np.exp(np.abs(log_ratio) * np.float32(-1.0 / MOTION_DEPTH_SPAN))
        return carried, False

    def step(self, depth: np.ndarray, dt_s: float, image: np.ndarray | None = None,
             K: np.ndarray | None = None) -> np.ndarray:
        log = self._small_log(depth)
        carried = None if self._state.shape[:2] != log.shape else self._carried(depth, log, image, K)
        if carried is None:
            return self.start(depth, image, K)
        state, still = carried
        prior, count, held = np.moveaxis(state, -1, 0)
        with np.errstate(invalid="ignore"):
            diff = log - prior
            distance = np.abs(diff)
            keep = distance <= np.float32(MOTION_STEP)  # False for NaN
        if np.count_nonzero(keep) < EMA_CUT_KEEP_FRACTION * np.count_nonzero(np.isfinite(log)):
            return self.start(depth, image, K)
        # NaN and infinite log depth (invalid or infinite depth) give NaN below, only where not kept.
        with np.errstate(invalid="ignore"):
            # 1/frames within the noise, rising to 1 at the step (MOTION_NOISE, MOTION_STEP)
            ramp = (distance - np.float32(MOTION_NOISE)) * np.float32(1.0 / (MOTION_STEP - MOTION_NOISE))
            weight = np.maximum(1.0 / np.minimum(count + 1, np.float32(MOTION_MAX_FRAMES)), ramp)
            weight = np.where(keep, weight, np.float32(1))
            count = 1.0 / weight
            average = np.where(keep, prior + diff * weight, log)
            output = (np.where(np.abs(average - held) <= np.float32(MOTION_HOLD), held, average) if still
                      else average)
            correction = np.exp(np.where(keep, output - log, np.float32(0))).astype(np.float32)
        self._state = np.stack([average, count, output], axis=-1).astype(np.float32)
        out = depth * cv2.resize(correction, depth.shape[::-1], interpolation=cv2.INTER_LINEAR)
        self._previous = out
        return out


_STAGES = {"none": (), "scale": (ScaleStabiliser,), "ema": (LogEma,),
           "scale+ema": (ScaleStabiliser, lambda: LogEma(follow_median=True)), "motion-ema": (MotionAverage,)}


class TemporalFilter:
    """One camera's filter: its restart rules around the stages of its method (`name`)."""

    def __init__(self, name: str, new_sequence_after_s: float = NEW_SEQUENCE_AFTER_S) -> None:
        if name not in _STAGES:
            raise ValueError(f"unknown temporal filter '{name}': choose from {', '.join(TEMPORAL_FILTERS)}")
        self.name = name
        self.new_sequence_after_s = new_sequence_after_s
        self._stages = [stage() for stage in _STAGES[name]]
        self.restarts = 0  # how often the filter restarted (the first frame included)
        self._last_stamp_ns: int | None = None
        self._shape: tuple[int, ...] | None = None
        self._K: np.ndarray | None = None

    def reset(self) -> None:
        """The next frame starts a new sequence (a new publisher, an activation)."""
        self._last_stamp_ns = None

    def filter(self, depth: np.ndarray, stamp_ns: int, K: np.ndarray | None = None,
               image: np.ndarray | None = None) -> np.ndarray:
        """The filtered `depth` (HxW metres, NaN or any non-positive value invalid and passed
        unchanged; float32, other types converted) of the frame stamped `stamp_ns` with the
        intrinsics `K` (3x3, None: unknown) and its camera image (`image`: HxWx3 RGB or HxW grey
        uint8, any size, None: unknown; motion-ema follows the camera's motion with K and the image).
        After a restart it is `depth` itself; otherwise a new
        array. Frames must come in stamp order: a stamp that does not increase restarts."""
        depth = np.asarray(depth)
        if depth.ndim != 2:
            raise ValueError(f"depth must be HxW, not of shape {depth.shape}")
        depth = depth.astype(np.float32, copy=False)
        K = None if K is None else np.asarray(K, dtype=np.float64)
        restart = (starts_new_sequence(self._last_stamp_ns, stamp_ns, self.new_sequence_after_s)
                   or depth.shape != self._shape
                   or (K is not None and self._K is not None and not np.array_equal(K, self._K)))
        dt_s = 0.0 if self._last_stamp_ns is None else (stamp_ns - self._last_stamp_ns) / 1e9
        self._last_stamp_ns, self._shape = stamp_ns, depth.shape
        if K is not None:
            self._K = K.copy()
        if restart:
            self.restarts += 1
            for stage in self._stages:
                stage.start(depth, image, K)
            return depth
        out = depth
        for stage in self._stages:
            out = stage.step(out, dt_s, image, K)
        return out


def make_temporal_filter(name: str = DEFAULT_TEMPORAL_FILTER,
                         new_sequence_after_s: float = NEW_SEQUENCE_AFTER_S) -> TemporalFilter:
    """A new filter of method `name` (one of TEMPORAL_FILTERS; ValueError otherwise)."""
    return TemporalFilter(name, new_sequence_after_s)


def step_lag(name: str, ratio: float, tolerance: float = 0.05, size: tuple[int, int] = (32, 32),
             period_s: float = 0.1, limit: int = 100) -> int:
    """Frames (the step's own included) whose output is off by more than `tolerance` (relative)
    after the whole scene's depth steps by `ratio`, the camera at 1/`period_s` Hz: the filter's lag
    for that step (0: followed at once). A global step is the worst case: for `scale` it looks like
    a scale error; for `ema` every pixel is the same."""
    flt = make_temporal_filter(name, new_sequence_after_s=math.inf)
    before, after = np.full(size, 2.0, np.float32), np.full(size, 2.0 * ratio, np.float32)
    stamp_ns = 0
    for _ in range(20):  # settled on the old depth
        stamp_ns += int(period_s * 1e9)
        flt.filter(before, stamp_ns)
    for frame in range(limit):
        stamp_ns += int(period_s * 1e9)
        out = flt.filter(after, stamp_ns)
        if np.all(np.abs(out / after - 1.0) <= tolerance):
            return frame
    return limit
