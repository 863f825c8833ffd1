"""Training: datasets, augmentation, losses, task weighting, distillation, trainer and checkpoints."""
