"""One request never hurts another, against a real server (bundled SmolLM2 on CPU):
poison values beside a victim stream, admission against the context and the KV pool,
duplicate request ids and capture slots, unknown fields, privacy over HTTP, and 48
capturing streams with a third of the clients disconnecting."""
from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import httpx
import pytest

from e2e_server import RunningServer, start_server

pytestmark = pytest.mark.slow

MSG = [{"role": "user", "content": "Write a long story about a river."}]
CAP = {"return_attention_tokens": True, "top_k_attention": 4, "attention_capture_layers": "auto"}


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    s = start_server(["--return-attention-tokens", "--attention-max-concurrent-capture", "2",
                      "--max-running-requests", "64", "--served-model-name", "smol"])
    yield s
    if s.proc.poll() is None:
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait()


def _client(srv: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=120)


def _load(srv: RunningServer) -> dict[str, Any]:
    with _client(srv) as c:
        info = c.get("/get_server_info").json()
    return {**info["load"], "capture_active": info["capture_active"], "max_total_num_tokens": info["max_total_num_tokens"]}


def _wait_idle(srv: RunningServer, timeout: float = 60) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        ld = _load(srv)
        if ld["num_running"] == 0 and ld["num_waiting"] == 0 and ld["capture_active"] == 0:
            return ld
        assert time.time() < deadline, f"not idle: {ld}"
        time.sleep(0.2)


def _events(lines: Iterator[str]) -> Iterator[Any]:
    for line in lines:
        if line.startswith("data: "):
            yield "[DONE]" if line == "data: [DONE]" else json.loads(line[6:])


def _stream_chat(srv: RunningServer, body: dict[str, Any]) -> list[Any]:
    with _client(srv) as c, c.stream("POST", "/v1/chat/completions",
                                     json={"model": "smol", "messages": MSG, "stream": True, **body}) as r:
        assert r.status_code == 200, r.read()
        return list(_events(r.iter_lines()))


POISON = [
    {"temperature": 1e-40}, {"temperature": 1e-38}, {"repetition_penalty": 1e-300},
    {"temperature": 1.0, "repetition_penalty": 1e-300, "top_p": 5e-324}, {"temperature": 100, "min_p": 1.0},
    {"frequency_penalty": 2.0, "presence_penalty": -2.0, "top_k": 2 ** 62},
]


def test_poison_values_never_end_a_victim_stream(srv: RunningServer) -> None:
    n = 24
    victim: dict[str, Any] = {}

    def run_victim() -> None:
        victim["events"] = _stream_chat(srv, {"max_tokens": n, "ignore_eos": True, "temperature": 0,
                                              "stream_options": {"include_usage": True}})

    t = threading.Thread(target=run_victim)
    t.start()
    time.sleep(0.3)
    with _client(srv) as c:
        for p in POISON:  # each batched with the victim: they are valid, so each answers 200
            r = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 3, **p})
            assert r.status_code == 200, (p, r.text)
            r = c.post("/generate", json={"text": "Hello", "sampling_params": {"max_new_tokens": 3, **p}})
            assert r.status_code == 200, (p, r.text)
    t.join(timeout=120)
    events = victim["events"]
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1] if isinstance(e, dict))
    assert events[-2]["usage"]["completion_tokens"] == n


def test_requests_that_can_never_fit_are_refused_at_once(srv: RunningServer) -> None:
    ctx_len = 8192
    with _client(srv) as c:
        t0 = time.time()
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": ctx_len})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
        assert "context length" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_completion_tokens": ctx_len})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_completion_tokens"
        r = c.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": ctx_len}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "sampling_params.max_new_tokens"
        r = c.post("/v1/completions", json={"model": "smol", "prompt": "word " * 9000, "max_tokens": 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
        # found by the schema fuzzer: echo decoded the ids before they were checked (500)
        r = c.post("/v1/completions", json={"model": "smol", "prompt": [2 ** 32], "max_tokens": 1, "echo": True})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
        r = c.post("/generate", json={"input_ids": [1] * 9000, "sampling_params": {"max_new_tokens": 1}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input_ids"
        assert time.time() - t0 < 30  # refused, not run for minutes
        # max_tokens unset on chat means "the rest of the context": accepted
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "stop": ["."], "temperature": 0})
        assert r.status_code == 200
    assert _load(srv)["max_total_num_tokens"] >= ctx_len  # the pool holds one full-context request


def test_duplicate_rid_touches_nothing_of_the_first(srv: RunningServer) -> None:
    _wait_idle(srv)
    body = {"model": "smol", "messages": MSG, "max_tokens": 400, "ignore_eos": True, "stream": True, "rid": "dup",
            **CAP}
    with _client(srv) as c, c.stream("POST", "/v1/chat/completions", json=body) as first:
        events = _events(first.iter_lines())  # held: dropping the iterator would close the stream
        next(events)
        r = c.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "rid"
        assert _load(srv)["capture_active"] == 1  # the duplicate released its own slot only
        # the cap of 2 still admits exactly one more capturing request
        r = c.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2, "rid": "other"})
        assert r.status_code == 200, r.text
        with c.stream("POST", "/v1/chat/completions", json={**body, "rid": "second"}) as second:
            second_events = _events(second.iter_lines())
            next(second_events)
            third = c.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2, "rid": "third"})
            assert third.status_code == 429
        # the first stream is unharmed
        tail = list(events)
    assert tail[-1] == "[DONE]"
    chunks = [e for e in tail if isinstance(e, dict)]
    assert not any("error" in e for e in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert _wait_idle(srv)["capture_active"] == 0


@pytest.mark.parametrize("field", ["attention_window", "attention_stride", "top_k_atention", "return_attention"])
def test_unknown_fields_are_refused_naming_them(srv: RunningServer, field: str) -> None:
    with _client(srv) as c:
        for path, body in (("/v1/chat/completions", {"model": "smol", "messages": MSG}),
                           ("/v1/completions", {"model": "smol", "prompt": "Hi"}), ("/generate", {"text": "Hi"})):
            r = c.post(path, json={**body, field: 4})
            assert r.status_code == 400 and r.json()["error"]["param"] == field, (path, r.text)
        # an unknown field set to null says nothing: accepted (clients echo whole messages back)
        r = c.post("/v1/chat/completions", json={"model": "smol", "max_tokens": 1, field: None,
                                                 "messages": [{"role": "user", "content": "hi", "refusal": None}]})
        assert r.status_code == 200, r.text


def test_privacy_over_http(srv: RunningServer) -> None:
    secret = "zebra-alpha-7421"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "system", "content": f"The code is {secret}."},
            {"role": "user", "content": "What is the code?"}]
    with _client(srv) as c:
        r = c.post("/v1/chat/completions", json={"model": "smol", "messages": msgs, "max_tokens": 4, "ignore_eos": True,
                                                 "attention_mask_system_prompt": True, **CAP})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        prompt = choice["attention_prompt_tokens"]
        n = [p["masked"] for p in prompt].index(False)
        assert "zebra" not in "".join(p["text"] for p in prompt[n:])
        assert all("id" not in p and "text" not in p for p in prompt[:n])
        assert all(pos >= n for e in choice["attention_tokens"] for pos in e["token_positions"])
        # a mask past the whole prompt: every prompt position is masked, none appears anywhere
        r = c.post("/generate", json={"text": "The quick brown fox", "sampling_params": {"max_new_tokens": 3},
                                      "attention_mask_prefix": 1000, **CAP, "include_prompt_attention": True})
        assert r.status_code == 200, r.text
        meta = r.json()["meta_info"]
        L = meta["prompt_tokens"]
        assert [p["masked"] for p in meta["attention_prompt_tokens"]] == [True] * L
        for e in meta["attention_tokens"]:
            assert all(pos >= L for pos in e["token_positions"])
            assert not e.get("prompt")


def test_48_capturing_streams_with_disconnects_free_everything(srv: RunningServer) -> None:
    _wait_idle(srv)
    rng = random.Random(7)
    plans = [(i, rng.random() < 1 / 3, rng.randint(1, 6)) for i in range(48)]
    fp = {"return_attention_tokens": True, "attention_fingerprint_mode": True, "attention_capture_layers": "auto"}

    def one(plan: tuple[int, bool, int]) -> str:
        i, leave, after = plan
        body = {"text": f"Story {i}: once upon a time", "stream": True,
                "sampling_params": {"max_new_tokens": 16, "ignore_eos": True}, **(fp if i % 2 else {})}
        with _client(srv) as c, c.stream("POST", "/generate", json=body) as r:
            if r.status_code == 429:  # the capture cap (2) turns most capturing requests away: by design
                return "429"
            assert r.status_code == 200
            for k, ev in enumerate(_events(r.iter_lines())):
                if leave and k >= after:
                    return "left"  # closing the connection mid-stream
                if ev == "[DONE]":
                    return "done"
                assert "error" not in ev, ev
        return "cut"

    with ThreadPoolExecutor(48) as pool:
        outcomes = list(pool.map(one, plans))
    assert "cut" not in outcomes and outcomes.count("done") >= 16 and "left" in outcomes
    ld = _wait_idle(srv, timeout=60)
    assert ld["num_running"] == 0 and ld["num_waiting"] == 0 and ld["capture_active"] == 0
    assert ld["kv_used_tokens"] == 0  # nothing locked: only the evictable prefix cache holds slots
    with _client(srv) as c:
        assert c.post("/flush_cache").status_code == 200
        assert c.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 2}}).status_code == 200


def test_upstream_fields_accepted_only_when_off(srv: RunningServer) -> None:
    """sglang-router re-serializes chats with "return_hidden_states": false: harmless; true
    asks for a feature this server lacks: 400 naming it."""
    with _client(srv) as c:
        for path, body in (("/v1/chat/completions", {"model": "smol", "messages": MSG, "max_tokens": 1}),
                           ("/generate", {"text": "Hi", "sampling_params": {"max_new_tokens": 1}})):
            assert c.post(path, json={**body, "return_hidden_states": False}).status_code == 200
            r = c.post(path, json={**body, "return_hidden_states": True})
            assert r.status_code == 400 and r.json()["error"]["param"] == "return_hidden_states"


def test_return_text_in_logprobs_and_model_root(srv: RunningServer) -> None:
    """return_text_in_logprobs: false sends None as each logprob's text (upstream's shape);
    /v1/models/{id} carries root like the list."""
    body = {"text": "Hi", "sampling_params": {"max_new_tokens": 3, "temperature": 0}, "return_logprob": True,
            "top_logprobs_num": 2}
    with _client(srv) as c:
        with_text = c.post("/generate", json=body).json()["meta_info"]
        without = c.post("/generate", json={**body, "return_text_in_logprobs": False}).json()["meta_info"]
        assert all(isinstance(x[2], str) for x in with_text["output_token_logprobs"])
        assert [x[:2] for x in without["output_token_logprobs"]] == [x[:2] for x in with_text["output_token_logprobs"]]
        assert all(x[2] is None for x in without["output_token_logprobs"])
        assert all(a[2] is None for row in without["output_top_logprobs"] for a in row)
        streamed = [json.loads(line[6:]) for line in c.post("/generate", json={
            **body, "return_text_in_logprobs": False, "stream": True}).text.splitlines()
            if line.startswith("data: {")]
        assert all(x[2] is None for ev in streamed for x in ev["meta_info"].get("output_token_logprobs", []))
        # streamed logprobs accumulate like text: the last event holds every token's
        last = streamed[-1]["meta_info"]
        assert [x[:2] for x in last["output_token_logprobs"]] == [x[:2] for x in with_text["output_token_logprobs"]]
        assert len(last["output_top_logprobs"]) == 3
        one = c.get("/v1/models/smol").json()
        assert one["root"] == c.get("/v1/models").json()["data"][0]["root"] and one["root"]


def test_n_parallel_samples_each_with_its_own_capture(srv: RunningServer) -> None:
    """n > 1 on chat (openai client, streamed and not), completions and /generate: n
    choices, seeded samples that differ, each choice with its own attention entries, one
    capture slot for the whole request, and the prompt prefilled once (radix cache)."""
    import openai

    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0, timeout=120)
    cap = {"return_attention_tokens": True, "top_k_attention": 3, "attention_capture_layers": "last"}
    msgs = [{"role": "user", "content": "Tell me a short story about the sea and a lighthouse keeper."}]
    r = client.chat.completions.create(model="smol", messages=msgs, n=3, max_tokens=8, temperature=1.2, seed=5,
                                       extra_body={"ignore_eos": True, **cap})
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) > 1  # seeds 5, 6, 7: different samples
    assert r.usage.completion_tokens == 24 and r.usage.prompt_tokens < 60  # the prompt counted once
    for c in r.choices:
        extra = c.model_extra
        assert [t["step"] for t in extra["attention_output_tokens"]] == list(range(8))
        assert len(extra["attention_tokens"]) == 8 and extra["attention_prompt_tokens"]
    again = client.chat.completions.create(model="smol", messages=msgs, n=3, max_tokens=8, temperature=1.2, seed=5,
                                           extra_body={"ignore_eos": True})
    assert [c.message.content for c in again.choices] == texts  # reproducible
    # streamed: every choice finishes, with its own deltas and entries
    per: dict[int, list[str]] = {0: [], 1: [], 2: []}
    entries: dict[int, int] = {0: 0, 1: 0, 2: 0}
    finished = set()
    for chunk in client.chat.completions.create(model="smol", messages=msgs, n=3, max_tokens=6, temperature=0,
                                                stream=True, extra_body={"ignore_eos": True, **cap}):
        for ch in chunk.choices:
            per[ch.index].append(ch.delta.content or "")
            entries[ch.index] += len((ch.model_extra or {}).get("attention_tokens") or [])
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1, 2} and entries == {0: 6, 1: 6, 2: 6}
    assert len({"".join(v) for v in per.values()}) == 1  # greedy: the same text three times
    with _client(srv) as c:
        body = c.post("/v1/completions", json={"model": "smol", "prompt": ["Hello", "Goodbye"], "n": 2,
                                               "max_tokens": 3, "temperature": 0, "ignore_eos": True}).json()
        assert [ch["index"] for ch in body["choices"]] == [0, 1, 2, 3]
        assert body["choices"][0]["text"] == body["choices"][1]["text"] != body["choices"][2]["text"]
        assert c.post("/flush_cache").status_code == 200
        text = "The lighthouse keeper watched the grey sea every night, waiting for"
        out = c.post("/generate", json={"text": text, "sampling_params": {"max_new_tokens": 4, "n": 3,
                                                                         "temperature": 0}}).json()
        assert isinstance(out, list) and len(out) == 3 and len({o["text"] for o in out}) == 1
        cached = sorted(o["meta_info"]["cached_tokens"] for o in out)
        L = out[0]["meta_info"]["prompt_tokens"]
        assert cached == [0, L - 1, L - 1]  # one prefill; the other samples found the prompt cached
        r2 = c.post("/generate", json={"text": "Hello", "sampling_params": {"max_new_tokens": 4, "n": 65}})
        assert r2.status_code == 400 and r2.json()["error"]["param"] == "sampling_params.n"
    assert _wait_idle(srv)["capture_active"] == 0


def test_logit_bias_and_min_tokens_over_http(srv: RunningServer) -> None:
    """logit_bias (OpenAI) and min_tokens (SGLang's extra_body) work instead of a 400 or a
    silent ignore; bad values are a 400 naming the field."""
    import openai

    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0, timeout=120)
    r = client.chat.completions.create(model="smol", messages=MSG, max_tokens=4, temperature=0,
                                       logit_bias={"1000": 100}, extra_body={"ignore_eos": True})
    assert r.choices[0].message.content == client.post(
        "/detokenize", cast_to=object, body={"tokens": [1000] * 4})["text"]
    r = client.completions.create(model="smol", prompt="Hi", max_tokens=5, temperature=0,
                                  extra_body={"min_tokens": 5, "stop_token_ids": [2]})
    assert r.usage.completion_tokens == 5
    with _client(srv) as c:
        for body, param in (({"logit_bias": {"99999999": 1}}, "logit_bias"), ({"logit_bias": {"1": 500}}, "logit_bias"),
                            ({"min_tokens": 9, "max_tokens": 3}, "min_tokens")):
            bad = c.post("/v1/chat/completions", json={"model": "smol", "messages": MSG, "max_tokens": 3, **body})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text
        g = c.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 3, "min_new_tokens": 3,
                                                                       "logit_bias": {"1000": 100}}}).json()
        assert g["output_ids"] == [1000] * 3


def test_zz_killed_front_end_leaves_no_orphan(srv: RunningServer) -> None:
    """SIGKILL the HTTP process mid-stream: the scheduler, blocked on sending to nobody,
    notices and exits instead of holding the model's memory as an orphan."""
    import psutil

    children = psutil.Process(srv.proc.pid).children(recursive=True)
    assert children

    def stream() -> None:
        try:
            _stream_chat(srv, {"max_tokens": 2000, "ignore_eos": True})
        except Exception:  # noqa: BLE001 - the server is killed under it
            pass

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    time.sleep(2.0)
    srv.proc.kill()
    srv.proc.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"orphans: {[p.pid for p in alive]}"
