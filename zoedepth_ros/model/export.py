"""ONNX export of a whole ZoeDepth model, and the metadata that lets a file be loaded on its own.

The exported graph takes normalised pixels at one network size and batch (static shapes) and
returns metric depth (B, 1, H, W), the router logits (B, n_heads; routed models only) and,
optionally, the per-pixel std (B, 1, H, W). The NK router decides per sample inside the graph
(`MetricHead.forward_per_sample`: every head runs on the batch, each sample keeps its own head's
output), so a batch of an indoor and an outdoor frame gets the NYU head for one and the KITTI head
for the other, as in PyTorch.

Pre-processing stays outside (the estimator's, identical for every engine): RGB in [0, 1], resized
to the file's size, normalised with the mean and std the metadata gives. With `flip_tta` the graph
itself runs each image and its mirror as one batch and averages them (depth, std) and sums the
router logits, exactly as the estimator does in PyTorch.

fp16 files store the encoder and decoder in float16 and keep the bins head in float32, as the
PyTorch path does (the log-binomial divides by temperatures down to 0.02).

Everything a loader needs is in the file's metadata (`ExportInfo`); nothing else travels with it.
An int8 export may also be an OpenVINO IR (`.xml` and its `.bin`, openvino_ir.py), with the same
metadata in its rt_info: `read_export_info` reads both.
The export is deterministic: the same weights and options give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ZoeDepthError
from .config import ZoeDepthConfig
from .zoedepth import ZoeDepth, low_precision_copy

FORMAT = "zoedepth_ros.onnx/1"
OPSET = 18
# What a file carries, as metadata_props keys (strings; JSON where structured).
_KEY = "zoedepth_ros."
EXPORT_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
# What a file may hold: also int8, written by quantize.py (post-training quantization with NNCF).
FILE_PRECISIONS = (*EXPORT_PRECISIONS, "int8")
# Pre-processing the graph expects (the official ZoeDepth normalisation).
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
# Protobuf's limit: larger models must keep their weights in an external data file.
_PROTO_LIMIT = 2 * 1024**3 - 64 * 1024**2


class ExportError(ZoeDepthError, ValueError):
    """An ONNX file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file is: read from its metadata by `read_export_info`."""

    config: ZoeDepthConfig
    size: tuple[int, int]  # network input (H, W)
    batch: int
    precision: str  # fp32 | fp16 | int8 (encoder and decoder; the bins head is fp32 in all)
    flip_tta: bool  # the graph averages each image with its mirror
    with_std: bool  # the graph has a `std` output
    weights_sha256: str  # digest of the weights and architecture it was exported from
    source: str = ""  # where the weights came from, for people (not used to load)
    calibration: str = ""  # int8: JSON provenance of the calibration (bags, frames, NNCF version, date)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("depth", *(("logits",) if self.config.routed else ()), *(("std",) if self.with_std else ()))

    def metadata(self) -> dict[str, str]:
        return {
            _KEY + "format": FORMAT,
            _KEY + "config": self.config.to_json(),
            _KEY + "input": json.dumps({"name": "pixels", "size": list(self.size), "batch": self.batch,
                                        "layout": "NCHW", "channels": "RGB", "scale": 1 / 255,
                                        "mean": list(MEAN), "std": list(STD)}, sort_keys=True),
            _KEY + "outputs": json.dumps(list(self.outputs)),
            _KEY + "heads": json.dumps(list(self.config.head_names)),
            _KEY + "precision": self.precision,
            _KEY + "flip_tta": json.dumps(self.flip_tta),
            _KEY + "weights_sha256": self.weights_sha256,
            _KEY + "source": self.source,
            **({_KEY + "calibration": self.calibration} if self.calibration else {}),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str], path: Path) -> ExportInfo:
        if meta.get(_KEY + "format") != FORMAT:
            found = meta.get(_KEY + "format")
            kind = "OpenVINO IR" if path.suffix.lower() == ".xml" else "ONNX"
            raise ExportError(
                f"{path}: not a zoedepth-ros {kind} export (metadata {_KEY}format is {found!r}, expected {FORMAT!r}): "
                f"export it with `zoedepth-ros export MODEL -o {path.name}`")
        try:
            config = ZoeDepthConfig.from_dict(json.loads(meta[_KEY + "config"]))
            spec = json.loads(meta[_KEY + "input"])
            info = cls(config=config, size=(int(spec["size"][0]), int(spec["size"][1])), batch=int(spec["batch"]),
                       precision=meta[_KEY + "precision"], flip_tta=json.loads(meta[_KEY + "flip_tta"]),
                       with_std="std" in json.loads(meta[_KEY + "outputs"]),
                       weights_sha256=meta[_KEY + "weights_sha256"], source=meta.get(_KEY + "source", ""),
                       calibration=meta.get(_KEY + "calibration", ""))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise ExportError(f"{path}: incomplete or malformed zoedepth-ros metadata ({type(exc).__name__}: {exc}): "
                              "re-export the model") from None
        if info.precision not in FILE_PRECISIONS or info.batch < 1:
            raise ExportError(f"{path}: malformed metadata: precision {info.precision!r}, batch {info.batch}")
        return info


def weights_digest(model: ZoeDepth) -> str:
    """sha256 over the architecture and every tensor of the state dict (names, dtypes, bytes)."""
    digest = hashlib.sha256(model.config.to_json().encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class ExportGraph(nn.Module):
    """The function an ONNX file holds: normalised pixels -> (depth, [logits], [std])."""

    def __init__(self, model: ZoeDepth, flip_tta: bool = False, with_std: bool = True):
        super().__init__()
        self.model, self.flip_tta, self.with_std = model, flip_tta, with_std

    def forward(self, pixels: torch.Tensor):
        n = pixels.shape[0]
        x = torch.cat([pixels, pixels.flip(-1)]) if self.flip_tta else pixels
        features = self.model.features(x.to(self.model.encoder.cls_token.dtype))
        activation, bottleneck, fused, relative = features
        depth, logits, std = self.model.metric_head.forward_per_sample(
            activation.float(), bottleneck.float(), [f.float() for f in fused], relative.float())
        if self.flip_tta:
            depth = 0.5 * (depth[:n] + depth[n:].flip(-1))
            std = 0.5 * (std[:n] + std[n:].flip(-1))
            logits = logits[:n] + logits[n:] if logits is not None else None
        return depth, *((logits,) if logits is not None else ()), *((std,) if self.with_std else ())


def export_onnx(model: ZoeDepth, path: str | os.PathLike, size: tuple[int, int] | None = None, batch: int = 1,
                precision: str = "fp32", flip_tta: bool = False, with_std: bool = True, source: str = "",
                weights_sha256: str | None = None, node_scopes: dict[str, str] | None = None) -> ExportInfo:
    """Write `model` as one ONNX file at `path` (atomically: a reader never sees half a file).

    `size` defaults to the model's img_size. The model is not modified (fp16 exports a copy).
    `node_scopes`, when given, is filled with each graph node's name -> the module that made it
    (`model.metric_head.router`, ...), read before the exporter's metadata is dropped.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision must be one of {list(EXPORT_PRECISIONS)}, not {precision!r}")
    size = tuple(size or model.config.img_size)
    if len(size) != 2 or any(s <= 0 or s % 32 for s in size):
        raise ExportError(f"size {size}: height and width must be positive multiples of 32")
    if batch < 1:
        raise ExportError(f"batch must be at least 1, not {batch}")
    info = ExportInfo(model.config, size, batch, precision, flip_tta, with_std,
                      weights_sha256 or weights_digest(model), source)
    model = model.eval()
    if precision != "fp32":
        model = low_precision_copy(model, EXPORT_PRECISIONS[precision])
    graph = ExportGraph(model, flip_tta, with_std).eval()
    example = torch.zeros(batch, 3, *size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's advice on dynamo internals, not the user's
        program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                    input_names=["pixels"], output_names=list(info.outputs))
    scopes = _strip_trace_metadata(program.model)
    if node_scopes is not None:
        node_scopes.update(scopes)
    program.model.metadata_props.update(info.metadata())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    external = weights_bytes > _PROTO_LIMIT
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        program.save(tmp, external_data=external)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide a shared cache from other users
        if external:  # the data file is named after the file it belongs to
            os.replace(tmp + ".data", str(path) + ".data")
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + ".data"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return info


def _strip_trace_metadata(model) -> dict[str, str]:
    """Drop the exporter's per-node debugging metadata (Python stack traces with this machine's
    paths and counters that change between runs): without it the export is byte-for-byte repeatable.
    Returns the name of each node and of each of its outputs -> the module that made it (e.g.
    `model.metric_head.heads.nyu.attractors.1`; "" outside any)."""
    import onnx_ir  # the exporter's own IR, installed with onnxscript

    scopes = {}
    for node in onnx_ir.traversal.RecursiveGraphIterator(model.graph):
        # "['', 'model.encoder', 'model.encoder.blocks.0', 'linear']": the modules, then the op
        names = node.metadata_props.get("pkg.torch.onnx.name_scopes", "")
        modules = [n.strip(" '\"") for n in names.strip("[]").split(",")][:-1]
        module = next((m for m in reversed(modules) if m), "")
        for name in (node.name, *(value.name for value in node.outputs)):
            if name:
                scopes[name] = module
        node.metadata_props.clear()
        for value in node.outputs:
            value.metadata_props.clear()
    return scopes


def read_export_info(path: str | os.PathLike) -> ExportInfo:
    """The metadata of an exported file (an `.onnx`, or an OpenVINO IR `.xml` with its `.bin`),
    checked; ExportError naming the file when it is not one."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return _read_ir_info(path)
    import onnx  # optional dependency: only exported models need it
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: not a readable ONNX file (truncated or corrupt?): {exc}") from None
    if not proto.graph.node:
        raise ExportError(f"{path}: not a readable ONNX file (truncated or corrupt?): the graph is empty")
    info = ExportInfo.from_metadata({p.key: p.value for p in proto.metadata_props}, path)
    return _check_graph(path, info, [i.name for i in proto.graph.input], [o.name for o in proto.graph.output])


def _read_ir_info(path: Path) -> ExportInfo:
    """`read_export_info` of an OpenVINO IR (an int8 export written as `.xml`; openvino_ir.py)."""
    from .openvino_ir import read_ir, weights_path

    for part in (path, weights_path(path)):
        if not part.is_file():
            raise ExportError(f"{path}: no such OpenVINO IR file ({part} is missing; an IR is an .xml and "
                              f"its .bin, side by side)")
    try:
        metadata, inputs, outputs = read_ir(path)
    except ImportError as exc:
        raise ExportError(f"{path}: reading an OpenVINO IR needs the Python package openvino: pip install "
                          f"openvino ({exc})") from None
    except Exception as exc:  # OpenVINO's own exception types for unreadable models
        raise ExportError(f"{path}: not a readable OpenVINO IR (truncated or corrupt .xml or .bin?): "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    return _check_graph(path, ExportInfo.from_metadata(metadata, path), inputs, outputs)


def _check_graph(path: Path, info: ExportInfo, inputs: list[str], outputs: list[str]) -> ExportInfo:
    if tuple(outputs) != info.outputs or inputs != ["pixels"]:
        raise ExportError(f"{path}: its graph (inputs {inputs}, outputs {outputs}) "
                          f"does not match its metadata (pixels -> {list(info.outputs)}): re-export the model")
    return info
