"""Tool calling on /v1/chat/completions: which tools the template sees, how the output is
constrained or parsed, and the OpenAI shapes of the calls (whole and streamed).

- ``tool_choice: "none"``: the template does not see the tools; the output is text.
- ``"auto"`` (the default with tools): the model decides; ``--tool-call-parser`` reads
  the calls out of its output in the model family's format. Without a parser the request
  is refused: the calls could not be told from text.
- ``"required"`` or a named function: decoding is constrained to a JSON array of calls
  (``tool_choice_json_schema``), so it works with any model and needs no parser.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest, ToolCall
from sglang.srt.function_call.core_types import ToolCallItem
from sglang.srt.function_call.function_call_parser import FunctionCallParser, tool_choice_json_schema
from sglang.srt.sampling.sampling_params import GRAMMAR_FIELDS


@dataclass
class ToolPlan:
    tools: list[dict[str, Any]]  # OpenAI tool dicts
    # "required" / named: the JSON schema (text) constraining the output to an array of calls
    schema: str | None
    parser_name: str | None

    @property
    def forced(self) -> bool:
        return self.schema is not None

    def template_tools(self) -> list[dict[str, Any]]:
        """What the chat template gets as ``tools`` (the function definitions, as upstream)."""
        return [t["function"] for t in self.tools]

    def new_parser(self) -> FunctionCallParser:
        if self.forced:
            return FunctionCallParser.for_tool_choice(self.tools)
        assert self.parser_name is not None  # plan_tools refused auto without a parser
        return FunctionCallParser(self.tools, self.parser_name)


def plan_tools(req: ChatCompletionRequest, parser_name: str | None) -> ToolPlan | None:
    """Check the request's tools and tool_choice. None when the response is plain text."""
    choice = req.tool_choice
    if not req.tools:
        if choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice: needs tools", "tool_choice")
        return None
    if choice == "none":
        return None
    names = [t.function.name for t in req.tools]
    if len(set(names)) != len(names):
        raise APIError(400, "tools: function names must be unique", "tools")
    tools = [t.model_dump(exclude_none=True) for t in req.tools]
    forced = choice not in (None, "auto")
    if forced:
        if any(getattr(req, k) is not None for k in GRAMMAR_FIELDS) or \
                (req.response_format is not None and req.response_format.type != "text"):
            raise APIError(400, f"tool_choice: {choice if isinstance(choice, str) else 'a named function'} "
                           "constrains the output itself; it cannot be combined with response_format or "
                           f"{', '.join(GRAMMAR_FIELDS)}", "tool_choice")
        try:
            schema = tool_choice_json_schema(tools, choice if isinstance(choice, str) else choice.model_dump(),
                                             req.parallel_tool_calls)
        except ValueError as e:
            raise APIError(400, f"tool_choice: {e}", "tool_choice") from None
        return ToolPlan(tools, json.dumps(schema), parser_name)
    if parser_name is None:
        raise APIError(400, 'tool_choice: "auto" needs a server started with --tool-call-parser (the format the '
                       'model writes its calls in); or ask for tool_choice "required" or a named function',
                       "tool_choice")
    return ToolPlan(tools, None, parser_name)


def template_call(c: ToolCall) -> dict[str, Any]:
    """An assistant turn's tool call, for the template: arguments as an object (templates
    write them with ``tojson``)."""
    try:
        args: Any = json.loads(c.function.arguments)
    except ValueError:
        args = c.function.arguments
    return {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": args}}


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def message_tool_calls(items: list[ToolCallItem]) -> list[dict[str, Any]]:
    return [{"id": _call_id(), "type": "function", "function": {"name": it.name, "arguments": it.parameters}}
            for it in items]


@dataclass
class ToolCallStream:
    """One choice's streaming state: text in, (content, OpenAI tool_calls deltas) out."""

    parser: FunctionCallParser
    ids: dict[int, str] = field(default_factory=dict)

    def feed(self, text: str, final: bool) -> tuple[str, list[dict[str, Any]]]:
        content, items = self.parser.parse_stream_chunk(text) if text else ("", [])
        if final:
            more, last = self.parser.parse_stream_end()
            content, items = content + more, items + last
        return content, [self._delta(it) for it in items]

    def _delta(self, it: ToolCallItem) -> dict[str, Any]:
        if it.tool_index not in self.ids:  # the call's first delta: its id and name
            self.ids[it.tool_index] = _call_id()
            return {"index": it.tool_index, "id": self.ids[it.tool_index], "type": "function",
                    "function": {"name": it.name, "arguments": it.parameters}}
        return {"index": it.tool_index, "function": {"arguments": it.parameters}}

    @property
    def called(self) -> bool:
        return bool(self.ids)
