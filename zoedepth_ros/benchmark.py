"""`zoedepth-ros benchmark`: our engine side by side with the transformers port, same weights.

Parts (interleaved iterations in alternating order, medians after warm-up, ratios against the reference):
- forward:   the model forward at the network size (ours vs the port, fp32 and bf16 autocast;
             with --compile also ours under torch.compile, its compile time reported apart; with
             --engines also ONNX Runtime / OpenVINO on our ONNX export, ratios to ours and the port,
             in every --precision (fp32, bf16, int8) that the engine and this CPU run natively, each
             with its agreement with our fp32; the others are named as skipped, with the reason);
- estimator: a camera frame through pre-processing, forward (with and without flip TTA) and
             post-processing (ours vs the port's image processor + model + post-processing);
- node:      the depth node in its own process, a publisher/subscriber process (this one) over
             DDS: closed-loop latency p50/p95/p99 of depth (+ camera_info, colormap) and of
             depth + organized cloud, open-loop throughput, and the node overhead (latency minus
             the forward time of the same model measured here); with --node-compressed-depth
             png|rvl also the depth latency with depth/image/compressedDepth subscribed against
             without, in alternating blocks;
- multicam:  N cameras (--cameras, default 1,2,4) at --frame over DDS, open loop at --multicam-rate
             per camera: one node serving all N (`cameras`) against N single-camera nodes, per-camera
             FPS and age p50/p99, the node processes' peak RSS and PSS against one single-camera node's
             (the node's max_batch: --multicam-max-batch, default its auto);
- parity:    each --engines engine against our PyTorch model on both NK routes and a mixed batch
             (median relative difference, error against our float64 within our float32's);
- filter:    each temporal filter (the node's temporal_filter) per --frame prediction, on a noisy
             stream of one still scene (no model);
- codec:     recording the depth at --frame: raw 32FC1 against image_transport's compressedDepth
             (PNG levels 1, 3, 9 and RVL) on synthetic indoor and outdoor ground truth, encode and
             decode ms and bytes per frame (no model).
Random weights are fine for speed. The port's weights are drawn once and mapped into ours, so
both compute the same function.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from zoedepth_ros.argtypes import at_least, hw_size
from zoedepth_ros.bench.codec import bench_codec, print_codec
from zoedepth_ros.bench.engines import bench_parity, skipped_candidates
from zoedepth_ros.bench.estimator import bench_estimator
from zoedepth_ros.bench.filter import bench_filter, print_filter
from zoedepth_ros.bench.forward import bench_forward
from zoedepth_ros.bench.models import build_models
from zoedepth_ros.bench.multicam import bench_multicam, markdown_rows, print_multicam
from zoedepth_ros.bench.node import bench_node
from zoedepth_ros.bench.report import machine, print_node, print_table, write_json

PARTS = ("forward", "estimator", "node", "multicam", "parity", "filter", "codec")


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="time our engine against the transformers port (same weights)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="forward,estimator,node", help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--arch", default="ZoeD_M12_NK", help="preset (ZoeD_M12_NK, ...) or tiny-NK/tiny-N/tiny-K")
    p.add_argument("--node-arch", default="tiny-NK", help="model of the node part (small, so overhead shows)")
    p.add_argument("--node-img-size", type=hw_size, default=(96, 128),
                   help="img_size of the node part's model (multiples of 32): small, so that the forward "
                        "neither dominates the latency nor competes with the node's other work (default 96x128)")
    p.add_argument("--size", type=hw_size, default=(384, 512),
                   help="network input HxW for the forward part (multiples of 32)")
    p.add_argument("--frame", type=hw_size, default=(480, 640),
                   help="camera frame HxW for the estimator, node, filter and codec parts")
    p.add_argument("--precision", default="fp32,bf16",
                   help="comma list of fp32, bf16, int8: the forward part times every --engines engine in each "
                        "that it and this CPU run natively (bf16: avx512_bf16 or amx_bf16; int8: OpenVINO's, "
                        "avx512_vnni, avx_vnni or amx_int8) and says which it skipped and why")
    p.add_argument("--reference", default="hf", choices=["hf", "none"], help="reference implementation")
    p.add_argument("--iters", type=int, default=5, help="timed rounds per candidate")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--node-frames", type=int, default=100, help="closed-loop frames per node configuration")
    p.add_argument("--node-rate", type=float, default=100.0, help="open-loop publish rate (Hz)")
    p.add_argument("--node-compressed-depth", choices=("png", "rvl"),
                   help="node part: also time the depth with depth/image/compressedDepth (this format, the node's "
                        "default level and quantization) subscribed against without, in alternating blocks")
    p.add_argument("--cameras", default="1,2,4", help="multicam part: comma list of camera counts N (1 is "
                   "always run: one single-camera node is the memory reference)")
    p.add_argument("--multicam-arch", default="tiny-NK", help="model of the multicam part (ZoeD_M12_NK: full size)")
    p.add_argument("--multicam-img-size", type=hw_size, default=(384, 512),
                   help="img_size of the multicam part's model (multiples of 32; default 384x512)")
    p.add_argument("--multicam-rate", type=float, default=10.0, help="multicam part: frames per second per camera")
    p.add_argument("--multicam-max-batch", type=at_least(0), default=0,
                   help="multicam part: the node's max_batch (0, the default: its auto, one frame per forward on CPU)")
    p.add_argument("--multicam-seconds", type=float, default=10.0,
                   help="multicam part: measured seconds per setup, after every camera's first output")
    p.add_argument("--engines", default="torch",
                   help="comma list of torch, onnxruntime, openvino: the engines the forward and parity parts run "
                        "(torch is always timed; tensorrt is timed by bench/gpu_check.sh on a GPU)")
    p.add_argument("--compile", action="store_true",
                   help="forward part: also time our model under torch.compile (inductor, frozen weights)")
    p.add_argument("--dds-profile", default="shipped", metavar="shipped|none|FILE",
                   help="node and multicam parts: Fast DDS profile of the nodes and this process: shipped "
                        "(config/fastdds_large_images.xml, the default), none (Fast DDS defaults) or an XML file")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown --parts {sorted(unknown)}; choose from {PARTS}")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "bf16", "int8"}:
        raise SystemExit(f"--precision {args.precision}: a comma list of fp32, bf16, int8")
    engines = [e.strip() for e in args.engines.split(",") if e.strip() and e.strip() != "torch"]
    if set(engines) - {"onnxruntime", "openvino"}:
        raise SystemExit(f"--engines {args.engines}: choose from torch, onnxruntime, openvino")
    # What this CPU and each engine run natively; ours (torch) also sets the port's and the estimator's.
    skipped = skipped_candidates(["torch", *engines], precisions)
    engine_precisions = tuple(precisions)
    precisions = [p for p in precisions if f"ours {p}" not in skipped]
    for flag, size in (("--size", args.size), ("--node-img-size", args.node_img_size),
                       ("--multicam-img-size", args.multicam_img_size)):
        if any(v % 32 for v in size):
            raise SystemExit(f"{flag} {'x'.join(map(str, size))}: both sides must be multiples of 32")
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "command": " ".join(sys.argv),
               "arch": args.arch, "size": "x".join(map(str, args.size)), "frame": "x".join(map(str, args.frame))}
    print(f"zoedepth-ros benchmark on {results['machine']}")
    if skipped:
        results["skipped"] = skipped
        print("skipped: " + "; ".join(f"{name} ({why})" for name, why in skipped.items()))
    if {"forward", "estimator", "parity"} & set(parts):
        ours, port = build_models(args.arch, args.reference == "hf")
        if "forward" in parts:
            results["forward"], compile_s, agreement = bench_forward(
                ours, port, args.size, precisions, args.iters, args.warmup, compile=args.compile, engines=engines,
                engine_precisions=engine_precisions, skipped=skipped)
            print_table(f"(a) forward {args.arch} at {results['size']}, batch 1", results["forward"])
            if compile_s:
                results["compile_s"] = compile_s
                print("  set-up (untimed): " + ", ".join(f"{k} {v:.0f} s" for k, v in compile_s.items()))
            if agreement:
                results["agreement"] = agreement
                print("  agreement with ours fp32 (relative, per pixel): " + ", ".join(
                    f"{k} median {v['median_rel']:.1e} max {v['max_rel']:.1e}" for k, v in agreement.items()))
        if "estimator" in parts:
            results["estimator"] = bench_estimator(ours, port, args.frame, precisions, args.iters, args.warmup)
            print_table(f"(b) estimator on a {results['frame']} frame (pre + forward + post)", results["estimator"])
        if "parity" in parts:
            if not engines:
                raise SystemExit("--parts parity needs --engines onnxruntime and/or openvino")
            print(f"\n(d) engine parity, {args.arch} at {results['size']}")
            port = None  # not needed here: its memory goes to the float64 reference
            results["parity"] = bench_parity(ours, args.size, engines)
        del ours, port
    if {"node", "multicam"} & set(parts):
        from zoedepth_ros.ros.processes import shipped_dds_profile

        profile = None if args.dds_profile == "none" else str(shipped_dds_profile() if args.dds_profile == "shipped"
                                                               else args.dds_profile)
        if profile is not None and not Path(profile).is_file():
            raise SystemExit(f"--dds-profile {profile}: no such file (use shipped, none or an XML file)")
    if "node" in parts:
        node = bench_node(args.node_arch, args.node_img_size, args.frame, args.node_frames, warmup=5,
                          rate_s=1.0 / args.node_rate, profile=profile, compressed_depth=args.node_compressed_depth)
        results["node"] = {**node, "dds_profile": profile or "Fast DDS defaults"}
        print_node(f"\n(c) node end to end, {args.node_arch} at img_size {'x'.join(map(str, args.node_img_size))}, "
                   f"{results['frame']} rgb8 over DDS "
                   f"(model forward here {node['forward']['median_ms']:.1f} ms; "
                   f"DDS profile: {results['node']['dds_profile']})", node)
    if "multicam" in parts:
        try:
            counts = [int(c) for c in args.cameras.split(",") if c.strip()]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            raise SystemExit(f"--cameras {args.cameras}: a comma list of camera counts (1, 2, 4 ...)")
        rows = bench_multicam(args.multicam_arch, args.multicam_img_size, args.frame, counts, args.multicam_rate,
                              args.multicam_seconds, profile, node_params={"max_batch": args.multicam_max_batch})
        results["multicam"] = {"arch": args.multicam_arch, "img_size": "x".join(map(str, args.multicam_img_size)),
                               "rate_hz": args.multicam_rate, "seconds": args.multicam_seconds, "rows": rows,
                               "max_batch": args.multicam_max_batch, "dds_profile": profile or "Fast DDS defaults"}
        title = (f"\n(e) several cameras, {args.multicam_arch} at img_size "
                 f"{results['multicam']['img_size']}, {results['frame']} rgb8 at {args.multicam_rate:g} Hz "
                 f"per camera over DDS, max_batch {args.multicam_max_batch or 'auto'}, "
                 f"{args.multicam_seconds:g} s per setup (age: the slowest camera's)")
        print_multicam(title, rows)
        print("\n".join(markdown_rows(rows)))
    if "filter" in parts:
        results["filter"] = bench_filter(args.frame, args.iters, args.warmup)
        print_filter(f"\n(f) temporal filters at {results['frame']}, per frame ({args.iters} frames after "
                     f"{args.warmup} untimed)", results["filter"])
    if "codec" in parts:
        results["codec"] = bench_codec(args.frame, args.iters, args.warmup)
        print_codec(f"\n(g) recording depth at {results['frame']}: raw 32FC1 against compressedDepth "
                    f"(synthetic GT, {args.iters} rounds)", results["codec"])
    if args.out:
        write_json(args.out, results)
    return 0
