"""The ROS-free inference layer: the depth estimator (pre/post-processing, TTA, batching) and the
engines that run the network under it (PyTorch, ONNX Runtime, OpenVINO, TensorRT).

Names are resolved lazily so that importing the package does not import torch.
"""

import importlib

_EXPORTS = {
    "DepthEstimator": ".estimator", "DepthPrediction": ".estimator", "EngineError": ".engines",
    "ENGINES": ".engine_names",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
