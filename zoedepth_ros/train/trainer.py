"""`zoedepth-ros train`: fine-tune ZoeDepth (N, K or NK) with the official recipe, in one process
(CPU or one GPU) or over many GPUs and nodes with torchrun (DistributedDataParallel).

Configuration: DEFAULTS below (the official recipe), then the YAML file (--config), then the
explicit flags, then `--set key=value` overrides (dotted keys, YAML values). docs/training.md
describes the keys, the data layout and the outputs.

Outputs in `out_dir` (written by rank 0): `latest.safetensors` + `latest.state.pt` (model in the
project format, and optimizer/scheduler/step/RNG as plain tensors and containers, loadable with
weights_only=True), `best.safetensors` (best validation score), `config.yaml` (resolved
configuration), `run.json` (world size, batch and learning rates), `train_log.csv`, `val_log.csv`
and `metrics.png`.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import yaml

from zoedepth_ros.errors import ZoeDepthError

DEFAULTS: dict = {
    "out_dir": "runs/train",
    "seed": 0,
    "model": {
        "init": None,  # any load_model source: preset name, official .pt, HF directory, project .safetensors
        "arch": None,  # random initialisation instead: ZoeD_M12_N/K/NK or tiny-N/K/NK
        "arch_overrides": {},  # with arch: ZoeDepthConfig fields changed from it, e.g. {patch_size: 8}
        "encoder_init": None,  # with arch: copy the BEiT encoder (encoder.*) from this load_model source
        "kitti_max_depth": None,  # passed to load_model: None keeps its 80 m KITTI default (docs/weights.md)
        "img_size": None,  # [H, W] training and validation size (multiples of 32); default: the model's
        "freeze_encoder": False,  # BEiT, its position tables and the reassemble stage
        "freeze_decoder": False,  # the DPT decoder
    },
    "data": {
        "root": ".",  # relative dataset paths are relative to this (itself relative to the working directory)
        "workers": 4,  # loader processes per rank
        "train": [],  # entries: {name, bags: [...] | folder: {...}, domain, kb_crop, min_depth, max_depth, augment}
        "val": [],  # entries: {name, bags: [...] | folder: {...}, max_frames}
    },
    "augment": {
        "rotate_deg": 1.0,
        "flip_p": 0.5,
        "photometric_p": 0.5,
        "gamma": [0.9, 1.1],
        "brightness": None,  # None: [0.75, 1.25] for NYU-domain data, [0.9, 1.1] otherwise
        "color": [0.9, 1.1],
    },
    "loss": {"silog_beta": 0.15, "domain_weight": 100.0},
    "optim": {
        "lr": 1.61e-4,
        "weight_decay": 0.01,
        "encoder_lr_scale": 0.1,
        "pos_enc_lr_scale": 0.1,
        "decoder_lr_scale": 1.0,
        "clip_grad": 0.1,  # max gradient norm; None: no clipping
    },
    "schedule": {
        "epochs": 5,
        "pct_start": 0.7,
        "div_factor": 1.0,
        "final_div_factor": 1.0e4,
        "cycle_momentum": True,
        "base_momentum": 0.85,
        "max_momentum": 0.95,
    },
    "train": {
        "batch_size": 16,  # effective batch: per-rank batch x ranks x accum_steps
        "accum_steps": 1,
        "precision": "fp32",  # fp32 or bf16 (autocast)
        "device": "auto",  # auto, cpu, cuda (each rank takes cuda:LOCAL_RANK)
        "deterministic": False,  # deterministic kernels (slower); seeding is always on
        "save_every_steps": None,  # also save `latest` this often (it is always saved at each validation)
        "stop_after_steps": None,  # save `latest` and stop at this step (time-sliced jobs); resume later
        "progress": True,
    },
    "val": {
        "every_epochs": 0.25,  # official validate_every
        "at_start": False,  # also score the initial model (step 0)
        "flip_tta": True,  # official evaluation averages with the mirrored prediction
        "batch_size": 1,
        "best_metric": "abs_rel",  # mean over the validation sets picks best.safetensors
    },
}
# Settings that may change when a run resumes: they do not change what is computed.
RESUMABLE_CHANGES = {"train.stop_after_steps", "train.progress", "train.device", "train.save_every_steps", "data.workers"}
# Command-line flags and the config keys they set.
FLAGS = {
    "out_dir": "out_dir", "init": "model.init", "arch": "model.arch", "epochs": "schedule.epochs",
    "batch_size": "train.batch_size", "lr": "optim.lr", "precision": "train.precision",
    "device": "train.device", "workers": "data.workers", "seed": "seed",
}
ARCHS = ("ZoeD_M12_N", "ZoeD_M12_K", "ZoeD_M12_NK", "tiny-N", "tiny-K", "tiny-NK")
HIGHER_IS_BETTER = {"a1", "a2", "a3"}
STATE_VERSION = 1
STEP_KEY = "zoedepth_ros.train.step"


class ConfigError(ZoeDepthError):
    """A training configuration that cannot run; the message names the setting."""


# ---------------------------------------------------------------------------------------------
# Configuration


def _coerce(name: str, default, value):
    """Type-check `value` against the default's type. YAML 1.1 reads `1e-4` as a string, so
    numeric strings are accepted for numbers."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")
        return value
    if isinstance(default, (int, float)):
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            number = value
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{name} must be a number, not {value!r}")
        if isinstance(default, int):
            if number != int(number):
                raise ConfigError(f"{name} must be an integer, not {value!r}")
            return int(number)
        return float(number)
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{name} must be a list, not {value!r}")
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {value!r}")
    return value


# Mappings whose keys are not settings of ours (ZoeDepthConfig fields, checked when the model is built).
FREE_FORM = {"model.arch_overrides"}


def _merge(base: dict, override, prefix: str = "") -> None:
    if not isinstance(override, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the configuration'} must be a mapping, not {override!r}")
    for key, value in override.items():
        name = f"{prefix}{key}"
        if prefix.rstrip(".") in FREE_FORM:
            base[key] = value
            continue
        if key not in base:
            raise ConfigError(f"unknown setting {name!r}; known here: {', '.join(sorted(base))}")
        if isinstance(base[key], dict):
            _merge(base[key], value, name + ".")
        else:
            base[key] = _coerce(name, base[key], value)


def _set(cfg: dict, key: str, value) -> None:
    *path, last = key.split(".")
    nested = {last: value}
    for part in reversed(path):
        nested = {part: nested}
    _merge(cfg, nested)


def load_config(path: str | os.PathLike | None = None, sets: list[str] = (), flags: dict | None = None) -> dict:
    """DEFAULTS <- YAML file <- flags (config key -> value) <- `key=value` strings; validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the training config {path}: {exc}") from None
        _merge(cfg, data or {})
    for key, value in (flags or {}).items():
        _set(cfg, key, value)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse {text!r} as YAML: {exc}") from None
        _set(cfg, key.strip(), value)
    check_config(cfg)
    return cfg


def check_config(cfg: dict) -> None:
    from zoedepth_ros.eval.metrics import METRIC_NAMES

    problems = []
    model, train, sched, val = cfg["model"], cfg["train"], cfg["schedule"], cfg["val"]
    if (model["init"] is None) == (model["arch"] is None):
        problems.append("set exactly one of model.init (a checkpoint) and model.arch (random initialisation)")
    if model["arch"] is not None and model["arch"] not in ARCHS:
        problems.append(f"model.arch must be one of {', '.join(ARCHS)}, not {model['arch']!r}")
    if model["arch_overrides"] and model["arch"] is None:
        problems.append("model.arch_overrides goes with model.arch (a checkpoint carries its own architecture)")
    if not isinstance(model["arch_overrides"], dict):
        problems.append(f"model.arch_overrides must be a mapping of ZoeDepthConfig fields, not {model['arch_overrides']!r}")
    if model["encoder_init"] is not None and model["arch"] is None:
        problems.append("model.encoder_init goes with model.arch (model.init already loads every weight)")
    size = model["img_size"]
    if size is not None and (not isinstance(size, list) or len(size) != 2
                             or any(not isinstance(s, int) or s <= 0 or s % 32 for s in size)):
        problems.append(f"model.img_size must be [H, W], positive multiples of 32, not {size!r}")
    for key in ("batch_size", "accum_steps"):
        if train[key] < 1:
            problems.append(f"train.{key} must be at least 1")
    if train["precision"] not in ("fp32", "bf16"):
        problems.append(f"train.precision must be fp32 or bf16, not {train['precision']!r}")
    if sched["epochs"] < 1:
        problems.append("schedule.epochs must be at least 1")
    if cfg["seed"] < 0:
        problems.append("seed must be non-negative")
    for key in ("encoder_lr_scale", "pos_enc_lr_scale", "decoder_lr_scale"):
        if cfg["optim"][key] <= 0:
            problems.append(f"optim.{key} must be positive (freeze a part with model.freeze_* instead)")
    for key, value in (("train.save_every_steps", train["save_every_steps"]),
                       ("train.stop_after_steps", train["stop_after_steps"]), ("optim.clip_grad", cfg["optim"]["clip_grad"])):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            problems.append(f"{key} must be a positive number or null, not {value!r}")
    if cfg["data"]["workers"] < 0:
        problems.append("data.workers must be 0 (load in the training process) or more")
    if val["best_metric"] not in METRIC_NAMES:
        problems.append(f"val.best_metric must be one of {', '.join(METRIC_NAMES)}")
    if val["every_epochs"] <= 0 or val["batch_size"] < 1:
        problems.append("val.every_epochs must be positive and val.batch_size at least 1")
    for section, keys in (("train", {"name", "bags", "folder", "domain", "kb_crop", "min_depth", "max_depth", "augment"}),
                          ("val", {"name", "bags", "folder", "max_frames"})):
        entries = cfg["data"][section]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries):
            problems.append(f"data.{section} must be a list of mappings, each with a name")
            continue
        names = [e["name"] for e in entries]
        if len(set(names)) != len(names):
            problems.append(f"data.{section}: dataset names must be unique, got {names}")
        for entry in entries:
            unknown = set(entry) - keys
            if unknown:
                problems.append(f"data.{section} {entry['name']!r}: unknown keys {sorted(unknown)} (known: {sorted(keys)})")
            if section == "train" and set(entry.get("augment") or {}) - set(DEFAULTS["augment"]):
                problems.append(f"data.train {entry['name']!r}: augment keys are {sorted(DEFAULTS['augment'])}")
    if not cfg["data"]["train"]:
        problems.append("data.train is empty: give at least one dataset")
    if problems:
        raise ConfigError("invalid training configuration:\n  " + "\n  ".join(problems))


def _flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# Model, parameter groups, devices


def build_model(mcfg: dict):
    """The model to fine-tune (fp32, CPU), from a checkpoint or a fresh architecture."""
    import torch

    from zoedepth_ros.model import PRESETS, ZoeDepth, ZoeDepthConfig, load_model, tiny_config

    if mcfg["arch"] is not None:
        arch = mcfg["arch"]
        base = tiny_config(arch.split("-", 1)[1]) if arch.startswith("tiny-") else PRESETS[arch]
        try:
            config = ZoeDepthConfig.from_dict({**base.to_dict(), **mcfg["arch_overrides"]})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.arch_overrides: {exc}") from None
        model = ZoeDepth(config)
        if mcfg["encoder_init"] is not None:
            source = load_model(mcfg["encoder_init"]).state_dict()
            ours = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
            theirs = {k: v for k, v in source.items() if k.startswith("encoder.")}
            wrong = sorted(k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape)
            if wrong or len(theirs) != len(ours):
                raise ConfigError(f"model.encoder_init {mcfg['encoder_init']}: its encoder does not match {arch} "
                                  f"(first differing keys: {wrong[:4] or sorted(set(theirs) - set(ours))[:4]})")
            with torch.no_grad():
                model.load_state_dict(theirs, strict=False)
    else:
        model = load_model(mcfg["init"], kitti_max_depth=mcfg["kitti_max_depth"])
    if mcfg["img_size"] is not None:
        model.config = model.config.replace(img_size=tuple(mcfg["img_size"]))
    return model


def _part(name: str) -> str:
    # The official encoder group is MiDaS' `pretrained` module: BEiT plus the reassemble stage.
    if name.startswith(("encoder.", "reassemble.")):
        return "pos_enc" if "relative_position" in name else "encoder"
    if name.startswith("decoder."):
        return "decoder"
    if name.startswith("metric_head."):
        return "metric_head"
    raise ValueError(f"parameter {name} belongs to no parameter group")


def freeze(model, mcfg: dict) -> None:
    frozen = {"encoder", "pos_enc"} if mcfg["freeze_encoder"] else set()
    if mcfg["freeze_decoder"]:
        frozen.add("decoder")
    for name, param in model.named_parameters():
        param.requires_grad_(_part(name) not in frozen)


def param_groups(model, ocfg: dict) -> list[dict]:
    """AdamW groups of the official recipe: metric head at lr, decoder at lr x decoder_lr_scale,
    encoder and relative position tables at their scales. Frozen parameters are left out."""
    scale = {"metric_head": 1.0, "decoder": ocfg["decoder_lr_scale"], "encoder": ocfg["encoder_lr_scale"],
             "pos_enc": ocfg["pos_enc_lr_scale"]}
    params: dict[str, list] = {name: [] for name in scale}
    for name, param in model.named_parameters():
        if param.requires_grad:
            params[_part(name)].append(param)
    return [{"name": group, "params": params[group], "lr": ocfg["lr"] * scale[group]} for group in scale if params[group]]


class Distributed:
    """Process placement: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) or one process."""

    def __init__(self, device_setting: str):
        import torch

        from zoedepth_ros.model.estimator import resolve_device

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        try:
            device = resolve_device(device_setting)
        except ValueError as exc:
            raise ConfigError(f"train.device: {exc}") from None
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", self.local_rank)
        self.device = device
        self.backend = None
        if self.world > 1:
            import torch.distributed as dist

            if device.type == "cuda":
                torch.cuda.set_device(device)
            self.backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(self.backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        import torch

        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Logs, checkpoints, plot


class CsvLog:
    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def keep_until(self, step: int) -> None:
        """Drop rows logged after the checkpoint a run resumes from (they will be redone)."""
        rows = [r for r in self.rows() if int(r["step"]) <= step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            if new:
                writer.writeheader()
            writer.writerow(row)


def _atomic_torch_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def plot_metrics(out_dir: Path, train_rows: list[dict], val_rows: list[dict], metric: str) -> Path:
    """Training loss, metric-head learning rate and validation `metric` against the step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4))
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    steps = [int(r["step"]) for r in train_rows]
    losses = [float(r["loss"]) for r in train_rows]
    ax_loss.plot(steps, losses, alpha=0.35, label="per step")
    window = max(1, len(losses) // 50)
    if len(losses) >= window > 1:
        smooth = [sum(losses[i - window:i]) / window for i in range(window, len(losses) + 1)]
        ax_loss.plot(steps[window - 1:], smooth, label=f"mean of {window}")
    ax_loss.set(title="training loss", xlabel="step")
    ax_loss.legend()
    ax_lr.plot(steps, [float(r["lr_metric_head"]) for r in train_rows])
    ax_lr.set(title="learning rate (metric head)", xlabel="step")
    for name in dict.fromkeys(r["set"] for r in val_rows):
        rows = [r for r in val_rows if r["set"] == name and r[metric]]
        ax_val.plot([int(r["step"]) for r in rows], [float(r[metric]) for r in rows], marker="o", label=name)
    ax_val.set(title=f"validation {metric}", xlabel="step")
    if val_rows:
        ax_val.legend()
    fig.tight_layout()
    path = out_dir / "metrics.png"
    fig.savefig(path, dpi=100)
    return path


# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    def __init__(self, cfg: dict, resume: bool = False):
        import torch

        self.cfg = cfg
        self.out = Path(cfg["out_dir"])
        tcfg = cfg["train"]
        if tcfg["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.dist = Distributed(tcfg["device"])
        self.device = self.dist.device
        state = self._resume_state() if resume else None
        if state is None and (self.out / "latest.state.pt").exists():
            raise ConfigError(f"{self.out} already holds a run: pass --resume to continue it, or choose another out_dir")
        torch.manual_seed(cfg["seed"])

        if state is None:
            self.model = build_model(cfg["model"])
        else:
            from zoedepth_ros.model import load_model

            self.model = load_model(self.out / "latest.safetensors")
        freeze(self.model, cfg["model"])
        self.model.to(self.device).train()
        self.routed = self.model.config.routed

        world, accum = self.dist.world, tcfg["accum_steps"]
        if tcfg["batch_size"] % (world * accum):
            raise ConfigError(f"train.batch_size {tcfg['batch_size']} is not a multiple of {world} ranks x "
                              f"{accum} accumulation steps")
        self.per_rank = tcfg["batch_size"] // (world * accum)
        self._build_data()

        self.groups = param_groups(self.model, cfg["optim"])
        self.params = [p for g in self.groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(self.groups, lr=cfg["optim"]["lr"], weight_decay=cfg["optim"]["weight_decay"])
        s = cfg["schedule"]
        self.total_steps = self.plan.steps_per_epoch * s["epochs"]
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=[g["lr"] for g in self.groups], total_steps=self.total_steps,
            pct_start=s["pct_start"], div_factor=s["div_factor"], final_div_factor=s["final_div_factor"],
            cycle_momentum=s["cycle_momentum"], base_momentum=s["base_momentum"], max_momentum=s["max_momentum"])
        self.step, self.best = 0, {"score": None, "step": None}
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.best = state["step"], state["best"]
            torch.set_rng_state(state["rng"]["torch"])
            if self.device.type == "cuda" and state["rng"]["cuda"]:
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])

        from zoedepth_ros.train.losses import LossInputs

        self.forward = LossInputs(self.model)
        self.ddp = None
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Unused parameters are the norm here: the other domain's head on every NK batch, the
            # relative-depth output of NK (not conditioned on).
            self.ddp = self.forward = DistributedDataParallel(
                self.forward, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        self.val_every = max(1, round(cfg["val"]["every_epochs"] * self.plan.steps_per_epoch))
        lr_fields = [f"lr_{g['name']}" for g in self.groups]
        self.train_log = CsvLog(self.out / "train_log.csv", ["step", "epoch", "datasets", "loss", "silog", "domain_ce",
                                                             "grad_norm", *lr_fields, "samples_per_s", "elapsed_s"])
        from zoedepth_ros.eval.metrics import METRIC_NAMES

        self.val_log = CsvLog(self.out / "val_log.csv", ["step", "epoch", "set", "frames", "skipped", *METRIC_NAMES])
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if state is not None:
                self.train_log.keep_until(self.step)
                self.val_log.keep_until(self.step)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            self._write_run_info()
        self._stop_signal = None

    # --- set-up -----------------------------------------------------------------------------

    def _resume_state(self) -> dict:
        import torch

        path = self.out / "latest.state.pt"
        if not path.exists():
            raise ConfigError(f"--resume: no run to resume in {self.out} (no latest.state.pt)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"{path}: training state version {state.get('version')}, expected {STATE_VERSION}")
        old, new = _flatten(state["config"]), _flatten(self.cfg)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
        if changed:
            details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
            raise ConfigError(f"--resume: the configuration differs from the run's ({details}); an exact resume needs "
                              f"the same settings (only {', '.join(sorted(RESUMABLE_CHANGES))} may change)")
        from safetensors import safe_open

        with safe_open(str(self.out / "latest.safetensors"), framework="pt") as f:
            saved_step = int((f.metadata() or {}).get(STEP_KEY, -1))
        if saved_step != state["step"]:
            raise ConfigError(f"{self.out}: latest.safetensors is from step {saved_step} but latest.state.pt from step "
                              f"{state['step']} (interrupted while saving); restore a consistent pair to resume")
        return state

    def _build_data(self) -> None:
        from zoedepth_ros.train.data import (
            BRIGHTNESS, Augment, BatchPlan, DataError, TrainSet, TrainStream, ValSet, make_sources, source_domain)

        cfg, heads = self.cfg, self.model.config.head_names
        root = Path(cfg["data"]["root"])
        streams = []
        for entry in cfg["data"]["train"]:
            sources = make_sources(entry, root)
            domains = {source_domain(s.protocol) for s in sources}
            domain = entry.get("domain") or (domains.pop() if len(domains) == 1 else None)
            if domain is None:
                raise DataError(f"dataset {entry['name']!r} mixes protocols of several domains; set its `domain`")
            if self.routed and domain not in heads:
                raise DataError(f"dataset {entry['name']!r}: domain {domain!r} is not a head of the model "
                                f"({', '.join(heads)})")
            aug = {**cfg["augment"], **(entry.get("augment") or {})}
            if aug["brightness"] is None:
                aug["brightness"] = BRIGHTNESS["nyu" if domain == "nyu" else "other"]
            depth_range = None
            if "min_depth" in entry or "max_depth" in entry:
                protocol = sources[0].protocol
                depth_range = (float(entry.get("min_depth", protocol.min_depth)),
                               float(entry.get("max_depth", protocol.max_depth)))
            streams.append(TrainStream(
                entry["name"], sources, heads.index(domain) if self.routed else 0, domain,
                Augment(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()}),
                self.model.config.img_size, entry.get("kb_crop"), depth_range))
        self.streams = streams
        self.train_set = TrainSet(streams)
        self.plan = BatchPlan([len(s) for s in streams], self.per_rank, self.dist.world, self.dist.rank,
                              cfg["train"]["accum_steps"], cfg["seed"])
        self.val_sets = [ValSet(e["name"], make_sources(e, root), e.get("max_frames")) for e in cfg["data"]["val"]]

    def _write_run_info(self) -> None:
        import torch

        tcfg, world = self.cfg["train"], self.dist.world
        info = {
            "world_size": world, "backend": self.dist.backend, "device": str(self.device),
            "per_rank_batch": self.per_rank, "accum_steps": tcfg["accum_steps"], "effective_batch": tcfg["batch_size"],
            "max_lr": {g["name"]: g["lr"] for g in self.groups},
            "steps_per_epoch": self.plan.steps_per_epoch, "total_steps": self.total_steps,
            "train": [{"name": s.name, "frames": len(s), "domain": s.domain} for s in self.streams],
            "val": [{"name": v.name, "frames": len(v)} for v in self.val_sets],
            "precision": tcfg["precision"], "torch": torch.__version__,
        }
        (self.out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
        self.log(f"{world} process(es) on {self.device}{f' ({self.dist.backend})' if self.dist.backend else ''}; "
                 f"effective batch {tcfg['batch_size']} = {self.per_rank} per rank x {world} rank(s) x "
                 f"{tcfg['accum_steps']} accumulation step(s)")
        self.log("max lr (one-cycle): " + ", ".join(f"{g['name']} {g['lr']:.4g}" for g in self.groups))
        self.log("train: " + ", ".join(f"{s.name} {len(s)} frames (domain {s.domain})" for s in self.streams)
                 + f"; {self.plan.steps_per_epoch} steps/epoch x {self.cfg['schedule']['epochs']} epochs"
                 + f" = {self.total_steps} steps")

    def log(self, message: str) -> None:
        if self.dist.main:
            from tqdm import tqdm

            tqdm.write(f"train: {message}", file=sys.stdout)

    # --- checkpoints ----------------------------------------------------------------------------

    def save(self, name: str, extra: dict[str, str] | None = None) -> None:
        """Rank 0 writes `<name>.safetensors`; `latest` also gets the training state."""
        import torch

        from zoedepth_ros.model import save_checkpoint

        if not self.dist.main:
            return
        meta = {STEP_KEY: str(self.step), "zoedepth_ros.train.epoch": f"{self.step / self.plan.steps_per_epoch:.4f}",
                **(extra or {})}
        staged = save_checkpoint(self.model, self.out / f".{name}-{os.getpid()}.safetensors", meta)
        try:
            if name == "latest":
                # Both files are written before either replaces its predecessor: an interruption
                # while saving (minutes for BEiT-L on a slow disk) leaves the previous pair intact.
                cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []
                _atomic_torch_save({
                    "version": STATE_VERSION, "step": self.step, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "rng": {"torch": torch.get_rng_state(), "cuda": cuda},
                    "best": self.best, "config": self.cfg,
                }, self.out / "latest.state.pt")
            os.replace(staged, self.out / f"{name}.safetensors")
        finally:
            staged.unlink(missing_ok=True)

    # --- validation -----------------------------------------------------------------------------

    def validate(self) -> None:
        """Score every validation set with the evaluator's protocol code; keep the best checkpoint."""
        if not self.val_sets:
            return
        import torch.distributed as dist

        from zoedepth_ros.eval.metrics import MetricsAccumulator, score_frame
        from zoedepth_ros.model import DepthEstimator

        vcfg = self.cfg["val"]
        estimator = DepthEstimator(self.model, device=str(self.device), precision=self.cfg["train"]["precision"],
                                   flip_tta=vcfg["flip_tta"], pad=False, mode="eval")
        results = {}
        for val_set in self.val_sets:
            acc = MetricsAccumulator()
            pending: list = []

            def flush():
                predictions = estimator.predict_batch([rgb for rgb, _, _ in pending])
                for prediction, (_, gt, protocol) in zip(predictions, pending):
                    acc.update(score_frame(prediction.depth, gt, protocol))
                pending.clear()

            for frame in val_set.frames(self.dist.rank, self.dist.world):
                if pending and (frame[0].shape != pending[0][0].shape or len(pending) == vcfg["batch_size"]):
                    flush()
                pending.append(frame)
            if pending:
                flush()
            if self.dist.world > 1:
                gathered = [None] * self.dist.world
                dist.all_gather_object(gathered, acc)
                acc = MetricsAccumulator()
                for part in gathered:
                    acc.merge(part)
            results[val_set.name] = acc
        self.model.train()
        if not self.dist.main:
            return
        metric = vcfg["best_metric"]
        epoch = self.step / self.plan.steps_per_epoch
        scores = []
        for name, acc in results.items():
            mean = acc.mean()
            self.val_log.write({"step": self.step, "epoch": f"{epoch:.4f}", "set": name, "frames": acc.frames,
                                "skipped": acc.skipped, **{k: f"{v:.6g}" for k, v in mean.items()}})
            if mean:
                scores.append(mean[metric])
                shown = ", ".join(f"{k} {mean[k]:.4f}" for k in ("abs_rel", "rmse", "a1", "silog"))
                self.log(f"step {self.step} val {name}: {shown}")
            else:
                self.log(f"step {self.step} val {name}: no frame with valid ground truth")
        if not scores:
            return
        score = sum(scores) / len(scores)
        best = self.best["score"]
        better = best is None or (score > best if metric in HIGHER_IS_BETTER else score < best)
        if better:
            self.best = {"score": score, "step": self.step}
            self.save("best", {"zoedepth_ros.train.val": json.dumps({n: a.mean() for n, a in results.items()})})
            self.log(f"step {self.step}: new best {metric} {score:.4f} -> {self.out / 'best.safetensors'}")

    # --- training -------------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:
            raise KeyboardInterrupt
        self._stop_signal = signum
        self.log(f"{signal.Signals(signum).name}: saving `latest` after this step (again to abort)")

    def _train_step(self, micro_batches) -> dict:
        import torch

        from zoedepth_ros.train.losses import training_loss

        lcfg, accum = self.cfg["loss"], len(micro_batches)
        bf16 = self.cfg["train"]["precision"] == "bf16"
        totals = {"loss": 0.0, "silog": 0.0, "domain_ce": 0.0}
        for i, batch in enumerate(micro_batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            sync = self.ddp.no_sync() if self.ddp is not None and i < accum - 1 else nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                    depth, logits = self.forward(batch["image"], domain=batch["domain"] if self.routed else None)
                loss, parts = training_loss(depth, logits, batch["depth"], batch["mask"], batch["domain"],
                                            lcfg["silog_beta"], lcfg["domain_weight"])
                (loss / accum).backward()
            totals["loss"] += loss.item() / accum
            for key, value in parts.items():
                totals[key] += value.item() / accum
        clip = self.cfg["optim"]["clip_grad"]
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, math.inf if clip is None else clip)
        # Gradients are identical on every rank after the all-reduce, so all ranks skip together.
        if torch.isfinite(grad_norm):
            self.optimizer.step()
        else:
            self.log(f"step {self.step + 1}: non-finite gradient norm, update skipped")
        self.optimizer.zero_grad(set_to_none=True)
        totals["lrs"] = [g["lr"] for g in self.optimizer.param_groups]
        self.scheduler.step()
        totals["grad_norm"] = grad_norm.item()
        return totals

    def fit(self) -> int:
        """Train to the end of the schedule (or stop_after_steps / a signal); returns the exit code."""
        import torch
        from tqdm import tqdm

        from zoedepth_ros.train.data import collate, ignore_stop_signals

        tcfg = self.cfg["train"]
        handlers = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: the caller handles signals
                break
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.dist.main and tcfg["progress"]), desc="train")
        try:
            if self.step == 0 and self.cfg["val"]["at_start"]:
                self.validate()
            start, accum, spe = time.time(), tcfg["accum_steps"], self.plan.steps_per_epoch
            stop_at = tcfg["stop_after_steps"]
            while self.step < self.total_steps:
                epoch = self.step // spe
                loader = torch.utils.data.DataLoader(
                    self.train_set, batch_sampler=self.plan.epoch(epoch, self.step % spe),
                    num_workers=self.cfg["data"]["workers"], collate_fn=collate, worker_init_fn=ignore_stop_signals,
                    pin_memory=self.device.type == "cuda")
                batches = iter(loader)
                for _ in range(self.step % spe, spe):
                    tick = time.time()
                    micro = [next(batches) for _ in range(accum)]
                    names = "+".join(dict.fromkeys(self.streams[int(b.pop("stream")[0])].name for b in micro))
                    result = self._train_step(micro)
                    self.step += 1
                    sums = self.dist.all_sum([result["loss"], result["silog"], result["domain_ce"],
                                              float(self._stop_signal is not None)])
                    loss, silog, ce = (v / self.dist.world for v in sums[:3])
                    speed = tcfg["batch_size"] / max(time.time() - tick, 1e-9)
                    if self.dist.main:
                        self.train_log.write({
                            "step": self.step, "epoch": f"{self.step / spe:.4f}", "datasets": names,
                            "loss": f"{loss:.6g}", "silog": f"{silog:.6g}", "domain_ce": f"{ce:.6g}",
                            "grad_norm": f"{result['grad_norm']:.6g}",
                            **{f"lr_{g['name']}": f"{lr:.6g}" for g, lr in zip(self.groups, result["lrs"])},
                            "samples_per_s": f"{speed:.3g}", "elapsed_s": f"{time.time() - start:.1f}"})
                        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{result['lrs'][0]:.2e}", img_s=f"{speed:.1f}",
                                        refresh=False)
                        bar.update(1)
                    done = self.step == self.total_steps
                    saved = False
                    if self.step % self.val_every == 0 or done:
                        self.validate()
                        self.save("latest")
                        saved = True
                    elif tcfg["save_every_steps"] and self.step % tcfg["save_every_steps"] == 0:
                        self.save("latest")
                        saved = True
                    interrupted = sums[3] > 0
                    if not done and (interrupted or (stop_at is not None and self.step >= stop_at)):
                        if not saved:
                            self.save("latest")
                        reason = "interrupted" if interrupted else f"stop_after_steps {stop_at} reached"
                        self.log(f"{reason} at step {self.step}/{self.total_steps}; continue with --resume")
                        # A killed process would exit 128 + signal: the job did not finish.
                        return 128 + int(self._stop_signal or signal.SIGTERM) if interrupted else 0
        finally:
            bar.close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        if self.dist.main:
            plot = plot_metrics(self.out, self.train_log.rows(), self.val_log.rows(), self.cfg["val"]["best_metric"])
            best = self.best
            summary = (f"best {self.cfg['val']['best_metric']} {best['score']:.4f} at step {best['step']}"
                       if best["score"] is not None else "no validation score")
            self.log(f"done: {self.total_steps} steps; {summary}; outputs in {self.out} ({plot.name})")
        return 0



# ---------------------------------------------------------------------------------------------
# Command line


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(
        name, help="fine-tune ZoeDepth on NYU, KITTI or both (one process, or torchrun for many GPUs/nodes)",
        description="Train ZoeDepth with the official recipe (SILog, AdamW, one-cycle). Settings: the defaults, "
                    "then --config, then the flags below, then --set. Multi-GPU: torchrun --nproc_per_node=N "
                    "-m zoedepth_ros.cli train ... (docs/training.md).")
    p.add_argument("--config", type=Path, help="YAML training config (config/train_{nyu,kitti,nk,synth}.yaml)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set optim.lr=1e-4 --set model.img_size=[384,512] (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in out_dir from its `latest` checkpoint")
    p.add_argument("--out-dir", help="output directory (out_dir)")
    p.add_argument("--init", help="checkpoint to start from (model.init): preset, official .pt, HF dir, .safetensors")
    p.add_argument("--arch", choices=ARCHS, help="random initialisation of this architecture (model.arch)")
    p.add_argument("--epochs", type=int, help="schedule.epochs")
    p.add_argument("--batch-size", type=int, help="effective batch over all ranks and accumulation steps (train.batch_size)")
    p.add_argument("--lr", type=float, help="maximum learning rate of the metric head (optim.lr)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="train.precision")
    p.add_argument("--device", help="auto, cpu or cuda (train.device)")
    p.add_argument("--workers", type=int, help="data loader processes per rank (data.workers)")
    p.add_argument("--seed", type=int, help="seed")
    p.set_defaults(func=run)


def run(args) -> int:
    flags = {key: getattr(args, flag) for flag, key in FLAGS.items() if getattr(args, flag) is not None}
    if args.arch is not None:
        flags["model.init"] = None  # --arch replaces the config's checkpoint
    elif args.init is not None:
        flags["model.arch"] = None
    cfg = load_config(args.config, args.sets, flags)
    trainer = Trainer(cfg, resume=args.resume)
    try:
        return trainer.fit()
    finally:
        trainer.dist.close()
