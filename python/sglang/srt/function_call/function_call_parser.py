"""Entry point of tool-call parsing for the OpenAI-compatible chat API.

``FunctionCallParser`` wraps the detector chosen by ``--tool-call-parser`` (names as in
upstream SGLang: ``llama3``, ``qwen25``/``qwen``, ``mistral``) for one response.

``tool_choice`` of ``"required"`` or a named function is served differently: decoding
is constrained by ``tool_choice_json_schema`` so the output is exactly a JSON array of
calls, whatever the model family, and ``parse_tool_choice_output`` (whole output) or
``FunctionCallParser.for_tool_choice`` (streaming) reads it back. The array items use
the keys ``name`` and ``parameters``, as upstream's ``get_json_schema_constraint``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sglang.srt.function_call.base_detector import (
    BaseFormatDetector,
    ToolSpec,
    arguments_of,
    dump_arguments,
    tool_function_name,
    tool_names,
    tool_parameters_schema,
)
from sglang.srt.function_call.core_types import ToolCallItem
from sglang.srt.function_call.llama32_detector import Llama32Detector
from sglang.srt.function_call.mistral_detector import MistralDetector
from sglang.srt.function_call.qwen25_detector import Qwen25Detector

logger = logging.getLogger(__name__)


class JsonArrayDetector(BaseFormatDetector):
    """Reads the output of ``tool_choice_json_schema``-constrained decoding.

    The whole output is one JSON array ``[{"name": ..., "parameters": {...}}, ...]``
    with no marker. Not a ``--tool-call-parser`` choice: it is what required/named
    ``tool_choice`` produces with any model.
    """

    start_markers: ClassVar[tuple[str, ...]] = ()
    region_open: ClassVar[str] = "["
    call_separator: ClassVar[str | None] = ","
    region_close: ClassVar[str | None] = "]"
    implicit_start: ClassVar[bool] = True


# --tool-call-parser name -> detector class (upstream: FunctionCallParser.ToolCallParserEnum).
TOOL_CALL_PARSERS: dict[str, type[BaseFormatDetector]] = {
    "llama3": Llama32Detector,
    "mistral": MistralDetector,
    "qwen": Qwen25Detector,  # Qwen 3 uses the Qwen 2.5 format
    "qwen25": Qwen25Detector,
}


class FunctionCallParser:
    """Tool-call parsing for one response of one request.

    Create one per response (it holds the streaming state). With no tools every text
    is normal text, as upstream.
    """

    ToolCallParserEnum: ClassVar[dict[str, type[BaseFormatDetector]]] = TOOL_CALL_PARSERS

    def __init__(self, tools: Sequence[ToolSpec], tool_call_parser: str) -> None:
        detector_class = TOOL_CALL_PARSERS.get(tool_call_parser)
        if detector_class is None:
            raise ValueError(
                f"Unsupported tool_call_parser: {tool_call_parser!r}; "
                f"choose one of {', '.join(sorted(TOOL_CALL_PARSERS))}"
            )
        self.tools: list[ToolSpec] = list(tools or [])
        self.detector: BaseFormatDetector = detector_class()

    @classmethod
    def for_tool_choice(cls, tools: Sequence[ToolSpec]) -> FunctionCallParser:
        """A parser for output constrained by ``tool_choice_json_schema`` (streaming too)."""
        parser = cls.__new__(cls)
        parser.tools = list(tools or [])
        parser.detector = JsonArrayDetector()
        return parser

    def has_tool_call(self, text: str) -> bool:
        if not self.tools:
            return False
        return self.detector.has_tool_call(text)

    def parse_non_stream(self, full_text: str) -> tuple[str, list[ToolCallItem]]:
        """(normal text, calls) of a complete output; calls are numbered 0..n-1."""
        if not self.tools:
            return full_text, []
        result = self.detector.detect_and_parse(full_text, self.tools)
        return result.normal_text, result.calls

    def parse_stream_chunk(self, chunk_text: str) -> tuple[str, list[ToolCallItem]]:
        """(normal text delta, call items) for newly generated text.

        Per call: first an item with ``name`` and ``parameters == ""``, then items with
        ``name is None`` whose ``parameters`` concatenate to the arguments JSON.
        """
        if not self.tools:
            return chunk_text, []
        result = self.detector.parse_streaming_increment(chunk_text, self.tools)
        return result.normal_text, result.calls

    def parse_stream_end(self) -> tuple[str, list[ToolCallItem]]:
        """Call once when the stream ends: releases text held back at the end
        (a possible marker prefix, trailing whitespace)."""
        if not self.tools:
            return "", []
        result = self.detector.finish(self.tools)
        return result.normal_text, result.calls


# ---- tool_choice = "required" / named function -----------------------------------------


def _named_function(tool_choice: Any) -> str | None:
    """The function name of ``{"type": "function", "function": {"name": ...}}``."""
    function = tool_choice.get("function") if isinstance(tool_choice, Mapping) else getattr(tool_choice, "function", None)
    name = function.get("name") if isinstance(function, Mapping) else getattr(function, "name", None)
    return name if isinstance(name, str) else None


def _call_item_schema(tool: ToolSpec) -> dict[str, Any]:
    parameters = tool_parameters_schema(tool) or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": [tool_function_name(tool)]},
            "parameters": parameters,
        },
        "required": ["name", "parameters"],
        # Exactly these two keys: grammar backends (xgrammar) close objects by default
        # anyway; saying so keeps the schema and what is generated in agreement.
        "additionalProperties": False,
    }


def _merged_defs(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The tools' ``$defs``, hoisted to the root where ``#/$defs/...`` refs resolve."""
    merged: dict[str, Any] = {}
    for tool in tools:
        defs = (tool_parameters_schema(tool) or {}).get("$defs") or {}
        for key, schema in defs.items():
            if key in merged and merged[key] != schema:
                raise ValueError(f"Tool definition {key!r} has multiple schemas, which is not supported.")
            merged[key] = schema
    return merged


def tool_choice_json_schema(
    tools: Sequence[ToolSpec], tool_choice: Any, parallel_tool_calls: bool = True
) -> dict[str, Any]:
    """JSON schema constraining the output to a non-empty array of calls.

    ``tool_choice="required"``: each item is any of the tools,
    ``{"name": <tool name>, "parameters": <its parameters schema>}``. A named function
    (``{"type": "function", "function": {"name": "x"}}``): every item is a call of
    ``x``. ``parallel_tool_calls=False`` allows exactly one call. Raises ValueError when
    there is nothing to constrain to (no tools, unknown name, "auto"/"none").
    """
    if tool_choice == "required":
        chosen = [t for t in tools if tool_function_name(t)]
        if not chosen:
            raise ValueError('tool_choice "required" needs at least one tool')
        items: dict[str, Any] = {"type": "object", "anyOf": [_call_item_schema(t) for t in chosen]}
    else:
        name = _named_function(tool_choice)
        if name is None:
            raise ValueError(f"tool_choice {tool_choice!r} does not constrain the output")
        chosen = [t for t in tools if tool_function_name(t) == name]
        if not chosen:
            raise ValueError(f"tool_choice names function {name!r}, which is not in tools")
        chosen = chosen[:1]
        items = _call_item_schema(chosen[0])
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": items}
    if not parallel_tool_calls:
        schema["maxItems"] = 1
    defs = _merged_defs(chosen)
    if defs:
        schema["$defs"] = defs
    return schema


def parse_tool_choice_output(text: str, tools: Sequence[ToolSpec] | None = None) -> list[ToolCallItem]:
    """Calls in the output of ``tool_choice_json_schema``-constrained decoding.

    Returns an empty list when the text is not a JSON array of calls (e.g. cut off by
    ``max_tokens``), so the caller can return it as content. With ``tools`` given,
    calls of functions not among them are dropped.
    """
    try:
        data = json.loads(text)
    except ValueError:
        logger.warning("Constrained tool-call output is not valid JSON: %r", text[:200])
        return []
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return []
    known = tool_names(tools) if tools is not None else None
    calls: list[ToolCallItem] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            logger.warning("Ignoring malformed tool call: %r", item)
            continue
        name = item["name"]
        if known is not None and name not in known:
            logger.warning("Model attempted to call undefined function: %s", name)
            continue
        calls.append(ToolCallItem(len(calls), name, dump_arguments(arguments_of(item))))
    return calls
