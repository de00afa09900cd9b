"""ZoeDepth's metric-bins head(s) and the NK router.

One code path serves N, K and NK: the seed projector and the four projectors are shared, each
domain head ("nyu", "kitti", ...) owns a seed bin regressor, four attractor layers and a
conditional log-binomial. With several heads a router classifies each sample's domain, and each
sample is sent through its own head (the official code sums the logits over the batch and uses one
head for all; for a batch of one both agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .beit import attention
from .config import BinHeadConfig, ZoeDepthConfig

# The inverse attractor always ran with its defaults (alpha 300, gamma 2), whatever the configs say.
_ATTRACTOR_ALPHA = 300.0
_P_EPS = 1e-4


def _mlp(in_ch: int, hidden: int, out_ch: int) -> nn.Sequential:
    """1x1 conv -> ReLU -> 1x1 conv, the building block of regressors, projectors and attractors."""
    return nn.Sequential(nn.Conv2d(in_ch, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, out_ch, 1))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class SeedBinRegressor(nn.Module):
    def __init__(self, cfg: ZoeDepthConfig, head: BinHeadConfig):
        super().__init__()
        self.normed = cfg.bin_centers_type == "normed"
        self.min_depth, self.max_depth = head.min_depth, head.max_depth
        self.net = _mlp(cfg.fusion_channels, cfg.seed_mlp_dim, head.n_bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Seed bins in the form the attractors refine: normalised to [0, 1] for normed heads."""
        x = self.net(x)
        if not self.normed:
            return F.softplus(x)
        widths = F.relu(x) + 1e-3
        widths = widths / widths.sum(dim=1, keepdim=True) * (self.max_depth - self.min_depth)
        widths = F.pad(widths, (0, 0, 0, 0, 1, 0), value=self.min_depth)
        edges = torch.cumsum(widths, dim=1)
        centers = 0.5 * (edges[:, :-1] + edges[:, 1:])
        return (centers - self.min_depth) / (self.max_depth - self.min_depth)


class AttractorLayer(nn.Module):
    def __init__(self, cfg: ZoeDepthConfig, head: BinHeadConfig, n_attractors: int):
        super().__init__()
        self.normed = cfg.bin_centers_type == "normed"
        self.mean = cfg.attractor_kind == "mean"
        self.min_depth, self.max_depth = head.min_depth, head.max_depth
        dim = cfg.bin_embedding_dim
        # Normed attractors predict (value, weight) pairs, of which only the first is used: the
        # released K weights depend on that bug.
        self.net = _mlp(dim, dim, n_attractors * (2 if self.normed else 1))

    def forward(self, embedding, prev_bins, prev_embedding):
        """Returns (bins for the next layer, bin centres in metres)."""
        x = embedding + _resize(prev_embedding, embedding.shape[-2:])
        a = self.net(x)
        if self.normed:
            a = (F.relu(a) + 1e-3).unflatten(1, (-1, 2))[:, :, 0]
        else:
            a = F.softplus(a)
        bins = _resize(prev_bins, a.shape[-2:])
        # One attractor at a time: the (B, attractors, bins, H, W) difference tensor of a single
        # broadcast is 200 MB at 192x256 for NK and dominated the head's time. Three passes per
        # attractor (difference, denominator, in-place accumulation) instead of six.
        shift, one = torch.zeros_like(bins), bins.new_ones(())
        for i in range(a.shape[1]):
            dx = a[:, i:i + 1] - bins
            shift.addcdiv_(dx, torch.addcmul(one, dx, dx, value=_ATTRACTOR_ALPHA))
        bins = bins + (shift / a.shape[1] if self.mean else shift)
        if not self.normed:
            return bins, bins
        centers = (self.max_depth - self.min_depth) * bins + self.min_depth
        centers = torch.sort(centers, dim=1).values.clamp(self.min_depth, self.max_depth)
        return bins, centers


class ConditionalLogBinomial(nn.Module):
    """Per-pixel (p, temperature) -> softmax over a log-binomial of n_bins classes."""

    def __init__(self, cfg: ZoeDepthConfig, in_ch: int, n_bins: int):
        super().__init__()
        cond = cfg.bin_embedding_dim
        hidden = (in_ch + cond) // cfg.log_binomial_bottleneck_factor
        self.mlp = nn.Sequential(nn.Conv2d(in_ch + cond, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 4, 1), nn.Softplus())
        self.min_temp, self.max_temp = cfg.min_temp, cfg.max_temp
        k = torch.arange(n_bins, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("k", k, persistent=False)

    def forward(self, main: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """`condition` at its own, coarser size: the official head upsamples it to `main` and
        concatenates. The first 1x1 conv is split instead and the condition's part upsampled after
        it (a 1x1 conv commutes with bilinear resampling): fewer channels to resample, no copy."""
        first, width = self.mlp[0], main.shape[1]
        hidden = F.conv2d(main, first.weight[:, :width], first.bias)
        hidden = hidden + _resize(F.conv2d(condition, first.weight[:, width:]), main.shape[-2:])
        pt = self.mlp[1:](hidden) + _P_EPS
        p = (pt[:, 0] / (pt[:, 0] + pt[:, 1])).unsqueeze(1)
        t = (pt[:, 2] / (pt[:, 2] + pt[:, 3])).unsqueeze(1)
        t = (self.max_temp - self.min_temp) * t + self.min_temp
        k, n = self.k, self.k[:, -1:]
        eps = 1e-7  # Stirling form of log C(n, k) as trained
        log_binom = (n + eps) * torch.log(n + eps) - (k + eps) * torch.log(k + eps) - (n - k) * torch.log(n - k + eps)
        y = (log_binom + k * torch.log(p.clamp(min=_P_EPS, max=1.0))
             + (n - k) * torch.log((1 - p).clamp(min=_P_EPS, max=1.0)))
        return torch.softmax(y / t, dim=1)


class BinHead(nn.Module):
    """The per-domain part of the metric head."""

    def __init__(self, cfg: ZoeDepthConfig, head: BinHeadConfig):
        super().__init__()
        self.config = head
        self.seed_bin_regressor = SeedBinRegressor(cfg, head)
        self.attractors = nn.ModuleList(AttractorLayer(cfg, head, n) for n in cfg.attractors)
        in_ch = cfg.relative_features + (1 if cfg.condition_on_relative_depth else 0)
        self.conditional_log_binomial = ConditionalLogBinomial(cfg, in_ch, head.n_bins)


class Router(nn.Module):
    """Domain classifier: a post-norm transformer over bottleneck patches plus a zero query token."""

    def __init__(self, cfg: ZoeDepthConfig):
        super().__init__()
        d = cfg.router_dim
        self.num_heads = cfg.router_heads
        self.embed = nn.Conv2d(cfg.fusion_channels, d, kernel_size=1)
        self.layers = nn.ModuleList(RouterLayer(d, cfg.router_heads, cfg.router_ffn_dim)
                                    for _ in range(cfg.router_layers))
        self.classifier = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, len(cfg.heads)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = F.pad(self.embed(x).flatten(2), (1, 0)).transpose(1, 2)  # zero token first
        n, d = tokens.shape[1:]
        position = torch.arange(n, device=x.device, dtype=tokens.dtype).unsqueeze(1)
        div = torch.exp(torch.arange(0, d, 2, device=x.device, dtype=tokens.dtype) * (-math.log(10000.0) / d))
        tokens = tokens + torch.cat([torch.sin(position * div), torch.cos(position * div)], dim=1)
        for layer in self.layers:
            tokens = layer(tokens)
        return self.classifier(tokens[:, 0])


class RouterLayer(nn.Module):
    """torch.nn.TransformerEncoderLayer (post-norm, ReLU) with its parameter layout, batch first."""

    def __init__(self, d: int, num_heads: int, ffn: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.linear1 = nn.Linear(d, ffn)
        self.linear2 = nn.Linear(ffn, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.in_proj(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = self.norm1(x + self.out_proj(attn))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


def depth_std(probs: torch.Tensor, centers: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each pixel's depth distribution: sqrt(sum_c p_c (c - depth)^2), in fp32."""
    var = torch.sum(probs.float() * (centers.float() - depth) ** 2, dim=1, keepdim=True)
    return var.clamp(min=0).sqrt()


@dataclass
class HeadOutput:
    depth: torch.Tensor  # (B, 1, H, W) metres
    domain_logits: torch.Tensor | None  # (B, n_heads), None for single-head models
    domain: torch.Tensor  # (B,) index of the head each sample went through
    probs: torch.Tensor | None = None  # (B, n_bins, H, W) when asked for
    bin_centers: torch.Tensor | None = None  # (B, n_bins, H, W) metres, when asked for


class MetricHead(nn.Module):
    def __init__(self, cfg: ZoeDepthConfig):
        super().__init__()
        c, e = cfg.fusion_channels, cfg.bin_embedding_dim
        self.condition_on_relative_depth = cfg.condition_on_relative_depth
        self.conv2 = nn.Conv2d(c, c, kernel_size=1)
        self.seed_projector = _mlp(c, cfg.projector_mlp_dim, e)
        self.projectors = nn.ModuleList(_mlp(c, cfg.projector_mlp_dim, e) for _ in range(4))
        self.heads = nn.ModuleDict({h.name: BinHead(cfg, h) for h in cfg.heads})
        self.router = Router(cfg) if cfg.routed else None

    def forward(self, activation, bottleneck, fused, relative_depth, domain=None, return_bins=False) -> HeadOutput:
        x = self.conv2(bottleneck)
        batch = x.shape[0]
        logits = self.router(x) if self.router is not None else None
        if domain is None:
            domain = logits.argmax(dim=-1) if logits is not None else x.new_zeros(batch, dtype=torch.long)
        # Shared by every head: the embeddings do not depend on the domain.
        seed_embedding = self.seed_projector(x)
        embeddings = [p(f) for p, f in zip(self.projectors, fused, strict=True)]
        last = activation
        if self.condition_on_relative_depth:
            last = torch.cat([last, _resize(relative_depth, last.shape[-2:])], dim=1)
        if len(self.heads) == 1:
            groups = [(next(iter(self.heads.values())), None)]
        else:
            groups = [(head, (domain == i).nonzero().squeeze(1)) for i, head in enumerate(self.heads.values())]
            groups = [(head, idx) for head, idx in groups if idx.numel()]
        depth = probs_out = centers_out = None
        for head, idx in groups:
            pick = (lambda t: t) if idx is None else (lambda t, idx=idx: t.index_select(0, idx))
            d, p, c = self._run_head(head, pick(x), pick(seed_embedding), [pick(e) for e in embeddings], pick(last))
            if idx is None:
                depth, probs_out, centers_out = d, p, c
                continue
            if depth is None:
                depth = d.new_empty((batch, *d.shape[1:]))
                if return_bins:
                    probs_out = [None] * batch
                    centers_out = [None] * batch
            depth[idx] = d
            if return_bins:  # heads may differ in bin count: keep per-sample tensors
                for j, i in enumerate(idx.tolist()):
                    probs_out[i], centers_out[i] = p[j], c[j]
        if return_bins and isinstance(probs_out, list):
            probs_out, centers_out = torch.stack(probs_out), torch.stack(centers_out)
        return HeadOutput(depth, logits, domain, probs_out if return_bins else None,
                          centers_out if return_bins else None)

    def forward_per_sample(self, activation, bottleneck, fused, relative_depth):
        """(depth, router logits or None, std), each sample from the head its router picks, with
        static shapes: the form torch.export can trace, so an exported graph routes a mixed batch
        as `forward` does. Every head runs on the whole batch and each sample takes its own head's
        output: for NK that is one extra head (~7 % of the full model's CPU time at 384x512), while
        a `torch.cond` per sample (ONNX `If`) made exports several times slower to build."""
        x = self.conv2(bottleneck)
        seed_embedding = self.seed_projector(x)
        embeddings = [p(f) for p, f in zip(self.projectors, fused, strict=True)]
        last = activation
        if self.condition_on_relative_depth:
            last = torch.cat([last, _resize(relative_depth, last.shape[-2:])], dim=1)
        outputs = [self._depth_and_std(head, x, seed_embedding, embeddings, last) for head in self.heads.values()]
        depth, std = outputs[-1]
        if self.router is None:
            return depth, None, std
        logits = self.router(x)
        pick = logits.argmax(dim=-1).view(-1, 1, 1, 1)
        for i in range(len(outputs) - 2, -1, -1):
            depth = torch.where(pick == i, outputs[i][0], depth)
            std = torch.where(pick == i, outputs[i][1], std)
        return depth, logits, std

    def _depth_and_std(self, head: BinHead, x, seed_embedding, embeddings, last):
        depth, probs, centers = self._run_head(head, x, seed_embedding, embeddings, last)
        return depth, depth_std(probs, centers, depth)

    @staticmethod
    def _run_head(head: BinHead, x, seed_embedding, embeddings, last):
        bins = head.seed_bin_regressor(x)
        prev_embedding = seed_embedding
        for attractor, embedding in zip(head.attractors, embeddings, strict=True):
            bins, centers = attractor(embedding, bins, prev_embedding)
            prev_embedding = embedding
        probs = head.conditional_log_binomial(last, prev_embedding)
        centers = _resize(centers, probs.shape[-2:])
        # The weighted sum over bins stays fp32: bf16 loses centimetres at tens of metres.
        depth = torch.sum(probs.float() * centers.float(), dim=1, keepdim=True)
        return depth, probs, centers
