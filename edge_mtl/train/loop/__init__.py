"""The training loop and the `edge-mtl train` entry: trainer (steps, EMA, resume) and run (config -> task)."""
