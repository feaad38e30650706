"""The compression steps: pruning and distillation (torch), quantization (ONNX Runtime)."""
