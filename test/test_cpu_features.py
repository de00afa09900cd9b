"""The CPU capability checks (inference/cpu_features.py) and the precision each engine runs
(inference/precision.py: `auto`, and the refusals), on CPU descriptions given as text or forced with
ZOEDEPTH_CPU_FLAGS, whatever this machine is."""

from __future__ import annotations

import pytest

from zoedepth_ros.inference.cpu_features import REPORTED, cpu_features, parse_cpuinfo
from zoedepth_ros.inference.engines import EngineError
from zoedepth_ros.inference.precision import choose_precision


def _cpuinfo(model: str, flags: str, cores: int, threads_per_core: int = 1) -> str:
    entries = []
    for i in range(cores * threads_per_core):
        entries.append(f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: 0\ncore id\t\t: {i % cores}\n"
                       f"flags\t\t: {flags}\n")
    return "\n".join(entries) + "\n"


AVX2 = _cpuinfo("AMD EPYC 7B12", "fpu sse2 avx avx2 fma", cores=2)
ZEN4 = _cpuinfo("AMD EPYC 9B14", "avx2 avx512f avx512_bf16 avx512_vnni", cores=2)
SPR = _cpuinfo("Intel(R) Xeon(R) Platinum 8480+", "avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile",
               cores=4, threads_per_core=2)
ALDER = _cpuinfo("12th Gen Intel(R) Core(TM) i7-1260P", "avx2 avx_vnni", cores=2)


def test_parse_names_model_cores_threads_and_the_instruction_sets():
    spr = parse_cpuinfo(SPR)
    assert (spr.model, spr.cores, spr.threads) == ("Intel(R) Xeon(R) Platinum 8480+", 4, 8)
    assert spr.native_bf16 and spr.fast_int8
    line = spr.line()
    assert line.startswith("Intel(R) Xeon(R) Platinum 8480+, 4 cores, 8 threads; ")
    assert all(f"{flag} yes" in line for flag in REPORTED)
    avx2 = parse_cpuinfo(AVX2)
    assert not avx2.native_bf16 and not avx2.fast_int8
    assert "avx2 yes, avx512f no, avx512_bf16 no, avx512_vnni no, amx_bf16 no, amx_int8 no" in avx2.line()
    assert "neither avx512_bf16 nor amx_bf16" in avx2.bf16_reason() and "AMD EPYC 7B12" in avx2.bf16_reason()
    zen4 = parse_cpuinfo(ZEN4)
    assert zen4.native_bf16 and zen4.fast_int8 and "amx_bf16 no" in zen4.line()
    alder = parse_cpuinfo(ALDER)  # VEX VNNI: int8 accelerated, bf16 not native
    assert alder.fast_int8 and not alder.native_bf16


def test_flags_can_be_forced_for_tests(monkeypatch):
    monkeypatch.setenv("ZOEDEPTH_CPU_FLAGS", "avx2,fma")
    forced = cpu_features()
    assert forced.flags == {"avx2", "fma"} and forced.forced and not forced.native_bf16
    assert "forced by ZOEDEPTH_CPU_FLAGS" in forced.line()
    monkeypatch.setenv("ZOEDEPTH_CPU_FLAGS", "avx2 amx_bf16 amx_int8")
    assert cpu_features().native_bf16 and cpu_features().fast_int8
    monkeypatch.delenv("ZOEDEPTH_CPU_FLAGS")
    assert not cpu_features().forced


@pytest.mark.parametrize(("cpu", "engine", "on_cpu", "file", "expected"), [
    (SPR, "openvino", True, None, "bf16"),
    (ZEN4, "openvino", True, "fp32", "bf16"),  # an fp32 file compiled in bf16
    (AVX2, "openvino", True, None, "fp32"),
    (AVX2, "openvino", True, "int8", "int8"),  # a file's own precision
    (SPR, "openvino", False, None, "fp32"),  # an Intel GPU
    (SPR, "torch", True, None, "bf16"),
    (AVX2, "torch", True, None, "fp32"),
    (SPR, "torch", False, None, "fp32"),  # CUDA: asked for explicitly
    (SPR, "onnxruntime", True, None, "fp32"),
    (SPR, "onnxruntime", True, "fp16", "fp16"),
    (SPR, "tensorrt", False, None, "fp32"),
])
def test_auto_picks_the_fastest_native_precision(cpu, engine, on_cpu, file, expected):
    precision, why = choose_precision(engine, "auto", on_cpu, file, parse_cpuinfo(cpu))
    assert precision == expected and why.startswith("auto: ")
    if engine == "openvino" and on_cpu and file is None:
        assert ("avx512_bf16" in why) and (("no native bf16" in why) == (expected == "fp32"))


def test_precisions_an_engine_or_cpu_cannot_run_are_refused_with_the_reason():
    avx2, spr = parse_cpuinfo(AVX2), parse_cpuinfo(SPR)
    with pytest.raises(EngineError, match=r"native bf16.*neither avx512_bf16 nor amx_bf16.*fp32 or auto"):
        choose_precision("openvino", "bf16", True, None, avx2)
    assert choose_precision("openvino", "bf16", True, None, spr) == ("bf16", "asked for")
    assert choose_precision("torch", "bf16", True, None, avx2)[0] == "bf16"  # PyTorch's own (slow) emulation
    with pytest.raises(EngineError, match="Intel GPU"):
        choose_precision("openvino", "bf16", False, None, spr)
    with pytest.raises(EngineError, match="precision bf16 does not run on engine 'onnxruntime'"):
        choose_precision("onnxruntime", "bf16", True, None, spr)
    with pytest.raises(EngineError, match=r"int8 export calibrated.*--precision int8 --calibration"):
        choose_precision("openvino", "int8", True, None, spr)
    with pytest.raises(EngineError, match="int8 runs with engine openvino"):
        choose_precision("torch", "int8", True, None, spr)
    with pytest.raises(EngineError, match="exported in int8; set precision int8 or auto"):
        choose_precision("openvino", "fp32", True, "int8", spr)
    with pytest.raises(EngineError, match="precision must be one of auto, fp32, bf16, fp16, int8"):
        choose_precision("openvino", "fp8", True, None, spr)
