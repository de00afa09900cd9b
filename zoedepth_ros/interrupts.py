"""SIGTERM ends long work as Ctrl-C does.

systemd, `docker stop`, batch systems and `ros2 launch` (when SIGINT's grace period runs out) stop
a process with SIGTERM. Its default action kills the process on the spot: a node skips its shutdown
transition and stays in the DDS graph until its peers time it out, leaving its Fast DDS
shared-memory segment in /dev/shm (35 MB with the large-image profile) for good; an evaluation
writes nothing. Within `sigterm_as_interrupt`, SIGTERM raises KeyboardInterrupt in the main thread
instead, and the work ends through the same clean-up as Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt within the block; the previous handler is back after it.
    Outside the main thread, where Python cannot set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
