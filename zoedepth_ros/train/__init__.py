"""Fine-tuning ZoeDepth: `zoedepth-ros train` (trainer.py), datasets and augmentation (data.py),
losses (losses.py). docs/training.md describes the recipe, the data and the outputs."""
