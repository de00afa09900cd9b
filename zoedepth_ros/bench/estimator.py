"""The benchmark's estimator part: a camera frame through pre-processing, forward (with and without
flip TTA) and post-processing, our DepthEstimator against the port's image processor + model +
post-processing.
"""

from __future__ import annotations

from zoedepth_ros.bench.timing import camera_frame, interleaved, ratio_rows


def bench_estimator(ours, port, frame, precisions, iters, warmup) -> list[dict]:
    import torch

    from zoedepth_ros.inference import DepthEstimator

    rgb = camera_frame(*frame)
    candidates, refs = {}, {}
    processor = None
    if port is not None:
        from transformers import ZoeDepthImageProcessor

        processor = ZoeDepthImageProcessor()
    for precision in precisions:
        dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
        for flip in (False, True):
            tag = f"{precision}{' flip' if flip else ''}"
            est = DepthEstimator(ours, device="cpu", precision=precision, flip_tta=flip)
            candidates[f"ours {tag}"] = lambda est=est: est.predict(rgb)
            if processor is None:
                continue

            def port_infer(flip=flip, dtype=dtype):
                with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    inputs = processor(images=rgb, return_tensors="pt")
                    out = port(**inputs)
                    flipped = port(pixel_values=inputs["pixel_values"].flip(-1)) if flip else None
                    return processor.post_process_depth_estimation(out, source_sizes=[frame], outputs_flipped=flipped)

            candidates[f"port {tag}"] = port_infer
            refs[f"ours {tag}"] = {f"vs port {tag}": f"port {tag}"}
    return ratio_rows(interleaved(candidates, iters, warmup), refs)
