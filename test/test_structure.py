"""The package's structure: the ROS boundary, and no import cycles.

Every module that imports rclpy or a ROS interface package when it is imported lives in
zoedepth_ros/ros/; the rest of the package (model, codecs, evaluation, training, the command line)
imports without ROS. Imports inside functions are not module-level: they run when called.

The package's modules import each other without cycles, counting every import: inside functions
and under `if TYPE_CHECKING:` too (a function-level import hides a cycle from Python, not from the
layering).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zoedepth_ros"
ROS_PACKAGE = f"{PACKAGE}.ros"
# The ROS client library, interface packages and ROS-only Python packages.
ROS_MODULES = {
    "rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "sensor_msgs", "diagnostic_msgs", "lifecycle_msgs",
    "launch", "launch_ros", "cv_bridge", "sensor_msgs_py", "message_filters", "diagnostic_updater", "image_transport",
}
CODECS = ["image_codec", "camera_info", "cloud", "colormap", "depth_codec"]


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package by its __init__.py)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@cache
def _module_level_imports(name: str) -> tuple[tuple[str, int], ...]:
    """(imported module, line) for every import that runs when `name` is imported: not inside a
    function, nor under `if TYPE_CHECKING:`. `from X import y` counts X and, when it is one of the
    package's modules, X.y; relative imports are resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((module, node.lineno))
            found.extend((f"{module}.{alias.name}", node.lineno) for alias in node.names
                         if f"{module}.{alias.name}" in MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return tuple(found)


def _executed(module: str) -> list[str]:
    """The package's modules that importing `module` runs: its parent packages, then itself."""
    parts = module.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in MODULES]


def _ros_import(name: str, seen: set[str] | None = None) -> str | None:
    """Why importing module `name` imports ROS ("file:line imports X", through the package's own
    modules), or None when it does not. `seen`: modules already examined in this query."""
    seen = set() if seen is None else seen
    seen.add(name)
    path = MODULES[name].relative_to(ROOT)
    for imported, line in _module_level_imports(name):
        if imported.split(".")[0] in ROS_MODULES:
            return f"{path}:{line} imports {imported}"
        for module in _executed(imported):
            if module not in seen:
                why = _ros_import(module, seen)
                if why is not None:
                    return f"{path}:{line} imports {module}, and {why}"
    return None


def test_ros_imports_stay_inside_the_ros_package():
    # The scan sees what it is meant to: the node imports rclpy.
    assert "rclpy" in (_ros_import(f"{ROS_PACKAGE}.depth_node") or "")
    outside = [name for name in MODULES if name != ROS_PACKAGE and not name.startswith(f"{ROS_PACKAGE}.")]
    assert f"{PACKAGE}.cli" in outside and f"{PACKAGE}.inference.estimator" in outside
    leaks = [why for why in map(_ros_import, outside) if why is not None]
    assert not leaks, (
        "modules outside zoedepth_ros/ros/ import ROS when imported (move the ROS code into "
        "zoedepth_ros/ros/, or import it inside the function that needs it):\n" + "\n".join(leaks))


def test_the_codecs_import_without_rclpy():
    """In a fresh interpreter: what a tool without ROS (evaluation, a notebook) imports."""
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[2:]:\n"
        f"    importlib.import_module('{PACKAGE}.' + name)\n"
        "ros = set(sys.argv[1].split(','))\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & ros)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, ",".join(sorted(ROS_MODULES)), *CODECS],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [], f"importing {', '.join(CODECS)} imported {proc.stdout.strip()}"


# --- import cycles ----------------------------------------------------------------------------


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _resolve(name: str, module: str, level: int) -> str:
    """The absolute name of `module` imported with `level` leading dots from module `name`."""
    if not level:
        return module
    package = _package_of(name).split(".")
    return ".".join(package[:len(package) - level + 1] + ([module] if module else []))


def _relative_string(name: str, text: str) -> str:
    stripped = text.lstrip(".")
    return _resolve(name, stripped, len(text) - len(stripped))


def _owner(dotted: str) -> str | None:
    """The package module that importing `dotted` (a module, or a name inside one) reaches."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


@cache
def _lazy_exports(package: str) -> dict[str, str]:
    """name -> module of a package __init__ that resolves names lazily from an `_EXPORTS` table."""
    for node in ast.parse(MODULES[package].read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)):
            return {key.value: _relative_string(package, value.value)
                    for key, value in zip(node.value.keys, node.value.values, strict=True)
                    if isinstance(key, ast.Constant) and isinstance(value, ast.Constant)}
    return {}


@cache
def _package_imports(name: str) -> dict[str, int]:
    """The package's modules that module `name` imports -> the line of one such import.

    Every `import` and `from ... import` statement counts, wherever it is (module level, functions,
    TYPE_CHECKING blocks); relative imports are resolved, `from package import module` reaches the
    module and `from package import name` the module a lazy `_EXPORTS` table maps the name to. In a
    module that calls `importlib.import_module`, string constants naming one of the package's modules
    (`cli.py`'s SUBCOMMANDS, a lazy `_EXPORTS` table) count as imports of it.
    """
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        owner = _owner(target) if target.split(".")[0] == PACKAGE else None
        if owner is not None and owner != name:
            found.setdefault(owner, line)

    dynamic = any(isinstance(node, ast.Attribute) and node.attr == "import_module" for node in ast.walk(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, node.module or "", node.level)
            for alias in node.names:
                if f"{module}.{alias.name}" in MODULES:
                    add(f"{module}.{alias.name}", node.lineno)
                elif module in MODULES and alias.name in _lazy_exports(module):
                    add(_lazy_exports(module)[alias.name], node.lineno)
                else:
                    add(module, node.lineno)
        elif dynamic and isinstance(node, ast.Constant) and isinstance(node.value, str):
            # Only strings that name a module exactly: ".onnx" is a file suffix, not a module.
            if _relative_string(name, node.value) in MODULES:
                add(_relative_string(name, node.value), node.lineno)
    return found


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components of `graph` (module -> imported modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _a_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """One import cycle through the component's first module, each step with the importing line."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first: the shortest way back to `start`
        node = queue.pop(0)
        for target in sorted(graph[node]):
            if target not in members:
                continue
            if target == start:
                cycle = paths[node] + [start]
                steps = " -> ".join(f"{a} ({MODULES[a].relative_to(ROOT)}:{graph[a][b]})"
                                    for a, b in zip(cycle, cycle[1:], strict=False))
                others = sorted(members - set(cycle))
                return f"{steps} -> {start}" + (f" (in one knot with {', '.join(others)})" if others else "")
            if target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    raise AssertionError(f"no cycle through {start} in {component}")


def test_no_import_cycles():
    graph = {name: _package_imports(name) for name in MODULES}
    # The scan sees what it is meant to: function-level, relative, lazy and command-table imports.
    assert f"{PACKAGE}.eval.evaluate" in graph[f"{PACKAGE}.cli"]
    assert f"{PACKAGE}.model.checkpoint" in graph[f"{PACKAGE}.model"]
    assert f"{PACKAGE}.inference.engines" in graph[f"{PACKAGE}.eval.evaluate"]
    assert f"{PACKAGE}.model.checkpoint" in graph[f"{PACKAGE}.model.fetch"]
    assert f"{PACKAGE}.model.zoedepth" in graph[f"{PACKAGE}.model.checkpoint"]
    cycles = [_a_cycle(graph, component) for component in _strongly_connected(graph) if len(component) > 1]
    assert not cycles, (
        "import cycles in the package (imports inside functions count: move what both sides need into "
        "a module of its own, or the command-line code out of the library module):\n" + "\n".join(cycles))



def _code_map_rows() -> dict[str, str]:
    """README's "Code map" rows: the path in the first cell -> the row."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Code map"):]
    section = section[:section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            rows[line.split("`")[1]] = line
    return rows


def test_every_module_is_on_the_readme_code_map():
    """Each module is named in the row of its directory (`zoedepth_ros/*.py` for the top level)."""
    rows = _code_map_rows()
    missing = []
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        directory = path.parent.relative_to(ROOT).as_posix()
        row = rows.get(f"{directory}/") or (rows.get(f"{PACKAGE}/*.py") if directory == PACKAGE else None)
        words = set(re.findall(r"\w+", row or ""))
        if path.stem not in words:
            missing.append(f"{name} (row {directory}/)")
    assert not missing, f"README code map does not name: {', '.join(missing)}"


def test_no_module_imports_another_modules_private_names():
    """A `_name` is its module's own: another module of the package that needs it gets a public
    name (every import counts, inside functions too)."""
    offences = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(PACKAGE)):
                offences += [f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {node.module}"
                             for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offences, "\n".join(offences)
