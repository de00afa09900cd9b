"""The NK router decides per sample: a mixed batch sends each frame through its own head."""

from __future__ import annotations

import torch


def _model_with_split_routes(model):
    """`model` (a random NK model) with its classifier threshold moved between two inputs' logit gaps."""
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(8, 3, 192, 256, generator=g) * torch.linspace(0.2, 3.0, 8).view(8, 1, 1, 1)
    with torch.no_grad():
        logits = model(inputs).domain_logits
        gap = logits[:, 1] - logits[:, 0]
        order = gap.argsort()
        lo, hi = order[0].item(), order[-1].item()
        assert gap[hi] > gap[lo]
        # Shift the kitti logit so the threshold falls half way between the two samples.
        model.metric_head.router.classifier[2].bias[1] -= 0.5 * (gap[lo] + gap[hi])
    return model, inputs[lo:lo + 1], inputs[hi:hi + 1]


def test_mixed_batch_routes_each_sample(tiny_model):
    model, indoor, outdoor = _model_with_split_routes(tiny_model("NK"))
    with torch.no_grad():
        alone = [model(x) for x in (indoor, outdoor)]
        assert [o.domain.item() for o in alone] == [0, 1]
        mixed = model(torch.cat([indoor, outdoor]), return_bins=True)
        assert mixed.domain.tolist() == [0, 1]
        torch.testing.assert_close(mixed.metric_depth[0], alone[0].metric_depth[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mixed.metric_depth[1], alone[1].metric_depth[0], rtol=1e-5, atol=1e-6)
        # A batch-wide vote (the official behaviour) would have sent the second frame to nyu.
        forced = model(torch.cat([indoor, outdoor]), domain=torch.tensor([0, 0]))
        assert not torch.allclose(forced.metric_depth[1], mixed.metric_depth[1], rtol=1e-3)
        # The distribution outputs follow the same routing and describe the returned depth.
        expected = (mixed.probs * mixed.bin_centers).sum(1, keepdim=True)
        torch.testing.assert_close(expected, mixed.metric_depth, rtol=1e-5, atol=1e-5)
        # Their spread: the std of each pixel's distribution, here as E[c^2] - E[c]^2 in float64.
        p, c = mixed.probs.double(), mixed.bin_centers.double()
        variance = (p * c**2).sum(1, keepdim=True) - (p * c).sum(1, keepdim=True) ** 2
        torch.testing.assert_close(mixed.depth_std(), variance.clamp(min=0).sqrt().float(), rtol=1e-4, atol=1e-5)


def test_forced_domain_overrides_the_router(tiny_model):
    model, indoor, _ = _model_with_split_routes(tiny_model("NK"))
    with torch.no_grad():
        out = model(indoor, domain=torch.tensor([1]))
    assert out.domain.tolist() == [1]
    assert out.domain_logits.argmax(-1).item() == 0  # the logits still report the router's view
