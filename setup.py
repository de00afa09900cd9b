"""ament_python build of zoedepth_ros (colcon build, or pip install -e . for development).

ROS dependencies and the Python libraries apt has are declared in package.xml for rosdep; the
rest is installed with pip (requirements/robot.txt on a robot, the pinned requirements/runtime.txt
for development). install_requires stays empty so that neither colcon nor pip tries to resolve
torch, numpy or the ROS wheels on its own.
"""

import ast
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "zoedepth_ros"
HERE = os.path.dirname(os.path.abspath(__file__))

# Executables installed into lib/zoedepth_ros (what `ros2 run zoedepth_ros <name>` finds) and
# onto PATH by pip. Add one line per executable; test/test_colcon_build.py reads this list.
CONSOLE_SCRIPTS = [
    "zoedepth-ros = zoedepth_ros.cli:main",
    "depth_node = zoedepth_ros.ros.depth_node:main",
    "replay_node = zoedepth_ros.ros.replay:main",
]


def read_version():
    """__version__ from zoedepth_ros/__init__.py, read without importing the package."""
    with open(os.path.join(HERE, PACKAGE_NAME, "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise RuntimeError("__version__ not found in zoedepth_ros/__init__.py")


def files_under(folder):
    """(install dir, [files]) pairs for every file below `folder`, keeping sub-folders.

    Paths are relative to this file (setuptools requires it); an absent or empty folder gives [].
    """
    pairs = {}
    for path in sorted(glob(os.path.join(folder, "**", "*"), recursive=True)):
        if not os.path.isfile(path) or "__pycache__" in path.split(os.sep):
            continue
        dest = os.path.join("share", PACKAGE_NAME, os.path.dirname(path))
        pairs.setdefault(dest, []).append(path)
    return sorted(pairs.items())


def package_data_globs():
    """Every non-Python file inside the package (assets, default configs); tolerates absence."""
    found = []
    for path in glob(os.path.join(PACKAGE_NAME, "**", "*"), recursive=True):
        parts = path.split(os.sep)
        if os.path.isfile(path) and not path.endswith((".py", ".pyc")) and "__pycache__" not in parts:
            found.append(os.path.relpath(path, PACKAGE_NAME))
    return sorted(found)


# setuptools wants paths relative to setup.py; colcon runs it from its own build dir.
os.chdir(HERE)

setup(
    name=PACKAGE_NAME,
    version=read_version(),
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE_NAME: package_data_globs()},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE_NAME]),
        ("share/" + PACKAGE_NAME, ["package.xml"]),
        ("share/" + PACKAGE_NAME + "/launch", sorted(glob("launch/*.launch.py"))),
        *files_under("config"),
    ],
    install_requires=[],
    maintainer="zoedepth_ros contributors",
    maintainer_email="maintainers@zoedepth-ros.invalid",
    description="Real-time metric depth (ZoeDepth) for ROS 2: node, bag evaluation, training.",
    license="MIT",
    python_requires=">=3.10",
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
