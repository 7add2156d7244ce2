"""Reasoning split and overload over HTTP on a real server (tiny Llama, --reasoning-parser deepseek-r1).

DeepSeek-R1 output starts inside thinking, so a reply that never closes the block (a
random-weight model never writes </think>) is a reply cut off inside thinking: all of it
is reasoning_content, content is empty, streaming and non-streaming agree, and the same
text comes back unsplit with separate_reasoning=false.
"""
from __future__ import annotations

import json
import os
import signal
from typing import Iterator

import httpx
import pytest
from e2e_server import RunningServer, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def r1_server(tiny_models: dict[str, str]) -> Iterator[RunningServer]:
    srv = start_server(["--model-path", tiny_models["llama"], "--reasoning-parser", "deepseek-r1", "--return-attention-tokens",
                        "--max-running-requests", "1", "--max-queued-requests", "1"])
    yield srv
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(30)
        except Exception:
            os.killpg(srv.proc.pid, signal.SIGKILL)


BODY = {"model": "default", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 12,
        "temperature": 0, "ignore_eos": True}


def test_cut_off_inside_thinking(r1_server: RunningServer) -> None:
    with httpx.Client(base_url=r1_server.url, timeout=120) as c:
        plain = c.post("/v1/chat/completions", json=BODY).json()
        msg = plain["choices"][0]["message"]
        assert plain["choices"][0]["finish_reason"] == "length"
        assert msg["content"] == "" and msg["reasoning_content"]
        raw = c.post("/v1/chat/completions", json={**BODY, "separate_reasoning": False}).json()
        assert raw["choices"][0]["message"]["content"] == msg["reasoning_content"]
        assert raw["choices"][0]["message"]["reasoning_content"] is None

        r = c.post("/v1/chat/completions", json={**BODY, "stream": True})
        events = r.text.strip().split("\n\n")
        assert events[-1] == "data: [DONE]"
        deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in events[:-1]]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == msg["reasoning_content"]
        assert "".join(d.get("content", "") for d in deltas) == ""

        held = c.post("/v1/chat/completions", json={**BODY, "stream": True, "stream_reasoning": False})
        events = held.text.strip().split("\n\n")
        pieces = [json.loads(e[6:])["choices"][0]["delta"].get("reasoning_content") for e in events[:-1]]
        assert [p for p in pieces if p] == [msg["reasoning_content"]]  # one piece, at the end


def test_capture_entries_tagged_think_while_thinking(r1_server: RunningServer) -> None:
    with httpx.Client(base_url=r1_server.url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json={**BODY, "max_tokens": 4, "return_attention_tokens": True})
        assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert [t["think_phase"] for t in choice["attention_output_tokens"]] == ["think"] * 4
    assert choice["attention_tokens"] and all(e["think_phase"] == "think" for e in choice["attention_tokens"])


def test_overloaded_is_503_and_server_recovers(r1_server: RunningServer) -> None:
    """1 running + 1 queued at most: a third concurrent request is refused with 503."""
    from concurrent.futures import ThreadPoolExecutor

    long_body = {**BODY, "max_tokens": 200}

    def post(_: int) -> int:
        return httpx.post(f"{r1_server.url}/v1/chat/completions", json=long_body, timeout=300).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(post, range(4)))
    assert 503 in codes and 200 in codes
    r = httpx.post(f"{r1_server.url}/v1/chat/completions", json=BODY, timeout=120)
    assert r.status_code == 200
