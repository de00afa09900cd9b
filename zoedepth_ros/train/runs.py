"""The files of a training run in its `out_dir` (rank 0 writes them; every rank reads them to resume):

- `latest.safetensors` + `latest.state.pt`: the model in the project format, and the training state
  (optimizer, scheduler, step, best score, RNG, resolved configuration) as plain tensors and
  containers, loadable with `torch.load(..., weights_only=True)`; what `--resume` continues;
- `best.safetensors`: the model at its best validation score;
- `config.yaml` (the resolved configuration), `run.json` (world size, batch, learning rates);
- `train_log.csv`, `val_log.csv` and their plot `metrics.png`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import yaml

from zoedepth_ros.train.config import RESUMABLE_CHANGES, ConfigError, flatten

STATE_VERSION = 1
STEP_KEY = "zoedepth_ros.train.step"


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


def atomic_torch_save(obj, path: Path) -> None:
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


class RunDir:
    """One run's directory: its resume state, logs, checkpoints, configuration and plot."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.train_log: CsvLog | None = None
        self.val_log: CsvLog | None = None

    def resume_state(self, cfg: dict, resume: bool) -> dict | None:
        """The training state to continue (`resume`) or None for a new run. A new run refuses a
        directory that holds one; a resumed one needs the same settings (but RESUMABLE_CHANGES)
        and a `latest` pair from one step."""
        if not resume:
            if (self.path / "latest.state.pt").exists():
                raise ConfigError(f"{self.path} already holds a run: pass --resume to continue it, or choose another "
                                  f"out_dir")
            return None
        import torch

        path = self.path / "latest.state.pt"
        if not path.exists():
            raise ConfigError(f"--resume: no run to resume in {self.path} (no latest.state.pt)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"{path}: training state version {state.get('version')}, expected {STATE_VERSION}")
        old, new = flatten(state["config"]), flatten(cfg)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
        if changed:
            details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
            raise ConfigError(f"--resume: the configuration differs from the run's ({details}); an exact resume needs "
                              f"the same settings (only {', '.join(sorted(RESUMABLE_CHANGES))} may change)")
        from safetensors import safe_open

        with safe_open(str(self.path / "latest.safetensors"), framework="pt") as f:
            saved_step = int((f.metadata() or {}).get(STEP_KEY, -1))
        if saved_step != state["step"]:
            raise ConfigError(f"{self.path}: latest.safetensors is from step {saved_step} "
                              f"but latest.state.pt from step {state['step']} (interrupted while saving); "
                              "restore a consistent pair to resume")
        return state

    def open_logs(self, lr_groups: list[str]) -> None:
        """The CSV logs, with an `lr_<group>` column per parameter group."""
        from zoedepth_ros.eval.metrics import METRIC_NAMES

        lr_fields = [f"lr_{name}" for name in lr_groups]
        self.train_log = CsvLog(self.path / "train_log.csv", ["step", "epoch", "datasets", "loss", "silog", "domain_ce",
                                                              "grad_norm", *lr_fields, "samples_per_s", "elapsed_s"])
        self.val_log = CsvLog(self.path / "val_log.csv", ["step", "epoch", "set", "frames", "skipped", *METRIC_NAMES])

    def start(self, cfg: dict, resumed_step: int | None) -> None:
        """Create the directory, drop the log rows a resumed run redoes, write `config.yaml`."""
        self.path.mkdir(parents=True, exist_ok=True)
        if resumed_step is not None:
            self.train_log.keep_until(resumed_step)
            self.val_log.keep_until(resumed_step)
        (self.path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def write_run_info(self, info: dict) -> None:
        (self.path / "run.json").write_text(json.dumps(info, indent=2) + "\n")

    def save(self, name: str, model, metadata: dict[str, str], state: dict | None = None) -> None:
        """`<name>.safetensors` (with `metadata`) and, with `state`, `<name>.state.pt`."""
        from zoedepth_ros.model import save_checkpoint

        staged = save_checkpoint(model, self.path / f".{name}-{os.getpid()}.safetensors", metadata)
        try:
            if state is not None:
                # Both files are written before either replaces its predecessor: an interruption
                # while saving (minutes for BEiT-L on a slow disk) leaves the previous pair intact.
                atomic_torch_save(state, self.path / f"{name}.state.pt")
            os.replace(staged, self.path / f"{name}.safetensors")
        finally:
            staged.unlink(missing_ok=True)

    def plot(self, metric: str) -> Path:
        """`metrics.png` from the logs."""
        return plot_metrics(self.path, self.train_log.rows(), self.val_log.rows(), metric)
