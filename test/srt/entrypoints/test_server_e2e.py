"""End to end against a real server process (bundled SmolLM2 on CPU).

One server for the module (see conftest.py): --api-key, --reasoning-parser qwen3,
capture enabled behind --attention-api-key with at most 1 capturing request at once.
The last test sends SIGTERM and checks that no child process survives.
"""
from __future__ import annotations

import json
import math
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import psutil
import pytest

from e2e_server import API_KEY, ATTN_KEY, RunningServer

pytestmark = pytest.mark.slow

MSG = [{"role": "user", "content": "Name three colors."}]


def oai(server: RunningServer, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, default_headers=headers or None,
                         max_retries=0, timeout=120)


def sse_events(raw: bytes) -> list[str]:
    """Split an SSE body strictly: every event is one 'data: ...' line ended by a blank line."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), "stream must end with a blank line"
    events = text[:-2].split("\n\n")
    for e in events:
        assert e.startswith("data: ") and "\n" not in e, f"malformed event {e!r}"
    return [e[6:] for e in events]


def load(server: RunningServer) -> dict[str, Any]:
    with server.client() as c:
        return c.get("/get_server_info").json()["load"]


def wait_idle(server: RunningServer, timeout: float = 30) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        ld = load(server)
        if ld["num_running"] == 0 and ld["num_waiting"] == 0:
            return ld
        assert time.time() < deadline, f"requests still running: {ld}"
        time.sleep(0.2)


def test_health_was_503_before_ready(server: RunningServer) -> None:
    assert server.health_codes[-1] == 200
    assert 503 in server.health_codes  # answered (not refused) while the model loaded


def test_info_endpoints(server: RunningServer) -> None:
    with server.client() as c:
        models = c.get("/v1/models").json()
        assert models["data"][0]["id"] == "smol"
        info = c.get("/get_model_info").json()
        assert info["num_layers"] == 30 and info["is_generation"] is True
        srv = c.get("/get_server_info").json()
        assert srv["api_key"] == "***" and srv["port"] == server.port
        caps = c.get("/v1/attention/capabilities").json()
        assert caps["supported"] and caps["max_layers"] == 30 and caps["features"]["think_segmentation"]
        assert caps["guardrails"]["requires_api_key"] and caps["guardrails"]["max_concurrent_capture"] == 1


def test_openai_chat_plain_and_stream(server: RunningServer) -> None:
    client = oai(server)
    r = client.chat.completions.create(model="smol", messages=MSG, max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.usage.completion_tokens <= 8 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.chat.completions.create(model="smol", messages=MSG, max_tokens=8, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content  # greedy: streaming and plain agree
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_openai_completions_plain_stream_and_logprobs(server: RunningServer) -> None:
    client = oai(server)
    r = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=6, temperature=0,
                                  logprobs=2)
    assert r.choices[0].text
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.completion_tokens
    assert all(x <= 0 for x in lp.token_logprobs) and all(len(t) <= 2 for t in lp.top_logprobs)
    s = list(client.completions.create(model="smol", prompt="The capital of France is", max_tokens=6, temperature=0,
                                       stream=True))
    assert "".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text


def test_chat_logprobs_and_extra_body(server: RunningServer) -> None:
    r = oai(server).chat.completions.create(
        model="smol", messages=MSG, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3,
        extra_body={"separate_reasoning": True, "chat_template_kwargs": {"enable_thinking": False}, "top_k": 1})
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob >= c.top_logprobs[-1].logprob for c in content)
    assert getattr(r.choices[0].message, "reasoning_content", None) is None  # SmolLM2 does not think


def test_raw_sse_framing_and_done(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 6, "stream": True,
                                                 "stream_options": {"include_usage": True}})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(ch["object"] == "chat.completion.chunk" and ch["id"] == chunks[0]["id"] for ch in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_native_generate(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post("/generate", json={"text": "Hello, my name is", "sampling_params": {"max_new_tokens": 5,
                                                                                        "temperature": 0}})
        assert r.status_code == 200
        body = r.json()
        assert body["text"] and len(body["output_ids"]) == body["meta_info"]["completion_tokens"] <= 5
        r = c.post("/generate", json={"input_ids": [1, 2, 3], "stream": True,
                                      "sampling_params": {"max_new_tokens": 4, "ignore_eos": True}})
        events = sse_events(r.content)
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert len(last["output_ids"]) == 4 and last["meta_info"]["finish_reason"]["type"] == "length"


def test_batches_on_completions_and_generate(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post("/v1/completions", json={"model": "smol", "prompt": ["Hello", "The sky is"], "max_tokens": 3,
                                            "temperature": 0, "ignore_eos": True}).json()
        assert [ch["index"] for ch in r["choices"]] == [0, 1] and r["usage"]["completion_tokens"] == 6
        s = c.post("/v1/completions", json={"model": "smol", "prompt": [[1, 2, 3], [4, 5]], "max_tokens": 3,
                                            "ignore_eos": True, "stream": True})
        events = sse_events(s.content)
        assert events[-1] == "[DONE]"
        idx = {json.loads(e)["choices"][0]["index"] for e in events[:-1]}
        assert idx == {0, 1}
        g = c.post("/generate", json={"text": ["a", "b", "c"], "sampling_params": {"max_new_tokens": 2}}).json()
        assert isinstance(g, list) and len(g) == 3 and all(len(x["output_ids"]) <= 2 for x in g)


def test_capture_through_openai_client(server: RunningServer) -> None:
    r = oai(server, **{"X-Attention-API-Key": ATTN_KEY}).chat.completions.create(
        model="smol", messages=MSG, max_tokens=3, extra_body={**CAPTURE, "ignore_eos": True})
    extra = r.choices[0].model_extra
    assert len(extra["attention_tokens"]) == 3 * 2 and len(extra["attention_output_tokens"]) == 3
    e = extra["attention_tokens"][0]
    total = sum(__import__("math").exp(x - e["logsumexp_candidates"]) for x in e["topk_logits"])
    assert 0 < total <= 1 + 1e-5 and abs(sum(e["attention_scores"]) - 1) < 1e-4


def test_logit_lens_through_openai_client(server: RunningServer) -> None:
    body = dict(model="smol", messages=MSG, max_tokens=3, temperature=0)
    lens = {"return_logit_lens": True, "logit_lens_layers": [10, 29], "logit_lens_top_k": 3,
            "attention_fingerprint_mode": True, "ignore_eos": True}
    r = oai(server, **{"X-Attention-API-Key": ATTN_KEY}).chat.completions.create(**body, extra_body=lens)
    entries = r.choices[0].model_extra["logit_lens"]
    assert [(e["decode_step"], e["layer_id"]) for e in entries] == [(d, l) for d in range(3) for l in (10, 29)]
    out_ids = [t["id"] for t in r.choices[0].model_extra["attention_output_tokens"]]
    for e in entries:
        assert len(e["top_tokens"]) == 3 and e["token"]["id"] == out_ids[e["decode_step"]]
        assert all(isinstance(t["text"], str) and 0 <= t["prob"] <= 1 for t in e["top_tokens"])
        if e["layer_id"] == 29:  # greedy: the produced token is the last layer's top token
            assert e["token"]["rank"] == 0 and e["top_tokens"][0]["id"] == e["token"]["id"]
    # streamed: each chunk carries the lens entries of its own tokens
    streamed = []
    for ev in oai(server, **{"X-Attention-API-Key": ATTN_KEY}).chat.completions.create(
            **body, stream=True, extra_body=lens):
        if ev.choices:
            streamed += (ev.choices[0].model_extra or {}).get("logit_lens") or []
    assert [(e["decode_step"], e["layer_id"], e["token"]["id"]) for e in streamed] == \
        [(e["decode_step"], e["layer_id"], e["token"]["id"]) for e in entries]
    with server.client() as c:  # without the attention key: refused like any capture
        r = c.post("/v1/chat/completions", json={**body, **lens})
        assert r.status_code == 401


def test_per_head_capture_over_http(server: RunningServer) -> None:
    with server.client(**{"X-Attention-API-Key": ATTN_KEY}) as c:
        r = c.post("/generate", json={"text": "Hello there", "return_attention_tokens": True,
                                      "attention_capture_heads": [0, 3], "attention_capture_layers": [5],
                                      "top_k_attention": 3, "sampling_params": {"max_new_tokens": 2}})
        assert r.status_code == 200, r.text
        entries = r.json()["meta_info"]["attention_tokens"]
        assert sorted((e["decode_step"], e["head_id"]) for e in entries) == [(0, 0), (0, 3), (1, 0), (1, 3)]
        assert all(e["layer_id"] == 5 and len(e["token_positions"]) == min(3, e["query_position"] + 1) for e in entries)


def test_dense_attention_replay(server: RunningServer) -> None:
    import base64
    import io

    import numpy as np

    with server.client(**{"X-Attention-API-Key": ATTN_KEY}) as c:
        ids = c.post("/tokenize", json={"prompt": "The quick brown fox jumps over the lazy dog"}).json()["tokens"]
        r = c.post("/v1/attention/replay", json={"input_ids": ids, "layers": [29], "heads": "each"})
        assert r.status_code == 200, r.text
        body = r.json()
        a = np.frombuffer(base64.b64decode(body["data"]), "<f2").reshape(body["shape"]).astype(np.float64)
        assert body["shape"] == [1, 9, len(ids), len(ids)] and body["heads"] == list(range(9))
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=5e-3)  # every row is a distribution
        assert np.all(np.triu(a[0, 0], 1) == 0)  # causal
        # the capture's exact top-3 of the last position (decode step 0) is the replay's last row
        g = c.post("/generate", json={"input_ids": ids, "return_attention_tokens": True, "top_k_attention": 3,
                                      "attention_capture_layers": [29], "sampling_params": {"max_new_tokens": 1}})
        e = g.json()["meta_info"]["attention_tokens"][0]
        row = a[0, :, -1].mean(0)
        assert e["token_positions"] == np.argsort(-row, kind="stable")[:3].tolist()
        np.testing.assert_allclose([math.exp(x - e["logsumexp_candidates"]) for x in e["topk_logits"]],
                                   row[e["token_positions"]], atol=2e-3)
        r = c.post("/v1/attention/replay", json={"input_ids": ids, "layers": "auto", "heads": "mean",
                                                 "format": "npy", "attention_mask_prefix": 2})
        m = np.load(io.BytesIO(r.content))
        assert m.shape == (4, 1, len(ids), len(ids)) and not m[:, :, :2].any() and not m[:, :, :, :2].any()
        for body, param in (({"input_ids": list(range(3000))}, "input_ids"), ({"input_ids": ids, "heads": [9]}, "heads"),
                            ({"text": "x" * 20000, "layers": "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"}, "text")):
            r = c.post("/v1/attention/replay", json=body)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    with server.client() as c:  # without the attention key
        assert c.post("/v1/attention/replay", json={"input_ids": ids}).status_code == 401


def test_32_concurrent_streams_then_kv_free(server: RunningServer) -> None:
    def one(i: int) -> tuple[list[str], int]:
        with server.client() as c:
            r = c.post("/v1/chat/completions", json={
                "model": "smol", "messages": [{"role": "user", "content": f"Count to {i}."}], "max_tokens": 12,
                "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}})
            assert r.status_code == 200
            events = sse_events(r.content)
            return events, json.loads(events[-2])["usage"]["completion_tokens"]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    for events, n in results:
        assert events[-1] == "[DONE]" and n == 12
    wait_idle(server)
    with server.client() as c:
        assert c.post("/flush_cache").status_code == 200
    assert load(server)["kv_used_tokens"] == 0  # every slot came back (the prefix cache was flushed too)


def test_client_disconnect_aborts_request(server: RunningServer) -> None:
    wait_idle(server)
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        with c.stream("POST", "/v1/chat/completions", json={
                "model": "smol", "messages": MSG, "max_tokens": 4000, "ignore_eos": True, "stream": True}) as r:
            seen = 0
            for line in r.iter_lines():
                if line.startswith("data: "):
                    seen += 1
                if seen >= 3:
                    break  # leaving the block closes the connection mid-stream
    ld = wait_idle(server, timeout=20)  # far sooner than 4000 tokens would take
    assert ld["num_running"] == 0
    with server.client() as c:
        c.post("/flush_cache")
    assert load(server)["kv_used_tokens"] == 0


def test_non_streaming_client_timeout_aborts_request(server: RunningServer) -> None:
    wait_idle(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/chat/completions", timeout=httpx.Timeout(3.0, connect=10.0),
                   headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"model": "smol", "messages": MSG, "max_tokens": 4000, "ignore_eos": True})
    wait_idle(server, timeout=20)  # the server noticed the closed connection and aborted


def test_health_generate(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/health_generate", timeout=60).status_code == 200


BAD_INPUTS = [
    ({"messages": MSG, "max_tokens": "ten"}, "max_tokens"),
    ({"messages": MSG, "max_tokens": -1}, "max_tokens"),
    ({"messages": MSG, "max_tokens": 10 ** 9}, "max_tokens"),
    ({"messages": MSG, "temperature": -0.5}, "temperature"),
    ({"messages": MSG, "temperature": 1e9}, "temperature"),
    ({"messages": MSG, "top_p": 0}, "top_p"),
    ({"messages": MSG, "n": 0}, "n"),
    ({"messages": MSG, "n": 65}, "n"),
    ({"messages": MSG, "stream": "yes"}, "stream"),
    ({"messages": MSG, "stop": 5}, "stop"),
    ({"messages": MSG, "seed": -3}, "seed"),
    ({"messages": MSG, "logprobs": True, "top_logprobs": 99}, "top_logprobs"),
    ({"messages": []}, "messages"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user"}], "max_tokens": 3, "temperature": {"a": 1}}, "temperature"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages.0.content"),
    ({"messages": MSG, "top_k_attention": 5, "return_attention_tokens": "yes"}, "return_attention_tokens"),
    ({"messages": [{"role": "user", "content": "word " * 9000}]}, None),  # longer than the context
]


@pytest.mark.parametrize("body,param", BAD_INPUTS, ids=[f"bad{i}" for i in range(len(BAD_INPUTS))])
def test_bad_inputs_are_400_naming_the_field(server: RunningServer, body: dict, param: str | None) -> None:
    with server.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "smol", **body})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
        if param is not None:
            assert err["param"] == param and param.split(".")[0] in err["message"]
        else:
            assert "context length" in err["message"]


def test_invalid_json_and_utf8_and_native_errors(server: RunningServer) -> None:
    with server.client() as c:
        for raw in (b"{not json", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', b"", b"[1, 2]"):
            r = c.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == 400
        r = c.post("/generate", json={"input_ids": [10 ** 7]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input_ids"
        r = c.post("/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 2, "bogus": 1}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "sampling_params.bogus"
        r = c.post("/generate", json={})
        assert r.status_code == 400 and r.json()["error"]["param"] == "text"
        r = c.post("/v1/completions", json={"model": "smol", "prompt": ""})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        # ... and the server still serves.
        ok = c.post("/v1/completions", json={"model": "smol", "prompt": "Hi", "max_tokens": 2})
        assert ok.status_code == 200


def test_unknown_model_404_and_api_key_401(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "gpt-9", "messages": MSG},
                   headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # probes need no key


def test_metrics_exposition(server: RunningServer) -> None:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for name in ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:generation_tokens_total",
                 "sglang:token_usage", "sglang:time_to_first_token_seconds_bucket",
                 "sglang:inter_token_latency_seconds_bucket", "sglang:capture_sidecar_dropped_total"):
        assert name in text, name
    count = [ln for ln in text.splitlines() if ln.startswith("sglang:time_to_first_token_seconds_count")]
    assert float(count[0].split()[-1]) >= 1


# ---- capture over HTTP ----------------------------------------------------------------
CAPTURE = {"return_attention_tokens": True, "top_k_attention": 3, "attention_capture_layers": [0, 29]}


def test_capture_needs_attention_key(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 2, **CAPTURE})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        # generation without capture still works without the key
        assert c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 2}).status_code == 200
        r = c.post("/v1/chat/completions", headers={"X-Attention-API-Key": ATTN_KEY},
                   json={"model": "smol", "messages": MSG, "max_tokens": 2, **CAPTURE, "attention_capture_layers": [30]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "attention_capture_layers"


def test_capture_stream_places_entries_per_chunk(server: RunningServer) -> None:
    with server.client(**{"X-Attention-API-Key": ATTN_KEY}) as c:
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 5, "ignore_eos": True,
                                                 "stream": True, **CAPTURE})
        assert r.status_code == 200, r.text
        chunks = [json.loads(e) for e in sse_events(r.content)[:-1]]
    choices = [ch["choices"][0] for ch in chunks if ch["choices"]]
    assert "attention_prompt_tokens" in choices[0]
    prompt = choices[0]["attention_prompt_tokens"]
    assert [p["position"] for p in prompt] == list(range(len(prompt)))
    steps = [t["step"] for ch in choices for t in ch["attention_output_tokens"]]
    assert steps == list(range(5))
    for ch in choices:
        mine = {t["step"] for t in ch["attention_output_tokens"]}
        for e in ch["attention_tokens"]:
            assert e["decode_step"] in mine  # entries travel with their own token
            assert e["think_phase"] == "output"  # qwen3 parser on; SmolLM2 never thinks
            assert len(e["token_positions"]) == 3 and e["layer_id"] in (0, 29)
    assert all(t["think_phase"] == "output" for ch in choices for t in ch["attention_output_tokens"])
    assert sum(len(ch["attention_tokens"]) for ch in choices) == 5 * 2  # 2 layers x 5 steps


def test_system_prompt_masking(server: RunningServer) -> None:
    msgs = [{"role": "system", "content": "You are a secret agent. Never reveal the code 7421."},
            {"role": "user", "content": "What is the code?"}]
    with server.client(**{"X-Attention-API-Key": ATTN_KEY}) as c:
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": msgs, "max_tokens": 4, "ignore_eos": True,
                                                 "attention_mask_system_prompt": True, **CAPTURE})
        assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    masked = [p["masked"] for p in choice["attention_prompt_tokens"]]
    n = masked.index(False)
    assert n > 10 and not any(masked[n:])  # exactly the system turn, as a prefix
    prompt = choice["attention_prompt_tokens"]
    assert all("text" not in p and "id" not in p for p in prompt[:n])  # private: no ids, no text
    assert [p["text"] for p in prompt[n:n + 2]] == ["<|im_start|>", "user"]  # the user turn starts right after
    for e in choice["attention_tokens"]:
        assert all(pos >= n for pos in e["token_positions"])  # no entry points into the system prompt


def test_capture_concurrency_limit_429(server: RunningServer) -> None:
    wait_idle(server)
    headers = {"Authorization": f"Bearer {API_KEY}", "X-Attention-API-Key": ATTN_KEY}
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as c:
        with c.stream("POST", "/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 4000,
                                                            "ignore_eos": True, "stream": True, **CAPTURE}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # keep the iterator alive: dropping it would close the stream
            while not next(lines).startswith("data: "):
                pass
            second = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 2,
                                                          **CAPTURE})
            assert second.status_code == 429 and second.json()["error"]["type"] == "rate_limit_error"
    wait_idle(server)
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as c:  # the slot was released
        assert c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 2,
                                                    **CAPTURE}).status_code == 200


def test_zz_sigterm_leaves_no_child_process(server: RunningServer) -> None:
    parent = psutil.Process(server.proc.pid)
    children = parent.children(recursive=True)
    assert children, "the scheduler runs in a child process"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left: {[p.pid for p in alive]}"
