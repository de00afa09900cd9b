"""Helpers of the export and engine tests: exports without the optimizer pass, test frames, the int8 check."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch


@contextlib.contextmanager
def unoptimized_exports() -> Iterator[None]:
    """ONNX exports made inside skip the optimizer pass (onnxscript's rewriter and constant folding:
    about half of an export's seconds). For the tests whose point is what the estimator, the cache,
    the CLI or a loader do around the file. The file as shipped (optimized) is checked by
    test_engines' determinism test, its parity test at SIZES[0] for every kind, the tests on its
    shared `exported` file and the int8 tests (NNCF's ONNX backend needs the optimized graph's
    value_info), and by test_node_engines' engine test."""
    export = torch.onnx.export

    def unoptimized_export(*args, **kwargs):
        return export(*args, **{**kwargs, "optimize": False})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.onnx, "export", unoptimized_export)
        yield


def structured_frames(n: int, height: int = 120, width: int = 160, seed: int = 0) -> list[np.ndarray]:
    """`n` smooth, structured RGB frames with some noise (pure noise would make every depth map alike)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    return [np.clip(np.stack([xx * (i + 1) % 256, yy * 2 % 256, (xx + yy) % 256], -1)
                    + rng.integers(0, 40, (height, width, 3)), 0, 255).astype(np.uint8) for i in range(n)]


def check_int8_close_to_fp32(path, model) -> None:
    """The int8 export at `path` (.onnx or .xml) of the tiny `model` on engine openvino: `auto` takes
    the file's int8, each frame's depth within a loose bound of the fp32 model's (int8 weights and
    activations on random weights; the bins head is fp32), the same route, a finite std; fp32 is
    refused."""
    from zoedepth_ros.inference import DepthEstimator, EngineError

    frames = structured_frames(3, 192, 256, seed=5)
    expected = DepthEstimator(model, device="cpu").predict_batch(frames)
    estimator = DepthEstimator(path, device="cpu", engine="openvino", precision="auto")
    assert estimator.precision == "int8" and estimator.precision_reason == "auto: the exported file is int8"
    got = estimator.predict_batch(frames, with_std=True)
    for g, e in zip(got, expected, strict=True):
        assert np.median(np.abs(g.depth - e.depth) / e.depth) < 2e-2
        assert g.domain == e.domain and np.isfinite(g.std).all()
    with pytest.raises(EngineError, match="exported in int8; set precision int8"):
        DepthEstimator(path, device="cpu", engine="openvino", precision="fp32")


def check_evaluate_runs_int8(path, bag: Path, out: Path) -> None:
    """`evaluate` scores the 4 frames of `bag` with the int8 export at `path` on engine openvino."""
    from zoedepth_ros.cli import main

    assert main(["evaluate", str(bag), "--model", str(path), "--engine", "openvino", "--precision", "int8",
                 "--protocol", "nyu", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["inference"]["precision"] == "int8"
