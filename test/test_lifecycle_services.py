"""Requests from another process, valid or not, never end the node: every lifecycle transition id
and label in every state, and parameters of the wrong type, range or name.

The node runs in its own process (a crash shows as its exit); the requests come from this one,
as `ros2 service call` / `ros2 param set` would send them.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from zoedepth_ros.ros.processes import stop_process

from ros_helpers import REPO, Harness, wait_done, wait_until

# Every id lifecycle_msgs defines, and some it does not.
TRANSITION_IDS = sorted({v for k, v in vars(Transition).items() if k.startswith("TRANSITION_")} | {9, 100, 255})
LABELS = ["configure", "cleanup", "activate", "deactivate", "shutdown", "destroy", "create", "transition_success",
          "transition_failure", "transition_error", "no_such_label"]
PRIMARY = {State.PRIMARY_STATE_UNCONFIGURED: "unconfigured", State.PRIMARY_STATE_INACTIVE: "inactive",
           State.PRIMARY_STATE_ACTIVE: "active", State.PRIMARY_STATE_FINALIZED: "finalized"}
# From each state, the transition towards the next one in the tour unconfigured -> inactive -> active.
TOWARDS = {("unconfigured", "inactive"): 1, ("unconfigured", "active"): 1, ("inactive", "active"): 3,
           ("active", "inactive"): 4, ("active", "unconfigured"): 4, ("inactive", "unconfigured"): 2}
TIMEOUT_S = 30.0


class NodeProcess:
    """`zoedepth-ros node` (autostart off) in a subprocess, with lifecycle service clients here."""

    def __init__(self, ros: Harness, client) -> None:
        self.namespace, self.checkpoint, self.client = ros.namespace, ros.checkpoint, client
        name = f"{ros.namespace}/zoedepth"
        self.change = client.create_client(ChangeState, f"{name}/change_state")
        self.get = client.create_client(GetState, f"{name}/get_state")
        self.available = client.create_client(GetAvailableTransitions, f"{name}/get_available_transitions")
        self.proc = None

    def start(self) -> None:
        self.stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zoedepth_ros.cli", "node", "--ros-args", "-r", f"__ns:={self.namespace}",
             "-p", f"model:={self.checkpoint}", "-p", "device:=cpu", "-p", "autostart:=false"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # (rclpy's wait_for_service looks every 0.25 s)
        assert wait_until(lambda: self.get.service_is_ready() and self.change.service_is_ready(), TIMEOUT_S,
                          interval=0.01)
        # A service is found before it has found our client: its first answers may go nowhere (asked
        # again after 0.2 s: an answer takes milliseconds).
        assert wait_until(lambda: self.call(self.get, GetState.Request(), timeout=0.2) is not None, TIMEOUT_S)
        assert self.state() == "unconfigured"

    def stop(self) -> str:
        if self.proc is None:
            return ""
        # Ctrl-C, as `ros2 launch` stops a node: it shuts down and leaves the DDS graph at once. (One
        # killed by SIGTERM stayed in the graph for seconds, and answered the next one's first calls
        # with nothing.) Then the next node starts once this one's services are gone.
        output = stop_process(self.proc, sig=signal.SIGINT)
        self.proc = None
        wait_until(lambda: not (self.get.service_is_ready() or self.change.service_is_ready()), TIMEOUT_S,
                   interval=0.01)
        return output

    def call(self, client, request, timeout: float | None = None):
        """The answer; None after `timeout`, or a failed test when no timeout is given."""
        future = client.call_async(request)
        if not wait_done(future, timeout or TIMEOUT_S):
            client.remove_pending_request(future)
            assert timeout is not None, f"no answer from {client.srv_name}: {self.alive()}"
            return None
        return future.result()

    def alive(self) -> str:
        return "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"

    def state(self) -> str:
        return PRIMARY.get(self.call(self.get, GetState.Request()).current_state.id, "transitional")

    def transitions(self) -> dict[int, str]:
        """The transitions the current state offers, id -> label."""
        answer = self.call(self.available, GetAvailableTransitions.Request())
        return {t.transition.id: t.transition.label for t in answer.available_transitions}

    def request(self, transition_id: int = 0, label: str = "") -> bool:
        return self.call(self.change, ChangeState.Request(transition=Transition(id=transition_id, label=label))).success

    def go_to(self, target: str) -> None:
        while (state := self.state()) != target:
            assert self.request(TOWARDS[state, target]), f"{state} -> {target}"


@pytest.mark.slow
def test_every_transition_request_in_every_state_leaves_the_node_running(ros):
    client = ros.client("lifecycle_client")
    node = NodeProcess(ros, client)
    with ros.spin():
        node.start()
        try:
            for state in ("unconfigured", "inactive", "active"):
                for transition_id, label in [(i, "") for i in TRANSITION_IDS] + [(0, name) for name in LABELS]:
                    node.go_to(state)
                    offered = node.transitions()
                    valid = label in offered.values() if label else transition_id in offered
                    ok = node.request(transition_id, label)
                    what = f"transition {label or transition_id} in {state}"
                    assert node.alive() == "running", what
                    now = node.state()
                    assert ok == valid, what
                    assert now in ("unconfigured", "inactive", "active", "finalized"), what
                    assert (now == state) != valid, what  # a refused request changes nothing
                    if now == "finalized":  # a shutdown: nothing leads back, so a fresh node
                        for other_id in TRANSITION_IDS:  # ... once every request was refused there
                            assert not node.request(other_id), other_id
                        assert not node.request(label="configure") and node.state() == "finalized"
                        node.start()
        finally:
            output = node.stop()
    assert "Traceback" not in output, output


@pytest.mark.slow
def test_parameter_requests_of_the_wrong_type_range_or_name_are_refused(ros):
    client = ros.client("params_client")
    node = NodeProcess(ros, client)
    parameters = AsyncParameterClient(client, f"{ros.namespace}/zoedepth")
    bad = [
        Parameter("points_stride", value="four"),  # wrong type
        Parameter("points_stride", value=0),  # out of range
        Parameter("max_depth", value=float("nan")),
        Parameter("max_depth", value=-1.0),
        Parameter("min_depth", value=500.0),  # above max_depth
        Parameter("precision", value="fp8"),
        Parameter("input_reliability", value="sometimes"),
        Parameter("device", value="tpu"),
        Parameter("autostart", value=True),  # read-only
        Parameter("model", value=3),
        Parameter("cameras", value=["front", "front"]),  # twice the same camera
        Parameter("cameras", value=["front", "rear camera"]),  # not a ROS name
        Parameter(f"qos_overrides.{ros.namespace}/depth/image.publisher.depth", value=3),  # read-only
        Parameter("no_such_parameter", value=1),  # undeclared
    ]
    with ros.spin():
        node.start()
        try:
            assert node.request(1) and node.request(3)
            names = sorted({p.name for p in bad if not p.name.startswith(("qos", "no_such"))})
            before = parameters.get_parameters(names)
            assert wait_done(before, TIMEOUT_S)
            for parameter in bad:
                future = parameters.set_parameters([parameter])
                assert wait_done(future, TIMEOUT_S), parameter.name
                assert not future.result().results[0].successful, (parameter.name, parameter.value)
                assert node.alive() == "running", parameter.name
            atomically = parameters.set_parameters_atomically([Parameter("max_depth", value=50.0), bad[0]])
            assert wait_done(atomically, TIMEOUT_S) and not atomically.result().result.successful
            after = parameters.get_parameters(names)
            assert wait_done(after, TIMEOUT_S)
            assert after.result().values == before.result().values  # nothing changed
            assert node.state() == "active"
        finally:
            output = node.stop()
    assert "Traceback" not in output, output
