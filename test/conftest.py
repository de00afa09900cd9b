"""Session-wide test settings.

DDS isolation: every test run gets its own ROS domain and keeps discovery on this host, so two
runs (two developers, CI beside a developer) never see each other's topics. The values are set at
import, before any test module imports rclpy, and are inherited by the subprocesses tests start.
A caller that sets them explicitly (e.g. to watch a run with `ros2 topic echo`) keeps its values.
"""

from __future__ import annotations

import os

import pytest

# Fast DDS on Linux: valid domain ids are 0..101 and 215..232 (port arithmetic). 0 is the
# default that other ROS processes on the machine use, so a run takes one of 1..101.
_DOMAIN_ID = 1 + os.getpid() % 101

os.environ.setdefault("ROS_DOMAIN_ID", str(_DOMAIN_ID))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def pytest_report_header(config):
    return "ROS: ROS_DOMAIN_ID={} ROS_AUTOMATIC_DISCOVERY_RANGE={} RMW_IMPLEMENTATION={}".format(
        os.environ["ROS_DOMAIN_ID"],
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"],
        os.environ["RMW_IMPLEMENTATION"],
    )


@pytest.fixture(scope="module")
def context():
    """A private rclpy context for one test module, with torch on one thread (ros_helpers)."""
    from ros_helpers import one_torch_thread, ros_context

    with ros_context() as ctx, one_torch_thread():
        yield ctx


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight tiny model file; modules that need another size or head override it."""
    from ros_helpers import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("model"))
