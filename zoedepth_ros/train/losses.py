"""Training losses of the official ZoeDepth recipe: scale-invariant log loss and router cross-entropy.

Both are computed in float32 with autocast off: the official trainer does the same because the
logarithms of bf16/fp16 depths turn SILog into NaNs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SILOG_BETA = 0.15
SILOG_EPS = 1e-7
DOMAIN_WEIGHT = 100.0


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               beta: float = SILOG_BETA, eps: float = SILOG_EPS) -> torch.Tensor:
    """10 * sqrt(var(g) + beta * mean(g)^2), g = ln(pred + eps) - ln(target + eps) over the valid
    pixels of the whole batch, with the unbiased variance.

    `pred` (B, 1, h, w) is resized to the size of `target` (B, 1, H, W) first (bilinear,
    align_corners=True); `mask` (B, 1, H, W) bool marks the valid GT pixels. A batch with fewer
    than two valid pixels has no variance: the loss is then NaN, as in the official code.
    """
    with torch.autocast(pred.device.type, enabled=False):
        pred = pred.float()
        if pred.shape[-2:] != target.shape[-2:]:
            pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=True)
        # Masked sums, not pred[mask]: boolean indexing costs a host sync and a scatter in backward
        # (15 % of a demo-model step). Invalid pixels get g = 0 and no gradient.
        g = torch.where(mask, torch.log(pred + eps) - torch.log(target.float() + eps), 0.0)
        n = mask.sum()
        mean = g.sum() / n
        var = torch.where(mask, g - mean, 0.0).square().sum() / (n - 1)
        return 10.0 * torch.sqrt(var + beta * mean ** 2)


def domain_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the router logits (B, n_heads) against each sample's dataset label."""
    with torch.autocast(logits.device.type, enabled=False):
        return F.cross_entropy(logits.float(), labels)


def training_loss(metric_depth: torch.Tensor, domain_logits: torch.Tensor | None, depth: torch.Tensor,
                  mask: torch.Tensor, labels: torch.Tensor, beta: float = SILOG_BETA,
                  domain_weight: float = DOMAIN_WEIGHT) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SILog, plus `domain_weight` x cross-entropy of the router for routed (NK) models.

    Returns the total and its detached parts ("silog", "domain_ce"; the latter 0 without router).
    """
    silog = silog_loss(metric_depth, depth, mask, beta)
    if domain_logits is None:
        return silog, {"silog": silog.detach(), "domain_ce": torch.zeros_like(silog).detach()}
    ce = domain_loss(domain_logits, labels)
    return silog + domain_weight * ce, {"silog": silog.detach(), "domain_ce": ce.detach()}


class LossInputs(nn.Module):
    """The model reduced to what the loss reads: (metric depth, router logits or None).

    DistributedDataParallel(find_unused_parameters=True) counts as used every parameter that a
    returned tensor depends on. Returning the whole ZoeDepthOutput would count the relative-depth
    output of NK models (which their loss does not read) and stall the gradient all-reduce.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor, domain: torch.Tensor | None = None):
        out = self.model(pixels, domain=domain)
        return out.metric_depth, out.domain_logits
