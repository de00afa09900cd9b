"""`zoedepth-ros benchmark` runs both implementations on the same weights and reports ratios."""

from __future__ import annotations

import json

import pytest
import torch

from zoedepth_ros.benchmark import arch_config, build_models, interleaved
from zoedepth_ros.cli import main


def test_reference_gets_our_weights():
    ours, port = build_models("tiny-NK", reference=True)
    x = torch.randn(1, 3, 192, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).metric_depth[:, 0], port(pixel_values=x).predicted_depth,
                                   rtol=1e-4, atol=1e-5)


def test_architecture_names():
    """--arch and --node-arch read names with the model package's parser (config_from_arch)."""
    from zoedepth_ros.model import PRESETS, tiny_config

    assert arch_config("ZoeD_M12_K") == PRESETS["ZoeD_M12_K"]
    assert arch_config("tiny-NK") == arch_config("tiny-nk") == tiny_config("NK")
    with pytest.raises(SystemExit, match=r"unknown --arch 'tiny-X': use one of ZoeD_M12_N, ZoeD_M12_K, ZoeD_M12_NK "
                                         r"or tiny-N/tiny-K/tiny-NK"):
        arch_config("tiny-X")


def test_forward_and_estimator_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--arch", "tiny-NK", "--parts", "forward,estimator", "--precision", "fp32",
                 "--size", "192x256", "--frame", "120x160", "--iters", "1", "--warmup", "0", "--compile",
                 "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    forward = {r["name"]: r for r in results["forward"]}
    assert set(forward) == {"ours fp32", "ours fp32 compiled", "port fp32"}
    assert forward["ours fp32"]["vs port fp32"] > 0 and forward["ours fp32 compiled"]["vs port fp32"] > 0
    assert results["compile_s"]["ours fp32 compiled"] > 0
    estimator = {r["name"]: r for r in results["estimator"]}
    assert {"ours fp32", "ours fp32 flip", "port fp32", "port fp32 flip"} <= set(estimator)
    assert estimator["ours fp32 flip"]["vs port fp32 flip"] > 0
    assert "AMD" in results["machine"] or "cores" in results["machine"]
    assert "vs port fp32" in capsys.readouterr().out


def test_node_part_over_dds_with_the_shipped_profile(tmp_path):
    """The node part end to end in a fresh process (Fast DDS reads the profile at its first
    participant): latencies, the node's own forward time and the overhead derived from them."""
    import subprocess
    import sys

    out = tmp_path / "node.json"
    proc = subprocess.run([sys.executable, "-m", "zoedepth_ros.cli", "benchmark", "--parts", "node",
                           "--frame", "120x160", "--node-frames", "5", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "XMLPARSER" not in proc.stdout + proc.stderr  # Fast DDS accepted the profile
    node = json.loads(out.read_text())["node"]
    assert node["dds_profile"].endswith("config/fastdds_large_images.xml")
    for key in ("depth", "depth+cloud"):
        r = node[key]
        assert r["frames"] == 5 and r["lost"] == 0
        # The node's p50s cover its whole window (warm-up frames too), so only the order within it holds.
        assert 0 < r["forward_p50_ms"] <= r["node_inference_p50_ms"] and 0 < r["p50_ms"] <= r["p99_ms"]
        assert abs(r["overhead_p50_ms"] - (r["p50_ms"] - r["forward_p50_ms"])) < 1e-9
    assert node["open_loop"]["received"] > 0


def test_dds_profile_must_exist(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit, match="no such file"):
        main(["benchmark", "--parts", "node", "--dds-profile", str(tmp_path / "missing.xml")])


def test_rounds_alternate_the_order():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, iters=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert {name: len(samples) for name, samples in times.items()} == {"a": 3, "b": 3}  # warm-up untimed
