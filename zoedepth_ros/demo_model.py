"""Rebuild the demo model (`make demo-model`): the exact commands behind the shipped weights.

    zoedepth-ros synth data/demo/indoor_train  --kind indoor  --frames 1024 --size 96x128 --seed 1
    zoedepth-ros synth data/demo/outdoor_train --kind outdoor --frames 1024 --size 96x320 --seed 2
    zoedepth-ros synth data/demo/indoor_val    --kind indoor  --frames 16   --size 96x128 --seed 101
    zoedepth-ros synth data/demo/outdoor_val   --kind outdoor --frames 16   --size 96x320 --seed 102
    zoedepth-ros train --config config/train_demo.yaml
    zoedepth-ros train --config config/train_demo_finetune.yaml
    zoedepth-ros weights convert runs/demo_ft/best.safetensors zoedepth_ros/assets/demo_nk.safetensors --dtype fp16
    zoedepth-ros synth data/demo/indoor_test  --kind indoor  --frames 32 --size 96x128 --seed 3001
    zoedepth-ros synth data/demo/outdoor_test --kind outdoor --frames 32 --size 96x320 --seed 3002
    zoedepth-ros evaluate data/demo/indoor_test  --model zoedepth_ros/assets/demo_nk.safetensors --out runs/demo_ft/test_indoor
    zoedepth-ros evaluate data/demo/outdoor_test --model zoedepth_ros/assets/demo_nk.safetensors --out runs/demo_ft/test_outdoor

The training runs in two stages: 20 epochs of 2048 frames (5120 steps of 8) from random
initialisation, about 2.5 hours on 2 CPU cores, then 10 epochs (2560 steps) from its best checkpoint
with a fresh one-cycle at a quarter of the rate, about 1.1 hours. Training refuses an out_dir that
already holds a run (remove runs/demo_wide and runs/demo_ft to rebuild, or continue a cut-off one
with `zoedepth-ros train --config ... --resume`). The shipped file stores the second stage's best
checkpoint in float16 (3.9 MB instead of 7.9; loaded as float32, the held-out indoor scores equal the
float32 checkpoint's to three decimals).
Held-out seeds (3001, 3002) differ from the training (1, 2), validation (101, 102) and demo
(2001, 2002) seeds.
"""  # noqa: E501  (STEPS below runs the docstring's `zoedepth-ros ...` lines: one command a line)

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = [line.strip() for line in __doc__.splitlines() if line.strip().startswith("zoedepth-ros ")]


def main() -> int:
    for step in STEPS:
        print(f"$ {step}", flush=True)
        argv = shlex.split(step)
        if argv[1] == "synth":
            argv.append("--overwrite")
        subprocess.run([sys.executable, "-m", "zoedepth_ros.cli", *argv[1:]], cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
