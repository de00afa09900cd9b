"""`synth --motion`: one scene along a trajectory, poses on /ground_truth/pose that move each
frame's ground truth onto the next one's, camera noise on every frame, cuts as new sequences."""

from __future__ import annotations

import numpy as np
import pytest

from zoedepth_ros.cli import main
from zoedepth_ros.data.bag import read_frames, read_metadata
from zoedepth_ros.data.synth import FRAME_PERIOD_NS, write_synth_bag
from zoedepth_ros.data.synth_motion import SPEED_MPS, TURN_RATE_DPS, cut_index
from zoedepth_ros.eval.protocols import Protocol
from zoedepth_ros.eval.temporal import warp_abs_rel
from zoedepth_ros.sequences import NEW_SEQUENCE_AFTER_S, starts_new_sequence

# Nearest-pixel resampling makes the warped ground truth off by a pixel at depth edges: the error
# halves as the resolution doubles (0.7 / 1.4 at half these sizes, 0.2 / 0.4 at twice).
SIZE = {"indoor": (120, 160), "outdoor": (88, 304)}
FRAMES = 5


def sequence(tmp_path, kind: str, motion: str, frames: int = FRAMES, **kwargs):
    bag = write_synth_bag(tmp_path / f"{kind}_{motion}", kind=kind, frames=frames, seed=3, size=SIZE[kind],
                          motion=motion, progress=False, **kwargs)
    return bag, list(read_frames(bag))


def ground_truth_tae(frames, protocol: Protocol) -> float:
    """100 x the mean AbsRel of each frame's ground truth warped onto its neighbour's, both ways."""
    errors = [warp_abs_rel(a.depth, b.depth, a.K, a.pose, b.pose, protocol.min_depth, protocol.max_depth)
              for first, second in zip(frames, frames[1:], strict=False)
              for a, b in ((first, second), (second, first))]
    assert None not in errors
    return 100 * float(np.mean(errors))


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
@pytest.mark.parametrize("motion", ["static", "forward", "turn", "fast"])
def test_the_pose_moves_each_ground_truth_onto_the_next(tmp_path, kind, motion):
    bag, frames = sequence(tmp_path, kind, motion)
    protocol = Protocol.from_metadata(read_metadata(bag))
    assert read_metadata(bag)["motion"] == motion
    assert len(frames) == FRAMES and all(f.pose is not None for f in frames)
    stamps = [f.stamp_ns for f in frames]
    assert np.diff(stamps).tolist() == [FRAME_PERIOD_NS] * (FRAMES - 1)
    tae = ground_truth_tae(frames, protocol)
    if motion == "static":
        assert tae == 0
        assert all(np.array_equal(f.pose, frames[0].pose) for f in frames)
        assert all(np.array_equal(f.depth, frames[0].depth, equal_nan=True) for f in frames)
    else:
        # Resampling only; the sway of `fast` turns the view by 4x as much per frame.
        assert tae < (1.5 if motion == "fast" else 1)
        # The camera really moves: its ground truth changes from frame to frame.
        assert not np.array_equal(frames[0].depth, frames[-1].depth, equal_nan=True)
    # A still camera still gives different images: noise and exposure change per frame.
    assert all(not np.array_equal(a.rgb, b.rgb) for a, b in zip(frames, frames[1:], strict=False))


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_the_recorded_poses_are_the_motion(tmp_path, kind):
    """Poses in the REP 103 world: forward moves along +x at the kind's speed, turn yaws right
    (negative about +z) at TURN_RATE_DPS, both keep the camera's height."""
    _, forward = sequence(tmp_path, kind, "forward", frames=3)
    step = forward[1].pose[:3, 3] - forward[0].pose[:3, 3]
    np.testing.assert_allclose(step, [SPEED_MPS[kind] * FRAME_PERIOD_NS / 1e9, 0, 0], atol=1e-9)
    np.testing.assert_allclose(forward[1].pose[:3, :3], forward[0].pose[:3, :3], atol=1e-12)
    _, turn = sequence(tmp_path, kind, "turn", frames=3)
    relative = np.linalg.inv(turn[0].pose) @ turn[1].pose
    np.testing.assert_allclose(relative[:3, 3], 0, atol=1e-9)
    # The optical axis (the camera's z) seen from above, in the world's x-y plane: a right turn
    # lowers its heading (y points left).
    heading = [np.degrees(np.arctan2(f.pose[1, 2], f.pose[0, 2])) for f in turn]
    assert heading[0] - heading[1] == pytest.approx(TURN_RATE_DPS * FRAME_PERIOD_NS / 1e9)
    # The optical axis (camera z) stays level: the world z of the camera's z axis is unchanged.
    assert turn[1].pose[2, 2] == pytest.approx(turn[0].pose[2, 2])


@pytest.mark.parametrize("gap_s", [2.0, 0.0])
def test_a_cut_is_another_scene_after_a_gap(tmp_path, gap_s):
    frames_n = 6
    bag, frames = sequence(tmp_path, "indoor", "cut", frames=frames_n, cut_gap_s=gap_s)
    metadata = read_metadata(bag)
    cut = cut_index(frames_n)
    assert int(metadata["cut_index"]) == cut and float(metadata["cut_gap_s"]) == gap_s
    stamps = [f.stamp_ns for f in frames]
    gaps = np.diff(stamps).tolist()
    assert gaps[cut - 1] == FRAME_PERIOD_NS + round(gap_s * 1e9)
    assert [g for i, g in enumerate(gaps) if i != cut - 1] == [FRAME_PERIOD_NS] * (frames_n - 2)
    # With the default gap the second scene is a new sequence by the node's rule; without, it is not.
    new = [starts_new_sequence(a, b, NEW_SEQUENCE_AFTER_S) for a, b in zip(stamps, stamps[1:], strict=False)]
    assert new == [i == cut - 1 and gap_s > NEW_SEQUENCE_AFTER_S for i in range(frames_n - 1)]
    # Static within each half, a different scene across the cut.
    assert np.array_equal(frames[0].depth, frames[cut - 1].depth, equal_nan=True)
    assert np.array_equal(frames[cut].depth, frames[-1].depth, equal_nan=True)
    assert not np.allclose(frames[cut - 1].depth, frames[cut].depth, equal_nan=True)


def test_the_same_seed_gives_the_same_sequence(tmp_path):
    _, first = sequence(tmp_path / "a", "outdoor", "fast", frames=3)
    _, again = sequence(tmp_path / "b", "outdoor", "fast", frames=3)
    for a, b in zip(first, again, strict=True):
        assert a.rgb.tobytes() == b.rgb.tobytes() and a.depth.tobytes() == b.depth.tobytes()
        assert np.array_equal(a.pose, b.pose)


def test_the_command_writes_a_motion_and_refuses_bad_options(tmp_path, capsys):
    out = tmp_path / "turn"
    assert main(["synth", str(out), "--kind", "outdoor", "--frames", "3", "--size", "44x152", "--motion", "turn",
                 "--seed", "2"]) == 0
    assert len([f for f in read_frames(out) if f.pose is not None]) == 3
    assert main(["synth", str(tmp_path / "x"), "--motion", "forward", "--cut-gap", "1"]) == 2
    assert "--cut-gap needs --motion cut" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path / "y"), "--motion", "cut", "--cut-gap", "-1"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["synth", str(tmp_path / "z"), "--motion", "orbit"])
