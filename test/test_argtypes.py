"""Bad sizes, counts, devices, precisions and engines on the command line are usage errors (exit 2)
that say what was expected."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from zoedepth_ros.cli import main

DEMO_MODEL = Path(__file__).resolve().parents[1] / "zoedepth_ros" / "assets" / "demo_nk.safetensors"
BAD_VALUES = [
    (["synth", "out", "--size", "96x"], "expected HxW such as 480x640, not '96x'"),
    (["synth", "out", "--size", "0x128"], "sizes must be positive, not '0x128'"),
    (["synth", "out", "--frames", "0"], "must be at least 1, not 0"),
    (["synth", "out", "--frames", "ten"], "expected a whole number, not 'ten'"),
    (["demo", "--frames", "-3"], "must be at least 1, not -3"),
    (["benchmark", "--size", "384x512x3"], "expected HxW such as 480x640, not '384x512x3'"),
    (["replay", "bag", "--out", "o", "--rate", "nan"], "must be positive, not nan"),
    (["replay", "bag", "--out", "o", "--timeout", "soon"], "expected a number, not 'soon'"),
    (["evaluate", "bag", "--out", "o", "--worst", "-1"], "must be at least 0, not -1"),
    (["evaluate", "bag", "--out", "o", "--batch-size", "two"], "expected a whole number, not 'two'"),
    # Unknown devices, precisions and engines, for every command that runs a model.
    *[([*cmd, option, value], message) for cmd in (["predict", "img.png", "--model", "m", "-o", "d.npy"],
                                                   ["evaluate", "bag", "--out", "o", "--model", "m"])
      for option, value, message in (("--device", "tpu", "expected auto, cpu, cuda or cuda:N, not 'tpu'"),
                                     ("--device", "cuda:x", "expected auto, cpu, cuda or cuda:N, not 'cuda:x'"),
                                     ("--precision", "fp8", "invalid choice: 'fp8'"),
                                     ("--engine", "coreml", "invalid choice: 'coreml'"))],
    (["train", "--device", "gpu"], "expected auto, cpu, cuda or cuda:N, not 'gpu'"),
    (["export", "m", "-o", "m.onnx", "--precision", "bf16"], "invalid choice: 'bf16'"),
]


@pytest.mark.parametrize("argv, message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_device_this_machine_lacks_is_a_clear_error(tmp_path, capsys):
    """cuda on a machine without CUDA: the model's load says so, exit 2, no traceback."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    assert main(["predict", "--model", str(DEMO_MODEL), "-o", str(tmp_path / "d.npy"),
                 "--device", "cuda", str(image)]) == 2
    assert "CUDA is not available here" in capsys.readouterr().err


def test_good_values_parse():
    from zoedepth_ros.cli import build_parser

    args = build_parser(["synth"]).parse_args(["synth", "out", "--size", "96X128", "--frames", "4"])
    assert (args.size, args.frames) == ((96, 128), 4)
    args = build_parser(["replay"]).parse_args(["replay", "bag", "--out", "o", "--rate", "2.5"])
    assert args.rate == 2.5
