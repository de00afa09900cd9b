"""Evaluation protocols: depth range, crops and GT scale of each benchmark.

The values are those of the official ZoeDepth evaluation (isl-org/ZoeDepth,
`zoedepth/utils/config.py` DATASETS_CONFIG: min_depth_eval, max_depth_eval, eigen_crop,
garg_crop, do_kb_crop) and the masking of `compute_metrics` in `zoedepth/utils/misc.py`.
Two details of the official masking are reproduced on purpose because published numbers
depend on them:

- `evaluate.py` calls `compute_metrics(depth, pred, config=config)` without `dataset=`, so the
  eigen crop is always the fixed NYU window rows 45:471, cols 41:601, whatever the GT size
  (SUN RGB-D, iBims, DIODE, Hypersim, DIML indoor). The window is clipped to the image.
- The Garg crop is a fraction of the GT size, taken after the KB crop when the protocol has one
  (KITTI: 143:349, 43:1172 on 352x1216).

Where the official code would fail (no crop at all: `eval_mask` is unbound in
`compute_metrics`), a protocol with `crop=None` here simply uses every pixel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

Crop = Literal["eigen", "garg"]

KB_CROP_HEIGHT = 352
KB_CROP_WIDTH = 1216
EIGEN_CROP_ROWS = (45, 471)
EIGEN_CROP_COLS = (41, 601)
GARG_CROP_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


@dataclass(frozen=True)
class Protocol:
    """How one benchmark is scored.

    A GT pixel is valid when `min_depth < gt < max_depth` (strict) and inside the crop;
    predictions are clipped to [min_depth, max_depth]. `gt_scale` is the divisor that turns
    the dataset's stored integer GT into metres (NYU 1000, KITTI 256); None where the data
    is float metres already or its converter is not part of this package.
    """

    name: str
    min_depth: float
    max_depth: float
    crop: Crop | None
    kb_crop: bool
    gt_scale: float | None = None

    def __post_init__(self) -> None:
        if self.crop not in ("eigen", "garg", None):
            raise ValueError(f"crop must be 'eigen', 'garg' or None, not {self.crop!r}")
        if not self.min_depth < self.max_depth:
            raise ValueError(f"min_depth {self.min_depth} must be below max_depth {self.max_depth}")

    def to_metadata(self) -> dict[str, str]:
        """The protocol as bag custom metadata (rosbag2 custom_data holds strings only)."""
        return {
            "protocol": self.name,
            "min_depth": repr(float(self.min_depth)),
            "max_depth": repr(float(self.max_depth)),
            "crop": self.crop or "none",
            "kb_crop": "true" if self.kb_crop else "false",
            "gt_scale": "none" if self.gt_scale is None else repr(float(self.gt_scale)),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Protocol:
        """Rebuild the protocol a bag recorded with `to_metadata` (the bag's values win over
        the registry, so a bag scored later is scored as it was converted)."""
        try:
            crop = metadata["crop"]
            gt_scale = metadata.get("gt_scale", "none")
            return cls(
                name=metadata["protocol"],
                min_depth=float(metadata["min_depth"]),
                max_depth=float(metadata["max_depth"]),
                crop=None if crop == "none" else crop,  # type: ignore[arg-type]
                kb_crop={"true": True, "false": False}[metadata["kb_crop"]],
                gt_scale=None if gt_scale == "none" else float(gt_scale),
            )
        except KeyError as exc:
            raise ValueError(f"protocol metadata lacks or mis-states {exc}: {dict(metadata)}") from None


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("nyu", 1e-3, 10.0, "eigen", False, 1000.0),
        Protocol("kitti", 1e-3, 80.0, "garg", True, 256.0),
        # Zero-shot sets, DATASETS_CONFIG values (the 0 lower bounds are official).
        Protocol("ibims", 0.0, 10.0, "eigen", False),
        Protocol("sunrgbd", 0.0, 8.0, "eigen", False),
        Protocol("diml_indoor", 0.0, 10.0, "eigen", False),
        Protocol("diml_outdoor", 2.0, 80.0, "garg", False),
        Protocol("diode_indoor", 1e-3, 10.0, "eigen", False),
        Protocol("diode_outdoor", 1e-3, 80.0, "garg", False),
        Protocol("hypersim_test", 1e-3, 80.0, "eigen", False),
        Protocol("vkitti", 1e-3, 80.0, "garg", True),
        Protocol("vkitti2", 1e-3, 80.0, "garg", True),
        Protocol("ddad", 1e-3, 80.0, "garg", True),
        # Procedural scenes (zoedepth_ros.data.synth): any image size, so no size-bound crop;
        # sky and geometry beyond range carry no GT instead.
        Protocol("synth_indoor", 1e-3, 10.0, None, False),
        Protocol("synth_outdoor", 1e-3, 80.0, None, False),
    )
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


def kb_crop_origin(height: int, width: int) -> tuple[int, int]:
    """(top, left) of the KB crop of a `height` x `width` image: bottom rows, centred columns."""
    if height < KB_CROP_HEIGHT or width < KB_CROP_WIDTH:
        raise ValueError(f"KB crop needs at least {KB_CROP_HEIGHT}x{KB_CROP_WIDTH}, got {height}x{width}")
    return height - KB_CROP_HEIGHT, (width - KB_CROP_WIDTH) // 2


def kb_crop(array: np.ndarray) -> np.ndarray:
    """KITTI benchmark crop of an HxW or HxWxC array to 352x1216: bottom rows, centred columns."""
    top, left = kb_crop_origin(*array.shape[:2])
    return array[top : top + KB_CROP_HEIGHT, left : left + KB_CROP_WIDTH]


def kb_crop_projection(P: np.ndarray, height: int, width: int) -> np.ndarray:
    """K (3x3) or P (3x4) of the KB crop of a `height` x `width` image: the crop (bottom rows,
    centred columns) shifts the principal point (and the baseline term of a stereo camera's P) by
    its origin."""
    top, left = kb_crop_origin(height, width)
    shift = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
    return shift @ np.asarray(P, dtype=np.float64)


def crop_mask(shape: tuple[int, int], crop: Crop | None) -> np.ndarray:
    """Boolean HxW mask of the evaluation crop for a GT of `shape`."""
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    if crop == "garg":
        top, bottom, left, right = GARG_CROP_FRACTIONS
        mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    elif crop == "eigen":
        mask[slice(*EIGEN_CROP_ROWS), slice(*EIGEN_CROP_COLS)] = True
    else:
        mask[:] = True
    return mask


def eval_mask(gt: np.ndarray, protocol: Protocol) -> np.ndarray:
    """Pixels of an HxW metric GT (already KB-cropped where the protocol says so) that count.

    NaN GT compares false and so is never valid.
    """
    if gt.ndim != 2:
        raise ValueError(f"GT must be HxW, got shape {gt.shape}")
    valid = (gt > protocol.min_depth) & (gt < protocol.max_depth)
    return valid & crop_mask(gt.shape, protocol.crop)
