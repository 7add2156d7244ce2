"""Qwen 2.5 / Qwen 3 / QwQ tool calls (``--tool-call-parser qwen25`` or ``qwen``).

The chat templates of these models (Hermes style) ask for one block per call::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Several blocks may follow each other (usually separated by a newline), with normal
text before, between or after them. Whitespace inside a block and whitespace touching
a block is not part of the content.
"""
from __future__ import annotations

from typing import ClassVar

from sglang.srt.function_call.base_detector import BaseFormatDetector


class Qwen25Detector(BaseFormatDetector):
    start_markers: ClassVar[tuple[str, ...]] = ("<tool_call>",)
    call_separator: ClassVar[str | None] = None
    region_close: ClassVar[str | None] = "</tool_call>"
