"""Structured outputs, tool calls, stop_regex and prompt logprobs through a real server, with the
official openai client and raw /generate in upstream SGLang's shapes."""
from __future__ import annotations

import json
import math
import os
import re
import signal
from typing import Iterator

import jsonschema
import openai
import pytest

from e2e_server import API_KEY, RunningServer, start_server

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0,
                                                                          "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    srv = start_server(["--served-model-name", "smol", "--api-key", API_KEY, "--max-running-requests", "40",
                        "--tool-call-parser", "qwen25"])
    yield srv
    if srv.proc.poll() is None:
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()


def oai(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=180)


def _msg(what: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Describe {what} as JSON with a name and an age."}]


def test_response_format_json_schema_streaming_and_not(server):
    c = oai(server)
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for i, who in enumerate(["a teacher", "my grandmother", "a pilot"]):
        r = c.chat.completions.create(model="smol", messages=_msg(who), response_format=rf, max_tokens=80,
                                      temperature=0.7, seed=i)
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
    parts = []
    for ev in c.chat.completions.create(model="smol", messages=_msg("a child"), response_format=rf, max_tokens=80,
                                        stream=True):
        if ev.choices and ev.choices[0].delta.content:
            parts.append(ev.choices[0].delta.content)
    jsonschema.validate(json.loads("".join(parts)), PERSON)


def test_json_object_and_extra_body_constraints(server):
    c = oai(server)
    r = c.chat.completions.create(model="smol", messages=_msg("a cat"), response_format={"type": "json_object"},
                                  max_tokens=120)
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), (dict, list))
    r = c.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Is the sky blue?"}],
                                  max_tokens=20, extra_body={"regex": r"(Yes|No), [a-z ]{1,20}\."})
    assert re.fullmatch(r"(Yes|No), [a-z ]{1,20}\.", r.choices[0].message.content)
    r = c.completions.create(model="smol", prompt="My favourite colour is", max_tokens=10,
                             extra_body={"ebnf": 'root ::= " " ("red" | "green" | "blue") "!"'})
    assert r.choices[0].text in (" red!", " green!", " blue!")
    r = c.completions.create(model="smol", prompt="A person:", max_tokens=80,
                             extra_body={"response_format": {"type": "json_schema",
                                                             "json_schema": {"name": "p", "schema": PERSON}}})
    jsonschema.validate(json.loads(r.choices[0].text), PERSON)


def test_structural_tag(server):
    c = oai(server)
    rf = {"type": "structural_tag", "triggers": ["<function="],
          "structures": [{"begin": "<function=get_weather>", "schema": PERSON, "end": "</function>"}]}
    r = c.chat.completions.create(
        model="smol", max_tokens=80, response_format=rf,
        messages=[{"role": "user", "content": "Call <function=get_weather> with a JSON argument, then stop."}])
    text = r.choices[0].message.content
    for m in re.finditer(r"<function=get_weather>(.*?)</function>", text, re.S):
        jsonschema.validate(json.loads(m.group(1)), PERSON)


def test_generate_sampling_params_constraints(server):
    with server.client() as h:
        body = {"text": "Answer yes or no:", "sampling_params": {"max_new_tokens": 8, "regex": "(yes|no)"}}
        r = h.post("/generate", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["text"] in ("yes", "no") and r.json()["meta_info"]["finish_reason"]["type"] == "stop"
        body = {"text": "A person:", "sampling_params": {"max_new_tokens": 80, "json_schema": json.dumps(PERSON),
                                                         "temperature": 0.5, "n": 3}}
        r = h.post("/generate", json=body)
        assert r.status_code == 200 and len(r.json()) == 3
        for item in r.json():
            jsonschema.validate(json.loads(item["text"]), PERSON)


def test_bad_constraints_are_400_naming_the_field(server):
    with server.client() as h:
        for body, param in (
            ({"model": "smol", "messages": _msg("x"), "response_format": {"type": "json_schema",
                                                                         "json_schema": {"name": "x"}}},
             "response_format.json_schema.schema"),
            ({"model": "smol", "messages": _msg("x"), "response_format": {"type": "xml"}}, "response_format.type"),
            ({"model": "smol", "messages": _msg("x"), "regex": "(unclosed"}, "regex"),
            ({"model": "smol", "messages": _msg("x"), "regex": "a", "ebnf": "root ::= \"a\""}, "ebnf"),
            ({"model": "smol", "messages": _msg("x"), "json_schema": "{\"type\": 3}"}, "json_schema"),
            ({"model": "smol", "messages": _msg("x"), "stop_regex": "("}, "stop_regex"),
            ({"model": "smol", "messages": _msg("x"), "custom_logit_processor": "x"}, "custom_logit_processor"),
        ):
            r = h.post("/v1/chat/completions", json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["param"] == param, r.json()
        r = h.post("/generate", json={"text": "hi", "sampling_params": {"ebnf": "root ::= nothing_defined"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "sampling_params.ebnf"
        # and the server still serves
        assert h.post("/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 2}}).status_code == 200


def test_stop_regex(server):
    c = oai(server)
    r = c.completions.create(model="smol", prompt="Count:", max_tokens=30,
                             extra_body={"regex": " 1 2 3 4 5 6 7 8 9", "stop_regex": r"[4-5] [5-6]"})
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == " 1 2 3 "  # cut where the pattern matched


def test_prompt_logprobs_generate_and_echo(server):
    with server.client() as h:
        r = h.post("/generate", json={"text": "The capital of France is", "return_logprob": True,
                                      "logprob_start_len": 0, "top_logprobs_num": 2,
                                      "sampling_params": {"max_new_tokens": 0}})
        assert r.status_code == 200, r.text
        meta = r.json()["meta_info"]
        ids = h.post("/tokenize", json={"prompt": "The capital of France is"}).json()["tokens"]
        assert [t for _, t, _ in meta["input_token_logprobs"]] == ids
        assert meta["input_token_logprobs"][0][0] is None and meta["input_top_logprobs"][0] is None
        assert all(lp <= 0 for lp, _, _ in meta["input_token_logprobs"][1:])
        assert len(meta["input_top_logprobs"][1]) == 2 and meta["output_token_logprobs"] == []
        r = h.post("/generate", json={"text": "The capital of France is", "return_logprob": True,
                                      "logprob_start_len": 99, "sampling_params": {"max_new_tokens": 1}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "logprob_start_len"
    c = oai(server)
    r = c.completions.create(model="smol", prompt="The capital of France is", max_tokens=3, echo=True, logprobs=1,
                             temperature=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text.startswith("The capital of France is")
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert len(lp.tokens) == len(ids) + 3 and "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[len(ids)] == len("The capital of France is")
    # the streamed echo carries the same prompt block
    tokens = []
    for ev in c.completions.create(model="smol", prompt="The capital of France is", max_tokens=3, echo=True,
                                   logprobs=1, temperature=0, stream=True):
        if ev.choices and ev.choices[0].logprobs:
            tokens += ev.choices[0].logprobs.tokens
    assert tokens == lp.tokens


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 10}},
                                       "required": ["zone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def _check_call(name: str, arguments: str) -> None:
    tool = {"get_weather": WEATHER, "get_time": TIME}[name]
    jsonschema.validate(json.loads(arguments), tool["function"]["parameters"])


def test_tool_choice_required_and_named(server):
    c = oai(server)
    r = c.chat.completions.create(model="smol", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                  max_tokens=120, parallel_tool_calls=False)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and len(ch.message.tool_calls) == 1, ch
    call = ch.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    _check_call(call.function.name, call.function.arguments)
    # named, streamed: the first delta of a call carries id and name, later ones argument text
    deltas, reasons = [], []
    for ev in c.chat.completions.create(model="smol", messages=ASK, tools=[WEATHER, TIME], max_tokens=120,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                        stream=True):
        for choice in ev.choices:
            deltas += choice.delta.tool_calls or []
            reasons.append(choice.finish_reason)
    assert reasons[-1] == "tool_calls"
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    assert all(d.id is None and d.function.name is None for d in deltas[1:] if d.index == deltas[0].index)
    args = "".join(d.function.arguments or "" for d in deltas if d.index == 0)
    _check_call("get_weather", args)


def test_tool_choice_auto_parses_the_model_format(server):
    """The model writes Qwen's <tool_call> format (forced here by a regex, so the test does
    not depend on a 135M model's judgement); the qwen25 parser turns it into calls."""
    c = oai(server)
    fmt = r'<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "(Paris|Rome)", "unit": "celsius"\}\}\n</tool_call>'
    r = c.chat.completions.create(model="smol", messages=ASK, tools=[WEATHER], max_tokens=150,
                                  extra_body={"regex": r"Let me check\." + fmt})
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content == "Let me check."
    assert ch.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(ch.message.tool_calls[0].function.arguments)["unit"] == "celsius"
    content, deltas = "", []
    for ev in c.chat.completions.create(model="smol", messages=ASK, tools=[WEATHER], max_tokens=150, stream=True,
                                        extra_body={"regex": r"Let me check\." + fmt}):
        for choice in ev.choices:
            content += choice.delta.content or ""
            deltas += choice.delta.tool_calls or []
    assert content == "Let me check." and "<tool_call>" not in content
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == \
        json.loads(ch.message.tool_calls[0].function.arguments)
    # tool_choice none: the same output stays text
    r = c.chat.completions.create(model="smol", messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=150,
                                  extra_body={"regex": fmt})
    assert r.choices[0].message.tool_calls is None and "<tool_call>" in r.choices[0].message.content


def test_tool_conversation_round_trip_and_errors(server):
    c = oai(server)
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                             "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    r = c.chat.completions.create(model="smol", messages=history, tools=[WEATHER], max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    with server.client() as h:
        for body, param in (
            ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
            ({"tool_choice": "required"}, "tool_choice"),
            ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
             "tool_choice"),
            ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools.0.function.name"),
            ({"tools": [WEATHER, WEATHER]}, "tools"),
            ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ):
            r = h.post("/v1/chat/completions", json={"model": "smol", "messages": ASK, "max_tokens": 4, **body})
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["param"] == param, r.json()


def test_score_matches_prompt_logprobs(server):
    with server.client() as h:
        tok = lambda t: h.post("/tokenize", json={"prompt": t, "add_special_tokens": False}).json()["tokens"]  # noqa: E731
        labels = [tok(" Paris")[0], tok(" London")[0], tok(" Rome")[0]]
        query, items = "The capital of France is", [" the city of", " known as"]
        r = h.post("/v1/score", json={"query": query, "items": items, "label_token_ids": labels, "model": "smol"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "scoring" and len(body["scores"]) == 2 and body["usage"]["completion_tokens"] == 0
        for item, row in zip(items, body["scores"]):
            ids = tok(query) + tok(item)  # the query encodes as /generate would encode it
            for label, got in zip(labels, row):
                ref = h.post("/generate", json={"input_ids": ids + [label], "return_logprob": True,
                                                "logprob_start_len": len(ids) - 1, "sampling_params": {
                                                    "max_new_tokens": 0}}).json()["meta_info"]
                want = math.exp(ref["input_token_logprobs"][1][0])  # label given query + item
                assert got == pytest.approx(want, rel=1e-3, abs=1e-7)
        soft = h.post("/v1/score", json={"query": query, "items": items, "label_token_ids": labels,
                                         "apply_softmax": True}).json()["scores"]
        for raw, norm in zip(body["scores"], soft):
            assert sum(norm) == pytest.approx(1.0) and norm == pytest.approx([x / sum(raw) for x in raw], rel=1e-4)
        first = h.post("/v1/score", json={"query": " is the capital.", "items": ["Paris"], "item_first": True,
                                          "label_token_ids": labels}).json()["scores"]
        assert len(first) == 1 and len(first[0]) == 3
        for body, param in (({"items": [], "label_token_ids": labels}, "items"),
                            ({"items": ["x"], "label_token_ids": []}, "label_token_ids"),
                            ({"items": ["x"], "label_token_ids": [10 ** 7]}, "label_token_ids"),
                            ({"query": "q", "items": [[1, 2]], "label_token_ids": labels}, "items")):
            r = h.post("/v1/score", json=body)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_refused_fields_leave_nothing_behind(server):
    """A request refused for token_ids_logprob or custom_logit_processor holds no state:
    its rid is free for the next request, which runs."""
    with server.client() as h:
        for extra, param in (({"token_ids_logprob": [10 ** 7]}, "token_ids_logprob"),
                             ({"custom_logit_processor": "{}"}, "custom_logit_processor")):
            body = {"text": "hi", "rid": f"again-{param}", "sampling_params": {"max_new_tokens": 2}}
            for _ in range(2):  # the same rid twice: refused for the field both times, not for the rid
                r = h.post("/generate", json={**body, **extra})
                assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
            r = h.post("/generate", json=body)
            assert r.status_code == 200, r.text
