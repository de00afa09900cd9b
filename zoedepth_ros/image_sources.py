"""Frames for `predict`: one image file, a directory of images (sorted by name) or a video file,
each frame as (name, stamp in ns, RGB uint8 HxWx3). Stamps are what the temporal filter restarts
by: a directory's frames are `1 / rate` apart, a video's `1 / its frame rate` (`rate` where the
container gives none).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoedepth_ros.errors import ZoeDepthError

# What OpenCV's imread reads on every platform we ship to (OpenCV 4.6 and newer).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"})


@dataclass(frozen=True)
class SourceFrame:
    name: str  # the output's file stem
    stamp_ns: int
    rgb: np.ndarray


class ImageSource:
    """The frames of `path`: len() is the frame count (a video's as its container says), iteration
    reads them one at a time. `rate` (Hz) spaces a directory's stamps and a video's without them."""

    def __init__(self, path: Path, rate: float = 10.0) -> None:
        import cv2

        self.path = Path(path)
        self.rate = rate
        if not self.path.exists():
            raise ZoeDepthError(f"no such image, directory or video: {self.path}")
        self.images: list[Path] | None = None
        if self.path.is_dir():
            self.images = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.images:
                raise ZoeDepthError(f"{self.path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            self.kind, self._count = "directory", len(self.images)
        elif self.path.suffix.lower() in IMAGE_SUFFIXES:
            self.images = [self.path]
            self.kind, self._count = "image", 1
        else:
            capture = cv2.VideoCapture(str(self.path))
            try:
                if not capture.isOpened():
                    raise ZoeDepthError(f"cannot read {self.path}: not an image OpenCV knows by its suffix, and "
                                        "OpenCV cannot open it as a video")
                self._count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
                fps = capture.get(cv2.CAP_PROP_FPS)
            finally:
                capture.release()
            self.kind = "video"
            # A container without a usable frame rate: the stamps follow --rate.
            self.video_rate = fps if 0 < fps < 10_000 else rate

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[SourceFrame]:
        return self._images() if self.images is not None else self._video()

    def _images(self) -> Iterator[SourceFrame]:
        import cv2

        period_ns = round(1e9 / self.rate)
        for index, image in enumerate(self.images):
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ZoeDepthError(f"cannot read image {image}")
            yield SourceFrame(image.stem, index * period_ns, np.ascontiguousarray(bgr[..., ::-1]))

    def _video(self) -> Iterator[SourceFrame]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        period_ns = round(1e9 / self.video_rate)
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield SourceFrame(f"frame_{index:06d}", index * period_ns, np.ascontiguousarray(bgr[..., ::-1]))
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise ZoeDepthError(f"{self.path}: no frame could be decoded")
