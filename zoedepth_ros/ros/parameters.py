"""The depth node's parameters: one table (default, description, allowed values, the lifecycle
transition a change waits for), the typed snapshot the worker thread reads, validation, and the
descriptors the node declares them with."""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from zoedepth_ros.cameras import camera_names_problem
from zoedepth_ros.compressed_depth import DEFAULT_PNG_LEVEL, DEFAULT_QUANTIZATION, FORMATS
from zoedepth_ros.inference.engine_names import DEVICE_PATTERN, ENGINES, PRECISIONS
from zoedepth_ros.inference.temporal_filter import DEFAULT_TEMPORAL_FILTER, TEMPORAL_FILTERS
from zoedepth_ros.sequences import NEW_SEQUENCE_AFTER_S


@dataclass(frozen=True)
class _Param:
    default: object
    description: str
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    applies_on: str = ""  # "configure"/"activate" when changing it takes a lifecycle transition
    read_only: bool = False


PARAMETERS: dict[str, _Param] = {
    "model": _Param(
        "ZoeD_M12_NK",
        "Model: a preset (ZoeD_M12_NK, ZoeD_M12_N, ZoeD_M12_K) from the local weights cache, or the "
        "path of an official .pt, a Hugging Face directory, a project .safetensors checkpoint, or an ONNX "
        "file from `zoedepth-ros export` (engines other than torch; an int8 OpenVINO IR .xml: engine openvino).",
        applies_on="configure",
    ),
    "engine": _Param("torch", "What runs the network: torch (PyTorch), onnxruntime, openvino or tensorrt (NVIDIA "
                              "GPU). With a checkpoint, the other engines export it to ONNX once per network size "
                              "into the export cache; `model` may also be an exported .onnx file (or, for "
                              "openvino, an int8 .xml).",
                     choices=ENGINES, applies_on="configure"),
    "device": _Param("auto", "Inference device: auto (CUDA when available), cpu, cuda or cuda:N.",
                     applies_on="configure"),
    "precision": _Param("fp32", "Inference precision: fp32; bf16 (torch: autocast; openvino: its bf16 inference "
                                "precision, CPUs with avx512_bf16 or amx_bf16 only); fp16; int8 (an int8 export from "
                                "`zoedepth-ros export --precision int8`, engine openvino); auto: the fastest this "
                                "machine runs natively (the choice and why are in the log and on /diagnostics).",
                        choices=PRECISIONS, applies_on="configure"),
    "flip_tta": _Param(False, "Average with the prediction of the mirrored image (twice the compute).",
                       applies_on="configure"),
    "compile": _Param(False, "Run the model through torch.compile (static shapes: the first frame of a camera "
                             "size compiles, minutes for the full model on CPU; later frames are faster).",
                      applies_on="configure"),
    "mode": _Param("infer", "Pre- and post-processing: infer (keep-aspect resize, bicubic upsampling, for "
                            "cameras) or eval (the official evaluation's stretch to the network size and "
                            "bilinear upsampling, to reproduce `zoedepth-ros evaluate --model` with flip_tta).",
                   choices=("infer", "eval"), applies_on="configure"),
    "min_depth": _Param(0.1, "Depth below this (metres) is published as NaN (invalid).", range=(0.0, 1000.0)),
    "max_depth": _Param(80.0, "Depth above this (metres) is published as NaN (invalid).", range=(0.0, 1000.0)),
    "temporal_filter": _Param(
        DEFAULT_TEMPORAL_FILTER,
        "Temporal filter of each camera's depth, against the flicker of a per-frame model (docs/node.md): "
        "motion-ema (per-pixel running average in log depth carried along the camera's motion, estimated from the "
        "images and depth; a still camera's depth holds still; lag up to 8 frames for changes under 2x); none; "
        "scale (stabilises the frame's global metric scale against the recent past); ema (per-pixel average in log "
        "depth, a change over 10 % passes at once); scale+ema (both). It restarts at every new sequence and when "
        "the camera_info's K or the image size changes; the first frame of a sequence is the prediction itself.",
        choices=TEMPORAL_FILTERS),
    "publish_points": _Param(True, "Publish depth/points (needs camera_info or fallback_hfov_deg)."),
    "points_stride": _Param(1, "Cloud decimation: every Nth row and column; the cloud stays organized.",
                            range=(1, 64)),
    "points_color": _Param(False, "Add the packed rgb field (from the input image) to depth/points."),
    "publish_colormap": _Param(True, "Publish depth/colormap, a viewable rgb8 rendering of the depth."),
    "colormap_fixed_range": _Param(False, "Colour depth over [colormap_min, colormap_max] (stable "
                                          "colours) instead of each frame's own range."),
    "colormap_min": _Param(0.5, "Near end (metres) of the fixed colormap range.", range=(0.0, 1000.0)),
    "colormap_max": _Param(10.0, "Far end (metres) of the fixed colormap range.", range=(0.0, 1000.0)),
    "publish_uncertainty": _Param(False, "Publish depth/uncertainty: 32FC1 standard deviation (metres) "
                                         "of the per-pixel depth distribution (extra compute)."),
    "publish_depth_mm": _Param(False, "Also publish depth/image_mm: 16UC1 millimetres, 0 = invalid."),
    # Named as compressed_depth_image_transport names its own (format, depth_max, depth_quantization,
    # png_level), prefixed as image_transport prefixes a transport's parameters.
    "compressed_depth_format": _Param("png", "Codec of depth/image/compressedDepth (image_transport's "
                                             "compressedDepth, published while subscribed): png or rvl.",
                                      choices=FORMATS),
    "compressed_depth_max": _Param(0.0, "Depth (metres) at and beyond which depth/image/compressedDepth stores "
                                        "invalid; 0 = max_depth (every depth of depth/image kept).",
                                   range=(0.0, 1000.0)),
    "compressed_depth_quantization": _Param(DEFAULT_QUANTIZATION,
                                            "Inverse-depth quantization Q of depth/image/compressedDepth: the "
                                            "error at depth d is below d^2 / (Q (Q + 1) - d) (docs/node.md).",
                                            range=(1.0, 1000.0)),
    "compressed_depth_png_level": _Param(DEFAULT_PNG_LEVEL, "zlib level of depth/image/compressedDepth's PNG: 9 "
                                                            "smallest (the plugin's default), 1 fastest.",
                                         range=(0, 9)),
    "input_reliability": _Param(
        "auto", "Reliability of the image subscription. auto: reliable when every image publisher offers "
                "reliable, best effort otherwise (re-evaluated as publishers come and go); reliable; "
                "best_effort. A qos_overrides.<image topic>.subscription.reliability parameter takes precedence.",
        choices=("auto", "reliable", "best_effort")),
    "input_transport": _Param("raw", "raw: subscribe sensor_msgs/Image on 'image'; compressed: "
                                     "sensor_msgs/CompressedImage (jpeg/png) on '<image>/compressed'.",
                              choices=("raw", "compressed"), applies_on="activate"),
    "cameras": _Param((), "Camera names, for one node serving several cameras with one model: camera C reads "
                          "C/image (or C/image/compressed) and C/camera_info and publishes C/depth/..., its frames "
                          "batched with the other cameras'. Not set: one camera on image and camera_info.",
                      applies_on="configure"),
    "max_batch": _Param(0, "With several cameras, the most frames one forward pass runs (flip_tta doubles it); the "
                           "cameras left out are served first in the next one, so every camera keeps the same rate. "
                           "0 = auto: 1 on CPU (a batch is no faster there, and holds every frame's activations at "
                           "once), every camera with a new frame on a GPU. Lower it when GPU memory is short.",
                        range=(0, 64)),
    "max_image_pixels": _Param(16_777_216, "Images with more pixels (width x height, read from the message "
                                           "or the JPEG/PNG header) are rejected before anything is decoded "
                                           "or allocated.", range=(1, 1 << 30)),
    "new_sequence_after_s": _Param(NEW_SEQUENCE_AFTER_S,
                                   "After this many seconds without an admitted image, the next one starts "
                                   "a new sequence: its stamp is not compared with the previous one's (a "
                                   "replayed or looping bag, a restarted driver). A new publisher does too.",
                                   range=(0.0, 3600.0)),
    "camera_info_timeout_s": _Param(5.0, "Warn (log and /diagnostics) when images arrive but no valid "
                                         "camera_info came for this long; the last one stays in use. "
                                         "0 disables the warning.", range=(0.0, 3600.0)),
    "fallback_hfov_deg": _Param(0.0, "Without camera_info, guess a pinhole camera with this horizontal "
                                     "field of view (degrees) for depth/camera_info and depth/points; "
                                     "0 disables the guess.", range=(0.0, 179.0)),
    "autostart": _Param(True, "Configure and activate at startup (otherwise wait for lifecycle "
                              "transitions).", read_only=True),
}


@dataclass(frozen=True)
class Settings:
    """A consistent snapshot of the parameters, swapped atomically for the worker thread: one field
    per entry of PARAMETERS, in its order, typed as its default."""

    model: str
    engine: str
    device: str
    precision: str
    flip_tta: bool
    compile: bool
    mode: str
    min_depth: float
    max_depth: float
    temporal_filter: str
    publish_points: bool
    points_stride: int
    points_color: bool
    publish_colormap: bool
    colormap_fixed_range: bool
    colormap_min: float
    colormap_max: float
    publish_uncertainty: bool
    publish_depth_mm: bool
    compressed_depth_format: str
    compressed_depth_max: float
    compressed_depth_quantization: float
    compressed_depth_png_level: int
    input_reliability: str
    input_transport: str
    cameras: tuple[str, ...]
    max_batch: int
    max_image_pixels: int
    new_sequence_after_s: float
    camera_info_timeout_s: float
    fallback_hfov_deg: float
    autostart: bool


def descriptor(name: str) -> ParameterDescriptor:
    """The descriptor parameter `name` is declared with: its description, choices and the
    transition a change waits for in words, its range, read-only."""
    spec = PARAMETERS[name]
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    if spec.applies_on:
        text += f" Takes effect on the next {spec.applies_on} transition."
    declared = ParameterDescriptor(name=name, description=text, read_only=spec.read_only)
    if spec.range is not None:
        if isinstance(spec.default, int):
            declared.integer_range = [IntegerRange(from_value=spec.range[0], to_value=spec.range[1], step=1)]
        else:
            declared.floating_point_range = [FloatingPointRange(from_value=spec.range[0], to_value=spec.range[1])]
    return declared


def validate(changes: dict[str, object], current: dict[str, object]) -> str | None:
    """Why `changes` (name -> new value) cannot be applied on top of `current`, or None."""
    for name, value in changes.items():
        spec = PARAMETERS.get(name)
        if spec is None:
            continue
        if spec.choices and value not in spec.choices:
            return f"{name} must be one of {', '.join(spec.choices)}, not '{value}'"
        if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
            return f"{name} must be in [{spec.range[0]}, {spec.range[1]}], not {value}"
    if "device" in changes and not DEVICE_PATTERN.match(str(changes["device"])):
        return f"device must be auto, cpu, cuda or cuda:N, not '{changes['device']}'"
    if "cameras" in changes:
        problem = camera_names_problem(list(changes["cameras"] or ()))
        if problem is not None:
            return problem
    if "model" in changes and not str(changes["model"]).strip():
        return "model must name a preset or a checkpoint path"
    merged = {**current, **changes}
    if not merged["min_depth"] < merged["max_depth"]:
        return f"min_depth ({merged['min_depth']}) must be below max_depth ({merged['max_depth']})"
    compressed_max = merged.get("compressed_depth_max", 0.0)
    if compressed_max and not compressed_max > merged["min_depth"]:
        return (f"compressed_depth_max ({compressed_max}) must be 0 (max_depth) or above min_depth "
                f"({merged['min_depth']})")
    if not merged["colormap_min"] < merged["colormap_max"]:
        return f"colormap_min ({merged['colormap_min']}) must be below colormap_max ({merged['colormap_max']})"
    return None
