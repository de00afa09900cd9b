"""A ROS-free depth estimator: RGB uint8 images in, metric depth at the original resolution out.

Pre-processing is the official ZoeDepth one: [0, 1] RGB, optional reflect padding, bilinear
(align_corners=True) resize to the network size, normalisation with mean 0.5 / std 0.5. Two modes:
- "infer" (official `infer()`): keep-aspect "minimal" resize to a multiple of 32 around the
  model's img_size, bicubic upsampling back to the input size;
- "eval" (official evaluation): stretch to img_size, bilinear (align_corners=True) back.
Flip test-time augmentation runs the image and its mirror as one batch.

`compile=True` runs the model through `torch.compile` (inductor; on CPU with weight freezing, on
CUDA with CUDA graphs) with static shapes. A camera stream has one network size, and batches are
padded to the next power of two, so a stream compiles once and never again: each new camera size
or batch bucket is one more compilation (minutes for BEiT-L), not a recompilation per frame.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..model.zoedepth import ZoeDepth
from .engine_factory import make_engine
from .engines import EngineError, EngineOptions

MODES = ("infer", "eval")


@dataclass
class DepthPrediction:
    depth: np.ndarray  # (H, W) float32 metres
    std: np.ndarray | None  # (H, W) float32 std of the per-pixel depth distribution (with_std)
    domain: str | None  # head the router chose ("nyu", "kitti"); None for single-head models
    domain_logits: np.ndarray | None
    forward_s: float  # the model forward of the batch it ran in (pre- and post-processing excluded)


def network_size(height: int, width: int, target: tuple[int, int], keep_aspect: bool = True,
                 multiple: int = 32) -> tuple[int, int]:
    """MiDaS "minimal" rule: scale by the side whose scale is closest to 1, round to the multiple."""
    if not keep_aspect:
        return target
    scale_h, scale_w = target[0] / height, target[1] / width
    scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    # numpy's round (half to even), as the official Resize does
    return tuple(int(np.round(s * scale / multiple) * multiple) or multiple for s in (height, width))


def reflect_padding(height: int, width: int) -> tuple[int, int]:
    """Official infer() padding: int(sqrt(H/2)*3) rows and int(sqrt(W/2)*3) columns on each side."""
    return int(np.sqrt(height / 2) * 3), int(np.sqrt(width / 2) * 3)


class DepthEstimator:
    """`model`: a ZoeDepth, any `load_model` source, or an exported `.onnx` (engines other than torch).
    `engine` runs the network (see inference/engines.py); pre- and post-processing are the same for all."""

    def __init__(self, model: ZoeDepth | str | os.PathLike, device: str = "auto", precision: str = "fp32",
                 flip_tta: bool = False, pad: bool = False, mode: str = "infer", compile: bool = False,
                 compile_backend: str | Callable = "inductor", engine: str = "torch", cache_dir: Path | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.engine = make_engine(engine, model, EngineOptions(device, precision, compile, compile_backend, cache_dir))
        if self.engine.flip_in_graph and not flip_tta:
            raise EngineError(f"{model} averages flipped images in its graph (exported with --flip-tta): "
                              "set flip_tta, or export without --flip-tta")
        self.device = self.engine.device
        self.config = self.engine.config
        # The precision the engine runs (`auto` resolved) and why.
        self.precision, self.precision_reason = self.engine.precision, self.engine.precision_reason
        self.flip_tta, self.pad, self.mode = flip_tta, pad, mode
        self.head_names = self.config.head_names
        self.compiled = compile

    def predict(self, rgb: np.ndarray, with_std: bool = False) -> DepthPrediction:
        """`rgb`: (H, W, 3) uint8 RGB."""
        return self.predict_batch([rgb], with_std=with_std)[0]

    def network_input_size(self, height: int, width: int) -> tuple[int, int]:
        """The network size that images of `height` x `width` run at: images that share it can share a
        batch (`predict_batch`), whatever their own sizes."""
        pad_h, pad_w = reflect_padding(height, width) if self.pad else (0, 0)
        return network_size(height + 2 * pad_h, width + 2 * pad_w, self.engine.network_target,
                            keep_aspect=self.mode == "infer")

    @torch.inference_mode()
    def predict_batch(self, images: list[np.ndarray] | np.ndarray, with_std: bool = False) -> list[DepthPrediction]:
        """Images of one network size (`network_input_size`: images of one size always share it), run
        as one batch (twice its size with flip TTA); each prediction at its own image's size."""
        runs = _runs_of_one_size(images)
        inputs = [self._network_input(batch) for _, batch in runs]
        sizes = sorted({tuple(x.shape[-2:]) for x, _ in inputs})
        if len(sizes) > 1:
            raise ValueError(f"images of network sizes {', '.join(f'{h}x{w}' for h, w in sizes)} cannot share a "
                             "batch: group them by network_input_size")
        x = torch.cat([x for x, _ in inputs]) if len(inputs) > 1 else inputs[0][0]
        n = x.shape[0]
        flip_here = self.flip_tta and not self.engine.flip_in_graph
        if flip_here:
            x = torch.cat([x, x.flip(-1)])
        started = time.perf_counter()
        out = self.engine(x, with_std)
        forward_s = time.perf_counter() - started
        depth, std, logits = out.depth, out.std, out.logits
        if flip_here:
            depth = 0.5 * (depth[:n] + depth[n:].flip(-1))
            std = 0.5 * (std[:n] + std[n:].flip(-1)) if std is not None else None
            logits = logits[:n] + logits[n:] if logits is not None else None
        domains = (logits.argmax(-1) if logits is not None else out.domain[:n]).tolist()
        logits_np = logits.float().cpu().numpy() if logits is not None else None
        predictions: list[DepthPrediction | None] = [None] * n
        first = 0
        for (indices, _), (_, geometry) in zip(runs, inputs, strict=True):
            rows = slice(first, first + len(indices))
            first += len(indices)
            maps = [self._to_input_size(t[rows] if t is not None else None, *geometry) for t in (depth, std)]
            for k, (i, row) in enumerate(zip(indices, range(rows.start, rows.stop), strict=True)):
                predictions[i] = DepthPrediction(
                    depth=maps[0][k],
                    std=maps[1][k] if maps[1] is not None else None,
                    domain=self.head_names[domains[row]] if len(self.head_names) > 1 else None,
                    domain_logits=logits_np[row] if logits_np is not None else None,
                    forward_s=forward_s,
                )
        return predictions

    def _network_input(self, batch: np.ndarray) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """(normalised network input, (height, width, pad_h, pad_w) to bring its outputs back) of a
        (N, H, W, 3) uint8 batch."""
        height, width = batch.shape[1:3]
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        pad_h, pad_w = reflect_padding(height, width) if self.pad else (0, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        size = network_size(x.shape[-2], x.shape[-1], self.engine.network_target, keep_aspect=self.mode == "infer")
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True).sub_(0.5).div_(0.5)
        return x, (height, width, pad_h, pad_w)

    def _to_input_size(self, t: torch.Tensor | None, height: int, width: int, pad_h: int, pad_w: int):
        if t is None:
            return None
        full = (height + 2 * pad_h, width + 2 * pad_w)
        if self.mode == "infer" and t.device.type == "cpu":
            # OpenCV's INTER_CUBIC is torch's bicubic (a = -0.75, half-pixel centres, clamped
            # border) to float rounding, in a quarter of the time on CPU (~1 ms at 640x480).
            small = np.ascontiguousarray(t[:, 0].float().numpy())
            maps = [cv2.resize(m, full[::-1], interpolation=cv2.INTER_CUBIC) for m in small]
            full_maps = maps[0][None] if len(maps) == 1 else np.stack(maps)
            return full_maps[:, pad_h:pad_h + height, pad_w:pad_w + width]
        if self.mode == "eval":
            t = F.interpolate(t, size=full, mode="bilinear", align_corners=True)
        else:
            t = F.interpolate(t, size=full, mode="bicubic", align_corners=False)
        t = t[:, 0, pad_h:pad_h + height, pad_w:pad_w + width]
        return t.cpu().numpy().astype(np.float32, copy=False)

    def release(self) -> None:
        """Drop the model and free device memory (lifecycle cleanup)."""
        self.engine.release()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _runs_of_one_size(images: list[np.ndarray] | np.ndarray) -> list[tuple[list[int], np.ndarray]]:
    """(positions in `images`, (N, H, W, 3) stack) for each image size in `images`, first seen first."""
    if isinstance(images, np.ndarray):
        images = list(images)  # (N, H, W, 3); any other shape fails the check below
    by_size: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB images of shape (H, W, 3), got {image.dtype} {image.shape}")
        if min(image.shape[:2]) < 2:
            raise ValueError(f"image too small: {image.shape[0]}x{image.shape[1]}")
        by_size.setdefault(image.shape, []).append(i)
    if not by_size:
        raise ValueError("no images to predict")
    return [(indices, np.stack([images[i] for i in indices])) for indices in by_size.values()]
