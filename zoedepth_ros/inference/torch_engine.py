"""The PyTorch engine: our model in fp32 or with bf16/fp16 autocast, optionally under torch.compile."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.config import ZoeDepthConfig
from ..model.zoedepth import PRECISIONS, ZoeDepth, low_precision_copy
from .engines import EngineOutput, batch_bucket


def compile_model(model: ZoeDepth, device: torch.device, backend: str | Callable = "inductor"):
    """`model` under torch.compile with static shapes: inductor freezes the weights on CPU (folded
    constants, pre-packed GEMM/conv weights) and captures CUDA graphs on GPU."""
    if backend != "inductor":
        return torch.compile(model, backend=backend, dynamic=False)
    if device.type == "cuda":
        return torch.compile(model, mode="reduce-overhead", dynamic=False)
    return torch.compile(model, dynamic=False, options={"freezing": True})


class TorchEngine:
    """Our PyTorch model; `compile` pads batches to a power of two so that each bucket compiles once."""

    name = "torch"
    flip_in_graph = False

    def __init__(self, model: ZoeDepth, device: torch.device, precision: str = "fp32", compile: bool = False,
                 compile_backend: str | Callable = "inductor", precision_reason: str = "asked for"):
        self.dtype = PRECISIONS[precision]
        self.precision, self.precision_reason = precision, precision_reason
        if self.dtype is not None:
            model = low_precision_copy(model, self.dtype)
        self.model = model.to(device).eval()
        self.config: ZoeDepthConfig = model.config
        self.network_target = self.config.img_size  # the size the estimator resizes frames around
        self.device = device
        self.compiled = compile
        self._forward = compile_model(self.model, device, compile_backend) if compile else self.model

    def __call__(self, pixels: torch.Tensor, with_std: bool) -> EngineOutput:
        rows = pixels.shape[0]
        if self.compiled and batch_bucket(rows) != rows:
            pixels = torch.cat([pixels, pixels[-1:].expand(batch_bucket(rows) - rows, -1, -1, -1)])
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            out = self._forward(pixels, return_bins=with_std)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # post-processing waits for the result anyway
        return EngineOutput(out.metric_depth[:rows].float(),
                            out.domain_logits[:rows] if out.domain_logits is not None else None,
                            out.domain[:rows], out.depth_std()[:rows] if with_std else None)

    def release(self) -> None:
        self.model = self._forward = None
