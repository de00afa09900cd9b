"""Launch the ZoeDepth node on a camera (or several, one model), optionally with RViz.

    ros2 launch zoedepth_ros zoedepth.launch.py camera:=/camera
    ros2 launch zoedepth_ros zoedepth.launch.py image:=/cam/image_rect camera_info:=/cam/camera_info \
        model:=/path/to/model.safetensors device:=cuda precision:=fp16 rviz:=true rviz_frame:=cam_optical

The image subscription follows the camera's publisher (input_reliability auto: reliable for a
reliable publisher, best effort for a sensor-data one); `input_reliability:=reliable` or
`best_effort` fixes it. Outputs appear under the node's namespace (`namespace:=`): depth/image, depth/camera_info,
depth/points, depth/colormap. With input_transport "compressed" (params file), the node reads
`<image>/compressed`, following the `image` remapping as image_transport would.

Several cameras, one model (docs/node.md "Several cameras"):

    ros2 launch zoedepth_ros zoedepth.launch.py cameras:="[front, left]" camera_image:=image_rect

serves the drivers under /front and /left: camera C reads /C/<camera_image> (default image_raw;
/C/<camera_image>/compressed with input_transport compressed) and /C/camera_info, and publishes
C/depth/... under the node's namespace. `cameras:=` takes "[front, left]", "front,left" or
"front left"; empty (the default) leaves the list to the params file (config/cameras.yaml is an
example, and its cameras get the same remappings), and without one the node serves the single
camera of camera:=, image:=, camera_info:= as before. Other driver layouts: remap in a launch file
of your own with zoedepth_ros.cameras.camera_remappings, or `-r C/image:=...` (docs/node.md).

The node's Fast DDS participant uses config/fastdds_large_images.xml (whole messages through
shared memory on the host, UDP for other machines) unless FASTRTPS_DEFAULT_PROFILES_FILE is set
or `dds_profile:=` names another file; `dds_profile:=none` keeps Fast DDS defaults.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from zoedepth_ros.cameras import camera_remappings, params_file_cameras, parse_camera_list

PACKAGE = "zoedepth_ros"


def _depth_node(context):
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    camera = value("camera").rstrip("/")
    namespace = value("namespace").strip("/")
    try:
        # Given here, the list overrides the params file's; else the params file's gets the remappings.
        cameras = parse_camera_list(value("cameras"))
        given = bool(cameras)
        if not given:
            cameras = params_file_cameras(value("params_file"), f"/{namespace}/zoedepth" if namespace else "/zoedepth")
        remappings = camera_remappings(cameras, value("camera_image")) if cameras else [
            ("image", value("image") or f"{camera}/image_raw"),
            ("camera_info", value("camera_info") or f"{camera}/camera_info"),
        ]
    except ValueError as exc:
        raise RuntimeError(f"zoedepth.launch.py: {exc}") from None
    # model/engine/device/precision override the params file only when given, so the file stays in charge.
    overrides = {name: value(name) for name in ("model", "engine", "device", "precision", "input_reliability",
                                                "temporal_filter") if value(name)}
    overrides["use_sim_time"] = value("use_sim_time").lower() == "true"
    if given:
        overrides["cameras"] = cameras
    profile = value("dds_profile")
    # Fast DDS reads this when the node creates its participant; other RMWs ignore it.
    env = {} if profile in ("", "none") else {"FASTRTPS_DEFAULT_PROFILES_FILE": profile}
    return [
        Node(
            package=PACKAGE,
            executable="depth_node",
            name="zoedepth",
            namespace=value("namespace"),
            output="screen",
            parameters=[value("params_file"), overrides],
            remappings=remappings,
            ros_arguments=["--log-level", value("log_level")],
            additional_env=env,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("camera", default_value="/camera",
                              description="Camera namespace: image defaults to <camera>/image_raw and "
                                          "camera_info to <camera>/camera_info"),
        DeclareLaunchArgument("image", default_value="",
                              description="Image topic (prefer a rectified one, e.g. <camera>/image_rect); "
                                          "empty: <camera>/image_raw"),
        DeclareLaunchArgument("camera_info", default_value="",
                              description="CameraInfo topic; empty: <camera>/camera_info"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="Several cameras, one model: camera names, e.g. \"[front, left]\" "
                                          "(also front,left or \"front left\"); camera C reads "
                                          "/C/<camera_image> and /C/camera_info and publishes C/depth/...; "
                                          "empty: the params file's list, else the single camera above"),
        DeclareLaunchArgument("camera_image", default_value="image_raw",
                              description="With cameras: each camera's image topic under its driver's "
                                          "namespace /C/ (image_raw, image_rect, color/image_raw...)"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its outputs"),
        DeclareLaunchArgument("model", default_value="",
                              description="Preset name, checkpoint path or exported .onnx; empty: the params file's"),
        DeclareLaunchArgument("engine", default_value="",
                              description="torch, onnxruntime, openvino or tensorrt (docs/engines.md); "
                                          "empty: the params file's (torch)"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N; empty: the params file's"),
        DeclareLaunchArgument("precision", default_value="",
                              description="fp32, bf16 or fp16; empty: the params file's"),
        DeclareLaunchArgument("input_reliability", default_value="",
                              description="Image subscription reliability: auto (follow the camera's publisher), "
                                          "reliable or best_effort; empty: the params file's (auto)"),
        DeclareLaunchArgument("temporal_filter", default_value="",
                              description="none, scale, ema or scale+ema (docs/node.md); empty: the params file's"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "zoedepth.yaml"]),
                              description="Node parameters (YAML)"),
        # --show-args prints a substitution's repr, not its value: the description says what it is.
        DeclareLaunchArgument("dds_profile",
                              default_value=EnvironmentVariable(
                                  "FASTRTPS_DEFAULT_PROFILES_FILE",
                                  default_value=PathJoinSubstitution([share, "config", "fastdds_large_images.xml"])),
                              description="Fast DDS XML profile of the node; none: Fast DDS defaults. Default: "
                                          "$FASTRTPS_DEFAULT_PROFILES_FILE when set, else "
                                          "share/zoedepth_ros/config/fastdds_large_images.xml (whole images "
                                          "through shared memory on the host). It shapes what the node sends; "
                                          "export it in the camera driver too for large best-effort frames"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag playback)"),
        DeclareLaunchArgument("log_level", default_value="info", description="Node log level"),
        DeclareLaunchArgument("rviz", default_value="false", description="Open RViz with config/zoedepth.rviz"),
        DeclareLaunchArgument("rviz_frame", default_value="camera_optical_frame",
                              description="RViz fixed frame: the frame_id of the camera images"),
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "zoedepth.rviz"]),
                   "-f", LaunchConfiguration("rviz_frame")],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=_depth_node), rviz])
