"""Training: losses against closed forms, augmentation, batch plan, configuration, and CPU runs of
the trainer (single-process smoke training, exact resume, torchrun with two gloo ranks)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zoedepth_ros.cli import main as cli_main
from zoedepth_ros.model.config import tiny_config
from zoedepth_ros.model.metric_bins import AttractorLayer, ConditionalLogBinomial
from zoedepth_ros.train.config import ConfigError, load_config
from zoedepth_ros.train.data import Augment, BatchPlan
from zoedepth_ros.train.losses import domain_loss, silog_loss, training_loss
from zoedepth_ros.train.optim import param_groups

REPO = Path(__file__).resolve().parents[1]
SYNTH_CONFIG = REPO / "config" / "train_synth.yaml"


# ---------------------------------------------------------------------------------------------
# Losses


def _silog_reference(pred: np.ndarray, gt: np.ndarray) -> float:
    g = np.log(pred.astype(np.float64) + 1e-7) - np.log(gt.astype(np.float64) + 1e-7)
    return 10.0 * math.sqrt(np.var(g, ddof=1) + 0.15 * np.mean(g) ** 2)


def test_silog_scaled_prediction_closed_form():
    gt = torch.rand(2, 1, 6, 8, dtype=torch.float64) * 9 + 0.5
    mask = torch.ones_like(gt, dtype=torch.bool)
    # pred = c * gt: g = ln c everywhere, no variance, loss = 10 * sqrt(0.15) * |ln c| (eps aside).
    loss = silog_loss(1.3 * gt, gt, mask)
    assert loss.item() == pytest.approx(10 * math.sqrt(0.15) * math.log(1.3), rel=1e-6)


def test_silog_masked_unbiased_matches_formula():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.2, 10.0, (2, 1, 5, 7))
    pred = gt * rng.uniform(0.7, 1.4, gt.shape)
    valid = rng.random(gt.shape) > 0.3
    gt_holes = np.where(valid, gt, 0.0)  # invalid pixels hold 0 and are masked out
    pred_t = torch.from_numpy(np.where(valid, pred, 1e30)).requires_grad_()  # masked pixels may hold anything
    loss = silog_loss(pred_t, torch.from_numpy(gt_holes), torch.from_numpy(valid))
    assert loss.item() == pytest.approx(_silog_reference(pred[valid], gt[valid]), rel=1e-6)  # the loss runs in float32
    loss.backward()
    assert (pred_t.grad[~torch.from_numpy(valid)] == 0).all() and (pred_t.grad[torch.from_numpy(valid)] != 0).all()
    # Fewer than two valid pixels: no variance, NaN (the official loss, and the trainer skips the step).
    one = torch.zeros_like(torch.from_numpy(valid))
    one[0, 0, 0, 0] = True
    assert torch.isnan(silog_loss(torch.from_numpy(pred), torch.from_numpy(gt_holes), one))


def test_silog_upsamples_bilinear_align_corners():
    # Bilinear interpolation with align_corners=True reproduces a linear ramp exactly: a coarse
    # ramp a + b*x on w points becomes a + b * X * (w - 1) / (W - 1) on W points.
    h, w, H, W = 3, 4, 6, 10
    coarse = 1.0 + 0.5 * torch.arange(w, dtype=torch.float64).expand(1, 1, h, w)
    fine_x = np.arange(W) * (w - 1) / (W - 1)
    upsampled = np.broadcast_to(1.0 + 0.5 * fine_x, (H, W))
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 5.0, (H, W))
    loss = silog_loss(coarse, torch.from_numpy(gt)[None, None], torch.ones(1, 1, H, W, dtype=torch.bool))
    assert loss.item() == pytest.approx(_silog_reference(upsampled, gt), rel=1e-6)  # the loss runs in float32


@pytest.mark.parametrize("kind", ["N", "K"])  # softplus and normed bins
def test_bins_head_gradients_are_exact(kind):
    """The bins head computes in place and splits its first conv for speed; training needs the
    analytic gradients of the plain formulas (float64 finite differences)."""
    cfg = tiny_config(kind)
    gen = torch.Generator().manual_seed(0)
    attractor = AttractorLayer(cfg, cfg.heads[0], 4).double()
    embedding = torch.randn(1, cfg.bin_embedding_dim, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    prev_embedding = torch.randn(1, cfg.bin_embedding_dim, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    bins = torch.rand(1, 16, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, b, p: attractor(e, b, p)[1], (embedding, bins, prev_embedding),
                                    fast_mode=True)
    log_binomial = ConditionalLogBinomial(cfg, cfg.relative_features + 1, 16).double()
    main = torch.randn(1, cfg.relative_features + 1, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(log_binomial, (main, prev_embedding), fast_mode=True)


def test_domain_loss_and_total_closed_form():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    labels = torch.tensor([0, 1, 1])
    expected_ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert domain_loss(logits, labels).item() == pytest.approx(expected_ce, rel=1e-6)

    gt = torch.full((3, 1, 4, 4), 2.0)
    mask = torch.ones_like(gt, dtype=torch.bool)
    pred = 0.5 * gt
    total, parts = training_loss(pred, logits, gt, mask, labels)
    silog = 10 * math.sqrt(0.15) * math.log(2)
    assert parts["silog"].item() == pytest.approx(silog, rel=1e-5)
    assert parts["domain_ce"].item() == pytest.approx(expected_ce, rel=1e-6)
    assert total.item() == pytest.approx(silog + 100 * expected_ce, rel=1e-5)
    single, parts = training_loss(pred, None, gt, mask, labels)  # single-head model: SILog only
    assert single.item() == pytest.approx(silog, rel=1e-5) and parts["domain_ce"].item() == 0.0


# ---------------------------------------------------------------------------------------------
# Augmentation and batch plan


def test_augment_flip_photometric_and_rotation():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    depth = np.tile(np.arange(1, 17, dtype=np.float32), (12, 1))
    depth[0, 0] = np.nan

    flip = Augment(rotate_deg=0.0, flip_p=1.0, photometric_p=0.0)
    image, gt = flip.apply(rgb, depth, rng)
    np.testing.assert_array_equal(image, rgb[:, ::-1].astype(np.float32) / 255)
    np.testing.assert_array_equal(gt[:, ::-1][0, 0], 0.0)  # NaN GT becomes 0 (invalid), and moves with the image
    np.testing.assert_array_equal(gt[1], np.arange(16, 0, -1, dtype=np.float32))

    bright = Augment(rotate_deg=0.0, flip_p=0.0, photometric_p=1.0, gamma=(1, 1), brightness=(2, 2), color=(1, 1))
    image, _ = bright.apply(rgb, depth, rng)
    np.testing.assert_allclose(image, np.clip(rgb.astype(np.float32) / 255 * 2, 0, 1), rtol=1e-6)

    rotate = Augment(rotate_deg=1.0, flip_p=0.0, photometric_p=0.0)
    image, gt = rotate.apply(rgb, depth, np.random.default_rng(3))
    assert image.shape == (12, 16, 3) and gt.shape == (12, 16)
    assert set(np.unique(gt)) <= set(np.unique(np.nan_to_num(depth))) | {0.0}  # nearest: no invented depths
    # The same seed gives the same augmentation (what makes resumed runs see the same data).
    again, _ = rotate.apply(rgb, depth, np.random.default_rng(3))
    np.testing.assert_array_equal(image, again)


def test_batch_plan_alternates_repeats_and_shards():
    plan = BatchPlan([10, 4], per_rank=2, world_size=1, rank=0, accum_steps=1, seed=7)
    assert plan.micro_per_epoch == 10 and plan.steps_per_epoch == 10
    batches = list(plan.epoch(0))
    assert [b[0][0] for b in batches] == [0, 1] * 5  # streams alternate batch by batch
    longest = [i for b in batches[0::2] for _, i, _ in b]
    assert sorted(longest) == list(range(10))  # one pass of the longest stream per epoch
    shorter = [[i for _, i, _ in b] for b in batches[1::2]]
    assert sorted(shorter[0] + shorter[1]) == list(range(4))  # then the short one starts a new pass
    assert sorted(shorter[2] + shorter[3]) == list(range(4))
    assert [i for b in plan.epoch(1) for _, i, _ in b] != [i for b in batches for _, i, _ in b]
    assert list(plan.epoch(0, first_step=3)) == batches[3:]  # resume mid-epoch

    # Two ranks split each global batch of the one-rank plan with the same global batch size.
    whole = list(BatchPlan([10, 4], 4, 1, 0, 1, seed=7).epoch(0))
    halves = [list(BatchPlan([10, 4], 2, 2, r, 1, seed=7).epoch(0)) for r in (0, 1)]
    for full, first, second in zip(whole, *halves, strict=True):
        assert first + second == full

    accum = BatchPlan([10, 4], 2, 1, 0, accum_steps=3, seed=7)
    assert accum.steps_per_epoch == 3 and list(accum.epoch(0, first_step=1)) == batches[3:9]


def test_dataset_folders_nyu_and_kitti(tmp_path):
    import cv2

    from zoedepth_ros.eval.protocols import get_protocol, kb_crop
    from zoedepth_ros.train.data import ListSource, TrainStream, ValSet, make_sources

    rng = np.random.default_rng(0)
    identity = Augment(rotate_deg=0.0, flip_p=0.0, photometric_p=0.0)
    # NYU, BTS "sync" layout: paths with a leading '/', GT uint16 millimetres (0 = invalid).
    room = tmp_path / "nyu" / "sync" / "kitchen_0028b"
    room.mkdir(parents=True)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mm = rng.integers(0, 12000, (48, 64)).astype(np.uint16)
    mm[0] = 0
    cv2.imwrite(str(room / "rgb_00045.png"), rgb[..., ::-1])
    cv2.imwrite(str(room / "sync_depth_00045.png"), mm)
    (tmp_path / "nyu_train.txt").write_text(
        "/kitchen_0028b/rgb_00045.png /kitchen_0028b/sync_depth_00045.png 518.8579\n")
    entry = {"name": "nyu", "folder": {"protocol": "nyu", "data_path": "nyu/sync", "gt_path": "nyu/sync",
                                       "filenames": "nyu_train.txt"}}
    [source] = make_sources(entry, tmp_path)
    read_rgb, depth = source.read(0)
    np.testing.assert_array_equal(read_rgb, rgb)
    np.testing.assert_array_equal(depth, np.where(mm > 0, mm.astype(np.float32) / 1000, np.nan))
    sample = TrainStream("nyu", [source], 0, "nyu", identity, (32, 32)).sample(0, (0,))
    assert sample["image"].shape == (3, 32, 32) and sample["depth"].shape == (1, 48, 64)
    gt = mm.astype(np.float32) / 1000
    np.testing.assert_array_equal(sample["mask"][0].numpy(), (gt > 1e-3) & (gt < 10.0))

    # KITTI Eigen list: raw drives + annotated GT (uint16 / 256, under val/ as downloaded); no GT: None.
    image = tmp_path / "raw" / "2011_09_26" / "2011_09_26_drive_0001_sync" / "image_02" / "data"
    annotated = tmp_path / "gt" / "val" / "2011_09_26_drive_0001_sync" / "proj_depth" / "groundtruth" / "image_02"
    image.mkdir(parents=True)
    annotated.mkdir(parents=True)
    rgb = rng.integers(0, 256, (376, 1241, 3), dtype=np.uint8)
    raw = (rng.random((376, 1241)) < 0.2) * rng.integers(1, 90 * 256, (376, 1241))
    cv2.imwrite(str(image / "0000000005.png"), rgb[..., ::-1])
    cv2.imwrite(str(annotated / "0000000005.png"), raw.astype(np.uint16))
    listing = tmp_path / "kitti_train.txt"
    listing.write_text(
        "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000005.png "
        "2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/0000000005.png 721.5377\n"
        "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000006.png None 721.5377\n")
    source = ListSource(tmp_path / "raw", tmp_path / "gt", listing, get_protocol("kitti"))
    assert len(source) == 1 and source.skipped == 1
    sample = TrainStream("kitti", [source], 1, "kitti", identity, (64, 192)).sample(0, (0,))
    np.testing.assert_array_equal(sample["depth"][0].numpy(), kb_crop(raw.astype(np.float32) / 256))
    assert sample["image"].shape == (3, 64, 192)
    [(val_rgb, val_gt, protocol)] = ValSet("kitti", [source]).frames()
    np.testing.assert_array_equal(val_rgb, kb_crop(rgb))  # the scorer crops the GT itself
    assert val_gt.shape == (376, 1241) and protocol.name == "kitti"


# ---------------------------------------------------------------------------------------------
# Configuration and parameter groups


def test_shipped_configs_hold_the_official_recipe():
    nyu = load_config(REPO / "config" / "train_nyu.yaml")
    kitti = load_config(REPO / "config" / "train_kitti.yaml")
    nk = load_config(REPO / "config" / "train_nk.yaml")
    for cfg in (nyu, kitti, nk):
        assert cfg["optim"]["weight_decay"] == 0.01 and cfg["optim"]["clip_grad"] == 0.1
        assert cfg["optim"]["encoder_lr_scale"] == cfg["optim"]["pos_enc_lr_scale"] == 0.1
        assert cfg["schedule"] == {"epochs": 5, "pct_start": 0.7, "div_factor": 1.0, "final_div_factor": 1e4,
                                   "cycle_momentum": True, "base_momentum": 0.85, "max_momentum": 0.95}
        assert cfg["train"]["batch_size"] == 16
        assert cfg["augment"] == {"rotate_deg": 1.0, "flip_p": 0.5, "photometric_p": 0.5, "gamma": [0.9, 1.1],
                                  "brightness": None, "color": [0.9, 1.1]}
    assert nyu["optim"]["lr"] == kitti["optim"]["lr"] == 1.61e-4
    assert nyu["optim"]["decoder_lr_scale"] == kitti["optim"]["decoder_lr_scale"] == 1.0
    assert nk["optim"]["lr"] == 2.512e-4 and nk["optim"]["decoder_lr_scale"] == 0.1
    assert nk["loss"] == {"silog_beta": 0.15, "domain_weight": 100.0}
    assert [e["name"] for e in nk["data"]["train"]] == ["nyu", "kitti"]
    assert load_config(SYNTH_CONFIG)["model"]["arch"] == "tiny-NK"


def test_config_overrides_and_errors():
    cfg = load_config(REPO / "config" / "train_nyu.yaml", ["optim.lr=1e-4", "model.img_size=[192, 256]"],
                      flags={"train.batch_size": 8})
    assert cfg["optim"]["lr"] == 1e-4 and cfg["model"]["img_size"] == [192, 256] and cfg["train"]["batch_size"] == 8
    for bad in (["optim.lrr=1"], ["train.precision=fp16"], ["model.img_size=[100, 128]"], ["optim.lr=fast"],
                ["model.arch=tiny-NK"], ["data.train=[]"], ["nokey"], ["train.stop_after_steps=soon"]):
        with pytest.raises(ConfigError):
            load_config(REPO / "config" / "train_nyu.yaml", bad)


def test_param_groups_follow_the_recipe(tiny_model):
    from zoedepth_ros.train.optim import freeze

    model = tiny_model("NK")
    ocfg = load_config(REPO / "config" / "train_nk.yaml")["optim"]
    groups = {g["name"]: g for g in param_groups(model, ocfg)}
    assert {n: g["lr"] for n, g in groups.items()} == pytest.approx(
        {"metric_head": 2.512e-4, "decoder": 2.512e-5, "encoder": 2.512e-5, "pos_enc": 2.512e-5})
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("relative_position_bias_table") for p in groups["pos_enc"]["params"])
    assert any(names[id(p)].startswith("reassemble.") for p in groups["encoder"]["params"])
    assert any(names[id(p)].startswith("metric_head.router.") for p in groups["metric_head"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))

    freeze(model, {"freeze_encoder": True, "freeze_decoder": True})
    assert [g["name"] for g in param_groups(model, ocfg)] == ["metric_head"]


@pytest.mark.parametrize("kind", ["N", "K", "NK"])
def test_model_names_its_parameter_groups(kind, tiny_model):
    """The model, not the trainer, says which parameters are the encoder, its position tables, the
    decoder and the metric head: each parameter in one part, in the model's order (what the
    optimizer state of a resumed run is indexed by)."""
    model = tiny_model(kind)
    parts = model.parameter_groups()
    assert list(parts) == ["metric_head", "decoder", "encoder", "pos_enc"]
    names = {id(p): n for n, p in model.named_parameters()}
    flat = [names[id(p)] for params in parts.values() for p in params]
    assert sorted(flat) == sorted(names.values())  # every parameter, once
    order = list(names.values())
    for part, params in parts.items():
        got = [names[id(p)] for p in params]
        assert got == sorted(got, key=order.index), part
    prefixes = {"metric_head": ("metric_head.",), "decoder": ("decoder.",), "encoder": ("encoder.", "reassemble."),
                "pos_enc": ("encoder.",)}
    for part, params in parts.items():
        assert params and all(names[id(p)].startswith(prefixes[part]) for p in params), part
        tables = [names[id(p)].endswith("relative_position_bias_table") for p in params]
        assert all(tables) if part == "pos_enc" else not any(tables), part


def test_architecture_names_parse_in_the_model_package():
    """One parser of architecture names (config_from_arch) for training, the benchmark and export."""
    from zoedepth_ros.model import ARCH_NAMES, PRESETS, config_from_arch, tiny_config

    assert ARCH_NAMES == ("ZoeD_M12_N", "ZoeD_M12_K", "ZoeD_M12_NK", "tiny-N", "tiny-K", "tiny-NK")
    for name, preset in PRESETS.items():
        assert config_from_arch(name) == preset
    for kind in ("N", "K", "NK"):
        assert config_from_arch(f"tiny-{kind}") == config_from_arch(f"tiny-{kind.lower()}") == tiny_config(kind)
    assert config_from_arch("tiny-NK", img_size=[64, 96], patch_size=8) == tiny_config("NK", img_size=(64, 96),
                                                                                        patch_size=8)
    for bad in ("tiny-X", "ZoeD_M12_KN", "tiny", "NK"):
        with pytest.raises(ValueError, match=f"unknown architecture {bad!r}: use one of ZoeD_M12_N, .*tiny-NK"):
            config_from_arch(bad)
    with pytest.raises(ValueError, match="patch_sise"):
        config_from_arch("tiny-N", patch_sise=8)
    with pytest.raises(ConfigError, match="model.arch must be one of"):
        load_config(SYNTH_CONFIG, ["model.arch=tiny-X"])


def test_build_model_from_checkpoint_or_fresh_with_encoder(tiny_checkpoint):
    from safetensors.torch import load_file

    from zoedepth_ros.model import ZoeDepth, tiny_config
    from zoedepth_ros.train.config import DEFAULTS
    from zoedepth_ros.train.trainer import build_model

    source = tiny_checkpoint("NK")
    reference = ZoeDepth(tiny_config("NK"))
    reference.load_state_dict(load_file(source))

    loaded = build_model({**DEFAULTS["model"], "init": str(source), "img_size": [64, 96]})
    assert loaded.config == reference.config.replace(img_size=(64, 96))
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in loaded.state_dict().items())

    torch.manual_seed(1)  # the fresh model's own weights (the source's are seed 0's)
    fresh = build_model({**DEFAULTS["model"], "arch": "tiny-N", "encoder_init": str(source)})
    assert not fresh.config.routed
    for key, value in fresh.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(value, reference.state_dict()[key]), key
    decoder = "decoder.head_conv1.weight"
    assert not torch.equal(fresh.state_dict()[decoder], reference.state_dict()[decoder])


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("train_*.yaml")), ids=lambda p: p.name)
def test_shipped_training_configs_are_valid(path):
    """Every recipe in config/ passes the same checks `zoedepth-ros train` runs before training."""
    cfg = load_config(path)
    assert (cfg["model"]["init"] is None) != (cfg["model"]["arch"] is None)
    assert cfg["data"]["train"], f"{path.name} trains on nothing"


def test_arch_overrides_change_the_fresh_architecture():
    from zoedepth_ros.train.trainer import build_model

    cfg = load_config(REPO / "config" / "train_demo.yaml",
                      ["model.arch_overrides={patch_size: 8, depth: 5, taps: [0, 1, 2, 4]}"])
    model = build_model(cfg["model"])
    assert model.config.patch_size == 8 and model.config.depth == 5 and len(model.encoder.blocks) == 5
    with torch.no_grad():  # 8-pixel patches: a 96x128 input is a 12x16 token grid
        assert model(torch.zeros(1, 3, 96, 128)).metric_depth.shape[-2:] == (192, 256)
    with pytest.raises(ConfigError, match="patch_sise"):
        build_model(load_config(REPO / "config" / "train_demo.yaml", ["model.arch_overrides={patch_sise: 8}"])["model"])
    with pytest.raises(ConfigError, match="multiple"):
        build_model(load_config(REPO / "config" / "train_demo.yaml",
                                ["model.arch_overrides={img_size: [100, 128]}"])["model"])
    with pytest.raises(ConfigError, match="goes with model.arch"):
        load_config(REPO / "config" / "train_nyu.yaml", ["model.arch_overrides={patch_size: 8}"])


# ---------------------------------------------------------------------------------------------
# Trainer runs on CPU


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    """The bags config/train_synth.yaml names, small: NYU-like rooms and KITTI-like streets."""
    from zoedepth_ros.data.synth import write_synth_bag

    root = tmp_path_factory.mktemp("synth")
    for name, kind, frames, size, seed in (("indoor_train", "indoor", 24, (48, 64), 1),
                                           ("outdoor_train", "outdoor", 16, (40, 128), 2),
                                           ("indoor_val", "indoor", 4, (48, 64), 101),
                                           ("outdoor_val", "outdoor", 2, (40, 128), 102)):
        write_synth_bag(root / name, kind, frames=frames, seed=seed, size=size, progress=False)
    return root


def test_bag_source_reads_what_the_evaluator_reads(synth_root):
    from zoedepth_ros.data.bag import read_frames
    from zoedepth_ros.train.data import BagSource

    source = BagSource(synth_root / "outdoor_val")
    frames = list(read_frames(synth_root / "outdoor_val"))
    assert len(source) == len(frames) == 2 and source.protocol.name == "synth_outdoor"
    for index in (1, 0):  # random access, any order
        rgb, depth = source.read(index)
        np.testing.assert_array_equal(rgb, frames[index].rgb)
        np.testing.assert_array_equal(depth, frames[index].depth)


def _train(root: Path, out: Path, *args: str) -> int:
    return cli_main(["train", "--config", str(SYNTH_CONFIG), "--set", f"data.root={root}", "--out-dir", str(out),
                     "--set", "train.progress=false", *args])


def _rows(path: Path) -> list[dict]:
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tiny_model_learns_and_its_checkpoint_runs_in_the_evaluator(synth_root, tmp_path, one_torch_thread):
    from zoedepth_ros.data.bag import read_frames, read_metadata
    from zoedepth_ros.eval.metrics import score_frame
    from zoedepth_ros.eval.protocols import Protocol
    from zoedepth_ros.inference import DepthEstimator
    from zoedepth_ros.model import load_model

    out = tmp_path / "run"
    code = _train(synth_root, out, "--arch", "tiny-N", "--set", "model.img_size=[64,64]", "--batch-size", "4",
                  "--epochs", "34", "--set", "data.train=[{name: indoor, bags: [indoor_train]}]",
                  "--set", "data.val=[{name: indoor, bags: [indoor_val]}]", "--set", "val.every_epochs=17")
    assert code == 0
    train = _rows(out / "train_log.csv")
    assert len(train) == 204  # 24 frames / batch 4 = 6 steps per epoch, 34 epochs
    losses = [float(r["loss"]) for r in train]
    first, last = np.mean(losses[:5]), np.mean(losses[-30:])
    assert last < 0.7 * first, (first, last)
    val = _rows(out / "val_log.csv")
    assert [int(r["step"]) for r in val] == [0, 102, 204]
    initial, final = float(val[0]["abs_rel"]), min(float(r["abs_rel"]) for r in val[1:])
    assert final < 0.7 * initial, (initial, final)
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(out / "latest.state.pt", weights_only=True)
    assert state["step"] == 204 and state["best"]["score"] == pytest.approx(final, rel=1e-4)

    # The best checkpoint is a project checkpoint that the evaluator's pieces run as they are.
    model = load_model(out / "best.safetensors")
    assert model.config.img_size == (64, 64)
    estimator = DepthEstimator(model, device="cpu", flip_tta=False, pad=False, mode="eval")  # as val.flip_tta
    bag = synth_root / "indoor_val"
    protocol = Protocol.from_metadata(read_metadata(bag))
    scores = [score_frame(estimator.predict(f.rgb).depth, f.depth, protocol) for f in read_frames(bag)]
    assert np.mean([s["abs_rel"] for s in scores]) == pytest.approx(final, rel=1e-4)


@pytest.mark.slow
def test_resume_equals_straight_run(synth_root, tmp_path, one_torch_thread):
    from safetensors.torch import load_file

    # NK: alternating datasets, router loss, gradient accumulation, validation in between.
    common = ("--epochs", "1", "--batch-size", "4", "--set", "train.accum_steps=2", "--set", "val.every_epochs=0.5")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(synth_root, straight, *common) == 0
    assert _train(synth_root, split, *common, "--set", "train.stop_after_steps=6") == 0
    assert load_file(split / "latest.safetensors").keys()
    assert torch.load(split / "latest.state.pt", weights_only=True)["step"] == 6
    assert _train(synth_root, split, *common) == 2  # an existing run is never overwritten
    assert _train(synth_root, split, *common, "--lr", "1e-3", "--resume") == 2  # nor resumed with other settings
    assert _train(synth_root, split, *common, "--resume") == 0

    a, b = load_file(straight / "latest.safetensors"), load_file(split / "latest.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    sa = torch.load(straight / "latest.state.pt", weights_only=True)
    sb = torch.load(split / "latest.state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 12  # (24 // 2) batches of the longest stream x 2 streams / 2 accumulated
    assert [g["lr"] for g in sa["optimizer"]["param_groups"]] == [g["lr"] for g in sb["optimizer"]["param_groups"]]
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"] == 12
    la, lb = _rows(straight / "train_log.csv"), _rows(split / "train_log.csv")
    assert [r["step"] for r in lb] == [str(s) for s in range(1, 13)]
    assert [r["datasets"] for r in la] == [r["datasets"] for r in lb] == ["indoor+outdoor"] * 12
    np.testing.assert_allclose([float(r["loss"]) for r in la], [float(r["loss"]) for r in lb], rtol=1e-4)
    assert [r["step"] for r in _rows(split / "val_log.csv")] == ["0", "0", "6", "6", "12", "12"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_ranks(synth_root, tmp_path):
    from zoedepth_ros.model import load_model

    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "zoedepth_ros.cli", "train",
           "--config", str(SYNTH_CONFIG), "--set", f"data.root={synth_root}", "--out-dir", str(out),
           "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--set", "train.progress=false"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "effective batch 4 = 2 per rank x 2 rank(s) x 1 accumulation step(s)" in proc.stdout
    assert proc.stdout.count("max lr (one-cycle): metric_head 0.002") == 1  # rank 0 logs, once
    info = json.loads((out / "run.json").read_text())
    assert (info["world_size"], info["backend"], info["per_rank_batch"], info["effective_batch"]) == (2, "gloo", 2, 4)
    assert info["max_lr"]["metric_head"] == 0.002 and info["total_steps"] == 12  # (24 // 4) x 2 streams
    model = load_model(out / "latest.safetensors")
    assert model.config.routed and model.config.img_size == (64, 96)
    assert load_model(out / "best.safetensors").config == model.config
    assert torch.load(out / "latest.state.pt", weights_only=True)["step"] == 12
    val = _rows(out / "val_log.csv")
    assert {r["set"]: int(r["frames"]) for r in val} == {"indoor": 4, "outdoor": 2}  # every frame, once over both ranks
