"""The requirements files keep a robot's own numpy, OpenCV and cv_bridge.

requirements/robot.txt is what a ROS 2 Jazzy robot pip-installs (README, "Use on a robot"): only
what apt cannot give, as ranges, so pip never replaces apt's numpy 1.26 / OpenCV 4.6 (cv_bridge
is built against those two). requirements/runtime.txt (`make test`) and requirements/jazzy.txt
(`make test-jazzy`: Python 3.12, numpy 1.26, OpenCV 4.x) are pinned sets that include robot.txt,
pin its packages at the lower ends of its ranges, and agree with each other on everything but the
libraries that a robot gets from apt. test/test_package_xml.py maps the imports to these files.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"

# rosdep keys of package.xml (apt on a robot) -> the PyPI projects that would shadow them.
APT_PROVIDED = {
    "python3-numpy": {"numpy"},
    "python3-opencv": {
        "opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless",
    },
    "python3-yaml": {"pyyaml"},
    "python3-tqdm": {"tqdm"},
    "python3-matplotlib": {"matplotlib"},
    "python3-h5py": {"h5py"},
}
# What apt's versions on Ubuntu 24.04 (noble) are, for the stand-ins in jazzy.txt.
NOBLE_NUMPY = "1.26"
NOBLE_OPENCV_MAJOR = 4


def read(name: str) -> tuple[list[str], dict[str, Requirement]]:
    """(files it includes with -r, canonical name -> requirement) of requirements/<name>."""
    includes, requirements = [], {}
    for raw in (REQUIREMENTS / name).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            includes.append(line.split(None, 1)[1].strip())
            continue
        assert not line.startswith("-"), f"{name}: unexpected option line {raw!r}"
        req = Requirement(line)
        key = canonicalize_name(req.name)
        assert key not in requirements, f"{name}: {req.name} listed twice"
        requirements[key] = req
    return includes, requirements


def pin(req: Requirement) -> Version:
    """The version of an exact `name==X` pin."""
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
        f"{req} is not an exact pin (name==version)"
    )
    return Version(specs[0].version)


def pins(name: str) -> dict[str, Version]:
    return {key: pin(req) for key, req in read(name)[1].items()}


def declared_rosdep_keys() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {(e.text or "").strip() for e in root.iter() if e.tag.endswith("depend")}


def test_robot_lists_nothing_apt_provides():
    keys = declared_rosdep_keys()
    _, robot = read("robot.txt")
    for key, projects in APT_PROVIDED.items():
        assert key in keys, f"package.xml lacks <exec_depend>{key}</exec_depend>"
        clash = projects & set(robot)
        assert not clash, f"requirements/robot.txt lists {sorted(clash)}: a robot has it from apt ({key})"
    ros = [name for name in robot if name.startswith("ros-")]
    assert not ros, f"requirements/robot.txt lists ROS packages {ros}: a robot has them from apt"


# What a robot installs with pip: robot.txt, and engines.txt for the optional engines.
ROBOT_SETS = ["robot.txt", "engines.txt"]


@pytest.mark.parametrize("robot_set", ROBOT_SETS)
def test_robot_lists_ranges_with_both_ends(robot_set):
    includes, robot = read(robot_set)
    assert not includes, f"requirements/{robot_set} must stand alone (the robot installs only it)"
    assert robot, f"requirements/{robot_set} is empty"
    for req in robot.values():
        ops = {s.operator for s in req.specifier}
        assert ">=" in ops and "<" in ops, f"{robot_set}: {req} needs a range (>=tested,<next)"
        assert not ops & {"==", "===", "~="}, f"{robot_set}: {req} must be a range, not a pin"
        assert req.marker is None and not req.url, f"{robot_set}: {req}: plain name and range only"


def test_engines_list_nothing_apt_or_robot_txt_provides():
    _, engines = read("engines.txt")
    apt = set().union(*APT_PROVIDED.values())
    assert not set(engines) & (apt | set(read("robot.txt")[1])), "engines.txt repeats apt's or robot.txt's"


@pytest.mark.parametrize("robot_set", ROBOT_SETS)
@pytest.mark.parametrize("name", ["runtime.txt", "jazzy.txt"])
def test_pinned_sets_include_the_robot_ranges_at_their_lower_ends(name, robot_set):
    includes, _ = read(name)
    assert robot_set in includes, f"requirements/{name} must include {robot_set} (-r {robot_set})"
    pinned = pins(name)
    for key, req in read(robot_set)[1].items():
        assert key in pinned, f"requirements/{name} does not pin {req.name} (robot.txt: {req})"
        lower = next(Version(s.version) for s in req.specifier if s.operator == ">=")
        assert pinned[key] == lower, (
            f"requirements/{name} pins {req.name}=={pinned[key]}, but {robot_set}'s range {req} starts at "
            f"{lower}: test what the robot may get at worst (move both together)"
        )


def test_jazzy_matches_the_dev_pins_except_what_apt_provides():
    dev = {**pins("runtime.txt"), **pins("test.txt")}
    jazzy = pins("jazzy.txt")
    apt = set().union(*APT_PROVIDED.values())
    assert set(dev) - apt <= set(jazzy), f"jazzy.txt lacks {sorted(set(dev) - apt - set(jazzy))}"
    drift = {k: (str(dev[k]), str(jazzy[k])) for k in set(dev) & set(jazzy) - apt if dev[k] != jazzy[k]}
    assert not drift, f"jazzy.txt and runtime.txt/test.txt pin different versions: {drift}"
    assert re.fullmatch(re.escape(NOBLE_NUMPY) + r"\.\d+", str(jazzy["numpy"])), jazzy["numpy"]
    opencv = [v for k, v in jazzy.items() if k.startswith("opencv-")]
    assert len(opencv) == 1 and opencv[0].major == NOBLE_OPENCV_MAJOR, opencv


def test_test_txt_adds_tools_to_runtime():
    includes, _ = read("test.txt")
    assert includes == ["runtime.txt"]
    pins("test.txt")  # every tool pinned
