"""Models: the registry (build, describe, rebuild, export), FCN32-VGG11, the smp zoo, encoder
weights (offline ImageNet EfficientNet-Lite0), the forward pass and its precision policy, the
losses, and the ONNX export checked with onnxruntime (``onnx_export``)."""
