"""bench/gpu_check.sh, the prepared GPU check, in its CPU dry run (tiny model): every part that
does not need a GPU runs here, so the script cannot rot between GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from zoedepth_ros.bench.multicam import SETUP_MULTI, SETUP_NODES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_dry_run_checks_times_and_reports(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "ZOEDEPTH_ROS_ENGINES": str(tmp_path / "cache")}
    proc = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--no-compile", "--iters", "1",
                           "--node-frames", "3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in results["checks"]}
    assert all(c["ok"] for c in checks.values()), [c for c in checks.values() if not c["ok"]]
    assert {"bf16 vs fp32", "onnxruntime fp32 vs torch fp32", "per-sample routing, torch fp32",
            "per-sample routing, onnxruntime fp32",
            "finite depth on black/white/noise, onnxruntime fp32"} <= set(checks)
    # bf16 really differs from fp32 (a check that compared fp32 with itself would show 0).
    assert 0 < checks["bf16 vs fp32"]["abs_rel"] < 0.02
    assert {r["name"] for r in results["timing"]} == {"eager fp32", "eager bf16", "onnxruntime fp32",
                                                      "transformers port fp32"}
    assert {s["name"] for s in results["skipped"]} == {"CUDA fp32 vs CPU fp32", "fp16 vs fp32", "tensorrt"}
    # The node part end to end over DDS (zoedepth_ros.bench.node.bench_node, what `zoedepth-ros
    # benchmark --parts node` runs) with the shipped profile, which Fast DDS accepted: latencies,
    # the node's own forward time and the overhead derived from them.
    assert "XMLPARSER" not in proc.stdout + proc.stderr
    node = results["node"]
    assert node["dds_profile"].endswith("config/fastdds_large_images.xml")
    for key in ("depth", "depth+cloud"):
        r = node[key]
        assert r["frames"] == 3 and r["lost"] == 0, key
        # The node's p50s cover its whole window (warm-up frames too), so only the order within it holds.
        assert 0 < r["forward_p50_ms"] <= r["node_inference_p50_ms"] and 0 < r["p50_ms"] <= r["p99_ms"], key
        assert abs(r["overhead_p50_ms"] - (r["p50_ms"] - r["forward_p50_ms"])) < 1e-9, key
    assert node["open_loop"]["received"] > 0 and node["open_loop"]["output_hz"] > 0
    check_multicam(results["multicam"])
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| onnxruntime fp32 |" in report and "| depth + cloud |" in report
    assert "| 2 | 1 node, N cameras |" in report


def check_multicam(multicam: dict) -> None:
    """The multi-camera part (zoedepth_ros.bench.multicam.bench_multicam, what `zoedepth-ros
    benchmark --parts multicam` runs) over DDS, N = 1, 2: a row per N and setup, outputs on every
    camera, the processes' memory, and ratios against one single-camera node."""
    assert multicam["dds_profile"].endswith("config/fastdds_large_images.xml")
    rows = {(r["n"], r["setup"]): r for r in multicam["rows"]}
    assert list(rows) == [(1, SETUP_MULTI), (1, SETUP_NODES), (2, SETUP_MULTI), (2, SETUP_NODES)]  # 1: the reference
    for (n, setup), r in rows.items():
        assert sorted(r["cameras"]) == [f"cam{i}" for i in range(n)]
        assert r["processes"] == (1 if setup == SETUP_MULTI else n) == len(r["memory"])
        for camera in r["cameras"].values():
            assert camera["received"] > 0 and camera["fps"] > 0 and 0 < camera["age_p50_ms"] <= camera["age_p99_ms"]
        assert r["fps_min"] == min(c["fps"] for c in r["cameras"].values()) > 0
        for key in ("peak_rss_mib", "rss_mib", "pss_mib"):
            assert all(m[key] > 0 for m in r["memory"])
            assert r[f"{key}_total"] == pytest.approx(sum(m[key] for m in r["memory"]))
            assert r[f"{key}_ratio"] == pytest.approx(r[f"{key}_total"] / rows[1, SETUP_NODES][f"{key}_total"])
        assert all(m["rss_mib"] <= m["peak_rss_mib"] for m in r["memory"])
        assert "gpu_peak_mib_total" not in r  # CPU: no GPU memory to report
    # Two processes each hold a model and a Python with torch and rclpy; one process serving both
    # cameras holds one.
    assert rows[2, SETUP_NODES]["peak_rss_mib_total"] > 1.5 * rows[2, SETUP_MULTI]["peak_rss_mib_total"]
    # The shared model's own /diagnostics status came along: batches of one frame, the dry run leaving
    # max_batch to the node's auto (one frame per forward on CPU; test_benchmark checks that
    # `benchmark --multicam-max-batch` reaches bench_multicam).
    diagnostics = rows[2, SETUP_MULTI]["node_diagnostics"]
    assert int(diagnostics["batches"]) > 0 and int(diagnostics["largest batch"]) == 1
