"""The peak GPU memory of processes as nvidia-smi reports it, polled in a thread while a benchmark
runs: what the benchmarks say of a node's GPU memory (the node does not publish its torch.cuda
memory in /diagnostics)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path


def is_node_process(pid: int) -> bool:
    """Whether process `pid` runs the depth node (`python -m zoedepth_ros.cli node`)."""
    try:
        return b"zoedepth_ros.cli\x00node" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class GpuMemoryPeak:
    """The largest GPU memory (MiB) of each process that `counts` (pid -> bool) selects, polled every
    `interval_s` until `stop()`. `why_not` says why nothing was measured (no nvidia-smi, or it failed)."""

    def __init__(self, counts: Callable[[int], bool], interval_s: float = 0.25) -> None:
        self.peak_mib: dict[int, int] = {}
        self.why_not: str | None = None
        self._counts = counts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(interval_s,), daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, pids: Iterable[int], interval_s: float = 0.25) -> GpuMemoryPeak:
        """The peak of each of `pids`."""
        wanted = set(pids)
        return cls(wanted.__contains__, interval_s)

    def _poll(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                rows = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                       "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                      timeout=5, check=True).stdout.splitlines()
            except (OSError, subprocess.SubprocessError) as exc:
                self.why_not = f"nvidia-smi failed: {exc}"
                return
            for row in rows:
                with contextlib.suppress(ValueError):
                    pid, used = (int(field) for field in row.split(","))
                    if self._counts(pid):
                        self.peak_mib[pid] = max(self.peak_mib.get(pid, 0), used)

    def stop(self) -> dict[int, int]:
        """Stops polling; the peaks seen, by pid."""
        self._stop.set()
        self._thread.join(timeout=10)
        return self.peak_mib
