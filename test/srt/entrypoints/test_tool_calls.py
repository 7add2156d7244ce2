"""tool_choice planning and the streamed tool_calls delta shapes (no server needed)."""
from __future__ import annotations

import json

import pytest

from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest
from sglang.srt.entrypoints.openai.tool_calls import ToolCallStream, plan_tools
from sglang.srt.server_args import TOOL_CALL_PARSER_NAMES

TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}


def _req(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **kw})


def test_auto_needs_a_parser_and_none_is_text():
    with pytest.raises(APIError) as e:
        plan_tools(_req(tools=[TOOL]), None)
    assert e.value.param == "tool_choice" and "--tool-call-parser" in e.value.message
    assert plan_tools(_req(tools=[TOOL], tool_choice="none"), None) is None
    assert plan_tools(_req(tools=[TOOL]), "qwen25").schema is None


def test_forced_choices_constrain_to_an_array_of_calls():
    plan = plan_tools(_req(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}},
                           parallel_tool_calls=False), None)
    schema = json.loads(plan.schema)
    assert schema["type"] == "array" and schema["minItems"] == 1 and schema["maxItems"] == 1
    assert schema["items"]["properties"]["name"]["enum"] == ["f"]


def test_stream_deltas_have_openai_shape():
    plan = plan_tools(_req(tools=[TOOL], tool_choice="required"), None)
    stream = ToolCallStream(plan.new_parser())
    text = '[{"name": "f", "parameters": {"x": 12}}, {"name": "f", "parameters": {"x": 3}}]'
    deltas = []
    for i in range(0, len(text), 4):
        content, d = stream.feed(text[i:i + 4], final=i + 4 >= len(text))
        assert content == ""
        deltas += d
    firsts = [d for d in deltas if "id" in d]
    assert [d["index"] for d in firsts] == [0, 1] and all(d["function"]["name"] == "f" for d in firsts)
    assert len({d["id"] for d in firsts}) == 2 and stream.called
    for k, want in ((0, {"x": 12}), (1, {"x": 3})):
        assert json.loads("".join(d["function"]["arguments"] for d in deltas if d["index"] == k)) == want


def test_parser_names_match_the_registry():
    from sglang.srt.function_call.function_call_parser import TOOL_CALL_PARSERS

    assert set(TOOL_CALL_PARSER_NAMES) == set(TOOL_CALL_PARSERS)
