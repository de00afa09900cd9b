"""int8 exports written as an OpenVINO IR (`export --precision int8 -o NAME.xml`: NNCF's OpenVINO
backend, model/openvino_ir.py): metadata, loading, errors, atomic writes (tiny random models).

The full-size figures (memory, time) are in docs/engines.md, "int8".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_helpers import check_evaluate_runs_int8, check_int8_close_to_fp32, structured_frames

from zoedepth_ros.cli import main
from zoedepth_ros.inference import DepthEstimator, EngineError
from zoedepth_ros.inference.engine_factory import make_engine
from zoedepth_ros.model.export import ExportError, read_export_info
from zoedepth_ros.model.openvino_ir import read_ir, save_ir, weights_path

openvino = pytest.importorskip("openvino")
nncf = pytest.importorskip("nncf")


def _small_model(with_weights: bool = True):
    """pixels (1, 3, 4, 4) -> depth: an openvino.Model with a constant (so a non-empty .bin)."""
    from openvino import opset13 as ops

    pixels = ops.parameter([1, 3, 4, 4], np.float32, name="pixels")
    out = ops.relu(pixels)
    if with_weights:
        out = ops.add(out, ops.constant(np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)))
    model = openvino.Model([out], [pixels], "small")
    model.outputs[0].get_tensor().set_names({"depth"})
    return model


@pytest.fixture(scope="module")
def ir_export(tmp_path_factory, tiny_checkpoint):
    """The tiny NK checkpoint exported in int8 as an OpenVINO IR by the CLI, calibrated on a
    4-frame synthetic bag."""
    directory = tmp_path_factory.mktemp("int8_ir")
    bag = directory / "calib_indoor"
    assert main(["synth", str(bag), "--kind", "indoor", "--frames", "4", "--size", "120x160"]) == 0
    out = directory / "nk_int8.xml"
    assert main(["export", tiny_checkpoint("NK"), "-o", str(out), "--precision", "int8", "--calibration",
                 str(bag), "--std", "--no-progress"]) == 0
    return out, bag


def test_int8_ir_export_carries_its_metadata_and_runs_on_openvino_close_to_fp32(ir_export, tiny_model):
    path, bag = ir_export
    assert weights_path(path).is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [bag.name, "nk_int8.bin", "nk_int8.xml"]
    info = read_export_info(path)
    assert info.precision == "int8" and info.with_std and info.size == (192, 256) and info.batch == 1
    assert info.config == tiny_model("NK").config and info.outputs == ("depth", "logits", "std")
    assert info.source.endswith("tiny.safetensors") and len(info.weights_sha256) == 64
    calibration = json.loads(info.calibration)
    assert calibration["bags"] == {bag.name: 4} and calibration["frames"] == 4
    assert calibration["nncf"] == nncf.__version__ and calibration["nncf_backend"] == "openvino"
    assert calibration["fp32_scope"] == "model.metric_head, model.reassemble, model.decoder"
    assert calibration["date"].startswith("20")
    # The same keys an ONNX export carries in its metadata_props, in the IR's rt_info.
    metadata, inputs, outputs = read_ir(path)
    assert metadata == info.metadata() and inputs == ["pixels"] and outputs == list(info.outputs)
    # The encoder alone is quantized: of the convolutions only its patch embedding takes int8 input,
    # none of the reassembly's, the decoder's or the bins head's (OpenVINO names those after their
    # ONNX nodes only in part: `<node>/WithoutBiases`, `ConvolutionBackpropData_N`).
    quantized = {target.get_node() for op in openvino.Core().read_model(str(path)).get_ops()
                 if op.get_type_name() == "FakeQuantize" for target in op.output(0).get_target_inputs()}
    assert quantized and [op.get_type_name() for op in quantized if "Convolution" in op.get_type_name()] == \
        ["Convolution"]
    check_int8_close_to_fp32(path, tiny_model("NK"))

def test_evaluate_and_predict_take_an_int8_ir_as_model(ir_export, tmp_path):
    path, bag = ir_export
    check_evaluate_runs_int8(path, bag, tmp_path / "eval")
    import cv2

    image = tmp_path / "in.png"
    cv2.imwrite(str(image), structured_frames(1, 96, 128)[0])
    assert main(["predict", "--model", str(path), "--engine", "openvino", "--precision", "auto",
                 "-o", str(tmp_path / "d.npy"), str(image)]) == 0
    depth = np.load(tmp_path / "d.npy")
    assert depth.shape == (96, 128) and np.isfinite(depth).all()


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "tensorrt"])
def test_an_int8_ir_on_another_engine_says_to_use_openvino(engine, tmp_path):
    path = tmp_path / "model_int8.xml"  # checked by its name, before anything is read
    with pytest.raises(EngineError, match=r"is an OpenVINO IR .* run it with engine openvino"):
        make_engine(engine, str(path))
    with pytest.raises(EngineError, match="run it with engine openvino"):
        DepthEstimator(path, device="cpu", engine=engine, precision="auto")


def test_export_to_xml_needs_int8_and_says_what_to_write(tmp_path, capsys):
    model = tmp_path / "never_read.safetensors"  # the options are checked before the model loads
    assert main(["export", str(model), "-o", str(tmp_path / "m.xml")]) == 2
    err = capsys.readouterr().err
    assert "OpenVINO IR (.xml) is written for --precision int8 only" in err and "-o m.onnx" in err
    assert main(["export", str(model), "-o", str(tmp_path / "m.xml"), "--precision", "fp16"]) == 2
    assert "export fp16 to an .onnx" in capsys.readouterr().err
    assert main(["export", str(model), "-o", str(tmp_path / "m.bin"), "--precision", "int8", "--calibration",
                 str(tmp_path)]) == 2
    assert "must end in .onnx (or .xml for an int8 OpenVINO IR)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_ir_write_is_atomic_and_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.xml"
    metadata = {"zoedepth_ros.precision": "int8", "zoedepth_ros.source": ""}
    save_ir(_small_model(), path, metadata)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    before = path.read_bytes(), weights_path(path).read_bytes()
    assert read_ir(path)[0] == metadata

    def failing_save(model, output, compress_to_fp16=True):  # a disk full half-way through
        with open(output, "w") as f:
            f.write("<net")
        weights_path(output).write_bytes(b"\0" * 8)
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(openvino, "save_model", failing_save)
    with pytest.raises(RuntimeError, match="No space"):
        save_ir(_small_model(), path, {"zoedepth_ros.precision": "fp32"})
    # No temporary file left, the previous export untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    assert (path.read_bytes(), weights_path(path).read_bytes()) == before
    with pytest.raises(RuntimeError, match="No space"):
        save_ir(_small_model(), tmp_path / "new.xml", metadata)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    with pytest.raises(ValueError, match="not under zoedepth_ros"):
        save_ir(_small_model(), tmp_path / "other.xml", {"precision": "int8"})


def test_unreadable_irs_are_export_errors_naming_the_file(tmp_path):
    bare = tmp_path / "bare.xml"
    openvino.save_model(_small_model(), str(bare), compress_to_fp16=False)
    with pytest.raises(ExportError, match="bare.xml: not a zoedepth-ros OpenVINO IR export"):
        read_export_info(bare)
    truncated = tmp_path / "truncated.xml"
    save_ir(_small_model(), truncated, {"zoedepth_ros.format": "zoedepth_ros.onnx/1"})
    data = weights_path(truncated).read_bytes()
    weights_path(truncated).write_bytes(data[:len(data) // 2])
    with pytest.raises(ExportError, match="truncated.xml: not a readable OpenVINO IR"):
        read_export_info(truncated)
    weights_path(truncated).unlink()
    with pytest.raises(ExportError, match=r"truncated.bin is missing"):
        read_export_info(truncated)
    with pytest.raises(ExportError, match="nope.xml: no such OpenVINO IR"):
        read_export_info(tmp_path / "nope.xml")
