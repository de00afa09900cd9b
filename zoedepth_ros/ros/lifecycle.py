"""A workaround in rclpy's lifecycle services on ROS 2 Jazzy."""

from __future__ import annotations


def guard_change_state(node) -> None:
    """Make `node` (an rclpy LifecycleNode) refuse change_state requests naming, by id, a
    transition the current state does not have.

    rclpy on Jazzy raises out of the service callback for them ("Transition is not registered"),
    which ends the executor's spin and the process; fixed upstream only after Jazzy. A label the
    state does not have is already refused by rclpy, and so stays.
    """
    service = node._service_change_state
    change_state = service.callback

    def guarded(request, response):
        transition = request.transition
        if not transition.label:
            available = {t[0] for t in node._state_machine.available_transitions}
            if transition.id not in available:
                state = node._state_machine.current_state[1]
                node.get_logger().warning(
                    f"change_state refused: transition id {transition.id} is not available in state "
                    f"{state} (available: {', '.join(str(i) for i in sorted(available)) or 'none'})")
                response.success = False
                return response
        return change_state(request, response)

    service.callback = guarded
