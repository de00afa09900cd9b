"""`zoedepth-ros benchmark` runs both implementations on the same weights and reports ratios."""

from __future__ import annotations

import json

import torch

from zoedepth_ros.benchmark import build_models
from zoedepth_ros.cli import main


def test_reference_gets_our_weights():
    ours, port = build_models("tiny-NK", reference=True)
    x = torch.randn(1, 3, 192, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).metric_depth[:, 0], port(pixel_values=x).predicted_depth, rtol=1e-4, atol=1e-5)


def test_forward_and_estimator_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--arch", "tiny-NK", "--parts", "forward,estimator", "--precision", "fp32",
                 "--size", "192x256", "--frame", "120x160", "--iters", "1", "--warmup", "0", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    forward = {r["name"]: r for r in results["forward"]}
    assert set(forward) == {"ours fp32", "port fp32"} and forward["ours fp32"]["vs port fp32"] > 0
    estimator = {r["name"]: r for r in results["estimator"]}
    assert {"ours fp32", "ours fp32 flip", "port fp32", "port fp32 flip"} <= set(estimator)
    assert estimator["ours fp32 flip"]["vs port fp32 flip"] > 0
    assert "AMD" in results["machine"] or "cores" in results["machine"]
    assert "vs port fp32" in capsys.readouterr().out
