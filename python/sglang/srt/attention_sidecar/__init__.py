"""Attention sidecar: fingerprint storage (SQLite) and classification over discovery artifacts.

Run it with ``python -m sglang.srt.attention_sidecar --db ... --discovery-dir ...``.
This package must stay light: it imports ``sgl_kernel.zones`` (numpy only) and never the
engine (no torch, no transformers, no other ``sglang.srt`` module), so it starts fast and
can run on a machine without the model.
"""
