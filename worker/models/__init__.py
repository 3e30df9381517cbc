"""Pretrained super-resolution networks: catalogue, provisioning, ncnn-graph interpreter.

``catalog`` says what exists; ``store`` fetches and checksums the files; ``ncnn_graph``
runs them in PyTorch; ``loader`` keeps one copy per (file, device, dtype) per process.
"""
