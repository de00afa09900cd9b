"""The demo's pipeline end to end: node and replay over DDS, report, cloud, the README's figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from zoedepth_ros import demo


def readme_demo_figures() -> dict[str, tuple[str, str]]:
    """(abs_rel, a1) per kind as the README states them "through the live node on the demo's own bags"."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    stated = re.search(r"through the live node on the demo's own bags,\s+(\d+\.\d+) / (\d+\.\d+) and\s+"
                       r"(\d+\.\d+) / (\d+\.\d+)", readme)
    assert stated, "the README no longer states the demo's figures through the node"
    return {"indoor": stated.group(1, 2), "outdoor": stated.group(3, 4)}


@pytest.mark.slow
def test_demo_pipeline_scores_what_the_readme_says(tmp_path, monkeypatch):
    """`make demo` as it runs (its bags, the shipped model through the live node): every output, and
    the quality the README advertises, to its three decimals."""
    monkeypatch.setenv("ZOEDEPTH_ROS_WEIGHTS", str(tmp_path / "empty_cache"))  # the shipped model, whatever is cached
    model, about = demo.choose_model()
    assert model == str(demo.DEMO_MODEL) and "demo model" in about
    from zoedepth_ros.model import load_model

    weights = sum(v.numel() for v in load_model(model).state_dict().values())
    assert f"a {weights / 1e6:.1f} M-weight ZoeDepth NK" in about
    results = demo.run_demo(tmp_path / "report")

    for kind, figures in readme_demo_figures().items():
        summary = json.loads((tmp_path / "report" / kind / "summary.json").read_text())
        assert summary["frames"] == demo.DEFAULT_FRAMES and summary["complete"]
        assert (f"{summary['abs_rel']:.3f}", f"{summary['a1']:.3f}") == figures, kind
        assert (tmp_path / "report" / kind / "report.md").is_file()
        ply = (tmp_path / "report" / kind / "cloud.ply").read_bytes()
        header, body = ply.split(b"end_header\n", 1)
        count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
        assert count > 0 and len(body) == count * 15  # xyz float32 + rgb uint8
        xyz = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])["xyz"]
        assert np.isfinite(xyz).all() and (xyz[:, 2] > 0).all()
    index = (tmp_path / "report" / "README.md").read_text()
    assert "demo model" in index and "indoor/cloud.ply" in index
    assert results["latency"]["frames out"] == str(2 * demo.DEFAULT_FRAMES)


def test_ply_and_cloud_round_trip(tmp_path):
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from zoedepth_ros.camera_info import pinhole_from_hfov
    from zoedepth_ros.cloud import CloudBuilder, to_pointcloud2

    depth = np.array([[1.0, np.nan], [2.0, 3.0]], dtype=np.float32)
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    cloud = CloudBuilder().build(depth, pinhole_from_hfov(2, 2, 90.0), 1, rgb)
    msg = to_pointcloud2(cloud, Header(frame_id="cam"))
    assert isinstance(msg, PointCloud2)
    xyz, colours = demo.cloud_arrays(msg)
    assert demo.write_ply(tmp_path / "c.ply", xyz, colours) == 3
    body = (tmp_path / "c.ply").read_bytes().split(b"end_header\n", 1)[1]
    points = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    np.testing.assert_allclose(points["xyz"][:, 2], [1.0, 2.0, 3.0])
    assert points["rgb"].tolist() == [[255, 0, 0], [0, 0, 255], [10, 20, 30]]


def test_demo_model_recipe_is_consistent():
    """`make demo-model`'s steps (scripts/build_demo_model.py) parse as zoedepth-ros commands, each
    training stage starts from what an earlier one wrote, the shipped file is made from what
    training kept, and the held-out scores are of the shipped file."""
    import importlib.util

    from zoedepth_ros.cli import build_parser
    from zoedepth_ros.train.config import load_config

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("build_demo_model", repo / "scripts" / "build_demo_model.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    assert recipe.REPO == repo and recipe.ASSET == str(demo.DEMO_MODEL.relative_to(repo))
    parser = build_parser(["synth", "train", "evaluate", "weights"])
    written, evaluated = set(), []
    for step in recipe.STEPS:
        args = parser.parse_args(step)
        if args.command == "train":
            cfg = load_config(repo / args.config)
            if cfg["model"]["init"] is not None:
                assert cfg["model"]["init"] in written, f"{step} starts from a file no earlier step writes"
            written.add(f"{cfg['out_dir']}/best.safetensors")
        elif args.command == "weights":
            assert args.source in written, f"{step}: nothing earlier writes {args.source}"
            written.add(str(args.output))
        elif args.command == "evaluate":
            evaluated.append(args.model)
    assert recipe.ASSET in written
    assert evaluated and set(evaluated) == {recipe.ASSET}
