"""Tool-call ("function calling") parsing of model output, per model family.

Names follow upstream SGLang's ``sglang.srt.function_call`` package; see
``function_call_parser`` for the entry points.
"""
from sglang.srt.function_call.base_detector import BaseFormatDetector
from sglang.srt.function_call.core_types import StreamingParseResult, ToolCallItem
from sglang.srt.function_call.function_call_parser import (
    TOOL_CALL_PARSERS,
    FunctionCallParser,
    JsonArrayDetector,
    parse_tool_choice_output,
    tool_choice_json_schema,
)
from sglang.srt.function_call.llama32_detector import Llama32Detector
from sglang.srt.function_call.mistral_detector import MistralDetector
from sglang.srt.function_call.qwen25_detector import Qwen25Detector

__all__ = [
    "TOOL_CALL_PARSERS",
    "BaseFormatDetector",
    "FunctionCallParser",
    "JsonArrayDetector",
    "Llama32Detector",
    "MistralDetector",
    "Qwen25Detector",
    "StreamingParseResult",
    "ToolCallItem",
    "parse_tool_choice_output",
    "tool_choice_json_schema",
]
