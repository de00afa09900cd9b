"""`colcon build` installs the package the way a robot's workspace would.

The package sources are copied into a throw-away workspace (src/zoedepth_ros) and built with the
colcon of the test environment (colcon-common-extensions + ament_package from PyPI). The checks
are driven by the sources: every console script declared in setup.py, every launch file, every
config file and every file of the Python package must land in its ament install location, so a
file added without its install rule fails here.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zoedepth_ros"
# What a clone of the repository contributes to the package build (absent ones are skipped).
SOURCE_DIRS = ["zoedepth_ros", "launch", "config", "resource", "requirements"]
SOURCE_FILES = ["package.xml", "setup.py", "setup.cfg", "README.md", "LICENSE"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
COLCON = [sys.executable, "-c", "import sys; from colcon_core.command import main; sys.exit(main())"]

pytestmark = pytest.mark.slow


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' from the module-level CONSOLE_SCRIPTS list of setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CONSOLE_SCRIPTS" for t in node.targets
        ):
            entries = ast.literal_eval(node.value)
            return {e.split("=", 1)[0].strip(): e.split("=", 1)[1].strip() for e in entries}
    raise AssertionError("setup.py has no module-level CONSOLE_SCRIPTS list")


def launch_executables() -> dict[str, str]:
    """executable -> launch file, for every Node(package=<this package>, executable="...") in launch/."""
    found = {}
    for path in sorted((ROOT / "launch").glob("*.launch.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            t.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            kw = {k.arg: k.value for k in call.keywords if k.arg}
            package, executable = kw.get("package"), kw.get("executable")
            if isinstance(package, ast.Name):
                package = constants.get(package.id)
            elif isinstance(package, ast.Constant):
                package = package.value
            if package == PACKAGE and isinstance(executable, ast.Constant):
                found[executable.value] = path.name
    return found


def source_files(folder: str, pattern: str = "**/*") -> list[Path]:
    """Files below ROOT/folder (relative to it), without caches; [] when the folder is absent."""
    base = ROOT / folder
    return sorted(
        p.relative_to(base)
        for p in base.glob(pattern)
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        and not any(part.endswith(".egg-info") for part in p.parts)
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The test environment without any sourced ROS/colcon workspace leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH", "CMAKE_PREFIX_PATH"}
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    try:
        import ament_package  # noqa: F401
        import colcon_core  # noqa: F401  (a test dependency: missing means a broken venv)
    except ImportError as exc:  # pragma: no cover - fail, never skip
        pytest.fail(f"{exc}: install requirements/test.txt (colcon-common-extensions, ros-jazzy-ament-package)")

    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / PACKAGE
    src.mkdir(parents=True)
    for name in SOURCE_DIRS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=IGNORE)
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, src / name)

    cmd = [
        *COLCON, "--log-base", str(ws / "log"),
        "build", "--base-paths", "src",
        "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
        "--event-handlers", "console_direct-", "console_stderr-", "console_start_end-", "status-",
    ]
    env = clean_env(COLCON_HOME=str(ws / ".colcon"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"colcon build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return ws


@pytest.fixture(scope="module")
def prefix(workspace) -> Path:
    return workspace / "install" / PACKAGE


@pytest.fixture(scope="module")
def site_packages(prefix) -> Path:
    found = sorted(prefix.glob("lib/python3*/site-packages"))
    assert len(found) == 1, f"expected one lib/python3*/site-packages under {prefix}, found {found}"
    return found[0]


def test_console_scripts_installed_in_lib(prefix):
    scripts = console_scripts()
    assert "zoedepth-ros" in scripts
    for name in scripts:
        exe = prefix / "lib" / PACKAGE / name
        assert exe.is_file(), f"console script {name} not installed at {exe} (setup.cfg install_scripts?)"
        assert os.access(exe, os.X_OK), f"{exe} is not executable"


def test_launch_executables_are_installed(prefix):
    """Every executable of this package that a launch file starts is a console script."""
    scripts = console_scripts()
    for executable, launch_file in launch_executables().items():
        assert executable in scripts, (
            f"launch/{launch_file} starts executable {executable!r}, which setup.py's CONSOLE_SCRIPTS lacks"
        )
        assert (prefix / "lib" / PACKAGE / executable).is_file()


def test_ament_index_and_manifest(workspace, prefix):
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    assert marker.is_file(), "ament index marker missing: `ros2 run/launch` would not find the package"
    assert (prefix / "share" / PACKAGE / "package.xml").is_file()
    assert (prefix / "share" / PACKAGE / "package.xml").read_bytes() == (ROOT / "package.xml").read_bytes()


def test_launch_files_installed(prefix):
    for rel in source_files("launch", "*.launch.py"):
        assert (prefix / "share" / PACKAGE / "launch" / rel).is_file(), f"launch/{rel} not installed"


def test_config_files_installed(prefix):
    for rel in source_files("config"):
        assert (prefix / "share" / PACKAGE / "config" / rel).is_file(), f"config/{rel} not installed"


def test_python_package_installed(site_packages):
    # every module and every data file of the package (assets, default configs...)
    files = source_files(PACKAGE)
    assert Path("__init__.py") in files and Path("cli.py") in files
    missing = [str(rel) for rel in files if not (site_packages / PACKAGE / rel).is_file()]
    assert not missing, (
        f"not installed into {site_packages / PACKAGE}: {missing} (a module needs an __init__.py in "
        f"its folder for find_packages; a data file is picked up by setup.py's package_data)"
    )


def test_console_script_targets_import_from_install(workspace, prefix, site_packages):
    env = clean_env(PYTHONPATH=str(site_packages), AMENT_PREFIX_PATH=str(prefix))
    check = (
        "import importlib, sys\n"
        "for target in sys.argv[1:]:\n"
        "    module, func = target.split(':')\n"
        "    assert callable(getattr(importlib.import_module(module), func)), target\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check, *console_scripts().values()],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"a console script target does not import from the install:\n{proc.stderr}"


def test_installed_package_finds_the_shipped_dds_profile(workspace, prefix, site_packages):
    """From the install (no source tree), the node's Fast DDS profile is the one in share/."""
    env = clean_env(PYTHONPATH=str(site_packages), AMENT_PREFIX_PATH=str(prefix))
    proc = subprocess.run(
        [sys.executable, "-c",
         "from zoedepth_ros.ros.processes import shipped_dds_profile; print(shipped_dds_profile())"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    expected = prefix / "share" / PACKAGE / "config" / "fastdds_large_images.xml"
    assert Path(proc.stdout.strip()) == expected.resolve()


def test_installed_cli_runs(workspace, prefix, site_packages):
    env = clean_env(PYTHONPATH=str(site_packages), AMENT_PREFIX_PATH=str(prefix))
    where = subprocess.run(
        [sys.executable, "-c", "import zoedepth_ros; print(zoedepth_ros.__file__)"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site_packages), (
        f"imported {where.stdout.strip()} instead of the installed package"
    )
    proc = subprocess.run(
        [str(prefix / "lib" / PACKAGE / "zoedepth-ros"), "--help"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"zoedepth-ros --help exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "usage: zoedepth-ros" in proc.stdout
