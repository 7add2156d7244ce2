"""HTTP hardening: one request never hurts another.

* request bodies: 413 on a Content-Length over the limit before reading a byte, 413 as
  soon as a chunked body passes it (the HTTP process never buffers it), 408 for a client
  that stalls mid-body; bodies within the limit reach the handlers and streaming
  responses still notice a client that leaves;
* 405 answers carry ``Allow``;
* /openapi.json declares the JSON body of every POST endpoint;
* SIGTERM ends open streams with a 503 error event and ``[DONE]``, and waiting requests
  with 503, before the process exits.

The first tests run the middleware and the app in-process; the others use one real
server process (bundled SmolLM2 on CPU, body read timeout 2 s), which the last test stops.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from typing import Any, Iterator

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from e2e_server import RunningServer, start_server
from sglang.srt.entrypoints import http_limits
from sglang.srt.entrypoints.http_limits import BodyLimitMiddleware
from sglang.srt.entrypoints.http_server import GracefulServer, ServerState, create_app
from sglang.srt.server_args import ServerArgs

MiB = 1 << 20
LIMIT = http_limits.MAX_BODY_BYTES


# ---- the middleware alone (ASGI level) ------------------------------------------------

class Recorder:
    """An ASGI app that reads its whole body, then watches for a disconnect."""

    def __init__(self) -> None:
        self.called = False
        self.body = b""
        self.messages: list[dict[str, Any]] = []
        self.after: dict[str, Any] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            m = await receive()
            self.messages.append(m)
            self.body += m.get("body", b"")
            if not m.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        self.after = await receive()  # what a disconnect watcher sees


def scope(method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": "/generate", "headers": headers or [],
            "query_string": b"", "http_version": "1.1"}


def run_asgi(app: Any, sc: dict[str, Any], chunks: list[bytes | None]) -> tuple[list[dict[str, Any]], int]:
    """Run one request; ``None`` in ``chunks`` stalls forever. Returns (sent messages, chunks read)."""
    sent: list[dict[str, Any]] = []
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        if reads < len(chunks):
            c = chunks[reads]
            reads += 1
            if c is None:
                await asyncio.sleep(3600)
            return {"type": "http.request", "body": c, "more_body": reads < len(chunks)}
        reads += 1
        return {"type": "http.disconnect"}

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    asyncio.run(asyncio.wait_for(app(sc, receive, send), 10))
    return sent, reads


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[str, str], dict[str, Any]]:
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_content_length_over_limit_is_413_without_reading_the_body() -> None:
    app = Recorder()
    sent, reads = run_asgi(BodyLimitMiddleware(app),
                           scope(headers=[(b"content-length", str(600 * MiB).encode())]), [b"x" * 100])
    status, headers, body = answer(sent)
    assert (status, reads, app.called) == (413, 0, False)
    assert headers["connection"] == "close"
    assert body["error"]["code"] == 413 and str(LIMIT) in body["error"]["message"]


def test_chunked_body_stops_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "MAX_BODY_BYTES", 1000)
    app = Recorder()
    sent, reads = run_asgi(BodyLimitMiddleware(app), scope(), [b"x" * 400] * 10)
    status, headers, body = answer(sent)
    assert (status, reads, app.called) == (413, 3, False)  # 1200 > 1000 after the third chunk: no fourth read
    assert headers["connection"] == "close" and body["error"]["type"] == "invalid_request_error"


def test_stalled_body_is_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "BODY_READ_TIMEOUT", 0.05)
    app = Recorder()
    t = time.monotonic()
    sent, _ = run_asgi(BodyLimitMiddleware(app), scope(), [b'{"text": ', None])
    status, headers, body = answer(sent)
    assert status == 408 and headers["connection"] == "close" and not app.called
    assert "no data for 0.05 s (9 bytes read)" in body["error"]["message"]
    assert time.monotonic() - t < 5


def test_body_is_replayed_whole_and_later_receives_pass_through() -> None:
    app = Recorder()
    sent, reads = run_asgi(BodyLimitMiddleware(app), scope(headers=[(b"content-length", b"9")]),
                           [b"abc", b"def", b"ghi"])
    assert sent[0]["status"] == 200
    assert app.messages == [{"type": "http.request", "body": b"abcdefghi", "more_body": False}]
    assert app.after == {"type": "http.disconnect"} and reads == 4  # the watcher reached the server


def test_client_leaving_mid_body_is_not_answered() -> None:
    app = Recorder()
    sent = []

    async def go() -> None:
        msgs = iter([{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}])

        async def receive() -> dict[str, Any]:
            return next(msgs)

        async def send(m: dict[str, Any]) -> None:
            sent.append(m)

        await BodyLimitMiddleware(app)(scope(), receive, send)

    asyncio.run(go())
    assert sent == [] and not app.called


def test_get_requests_pass_untouched() -> None:
    seen = []

    async def inner(sc: Any, receive: Any, send: Any) -> None:
        seen.append(receive)

    async def receive() -> dict[str, Any]:  # pragma: no cover - never called
        raise AssertionError

    asyncio.run(BodyLimitMiddleware(inner)(scope("GET", [(b"content-length", str(600 * MiB).encode())]),
                                           receive, lambda m: None))
    assert seen == [receive]


# ---- the app in-process -----------------------------------------------------------------

def client(**kw: Any) -> TestClient:
    return TestClient(create_app(ServerState(ServerArgs(**kw))))


def test_405_says_which_methods_are_allowed() -> None:
    c = client()
    r = c.get("/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == 405
    r = c.delete("/generate")
    assert r.status_code == 405 and sorted(r.headers["allow"].split(", ")) == ["POST", "PUT"]


def test_app_answers_413_for_a_declared_oversized_body() -> None:
    r = client(api_key="k").post("/v1/completions", content=b"{}", headers={
        "Authorization": "Bearer k", "Content-Length": str(LIMIT + 1)})
    assert r.status_code == 413 and r.json()["error"]["code"] == 413


def test_openapi_declares_every_post_body() -> None:
    schema = client().get("/openapi.json").json()
    comps = schema["components"]["schemas"]
    for path, model in [("/v1/chat/completions", "ChatCompletionRequest"), ("/v1/completions", "CompletionRequest"),
                        ("/generate", "GenerateRequest"), ("/abort_request", "AbortRequest")]:
        body = schema["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert model in comps
    assert schema["paths"]["/generate"]["put"]["requestBody"]["content"]["application/json"]
    chat = comps["ChatCompletionRequest"]
    assert "messages" in chat["required"] and chat["properties"]["messages"]["minItems"] == 1
    assert comps["AbortRequest"]["required"] == ["rid"]
    # every $ref resolves inside the document
    refs = set()

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if isinstance(o.get("$ref"), str):
                refs.add(o["$ref"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(schema)
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(comps)
    assert {"ChatMessage", "TextPart", "StreamOptions", "SamplingParams"} <= set(comps)
    ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_requests_get_503_once_shutting_down() -> None:
    state = ServerState(ServerArgs())
    state.shutting_down = True
    c = TestClient(create_app(state))
    for r in (c.get("/health"), c.post("/generate", json={"text": "hi"})):
        assert r.status_code == 503 and r.json()["error"]["message"] == "server is shutting down"


def test_signal_fails_requests_on_the_event_loop() -> None:
    import uvicorn

    class FakeTM:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int, bool]] = []

        def fail_all(self, message: str, status: int = 503) -> int:
            try:
                asyncio.get_running_loop()
                on_loop = True
            except RuntimeError:
                on_loop = False
            self.calls.append((message, status, on_loop))
            return 2

    state = ServerState(ServerArgs())
    state.tm = FakeTM()
    server = GracefulServer(uvicorn.Config(lambda *a: None), state)

    async def go() -> None:
        server.loop = asyncio.get_running_loop()
        server.handle_exit(signal.SIGTERM, None)  # as the signal handler does
        assert server.should_exit and state.tm.calls == []  # only scheduled
        await asyncio.sleep(0.4)  # again after RETRY_S, for late requests

    asyncio.run(go())
    assert state.shutting_down
    assert state.tm.calls[0] == ("server is shutting down", 503, True) and len(state.tm.calls) >= 2


# ---- a real server process ----------------------------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGLANG_BODY_READ_TIMEOUT", "2")
        s = start_server(["--max-running-requests", "8"])
    yield s
    if s.proc.poll() is None:
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait()


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


class PeakRSS:
    """Samples a process's RSS every 10 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.base, self.peak = pid, rss(pid), 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> "PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss(self.pid))

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / MiB


def read_response(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                break
            data += d
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), f"no HTTP answer: {raw[:200]!r}"
    return int(raw[9:12])


def body_of(raw: bytes) -> dict[str, Any]:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


@pytest.mark.slow
def test_server_refuses_a_600_mb_content_length_at_once(srv: RunningServer) -> None:
    with PeakRSS(srv.proc.pid) as mem:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        t = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (600 * MiB))
        try:
            sock.sendall(b"x" * (4 * MiB))  # the server may have closed already
        except OSError:
            pass
        raw = read_response(sock, timeout=10)
        took = time.monotonic() - t
        sock.close()
    assert status_of(raw) == 413 and took < 5, (raw[:300], took)
    assert b"connection: close" in raw.lower()
    assert body_of(raw)["error"]["code"] == 413
    assert mem.growth_mib < 32, f"HTTP process grew by {mem.growth_mib:.0f} MiB"


@pytest.mark.slow
def test_server_stops_reading_a_chunked_body_past_the_limit(srv: RunningServer) -> None:
    piece = b"y" * MiB
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sent = 0
    with PeakRSS(srv.proc.pid) as mem:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.settimeout(30)
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(600):
                sock.sendall(frame)
                sent += 1
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered 413 and closed the connection
        raw = read_response(sock, timeout=60)
        sock.close()
    assert status_of(raw) == 413, raw[:300]
    assert body_of(raw)["error"]["code"] == 413
    assert sent < 100, f"the server read {sent} MiB of a body over the {LIMIT >> 20} MiB limit"
    # the limit (64 MiB) and a copy of the chunks read so far, not the 600 MiB sent
    assert mem.growth_mib < 160, f"HTTP process grew by {mem.growth_mib:.0f} MiB"


@pytest.mark.slow
def test_server_answers_408_to_a_stalled_body(srv: RunningServer) -> None:
    sock = socket.create_connection(("127.0.0.1", srv.port))
    t = time.monotonic()
    sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"text\": \"hi\"")
    raw = read_response(sock, timeout=15)
    took = time.monotonic() - t
    sock.close()
    assert status_of(raw) == 408 and 1.5 < took < 10, (raw[:300], took)
    assert body_of(raw)["error"]["code"] == 408
    assert b"connection: close" in raw.lower()


@pytest.mark.slow
def test_server_still_serves_and_streams_notice_a_client_leaving(srv: RunningServer) -> None:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
        r = c.post("/generate", content=b"x" * 1000)  # small invalid body: the handler's own 400
        assert r.status_code == 400
        with c.stream("POST", "/generate", json={"text": "Once upon a time", "stream": True,
                                                "sampling_params": {"max_new_tokens": 2000, "ignore_eos": True}}) as s:
            for chunk in s.iter_bytes():
                if b"data:" in chunk:
                    break  # leave mid-stream
        deadline = time.time() + 20
        while True:  # the disconnect reached the app through the middleware: the request is aborted
            load = c.get("/get_server_info").json()["load"]
            if load["num_running"] == 0 and load["num_waiting"] == 0:
                break
            assert time.time() < deadline, f"request not aborted after the client left: {load}"
            time.sleep(0.2)


def sse_tail(resp: httpx.Response, first_event: threading.Event) -> list[str]:
    buf = b""
    for chunk in resp.iter_bytes():
        buf += chunk
        if b"\n\n" in buf:
            first_event.set()
    return [e.decode() for e in buf.split(b"\n\n") if e]


@pytest.mark.slow
def test_server_sigterm_ends_streams_with_503_then_done(srv: RunningServer) -> None:
    """Runs last: stops the module's server."""
    out: dict[str, Any] = {}
    started = [threading.Event(), threading.Event()]
    long_sp = {"max_new_tokens": 4000, "ignore_eos": True}

    def chat_stream() -> None:
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{srv.url}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "Tell a long story."}], "stream": True,
                "max_tokens": 4000, "ignore_eos": True}) as r:
            out["chat"] = (r.status_code, sse_tail(r, started[0]))

    def generate_stream() -> None:
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{srv.url}/generate", json={
                "text": "Once upon a time", "stream": True, "sampling_params": long_sp}) as r:
            out["generate"] = (r.status_code, sse_tail(r, started[1]))

    def waiting() -> None:
        with httpx.Client(timeout=60) as c:
            r = c.post(f"{srv.url}/v1/completions", json={"prompt": "Hello", "max_tokens": 4000, "ignore_eos": True})
            out["plain"] = (r.status_code, r.json())

    threads = [threading.Thread(target=f) for f in (chat_stream, generate_stream, waiting)]
    for t in threads:
        t.start()
    assert all(e.wait(60) for e in started), "streams did not start"
    time.sleep(0.5)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    for name in ("chat", "generate"):
        status, events = out[name]
        assert status == 200
        assert events[-1] == "data: [DONE]", (name, events[-3:])
        err = json.loads(events[-2][len("data: "):])["error"]
        assert err["code"] == 503 and err["message"] == "server is shutting down", (name, err)
    status, body = out["plain"]
    assert status == 503 and body["error"]["message"] == "server is shutting down"
    assert srv.proc.wait(timeout=15) == 0
    assert time.monotonic() - t0 < 15
