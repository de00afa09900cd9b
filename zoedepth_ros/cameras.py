"""Camera names of a depth node serving several cameras (its `cameras` parameter), without ROS:
what a name may be, the topic prefix it gives, and what the launch file makes of them: its
`cameras:=` argument, the cameras a parameters file sets, the remappings to the camera drivers.

A camera `front` reads `front/image` and `front/camera_info` and writes `front/depth/...`, all
relative to the node's namespace; the single camera of a node without `cameras` has no prefix.
"""

from __future__ import annotations

import re

# Each name is one or more ROS name tokens: it becomes part of the camera's topic names.
CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


def camera_names_problem(names: list[str] | tuple[str, ...]) -> str | None:
    """Why `names` cannot be a node's cameras, or None."""
    for name in names:
        if not CAMERA_NAME.match(name) or "__" in name:
            return (f"camera name {name!r} is not a relative ROS name (letters, digits and single underscores, "
                    "starting with a letter; '/' between parts): it prefixes the camera's topics")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"camera names must differ: {', '.join(repeated)} given more than once"
    return None


def topic_prefix(name: str) -> str:
    """'' for a node's single camera (name ''), else 'name/'."""
    return f"{name}/" if name else ""


def parse_camera_list(text: str) -> list[str]:
    """The launch argument `cameras:=` as a list: "[front, left]", "front,left", "front left" or ""
    (no list: one camera). Raises ValueError naming the bad entry."""
    body = text.strip()
    if body.startswith("[") != body.endswith("]"):
        raise ValueError(f"cameras: unbalanced brackets in {text!r} (write e.g. [front, left])")
    body = body.strip("[]")
    names = [name.strip().strip("'\"") for name in re.split(r"[,\s]+", body) if name.strip()]
    problem = camera_names_problem(names)
    if problem is not None:
        raise ValueError(f"cameras: {problem}")
    return names


# A relative topic name below a camera driver's namespace: image_raw, image_rect, color/image_raw.
_RELATIVE_TOPIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def camera_remappings(names: list[str] | tuple[str, ...], camera_image: str = "image_raw") -> list[tuple[str, str]]:
    """The launch file's remappings for cameras `names`: each camera C reads the driver topics
    /C/<camera_image> and /C/camera_info (C/image and C/camera_info relative to the node's
    namespace before remapping). With input_transport compressed the node then reads
    /C/<camera_image>/compressed. Raises ValueError for a bad camera name or `camera_image`."""
    problem = camera_names_problem(list(names))
    if problem is not None:
        raise ValueError(f"cameras: {problem}")
    image = camera_image.strip().strip("/")
    if not _RELATIVE_TOPIC.match(image) or "__" in image:
        raise ValueError(f"camera_image: {camera_image!r} is not a relative topic name (e.g. image_raw, "
                         "image_rect, color/image_raw)")
    remappings = []
    for name in names:
        remappings.append((f"{name}/image", f"/{name}/{image}"))
        remappings.append((f"{name}/camera_info", f"/{name}/camera_info"))
    return remappings


def node_name_matches(section: str, node_fqn: str) -> bool:
    """Whether a parameters file section (`/**`, `zoedepth`, `/robot/zoedepth`, `/**/zoedepth`,
    `/robot/*`) applies to the node with fully qualified name `node_fqn`, as rcl matches them."""
    section = section if section.startswith("/") else "/" + section
    pattern = "".join("(/[^/]+)*" if part == "**" else "/[^/]+" if part == "*" else "/" + re.escape(part)
                      for part in section.strip("/").split("/"))
    return re.fullmatch(pattern, node_fqn) is not None


def params_file_cameras(path: str, node_fqn: str = "/zoedepth") -> list[str]:
    """The `cameras` a parameters file gives the node `node_fqn` (e.g. /robot/zoedepth), [] when
    it gives none or the file cannot be read (the node reports that itself). Sections apply in file
    order, a later one winning, as rclpy applies them; nested namespace maps are not read. Raises
    ValueError when the list is not valid camera names."""
    import yaml  # a launch-time helper: the node itself never needs it

    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return []
    found: list[str] = []
    for section, body in document.items() if isinstance(document, dict) else ():
        if not node_name_matches(str(section), node_fqn):
            continue
        params = body.get("ros__parameters") if isinstance(body, dict) else None
        if isinstance(params, dict) and "cameras" in params:
            found = [str(name) for name in (params["cameras"] or [])]
    problem = camera_names_problem(found)
    if problem is not None:
        raise ValueError(f"cameras in {path}: {problem}")
    return found
