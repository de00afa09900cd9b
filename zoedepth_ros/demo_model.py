"""Rebuild the demo model (`make demo-model`): the exact commands behind the shipped weights.

    zoedepth-ros synth data/demo/indoor_train  --kind indoor  --frames 1024 --size 96x128 --seed 1
    zoedepth-ros synth data/demo/outdoor_train --kind outdoor --frames 1024 --size 96x320 --seed 2
    zoedepth-ros synth data/demo/indoor_val    --kind indoor  --frames 16   --size 96x128 --seed 101
    zoedepth-ros synth data/demo/outdoor_val   --kind outdoor --frames 16   --size 96x320 --seed 102
    zoedepth-ros train --config config/train_demo.yaml
    zoedepth-ros train --config config/train_demo_finetune.yaml
    cp runs/demo_ft/best.safetensors zoedepth_ros/assets/demo_nk.safetensors
    zoedepth-ros synth data/demo/indoor_test  --kind indoor  --frames 32 --size 96x128 --seed 3001
    zoedepth-ros synth data/demo/outdoor_test --kind outdoor --frames 32 --size 96x320 --seed 3002
    zoedepth-ros evaluate data/demo/indoor_test  --model zoedepth_ros/assets/demo_nk.safetensors --out runs/demo_ft/test_indoor
    zoedepth-ros evaluate data/demo/outdoor_test --model zoedepth_ros/assets/demo_nk.safetensors --out runs/demo_ft/test_outdoor

Each training stage (10 epochs of 2048 frames, 2560 steps of 8) takes about an hour on 2 CPU
cores; the second starts from the first's best checkpoint with a lower one-cycle. Both refuse an
out_dir that already holds a run: remove runs/demo and runs/demo_ft to rebuild.
Held-out seeds (3001, 3002) differ from the training (1, 2), validation (101, 102) and demo
(2001, 2002) seeds.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = [line.strip() for line in __doc__.splitlines() if line.strip().startswith(("zoedepth-ros", "cp "))]


def main() -> int:
    for step in STEPS:
        print(f"$ {step}", flush=True)
        argv = shlex.split(step)
        if argv[0] == "cp":
            Path(REPO / argv[2]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / argv[1], REPO / argv[2])
            continue
        if argv[1] == "synth":
            argv.append("--overwrite")
        subprocess.run([sys.executable, "-m", "zoedepth_ros.cli", *argv[1:]], cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
