"""Camera names of a depth node serving several cameras (its `cameras` parameter), without ROS:
what a name may be, the topic prefix it gives, and the launch file's `cameras:=` argument.

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
