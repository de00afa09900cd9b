"""ZoeDepth: BEiT encoder + DPT decoder + metric-bins head(s), on normalised pixels."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .beit import Attention, BeitEncoder
from .config import ZoeDepthConfig
from .dpt import DPTDecoder, Reassemble
from .metric_bins import MetricHead, depth_std

# Reduced dtype of each precision name (None: float32, nothing reduced).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ZoeDepthOutput:
    metric_depth: torch.Tensor  # (B, 1, H, W) metres at the network input resolution
    relative_depth: torch.Tensor  # (B, 1, H/2, W/2) MiDaS relative (inverse) depth
    domain_logits: torch.Tensor | None  # (B, n_heads) router logits; None for single-head models
    domain: torch.Tensor  # (B,) index into config.heads of the head that produced each sample
    probs: torch.Tensor | None = None  # (B, n_bins, H, W) per-pixel bin probabilities (return_bins)
    bin_centers: torch.Tensor | None = None  # (B, n_bins, H, W) bin centres in metres (return_bins)

    def depth_std(self) -> torch.Tensor:
        """Standard deviation of each pixel's depth distribution, (B, 1, H, W); needs return_bins."""
        if self.probs is None:
            raise ValueError("call the model with return_bins=True to get the depth distribution")
        return depth_std(self.probs, self.bin_centers, self.metric_depth)


class ZoeDepth(nn.Module):
    """Input: (B, 3, H, W) RGB normalised with mean 0.5, std 0.5, H and W multiples of 32."""

    def __init__(self, config: ZoeDepthConfig):
        super().__init__()
        self.config = config
        self.encoder = BeitEncoder(config)
        self.reassemble = Reassemble(config)
        self.decoder = DPTDecoder(config)
        self.metric_head = MetricHead(config)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter, in exactly one of the parts the official recipe trains at its own rate:

        - `metric_head`: the metric bins head(s) and the router;
        - `decoder`: the DPT decoder;
        - `encoder`: BEiT and the reassemble stage (MiDaS' `pretrained` module), less `pos_enc`;
        - `pos_enc`: BEiT's relative position tables.

        Each list keeps the order of `parameters()`.
        """
        tables = {id(m.relative_position_bias_table) for m in self.encoder.modules() if isinstance(m, Attention)}
        pretrained = [*self.encoder.parameters(), *self.reassemble.parameters()]
        return {
            "metric_head": list(self.metric_head.parameters()),
            "decoder": list(self.decoder.parameters()),
            "encoder": [p for p in pretrained if id(p) not in tables],
            "pos_enc": [p for p in pretrained if id(p) in tables],
        }

    def features(self, pixels: torch.Tensor):
        """Encoder and decoder: (activation, bottleneck, fused maps, relative depth), what the head reads."""
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[-2] % 32 or pixels.shape[-1] % 32:
            raise ValueError(f"expected (B, 3, H, W) with H, W multiples of 32, got {tuple(pixels.shape)}")
        patch = self.config.patch_size
        grid = (pixels.shape[-2] // patch, pixels.shape[-1] // patch)
        return self.decoder(self.reassemble(self.encoder(pixels), grid))

    def forward(self, pixels: torch.Tensor, domain: torch.Tensor | None = None,
                return_bins: bool = False) -> ZoeDepthOutput:
        """`domain` (B,) forces each sample's head (training with dataset labels); by default the router decides."""
        activation, bottleneck, fused, relative = self.features(pixels)
        if torch.is_autocast_enabled(pixels.device.type):
            # The bins head divides by temperatures down to 0.0212 and sums 64 bins: keep it in fp32.
            with torch.autocast(pixels.device.type, enabled=False):
                head = self.metric_head(activation.float(), bottleneck.float(), [f.float() for f in fused],
                                        relative.float(), domain=domain, return_bins=return_bins)
        else:
            head = self.metric_head(activation, bottleneck, fused, relative, domain=domain, return_bins=return_bins)
        return ZoeDepthOutput(head.depth, relative, head.domain_logits, head.domain, head.probs, head.bin_centers)


def low_precision_copy(model: ZoeDepth, dtype: torch.dtype) -> ZoeDepth:
    """A copy whose encoder and decoder weights are stored in `dtype`: autocast would otherwise
    re-cast every fp32 weight (345 M for BEiT-L) on every frame. The bins head stays fp32, as
    ZoeDepth.forward runs it without autocast."""
    model = copy.deepcopy(model)
    for part in (model.encoder, model.reassemble, model.decoder):
        part.to(dtype)
    return model
