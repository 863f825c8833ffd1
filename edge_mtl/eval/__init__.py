"""Metrics: verification, attributes, detection; computed through the same detect-align-infer path as runtime."""
