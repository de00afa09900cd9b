"""The /diagnostics keys have one owner, zoedepth_ros/diagnostics_keys.py: the node writes them
through it, replay, the benchmark client and the demo read them through it, so a key renamed
there alone keeps them working; no other module of the package spells a key."""

from __future__ import annotations

import argparse
import ast
import collections
import re
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray

from zoedepth_ros import demo, diagnostics_keys
from zoedepth_ros.ros.diagnostics import BatchStats, Stats, depth_status, model_values

ROOT = Path(__file__).resolve().parents[1]
OWNER = ROOT / "zoedepth_ros" / "diagnostics_keys.py"

# What the node publishes today: a rename is a protocol change for every reader outside this
# repository (dashboards, scripts), so it shows here.
CAMERA_KEYS = [
    "state", "input rate (Hz)", "output rate (Hz)", "frames in", "frames out", "frames dropped as stale",
    "frames missed (publisher sequence gaps)", "frames rejected", "camera_info in",
    "inference latency mean (ms)", "inference latency p50 (ms)", "inference latency p95 (ms)",
    "forward latency mean (ms)", "forward latency p50 (ms)", "forward latency p95 (ms)",
    "end-to-end latency mean (ms)", "end-to-end latency p50 (ms)", "end-to-end latency p95 (ms)",
    "rejected: out_of_order_stamp", "router: indoor", "model", "engine", "device", "precision", "precision choice",
]
SHARED_MODEL_KEYS = [
    "state", "cameras", "output rate (Hz)", "batches", "frames out", "frames per batch mean", "largest batch",
    "inference latency mean (ms)", "inference latency p50 (ms)", "inference latency p95 (ms)",
    "forward latency mean (ms)", "forward latency p50 (ms)", "forward latency p95 (ms)",
    "model", "engine", "device", "precision", "precision choice",
]


@pytest.fixture(params=["as published", "renamed"])
def keys_renamed(request, monkeypatch) -> bool:
    """The keys as published, or every one of them renamed in diagnostics_keys alone."""
    renamed = request.param == "renamed"
    if renamed:
        for name, value in list(vars(diagnostics_keys).items()):
            if name.isupper() and isinstance(value, str):
                monkeypatch.setattr(diagnostics_keys, name, f"renamed {value}")
    return renamed


def loaded() -> dict[str, str]:
    return model_values("demo_nk.safetensors", "cpu", "fp32", engine="torch", precision_choice="as asked")


def camera_stats(rejected: int = 1) -> Stats:
    """A camera's counters after 3 frames in: one out (30 ms inference, 20 ms forward, head
    indoor), `rejected` rejected as out of order."""
    stats = Stats()
    for _ in range(3):
        stats.frame_in()
    stats.output(0.030, 0.020, 0.050, "indoor")
    for _ in range(rejected):
        stats.reject("out_of_order_stamp")
    return stats


def active_status(name: str, stats: Stats):
    """The node's status of a camera while active, built as the node builds it."""
    values, _, _ = stats.snapshot()
    return depth_status(name, "active", values, loaded(), None, [])


def test_the_node_writes_every_key_through_the_owner(keys_renamed):
    camera = diagnostics_keys.status_values(active_status("/zoedepth: depth estimation", camera_stats()))
    batches = BatchStats()
    batches.batch(2, 0.040, 0.030)
    shared_model = diagnostics_keys.status_values(depth_status(
        "/zoedepth: depth estimation", "active", {diagnostics_keys.CAMERAS: "a, b", **batches.snapshot()}, loaded(),
        None, []))
    if keys_renamed:
        assert all(key.startswith("renamed ") for key in [*camera, *shared_model]), [*camera, *shared_model]
    else:
        assert list(camera) == CAMERA_KEYS and list(shared_model) == SHARED_MODEL_KEYS
    reported = diagnostics_keys.parse_status(camera)
    assert (reported.state, reported.frames_in, reported.frames_out, reported.frames_rejected) == ("active", 3, 1, 1)
    assert reported.rejected == {"out_of_order_stamp": 1} and reported.router == {"indoor": 1}
    assert reported.inference == diagnostics_keys.Latency(30.0, 30.0, 30.0)
    assert reported.forward.p50_ms == 20.0 and (reported.device, reported.precision) == ("cpu", "fp32")
    assert reported.batches is None
    assert diagnostics_keys.parse_status(shared_model).batches == 1


def test_replay_gives_up_what_the_node_reports_rejected(context, namespace, keys_renamed):
    from zoedepth_ros.ros.replay import ReplayNode

    rejections = []
    node = ReplayNode({"image": "image", "camera_info": "camera_info", "depth": "depth/image"},
                      lambda stamp_ns, depth: None, rejections.append, namespace=namespace, context=context)
    try:
        node.depth_node_status = f"{namespace}/zoedepth: "
        name = f"{namespace}/zoedepth: depth estimation"
        node._on_diagnostics(DiagnosticArray(status=[depth_status(name, "inactive", {}, loaded(), None, None)]))
        assert node.node_rejected is None  # not active: no counters yet
        stats = camera_stats(rejected=1)
        node._on_diagnostics(DiagnosticArray(status=[active_status(name, stats)]))
        assert node.node_rejected == {"out_of_order_stamp": 1} and rejections == []
        stats.reject("out_of_order_stamp")
        stats.reject("out_of_order_stamp")
        node._on_diagnostics(DiagnosticArray(status=[active_status(name, stats)]))
        assert rejections == [collections.Counter({"out_of_order_stamp": 2})]
    finally:
        node.destroy_node()


def test_the_benchmark_client_takes_the_nodes_forward_and_inference_times(context, namespace, keys_renamed):
    from rclpy.node import Node

    from zoedepth_ros.ros.bench_client import _NodeDriver, with_node_latency

    client = Node("zoedepth_bench_camera", namespace=namespace, context=context)
    try:
        driver = _NodeDriver(client, None, None, (4, 6))
        driver._on_diagnostics(DiagnosticArray(status=[active_status(f"{namespace}/zoedepth: depth estimation",
                                                                     camera_stats())]))
        result = with_node_latency({"p50_ms": 100.0}, driver.node_status, forward={"median_ms": 5.0})
    finally:
        client.destroy_node()
    assert result == pytest.approx({"p50_ms": 100.0, "forward_p50_ms": 20.0, "overhead_p50_ms": 80.0,
                                    "node_inference_p50_ms": 30.0, "transport_p50_ms": 70.0})


def test_the_demo_reports_the_nodes_figures(tmp_path, monkeypatch, capsys, keys_renamed):
    values = diagnostics_keys.status_values(active_status("/zoedepth_demo/zoedepth: depth estimation", camera_stats()))
    figures = demo.node_figures(values)
    # frames in, out, inference mean, p50, p95, router: indoor, device, precision
    assert list(figures.values()) == ["3", "1", "30.0", "30.0", "30.0", "1", "cpu", "fp32"], figures
    monkeypatch.setattr(demo, "run_demo", lambda out, frames: {"bags": {}, "latency": figures})
    demo.run(argparse.Namespace(out=tmp_path, frames=1))
    assert "node: inference 30.0 ms mean, p95 30.0 ms on cpu; router: indoor 1" in capsys.readouterr().out


# --- no key spelled outside the owner ---------------------------------------------------------------


def _spelled_keys(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every string literal of `source` (f-string pieces too) that spells a
    /diagnostics key: starts with one (a key, a prefix such as "rejected: ", a latency window; a
    key that ends in a letter as a whole word) or ends like a latency key. One-word keys ("device",
    "state") are also parameter and field names elsewhere: only the rename tests above guard those."""
    keys = [value for name, value in vars(diagnostics_keys).items()
            if name.isupper() and isinstance(value, str) and name != "LATENCY_KEY" and not value.isidentifier()]
    spelling = re.compile("|".join(re.escape(key) + (r"(?!\w)" if key[-1].isalnum() else "") for key in keys))
    latency_tail = diagnostics_keys.LATENCY_KEY.rpartition("}")[2]
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and (spelling.match(node.value) or node.value.endswith(latency_tail))]


def test_no_module_but_the_owner_spells_a_key():
    # The scan sees what it is meant to: keys, prefixes and latency keys, whole or in f-strings.
    assert [line for line, _ in _spelled_keys(
        'values["frames rejected"]\n'
        'key.startswith("rejected: ")\n'
        'f"router: {domain}"\n'
        'f"{label} p{q} (ms)"\n'
        '"forward latency p50 (ms)" in values\n'
        'f"image rejected: {exc}"\n'
        '"camera_info intrinsics are invalid"\n'
        'params = {"device": "cpu"}\n')] == [1, 2, 3, 4, 5]
    spelled = [f"{path.relative_to(ROOT)}:{line}: {literal!r}"
               for path in sorted((ROOT / "zoedepth_ros").rglob("*.py")) if path != OWNER
               for line, literal in _spelled_keys(path.read_text(encoding="utf-8"))]
    assert not spelled, ("/diagnostics keys spelled outside zoedepth_ros/diagnostics_keys.py (use its names, "
                         "rejected_key, latency_mean_key, parse_status ...):\n" + "\n".join(spelled))
