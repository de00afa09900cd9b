"""`zoedepth-ros demo` (`make demo`): the whole system on a laptop CPU in a few minutes.

1. Model: the official ZoeD_M12_NK from the local weights cache when it is there, otherwise the
   small demo model shipped in zoedepth_ros/assets (a tiny ZoeDepth trained on synthetic scenes,
   docs/demo.md); the demo says which.
2. Data: small synthetic indoor and outdoor bags with exact metric ground truth (made once, reused).
3. The live depth node (its own process) and the replay node (its own process) over real DDS, the
   replay scoring the node's depth with the evaluator's protocol code.
4. A report folder: evaluation summaries and plots, frames side by side, a point cloud of one frame
   as a .ply file, and the node's latency figures from /diagnostics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from zoedepth_ros import diagnostics_keys
from zoedepth_ros.argtypes import positive_int
from zoedepth_ros.errors import ZoeDepthError

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_MODEL = ASSETS / "demo_nk.safetensors"
PRESET = "ZoeD_M12_NK"
NAMESPACE = "/zoedepth_demo"
# Held-out seeds: the demo model was trained on other seeds (config/train_demo.yaml). Each bag
# starts at its own time: the node refuses stamps that go back in time by less than a second.
SCENES = {
    "indoor": {"size": (96, 128), "seed": 2001, "start_ns": 1_800_000_000 * 10**9},
    "outdoor": {"size": (96, 320), "seed": 2002, "start_ns": 1_800_001_000 * 10**9},
}


class DemoError(ZoeDepthError):
    pass


def choose_model() -> tuple[str, str]:
    """(model source, sentence saying what it is)."""
    from zoedepth_ros.model.weights import WeightsError, resolve_preset

    try:
        path = resolve_preset(PRESET)
        return str(path), f"the official {PRESET} weights from the local cache ({path})"
    except WeightsError:
        pass
    if not DEMO_MODEL.is_file():
        raise DemoError(f"neither {PRESET} in the weights cache nor the demo model {DEMO_MODEL} is present")
    from safetensors import safe_open

    with safe_open(str(DEMO_MODEL), "np") as f:
        weights = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return str(DEMO_MODEL), (
        f"the small demo model ({DEMO_MODEL.name}: a {weights / 1e6:.1f} M-weight ZoeDepth NK trained on synthetic "
        f"scenes, not the official weights; its numbers say the pipeline works, not how ZoeDepth does on "
        f"real images, and its depth/uncertainty is no confidence (docs/demo.md); put {PRESET} in the "
        f"weights cache for that)")


# Frames per synthetic bag of `make demo`: the README's figures "through the live node" are on these.
DEFAULT_FRAMES = 12


def make_bags(root: Path, frames: int) -> dict[str, Path]:
    from zoedepth_ros.data.bag import read_metadata
    from zoedepth_ros.data.synth import write_synth_bag

    bags = {}
    for kind, spec in SCENES.items():
        path = root / f"{kind}_{frames}f_seed{spec['seed']}_t{spec['start_ns'] // 10**9}"
        if not (path.is_dir() and read_metadata(path).get("seed") == str(spec["seed"])):
            write_synth_bag(path, kind=kind, frames=frames, seed=spec["seed"], size=spec["size"], overwrite=True,
                            start_ns=spec["start_ns"])
        bags[kind] = path
    return bags


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray | None) -> int:
    """Binary little-endian PLY of the finite points (N x 3 float32, N x 3 uint8 colours)."""
    keep = np.isfinite(xyz).all(axis=1)
    xyz = xyz[keep].astype("<f4")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(xyz), dtype=fields)
    vertices["x"], vertices["y"], vertices["z"] = xyz.T
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(xyz)}",
              "property float x", "property float y", "property float z"]
    if rgb is not None:
        rgb = rgb[keep]
        vertices["red"], vertices["green"], vertices["blue"] = rgb.T
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    path.write_bytes(("\n".join(header + ["end_header"]) + "\n").encode() + vertices.tobytes())
    return len(xyz)


def cloud_arrays(msg) -> tuple[np.ndarray, np.ndarray | None]:
    """xyz (and rgb when present) of an organized PointCloud2 in the layout the node publishes."""
    names = {f.name: f.offset for f in msg.fields}
    raw = np.frombuffer(msg.data, dtype=np.uint8).reshape(-1, msg.point_step)
    xyz = np.ascontiguousarray(raw[:, names["x"]:names["x"] + 12]).view("<f4").reshape(-1, 3)
    if "rgb" not in names:
        return xyz, None
    bgr = raw[:, names["rgb"]:names["rgb"] + 3]
    return xyz, np.ascontiguousarray(bgr[:, ::-1])


def _replay(bag: Path, out: Path, log: Path) -> dict:
    cmd = [sys.executable, "-m", "zoedepth_ros.cli", "replay", str(bag), "--out", str(out), "--no-progress",
           "--ros-args", "-r", f"__ns:={NAMESPACE}"]
    with log.open("w") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    if result.returncode != 0 or not (out / "summary.json").is_file():
        raise DemoError(f"the replay of {bag.name} failed (exit {result.returncode}); see {log}")
    return json.loads((out / "summary.json").read_text())


def run_demo(out: Path, frames: int = DEFAULT_FRAMES) -> dict:
    """Runs the demo into `out`; returns {"model": ..., "bags": {kind: summary}, "latency": {...}}."""
    from zoedepth_ros.eval.recipe import NODE_PARAMETERS
    from zoedepth_ros.eval.report import atomic_write
    from zoedepth_ros.ros.processes import dds_profile, node_process, shipped_dds_profile

    out.mkdir(parents=True, exist_ok=True)
    model, about = choose_model()
    print(f"model: {about}", flush=True)
    bags = make_bags(out / "bags", frames)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # Scored as `evaluate` scores (each frame alone), as evaluate.launch.py sets the node up: the
    # demo's bags hold an unrelated scene per frame, nothing for a temporal filter to follow.
    params = {"model": model, "device": "auto", **NODE_PARAMETERS, "max_depth": 80.0, "points_color": True,
              "temporal_filter": "none"}
    # The replay node and this listener are children/participants of this process: all three
    # move the images through shared memory (config/fastdds_large_images.xml).
    with (dds_profile(os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or shipped_dds_profile()),
          (logs / "depth_node.log").open("w") as log, node_process(NAMESPACE, params, log)):
        results = _drive(model, about, bags, out, logs)
    atomic_write(out / "demo.json", json.dumps(results, indent=2))
    atomic_write(out / "README.md", _report_index(results))
    return results


def _drive(model: str, about: str, bags: dict[str, Path], out: Path, logs: Path) -> dict:
    from zoedepth_ros.ros.demo_listener import listening

    results = {"model": model, "model_description": about, "bags": {}, "clouds": {}}
    with listening(NAMESPACE) as listener:
        for kind, bag in bags.items():
            print(f"replaying {bag.name} through the live node ...", flush=True)
            with listener.lock:
                listener.clouds.clear()
            results["bags"][kind] = _replay(bag, out / kind, logs / f"replay_{kind}.log")
            with listener.lock:
                cloud = listener.clouds[-1] if listener.clouds else None
            if cloud is not None:
                ply = out / kind / "cloud.ply"
                points = write_ply(ply, *cloud_arrays(cloud))
                results["clouds"][kind] = {"path": str(ply), "points": points}
        time.sleep(1.5)  # one more /diagnostics period after the last frame
        with listener.lock:
            results["latency"] = node_figures(listener.diagnostics)
    return results


def node_figures(values: dict[str, str]) -> dict[str, str]:
    """The report's node figures out of the node's status values (in their order): frames in and
    out, the inference latency, the frames of each router head, device and precision. Not the
    end-to-end latency: it is measured against the input stamp, and replayed frames carry their
    recorded stamps."""
    keys = diagnostics_keys
    inference = keys.INFERENCE_LATENCY
    kept = {keys.FRAMES_IN, keys.FRAMES_OUT, keys.DEVICE, keys.PRECISION, keys.latency_mean_key(inference),
            *(keys.latency_percentile_key(inference, q) for q in keys.LATENCY_PERCENTILES),
            *map(keys.router_key, keys.parse_status(values).router)}
    return {key: value for key, value in values.items() if key in kept}


def _report_index(results: dict) -> str:
    lines = ["# zoedepth_ros demo report", "", f"Model: {results['model_description']}", "",
             "| scene | frames scored | a1 | abs_rel | rmse (m) | report | point cloud |",
             "|---|---|---|---|---|---|---|"]
    for kind, m in results["bags"].items():
        cloud = results["clouds"].get(kind)
        lines.append(f"| {kind} | {m['frames']} | {m['a1']:.3f} | {m['abs_rel']:.3f} | {m['rmse']:.3f} "
                     f"| [{kind}/report.md]({kind}/report.md) "
                     f"| {f'[{kind}/cloud.ply]({kind}/cloud.ply)' if cloud else 'none'} |")
    lines += ["", "Node figures from /diagnostics (inference = pre-processing, network and post-processing "
              "of one frame on this machine; router = frames per head):", ""]
    lines += [f"- {k}: {v}" for k, v in results.get("latency", {}).items()]
    return "\n".join(lines) + "\n"


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="run the end-to-end demo (node + replay over DDS + report)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_report"), help="report folder (default demo_report)")
    p.add_argument("--frames", type=positive_int, default=DEFAULT_FRAMES,
                   help=f"frames per synthetic bag (default {DEFAULT_FRAMES})")
    p.set_defaults(func=run)


def run(args) -> int:
    results = run_demo(args.out, args.frames)
    print(f"\nreport: {args.out.resolve()}/README.md")
    for kind, m in results["bags"].items():
        print(f"  {kind:<8} a1 {m['a1']:.3f}  abs_rel {m['abs_rel']:.3f}  rmse {m['rmse']:.3f} m"
              f"  ({m['frames']} frames)")
    latency = results.get("latency", {})
    if latency:
        inference = diagnostics_keys.INFERENCE_LATENCY
        routes = ", ".join(f"{domain} {n}" for domain, n in diagnostics_keys.parse_status(latency).router.items())
        print(f"  node: inference {latency.get(diagnostics_keys.latency_mean_key(inference), '?')} ms mean, "
              f"p95 {latency.get(diagnostics_keys.latency_percentile_key(inference, 95), '?')} ms "
              f"on {latency.get(diagnostics_keys.DEVICE, '?')}; router: {routes}")
    return 0
