"""Where a stream of camera frames starts a new sequence, by its header stamps: the rule that the
depth node, the temporal filter's offline users (`evaluate`, `predict`) and the temporal metrics
share, so that live and offline results restart at the same frames.

A sequence is a run of frames whose stamps increase with no gap longer than
`new_sequence_after_s`. The depth node adds what only a live stream shows (a new publisher, a pause
in arrival time: `zoedepth_ros.ros.inputs.StampOrder`); a bag or a directory of images shows only
its stamps.
"""

from __future__ import annotations

# The node parameter new_sequence_after_s defaults to this; evaluate and predict use it too.
NEW_SEQUENCE_AFTER_S = 1.0
# A stamp this far behind the previous frame's is a restarted camera, a clock reset or a looping
# bag, not a reordered frame: the node takes it (with a warning) as the start of a new sequence,
# so one bogus far-future stamp cannot lock the node out either.
STAMP_RESTART_S = 1.0


def starts_new_sequence(previous_ns: int | None, stamp_ns: int,
                        new_sequence_after_s: float = NEW_SEQUENCE_AFTER_S) -> bool:
    """True when the frame stamped `stamp_ns` does not continue the sequence of the frame stamped
    `previous_ns` (None: there was none): stamps that do not increase, or a gap of more than
    `new_sequence_after_s` seconds."""
    if previous_ns is None or stamp_ns <= previous_ns:
        return True
    return stamp_ns - previous_ns > new_sequence_after_s * 1e9
