"""Pure pipeline stages: tensors in, tensors out; no I/O, no globals.

Frames travel as float32 tensors of shape (N, 3, H, W), RGB, values in [0, 1], on the device
the caller chose. PyAV lives only in the media modules that decode and encode.
"""
