"""Mistral tool calls (``--tool-call-parser mistral``).

Mistral-7B-Instruct-v0.3, Mistral-Nemo and similar emit the ``[TOOL_CALLS]`` token
followed by a JSON array of calls::

    [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, {...}]

``[TOOL_CALLS]`` is a special token: the output must be detokenized with special
tokens kept for it to be seen. The newer ``[TOOL_CALLS]name[ARGS]{...}`` syntax
(tokenizer v11+) is not handled here.
"""
from __future__ import annotations

from typing import ClassVar

from sglang.srt.function_call.base_detector import BaseFormatDetector


class MistralDetector(BaseFormatDetector):
    start_markers: ClassVar[tuple[str, ...]] = ("[TOOL_CALLS]",)
    region_open: ClassVar[str] = "["
    call_separator: ClassVar[str | None] = ","
    region_close: ClassVar[str | None] = "]"
