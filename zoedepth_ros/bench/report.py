"""What the benchmark reports: the machine it ran on, the tables of the forward and estimator parts
and the node part's figures as printed, and the results as JSON.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, cores and threads, the instruction sets that decide bf16 and int8 speed (avx2,
    avx512f, avx512_bf16, avx512_vnni, amx_bf16, amx_int8), torch threads and version, Python: the
    line the results are read with (figures of different machines are never compared)."""
    import torch

    from zoedepth_ros.inference.cpu_features import cpu_features

    return (f"{cpu_features().line()}; {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"{platform.python_implementation()} {platform.python_version()}")


def print_table(title: str, rows: list[dict]) -> None:
    """Rows of `zoedepth_ros.bench.timing.ratio_rows`: median, p90 and every ratio column."""
    print(f"\n{title}")
    ratio_keys = sorted({k for r in rows for k in r if k.startswith("vs ")})
    widths = [max(16, len(k) + 2) for k in ratio_keys]
    print(f"  {'':<22}{'median ms':>11}{'p90 ms':>10}"
          + "".join(f"{k:>{w}}" for k, w in zip(ratio_keys, widths, strict=True)))
    for r in rows:
        print(f"  {r['name']:<22}{r['median_ms']:>11.1f}{r['p90_ms']:>10.1f}"
              + "".join(f"{r[k]:>{w - 1}.3f}x" if k in r else " " * w
                        for k, w in zip(ratio_keys, widths, strict=True)))


def print_node(title: str, node: dict) -> None:
    """The node part's figures (`zoedepth_ros.bench.node.bench_node`) under `title`."""
    print(title)
    for key in ("depth", "depth+cloud"):
        r = node[key]
        print(f"  {key:<12} p50 {r.get('p50_ms', float('nan')):7.1f} ms  p95 {r.get('p95_ms', float('nan')):7.1f}"
              f"  p99 {r.get('p99_ms', float('nan')):7.1f}"
              f"  overhead p50 {r.get('overhead_p50_ms', float('nan')):6.1f} ms"
              f"  ({r['frames']} frames, {r['lost']} lost)")
        if "transport_p50_ms" in r:
            print(f"  {'':<12} in the node: forward {r['forward_p50_ms']:.1f} ms, pre + forward + post "
                  f"{r['node_inference_p50_ms']:.1f} ms (p50); "
                  f"latency minus the latter {r['transport_p50_ms']:.1f} ms "
                  "(decode, outputs, DDS both ways)")
    compared = node.get("compressedDepth")
    if compared:
        for key, label in (("without", "depth, compressedDepth not subscribed"),
                           ("with", "depth, compressedDepth subscribed")):
            r = compared[key]
            print(f"  {label}: p50 {r.get('p50_ms', float('nan')):.1f} ms, p95 {r.get('p95_ms', float('nan')):.1f}"
                  f", overhead p50 {r.get('overhead_p50_ms', float('nan')):.1f} ms ({r['frames']} frames, "
                  f"{r['lost']} lost)")
        paired = compared.get("paired_difference_ms", float("nan"))
        print(f"  subscribed minus not, depth p50: {compared.get('difference_p50_ms', float('nan')):+.1f} ms, median "
              f"of {compared.get('rounds', 0)} rounds' differences {paired:+.1f} ms; "
              f"compressedDepth received for {compared['compressed_received']} of {compared['compressed_expected']} "
              f"frames, latency p50 {compared.get('compressed_p50_ms', float('nan')):.1f} ms")
    o = node["open_loop"]
    print(f"  open loop: sent {o['sent_hz']:.0f} Hz, output {o['output_hz']:.1f} Hz,"
          f" age p50 {o['age_p50_ms']:.1f} ms, p99 {o['age_p99_ms']:.1f} ms")


def write_json(path: Path, results: dict) -> None:
    """The results as indented JSON at `path` (its folder made), said on stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"\nresults written to {path}")
