"""DepthEstimator: the official pre/post-processing, flip TTA as one batch, precisions."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoedepth_ros.inference import DepthEstimator
from zoedepth_ros.inference.estimator import network_size, reflect_padding


@pytest.mark.parametrize("size, expected", [
    ((480, 640), (384, 512)), ((720, 1280), (384, 672)), ((375, 1242), (384, 1280)), ((384, 512), (384, 512)),
])
def test_minimal_resize_rule(size, expected):
    assert network_size(*size, (384, 512)) == expected


def test_eval_mode_stretches():
    assert network_size(375, 1242, (384, 768), keep_aspect=False) == (384, 768)


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("NK")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((10, 10, 1), dtype=np.uint8)))  # 120x160, structured


def _network_input(image, size):
    """Straight from the definitions: [0,1], bilinear align_corners resize, normalise."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    return (x - 0.5) / 0.5


def _reference(model, image, size, flip):
    """The network input straight from the definitions, forward, optional flip average."""
    x = _network_input(image, size)
    with torch.no_grad():
        d = model(x).metric_depth
        if flip:
            d = 0.5 * (d + model(x.flip(-1)).metric_depth.flip(-1))
    return d


def test_infer_mode_matches_the_definition(model, image):
    est = DepthEstimator(model, device="cpu", flip_tta=True)
    pred = est.predict(image)
    assert pred.depth.shape == image.shape[:2] and pred.depth.dtype == np.float32
    size = network_size(120, 160, model.config.img_size)
    ref = F.interpolate(_reference(model, image, size, flip=True), size=(120, 160), mode="bicubic", align_corners=False)
    np.testing.assert_allclose(pred.depth, ref[0, 0].numpy(), rtol=1e-5)
    assert pred.domain in ("nyu", "kitti") and pred.domain_logits.shape == (2,)


def test_eval_mode_matches_the_definition(model, image):
    pred = DepthEstimator(model, device="cpu", flip_tta=True, mode="eval").predict(image)
    ref = F.interpolate(_reference(model, image, model.config.img_size, flip=True), size=(120, 160),
                        mode="bilinear", align_corners=True)
    np.testing.assert_allclose(pred.depth, ref[0, 0].numpy(), rtol=1e-5)


def test_reflect_padding_is_cropped_back(model, image):
    pred = DepthEstimator(model, device="cpu", pad=True).predict(image)
    assert pred.depth.shape == (120, 160) and np.isfinite(pred.depth).all()
    assert reflect_padding(480, 640) == (46, 53)
    unpadded = DepthEstimator(model, device="cpu", pad=False).predict(image)
    assert not np.allclose(pred.depth, unpadded.depth)


def test_batch_equals_single_frames(model, image):
    est = DepthEstimator(model, device="cpu", flip_tta=True)
    other = np.ascontiguousarray(image[::-1])
    batch = est.predict_batch([image, other], with_std=True)
    for img, got in zip((image, other), batch, strict=True):
        single = est.predict(img, with_std=True)
        np.testing.assert_allclose(got.depth, single.depth, rtol=1e-5)
        np.testing.assert_allclose(got.std, single.std, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pad", [False, True])
def test_one_batch_of_images_of_several_sizes(model, image, pad):
    """Images of different sizes that share a network size run as one batch, each prediction at its
    own size and equal to the image's own; images of another network size are refused."""
    est = DepthEstimator(model, device="cpu", pad=pad)
    large = cv2.resize(image, (320, 240), interpolation=cv2.INTER_NEAREST)  # same aspect: same network size
    wide = np.ascontiguousarray(np.concatenate([image, image], axis=1))
    assert est.network_input_size(*large.shape[:2]) == est.network_input_size(*image.shape[:2])
    assert est.network_input_size(*wide.shape[:2]) != est.network_input_size(*image.shape[:2])
    other = np.ascontiguousarray(image[::-1])
    batch = est.predict_batch([image, large, other], with_std=True)
    assert [p.depth.shape for p in batch] == [(120, 160), (240, 320), (120, 160)]
    for img, got in zip((image, large, other), batch, strict=True):
        single = est.predict(img, with_std=True)
        np.testing.assert_allclose(got.depth, single.depth, rtol=1e-5)
        np.testing.assert_allclose(got.std, single.std, rtol=1e-4, atol=1e-6)
        assert got.domain == single.domain
    with pytest.raises(ValueError, match="network_input_size"):
        est.predict_batch([image, wide])


def test_each_prediction_carries_its_forward_time(model, image):
    """The model forward alone (pre- and post-processing excluded), timed once per batch."""
    est = DepthEstimator(model, device="cpu", flip_tta=True)
    started = time.perf_counter()
    pred = est.predict(image)
    assert 0.0 < pred.forward_s < time.perf_counter() - started
    first, second = est.predict_batch([image, image])
    assert first.forward_s == second.forward_s > 0.0


def test_bf16_close_to_fp32(model, image):
    bf16 = DepthEstimator(model, device="cpu", precision="bf16").predict(image).depth
    # The low-precision weights are the estimator's own copy: the caller's model stays fp32.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    fp32 = DepthEstimator(model, device="cpu", precision="fp32").predict(image).depth
    assert np.abs(bf16 - fp32).max() / np.abs(fp32).max() < 1e-2
    assert np.median(np.abs(bf16 - fp32) / fp32) < 1e-2


def test_std_is_a_spread(model, image):
    """std = sqrt(sum_c p_c (c - d)^2) per pixel of the network output, from the bin probabilities
    p_c and centres c of the depth distribution whose mean d is the depth; then resized to the
    input size as the depth is (infer mode: bicubic)."""
    pred = DepthEstimator(model, device="cpu").predict(image, with_std=True)
    assert pred.std.shape == image.shape[:2] and np.all(np.isfinite(pred.std)) and np.all(pred.std >= 0)
    assert pred.std.mean() > 0

    with torch.no_grad():
        out = model(_network_input(image, network_size(*image.shape[:2], model.config.img_size)), return_bins=True)
    p, c = out.probs.double(), out.bin_centers.double()
    torch.testing.assert_close(p.sum(1), torch.ones_like(p.sum(1)), rtol=0, atol=1e-6)  # a distribution over bins
    d = (p * c).sum(1, keepdim=True)
    torch.testing.assert_close(d, out.metric_depth.double(), rtol=1e-5, atol=1e-6)  # whose mean is the depth
    std = (p * (c - d) ** 2).sum(1, keepdim=True).sqrt()
    expected = F.interpolate(std, size=image.shape[:2], mode="bicubic", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(pred.std, expected, rtol=1e-4, atol=1e-6)


def test_bad_inputs(model, image):
    est = DepthEstimator(model, device="cpu")
    with pytest.raises(ValueError, match="uint8 RGB"):
        est.predict(image.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        est.predict(image[..., :2])
    with pytest.raises(ValueError, match="precision"):
        DepthEstimator(model, precision="int8")
    with pytest.raises(ValueError, match="unsupported device"):
        DepthEstimator(model, device="tpu")


def test_compiled_stream_compiles_once_per_shape(model, image):
    """A camera stream compiles one graph set on its first frame and none after; batches are padded
    to power-of-two buckets (3 frames + flips = 6 rows run as 8) and cropped back, so results equal
    the eager path. (The NK router splits a batch per head, so each head a stream routes to adds
    its own graphs once.)"""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(tuple(tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor) and t.dim() == 4))
        return gm.forward

    torch._dynamo.reset()
    compiled = DepthEstimator(model, device="cpu", flip_tta=True, compile=True, compile_backend=counting_backend)
    eager = DepthEstimator(model, device="cpu", flip_tta=True)
    frames = [np.ascontiguousarray(np.roll(image, 7 * i, axis=1)) for i in range(4)]
    first = compiled.predict(frames[0])
    after_first = len(graphs)
    assert after_first >= 1
    for frame in frames[1:]:
        np.testing.assert_allclose(compiled.predict(frame).depth, eager.predict(frame).depth, rtol=1e-5)
    assert len(graphs) == after_first, f"the stream recompiled: {graphs[after_first:]}"
    np.testing.assert_allclose(first.depth, eager.predict(frames[0]).depth, rtol=1e-5)

    three = compiled.predict_batch(frames[:3])  # 3 images + flips = 6 rows -> bucket 8
    assert len(graphs) > after_first and any(s and s[0][0] == 8 for s in graphs[after_first:])
    for frame, got in zip(frames, three, strict=False):  # frames[3] is not in this batch
        np.testing.assert_allclose(got.depth, eager.predict(frame).depth, rtol=1e-5)
    settled = len(graphs)
    compiled.predict_batch(frames[:3])
    compiled.predict(frames[3])  # back to the stream's bucket
    assert len(graphs) == settled


@pytest.mark.slow
def test_inductor_fp32_matches_eager(model, image):
    """The real fast path (inductor, frozen weights on CPU) against plain fp32, to 1e-5."""
    torch._dynamo.reset()
    compiled = DepthEstimator(model, device="cpu", compile=True)
    eager = DepthEstimator(model, device="cpu")
    for frame in (image, np.ascontiguousarray(image[::-1])):
        np.testing.assert_allclose(compiled.predict(frame).depth, eager.predict(frame).depth, rtol=1e-5, atol=1e-6)
