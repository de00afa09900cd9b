"""DPT reassembly and decoder (MiDaS v3.1) producing ZoeDepth's feature taps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ZoeDepthConfig

# Resampling of each tapped token map: x4, x2, identity, /2 (MiDaS "reassemble" factors).
_RESIZE_FACTORS = (4, 2, 1, 0.5)


class Reassemble(nn.Module):
    """Token sequences -> four image-like maps at strides 4, 8, 16, 32 ("project" readout)."""

    def __init__(self, cfg: ZoeDepthConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.readout = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in cfg.neck_channels)
        self.project = nn.ModuleList(nn.Conv2d(dim, c, kernel_size=1) for c in cfg.neck_channels)
        resize = []
        for c, factor in zip(cfg.neck_channels, _RESIZE_FACTORS, strict=True):
            if factor > 1:
                resize.append(nn.ConvTranspose2d(c, c, kernel_size=factor, stride=factor))
            elif factor == 1:
                resize.append(nn.Identity())
            else:
                resize.append(nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1))
        self.resize = nn.ModuleList(resize)

    def forward(self, taps: list[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        maps = []
        for tokens, readout, project, resize in zip(taps, self.readout, self.project, self.resize, strict=True):
            patches, cls = tokens[:, 1:], tokens[:, :1]
            # readout(cat(patch, cls)), split: the cls half is one row per image, so the big matmul
            # halves and the concatenated copy goes.
            dim = patches.shape[-1]
            x = F.gelu(F.linear(patches, readout.weight[:, :dim])
                       + F.linear(cls, readout.weight[:, dim:], readout.bias))
            x = x.transpose(1, 2).unflatten(2, grid)
            maps.append(resize(project(x)))
        return maps


class ResidualConvUnit(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: the input is also the residual.
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.res1 = ResidualConvUnit(channels)
        self.res2 = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if skip is not None:
            x = x + self.res1(skip)
        x = self.res2(x)
        # MiDaS resamples, then applies out_conv; a 1x1 conv commutes with bilinear resampling
        # (weights summing to one), and before it runs on a quarter of the pixels.
        return F.interpolate(self.out_conv(x), size=size, mode="bilinear", align_corners=True)


class DPTDecoder(nn.Module):
    """Fuses the reassembled maps coarse to fine and runs the MiDaS relative-depth head.

    Returns the 32-channel head activation (network resolution), the bottleneck (stride 32), the
    four fusion outputs coarse to fine, and the relative depth: the taps ZoeDepth's metric head reads.
    """

    def __init__(self, cfg: ZoeDepthConfig):
        super().__init__()
        c = cfg.fusion_channels
        self.layer_rn = nn.ModuleList(nn.Conv2d(n, c, kernel_size=3, padding=1, bias=False) for n in cfg.neck_channels)
        self.fusion = nn.ModuleList(FusionBlock(c) for _ in cfg.neck_channels)  # fusion[0] is the coarsest
        self.head_conv1 = nn.Conv2d(c, c // 2, kernel_size=3, padding=1)
        self.head_conv2 = nn.Conv2d(c // 2, cfg.relative_features, kernel_size=3, padding=1)
        self.head_conv3 = nn.Conv2d(cfg.relative_features, 1, kernel_size=1)

    def forward(self, maps: list[torch.Tensor]):
        feats = [conv(m) for conv, m in zip(self.layer_rn, maps, strict=True)]
        fused, x = [], None
        for i, block in enumerate(self.fusion):
            level = 3 - i
            finer = feats[level - 1].shape[-2:] if level > 0 else tuple(2 * s for s in feats[0].shape[-2:])
            x = block(feats[level] if x is None else x, None if x is None else feats[level], finer)
            fused.append(x)
        x = self.head_conv1(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        activation = F.relu(self.head_conv2(x))
        relative_depth = F.relu(self.head_conv3(activation))
        return activation, feats[3], fused, relative_depth
