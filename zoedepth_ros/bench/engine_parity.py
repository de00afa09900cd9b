"""Engine parity: an exported model run by ONNX Runtime / OpenVINO against our PyTorch model, on
both routes of a routed model and on a mixed batch, in the terms of test/test_model_parity.py.

Random-weight bins heads are ill-conditioned (temperatures down to 0.02), so float32 rounding alone
moves some pixels by up to ~1e-2 whatever computes them. Two questions therefore: do the engine and
our float32 agree (median relative difference), and is the engine's float32 as accurate as ours,
both measured against our model in float64 (max and p99.9 of the per-pixel relative error)?
Used by the tests (tiny models) and by `zoedepth-ros benchmark --engines` (full size).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

MEDIAN_LIMIT = 1e-5  # median relative difference engine vs our float32


@dataclass
class EngineParity:
    engine: str
    case: str  # "route nyu", "route kitti", "mixed batch", "single head"
    median: float  # median relative difference engine vs our float32
    engine_max: float  # max relative error against our float64
    ours_max: float
    engine_p999: float
    ours_p999: float
    domains_match: bool  # the engine's router picked the same head for every sample

    @property
    def ok(self) -> bool:
        return (self.median < MEDIAN_LIMIT and self.domains_match
                and self.engine_max <= 2 * self.ours_max + 1e-6 and self.engine_p999 <= 2 * self.ours_p999 + 1e-6)

    def line(self) -> str:
        return (f"{self.engine:<12} {self.case:<12} median {self.median:.1e}  max {self.engine_max:.1e} "
                f"(ours {self.ours_max:.1e})  p99.9 {self.engine_p999:.1e} (ours {self.ours_p999:.1e})  "
                f"routes {'same' if self.domains_match else 'DIFFER'}  {'ok' if self.ok else 'FAIL'}")


def split_routes(model, size: tuple[int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs that exercise every route: for a routed model, two images the router sends to
    different heads (its classifier's bias is shifted in place between their logit margins: random
    weights otherwise send everything one way) and the two as one batch; else one image."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, *size, generator=gen)
    if not model.config.routed:
        return {"single head": images[:1]}
    router = model.metric_head.router
    with torch.no_grad():
        for _ in range(5):
            logits = model(images).domain_logits
            margin = logits[:, 0] - logits[:, 1]
            if abs(margin[0] - margin[1]) > 1e-4 * (1 + margin.abs().max()):
                break
            # Small random features drown under the router's unit positional encodings: amplify them.
            router.embed.weight.mul_(10.0)
        else:
            raise ValueError("the router gives both images the same margin however its input is scaled")
        router.classifier[-1].bias[0] -= margin.mean()
        domains = model(images).domain.tolist()
    names = model.config.head_names
    cases = {f"route {names[d]}": images[i:i + 1] for i, d in enumerate(domains)}
    cases["mixed batch"] = images
    return cases


def _relative(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    return (got.double() - expected.double()).abs() / expected.double().abs()


def check_engines(model, engines: list[str], size: tuple[int, int], workdir: Path, seed: int = 0) -> list[EngineParity]:
    """Export `model` (after `split_routes` adjusts its router) and compare each engine on every case.
    Memory stays near three copies of the weights (ours, the float64 one while it runs, one engine)."""
    import gc

    from zoedepth_ros.inference.onnx_engines import OnnxEngine
    from zoedepth_ros.model.export import export_onnx

    model = copy.deepcopy(model).eval()
    cases = split_routes(model, size, seed)
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        expected64 = {case: model64(x.double()).metric_depth for case, x in cases.items()}
        ours = {case: model(x) for case, x in cases.items()}
    del model64
    gc.collect()
    results = []
    # One file at the largest batch: smaller inputs run padded with their last image, as any
    # caller's would.
    batch = max(x.shape[0] for x in cases.values())
    path = Path(workdir) / f"parity-b{batch}.onnx"
    export_onnx(model, path, size=size, batch=batch)
    for name in engines:
        engine = OnnxEngine(name, path, device="cpu")
        for case, x in cases.items():
            out = engine(x, with_std=False)
            engine_err = _relative(out.depth, expected64[case])
            ours_err = _relative(ours[case].metric_depth, expected64[case])
            results.append(EngineParity(
                name, case, _relative(out.depth, ours[case].metric_depth).median().item(),
                engine_err.max().item(), ours_err.max().item(),
                torch.quantile(engine_err.flatten().float(), 0.999).item(),
                torch.quantile(ours_err.flatten().float(), 0.999).item(),
                torch.equal(out.domain, ours[case].domain)))
        del engine
        gc.collect()
    order = list(cases)
    return sorted(results, key=lambda r: (order.index(r.case), engines.index(r.engine)))
