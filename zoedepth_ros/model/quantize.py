"""int8 exports: post-training quantization of the ONNX export with NNCF, calibrated on camera frames.

The model is exported in fp32 (export.py), then NNCF (OpenVINO's quantizer, `pip install nncf`)
inserts int8 QuantizeLinear / DequantizeLinear pairs into the ONNX graph, with scales from the
statistics of the calibration frames (`nncf.ModelType.TRANSFORMER`: SmoothQuant and the
transformer-aware scheme). Only the BEiT encoder is quantized: the metric bins head
(`model.metric_head`: router, projectors, seed regressors, attractors, log-binomial; its
log-binomial divides by temperatures down to 0.02) and the DPT reassembly and decoder stay fp32
(`FP32_SCOPES`: quantizing the decoder too cost the demo model 15 % abs_rel outdoors). OpenVINO runs
the quantized layers in int8 (VNNI / AMX where the CPU has them).

The file is an ONNX file like any other export, with precision `int8` and the calibration's
provenance (`zoedepth_ros.calibration`: the bags, frames used, NNCF version, date) in its metadata;
run it with `engine: openvino` (precision int8 or auto). Asked for a `.xml`, the same scheme goes
through NNCF's OpenVINO backend instead and writes an OpenVINO IR (`.xml` + `.bin`, openvino_ir.py)
with the same metadata in its rt_info: at full size the ONNX backend's calibration in ONNX Runtime
does not fit in 24 GB, the OpenVINO backend's does (docs/engines.md, "int8").

Calibration frames go through the network input the estimator gives them (RGB in [0, 1],
bilinear resize to the file's size, mean/std 0.5): at most `max_frames` frames, spread evenly over
the bags' frames.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from .export import ExportError, ExportInfo, export_onnx, read_export_info
from .openvino_ir import IR_SUFFIX, save_ir
from .zoedepth import ZoeDepth

DEFAULT_MAX_FRAMES = 300
# Modules of the ExportGraph kept in fp32: the bins head, and the DPT reassembly and decoder. With
# only the head kept, the demo model's abs_rel on held-out outdoor bags rose 15 % (indoor 2 %); with
# the decoder too, both within 0.3 %. BEiT's blocks, the bulk of the compute, are quantized.
HEAD_SCOPE = "model.metric_head"
FP32_SCOPES = (HEAD_SCOPE, "model.reassemble", "model.decoder")


def network_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(1, 3, H, W) float32 network input of an (h, w, 3) uint8 RGB frame: the estimator's pre-processing
    with the frame stretched to the file's size."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=True).sub_(0.5).div_(0.5)
    return x.numpy()


def calibration_frames(bags: Sequence[str | os.PathLike], max_frames: int = DEFAULT_MAX_FRAMES,
                       progress: bool = True) -> tuple[list[np.ndarray], dict]:
    """Up to `max_frames` RGB frames spread evenly over the frames of `bags` (evaluation bags), and
    their provenance (bag names and frames taken of each)."""
    from tqdm import tqdm

    from ..data.bag import message_count, read_frames
    from ..data.bag_layout import DEFAULT_TOPICS

    if not bags:
        raise ExportError("int8 needs calibration frames: --calibration BAG [BAG ...]")
    counts = [message_count(bag, DEFAULT_TOPICS.camera_info) for bag in bags]
    for bag in bags:
        read_frames(bag)  # every bag's topics checked before the long part
    total = sum(counts)
    if total == 0:
        raise ExportError(f"the calibration bags {', '.join(map(str, bags))} hold no frames")
    wanted = set(np.linspace(0, total - 1, min(max_frames, total)).round().astype(int).tolist())
    frames, taken, index = [], {}, 0
    with tqdm(total=len(wanted), desc="calibration frames", unit="frame", disable=not progress) as bar:
        for bag in bags:
            name = Path(bag).name
            taken[name] = 0
            for frame in read_frames(bag):
                if index in wanted:
                    frames.append(frame.rgb)
                    taken[name] += 1
                    bar.update()
                index += 1
    return frames, {"bags": taken, "frames": len(frames)}


@contextmanager
def _lean_onnxruntime():
    """NNCF's ONNX backend runs the model in ONNX Runtime with its default session options, whose
    constant folding of the 24 relative-position biases peaks past 10 GB for the full model
    (docs/engines.md, "Speed and memory"): with that, the calibration of ZoeD-M12-NK did not fit in
    24 GB. Within this block its sessions run without graph optimizations (the biases recomputed per
    frame: slower, a third of the memory). NNCF creates every session in `nncf.onnx.engine`."""
    import onnxruntime
    from nncf.onnx import engine

    class Options(onnxruntime.SessionOptions):
        def __init__(self):
            super().__init__()
            self.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL

    original = engine.rt
    engine.rt = SimpleNamespace(SessionOptions=Options, InferenceSession=onnxruntime.InferenceSession)
    try:
        yield
    finally:
        engine.rt = original


def calibration_items(frames: Sequence[np.ndarray], size: tuple[int, int], batch: int = 1) -> list[np.ndarray]:
    """The network inputs NNCF calibrates on: `frames` as (batch, 3, H, W) arrays, each batch filled
    with the frames that follow (wrapping around)."""
    inputs = [network_input(rgb, size) for rgb in frames]
    return [np.concatenate([inputs[(i + k) % len(inputs)] for k in range(batch)])
            for i in range(0, len(inputs), batch)]


def _nncf():
    try:
        import nncf
    except ImportError as exc:
        raise ExportError(f"int8 export needs the Python package nncf: pip install nncf ({exc})") from None
    logging.getLogger("nncf").setLevel(logging.WARNING)  # not a line per layer it leaves alone
    return nncf


def _kept(names, node_scopes: dict[str, str], fp32_scopes: Sequence[str]) -> list[str]:
    """The names among `names` whose module (`node_scopes`) is under one of `fp32_scopes`."""
    return sorted(name for name in names
                  if any(node_scopes.get(name) == s or node_scopes.get(name, "").startswith(s + ".")
                         for s in fp32_scopes))


def _openvino_scopes(model, node_scopes: dict[str, str]) -> dict[str, str]:
    """The module of each operation of `model`, an openvino.Model read from the ONNX file whose
    `node_scopes` export_onnx filled in. OpenVINO names the operations it splits an ONNX node into
    `<node>/<part>` (a Conv with a bias: the Convolution `<node>/WithoutBiases`, then the Add
    `<node>`), or not after the node at all (a ConvTranspose with a bias: `ConvolutionBackpropData_N`,
    then the Add): such an operation takes the module of the operations it feeds, when they agree."""
    scopes: dict[str, str] = {}
    for op in reversed(model.get_ordered_ops()):  # every consumer before what it consumes
        name = op.get_friendly_name()
        module = node_scopes.get(name, node_scopes.get(name.split("/", 1)[0]))
        if module is None:
            consumers = {scopes[target.get_node().get_friendly_name()]
                         for output in op.outputs() for target in output.get_target_inputs()}
            module = consumers.pop() if len(consumers) == 1 else ""
        scopes[name] = module
    return scopes


def _quantize(nncf, model, items: list[np.ndarray], kept: list[str], preset: str, smooth_quant: bool):
    """nncf.quantize with the export's scheme; `model` an onnx.ModelProto or an openvino.Model."""
    options = {"ignored_scope": nncf.IgnoredScope(names=kept, validate=False)} if kept else {}
    if not smooth_quant:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        options["advanced_parameters"] = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, convolution=-1))
    return nncf.quantize(model, nncf.Dataset(items, lambda x: {"pixels": x}), subset_size=len(items),
                         model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset(preset), **options)


def _int8_info(info: ExportInfo, nncf, backend: str, provenance: dict | None, items: list, kept: list[str],
               fp32_scopes: Sequence[str]) -> ExportInfo:
    """The fp32 export's `info` as the int8 file's: precision int8 and the calibration's provenance."""
    calibration = {**(provenance or {}), "calibration_items": len(items), "nncf": nncf.__version__,
                   "nncf_backend": backend, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                   "fp32_scope": ", ".join(fp32_scopes) if kept else "",
                   "scheme": "NNCF post-training quantization, ModelType.TRANSFORMER, int8 weights and activations"}
    return ExportInfo(info.config, info.size, info.batch, "int8", info.flip_tta, info.with_std,
                      info.weights_sha256, info.source, json.dumps(calibration, sort_keys=True))


def quantize_int8(model: ZoeDepth, path: str | os.PathLike, frames: Sequence[np.ndarray],
                  size: tuple[int, int] | None = None, batch: int = 1, flip_tta: bool = False,
                  with_std: bool = True, source: str = "", provenance: dict | None = None,
                  fp32_scopes: Sequence[str] = FP32_SCOPES, preset: str = "performance",
                  smooth_quant: bool = True) -> ExportInfo:
    """Write `model` as an int8 export at `path`, calibrated on `frames` ((H, W, 3) uint8 RGB). The
    modules under `fp32_scopes` (ExportGraph module paths) are not quantized.

    A `.xml` path is an OpenVINO IR (and its `.bin`) quantized through NNCF's OpenVINO backend: what
    fits in 24 GB at full size. Any other is an ONNX file quantized through NNCF's ONNX backend
    (calibration in ONNX Runtime: more memory than that for the full model)."""
    nncf = _nncf()
    if not frames:
        raise ExportError("int8 needs at least one calibration frame")
    size = tuple(size or model.config.img_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = calibration_items(frames, size, batch)
    scopes: dict[str, str] = {}
    ir = path.suffix.lower() == IR_SUFFIX
    if ir:
        try:
            import openvino
        except ImportError as exc:
            raise ExportError(f"{path}: an OpenVINO IR export needs the Python package openvino: pip install "
                              f"openvino ({exc})") from None
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=path.parent) as workdir:
        fp32 = Path(workdir) / "fp32.onnx"
        info = export_onnx(model, fp32, size=size, batch=batch, flip_tta=flip_tta, with_std=with_std,
                           source=source, node_scopes=scopes)
        if ir:
            graph = openvino.Core().read_model(str(fp32))
            kept = _kept((op.get_friendly_name() for op in graph.get_ops()), _openvino_scopes(graph, scopes),
                         fp32_scopes)
        else:
            import onnx

            graph = onnx.load(str(fp32))
            kept = _kept((node.name for node in graph.graph.node), scopes, fp32_scopes)
    info = _int8_info(info, nncf, "openvino" if ir else "onnx", provenance, items, kept, fp32_scopes)
    if ir:
        quantized = _quantize(nncf, graph, items, kept, preset, smooth_quant)
        del graph
        save_ir(quantized, path, info.metadata())
        return read_export_info(path)
    with _lean_onnxruntime():
        quantized = _quantize(nncf, graph, items, kept, preset, smooth_quant)
    del graph
    del quantized.metadata_props[:]
    for key, value in info.metadata().items():
        quantized.metadata_props.add(key=key, value=value)
    _save_onnx(quantized, path)
    return read_export_info(path)


def _save_onnx(proto, path: Path) -> None:
    import onnx

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def quantize_openvino(onnx_path: str | os.PathLike, node_scopes: dict[str, str], frames: Sequence[np.ndarray],
                      size: tuple[int, int], fp32_scopes: Sequence[str] = FP32_SCOPES, batch: int = 1,
                      preset: str = "performance", smooth_quant: bool = True):
    """The fp32 export at `onnx_path` quantized in memory by the scheme of `quantize_int8`, through
    NNCF's OpenVINO backend (an `openvino.Model`, not a file): what the benchmark times at full size.
    `node_scopes`: what `export_onnx(node_scopes=...)` filled in for that file."""
    import openvino

    nncf = _nncf()
    model = openvino.Core().read_model(str(onnx_path))
    kept = _kept((op.get_friendly_name() for op in model.get_ops()), _openvino_scopes(model, node_scopes),
                 fp32_scopes)
    return _quantize(nncf, model, calibration_items(frames, size, batch), kept, preset, smooth_quant)
