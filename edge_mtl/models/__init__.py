"""The models: PyTorch networks (backbones, heads, the face detector, the landmark refiner and the multi-task
recognizer), their checkpoints, the metadata every exported model carries, and the `torch` inference backend.

No losses and no data live here (docs/architecture.md, package map): training-only parts sit in `edge_mtl.train`.
`metadata` is torch-free, so the export tools and the runtime share one definition.
"""
