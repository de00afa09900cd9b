"""The training configuration: the official recipe's defaults (DEFAULTS), reading a YAML file,
command-line flags and `--set key=value` overrides on top of them, and validation.

Settings come from, in order (later wins): DEFAULTS, the YAML file, the flags (config key ->
value), then the `key=value` strings (dotted key, YAML value). Unknown keys and ill-typed values
are errors that name the key. docs/training.md describes every key.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from zoedepth_ros.errors import ZoeDepthError
from zoedepth_ros.model.config import ARCH_NAMES

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
RESUMABLE_CHANGES = {"train.stop_after_steps", "train.progress", "train.device", "train.save_every_steps",
                     "data.workers"}


class ConfigError(ZoeDepthError):
    """A training configuration that cannot run; the message names the setting."""


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
    """Raise ConfigError listing every problem of the resolved configuration `cfg`."""
    from zoedepth_ros.eval.metrics import METRIC_NAMES

    problems = []
    model, train, sched, val = cfg["model"], cfg["train"], cfg["schedule"], cfg["val"]
    if (model["init"] is None) == (model["arch"] is None):
        problems.append("set exactly one of model.init (a checkpoint) and model.arch (random initialisation)")
    if model["arch"] is not None and model["arch"] not in ARCH_NAMES:
        problems.append(f"model.arch must be one of {', '.join(ARCH_NAMES)}, not {model['arch']!r}")
    if model["arch_overrides"] and model["arch"] is None:
        problems.append("model.arch_overrides goes with model.arch (a checkpoint carries its own architecture)")
    if not isinstance(model["arch_overrides"], dict):
        problems.append("model.arch_overrides must be a mapping of ZoeDepthConfig fields, "
                        f"not {model['arch_overrides']!r}")
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
                       ("train.stop_after_steps", train["stop_after_steps"]),
                       ("optim.clip_grad", cfg["optim"]["clip_grad"])):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            problems.append(f"{key} must be a positive number or null, not {value!r}")
    if cfg["data"]["workers"] < 0:
        problems.append("data.workers must be 0 (load in the training process) or more")
    if val["best_metric"] not in METRIC_NAMES:
        problems.append(f"val.best_metric must be one of {', '.join(METRIC_NAMES)}")
    if val["every_epochs"] <= 0 or val["batch_size"] < 1:
        problems.append("val.every_epochs must be positive and val.batch_size at least 1")
    for section, keys in (("train", {"name", "bags", "folder", "domain", "kb_crop", "min_depth", "max_depth",
                                     "augment"}),
                          ("val", {"name", "bags", "folder", "max_frames"})):
        entries = cfg["data"][section]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                                    for e in entries):
            problems.append(f"data.{section} must be a list of mappings, each with a name")
            continue
        names = [e["name"] for e in entries]
        if len(set(names)) != len(names):
            problems.append(f"data.{section}: dataset names must be unique, got {names}")
        for entry in entries:
            unknown = set(entry) - keys
            if unknown:
                problems.append(f"data.{section} {entry['name']!r}: unknown keys {sorted(unknown)} "
                                f"(known: {sorted(keys)})")
            if section == "train" and set(entry.get("augment") or {}) - set(DEFAULTS["augment"]):
                problems.append(f"data.train {entry['name']!r}: augment keys are {sorted(DEFAULTS['augment'])}")
    if not cfg["data"]["train"]:
        problems.append("data.train is empty: give at least one dataset")
    if problems:
        raise ConfigError("invalid training configuration:\n  " + "\n  ".join(problems))


def flatten(cfg: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: the settings by dotted key."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

