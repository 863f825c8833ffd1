"""Export (ONNX + metadata + parity), FP16 and INT8 (Q/DQ) variants, TensorRT engine builds."""
