"""ONNX Runtime and OpenVINO engines: an exported ONNX file run on the host's or an accelerator's
execution provider.

Given an `.onnx` export (or, for OpenVINO, an int8 export written as an OpenVINO IR `.xml`), the
engine runs that file (its size and batch fixed: smaller batches are padded with their last image,
larger ones run in chunks). Given a checkpoint or a model, it
exports once per network size and batch bucket into the export cache and reuses the files.

Execution providers: ONNX Runtime takes TensorRT (when the `tensorrt` package is installed), CUDA,
then CPU for `device` auto/cuda when onnxruntime-gpu offers them, CPU otherwise; OpenVINO runs on
the CPU, or on an Intel GPU for `device` auto when the runtime finds one.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch

from ..model.checkpoint import load_model
from ..model.export import ExportError, ExportInfo, read_export_info, weights_digest
from ..model.zoedepth import ZoeDepth
from .cpu_features import cpu_features
from .engine_names import EXPORT_OF
from .engines import EngineError, EngineOutput, batch_bucket, check_file_engine, is_export_file, require
from .export_cache import ExportCache
from .precision import choose_precision

log = logging.getLogger(__name__)

# OpenVINO's INFERENCE_PRECISION_HINT for each precision. An int8 export runs its quantized layers
# (the BEiT encoder) in int8 and the rest (DPT decoder, bins head) in bf16 on a CPU with native bf16
# (full-size NK: 0.10x our eager fp32 against 0.15x with the rest in f32, docs/benchmarks.md), in
# f32 elsewhere.
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def openvino_hint(precision: str, on_cpu: bool) -> str:
    if precision == "int8" and on_cpu and cpu_features().native_bf16:
        return "bf16"
    return OPENVINO_HINTS[precision]


class OnnxEngine:
    flip_in_graph = False

    def __init__(self, engine: str, model, device: str = "auto", precision: str = "fp32",
                 cache_dir: Path | None = None):
        self.name = engine
        check_file_engine(engine, model)
        self.runtime = require(engine)
        self.device = torch.device("cpu")  # inputs and outputs pass through host memory
        self._target = self._choose_target(str(device))
        self._sessions: dict[tuple[tuple[int, int], int], tuple[object, ExportInfo, Path]] = {}
        self.file: Path | None = Path(model) if is_export_file(model) else None
        info = read_export_info(self.file) if self.file is not None else None
        on_cpu = self._target in ("CPU", ["CPUExecutionProvider"])
        self.precision, self.precision_reason = choose_precision(engine, precision, on_cpu,
                                                                 info.precision if info else None)
        self._export_precision = EXPORT_OF[self.precision]
        if self.file is not None:
            self.config, self.flip_in_graph = info.config, info.flip_tta
            self.network_target = info.size  # frames are resized around the file's size, not img_size
            self._sessions[(info.size, info.batch)] = (self._open(self.file), info, self.file)
            self._model = None
        else:
            self._source = None if isinstance(model, ZoeDepth) else model
            self._model = model if isinstance(model, ZoeDepth) else load_model(model, map_location="cpu")
            self.config = self._model.config
            self.network_target = self.config.img_size
            self._digest = weights_digest(self._model)
            self._cache = ExportCache(cache_dir)

    # -- set-up

    def _choose_target(self, device: str):
        if self.name == "openvino":
            if device.startswith("cuda"):
                raise EngineError("engine openvino runs on CPU or an Intel GPU: set device cpu or auto "
                                  "(for an NVIDIA GPU use engine onnxruntime or tensorrt)")
            available = self.runtime.Core().available_devices
            return "GPU" if device == "auto" and "GPU" in available else "CPU"
        available = self.runtime.get_available_providers()
        gpu = "CUDAExecutionProvider" in available
        if device.startswith("cuda") and not gpu:
            raise EngineError(f"device {device} with engine onnxruntime needs onnxruntime-gpu (this onnxruntime "
                              f"offers {', '.join(available)}): pip install onnxruntime-gpu")
        if device == "cpu" or not gpu:
            return ["CPUExecutionProvider"]
        index = int(device.split(":")[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        if "TensorrtExecutionProvider" in available and importlib.util.find_spec("tensorrt") is not None:
            providers.insert(0, ("TensorrtExecutionProvider", {"device_id": index, "trt_fp16_enable": False}))
        return providers

    def _open(self, path: Path):
        try:
            # As many threads as torch uses (`torch.set_num_threads`, OMP_NUM_THREADS): ONNX Runtime
            # would otherwise take one per physical core, a single thread on a 2-vCPU machine.
            threads = torch.get_num_threads()
            if self.name == "openvino":
                # Never left to OpenVINO: it may pick bf16/f16 by itself.
                hint = openvino_hint(self.precision, self._target == "CPU")
                compiled = self.runtime.Core().compile_model(
                    str(path), self._target, {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint,
                                              "INFERENCE_NUM_THREADS": threads})
                return compiled, compiled.create_infer_request()
            options = self.runtime.SessionOptions()
            options.intra_op_num_threads = threads
            options.log_severity_level = 3  # its warnings about unused initializers are noise to a user
            return self.runtime.InferenceSession(str(path), options, providers=self._target)
        except Exception as exc:  # each runtime has its own exception types for unreadable models
            raise ExportError(f"{path}: {self.name} cannot load it: {str(exc).strip().splitlines()[0]}") from None

    def _session(self, size: tuple[int, int], rows: int):
        if self.file is not None:
            (fixed_size, batch), = self._sessions
            if size != fixed_size:
                raise EngineError(f"{self.file} was exported for a {fixed_size[0]}x{fixed_size[1]} network input, "
                                  f"but these frames need {size[0]}x{size[1]}: export the model with "
                                  f"--size {size[0]}x{size[1]} (or feed frames of the file's aspect ratio)")
            return self._sessions[(fixed_size, batch)]
        key = (size, batch_bucket(rows))
        if key not in self._sessions:
            path, info = self._cache.onnx(self._load_model, self._digest, size, key[1], self._export_precision)
            try:
                session = self._open(path)
            except ExportError as exc:  # the file passed its metadata check but not the runtime's
                log.warning("%s: rebuilding the export cache entry", exc)
                self._cache.discard(path)
                path, info = self._cache.onnx(self._load_model, self._digest, size, key[1], self._export_precision)
                session = self._open(path)
            self._sessions[key] = (session, info, path)
            if self._source is not None:
                self._model = None  # 1.4 GB for the full model; reloaded only if a new size comes
        return self._sessions[key]

    def _load_model(self) -> ZoeDepth:
        if self._model is None:
            self._model = load_model(self._source, map_location="cpu")
        return self._model

    # -- running

    def __call__(self, pixels: torch.Tensor, with_std: bool) -> EngineOutput:
        rows, size = pixels.shape[0], tuple(pixels.shape[-2:])
        session, info, path = self._session(size, rows)
        if with_std and not info.with_std:
            raise EngineError(f"{path} has no std output: export it with --std to publish uncertainty")
        array = pixels.detach().cpu().numpy().astype(np.float32, copy=False)
        chunks = [self._run(session, info, array[i:i + info.batch]) for i in range(0, rows, info.batch)]
        outputs = {name: torch.from_numpy(np.concatenate([c[name] for c in chunks])[:rows]) for name in info.outputs}
        logits = outputs.get("logits")
        domain = logits.argmax(-1) if logits is not None else torch.zeros(rows, dtype=torch.long)
        return EngineOutput(outputs["depth"].float(), logits, domain, outputs["std"].float() if with_std else None)

    def _run(self, session, info: ExportInfo, chunk: np.ndarray) -> dict[str, np.ndarray]:
        if chunk.shape[0] < info.batch:  # a static batch: fill it with copies of the last image
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], info.batch - chunk.shape[0], axis=0)])
        chunk = np.ascontiguousarray(chunk)
        if self.name == "openvino":
            compiled, request = session
            result = request.infer({"pixels": chunk})
            # The request reuses its output buffers on the next call: copy.
            return {name: np.array(result[compiled.output(name)]) for name in info.outputs}
        return dict(zip(info.outputs, session.run(list(info.outputs), {"pixels": chunk}), strict=True))

    def release(self) -> None:
        self._sessions.clear()
        self._model = None
