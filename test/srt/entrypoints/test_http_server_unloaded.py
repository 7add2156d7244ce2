"""The app before the engine is attached: probes, errors, API key and CORS.

These run the real FastAPI app in-process (starlette's TestClient); the end-to-end
tests against a running server with a model are in test_server_e2e.py.
"""
from __future__ import annotations

from fastapi.testclient import TestClient

from sglang.srt.entrypoints.http_server import ServerState, create_app
from sglang.srt.server_args import ServerArgs


def client(**kw) -> TestClient:
    return TestClient(create_app(ServerState(ServerArgs(**kw))))


def test_health_is_503_until_loaded_and_generation_refused() -> None:
    c = client()
    r = c.get("/health")
    assert r.status_code == 503
    assert "not loaded" in r.json()["error"]["message"]
    r = c.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == 503
    assert c.get("/metrics").status_code == 200  # scrapers work while loading


def test_load_failure_is_reported_on_health() -> None:
    state = ServerState(ServerArgs())
    state.load_error = "ValueError: unsupported architecture 'Foo'"
    r = TestClient(create_app(state)).get("/health")
    assert r.status_code == 503 and "unsupported architecture" in r.json()["error"]["message"]


def test_capabilities_before_load() -> None:
    body = client(return_attention_tokens=True, reasoning_parser="qwen3").get("/v1/attention/capabilities").json()
    assert body["supported"] is True and body["ready"] is False
    assert body["features"]["think_segmentation"] is True


def test_api_key_required_except_probes() -> None:
    c = client(api_key="k1")
    assert c.get("/v1/models").status_code == 401
    r = c.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert c.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 503  # past auth, not loaded
    assert c.get("/health").status_code == 503  # probes skip the key


def test_cors_preflight_for_dashboard() -> None:
    c = client(attention_cors_origins=["http://localhost:3001"], api_key="k")
    r = c.options("/v1/chat/completions", headers={"Origin": "http://localhost:3001",
                                                   "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "content-type,x-attention-api-key"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:3001"
    r = c.options("/v1/chat/completions", headers={"Origin": "http://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert r.status_code == 400
