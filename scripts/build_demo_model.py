"""Rebuild the demo model from scratch (`make demo-model`): the exact commands behind the shipped
weights, `zoedepth_ros/assets/demo_nk.safetensors`, run in order from the repository root.

    .venv/bin/python scripts/build_demo_model.py

The training runs in two stages: 20 epochs of 2048 frames (5120 steps of 8) from random
initialisation, about 2.5 hours on 2 CPU cores, then 10 epochs (2560 steps) from its best checkpoint
with a fresh one-cycle at a quarter of the rate, about 1.1 hours. Training refuses an out_dir that
already holds a run (remove runs/demo_wide and runs/demo_ft to rebuild, or continue a cut-off one
with `zoedepth-ros train --config ... --resume`). The shipped file stores the second stage's best
checkpoint in float16 (3.9 MB instead of 7.9; loaded as float32, the held-out indoor scores equal the
float32 checkpoint's to three decimals). Held-out seeds (3001, 3002) differ from the training (1, 2),
validation (101, 102) and demo (2001, 2002) seeds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSET = "zoedepth_ros/assets/demo_nk.safetensors"


def synth(out: str, kind: str, frames: int, size: str, seed: int) -> list[str]:
    return ["synth", out, "--kind", kind, "--frames", str(frames), "--size", size, "--seed", str(seed), "--overwrite"]


# Each step: the arguments of one `zoedepth-ros` command.
STEPS: list[list[str]] = [
    synth("data/demo/indoor_train", "indoor", 1024, "96x128", 1),
    synth("data/demo/outdoor_train", "outdoor", 1024, "96x320", 2),
    synth("data/demo/indoor_val", "indoor", 16, "96x128", 101),
    synth("data/demo/outdoor_val", "outdoor", 16, "96x320", 102),
    ["train", "--config", "config/train_demo.yaml"],
    ["train", "--config", "config/train_demo_finetune.yaml"],
    ["weights", "convert", "runs/demo_ft/best.safetensors", ASSET, "--dtype", "fp16"],
    synth("data/demo/indoor_test", "indoor", 32, "96x128", 3001),
    synth("data/demo/outdoor_test", "outdoor", 32, "96x320", 3002),
    ["evaluate", "data/demo/indoor_test", "--model", ASSET, "--out", "runs/demo_ft/test_indoor"],
    ["evaluate", "data/demo/outdoor_test", "--model", ASSET, "--out", "runs/demo_ft/test_outdoor"],
]


def main() -> int:
    for step in STEPS:
        print("$ zoedepth-ros " + " ".join(step), flush=True)
        subprocess.run([sys.executable, "-m", "zoedepth_ros.cli", *step], cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
