"""Losses (recognizer heads and attributes, detector) and multi-task loss weighting."""
