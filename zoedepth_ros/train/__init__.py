"""Fine-tuning ZoeDepth: `zoedepth-ros train` (trainer.py: the model to start from, the loop, the
command), the configuration (config.py), freezing, parameter groups and schedule (optim.py),
torchrun set-up (distributed.py), the run directory's files (runs.py), datasets and augmentation
(data.py), losses (losses.py). docs/training.md describes the recipe, the data and the outputs."""
