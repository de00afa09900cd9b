"""`zoedepth-ros predict` writes metres (.npy), millimetres (.png) and a colour picture."""

from __future__ import annotations

import cv2
import numpy as np

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
    assert "cannot read image" in capsys.readouterr().err


def test_mm16_encoding():
    depth = np.array([[1.25, np.nan, -1.0, 70.0, 0.0, 65.5]], dtype=np.float32)
    assert depth_to_mm16(depth).tolist() == [[1250, 0, 0, 0, 0, 65500]]
