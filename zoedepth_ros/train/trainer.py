"""`zoedepth-ros train`: fine-tune ZoeDepth (N, K or NK) with the official recipe, in one process
(CPU or one GPU) or over many GPUs and nodes with torchrun (DistributedDataParallel).

This module holds the model to start from (build_model), the training loop (Trainer: data, steps,
validation, checkpoints, signals) and the command (add_parser, run). The rest of the package:
config.py (the configuration: defaults, YAML, flags, --set, validation), optim.py (freezing,
parameter groups, optimizer and schedule), distributed.py (torchrun set-up and teardown),
runs.py (the run directory: logs, checkpoints, resume state, plot), data.py (datasets,
augmentation, batch plan) and losses.py. docs/training.md describes the keys, the data layout and
the outputs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from zoedepth_ros.argtypes import CHECKPOINT_HELP, device
from zoedepth_ros.model.config import ARCH_NAMES
from zoedepth_ros.train.config import ConfigError, load_config
from zoedepth_ros.train.distributed import Distributed
from zoedepth_ros.train.optim import freeze, optimizer_and_schedule, param_groups
from zoedepth_ros.train.runs import STATE_VERSION, STEP_KEY, RunDir

# Command-line flags and the config keys they set.
FLAGS = {
    "out_dir": "out_dir", "init": "model.init", "arch": "model.arch", "epochs": "schedule.epochs",
    "batch_size": "train.batch_size", "lr": "optim.lr", "precision": "train.precision",
    "device": "train.device", "workers": "data.workers", "seed": "seed",
}
HIGHER_IS_BETTER = {"a1", "a2", "a3"}


def build_model(mcfg: dict):
    """The model to fine-tune (fp32, CPU), from a checkpoint or a fresh architecture."""
    import torch

    from zoedepth_ros.model import ZoeDepth, config_from_arch, load_model

    if mcfg["arch"] is not None:
        arch = mcfg["arch"]
        if arch not in ARCH_NAMES:  # load_config refuses it already; this is for direct calls
            raise ConfigError(f"model.arch must be one of {', '.join(ARCH_NAMES)}, not {arch!r}")
        try:
            config = config_from_arch(arch, **mcfg["arch_overrides"])
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


class Trainer:
    """One training run: the model, its data, optimizer and schedule, on this process's device."""

    def __init__(self, cfg: dict, resume: bool = False):
        import torch

        self.cfg = cfg
        self.out = Path(cfg["out_dir"])
        self.run_dir = RunDir(self.out)
        tcfg = cfg["train"]
        if tcfg["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.dist = Distributed(tcfg["device"])
        self.device = self.dist.device
        state = self.run_dir.resume_state(cfg, resume)
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
        self.total_steps = self.plan.steps_per_epoch * cfg["schedule"]["epochs"]
        self.optimizer, self.scheduler = optimizer_and_schedule(self.groups, cfg, self.total_steps)
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
        self.run_dir.open_logs([g["name"] for g in self.groups])
        self.train_log, self.val_log = self.run_dir.train_log, self.run_dir.val_log
        if self.dist.main:
            self.run_dir.start(cfg, self.step if state is not None else None)
            self._write_run_info()
        self._stop_signal = None

    # --- set-up -----------------------------------------------------------------------------

    def _build_data(self) -> None:
        from zoedepth_ros.train.data import (
            BRIGHTNESS,
            Augment,
            BatchPlan,
            DataError,
            TrainSet,
            TrainStream,
            ValSet,
            make_sources,
            source_domain,
        )

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
        self.run_dir.write_run_info(info)
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

        if not self.dist.main:
            return
        meta = {STEP_KEY: str(self.step), "zoedepth_ros.train.epoch": f"{self.step / self.plan.steps_per_epoch:.4f}",
                **(extra or {})}
        state = None
        if name == "latest":
            cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []
            state = {
                "version": STATE_VERSION, "step": self.step, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": {"torch": torch.get_rng_state(), "cuda": cuda},
                "best": self.best, "config": self.cfg,
            }
        self.run_dir.save(name, self.model, meta, state)

    # --- validation -----------------------------------------------------------------------------

    def validate(self) -> None:
        """Score every validation set with the evaluator's protocol code; keep the best checkpoint."""
        if not self.val_sets:
            return
        import torch.distributed as dist

        from zoedepth_ros.eval.metrics import MetricsAccumulator, score_frame
        from zoedepth_ros.eval.recipe import ESTIMATOR_OPTIONS, predict_in_batches
        from zoedepth_ros.inference import DepthEstimator

        vcfg = self.cfg["val"]
        # evaluate's processing; the flip average as the config says (off: a faster validation)
        estimator = DepthEstimator(self.model, device=str(self.device), precision=self.cfg["train"]["precision"],
                                   **{**ESTIMATOR_OPTIONS, "flip_tta": vcfg["flip_tta"]})
        results = {}
        for val_set in self.val_sets:
            acc = MetricsAccumulator()
            for (_, gt, protocol), prediction in predict_in_batches(
                    estimator, val_set.frames(self.dist.rank, self.dist.world), lambda frame: frame[0],
                    vcfg["batch_size"]):
                acc.update(score_frame(prediction.depth, gt, protocol))
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
                            **{f"lr_{g['name']}": f"{lr:.6g}"
                               for g, lr in zip(self.groups, result["lrs"], strict=True)},
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
            plot = self.run_dir.plot(self.cfg["val"]["best_metric"])
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
    p.add_argument("--init", help=f"checkpoint to start from (model.init): {CHECKPOINT_HELP}")
    p.add_argument("--arch", choices=ARCH_NAMES, help="random initialisation of this architecture (model.arch)")
    p.add_argument("--epochs", type=int, help="schedule.epochs")
    p.add_argument("--batch-size", type=int,
                   help="effective batch over all ranks and accumulation steps (train.batch_size)")
    p.add_argument("--lr", type=float, help="maximum learning rate of the metric head (optim.lr)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="train.precision")
    p.add_argument("--device", type=device, help="auto, cpu, cuda or cuda:N (train.device)")
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
