"""Training datasets: augmentation, detector and recognizer datasets, distillation targets from a teacher."""
