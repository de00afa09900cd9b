"""`evaluate --temporal-filter`: the predictions of each bag are filtered in stamp order as the depth
node filters a camera's, restarting where the stamps start a new sequence; recorded predictions
(`--pred-topic`) too."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_evaluate import make_frames, write_prediction_bag

from zoedepth_ros.cli import main
from zoedepth_ros.data.bag import read_frames
from zoedepth_ros.data.synth import write_synth_bag
from zoedepth_ros.eval.metrics import score_frame
from zoedepth_ros.eval.protocols import get_protocol
from zoedepth_ros.inference.temporal_filter import make_temporal_filter

SIZE = (96, 128)


@pytest.fixture
def checkpoint(tiny_checkpoint, one_torch_thread):
    return tiny_checkpoint("NK", SIZE)


def evaluate(out, *args):
    assert main(["evaluate", *map(str, args), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "per_frame.csv", newline="") as f:
        return summary, list(csv.DictReader(f))


def test_model_predictions_are_filtered_in_stamp_order_per_bag(tmp_path, checkpoint):
    from zoedepth_ros.inference import DepthEstimator
    from zoedepth_ros.model import load_model

    bags = tmp_path / "bags"
    write_synth_bag(bags / "a_static", frames=5, size=SIZE, motion="static", seed=1, progress=False)
    write_synth_bag(bags / "b_cut", frames=4, size=SIZE, motion="cut", seed=2, progress=False)
    model = ["--model", checkpoint, "--device", "cpu"]
    plain, plain_rows = evaluate(tmp_path / "none", bags, *model)
    filtered, rows = evaluate(tmp_path / "ema", bags, *model, "--temporal-filter", "ema")
    assert filtered["temporal_filter"] == "ema" and plain["temporal_filter"] == "none"

    # The same, by hand: the official eval predictions through one filter per bag.
    estimator = DepthEstimator(load_model(checkpoint), device="cpu", flip_tta=True, pad=False, mode="eval")
    protocol = get_protocol("synth_indoor")
    expected = []
    for bag in sorted(bags.iterdir()):
        flt = make_temporal_filter("ema")
        for frame in read_frames(bag):
            depth = flt.filter(estimator.predict(frame.rgb).depth, frame.stamp_ns, frame.K)
            expected.append(score_frame(depth, frame.depth, protocol)["abs_rel"])
    assert [float(r["abs_rel"]) for r in rows] == pytest.approx(expected, rel=1e-6)
    # The first frame of each bag, and the first after the cut's 2 s gap, are the prediction itself.
    firsts = [0, 5, 5 + 2]
    assert [rows[i]["abs_rel"] for i in firsts] == [plain_rows[i]["abs_rel"] for i in firsts]
    assert [r["abs_rel"] for r in rows] != [r["abs_rel"] for r in plain_rows]
    # Noise on a still camera: the per-pixel average holds the depth stiller.
    assert filtered["temporal"]["flicker"] < plain["temporal"]["flicker"]


def test_recorded_predictions_are_filtered_by_their_stamps(tmp_path):
    protocol = get_protocol("synth_indoor")
    frames = make_frames(6)
    # A still scene whose predicted scale wanders from frame to frame; a pause of 2 s before frame 4.
    for i in range(4, 6):
        frames[i].stamp_ns += 2 * 10**9
    for frame in frames[1:]:
        frame.depth = frames[0].depth
    factors = [1.0, 1.08, 0.95, 1.06, 1.1, 0.97]
    predictions = [(f.stamp_ns, (f.depth * np.float32(s)).astype(np.float32)) for f, s in zip(frames, factors,
                                                                                               strict=True)]
    bag = write_prediction_bag(tmp_path / "bag", frames, predictions)
    _, rows = evaluate(tmp_path / "out", bag, "--pred-topic", "/depth/image", "--temporal-filter", "scale")
    flt = make_temporal_filter("scale")
    expected = [score_frame(flt.filter(depth, stamp, None), frame.depth, protocol)["abs_rel"]
                for (stamp, depth), frame in zip(predictions, frames, strict=True)]
    assert [float(r["abs_rel"]) for r in rows] == pytest.approx(expected, rel=1e-6)
    # Restarts at the first frame and after the pause: the recorded prediction itself.
    for i in (0, 4):
        assert float(rows[i]["abs_rel"]) == pytest.approx(abs(factors[i] - 1), rel=1e-5)
    assert float(rows[1]["abs_rel"]) < abs(factors[1] - 1)  # the scale held towards the previous frame's


def test_recorded_predictions_get_their_frames_image_and_k(tmp_path):
    """motion-ema on recorded depth (`--pred-topic`): each prediction is filtered with the image and K
    of the bag's frame of its stamp, as the node filtered it (a camera walking: the motion is
    followed only with them)."""
    protocol = get_protocol("synth_indoor")
    walk = write_synth_bag(tmp_path / "walk", frames=5, size=(240, 320), motion="forward", seed=3, progress=False)
    frames = list(read_frames(walk))
    rng = np.random.default_rng(0)
    predictions = [(f.stamp_ns, (f.depth * np.float32(np.exp(rng.normal(0, 0.03)))).astype(np.float32))
                   for f in frames]
    bag = write_prediction_bag(tmp_path / "bag", frames, predictions)
    _, rows = evaluate(tmp_path / "out", bag, "--pred-topic", "/depth/image", "--temporal-filter", "motion-ema")
    with_frames, without = make_temporal_filter("motion-ema"), make_temporal_filter("motion-ema")
    expected, blind = [], []
    for (stamp, depth), frame in zip(predictions, frames, strict=True):
        expected.append(score_frame(with_frames.filter(depth, stamp, frame.K, frame.rgb), frame.depth,
                                    protocol)["abs_rel"])
        blind.append(score_frame(without.filter(depth, stamp, None), frame.depth, protocol)["abs_rel"])
    assert [float(r["abs_rel"]) for r in rows] == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(blind, rel=1e-6)  # the images and K made a difference


def test_an_unknown_filter_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(tmp_path), "--pred-topic", "/d", "--out", str(tmp_path / "o"),
              "--temporal-filter", "median"])
    assert exit_info.value.code == 2
    assert "--temporal-filter" in capsys.readouterr().err
