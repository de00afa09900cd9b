"""Session-wide test settings, and the fixtures the test modules share.

DDS isolation: every test run gets its own ROS domain and keeps discovery on this host, so two
runs (two developers, CI beside a developer) never see each other's topics. The values are set at
import, before any test module imports rclpy, and are inherited by the subprocesses tests start.
A caller that sets them explicitly (e.g. to watch a run with `ros2 topic echo`) keeps its values.

Fixtures: `one_torch_thread`; tiny random-weight models and checkpoints by kind and size
(`tiny_model`, `tiny_checkpoint`); for the ROS tests a private rclpy `context` per module, the
node's `checkpoint`, and per test a `namespace` and the `ros` harness (ros_helpers.Harness) built
with the module's `harness_options`. A module customises `checkpoint` or `harness_options` by
defining a fixture of that name.
"""

from __future__ import annotations

import os
import signal

import pytest

# Fast DDS on Linux: valid domain ids are 0..101 and 215..232 (port arithmetic). 0 is the
# default that other ROS processes on the machine use, so a run takes one of 1..101.
_DOMAIN_ID = 1 + os.getpid() % 101

os.environ.setdefault("ROS_DOMAIN_ID", str(_DOMAIN_ID))
# A pytest-xdist worker ("gw0", "gw1", ...) inherits the run's domain: each takes the next ones, so
# the workers' nodes, topics and /diagnostics stay apart.
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    _worker = int(os.environ["PYTEST_XDIST_WORKER"][2:])
    os.environ["ROS_DOMAIN_ID"] = str(1 + (int(os.environ["ROS_DOMAIN_ID"]) + _worker) % 101)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

# Tests stop node processes with SIGINT, as `ros2 launch` does. A shell without job control starts
# a background command with SIGINT ignored, which every child inherits: each node would then wait
# out stop_process's grace period and be killed. Caught here, it is SIG_DFL again in the children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    return "ROS: ROS_DOMAIN_ID={} ROS_AUTOMATIC_DISCOVERY_RANGE={} RMW_IMPLEMENTATION={}".format(
        os.environ["ROS_DOMAIN_ID"],
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"],
        os.environ["RMW_IMPLEMENTATION"],
    )


# --- torch --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for the rest of the module: a tiny model gains nothing from more, and on
    loaded shared cores OpenMP's spinning workers made a 25 ms frame take half a second (and a
    tiny training run or evaluation 20x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- tiny models ---------------------------------------------------------------------------------


def _tiny_model(kind: str = "NK", img_size: tuple[int, int] | None = None):
    import torch

    from zoedepth_ros.model import ZoeDepth, tiny_config

    config = tiny_config(kind) if img_size is None else tiny_config(kind, img_size=tuple(img_size))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ZoeDepth(config).eval()


@pytest.fixture(scope="session")
def tiny_model():
    """`tiny_model(kind="NK", img_size=None)`: a new random-weight tiny ZoeDepth ("N", "K" or "NK";
    img_size None: tiny_config's) in eval mode. The same arguments give the same weights (seed 0);
    torch's global random state is left as it was. A new model each call: a test may change it."""
    return _tiny_model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    """`tiny_checkpoint(kind="NK", img_size=None)`: the path (str) of `tiny_model(kind, img_size)`
    saved as a project checkpoint, written once per session: tests only read it."""
    from zoedepth_ros.model import save_checkpoint

    paths: dict[tuple, str] = {}

    def path(kind: str = "NK", img_size: tuple[int, int] | None = None) -> str:
        key = (kind, None if img_size is None else tuple(img_size))
        if key not in paths:
            name = f"tiny_{kind}" + ("" if img_size is None else "_{}x{}".format(*img_size))
            directory = tmp_path_factory.mktemp(name)
            paths[key] = str(save_checkpoint(tiny_model(kind, img_size), directory / "tiny.safetensors"))
        return paths[key]

    return path


# --- ROS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context(one_torch_thread):
    """A private rclpy context for one test module, with torch on one thread."""
    from ros_helpers import ros_context

    with ros_context() as ctx:
        yield ctx


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    """The depth node's model in the ROS tests: a tiny N at 32x32, tens of milliseconds a frame on
    one CPU thread. A module that needs another size or head overrides this fixture."""
    return tiny_checkpoint("N", (32, 32))


@pytest.fixture
def namespace(request):
    """This test's own ROS namespace: the process id and the test's name (without its parameters,
    at most 40 characters)."""
    return f"/zd_{os.getpid()}_{request.node.name.split('[')[0][len('test_'):][:40]}"


@pytest.fixture
def harness_options():
    """Keyword arguments of the `ros` Harness (camera size, node parameters) for every test of a
    module; a module that needs some overrides this fixture (it may use `namespace`)."""
    return {}


@pytest.fixture
def ros(context, checkpoint, namespace, harness_options):
    """One test's ROS world (ros_helpers.Harness) in its own namespace; its nodes are destroyed after
    the test."""
    from ros_helpers import Harness

    harness = Harness(context, namespace, checkpoint, **harness_options)
    yield harness
    harness.close()
