"""Tool-call parsing: each format whole and streamed, and the tool_choice constraint.

The streaming tests feed the same output in every chunking (1, 2, 3, 5, 7 characters,
whole, and every split into two pieces) and require exactly what the whole-output
parse gives: the same content and, per tool_index, a name item followed by argument
fragments that concatenate to the same arguments JSON.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import jsonschema
import pytest

from sglang.srt.function_call import (
    TOOL_CALL_PARSERS,
    FunctionCallParser,
    Llama32Detector,
    MistralDetector,
    Qwen25Detector,
    ToolCallItem,
    parse_tool_choice_output,
    tool_choice_json_schema,
)

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Web search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "top_k": {"type": "integer"}},
                "required": ["query"],
            },
        },
    },
]

# Arguments with the characters that trip naive scanners: braces, brackets and
# escaped quotes inside strings, nesting, non-ASCII text.
CALL_A = ("get_weather", {"city": "São Paulo {\"quoted\"} [x]", "unit": "celsius", "note": 'he said "}'})
CALL_B = ("search", {"query": "a}b]c\\", "top_k": 3, "filters": {"site": ["a", {"b": None}]}})
Call = tuple[str, dict[str, Any]]


def obj(name: str, args: dict[str, Any], key: str = "arguments") -> str:
    return json.dumps({"name": name, key: args}, ensure_ascii=False)


def qwen_text(calls: list[Call]) -> str:
    return "\n".join(f"<tool_call>\n{obj(n, a)}\n</tool_call>" for n, a in calls)


def llama_text(calls: list[Call]) -> str:
    return "<|python_tag|>" + "; ".join(obj(n, a, "parameters") for n, a in calls)


def mistral_text(calls: list[Call]) -> str:
    return "[TOOL_CALLS] [" + ", ".join(obj(n, a) for n, a in calls) + "]"


FORMATTERS: dict[str, Callable[[list[Call]], str]] = {
    "qwen25": qwen_text,
    "llama3": llama_text,
    "mistral": mistral_text,
}

# (parser, output, expected content, expected calls)
CASES: list[tuple[str, str, str, list[Call]]] = []
for _parser, _fmt in FORMATTERS.items():
    CASES += [
        (_parser, "Just an answer, a < b and {braces}; no calls.", "Just an answer, a < b and {braces}; no calls.", []),
        (_parser, "Let me check.\n" + _fmt([CALL_A]), "Let me check.", [CALL_A]),
        (_parser, "Two lookups:\n\n" + _fmt([CALL_A, CALL_B]), "Two lookups:", [CALL_A, CALL_B]),
    ]
# Content after the calls (Llama 3 and Mistral regions end where their syntax ends).
CASES += [
    ("qwen25", "Before " + qwen_text([CALL_A, CALL_B]) + "\nAfter.", "Before\nAfter.", [CALL_A, CALL_B]),
    ("qwen25", qwen_text([CALL_A]) + "\n\n", "", [CALL_A]),
    ("qwen25", "Before " + qwen_text([CALL_A]) + "\n \n", "Before", [CALL_A]),
    ("llama3", llama_text([CALL_A]) + " Done.", "Done.", [CALL_A]),
    ("mistral", "Sure. " + mistral_text([CALL_A]) + " Done.", "Sure. Done.", [CALL_A]),
    # Llama 3 without the python tag: an output that starts with a call object.
    ("llama3", "  " + obj(*CALL_A, key="parameters") + ";" + obj(*CALL_B), "", [CALL_A, CALL_B]),
    # ...but a leading JSON object that is not a call is content.
    ("llama3", ' {"answer": 42} is the JSON you asked for', ' {"answer": 42} is the JSON you asked for', []),
]


def as_calls(items: list[ToolCallItem]) -> list[Call]:
    return [(c.name or "", json.loads(c.parameters)) for c in items]


def stream(parser: FunctionCallParser, chunks: list[str]) -> tuple[str, list[ToolCallItem]]:
    """Feed chunks; returns the content and the merged calls, checking the delta shape."""
    content = []
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    for chunk in chunks + [None]:
        text, items = parser.parse_stream_end() if chunk is None else parser.parse_stream_chunk(chunk)
        content.append(text)
        for item in items:
            if item.name is not None:
                # the first item of a call: its name, no arguments yet, a new index
                assert item.parameters == "" and item.tool_index not in names
                assert item.tool_index == len(names)
                names[item.tool_index] = item.name
                args[item.tool_index] = ""
            else:
                assert item.tool_index in names, "arguments before the name"
                args[item.tool_index] += item.parameters
    calls = [ToolCallItem(i, names[i], args[i]) for i in sorted(names)]
    return "".join(content), calls


def chunkings(text: str) -> list[list[str]]:
    out = [[text[i : i + n] for i in range(0, len(text), n)] for n in (1, 2, 3, 5, 7)]
    out.append([text])
    out += [[text[:i], text[i:]] for i in range(1, len(text))]
    return out


@pytest.mark.parametrize("parser_name,text,content,calls", CASES)
def test_non_stream(parser_name: str, text: str, content: str, calls: list[Call]) -> None:
    parser = FunctionCallParser(TOOLS, parser_name)
    normal, items = parser.parse_non_stream(text)
    assert normal == content
    assert as_calls(items) == calls
    assert [c.tool_index for c in items] == list(range(len(calls)))
    # has_tool_call is a cheap "may hold a call" check: for Llama 3, any leading "{"
    if not text.lstrip().startswith("{"):
        assert parser.has_tool_call(text) == bool(calls)


@pytest.mark.parametrize("parser_name,text,content,calls", CASES)
def test_stream_every_chunking_matches_non_stream(
    parser_name: str, text: str, content: str, calls: list[Call]
) -> None:
    for chunks in chunkings(text):
        normal, items = stream(FunctionCallParser(TOOLS, parser_name), chunks)
        assert normal == content, chunks
        assert as_calls(items) == calls, chunks


@pytest.mark.parametrize("parser_name", sorted(FORMATTERS))
def test_arguments_stream_before_the_call_is_complete(parser_name: str) -> None:
    text = FORMATTERS[parser_name]([CALL_A])
    cut = text.index("Paulo")  # inside the arguments
    parser = FunctionCallParser(TOOLS, parser_name)
    _, items = stream_partial(parser, text[:cut])
    assert items[0].name == "get_weather" and items[0].parameters == ""
    streamed = "".join(i.parameters for i in items[1:])
    assert streamed.startswith("{") and "São" in streamed
    _, rest = stream_partial(parser, text[cut:])
    assert json.loads(streamed + "".join(i.parameters for i in rest)) == CALL_A[1]


def stream_partial(parser: FunctionCallParser, text: str) -> tuple[str, list[ToolCallItem]]:
    content, items = "", []
    for ch in text:
        t, c = parser.parse_stream_chunk(ch)
        content += t
        items += c
    return content, items


@pytest.mark.parametrize(
    "parser_name,head,marker_rest",
    [("qwen25", "Hello <tool", "_call>\n"), ("mistral", "Hello [TOOL_", "CALLS] ["), ("llama3", "Hello <|python", "_tag|>")],
)
def test_content_released_unless_it_may_start_a_marker(parser_name: str, head: str, marker_rest: str) -> None:
    parser = FunctionCallParser(TOOLS, parser_name)
    assert parser.parse_stream_chunk("Hel") == ("Hel", [])
    assert parser.parse_stream_chunk(head[3:]) == ("lo", [])  # " <tool" is held back
    assert parser.parse_stream_chunk(marker_rest) == ("", [])
    # a held prefix that never becomes a marker is content after all
    parser = FunctionCallParser(TOOLS, parser_name)
    assert parser.parse_stream_chunk(head) == ("Hello", [])
    assert parser.parse_stream_end() == (head[len("Hello"):], [])


@pytest.mark.parametrize("parser_name", sorted(FORMATTERS))
def test_unknown_function_is_dropped(parser_name: str) -> None:
    unknown = ("delete_everything", {"really": True})
    text = "Ok. " + FORMATTERS[parser_name]([unknown, CALL_B, unknown])
    normal, items = FunctionCallParser(TOOLS, parser_name).parse_non_stream(text)
    assert normal == "Ok."
    assert as_calls(items) == [CALL_B] and items[0].tool_index == 0
    for chunks in chunkings(text)[:6]:
        normal, items = stream(FunctionCallParser(TOOLS, parser_name), chunks)
        assert normal == "Ok." and as_calls(items) == [CALL_B]


def test_unknown_function_dropped_when_arguments_come_first() -> None:
    # key order other than name-first is buffered; the name check still applies
    text = '<tool_call>\n{"arguments": {"x": 1}, "name": "nope"}\n</tool_call>' + qwen_text([CALL_A])
    for chunks in chunkings(text)[:6]:
        normal, items = stream(FunctionCallParser(TOOLS, "qwen25"), chunks)
        assert normal == "" and as_calls(items) == [CALL_A]


@pytest.mark.parametrize(
    "parser_name,text,calls",
    [
        ("llama3", '{"name": "search", "arguments": {"query": "q"}}', [("search", {"query": "q"})]),
        ("llama3", '<|python_tag|>{"name": "search"}', [("search", {})]),
        ("qwen25", '<tool_call>{"arguments": {"query": "q"}, "name": "search"}</tool_call>', [("search", {"query": "q"})]),
        # arguments given as a JSON string (OpenAI's wire shape) become the object
        ("qwen25", '<tool_call>{"name": "search", "arguments": "{\\"query\\": \\"q\\"}"}</tool_call>', [("search", {"query": "q"})]),
        ("mistral", '[TOOL_CALLS][{"name":"search","arguments":{"query":"q"}}]', [("search", {"query": "q"})]),
    ],
)
def test_format_variants(parser_name: str, text: str, calls: list[Call]) -> None:
    assert as_calls(FunctionCallParser(TOOLS, parser_name).parse_non_stream(text)[1]) == calls
    for chunks in chunkings(text)[:6]:
        assert as_calls(stream(FunctionCallParser(TOOLS, parser_name), chunks)[1]) == calls


def test_call_cut_off_by_end_of_output_is_dropped() -> None:
    text = "Checking. " + qwen_text([CALL_A])[:-20]
    assert FunctionCallParser(TOOLS, "qwen25").parse_non_stream(text) == ("Checking.", [])
    # the streamed part was already sent: a name item and arguments not closed
    normal, items = stream(FunctionCallParser(TOOLS, "qwen25"), list(text))
    assert normal == "Checking." and items[0].name == "get_weather"


def test_malformed_block_content_becomes_text() -> None:
    normal, items = FunctionCallParser(TOOLS, "llama3").parse_non_stream("<|python_tag|>print('hi')")
    assert (normal, items) == ("print('hi')", [])


def test_parser_names_and_no_tools() -> None:
    assert {"llama3", "qwen25", "qwen", "mistral"} <= set(TOOL_CALL_PARSERS)
    assert TOOL_CALL_PARSERS["qwen"] is TOOL_CALL_PARSERS["qwen25"] is Qwen25Detector
    assert TOOL_CALL_PARSERS["llama3"] is Llama32Detector
    assert TOOL_CALL_PARSERS["mistral"] is MistralDetector
    assert FunctionCallParser.ToolCallParserEnum is TOOL_CALL_PARSERS
    with pytest.raises(ValueError, match="Unsupported tool_call_parser"):
        FunctionCallParser(TOOLS, "nope")
    text = qwen_text([CALL_A])
    parser = FunctionCallParser([], "qwen25")
    assert parser.parse_non_stream(text) == (text, [])
    assert parser.parse_stream_chunk(text) == (text, [])
    assert not parser.has_tool_call(text)


# ---- tool_choice = "required" / named ------------------------------------------------


def valid(schema: dict[str, Any], output: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(output)


def test_required_schema() -> None:
    schema = tool_choice_json_schema(TOOLS, "required")
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "array" and schema["minItems"] == 1 and "maxItems" not in schema
    assert valid(schema, [{"name": "get_weather", "parameters": {"city": "Paris"}}])
    assert valid(schema, [{"name": "search", "parameters": {"query": "x"}}, {"name": "get_weather", "parameters": {"city": "P"}}])
    for bad in [
        [],  # at least one call
        {"name": "search", "parameters": {"query": "x"}},  # not an array
        [{"name": "nope", "parameters": {}}],  # unknown function
        [{"name": "search", "arguments": {"query": "x"}}],  # the key is "parameters"
        [{"name": "search", "parameters": {}}],  # the tool's own schema applies (query required)
        [{"name": "search", "parameters": {"query": 1}}],
        [{"name": "get_weather", "parameters": {"query": "x"}}],  # another tool's arguments
        [{"name": "search", "parameters": {"query": "x"}, "extra": 1}],
    ]:
        assert not valid(schema, bad), bad
    one = tool_choice_json_schema(TOOLS, "required", parallel_tool_calls=False)
    assert valid(one, [{"name": "search", "parameters": {"query": "x"}}])
    assert not valid(one, [{"name": "search", "parameters": {"query": "x"}}] * 2)


def test_named_schema() -> None:
    choice = {"type": "function", "function": {"name": "search"}}
    schema = tool_choice_json_schema(TOOLS, choice)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert valid(schema, [{"name": "search", "parameters": {"query": "x", "top_k": 2}}])
    assert valid(schema, [{"name": "search", "parameters": {"query": "x"}}] * 2)
    assert not valid(schema, [{"name": "get_weather", "parameters": {"city": "P"}}])
    assert not valid(schema, [])
    with pytest.raises(ValueError, match="not in tools"):
        tool_choice_json_schema(TOOLS, {"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ValueError):
        tool_choice_json_schema(TOOLS, "auto")
    with pytest.raises(ValueError):
        tool_choice_json_schema([], "required")


def test_schema_defs_are_hoisted_to_the_root() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "place",
            "parameters": {
                "type": "object",
                "properties": {"where": {"$ref": "#/$defs/Point"}},
                "required": ["where"],
                "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
            },
        },
    }
    for choice in ("required", {"type": "function", "function": {"name": "place"}}):
        schema = tool_choice_json_schema([tool], choice)
        assert valid(schema, [{"name": "place", "parameters": {"where": {"x": 1}}}])
        assert not valid(schema, [{"name": "place", "parameters": {"where": {"y": 1}}}])
    clash = json.loads(json.dumps(tool))
    clash["function"]["name"] = "other"
    clash["function"]["parameters"]["$defs"]["Point"] = {"type": "string"}
    with pytest.raises(ValueError, match="multiple schemas"):
        tool_choice_json_schema([tool, clash], "required")


def test_parse_tool_choice_output() -> None:
    output = json.dumps(
        [{"name": n, "parameters": a} for n, a in (CALL_A, ("nope", {}), CALL_B)], ensure_ascii=False
    )
    assert valid(tool_choice_json_schema(TOOLS, "required"), [json.loads(output)[0], json.loads(output)[2]])
    calls = parse_tool_choice_output(output, TOOLS)
    assert as_calls(calls) == [CALL_A, CALL_B] and [c.tool_index for c in calls] == [0, 1]
    assert len(parse_tool_choice_output(output)) == 3  # without tools nothing is filtered
    assert parse_tool_choice_output(output[:-5], TOOLS) == []  # cut off: not parseable
    # streamed, in every chunking, the same calls
    for chunks in chunkings(output)[:6]:
        normal, items = stream(FunctionCallParser.for_tool_choice(TOOLS), chunks)
        assert normal == "" and as_calls(items) == [CALL_A, CALL_B]
