"""Training: tasks/ (what each model learns), losses/, data/ (datasets, augmentation, distillation), loop/ (trainer),
post/ (after training). Checkpoints live in edge_mtl.models.checkpoint."""
