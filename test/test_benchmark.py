"""`zoedepth-ros benchmark` runs both implementations on the same weights and reports ratios."""

from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path

import pytest
import torch
from export_helpers import unoptimized_exports

from zoedepth_ros.bench.models import arch_config, build_models
from zoedepth_ros.bench.timing import interleaved
from zoedepth_ros.cli import main
from zoedepth_ros.inference.cpu_features import cpu_features


def test_reference_gets_our_weights():
    ours, port = build_models("tiny-NK", reference=True)
    x = torch.randn(1, 3, 192, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).metric_depth[:, 0], port(pixel_values=x).predicted_depth,
                                   rtol=1e-4, atol=1e-5)


def test_architecture_names():
    """--arch and --node-arch read names with the model package's parser (config_from_arch)."""
    from zoedepth_ros.model import PRESETS, tiny_config

    assert arch_config("ZoeD_M12_K") == PRESETS["ZoeD_M12_K"]
    assert arch_config("tiny-NK") == arch_config("tiny-nk") == tiny_config("NK")
    with pytest.raises(SystemExit, match=r"unknown --arch 'tiny-X': use one of ZoeD_M12_N, ZoeD_M12_K, ZoeD_M12_NK "
                                         r"or tiny-N/tiny-K/tiny-NK"):
        arch_config("tiny-X")


def this_machine() -> str:
    """The report's description of the machine it ran on, worked out here: the first CPU model
    name of /proc/cpuinfo, its cores and threads, whether its flags hold each instruction set that
    decides bf16 and int8 speed, torch's threads and version, the Python."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    found = re.search(r"^model name\s*:\s*(.+?)\s*$", text, re.MULTILINE)
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.MULTILINE).group(1).split()) if "flags" in text else set()
    blocks = [dict(re.findall(r"^(physical id|core id)\s*:\s*(\S+)", b, re.MULTILINE)) for b in text.split("\n\n")]
    cores = len({(b["physical id"], b["core id"]) for b in blocks if len(b) == 2})
    threads = len(re.findall(r"^processor\s*:", text, re.MULTILINE))
    sets = ", ".join(f"{s} {'yes' if s in flags else 'no'}"
                     for s in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"))
    return (f"{found.group(1) if found else 'unknown CPU'}, {f'{cores} cores, ' if cores else ''}"
            f"{threads} threads; {sets}; {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}, {platform.python_implementation()} {platform.python_version()}")


def check_ratios(rows: list[dict], expected: set[tuple[str, str]]) -> None:
    """The rows carry exactly the `expected` (row, "vs REF") ratios, each the row's median time over
    that of row REF."""
    by_name = {r["name"]: r for r in rows}
    assert {(r["name"], key) for r in rows for key in r if key.startswith("vs ")} == expected
    for name, key in expected:
        row, reference = by_name[name], by_name[key[len("vs "):]]
        assert row[key] == pytest.approx(row["median_ms"] / reference["median_ms"], rel=1e-12), (name, key)


def test_forward_and_estimator_report(tmp_path, capsys, monkeypatch):
    from zoedepth_ros.inference import torch_engine

    # torch.compile with the eager backend: the compiled row, its ratios and its compile time
    # reported apart are under test here; inductor's own compile (20 s of this test) and its
    # agreement with eager are test_estimator's.
    compile_model = torch_engine.compile_model
    monkeypatch.setattr(torch_engine, "compile_model", lambda model, device: compile_model(model, device, "eager"))
    out = tmp_path / "bench.json"
    started = time.perf_counter()
    assert main(["benchmark", "--arch", "tiny-NK", "--parts", "forward,estimator", "--precision", "fp32",
                 "--size", "192x256", "--frame", "120x160", "--iters", "1", "--warmup", "0", "--compile",
                 "--out", str(out)]) == 0
    elapsed_s = time.perf_counter() - started
    results = json.loads(out.read_text())
    forward = {r["name"]: r for r in results["forward"]}
    assert set(forward) == {"ours fp32", "ours fp32 compiled", "port fp32"}
    check_ratios(results["forward"], {("ours fp32", "vs port fp32"), ("ours fp32 compiled", "vs port fp32"),
                                      ("ours fp32 compiled", "vs ours fp32")})
    assert 0 < results["compile_s"]["ours fp32 compiled"] < elapsed_s
    estimator = {r["name"]: r for r in results["estimator"]}
    assert set(estimator) == {"ours fp32", "ours fp32 flip", "port fp32", "port fp32 flip"}
    check_ratios(results["estimator"], {("ours fp32", "vs port fp32"), ("ours fp32 flip", "vs port fp32 flip")})
    assert results["machine"] == this_machine()
    assert "vs port fp32" in capsys.readouterr().out


def test_engines_are_timed_against_ours_and_the_port(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOEDEPTH_ROS_ENGINES", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    # tiny-N: one export is enough here; test_engines checks every NK route. Unoptimized: the rows,
    # ratios and parity report are under test here, not the file as shipped.
    with unoptimized_exports():
        assert main(["benchmark", "--arch", "tiny-N", "--parts", "forward,parity", "--precision", "fp32",
                     "--engines", "torch,onnxruntime,openvino", "--size", "192x256", "--iters", "1", "--warmup", "0",
                     "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert {r["name"] for r in results["forward"]} == {"ours fp32", "port fp32", "onnxruntime fp32", "openvino fp32"}
    check_ratios(results["forward"], {("ours fp32", "vs port fp32"), *{
        (f"{e} fp32", ref) for e in ("onnxruntime", "openvino") for ref in ("vs ours fp32", "vs port fp32")}})
    assert set(results["compile_s"]) == {"ONNX export", "onnxruntime fp32 load", "openvino fp32 load"}
    for engine in ("onnxruntime fp32", "openvino fp32"):
        assert results["agreement"][engine]["median_rel"] < 1e-5
    assert {(r["engine"], r["case"]) for r in results["parity"]} == {
        ("onnxruntime", "single head"), ("openvino", "single head")}
    assert all(r["ok"] for r in results["parity"])


def time_every_precision(tmp_path, monkeypatch) -> dict:
    """The forward part on tiny-N: torch and openvino in fp32, bf16 and int8; its JSON results."""
    monkeypatch.setenv("ZOEDEPTH_ROS_ENGINES", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--arch", "tiny-N", "--parts", "forward", "--precision", "fp32,bf16,int8",
                 "--engines", "torch,openvino", "--reference", "none", "--size", "96x128", "--iters", "1",
                 "--warmup", "0", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_precisions_this_cpu_lacks_are_skipped_with_the_reason(tmp_path, monkeypatch, capsys):
    """The capability check forced to an AVX2-only CPU: bf16 and int8 are skipped, named with the
    missing instruction sets, the rest is timed, and the command exits 0."""
    monkeypatch.setenv("ZOEDEPTH_CPU_FLAGS", "avx2 fma")
    results = time_every_precision(tmp_path, monkeypatch)
    assert {r["name"] for r in results["forward"]} == {"ours fp32", "openvino fp32"}
    skipped = results["skipped"]
    assert set(skipped) == {"ours bf16", "ours int8", "openvino bf16", "openvino int8"}
    assert "neither avx512_bf16 nor amx_bf16" in skipped["ours bf16"] == skipped["openvino bf16"]
    assert "none of avx512_vnni, avx_vnni, amx_int8" in skipped["openvino int8"]
    assert "int8 is an export that OpenVINO runs" in skipped["ours int8"]
    assert "avx2 yes, avx512f no, avx512_bf16 no" in results["machine"] and "forced by" in results["machine"]
    assert "skipped: ours bf16 (no native bf16" in capsys.readouterr().out


@pytest.mark.skipif(not (cpu_features().native_bf16 and cpu_features().fast_int8),
                    reason="needs a CPU with native bf16 and int8 (avx512_bf16/amx_bf16, vnni/amx_int8)")
def test_every_engine_and_precision_this_cpu_runs_is_timed_with_its_agreement(tmp_path, monkeypatch):
    results = time_every_precision(tmp_path, monkeypatch)
    timed = {"ours fp32", "ours bf16", "openvino fp32", "openvino bf16", "openvino int8"}
    assert {r["name"] for r in results["forward"]} == timed
    check_ratios(results["forward"], {(name, "vs ours fp32") for name in timed - {"ours fp32"}})
    assert set(results["skipped"]) == {"ours int8"}
    agreement = results["agreement"]
    assert set(agreement) == timed - {"ours fp32"}
    assert agreement["openvino fp32"]["median_rel"] < 1e-5
    for name in ("ours bf16", "openvino bf16"):
        assert agreement[name]["median_rel"] < 1e-2, name
    # int8 calibrated on 4 synthetic frames, random weights: a loose bound on speed-only calibration.
    assert agreement["openvino int8"]["median_rel"] < 5e-2
    assert results["compile_s"]["openvino int8 quantization (NNCF, 4 frames) and load"] > 0


def test_node_part_command_line_reaches_bench_node(tmp_path, monkeypatch, capsys):
    """`benchmark --parts node` hands its options and the shipped DDS profile to bench_node, and
    what it returns goes to --out and the printed report. The node part itself runs end to end over
    DDS in test_gpu_check's dry run (frames, losses, latency order, overhead, the profile accepted)."""
    from zoedepth_ros import benchmark
    from zoedepth_ros.ros.processes import shipped_dds_profile

    calls = []
    measured = {key: {"frames": 5, "lost": 0, "p50_ms": 12.5, "p95_ms": 13.0, "p99_ms": 14.0, "overhead_p50_ms": 9.5,
                      "forward_p50_ms": 3.0, "node_inference_p50_ms": 4.0, "transport_p50_ms": 8.5}
                for key in ("depth", "depth+cloud")}
    measured.update(forward={"median_ms": 3.25}, open_loop={"sent_hz": 50.0, "output_hz": 17.5, "received": 35,
                                                           "age_p50_ms": 21.0, "age_p99_ms": 40.0})
    monkeypatch.setattr(benchmark, "bench_node", lambda *args, **kwargs: calls.append((args, kwargs)) or measured)
    out = tmp_path / "node.json"
    assert main(["benchmark", "--parts", "node", "--frame", "120x160", "--node-frames", "5", "--node-rate", "50",
                 "--out", str(out)]) == 0
    profile = str(shipped_dds_profile())
    assert profile.endswith("config/fastdds_large_images.xml")
    assert calls == [(("tiny-NK", (96, 128), (120, 160), 5), {"warmup": 5, "rate_s": 1 / 50, "profile": profile,
                                                              "compressed_depth": None})]
    assert json.loads(out.read_text())["node"] == {**measured, "dds_profile": profile}
    printed = capsys.readouterr().out
    assert f"model forward here 3.2 ms; DDS profile: {profile}" in printed
    assert "p50    12.5 ms" in printed and "(5 frames, 0 lost)" in printed and "output 17.5 Hz" in printed


def test_dds_profile_must_exist(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit, match="no such file"):
        main(["benchmark", "--parts", "node", "--dds-profile", str(tmp_path / "missing.xml")])


def test_rounds_alternate_the_order():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, iters=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert {name: len(samples) for name, samples in times.items()} == {"a": 3, "b": 3}  # warm-up untimed


def test_multicam_part_command_line_reaches_bench_multicam(tmp_path, monkeypatch, capsys):
    """`benchmark --parts multicam` hands its options (camera counts, model size, rate, seconds,
    max_batch, the shipped DDS profile) to bench_multicam, and the rows it returns go to --out and
    the printed tables. The multi-camera part itself runs over DDS in test_gpu_check's dry run."""
    from zoedepth_ros import benchmark
    from zoedepth_ros.bench.multicam import SETUP_MULTI, SETUP_NODES
    from zoedepth_ros.ros.processes import shipped_dds_profile

    calls = []
    rows = [{"n": n, "setup": setup, "fps_min": 9.5, "fps_max": 10.0, "age_p50_ms": 80.0, "age_p99_ms": 120.0,
             "peak_rss_mib_total": 700.0 * n, "peak_rss_mib_ratio": float(n), "pss_mib_total": 600.0,
             "pss_mib_ratio": 1.0} for n in (1, 2) for setup in (SETUP_MULTI, SETUP_NODES)]
    monkeypatch.setattr(benchmark, "bench_multicam", lambda *args, **kwargs: calls.append((args, kwargs)) or rows)
    out = tmp_path / "multicam.json"
    assert main(["benchmark", "--parts", "multicam", "--cameras", "2", "--multicam-img-size", "96x128",
                 "--multicam-seconds", "1.5", "--multicam-max-batch", "2", "--multicam-rate", "12",
                 "--frame", "120x160", "--out", str(out)]) == 0
    profile = str(shipped_dds_profile())
    assert calls == [(("tiny-NK", (96, 128), (120, 160), [2], 12.0, 1.5, profile), {"node_params": {"max_batch": 2}})]
    assert json.loads(out.read_text())["multicam"] == {
        "arch": "tiny-NK", "img_size": "96x128", "rate_hz": 12.0, "seconds": 1.5, "rows": rows, "max_batch": 2,
        "dds_profile": profile}
    printed = capsys.readouterr().out
    assert "max_batch 2" in printed and "1.5 s per setup" in printed
    assert f"| 2 | {SETUP_NODES} | 9.50 / 10.00 | 80 / 120 | 1400 (2.00x) | 600 (1.00x) |" in printed


def test_codec_part_reports_bytes_and_times_per_codec(tmp_path, capsys):
    out = tmp_path / "codec.json"
    assert main(["benchmark", "--parts", "codec", "--frame", "48x64", "--iters", "2", "--warmup", "0",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["codec"]
    codecs = ["raw", "rvl", "png level 1", "png level 3", "png level 9"]
    assert [(r["scene"], r["codec"]) for r in rows] == [(s, c) for s in ("indoor", "outdoor") for c in codecs]
    for scene in ("indoor", "outdoor"):
        by_codec = {r["codec"]: r for r in rows if r["scene"] == scene}
        assert by_codec["raw"]["bytes"] == 48 * 64 * 4 and by_codec["raw"]["ratio"] == 1.0
        assert by_codec["png level 9"]["bytes"] <= by_codec["png level 1"]["bytes"] < by_codec["raw"]["bytes"]
        assert by_codec["rvl"]["ratio"] > 1
        for r in by_codec.values():
            assert r["ratio"] == pytest.approx(by_codec["raw"]["bytes"] / r["bytes"])
            assert r["encode"]["n"] == r["decode"]["n"] == 2 and r["encode"]["median_ms"] > 0
    assert rows[-1]["valid_fraction"] < 1  # the outdoor sky has no depth
    assert "png level 9" in capsys.readouterr().out


def test_filter_part_times_every_temporal_filter(tmp_path, capsys):
    from zoedepth_ros.inference.temporal_filter import TEMPORAL_FILTERS

    out = tmp_path / "filter.json"
    assert main(["benchmark", "--parts", "filter", "--frame", "48x64", "--iters", "3", "--warmup", "1",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["filter"]
    assert [r["filter"] for r in rows] == list(TEMPORAL_FILTERS)
    assert all(r["n"] == 3 and r["p90_ms"] >= r["median_ms"] > 0 for r in rows)
    assert "scale+ema" in capsys.readouterr().out
