"""Process-level helpers around the depth node, without rclpy: the shipped Fast DDS profile, a
node in its own process (`demo`, `benchmark`) and how such a process is stopped, and the allocator
setting the node runs with."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

DDS_PROFILE_NAME = "fastdds_large_images.xml"
DDS_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"  # what Fast DDS 2.x (ROS 2 Jazzy) reads


def shipped_dds_profile() -> Path:
    """config/fastdds_large_images.xml: in the source tree, or in share/zoedepth_ros after a colcon
    install (the package then lives in <prefix>/lib/pythonX.Y/site-packages)."""
    package = Path(__file__).resolve().parents[1]  # the zoedepth_ros folder
    candidates = [package.parent / "config" / DDS_PROFILE_NAME]
    if len(package.parents) > 3:
        candidates.append(package.parents[3] / "share" / "zoedepth_ros" / "config" / DDS_PROFILE_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{DDS_PROFILE_NAME} not found in {' or '.join(str(p.parent) for p in candidates)}")


@contextlib.contextmanager
def dds_profile(profile: str | os.PathLike | None):
    """Within the block, Fast DDS participants created by this process and its children (the node
    of `node_process`) use `profile`; None means Fast DDS defaults. Fast DDS reads the variable
    when a process creates its first participant: enter before rclpy.init."""
    saved = os.environ.get(DDS_PROFILE_VARIABLE)
    if profile is None:
        os.environ.pop(DDS_PROFILE_VARIABLE, None)
    else:
        os.environ[DDS_PROFILE_VARIABLE] = str(profile)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(DDS_PROFILE_VARIABLE, None)
        else:
            os.environ[DDS_PROFILE_VARIABLE] = saved


@contextlib.contextmanager
def node_process(namespace: str, parameters: dict[str, object], log):
    """`zoedepth-ros node` in its own process under `namespace` (benchmark, demo), stopped on exit.

    Its image input is reliable whatever publishes (input_reliability reliable): between processes,
    best effort loses most large frames (keep-last 1 still never builds a backlog). `log` receives its output: a file,
    as an undrained pipe would block the node. It inherits this process's environment, so its
    Fast DDS profile too (`dds_profile`).
    """
    cmd = [sys.executable, "-m", "zoedepth_ros.cli", "node", "--ros-args", "-r", f"__ns:={namespace}",
           "-p", "input_reliability:=reliable"]
    for name, value in parameters.items():
        cmd += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0, sig: int | None = signal.SIGTERM):
    """Stop `proc` and reap it: send `sig` unless it has already exited, wait up to `timeout` s,
    then SIGKILL. `sig` None sends nothing: closing its stdin (done here) is how a process that
    reads commands is asked to stop. Its stdout, when a pipe, is drained meanwhile (a full pipe
    would block it) and returned (None without one)."""
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


def keep_freed_buffers() -> bool:
    """Let glibc keep freed multi-megabyte blocks in the heap for the next frame; True if applied.

    Each frame allocates and frees several buffers of 1-5 MB (rclpy's C copy of every output,
    Fast DDS's serialized payloads). glibc hands blocks that large straight back to the kernel, and
    the next frame page-faults the same memory in again: ~8 ms per 640x480 cloud on a 2-core CPU
    (docs/benchmarks.md). Blocks up to 32 MB (glibc's ceiling for this setting) now come from the
    heap, which keeps up to 256 MB of free space instead of trimming it. Other C libraries: no-op.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))
