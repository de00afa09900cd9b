"""What this CPU computes natively: the instruction sets that make bf16 and int8 inference fast.

Read once from /proc/cpuinfo (the first processor's `model name` and `flags`; the core count from
the distinct (physical id, core id) pairs, the threads from the processor entries). Importable
without torch.

- bf16 is native with AVX512_BF16 (AMD Zen 4+, Intel Cooper Lake+) or AMX_BF16 (Intel Sapphire
  Rapids+); without them a bf16 matrix product is emulated, several times slower than fp32.
- int8 is accelerated with AVX512_VNNI, AVX_VNNI (the VEX form on Alder Lake and later) or AMX_INT8.

`ZOEDEPTH_CPU_FLAGS` (space- or comma-separated flags, e.g. `avx2 fma`) replaces the flags read
from /proc/cpuinfo: it exists to force the capability checks in tests, never to turn on an
instruction set a CPU lacks.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# The instruction sets a report names (in this order), whether present or not.
REPORTED = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
FLAGS_ENV = "ZOEDEPTH_CPU_FLAGS"


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    cores: int  # physical cores (0 when /proc/cpuinfo does not say)
    threads: int  # logical processors
    flags: frozenset[str]
    forced: bool = False  # flags from ZOEDEPTH_CPU_FLAGS

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def fast_int8(self) -> bool:
        return any(f in self.flags for f in INT8_FLAGS)

    def bf16_reason(self) -> str:
        """Why bf16 is or is not native here, naming the instruction sets."""
        have = [f for f in BF16_FLAGS if f in self.flags]
        if have:
            return f"native bf16 ({', '.join(have)})"
        return f"no native bf16 (this CPU, {self.model}, has neither {' nor '.join(BF16_FLAGS)})"

    def int8_reason(self) -> str:
        have = [f for f in INT8_FLAGS if f in self.flags]
        if have:
            return f"accelerated int8 ({', '.join(have)})"
        return f"no accelerated int8 (this CPU, {self.model}, has none of {', '.join(INT8_FLAGS)})"

    def line(self) -> str:
        """`MODEL, N cores, M threads; avx2 yes, avx512f no, ...`: how reports name the machine."""
        cores = f"{self.cores} cores, " if self.cores else ""
        sets = ", ".join(f"{f} {'yes' if f in self.flags else 'no'}" for f in REPORTED)
        return f"{self.model}, {cores}{self.threads} threads; {sets}" + (f" (forced by {FLAGS_ENV})"
                                                                         if self.forced else "")


def parse_cpuinfo(text: str, forced_flags: str | None = None) -> CpuFeatures:
    """The features described by the text of /proc/cpuinfo; `forced_flags` replaces its flags."""
    model, flags, threads, cores = "", None, 0, set()
    physical = core = None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            threads += 1
        elif key == "model name" and not model:
            model = value
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not line.strip() and physical is not None and core is not None:
            cores.add((physical, core))
            physical = core = None
    if physical is not None and core is not None:
        cores.add((physical, core))
    forced = forced_flags is not None
    if forced:
        flags = frozenset(forced_flags.replace(",", " ").split())
    return CpuFeatures(model or platform.processor() or "unknown CPU", len(cores), threads or (os.cpu_count() or 0),
                       flags or frozenset(), forced)


@cache
def _read(forced_flags: str | None) -> CpuFeatures:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: nothing known, so nothing native is claimed
        text = ""
    return parse_cpuinfo(text, forced_flags)


def cpu_features() -> CpuFeatures:
    """This machine's CPU (read once; `ZOEDEPTH_CPU_FLAGS` replaces the flags, read at each call)."""
    return _read(os.environ.get(FLAGS_ENV))
