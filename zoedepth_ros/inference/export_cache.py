"""Where engines keep the ONNX exports (and TensorRT plans) they make from checkpoints.

An entry is keyed by the weights' digest, the network size, the batch and the precision, so a
changed checkpoint never reuses a stale export. Entries are written atomically (a temporary file
renamed into place), so a crash or a second process never leaves half a file under the final
name; an entry that cannot be read anyway (a disk error, a hand edit) is deleted and rebuilt.

The directory is `$ZOEDEPTH_ROS_ENGINES`, else `$XDG_CACHE_HOME/zoedepth_ros/engines`
(`~/.cache/zoedepth_ros/engines`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..model.export import ExportError, ExportInfo, export_onnx, read_export_info
from ..model.zoedepth import ZoeDepth

log = logging.getLogger(__name__)


def engines_dir() -> Path:
    if os.environ.get("ZOEDEPTH_ROS_ENGINES"):
        return Path(os.environ["ZOEDEPTH_ROS_ENGINES"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoedepth_ros" / "engines"


class ExportCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else engines_dir()

    def entry(self, digest: str, size: tuple[int, int], batch: int, precision: str, suffix: str = ".onnx") -> Path:
        return self.root / f"{digest[:20]}-{size[0]}x{size[1]}-b{batch}-{precision}{suffix}"

    def onnx(self, model: Callable[[], ZoeDepth], digest: str, size: tuple[int, int], batch: int,
             precision: str) -> tuple[Path, ExportInfo]:
        """The cached export for these keys, made from `model()` when missing or unreadable."""
        path = self.entry(digest, size, batch, precision)
        if path.exists():
            try:
                info = read_export_info(path)
                if (info.weights_sha256, info.size, info.batch, info.precision) == (digest, size, batch, precision):
                    return path, info
                problem = "it holds another model or shape"
            except ExportError as exc:
                problem = str(exc)
            log.warning("export cache entry %s is unusable (%s): rebuilding it", path, problem)
            self.discard(path)
        log.warning("exporting the model to ONNX at %dx%d, batch %d, %s into %s (once; about a minute for "
                    "the full model)", size[0], size[1], batch, precision, path)
        info = export_onnx(model(), path, size=size, batch=batch, precision=precision, with_std=True,
                           weights_sha256=digest, source="export cache")
        return path, info

    @staticmethod
    def discard(path: Path) -> None:
        for stale in (path, Path(str(path) + ".data")):
            stale.unlink(missing_ok=True)
