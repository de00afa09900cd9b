"""ZoeDepth model package (no ROS imports): architecture, checkpoints, ONNX export.

Names are resolved lazily so that light modules (config, weights cache) import without torch.
"""

import importlib

_EXPORTS = {
    "BinHeadConfig": ".config", "PRESETS": ".config", "ZoeDepthConfig": ".config", "tiny_config": ".config",
    "ARCH_NAMES": ".config", "config_from_arch": ".config",
    "CheckpointError": ".checkpoint", "load_model": ".checkpoint", "save_checkpoint": ".checkpoint",
    "ZoeDepth": ".zoedepth", "ZoeDepthOutput": ".zoedepth",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
