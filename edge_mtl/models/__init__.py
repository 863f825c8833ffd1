"""PyTorch modules only: backbones, heads, the face detector and the multi-task recognizer.

No losses and no data live here (DESIGN §3): training-only parts sit in `edge_mtl.train`.
"""
