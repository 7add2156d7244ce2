"""/tokenize, /detokenize (also under /v1) and /version with upstream SGLang's shapes,
on the real app with the default model's real tokenizer (no engine is needed)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

import sglang
from sglang.srt.entrypoints.http_server import ServerState, create_app
from sglang.srt.server_args import ServerArgs


@pytest.fixture(scope="module")
def client(smollm_tokenizer) -> TestClient:
    state = ServerState(ServerArgs(served_model_name="smol"))
    state.attach(SimpleNamespace(tokenizer=smollm_tokenizer, model_info={
        "context_length": 8192, "vocab_size": len(smollm_tokenizer), "num_layers": 30, "num_attention_heads": 9}))
    return TestClient(create_app(state))


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_tokenize_and_detokenize_round_trip(client, smollm_tokenizer, prefix) -> None:
    r = client.post(f"{prefix}/tokenize", json={"model": "smol", "prompt": "Hello world"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tokens"] == smollm_tokenizer.encode("Hello world") and body["count"] == len(body["tokens"])
    assert body["max_model_len"] == 8192
    r = client.post(f"{prefix}/tokenize", json={"prompt": ["a b", "c"], "add_special_tokens": False})
    assert r.json()["count"] == [len(x) for x in r.json()["tokens"]] and len(r.json()["tokens"]) == 2
    r = client.post(f"{prefix}/detokenize", json={"tokens": body["tokens"]})
    assert r.status_code == 200 and r.json() == {"text": "Hello world"}
    r = client.post(f"{prefix}/detokenize", json={"tokens": [body["tokens"], []]})
    assert r.json() == {"text": ["Hello world", ""]}


def test_bad_tokenize_requests_name_their_field(client) -> None:
    for path, body, param in (("/tokenize", {}, "prompt"), ("/tokenize", {"prompt": 5}, "prompt"),
                              ("/tokenize", {"prompt": "x", "bogus": 1}, "bogus"),
                              ("/detokenize", {"tokens": [-1]}, "tokens"), ("/detokenize", {"tokens": [2 ** 40]}, "tokens"),
                              ("/detokenize", {"tokens": ["a"]}, "tokens.0")):
        r = client.post(path, json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (path, body, r.text)
    assert client.post("/tokenize", json={"model": "gpt-9", "prompt": "x"}).status_code == 404


def test_version(client) -> None:
    assert client.get("/version").json() == {"version": sglang.__version__}
