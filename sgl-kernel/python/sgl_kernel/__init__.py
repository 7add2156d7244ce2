"""sgl-kernel: compute kernels for the engine and its attention capture.

Each op has a Triton implementation and a plain-torch reference with the same
signature. This package imports nothing from ``sglang`` and keeps its top level light:
``sgl_kernel.zones`` needs only numpy, so the sidecars can use it without torch.

Modules:
    sgl_kernel.capture    attention_capture / decode_capture / extend_capture -> CaptureResult
    sgl_kernel.attention  decode_attention_fwd / extend_attention_fwd (paged cache, optional lse)
    sgl_kernel.zones      fingerprint layout, zone classifier, traits, sampling hints
    sgl_kernel.bench_capture  ``python -m sgl_kernel.bench_capture --json``
"""

__version__ = "0.1.0"
