"""Dataset files in, evaluation bags out: what the NYU and KITTI converters share.

Converters check that every input file exists (`require_files`) before a bag is started, then
stream frames into `write_bag`, whose `BagWriter` renames the bag into place only when the last
frame is written: a failure or Ctrl-C leaves no bag behind. Frames get 10 Hz stamps in split
order (frame i at START_STAMP_NS + i * 100 ms), so the i-th frame of a bag is the i-th entry of
its split; `evaluate` reports frames by that index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoedepth_ros.data.bag_layout import BagFrame
from zoedepth_ros.data.bag_writer import BagWriter
from zoedepth_ros.data.synth import FRAME_ID, FRAME_PERIOD_NS, START_STAMP_NS
from zoedepth_ros.errors import ZoeDepthError

# Keeps the error readable when a whole drive or scene is missing.
MAX_LISTED_MISSING = 5


class ConvertError(ZoeDepthError):
    """A dataset that cannot be converted: missing or unreadable files, bad split files."""


def require_files(paths: Iterable[Path], what: str) -> None:
    """ConvertError naming the first missing files (and how many in all) unless all exist."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        listed = ", ".join(str(p) for p in missing[:MAX_LISTED_MISSING])
        more = f" and {len(missing) - MAX_LISTED_MISSING} more" if len(missing) > MAX_LISTED_MISSING else ""
        raise ConvertError(f"{len(missing)} {what} missing: {listed}{more}")


def read_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB of an image file."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConvertError(f"cannot read image {path} (missing, truncated or not an image)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_depth_png(path: Path, scale: float) -> np.ndarray:
    """Metres (float32, NaN = no GT) of a uint16 depth PNG storing value = depth * scale, 0 invalid."""
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ConvertError(f"cannot read depth PNG {path} (missing, truncated or not an image)")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ConvertError(f"{path}: expected a single-channel 16-bit PNG, got {raw.dtype} {raw.shape}")
    return depth_from_uint16(raw, scale)


def depth_from_uint16(raw: np.ndarray, scale: float) -> np.ndarray:
    """Metres (float32, NaN where 0) of integer GT storing depth * scale."""
    # The official loaders divide in float32; doing the same keeps GT bit-identical to theirs.
    return np.where(raw > 0, raw.astype(np.float32) / np.float32(scale), np.float32(np.nan))


@dataclass(frozen=True)
class BagOptions:
    """How a converter writes its bag: the `convert` options every dataset shares."""

    storage: str = "sqlite3"
    image_format: str = "raw"
    gt_encoding: str = "32FC1"
    overwrite: bool = False
    limit: int | None = None  # the first frames only
    progress: bool = True

    def writer(self, out: Path, metadata: Mapping[str, str]) -> BagWriter:
        return BagWriter(out, storage=self.storage, image_format=self.image_format,  # type: ignore[arg-type]
                         gt_encoding=self.gt_encoding, metadata=metadata, overwrite=self.overwrite)


DEFAULT_BAG_OPTIONS = BagOptions()


def write_bag(
    out: Path,
    frames: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
    count: int,
    metadata: Mapping[str, str],
    *,
    desc: str,
    options: BagOptions = DEFAULT_BAG_OPTIONS,
) -> int:
    """Write (rgb, depth, K, P) tuples as frames 0, 1, ... of a bag; returns the frame count."""
    from tqdm import tqdm

    with options.writer(out, metadata) as writer:
        for index, (rgb, depth, K, P) in enumerate(tqdm(frames, total=count, desc=desc, unit="frame",
                                                        disable=not options.progress)):
            if depth.shape != rgb.shape[:2]:
                raise ConvertError(f"{desc} frame {index}: depth {depth.shape} and image {rgb.shape[:2]} sizes differ")
            writer.write(BagFrame(START_STAMP_NS + index * FRAME_PERIOD_NS, FRAME_ID, rgb, depth, K, P))
    return writer.frames_written
