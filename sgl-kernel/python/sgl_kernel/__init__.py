"""sgl-kernel: compute kernels for the engine and its attention capture.

Each op has a Triton implementation and a plain-torch reference with the same
signature. This package imports nothing from ``sglang`` and keeps its top level light:
``sgl_kernel.zones`` needs only numpy, so the sidecars can use it without torch.
"""

__version__ = "0.1.0"
