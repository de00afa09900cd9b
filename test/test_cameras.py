"""Camera names (the `cameras` parameter) without ROS, what the launch file makes of them, and the
example parameters file config/cameras.yaml as rcl parses it and the real node applies it.

The launch file's own logic runs here against stand-ins for `launch` and `launch_ros` (ROS apt
packages, not installable here): the arguments it declares, the remappings and parameters it gives
the node, the error it raises for a bad list.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy

from zoedepth_ros.cameras import (
    camera_names_problem,
    camera_remappings,
    node_name_matches,
    params_file_cameras,
    parse_camera_list,
    topic_prefix,
)

REPO = Path(__file__).resolve().parents[1]
CAMERAS_YAML = REPO / "config" / "cameras.yaml"
EXAMPLE_CAMERAS = ["front", "left", "right"]


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("names", [[], ["front"], ["front", "left"], ["cam0", "cam_1"], ["rear/left", "rear/right"],
                                   ["A", "b2"]])
def test_good_camera_names(names):
    assert camera_names_problem(names) is None


@pytest.mark.parametrize("name", ["", "0cam", "_front", "fr__ont", "front/", "/front", "rear//left",
                                  "front-left", "front left", "front.left", "~front", "rear/0"])
def test_bad_camera_names_are_named(name):
    problem = camera_names_problem(["ok", name])
    assert problem is not None and repr(name) in problem


def test_repeated_camera_names_are_named_once():
    problem = camera_names_problem(["front", "left", "front", "left", "right", "front"])
    assert problem == "camera names must differ: front, left given more than once"
    assert camera_names_problem(("front", "left")) is None  # a tuple, as Settings holds it


def test_topic_prefix():
    assert topic_prefix("") == ""
    assert topic_prefix("front") == "front/"
    assert topic_prefix("rear/left") == "rear/left/"


# --------------------------------------------------------------------------- cameras:= argument


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("   ", []),
    ("[]", []),
    ("[front, left]", ["front", "left"]),
    ("[front,left]", ["front", "left"]),
    ("front,left", ["front", "left"]),
    ("front left", ["front", "left"]),
    (" front ,  left ,right ", ["front", "left", "right"]),
    ("['front', \"left\"]", ["front", "left"]),
    ("[rear/left]", ["rear/left"]),
    ("front", ["front"]),
])
def test_parse_camera_list(text, expected):
    assert parse_camera_list(text) == expected


@pytest.mark.parametrize("text, says", [
    ("[front, left", "unbalanced brackets"),
    ("front, left]", "unbalanced brackets"),
    ("[front, [left]]", "'[left'"),
    ("front, 2nd", "'2nd'"),
    ("front; left", "'front;'"),
    ("front, front", "given more than once"),
    ("[front-left]", "'front-left'"),
])
def test_parse_camera_list_rejects_with_the_reason(text, says):
    with pytest.raises(ValueError, match="^cameras: ") as error:
        parse_camera_list(text)
    assert says in str(error.value)


# --------------------------------------------------------------------------- launch remappings


def test_camera_remappings_point_each_camera_at_its_driver():
    assert camera_remappings(["front", "left"]) == [
        ("front/image", "/front/image_raw"), ("front/camera_info", "/front/camera_info"),
        ("left/image", "/left/image_raw"), ("left/camera_info", "/left/camera_info"),
    ]
    assert camera_remappings(["rear/left"], "color/image_raw") == [
        ("rear/left/image", "/rear/left/color/image_raw"), ("rear/left/camera_info", "/rear/left/camera_info"),
    ]
    assert camera_remappings(["front"], " /image_rect/ ")[0] == ("front/image", "/front/image_rect")
    assert camera_remappings([]) == []


@pytest.mark.parametrize("names, camera_image, says", [
    (["front", "front"], "image_raw", "given more than once"),
    (["front/"], "image_raw", "'front/'"),
    (["front"], "", "camera_image"),
    (["front"], "image raw", "camera_image"),
    (["front"], "2image", "camera_image"),
    (["front"], "image__raw", "camera_image"),
    (["front"], "color//image_raw", "camera_image"),
])
def test_camera_remappings_reject_bad_input(names, camera_image, says):
    with pytest.raises(ValueError, match=says):
        camera_remappings(names, camera_image)


@pytest.mark.parametrize("section, fqn, matches", [
    ("/**", "/zoedepth", True),
    ("/**", "/robot/zoedepth", True),
    ("zoedepth", "/zoedepth", True),
    ("/zoedepth", "/zoedepth", True),
    ("/zoedepth", "/robot/zoedepth", False),
    ("/robot/zoedepth", "/robot/zoedepth", True),
    ("robot/zoedepth", "/robot/zoedepth", True),
    ("/**/zoedepth", "/a/b/zoedepth", True),
    ("/**/zoedepth", "/zoedepth", True),
    ("/robot/*", "/robot/zoedepth", True),
    ("/robot/*", "/robot/sub/zoedepth", False),
    ("/other", "/zoedepth", False),
    ("/zoedepth2", "/zoedepth", False),
])
def test_node_name_matches(section, fqn, matches):
    assert node_name_matches(section, fqn) is matches


def test_params_file_cameras(tmp_path):
    assert params_file_cameras(str(CAMERAS_YAML)) == EXAMPLE_CAMERAS
    assert params_file_cameras(str(CAMERAS_YAML), "/robot/zoedepth") == EXAMPLE_CAMERAS
    assert params_file_cameras(str(REPO / "config" / "zoedepth.yaml")) == []
    assert params_file_cameras(str(tmp_path / "missing.yaml")) == []
    layered = tmp_path / "layered.yaml"
    layered.write_text("/**:\n  ros__parameters:\n    cameras: [a, b]\n"
                       "/robot/zoedepth:\n  ros__parameters:\n    cameras: [c]\n"
                       "/other:\n  ros__parameters:\n    cameras: [d]\n")
    assert params_file_cameras(str(layered), "/robot/zoedepth") == ["c"]
    assert params_file_cameras(str(layered), "/zoedepth") == ["a", "b"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    cameras: [front, front]\n")
    with pytest.raises(ValueError, match="given more than once"):
        params_file_cameras(str(bad))


# --------------------------------------------------------------------------- the launch file


class _Recorded:
    """A stand-in launch entity: its arguments, kept."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context) -> str:
        return context[self.args[0]]


def _load_launch_file(monkeypatch):
    """The launch file's module, imported against stand-ins for launch and launch_ros."""
    fakes = {
        "launch": {"LaunchDescription": _Recorded},
        "launch.actions": {"DeclareLaunchArgument": _Recorded, "OpaqueFunction": _Recorded},
        "launch.conditions": {"IfCondition": _Recorded},
        "launch.substitutions": {"EnvironmentVariable": _Recorded, "LaunchConfiguration": _LaunchConfiguration,
                                 "PathJoinSubstitution": _Recorded},
        "launch_ros": {},
        "launch_ros.actions": {"Node": _Recorded},
        "launch_ros.substitutions": {"FindPackageShare": _Recorded},
    }
    for name, attributes in fakes.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    path = REPO / "launch" / "zoedepth.launch.py"
    spec = importlib.util.spec_from_file_location("zoedepth_launch_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def launch_file(monkeypatch):
    module = _load_launch_file(monkeypatch)
    description = module.generate_launch_description()
    entities = description.args[0]
    defaults = {e.args[0]: e.kwargs.get("default_value") for e in entities if isinstance(e, _Recorded)
                and e.kwargs.get("description") is not None}
    node_function = next(e.kwargs["function"] for e in entities if "function" in e.kwargs)

    def node(**arguments) -> dict:
        """The depth node's Node(...) keywords for these launch arguments (the rest at their defaults)."""
        context = {**{k: v for k, v in defaults.items() if isinstance(v, str)},
                   "params_file": str(REPO / "config" / "zoedepth.yaml"), "dds_profile": "none", **arguments}
        (action,) = node_function(context)
        return action.kwargs

    node.defaults = defaults
    return node


def test_launch_file_declares_the_camera_arguments(launch_file):
    assert launch_file.defaults["cameras"] == ""
    assert launch_file.defaults["camera_image"] == "image_raw"
    assert {"camera", "image", "camera_info"} <= set(launch_file.defaults)


def test_launch_file_without_cameras_serves_one_camera_as_before(launch_file):
    node = launch_file()
    assert node["remappings"] == [("image", "/camera/image_raw"), ("camera_info", "/camera/camera_info")]
    assert "cameras" not in node["parameters"][1]
    node = launch_file(camera="/cam/", image="/cam/image_rect", camera_info="/cam/info", camera_image="x")
    assert node["remappings"] == [("image", "/cam/image_rect"), ("camera_info", "/cam/info")]


def test_launch_file_with_cameras_remaps_each_camera(launch_file):
    node = launch_file(cameras="[front, left]", camera_image="image_rect")
    assert node["remappings"] == camera_remappings(["front", "left"], "image_rect")
    assert node["parameters"][1]["cameras"] == ["front", "left"]
    assert launch_file(cameras="front left")["remappings"][0] == ("front/image", "/front/image_raw")


def test_launch_file_takes_the_params_files_cameras(launch_file):
    node = launch_file(params_file=str(CAMERAS_YAML), namespace="robot")
    assert node["remappings"] == camera_remappings(EXAMPLE_CAMERAS)
    assert "cameras" not in node["parameters"][1]  # the file stays in charge
    node = launch_file(params_file=str(CAMERAS_YAML), cameras="[back]")
    assert node["parameters"][1]["cameras"] == ["back"]
    assert node["remappings"] == camera_remappings(["back"])


@pytest.mark.parametrize("arguments, says", [
    ({"cameras": "[front, front]"}, "given more than once"),
    ({"cameras": "[front"}, "unbalanced brackets"),
    ({"cameras": "front", "camera_image": "image raw"}, "camera_image"),
])
def test_launch_file_names_a_bad_camera_argument(launch_file, arguments, says):
    with pytest.raises(RuntimeError, match=f"zoedepth.launch.py: .*{says}"):
        launch_file(**arguments)


# --------------------------------------------------------------------------- config/cameras.yaml through rcl


def _uncommented_example(tmp_path) -> Path:
    """config/cameras.yaml with its commented qos_overrides example switched on."""
    lines = CAMERAS_YAML.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# qos_overrides:")
    for i in range(start, len(lines)):
        assert lines[i].startswith("    # "), lines[i]
        lines[i] = "    " + lines[i][len("    # "):]
    path = tmp_path / "cameras_qos.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _context(*ros_args: str) -> rclpy.Context:
    context = rclpy.Context()
    rclpy.init(context=context, args=["test_cameras", "--ros-args", *ros_args])
    return context


def test_cameras_yaml_parses_through_rcl():
    context = _context("--params-file", str(CAMERAS_YAML))
    try:
        node = rclpy.create_node("zoedepth", context=context)
        assert node.declare_parameter("cameras", Parameter.Type.STRING_ARRAY).value == EXAMPLE_CAMERAS
        assert not [name for name in node._parameter_overrides if name.startswith("qos_overrides.")]
        node.destroy_node()
    finally:
        context.try_shutdown()


def test_depth_node_applies_cameras_yaml_and_its_qos_example(tmp_path, tiny_checkpoint, one_torch_thread):
    """The node started as the launch file starts it with config/cameras.yaml (its QoS example on):
    one camera per name, each on its driver's topics, the QoS overrides on the cameras they name."""
    from zoedepth_ros.ros.depth_node import DepthNode

    remaps = [arg for source, target in camera_remappings(EXAMPLE_CAMERAS) for arg in ("-r", f"{source}:={target}")]
    context = _context("--params-file", str(REPO / "config" / "zoedepth.yaml"),
                       "--params-file", str(_uncommented_example(tmp_path)),
                       "-r", f"__node:=zd_{os.getpid()}_cameras", *remaps,
                       "-p", f"model:={tiny_checkpoint('N', (32, 32))}", "-p", "device:=cpu")
    node = DepthNode(context=context)
    try:
        assert node._settings.cameras == tuple(EXAMPLE_CAMERAS)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        front, left, right = (node.camera(name) for name in EXAMPLE_CAMERAS)
        assert [c.image_topic for c in (front, left, right)] == ["/front/image_raw", "/left/image_raw",
                                                                 "/right/image_raw"]
        assert (front.image_input.reliability, front.image_input.why) == ("best_effort",
                                                                          "set by its qos_overrides parameter")
        assert (left.image_input.reliability, left.image_input.why) == ("reliable", "auto, no publisher yet")
        info_qos = left._camera_info_sub.qos_profile
        assert (info_qos.reliability, info_qos.depth) == (ReliabilityPolicy.RELIABLE, 5)
        assert front._camera_info_sub.topic_name == "/front/camera_info"
        assert front._camera_info_sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        points = {name: node.camera(name).outputs.publishers["depth/points"] for name in EXAMPLE_CAMERAS}
        assert points["right"].topic_name == "/right/depth/points"
        assert points["right"].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert points["front"].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    finally:
        node.trigger_shutdown()
        node.destroy_node()
        context.try_shutdown()
