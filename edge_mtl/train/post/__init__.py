"""After training: checkpoint averaging, quality calibration, recovering a trainable model from a release."""
