"""The benchmarks' GPU memory poller (zoedepth_ros.bench.gpu_memory), against a stand-in nvidia-smi."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from zoedepth_ros.bench.gpu_memory import GpuMemoryPeak, is_node_process

from ros_helpers import wait_until


def fake_nvidia_smi(directory, rows_file) -> None:
    """An `nvidia-smi` on PATH that prints the lines of `rows_file` (what the query asks: pid, MiB)."""
    script = directory / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat {rows_file}\n")
    script.chmod(0o755)


def test_the_peak_of_the_selected_processes(tmp_path, monkeypatch):
    rows = tmp_path / "rows"
    rows.write_text("101, 500\n202, 900\n")
    fake_nvidia_smi(tmp_path, rows)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    poller = GpuMemoryPeak.of([101, 303], interval_s=0.01)
    assert wait_until(lambda: poller.peak_mib.get(101) == 500, timeout=5.0)
    rows.write_text("101, 1200\n303, 40\n")  # a higher peak, then lower again
    assert wait_until(lambda: poller.peak_mib.get(101) == 1200 and 303 in poller.peak_mib, timeout=5.0)
    rows.write_text("101, 700\nnot a row\n")
    time.sleep(0.05)
    assert poller.stop() == {101: 1200, 303: 40}  # 202 never selected; the bad row skipped
    assert poller.why_not is None


def test_without_nvidia_smi_it_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    poller = GpuMemoryPeak.of([1], interval_s=0.01)
    assert wait_until(lambda: poller.why_not is not None, timeout=5.0)
    assert poller.stop() == {} and "nvidia-smi failed" in poller.why_not


def test_node_processes_are_told_by_their_command_line():
    fake_node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "zoedepth_ros.cli", "node"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "zoedepth_ros.cli", "predict"])
    try:
        assert wait_until(lambda: is_node_process(fake_node.pid), timeout=5.0)
        assert not is_node_process(other.pid)
        assert not is_node_process(os.getpid())
    finally:
        for process in (fake_node, other):
            process.kill()
            process.wait()
