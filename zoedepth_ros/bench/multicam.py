"""The benchmark's multi-camera part: for N cameras, one depth node serving all N (`cameras`)
against N single-camera nodes, each setup in its own processes under the same open-loop load from
this process over DDS (`zoedepth_ros.ros.multicam_client`): per-camera output FPS and age p50/p99,
and the memory of the node processes (peak and current RSS from /proc/<pid>/status, PSS from
/proc/<pid>/smaps_rollup; on CUDA, the GPU memory nvidia-smi reports per process), each total
against one single-camera node's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from zoedepth_ros import diagnostics_keys
from zoedepth_ros.bench.gpu_memory import GpuMemoryPeak
from zoedepth_ros.bench.models import arch_config

SETUP_MULTI, SETUP_NODES = "1 node, N cameras", "N nodes"


def process_memory_mib(pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM), RSS (VmRSS) and, where the kernel has smaps_rollup, PSS of `pid`, in MiB.
    PSS splits pages shared between processes (the Python and torch libraries mapped by every
    node) among them, so a sum of PSS over several nodes counts them once."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[{"VmHWM": "peak_rss_mib", "VmRSS": "rss_mib"}[key]] = int(value.split()[0]) / 1024
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_mib"] = int(line.split()[1]) / 1024
    return out


def _run_setup(setup: str, n: int, ckpt: Path, tmp: Path, frame, rate_hz: float, duration_s: float,
               device: str, node_params: dict) -> dict:
    """Start the node process(es) of `setup` for `n` cameras, load them, measure, stop them."""
    from zoedepth_ros.ros.multicam_client import drive_cameras
    from zoedepth_ros.ros.processes import node_process

    base = f"/zoedepth_multicam_{os.getpid()}_{n}"
    params = {"model": ckpt, "device": device, "publish_colormap": False, "publish_points": False,
              "min_depth": 0.0, "max_depth": 1000.0, **node_params}
    names = [f"cam{i}" for i in range(n)]
    if setup == SETUP_MULTI:
        launches = [(f"{base}_multi", {**params, "cameras": names})]
        cameras = {name: f"{base}_multi/{name}" for name in names}
    else:
        launches = [(f"{base}_{name}", params) for name in names]
        cameras = {name: f"{base}_{name}" for name in names}
    with contextlib.ExitStack() as stack:
        nodes = []
        for namespace, node_params_ in launches:
            log = stack.enter_context(open(tmp / f"{namespace.strip('/')}.log", "w+"))
            nodes.append((stack.enter_context(node_process(namespace, node_params_, log)), log))
        pids = [p.pid for p, _ in nodes]
        gpu = GpuMemoryPeak.of(pids) if device.startswith("cuda") else None
        try:
            driven = drive_cameras(cameras, nodes, frame, rate_hz, duration_s)
        finally:
            gpu_peak = gpu.stop() if gpu is not None else None
        # Read while the processes still run: their memory after the load, and its peak.
        memory = [process_memory_mib(p.pid) for p, _ in nodes]
    per_camera = driven["cameras"]
    fps = [c["fps"] for c in per_camera.values()]
    row = {
        "n": n, "setup": setup, "processes": len(nodes), "cameras": per_camera,
        "fps_min": min(fps), "fps_max": max(fps), "fps_total": sum(fps),
        "age_p50_ms": max(c["age_p50_ms"] for c in per_camera.values()),
        "age_p99_ms": max(c["age_p99_ms"] for c in per_camera.values()),
        "window_s": driven["window_s"], "memory": memory,
        **{f"{key}_total": sum(m[key] for m in memory) for key in ("peak_rss_mib", "rss_mib", "pss_mib")
           if all(key in m for m in memory)},
    }
    if gpu is not None:
        if gpu.why_not:
            row["gpu_skipped"] = gpu.why_not
        elif not all(gpu_peak.get(pid) for pid in pids):
            # nvidia-smi lists host PIDs: in a container it may not name ours at all.
            row["gpu_skipped"] = "nvidia-smi listed not every node process (another PID namespace?)"
        else:
            row["gpu_peak_mib_total"] = sum(gpu_peak.values())
    # The shared model's figures (frames per batch...), from the node's own /diagnostics status.
    statuses = {name: values for name, values in driven["diagnostics"].items()
                if any(name.startswith(ns + "/") for ns, _ in launches)
                and diagnostics_keys.parse_status(values).batches is not None}
    if statuses:
        row["node_diagnostics"] = next(iter(statuses.values()))
    return row


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's memory totals over those of one single-camera node (the N nodes row with N 1)."""
    reference = next(r for r in rows if r["n"] == 1 and r["setup"] == SETUP_NODES)
    for row in rows:
        for key in ("peak_rss_mib", "rss_mib", "pss_mib", "gpu_peak_mib"):
            if f"{key}_total" in row and f"{key}_total" in reference and reference[f"{key}_total"] > 0:
                row[f"{key}_ratio"] = row[f"{key}_total"] / reference[f"{key}_total"]
    return rows


def bench_multicam(arch: str, img_size, frame, counts: list[int], rate_hz: float, duration_s: float,
                   profile: str | None, device: str = "cpu", node_params: dict | None = None) -> list[dict]:
    """For each N of `counts` (1 is added first when missing: it is the memory reference), one node
    with N cameras, then N single-camera nodes, each under `rate_hz` frames of `frame` size per
    camera for `duration_s` after warm-up. The model: `arch` at `img_size` with random weights in a
    checkpoint of a temporary folder (deleted after)."""
    import torch

    from zoedepth_ros.model import ZoeDepth, save_checkpoint
    from zoedepth_ros.ros.processes import dds_profile

    counts = sorted(set(counts) | {1})
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoedepth-multicam-") as tmp_name:
        tmp = Path(tmp_name)
        model = ZoeDepth(arch_config(arch).replace(img_size=tuple(img_size))).eval()
        ckpt = save_checkpoint(model, tmp / "bench.safetensors")
        del model  # this process's memory is not measured, but the nodes share the machine's
        with dds_profile(profile):
            for n in counts:
                for setup in (SETUP_MULTI, SETUP_NODES):
                    print(f"  multicam: {setup} with N={n} ...", flush=True)
                    rows.append(_run_setup(setup, n, ckpt, tmp, frame, rate_hz, duration_s, device,
                                           node_params or {}))
    return with_ratios(rows)


def print_multicam(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"  {'N':>2}  {'setup':<18}{'FPS/camera min':>15}{'max':>7}{'age p50 ms':>12}{'p99 ms':>9}"
          f"{'peak RSS MiB':>14}{'x one node':>11}{'PSS MiB':>10}{'x one node':>11}")
    for r in rows:
        print(f"  {r['n']:>2}  {r['setup']:<18}{r['fps_min']:>15.2f}{r['fps_max']:>7.2f}{r['age_p50_ms']:>12.0f}"
              f"{r['age_p99_ms']:>9.0f}{r['peak_rss_mib_total']:>14.0f}{r.get('peak_rss_mib_ratio', 0):>10.2f}x"
              f"{r.get('pss_mib_total', float('nan')):>10.0f}{r.get('pss_mib_ratio', float('nan')):>10.2f}x"
              + (f"  GPU {r['gpu_peak_mib_total']} MiB" if "gpu_peak_mib_total" in r else "")
              + (f"  (GPU memory skipped: {r['gpu_skipped']})" if "gpu_skipped" in r else ""))


def markdown_rows(rows: list[dict]) -> list[str]:
    """The table as markdown lines (docs/benchmarks.md, gpu_check.md)."""
    gpu = any("gpu_peak_mib_total" in r for r in rows)
    lines = ["| N | setup | FPS per camera min / max | age p50 / p99 ms | peak RSS MiB (x one node) "
             "| PSS MiB (x one node) |" + (" GPU MiB (x one node) |" if gpu else ""),
             "|---|---|---|---|---|---|" + ("---|" if gpu else "")]
    for r in rows:
        lines.append(f"| {r['n']} | {r['setup']} | {r['fps_min']:.2f} / {r['fps_max']:.2f} "
                     f"| {r['age_p50_ms']:.0f} / {r['age_p99_ms']:.0f} "
                     f"| {r['peak_rss_mib_total']:.0f} ({r.get('peak_rss_mib_ratio', float('nan')):.2f}x) "
                     f"| {r.get('pss_mib_total', float('nan')):.0f} ({r.get('pss_mib_ratio', float('nan')):.2f}x) |"
                     + (f" {r.get('gpu_peak_mib_total', 'n/a')} ({r.get('gpu_peak_mib_ratio', float('nan')):.2f}x) |"
                        if gpu else ""))
    return lines
