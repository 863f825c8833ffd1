"""edge-mtl: real-time face analytics for edge boxes.

The package imports nothing heavy at import time; torch is only needed for training and export.
"""

__version__ = "0.1.0"
