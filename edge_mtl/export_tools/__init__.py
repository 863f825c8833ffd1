"""Export (ONNX + metadata + parity), FP16 and INT8 (Q/DQ) variants with their accuracy gate, calibration sets.

TensorRT engines are built on the target by the runtime (edge_mtl.runtime.tensorrt_build)."""
