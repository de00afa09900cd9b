"""The preset weights cache: where `load_model("ZoeD_M12_NK")` looks, and the official releases.

Cache: $ZOEDEPTH_ROS_WEIGHTS, else $XDG_CACHE_HOME/zoedepth_ros/weights, else
~/.cache/zoedepth_ros/weights. A preset NAME is found there as NAME.safetensors (project format,
e.g. written by `weights convert`), NAME.pt (official release) or NAME/ (Hugging Face directory).
Nothing here touches the network: `fetch.py` downloads, `zoedepth-ros weights` (weights_command.py)
is the command, `hf_hub.py` reads huggingface_hub's cache. Details: docs/weights.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZoeDepthError
from .config import PRESETS

_RELEASES = "https://github.com/isl-org/ZoeDepth/releases/download/v1.0"


@dataclass(frozen=True)
class Release:
    url: str
    filename: str
    # We publish no digest we have not verified ourselves: until one is recorded here, `fetch`
    # requires the user to pass the sha256 they trust (--sha256).
    sha256: str | None = None


RELEASES = {name: Release(f"{_RELEASES}/{name}.pt", f"{name}.pt") for name in PRESETS}
# The transformers ports of the same three models (hf_hub.py); any other OWNER/NAME works too.
HF_REPOS = ("Intel/zoedepth-nyu-kitti", "Intel/zoedepth-nyu", "Intel/zoedepth-kitti")


class WeightsError(ZoeDepthError):
    pass


def cache_dir() -> Path:
    if os.environ.get("ZOEDEPTH_ROS_WEIGHTS"):
        return Path(os.environ["ZOEDEPTH_ROS_WEIGHTS"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoedepth_ros" / "weights"


def resolve_preset(name: str) -> Path:
    root = cache_dir()
    for candidate in (root / f"{name}.safetensors", root / f"{name}.pt", root / name):
        if candidate.exists():
            return candidate
    raise WeightsError(
        f"preset {name} is not in the weights cache {root}. On a machine with internet run "
        f"`zoedepth-ros weights fetch {name} --sha256 <digest>` (or copy {name}.pt there), "
        f"or set ZOEDEPTH_ROS_WEIGHTS to the directory holding it.")
