"""The temporal filter study of docs/evaluation.md ("Temporal filter: figures"): the demo model on
synthetic motion sequences of both kinds, every temporal filter, scored as `evaluate` scores.

    .venv/bin/python bench/temporal_study.py OUT [--frames 20] [--seed 4001]

For each kind (indoor, outdoor) and motion (static, forward, turn, fast, cut with the 2 s gap,
cut without a gap) it writes a bag with `synth --motion`, runs the model once per frame in the
official evaluation mode (what `evaluate --model` runs), applies each filter to the predictions in
stamp order exactly as `evaluate --temporal-filter` does, and scores them with the same
BagEvaluation. OUT/study.json holds every figure; OUT/study.md the table of docs/evaluation.md.
`evaluate --model ... --temporal-filter F` on OUT/bags/<bag> reproduces any row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from zoedepth_ros.data.bag import read_frames, read_metadata
from zoedepth_ros.data.synth import write_synth_bag
from zoedepth_ros.data.synth_motion import cut_index
from zoedepth_ros.eval.protocols import Protocol, kb_crop, kb_crop_projection
from zoedepth_ros.eval.results import summarize
from zoedepth_ros.eval.scoring import BagEvaluation
from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.inference.engines import load_source
from zoedepth_ros.inference.temporal_filter import TEMPORAL_FILTERS, make_temporal_filter

DEMO_MODEL = Path(__file__).resolve().parents[1] / "zoedepth_ros" / "assets" / "demo_nk.safetensors"
SEQUENCES = [(kind, motion, gap) for kind in ("indoor", "outdoor")
             for motion, gap in (("static", 2.0), ("forward", 2.0), ("turn", 2.0), ("fast", 2.0), ("cut", 2.0),
                                 ("cut", 0.0))]


# A frame after a cut is smeared when over 1 % of its pixels are more than 10 % off the prediction.
SMEAR_RATIO = 1.1
SMEAR_PIXELS = 0.01


def sequence_name(kind: str, motion: str, gap: float) -> str:
    return f"{kind}_{motion}" + ("_nogap" if motion == "cut" and gap == 0.0 else "")


def smears(filtered: np.ndarray, predicted: np.ndarray) -> bool:
    """Whether a frame after a cut shows the old scene: more than SMEAR_PIXELS of its valid pixels
    off the prediction by more than SMEAR_RATIO."""
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.abs(np.log(filtered / predicted))
    valid = np.isfinite(off)
    return np.count_nonzero(off[valid] > np.log(SMEAR_RATIO)) > SMEAR_PIXELS * np.count_nonzero(valid)


def predict_bag(estimator: DepthEstimator, bag: Path, protocol: Protocol) -> list[tuple]:
    """(frame, image, K, prediction) of every frame, as evaluate_with_estimator predicts them and
    gives them to the temporal filter (the image and K of the KB crop where the protocol crops)."""
    out = []
    for frame in read_frames(bag):
        rgb = np.ascontiguousarray(kb_crop(frame.rgb) if protocol.kb_crop else frame.rgb)
        K = kb_crop_projection(frame.K, *frame.rgb.shape[:2]) if protocol.kb_crop else frame.K
        out.append((frame, rgb, K, estimator.predict_batch([rgb])[0].depth))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--seed", type=int, default=4001)
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--filters", default=",".join(TEMPORAL_FILTERS))
    args = parser.parse_args()
    filters = args.filters.split(",")
    estimator = DepthEstimator(load_source(args.model), device="cpu", flip_tta=True, pad=False, mode="eval")
    results: dict[str, dict[str, dict]] = {}
    for kind, motion, gap in SEQUENCES:
        name = sequence_name(kind, motion, gap)
        bag = write_synth_bag(args.out / "bags" / name, kind=kind, frames=args.frames, seed=args.seed,
                              motion=motion, cut_gap_s=gap, overwrite=True, progress=False)
        protocol = Protocol.from_metadata(read_metadata(bag))
        predictions = predict_bag(estimator, bag, protocol)
        results[name] = {}
        for filter_name in filters:
            flt = make_temporal_filter(filter_name)
            evaluation = BagEvaluation(name, protocol, worst=0, path=bag)
            first_after_cut = smeared = None
            for index, (frame, rgb, K, depth) in enumerate(predictions):
                filtered = flt.filter(depth, frame.stamp_ns, K, rgb)
                if motion == "cut" and index == cut_index(args.frames):
                    first_after_cut = bool(np.array_equal(filtered, depth, equal_nan=True))
                    smeared = 0
                if smeared is not None and smears(filtered, depth):
                    smeared += 1
                evaluation.add(frame, filtered, index)
            summary = summarize([evaluation], {"model": args.model, "temporal_filter": filter_name}, True)
            temporal = summary.get("temporal") or {}
            results[name][filter_name] = {
                "abs_rel": summary["abs_rel"], "a1": summary["a1"], "tae": temporal.get("tae"),
                "flicker": temporal.get("flicker"), "pairs": temporal.get("pairs"),
                "first_after_cut_unfiltered": first_after_cut, "frames_smeared_after_cut": smeared,
            }
        print(name, json.dumps(results[name]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "study.md").write_text(table(results, filters))
    print(table(results, filters))
    return 0


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, dict[str, dict]], filters: list[str]) -> str:
    """Per sequence and filter: TAE, flicker, abs_rel, and their change against none."""
    lines = ["| sequence | filter | TAE | vs none | flicker | vs none | abs_rel | vs none |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, by_filter in results.items():
        base = by_filter.get("none", {})
        for filter_name in filters:
            row = by_filter[filter_name]
            cells = [name, filter_name]
            for key, digits in (("tae", 3), ("flicker", 6), ("abs_rel", 4)):
                value, ref = row[key], base.get(key)
                change = (f"{100 * (value / ref - 1):+.1f} %" if value is not None and ref and filter_name != "none"
                          else "")
                cells += [_fmt(value, digits), change]
            lines.append("| " + " | ".join(cells) + " |")
    cuts = [(name, f, by_filter[f]) for name, by_filter in results.items() for f in filters
            if by_filter[f].get("frames_smeared_after_cut") is not None]
    if cuts:
        lines += ["", "| cut sequence | filter | first frame after the cut = prediction | frames smeared after it |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {f} | {'yes' if row['first_after_cut_unfiltered'] else 'no'} | "
                  f"{row['frames_smeared_after_cut']} |" for name, f, row in cuts]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
