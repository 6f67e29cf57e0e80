"""The embed stage: the packaged sentence-transformers model and its int8 runtimes.

model (the Embedder and get_embedder) · onnx_backend (ONNX Runtime, int8) · openvino_backend (OpenVINO, int8).
"""
