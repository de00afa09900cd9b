"""TensorRT engine: a plan built from an ONNX export, run on CUDA tensors.

The network is built strongly typed, so the precisions are those of the ONNX file: an fp16 export
runs its encoder and decoder in fp16 and its bins head in fp32, as the PyTorch path does. Plans
depend on the GPU and the TensorRT version, so the plan cache key holds both; a plan that does not
deserialise (another TensorRT, a corrupt file) is rebuilt.

Needs an NVIDIA GPU and the `tensorrt` package; it is exercised by `bench/gpu_check.sh` on a GPU
machine (the test suite only checks that asking for it without them is a clear error).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

from ..model.checkpoint import load_model
from ..model.export import read_export_info, weights_digest
from ..model.zoedepth import ZoeDepth
from .engines import (
    EngineError,
    EngineOutput,
    batch_bucket,
    check_file_engine,
    is_export_file,
    read_export,
    require,
    resolve_device,
)
from .export_cache import ExportCache
from .precision import choose_precision

log = logging.getLogger(__name__)

_WORKSPACE_BYTES = 4 << 30


class TensorRtEngine:
    name = "tensorrt"
    flip_in_graph = False

    def __init__(self, model, device: str = "auto", precision: str = "fp32", cache_dir: Path | None = None):
        check_file_engine("tensorrt", model)
        if not torch.cuda.is_available():
            raise EngineError("engine tensorrt needs an NVIDIA GPU with CUDA, and none is available here: "
                              "use engine onnxruntime or openvino on this machine")
        self.device = resolve_device("cuda" if device == "auto" else device)
        if self.device.type != "cuda":
            raise EngineError(f"engine tensorrt runs on CUDA devices, not {device!r}")
        self.trt = require("tensorrt")
        file_precision = read_export_info(model).precision if is_export_file(model) else None
        self.precision, self.precision_reason = choose_precision("tensorrt", precision, False, file_precision)
        precision = self.precision
        self._logger = self.trt.Logger(self.trt.Logger.WARNING)
        self._cache = ExportCache(cache_dir)
        self._engines: dict[tuple[tuple[int, int], int], tuple[object, object, object]] = {}
        self.file: Path | None = None
        if is_export_file(model):
            self.file = Path(model)
            info = read_export(self.file, precision)
            self.config, self.flip_in_graph, self._digest = info.config, info.flip_tta, info.weights_sha256
            self.network_target = info.size
            self._engines[(info.size, info.batch)] = self._build(self.file, info)
            self._model = None
        else:
            self._model = model if isinstance(model, ZoeDepth) else load_model(model, map_location="cpu")
            self.config = self._model.config
            self.network_target = self.config.img_size
            self._digest = weights_digest(self._model)

    def _plan_path(self, info) -> Path:
        gpu = torch.cuda.get_device_name(self.device).replace(" ", "_")
        return self._cache.entry(self._digest, info.size, info.batch, info.precision,
                                 suffix=f"-{gpu}-trt{self.trt.__version__}.plan")

    def _build(self, onnx_path: Path, info):
        trt = self.trt
        runtime = trt.Runtime(self._logger)
        plan_path = self._plan_path(info)
        engine = None
        if plan_path.exists():
            engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
            if engine is None:
                log.warning("TensorRT plan %s does not load: rebuilding it", plan_path)
        if engine is None:
            log.warning("building a TensorRT engine from %s (once per size, batch and GPU; minutes)", onnx_path)
            builder = trt.Builder(self._logger)
            network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
            parser = trt.OnnxParser(network, self._logger)
            if not parser.parse_from_file(str(onnx_path)):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise EngineError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
            plan = builder.build_serialized_network(network, config)
            if plan is None:
                raise EngineError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
            plan_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=plan_path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(plan)
            os.replace(tmp, plan_path)
            engine = runtime.deserialize_cuda_engine(plan)
        return engine, engine.create_execution_context(), info

    def _engine(self, size: tuple[int, int], rows: int):
        if self.file is not None:
            (fixed, batch), = self._engines
            if size != fixed:
                raise EngineError(f"{self.file} was exported for {fixed[0]}x{fixed[1]}, these frames need "
                                  f"{size[0]}x{size[1]}: export with --size {size[0]}x{size[1]}")
            return self._engines[(fixed, batch)]
        key = (size, batch_bucket(rows))
        if key not in self._engines:
            path, info = self._cache.onnx(lambda: self._model, self._digest, size, key[1], self.precision)
            self._engines[key] = self._build(path, info)
        return self._engines[key]

    def __call__(self, pixels: torch.Tensor, with_std: bool) -> EngineOutput:
        rows, size = pixels.shape[0], tuple(pixels.shape[-2:])
        engine, context, info = self._engine(size, rows)
        if with_std and not info.with_std:
            raise EngineError(f"{self.file} has no std output: export it with --std")
        depth, logits, std = [], [], []
        stream = torch.cuda.current_stream(self.device)
        for start in range(0, rows, info.batch):
            chunk = pixels[start:start + info.batch].float().contiguous()
            if chunk.shape[0] < info.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(info.batch - chunk.shape[0], -1, -1, -1)]).contiguous()
            outputs = {}
            context.set_tensor_address("pixels", chunk.data_ptr())
            for name in info.outputs:
                shape = tuple(engine.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=torch.float32, device=self.device)
                context.set_tensor_address(name, outputs[name].data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise EngineError("TensorRT execution failed (see its log above)")
            depth.append(outputs["depth"])
            logits.append(outputs.get("logits"))
            std.append(outputs.get("std"))
        stream.synchronize()
        logits_t = torch.cat(logits)[:rows] if logits[0] is not None else None
        zeros = torch.zeros(rows, dtype=torch.long, device=self.device)
        domain = logits_t.argmax(-1) if logits_t is not None else zeros
        return EngineOutput(torch.cat(depth)[:rows], logits_t, domain, torch.cat(std)[:rows] if with_std else None)

    def release(self) -> None:
        self._engines.clear()
        self._model = None
