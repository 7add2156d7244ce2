"""Llama 3.1 / 3.2 / 3.3 JSON tool calls (``--tool-call-parser llama3``).

With the JSON-based tool prompt these models answer a call with a bare JSON object,
optionally preceded by the ``<|python_tag|>`` special token (whether it appears
depends on the prompt and on ``skip_special_tokens``)::

    <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}

Meta's format names the arguments ``parameters``; ``arguments`` is accepted as well.
Several calls are separated by ``;`` (the convention upstream SGLang uses, since the
models have no native parallel-call syntax). Without the tag, only an output whose
first non-space character is ``{`` is read as a call, as upstream does; a leading JSON
object that is not call-shaped (no ``name``) stays normal text.
"""
from __future__ import annotations

from typing import ClassVar

from sglang.srt.function_call.base_detector import BaseFormatDetector


class Llama32Detector(BaseFormatDetector):
    start_markers: ClassVar[tuple[str, ...]] = ("<|python_tag|>",)
    call_separator: ClassVar[str | None] = ";"
    region_close: ClassVar[str | None] = None
    implicit_start: ClassVar[bool] = True
