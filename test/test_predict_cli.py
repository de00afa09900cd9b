"""`zoedepth-ros predict` writes metres (.npy), millimetres (.png) and a colour picture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zoedepth_ros.cli import main
from zoedepth_ros.depth_codec import depth_to_mm16
from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.model import load_model


def test_predict_outputs(tmp_path, tiny_checkpoint, capsys):
    ckpt = tiny_checkpoint("N")
    rgb = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), rgb[..., ::-1])
    assert main(["predict", "--model", str(ckpt), "-o", str(tmp_path / "d.npy"), "--colormap",
                 str(tmp_path / "c.png"), str(tmp_path / "in.png")]) == 0
    depth = np.load(tmp_path / "d.npy")
    expected = DepthEstimator(load_model(ckpt), device="cpu", flip_tta=True, pad=True).predict(rgb).depth
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    colour = cv2.imread(str(tmp_path / "c.png"))
    assert colour.shape == (90, 120, 3)
    assert main(["predict", "--model", str(ckpt), "-o", str(tmp_path / "d.png"), str(tmp_path / "in.png")]) == 0
    mm = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert mm.dtype == np.uint16 and np.array_equal(mm, depth_to_mm16(depth))
    assert main(["predict", "--model", str(ckpt), "-o", str(tmp_path / "d.png"), str(tmp_path / "nope.png")]) == 2
    assert "no such image, directory or video" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert main(["predict", "--model", str(ckpt), "-o", str(tmp_path / "d.png"), str(tmp_path / "broken.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_mm16_encoding():
    depth = np.array([[1.25, np.nan, -1.0, 70.0, 0.0, 65.5]], dtype=np.float32)
    assert depth_to_mm16(depth).tolist() == [[1250, 0, 0, 0, 0, 65500]]


def frames_of_one_scene(count, seed=0):
    """A still scene with a camera's noise on every frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 215, (6, 8, 3)).repeat(15, axis=0).repeat(15, axis=1)
    return [np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8) for _ in range(count)]


def test_a_directory_is_predicted_frame_by_frame_through_the_filter(tmp_path, tiny_checkpoint, capsys):
    from zoedepth_ros.inference.temporal_filter import make_temporal_filter

    ckpt = tiny_checkpoint("N")
    images = tmp_path / "images"
    images.mkdir()
    frames = frames_of_one_scene(4)
    for i, rgb in reversed(list(enumerate(frames))):  # written out of order: read sorted by name
        cv2.imwrite(str(images / f"{i:03d}.png"), rgb[..., ::-1])
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "depth"
    assert main(["predict", "--model", ckpt, "-o", str(out), "--temporal-filter", "ema", "--no-progress",
                 "--colormap", str(tmp_path / "colour"), str(images)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:03d}.npy" for i in range(4)]
    assert len(list((tmp_path / "colour").iterdir())) == 4
    estimator = DepthEstimator(load_model(ckpt), device="cpu", flip_tta=True, pad=True)
    flt = make_temporal_filter("ema")
    for i, rgb in enumerate(frames):
        expected = flt.filter(estimator.predict(rgb).depth, i * 100_000_000, None)
        np.testing.assert_allclose(np.load(out / f"{i:03d}.npy"), expected, rtol=1e-6)
        if i == 0:  # the first frame of a sequence is the prediction itself
            np.testing.assert_allclose(expected, estimator.predict(rgb).depth, rtol=1e-6)
    assert "4 frames in" in capsys.readouterr().out
    # A directory needs a directory to write to, and a filter the node knows.
    assert main(["predict", "--model", ckpt, "-o", str(tmp_path / "x.npy"), str(images)]) == 2
    assert "--output must be a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--model", ckpt, "-o", str(out), "--temporal-filter", "median", str(images)])


def test_hfov_gives_the_filter_the_camera_intrinsics(tmp_path, tiny_checkpoint, capsys):
    """`--hfov`: motion-ema gets K (a pinhole camera of that field of view) with each image, as the
    node gets camera_info's; without it, K None. Either way the offline filter with the same inputs."""
    from zoedepth_ros.camera_info import pinhole_from_hfov
    from zoedepth_ros.inference.temporal_filter import make_temporal_filter

    ckpt = tiny_checkpoint("N")
    images = tmp_path / "images"
    images.mkdir()
    frames = [np.ascontiguousarray(np.roll(rgb, 4 * i, axis=1)) for i, rgb in enumerate(frames_of_one_scene(4))]
    for i, rgb in enumerate(frames):  # a camera panning: the picture moves 4 px a frame
        cv2.imwrite(str(images / f"{i:03d}.png"), rgb[..., ::-1])
    estimator = DepthEstimator(load_model(ckpt), device="cpu", flip_tta=True, pad=True)
    for hfov in (60.0, None):
        out = tmp_path / f"depth_{hfov}"
        assert main(["predict", "--model", ckpt, "-o", str(out), "--no-progress", str(images)]
                    + ([] if hfov is None else ["--hfov", str(hfov)])) == 0
        flt = make_temporal_filter("motion-ema")
        for i, rgb in enumerate(frames):
            depth = estimator.predict(rgb).depth
            K = None if hfov is None else np.reshape(pinhole_from_hfov(depth.shape[1], depth.shape[0], hfov).k, (3, 3))
            np.testing.assert_allclose(np.load(out / f"{i:03d}.npy"), flt.filter(depth, i * 100_000_000, K, rgb),
                                       rtol=1e-6)
    assert main(["predict", "--model", ckpt, "-o", str(tmp_path / "x"), "--hfov", "180", str(images)]) == 2
    assert "--hfov must be a field of view in (0, 180) degrees" in capsys.readouterr().err


def test_a_video_is_predicted_frame_by_frame(tmp_path, tiny_checkpoint):
    ckpt = tiny_checkpoint("N")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (120, 90))
    assert writer.isOpened()
    for rgb in frames_of_one_scene(3, seed=1):
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()
    out = tmp_path / "depth"
    assert main(["predict", "--model", ckpt, "-o", str(out), "--format", "png", "--no-progress", str(video)]) == 0
    capture, decoded = cv2.VideoCapture(str(video)), []
    while (read := capture.read())[0]:
        decoded.append(np.ascontiguousarray(read[1][..., ::-1]))
    assert len(decoded) == 3
    estimator = DepthEstimator(load_model(ckpt), device="cpu", flip_tta=True, pad=True)
    for i, rgb in enumerate(decoded):
        mm = cv2.imread(str(out / f"frame_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mm, depth_to_mm16(estimator.predict(rgb).depth))
