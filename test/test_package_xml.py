"""package.xml is a valid ament_python manifest and declares every dependency the code imports.

Every third-party top-level module imported anywhere under zoedepth_ros/ must map (MODULE_DEPS
below) to a dependency that is declared: a rosdep key in package.xml (apt on a robot), or, for
libraries rosdep cannot provide (torch...), a pip requirement that a robot installs (a range in
requirements/robot.txt) and that the tests pin (requirements/runtime.txt).
A new import that is not in the map fails this test with the line to add.
How the requirements files fit together is checked in test_requirements.py.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zoedepth_ros"
PACKAGE_XML = ROOT / "package.xml"
ROBOT_REQUIREMENTS = ROOT / "requirements" / "robot.txt"
RUNTIME_REQUIREMENTS = ROOT / "requirements" / "runtime.txt"

# top-level module -> ("rosdep", key declared in package.xml) or ("pip", name in robot.txt, pinned
# in runtime.txt)
MODULE_DEPS: dict[str, tuple[str, str]] = {
    # ROS client library and interfaces
    "rclpy": ("rosdep", "rclpy"),
    "builtin_interfaces": ("rosdep", "builtin_interfaces"),
    "std_msgs": ("rosdep", "std_msgs"),
    "sensor_msgs": ("rosdep", "sensor_msgs"),
    "diagnostic_msgs": ("rosdep", "diagnostic_msgs"),
    "lifecycle_msgs": ("rosdep", "lifecycle_msgs"),
    "rcl_interfaces": ("rosdep", "rcl_interfaces"),
    "launch": ("rosdep", "launch"),
    "launch_ros": ("rosdep", "launch_ros"),
    # Python libraries that have system packages
    "numpy": ("rosdep", "python3-numpy"),
    "cv2": ("rosdep", "python3-opencv"),
    "yaml": ("rosdep", "python3-yaml"),
    "tqdm": ("rosdep", "python3-tqdm"),
    "matplotlib": ("rosdep", "python3-matplotlib"),
    "h5py": ("rosdep", "python3-h5py"),
    # pip-only: a range in requirements/robot.txt, pinned in requirements/runtime.txt
    "torch": ("pip", "torch"),
    "torchvision": ("pip", "torchvision"),
    "timm": ("pip", "timm"),
    "safetensors": ("pip", "safetensors"),
    "huggingface_hub": ("pip", "huggingface_hub"),
    "rosbags": ("pip", "rosbags"),
    # transitive: installed by, and only used through, the package named here
    "apsw": ("pip", "rosbags"),  # rosbags' sqlite3 (.db3) storage reader
    "httpx2": ("pip", "huggingface_hub"),  # the HTTP client of huggingface_hub (its errors)
}

# Used when present, never required: importing any module of the package must work without
# them, so each import of these sits either inside a function (lazy; the caller reports a missing
# one) or in the body of a `try:` that handles ImportError (or a parent of it).
OPTIONAL = {
    "cv_bridge",
    "sensor_msgs_py",
    "message_filters",
    "diagnostic_updater",
    "image_transport",
    "transformers",
    # the engines (requirements/engines.txt; tensorrt and onnxruntime-gpu by hand on NVIDIA machines)
    "onnx",
    "onnx_ir",
    "onnxruntime",
    "openvino",
    "nncf",  # OpenVINO's quantizer: export --precision int8
    "tensorrt",
    "google",  # protobuf, onnx's (its DecodeError)
}

_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _package_xml() -> ET.Element:
    return ET.parse(PACKAGE_XML).getroot()


def _declared_rosdep_keys() -> set[str]:
    root = _package_xml()
    tags = ("depend", "exec_depend", "build_depend", "build_export_depend")
    return {(e.text or "").strip() for tag in tags for e in root.findall(tag)}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_lines(path: Path) -> dict[str, str]:
    """canonical name -> the rest of its line (version specifiers), for the file itself (no -r)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match:
            found[_canonical(match.group(0))] = line[match.end():].strip()
    return found


def _pip_requirements() -> set[str]:
    """Names a robot pip-installs (robot.txt) that the tests also pin exactly (runtime.txt)."""
    pinned = {name for name, spec in _requirement_lines(RUNTIME_REQUIREMENTS).items() if spec.startswith("==")}
    return set(_requirement_lines(ROBOT_REQUIREMENTS)) & pinned


def _handles_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in _IMPORT_ERRORS for t in types)


class _ImportScanner(ast.NodeVisitor):
    """Collects (top-level module, line, optional-safe) for every absolute import.

    optional-safe: the import runs lazily (inside a function) or is guarded by a `try:` that
    handles ImportError, so importing the containing module never needs that dependency.
    """

    def __init__(self) -> None:
        self.found: list[tuple[str, int, bool]] = []
        self._guard_depth = 0
        self._function_depth = 0

    def _safe(self) -> bool:
        return self._guard_depth > 0 or self._function_depth > 0

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(_handles_import_error(h) for h in node.handlers)
        self._guard_depth += guarded
        for stmt in node.body:
            self.visit(stmt)
        self._guard_depth -= guarded
        for stmt in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(stmt)

    visit_TryStar = visit_Try

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name.split(".")[0], node.lineno, self._safe()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.found.append((node.module.split(".")[0], node.lineno, self._safe()))


def _third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [("path:line", optional_safe), ...] over every .py file of the package."""
    imports: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        scanner = _ImportScanner()
        scanner.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for module, line, guarded in scanner.found:
            if module in sys.stdlib_module_names or module == PACKAGE:
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            imports.setdefault(module, []).append((where, guarded))
    return imports


def test_manifest_header():
    root = _package_xml()
    assert root.tag == "package"
    assert root.get("format") == "3"
    assert root.findtext("name") == PACKAGE
    assert root.findtext("license") == "MIT"
    build_types = [e.text for e in root.findall("export/build_type")]
    assert build_types == ["ament_python"]
    maintainers = root.findall("maintainer")
    assert maintainers and all(m.get("email") for m in maintainers)


def test_version_matches_package():
    import zoedepth_ros

    assert _package_xml().findtext("version") == zoedepth_ros.__version__


def test_map_points_at_declared_dependencies():
    """The map itself stays true: every key it names is really declared."""
    rosdep_keys = _declared_rosdep_keys()
    pip_names = _pip_requirements()
    for module, (kind, key) in MODULE_DEPS.items():
        if kind == "rosdep":
            assert key in rosdep_keys, f"{module}: package.xml lacks <exec_depend>{key}</exec_depend>"
        else:
            assert _canonical(key) in pip_names, (
                f"{module}: {key} must be a range in requirements/robot.txt and pinned (==) in "
                f"requirements/runtime.txt"
            )


def test_every_import_is_a_declared_dependency():
    rosdep_keys = _declared_rosdep_keys()
    pip_names = _pip_requirements()
    problems = []
    for module, sites in sorted(_third_party_imports().items()):
        where = ", ".join(site for site, _ in sites)
        if module in OPTIONAL:
            eager = [site for site, safe in sites if not safe]
            if eager:
                problems.append(
                    f"{module} is optional but imported at module level outside a "
                    f"`try: ... except ImportError` at {', '.join(eager)}: import it inside the "
                    f"function that needs it or guard it, or make it a real dependency "
                    f"(package.xml, or requirements/robot.txt + runtime.txt; + MODULE_DEPS in this test)"
                )
            continue
        if module not in MODULE_DEPS:
            problems.append(
                f"{module} (imported at {where}) has no declared dependency: add its rosdep key as "
                f"<exec_depend> in package.xml, or, if rosdep cannot provide it, a range in "
                f"requirements/robot.txt and a pin in requirements/runtime.txt, then map it in "
                f"MODULE_DEPS in {Path(__file__).name}"
            )
            continue
        kind, key = MODULE_DEPS[module]
        declared = key in rosdep_keys if kind == "rosdep" else _canonical(key) in pip_names
        if not declared:
            target = (
                "package.xml <exec_depend>" if kind == "rosdep"
                else "requirements/robot.txt (a range) and requirements/runtime.txt (pinned)"
            )
            problems.append(f"{module} (imported at {where}) needs {key} in {target}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import numpy as np\nfrom torch import nn\n", {("numpy", False), ("torch", False)}),
        ("try:\n    import cv_bridge\nexcept ImportError:\n    cv_bridge = None\n", {("cv_bridge", True)}),
        ("try:\n    import cv_bridge\nexcept ValueError:\n    pass\n", {("cv_bridge", False)}),
        ("from . import cli\nfrom .model import x\n", set()),
        ("def f():\n    import rosbags.rosbag2\n", {("rosbags", True)}),
        ("class A:\n    import transformers\n", {("transformers", False)}),
        ("class A:\n    def f(self):\n        from transformers import X\n", {("transformers", True)}),
    ],
)
def test_scanner(source, expected):
    scanner = _ImportScanner()
    scanner.visit(ast.parse(source))
    assert {(m, g) for m, _, g in scanner.found} == expected
