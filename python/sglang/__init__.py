"""sglang: an SGLang-compatible serving engine with exact attention capture.

The top level stays light (no torch import) so that tools such as
``python -m sglang.srt.attention_sidecar`` start fast; ``sglang.Engine`` is loaded on
first use.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from sglang.srt.entrypoints.engine import Engine

        return Engine
    raise AttributeError(f"module 'sglang' has no attribute {name!r}")
