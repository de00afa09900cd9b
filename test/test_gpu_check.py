"""bench/gpu_check.sh, the prepared GPU check, in its CPU dry run (tiny model): every part that
does not need a GPU runs here, so the script cannot rot between GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

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
    node = results["node"]
    assert node["depth+cloud"]["frames"] == 3 and node["open_loop"]["output_hz"] > 0
    multicam = {(r["n"], r["setup"]): r for r in results["multicam"]["rows"]}
    assert set(multicam) == {(n, s) for n in (1, 2) for s in ("1 node, N cameras", "N nodes")}
    assert all(r["fps_min"] > 0 and r["peak_rss_mib_total"] > 0 for r in multicam.values())
    assert "gpu_peak_mib_total" not in multicam[2, "N nodes"]  # CPU: no GPU memory to report
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| onnxruntime fp32 |" in report and "| depth + cloud |" in report
    assert "| 2 | 1 node, N cameras |" in report
