"""Score a model through the live ROS node: the depth node and the replay node on one evaluation bag.

    ros2 launch zoedepth_ros evaluate.launch.py bag:=/data/nyu_test out:=eval/nyu_node \
        model:=ZoeD_M12_NK device:=cuda

The depth node gets the processing of `zoedepth-ros evaluate --model` (mode eval, flip_tta), so
both give the same summary; min_depth 0 and max_depth 1000 (its upper bound) so that it
invalidates no prediction: the scorer clips predictions to the protocol range as the official
evaluation does, but counts a NaN as the protocol minimum. Its image input is made reliable:
across processes, large best-effort frames get lost. The launch ends when the replay has
written its reports into `out` (see docs/evaluation.md).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from zoedepth_ros.eval.recipe import NODE_PARAMETERS

PACKAGE = "zoedepth_ros"


def _nodes(context):
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    namespace = "/" + value("namespace").strip("/")
    depth = Node(
        package=PACKAGE,
        executable="depth_node",
        name="zoedepth",
        namespace=namespace,
        output="screen",
        parameters=[{
            "model": value("model"),
            "device": value("device"),
            "precision": value("precision"),
            **NODE_PARAMETERS,  # evaluate's processing: mode eval, flip average, min_depth 0
            "max_depth": float(value("max_depth")),
            "publish_points": False,
            "publish_colormap": False,
            "input_reliability": "reliable",
            "temporal_filter": value("temporal_filter"),
        }],
    )
    protocol = value("protocol")
    replay = Node(
        package=PACKAGE,
        executable="replay_node",
        name="zoedepth_replay",
        namespace=namespace,
        output="screen",
        # launch prints output by lines: a progress bar would only show at the end
        arguments=[value("bag"), "--out", value("out"), "--rate-mode", value("rate_mode"), "--no-progress",
                   *(["--protocol", protocol] if protocol else [])],
    )
    done = RegisterEventHandler(OnProcessExit(
        target_action=replay, on_exit=[EmitEvent(event=Shutdown(reason="replay finished"))]))
    return [depth, replay, done]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("bag", description="Evaluation bag (zoedepth-ros synth / convert)"),
        DeclareLaunchArgument("out", description="Directory for summary.json, per_frame.csv, report.md and plots"),
        DeclareLaunchArgument("model", default_value="ZoeD_M12_NK", description="Preset name or checkpoint path"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("precision", default_value="fp32", description="fp32, bf16 or fp16"),
        DeclareLaunchArgument("protocol", default_value="",
                              description="Scoring protocol; empty: the one the bag records"),
        DeclareLaunchArgument("max_depth", default_value="1000.0",
                              description="The depth node's max_depth: above every prediction, so none is "
                                          "published as NaN (scored as the protocol minimum)"),
        DeclareLaunchArgument("rate_mode", default_value="lockstep",
                              description="lockstep (each frame once the previous depth is back) or recorded "
                                          "(the bag's rate: frames the node cannot keep up with are lost)"),
        DeclareLaunchArgument("temporal_filter", default_value="none",
                              description="The depth node's temporal_filter: none (evaluate's default) or the "
                                          "method given to `zoedepth-ros evaluate --temporal-filter`"),
        DeclareLaunchArgument("namespace", default_value="zoedepth_eval",
                              description="Namespace of both nodes and their topics"),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
