"""How a server treats bad input and what a huge prompt costs the other streams.

    python -m sglang.bench_robustness                      # starts a server (bundled model) itself
    python -m sglang.bench_robustness --url http://127.0.0.1:30000

Prints JSON with:
* ``bad_inputs``: every bad request of a fixed catalogue (malformed JSON, wrong types, out-of-range
  and poison sampling values, unknown fields, oversized prompts and bodies, duplicate ids, a
  stalled body), its HTTP status, and the count per status; no 5xx is expected.
* ``stall``: a victim stream's inter-token gaps alone, and again while four 1 MB prompts
  arrive (same run), with their ratio.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from collections import Counter
from typing import Any

import httpx

from sglang.bench_utils import against_server

MSG = [{"role": "user", "content": "Write a long story about a river."}]
BIG = "lorem ipsum dolor sit amet " * 38_836  # ~1 MiB of text


def catalogue() -> list[tuple[str, str, Any]]:
    """(name, path, body): body is a dict (JSON) or raw bytes."""
    chat = {"model": "default", "messages": MSG, "max_tokens": 2}
    out: list[tuple[str, str, Any]] = [
        ("invalid json", "/v1/chat/completions", b"{not json"),
        ("invalid utf-8", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\xff"}]}'),
        ("empty body", "/v1/chat/completions", b""),
        ("json array", "/v1/chat/completions", b"[1, 2]"),
        ("nested 100k", "/generate", b"[" * 100_000 + b"]" * 100_000),
        ("huge integer", "/generate", b'{"text": "hi", "sampling_params": {"max_new_tokens": 1' + b"0" * 400 + b"}}"),
        ("messages empty", "/v1/chat/completions", {**chat, "messages": []}),
        ("role wizard", "/v1/chat/completions", {**chat, "messages": [{"role": "wizard", "content": "x"}]}),
        ("max_tokens string", "/v1/chat/completions", {**chat, "max_tokens": "ten"}),
        ("max_tokens negative", "/v1/chat/completions", {**chat, "max_tokens": -1}),
        ("max_tokens past context", "/v1/chat/completions", {**chat, "max_tokens": 10 ** 6}),
        ("temperature negative", "/v1/chat/completions", {**chat, "temperature": -1}),
        ("temperature 1e9", "/v1/chat/completions", {**chat, "temperature": 1e9}),
        ("top_p 0", "/v1/chat/completions", {**chat, "top_p": 0}),
        ("top_k 0", "/v1/chat/completions", {**chat, "top_k": 0}),
        ("repetition_penalty 3", "/v1/chat/completions", {**chat, "repetition_penalty": 3}),
        ("unknown field", "/v1/chat/completions", {**chat, "attention_window": 4}),
        ("misspelled capture field", "/v1/chat/completions", {**chat, "top_k_atention": 4}),
        ("unknown sampling param", "/generate", {"text": "hi", "sampling_params": {"bogus": 1}}),
        ("token id past vocab", "/generate", {"input_ids": [10 ** 7]}),
        ("token id 2^32 echo", "/v1/completions", {"model": "default", "prompt": [2 ** 32], "echo": True}),
        ("prompt 1 MB", "/v1/completions", {"model": "default", "prompt": BIG, "max_tokens": 1}),
        ("capture on batch", "/generate", {"text": ["a", "b"], "return_attention_tokens": True}),
        ("capture layer 999", "/generate", {"text": "a", "return_attention_tokens": True,
                                             "attention_capture_layers": [999]}),
        ("unknown model", "/v1/chat/completions", {**chat, "model": "gpt-9"}),
    ]
    for p in ({"temperature": 1e-40}, {"temperature": 1e-38}, {"repetition_penalty": 1e-300},
              {"temperature": 1, "top_p": 5e-324}, {"frequency_penalty": 2, "presence_penalty": -2, "top_k": 2 ** 62}):
        out.append((f"poison {p}", "/v1/chat/completions", {**chat, **p}))
    return out


def _send(c: httpx.Client, path: str, body: Any) -> int:
    if isinstance(body, bytes):
        return c.post(path, content=body, headers={"content-type": "application/json"}).status_code
    return c.post(path, json=body).status_code


def _raw_status(url: str, request: bytes, wait: float = 0.0) -> int:
    """Send raw bytes over a socket (bodies httpx would not send) and read the status."""
    host, port = url.split("://")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(request)
        if wait:
            time.sleep(wait)
        return int(s.recv(64).split(b" ")[1])


def bad_inputs(url: str) -> dict[str, Any]:
    rows = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for name, path, body in catalogue():
            rows.append({"input": name, "path": path, "status": _send(c, path, body)})
        big = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 629145600\r\n\r\n"
        rows.append({"input": "Content-Length 600 MB", "path": "/generate", "status": _raw_status(url, big)})
        # a stalled body is answered after the read timeout (30 s by default)
        stall = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        rows.append({"input": "stalled body", "path": "/generate", "status": _raw_status(url, stall)})
        rows.append({"input": "GET on a POST route", "path": "/v1/chat/completions",
                     "status": c.get("/v1/chat/completions").status_code})
        # a duplicate rid while the first runs
        body = {"model": "default", "messages": MSG, "max_tokens": 64, "ignore_eos": True, "stream": True,
                "rid": "bench-dup"}
        with c.stream("POST", "/v1/chat/completions", json=body) as first:
            lines = first.iter_lines()
            next(lines)
            rows.append({"input": "duplicate rid", "path": "/v1/chat/completions",
                         "status": _send(c, "/v1/chat/completions", {**body, "stream": False})})
            rest = list(lines)
        rows.append({"input": "the first request of that rid", "path": "/v1/chat/completions",
                     "status": first.status_code, "completed": "data: [DONE]" in rest})
    return {"rows": rows, "by_status": dict(sorted(Counter(r["status"] for r in rows).items())),
            "server_errors": [r for r in rows if r["status"] >= 500]}


def _victim(url: str, n: int, out: dict[str, Any]) -> None:
    gaps: list[float] = []
    t0 = last = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as c, c.stream("POST", "/v1/chat/completions", json={
            "model": "default", "messages": MSG, "max_tokens": n, "ignore_eos": True, "temperature": 0,
            "stream": True}) as r:
        first = None
        for line in r.iter_lines():
            if line.startswith("data: {"):
                now = time.perf_counter()
                if first is None:
                    first = now - t0
                else:
                    gaps.append(now - last)
                last = now
    out.update(ttft_s=first, gap_p50_s=statistics.median(gaps), gap_max_s=max(gaps),
               gap_p99_s=sorted(gaps)[int(0.99 * (len(gaps) - 1))], tokens=len(gaps) + 1)


def stall(url: str, n: int = 64) -> dict[str, Any]:
    alone: dict[str, Any] = {}
    _victim(url, n, alone)
    busy: dict[str, Any] = {}
    t = threading.Thread(target=_victim, args=(url, n, busy))
    t.start()
    time.sleep(1.0)  # the victim is streaming
    statuses: list[int] = []

    def big(i: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            path, body = [("/v1/completions", {"model": "default", "prompt": BIG, "max_tokens": 1}),
                          ("/v1/chat/completions", {"model": "default", "max_tokens": 1,
                                                    "messages": [{"role": "user", "content": BIG}]}),
                          ("/generate", {"text": BIG, "sampling_params": {"max_new_tokens": 1}})][i % 3]
            statuses.append(c.post(path, json=body).status_code)

    bigs = [threading.Thread(target=big, args=(i,)) for i in range(4)]
    for b in bigs:
        b.start()
    for b in bigs + [t]:
        b.join()
    return {"alone": alone, "with_four_1MB_prompts": busy, "big_prompt_statuses": statuses,
            "gap_max_ratio": busy["gap_max_s"] / alone["gap_max_s"],
            "gap_p50_ratio": busy["gap_p50_s"] / alone["gap_p50_s"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start one with the bundled model)")
    args = ap.parse_args(argv)
    result = against_server(args.url, lambda url: {"bad_inputs": bad_inputs(url), "stall": stall(url)})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
