"""The depth node with engine onnxruntime and openvino publishes what it publishes with torch (real
rclpy and Fast DDS, tiny NK model); a bad ONNX file leaves it unconfigured, saying why."""

from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from export_helpers import unoptimized_exports
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ros_helpers import image_array, send_frame, stamp_key, wait_until

W, H = 40, 30
TOPICS = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2,
          "depth/uncertainty": Image}


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint("NK", (64, 64))


@pytest.fixture(scope="module", autouse=True)
def engine_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("engines")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOEDEPTH_ROS_ENGINES", str(path))
        yield path


@pytest.fixture
def harness_options():
    return {"size": (W, H), "publish_uncertainty": True, "min_depth": 0.001, "max_depth": 1000.0}


def _outputs(ros, engine: str, stamp: tuple[int, int]) -> dict:
    """One frame through a node running `engine`; the node is destroyed afterwards."""
    node = ros.depth_node(engine=engine)
    collector = ros.collector({**TOPICS, "/diagnostics": DiagnosticArray})
    try:
        with ros.spin(), ros.camera() as camera:
            assert node.autostart()
            # The first frame exports the checkpoint into the export cache (seconds for the tiny model).
            outputs = send_frame(camera, collector, stamp, TOPICS, timeout=30.0, attempts=4, seed=7)
            # What ran it, as the node reports it.
            assert wait_until(lambda: ros.latest_diagnostics(collector).get("engine") == engine, timeout=10.0)
            return outputs
    finally:
        for created in (collector, node):
            ros.nodes.remove(created)
            created.destroy_node()


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.nanmax(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-6)))


@pytest.mark.slow
def test_every_engine_publishes_the_same_depth_cloud_and_uncertainty(ros, engine_cache):
    results = {engine: _outputs(ros, engine, (5000 + i, 0))
               for i, engine in enumerate(["torch", "onnxruntime", "openvino"])}
    expected = results.pop("torch")
    depth = image_array(expected["depth/image"])
    assert np.isfinite(depth).all() and depth.std() > 0  # a real map to compare
    for engine, got in results.items():
        for topic in ("depth/image", "depth/uncertainty"):
            g, e = image_array(got[topic]), image_array(expected[topic])
            np.testing.assert_array_equal(np.isnan(g), np.isnan(e))
            assert _relative(g, e) < 1e-4, (engine, topic, _relative(g, e))
        assert list(got["depth/camera_info"].p) == list(expected["depth/camera_info"].p)
        g_cloud = np.frombuffer(got["depth/points"].data, "<f4")
        e_cloud = np.frombuffer(expected["depth/points"].data, "<f4")
        assert g_cloud.shape == e_cloud.shape and _relative(g_cloud, e_cloud) < 1e-4, engine
        assert stamp_key(got["depth/image"].header) == stamp_key(got["depth/points"].header)
    # The ONNX engines exported the checkpoint once, into the cache, and shared the file.
    assert len(list(engine_cache.glob("*.onnx"))) == 1


@pytest.fixture(scope="module")
def tiny_n_export(tmp_path_factory, tiny_model):
    """A tiny N exported at 64x64, for the tests to damage copies of (an export takes seconds),
    without the ONNX optimizer pass (half of that): the files are refused before any graph runs."""
    from zoedepth_ros.model.export import export_onnx

    path = tmp_path_factory.mktemp("tiny_n_export") / "model.onnx"
    with unoptimized_exports():
        export_onnx(tiny_model("N", (64, 64)), path, size=(64, 64))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", ["truncated", "no metadata"])
def test_a_bad_onnx_file_leaves_the_node_unconfigured_and_diagnostics_say_why(ros, case, tmp_path, tiny_n_export):
    import onnx

    path = tmp_path / "model.onnx"
    if case == "truncated":
        path.write_bytes(tiny_n_export.read_bytes()[:50_000])
    else:
        proto = onnx.load(str(tiny_n_export))
        del proto.metadata_props[:]
        onnx.save(proto, str(path))
    node = ros.depth_node(model=str(path), engine="onnxruntime")
    collector = ros.collector({"/diagnostics": DiagnosticArray})
    with ros.spin():
        assert not node.autostart()
        assert wait_until(lambda: any(s.level == s.ERROR and str(path) in s.message
                                      for s in ros.diagnostics(collector)), timeout=10.0)


@pytest.mark.slow
def test_openvino_bf16_without_native_bf16_leaves_the_node_unconfigured_and_auto_runs_fp32(ros, monkeypatch, capfd):
    """The CPU capability check forced off (ZOEDEPTH_CPU_FLAGS: AVX-512 without BF16 or AMX)."""
    monkeypatch.setenv("ZOEDEPTH_CPU_FLAGS", "avx2 fma avx512f")
    collector = ros.collector({"/diagnostics": DiagnosticArray})
    refused = ros.depth_node(engine="openvino", precision="bf16")
    with ros.spin():
        assert not refused.autostart()
        assert wait_until(lambda: any(s.level == s.ERROR and "neither avx512_bf16 nor amx_bf16" in s.message
                                      for s in ros.diagnostics(collector)), timeout=10.0)
    assert "configure failed, node stays unconfigured" in capfd.readouterr().err
    ros.nodes.remove(refused)
    refused.destroy_node()
    node = ros.depth_node(engine="openvino", precision="auto")
    with ros.spin():
        assert node.autostart()
        assert wait_until(lambda: ros.latest_diagnostics(collector).get("precision") == "fp32", timeout=10.0)
    values = ros.latest_diagnostics(collector)
    assert values["precision choice"].startswith("auto: no native bf16") and "avx512_bf16" in values["precision choice"]
    assert "precision auto: fp32 (auto: no native bf16" in capfd.readouterr().err
