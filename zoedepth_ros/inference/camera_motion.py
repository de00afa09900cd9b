"""The camera's motion between two consecutive frames, from the images and the earlier frame's depth:
what the `motion-ema` temporal filter warps its average with, so that no pose (TF, odometry) is
needed at run time. ROS-free (numpy and OpenCV).

Dense optical flow (OpenCV's DIS, its `fast` preset: `ultrafast` halved the gain of the filter
on the indoor forward walk) from the new frame to the earlier one on quarter-size grey images
gives, for a grid of samples where the new image has texture, where each was in the earlier one;
the earlier frame's depth there back-projects it (K) to a 3D point of the earlier camera.
The rigid motion that projects those points onto the samples of the new frame is found by RANSAC
over minimal sets (AP3P: flow fails on untextured walls, at occlusions and on whatever moves
itself) and refined by Levenberg-Marquardt on the inliers. Its metric scale is the depth's: a
depth that is 10 % too far gives a translation 10 % too long, which is what warping that same
depth needs.

The grid and RANSAC's generator are fixed: the same frames give the same motion, so that the
node and `evaluate` filter alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The flow runs on images this many times smaller on each side (160x120 of a 640x480 frame), of
# MIN_FLOW_SIZE pixels on each side at least: OpenCV's DIS (4.6 to 5.0) needs 12, and crashes the
# process (segmentation fault) on images under 32 rows and over 40 columns.
FLOW_DOWNSCALE = 4
MIN_FLOW_SIZE = 32
# Flow samples every this many pixels of the quarter-size image, on each axis (1,200 of 640x480),
# of which those with texture (a 3x3 Sobel |dx| + |dy| of MIN_TEXTURE grey levels or more), at most
# MAX_SAMPLES (RANSAC's time grows with them).
SAMPLE_STRIDE = 4
MIN_TEXTURE = 8
MAX_SAMPLES = 300
# A median flow below STILL_FLOW_PX (full size), with three quarters of it below STILL_FLOW_P75_PX,
# is a still camera: the noise of the flow on a still view (median 0.5-1.2 px, 75th percentile up
# to 3.5 px on the indoor synthetic sequences) would otherwise warp the depth around. The second
# bound tells a fast swing past a blank wall (no flow found on most of it, 10 px on the rest) from
# a still camera.
STILL_FLOW_PX = 2.0
STILL_FLOW_P75_PX = 6.0
# RANSAC: a sample agrees with a motion when it reprojects within this many pixels (full size).
INLIER_PX = 2.0
RANSAC_ITERATIONS = 20
# Fewer inliers than this (count, and fraction of the usable samples): no motion is trusted.
MIN_INLIERS = 12
MIN_INLIER_FRACTION = 0.15


@dataclass(frozen=True)
class CameraMotion:
    """X_new = R @ X_old + t, for a point X in the earlier and the new camera's optical frame
    (metres in the depth's scale)."""

    R: np.ndarray
    t: np.ndarray
    inlier_fraction: float  # of the samples that RANSAC kept; 1 for a still camera
    still: bool = False  # the flow said the camera held still: no motion was estimated


STILL = CameraMotion(np.eye(3), np.zeros(3), 1.0, still=True)


def flow_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The uint8 grey image the flow runs on: `image` (HxWx3 RGB or HxW grey, uint8) at (height,
    width) `size`, area-averaged (after the conversion to grey: a third of the pixels to average)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return cv2.resize(np.ascontiguousarray(grey), (size[1], size[0]), interpolation=cv2.INTER_AREA)


class CameraMotionEstimator:
    """The motion from the frame given to the last `estimate` (or `start`) to the new one. One per
    camera: it keeps the earlier frame's flow image."""

    def __init__(self) -> None:
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self._previous: np.ndarray | None = None
        self._grid: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None  # flow size, rows, columns

    @staticmethod
    def flow_size(depth_shape: tuple[int, int]) -> tuple[int, int]:
        """(height, width) of the flow images of a depth of `depth_shape`: a quarter, at least
        MIN_FLOW_SIZE."""
        return (max(depth_shape[0] // FLOW_DOWNSCALE, MIN_FLOW_SIZE),
                max(depth_shape[1] // FLOW_DOWNSCALE, MIN_FLOW_SIZE))

    def start(self, image: np.ndarray, depth_shape: tuple[int, int]) -> None:
        """`image` begins a new sequence: the next motion is from it."""
        self._previous = flow_image(image, self.flow_size(depth_shape))

    def estimate(self, image: np.ndarray, previous_depth: np.ndarray, K: np.ndarray | None) -> CameraMotion | None:
        """The motion from the earlier frame (whose depth, HxW metres on the grid of K, is
        `previous_depth`) to `image`: STILL when the flow is below the STILL_ bounds, None when it
        cannot be trusted (too few agreeing samples: fast motion, a blank view, a scene change) or,
        without K (unknown intrinsics), whenever the camera moves. The new image becomes the
        earlier one."""
        height, width = previous_depth.shape
        grey = flow_image(image, self.flow_size((height, width)))
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return None
        flow = self._flow.calc(grey, previous, None)  # new -> earlier, in quarter-size pixels
        new_px, old_px = self._correspondences(grey, flow, (height, width))
        if len(new_px) < MIN_INLIERS:  # a blank view: no motion can be told
            return None
        shifts = np.sort(np.hypot(*(old_px - new_px).T))
        median, upper = shifts[len(shifts) // 2], shifts[(3 * len(shifts)) // 4]
        if median < STILL_FLOW_PX and upper < STILL_FLOW_P75_PX:
            return STILL
        if K is None:
            return None
        rows = np.clip(np.rint(old_px[:, 1]).astype(np.intp), 0, height - 1)
        cols = np.clip(np.rint(old_px[:, 0]).astype(np.intp), 0, width - 1)
        inside = ((old_px[:, 0] > -0.5) & (old_px[:, 0] < width - 0.5)
                  & (old_px[:, 1] > -0.5) & (old_px[:, 1] < height - 0.5))
        z = previous_depth[rows, cols].astype(np.float64)
        usable = inside & (z > 0) & (z < np.inf)  # False for NaN
        if np.count_nonzero(usable) < MIN_INLIERS:
            return None
        points = normalised(old_px[usable], K) * z[usable, None]
        observed = normalised(new_px[usable], K)[:, :2]
        # In normalised coordinates (identity camera matrix): the threshold scales by the focal length.
        threshold = INLIER_PX / float(K[0, 0])
        eye = np.eye(3)
        try:
            found, rvec, tvec, inliers = cv2.solvePnPRansac(
                points, observed, eye, None, iterationsCount=RANSAC_ITERATIONS, reprojectionError=threshold,
                confidence=0.99, flags=cv2.SOLVEPNP_AP3P)
            if not found or inliers is None or len(inliers) < MIN_INLIERS:
                return None
            inliers = inliers.ravel()
            rvec, tvec = cv2.solvePnPRefineLM(points[inliers], observed[inliers], eye, None, rvec, tvec)
        except cv2.error:  # degenerate point sets (all on one ray, ...)
            return None
        fraction = len(inliers) / len(points)
        if fraction < MIN_INLIER_FRACTION:
            return None
        return CameraMotion(cv2.Rodrigues(rvec)[0], tvec.ravel().copy(), fraction)

    def _correspondences(self, grey: np.ndarray, flow: np.ndarray,
                         shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Full-size pixel coordinates (x, y) of the grid samples of the new frame where its image
        has texture, and where the flow says they were in the earlier one. Elsewhere the flow is
        not measured but filled in from around (a blank wall seems to stand still), at most
        MAX_SAMPLES of them, spread evenly."""
        flow_h, flow_w = flow.shape[:2]
        if self._grid is None or self._grid[0] != (flow_h, flow_w):
            ys, xs = np.mgrid[SAMPLE_STRIDE // 2:flow_h:SAMPLE_STRIDE, SAMPLE_STRIDE // 2:flow_w:SAMPLE_STRIDE]
            self._grid = ((flow_h, flow_w), ys.ravel(), xs.ravel())
        ys, xs = self._grid[1], self._grid[2]
        gradient = cv2.Sobel(grey, cv2.CV_16S, 1, 0)[ys, xs].astype(np.int32)
        texture = np.abs(gradient) + np.abs(cv2.Sobel(grey, cv2.CV_16S, 0, 1)[ys, xs].astype(np.int32))
        textured = np.flatnonzero(texture >= MIN_TEXTURE)
        textured = textured[::max(1, -(-len(textured) // MAX_SAMPLES))]
        ys, xs = ys[textured], xs[textured]
        scale_y, scale_x = shape[0] / flow_h, shape[1] / flow_w
        new_px = np.stack([(xs + 0.5) * scale_x - 0.5, (ys + 0.5) * scale_y - 0.5], axis=1)
        step = flow[ys, xs].astype(np.float64)
        old_px = new_px + step * (scale_x, scale_y)
        return new_px, old_px


def normalised(pixels: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) rays K^-1 (x, y, 1) of (N, 2) pixel coordinates, K upper triangular (a camera
    matrix, skew allowed) with K[2, 2] = 1: solved directly, without forming the inverse."""
    rays = np.ones((len(pixels), 3))
    rays[:, 1] = (pixels[:, 1] - K[1, 2]) / K[1, 1]
    rays[:, 0] = (pixels[:, 0] - K[0, 2] - K[0, 1] * rays[:, 1]) / K[0, 0]
    return rays


def warp_coordinates(motion: CameraMotion, K: np.ndarray, inverse_depth: np.ndarray,
                     grid: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel of the new frame (inverse depth 1/z on the grid of K; `grid` its (x, y)
    coordinates, float32): where it was in the earlier frame (map_x, map_y, for cv2.remap) and the
    ratio w = z_earlier / z_new of its depths, so that log z_new = log z_earlier - log w.

    With X_old = R^T (X_new - t) and X_new = z K^-1 p: K X_old = z (H p + c / z), H = K R^T K^-1,
    c = -K R^T t; the third coordinate of H p + c / z is w."""
    R_T = motion.R.T
    H = (K @ R_T @ np.linalg.inv(K)).astype(np.float32)
    c = (-K @ R_T @ motion.t).astype(np.float32)
    xs, ys = grid
    homogeneous = [H[i, 0] * xs + H[i, 1] * ys + H[i, 2] + c[i] * inverse_depth for i in range(3)]
    w = homogeneous[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return homogeneous[0] / w, homogeneous[1] / w, w
