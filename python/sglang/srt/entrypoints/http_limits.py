"""Request body limits for the HTTP process: one client cannot hurt the others.

``BodyLimitMiddleware`` (pure ASGI, so streaming responses and disconnect detection
pass through untouched) guards every request that carries a body (POST, PUT, PATCH):

* ``Content-Length`` above ``MAX_BODY_BYTES`` -> 413 at once, before a byte of the
  body is read (a client that sent ``Expect: 100-continue`` never gets a 100);
* the body is read here with a running byte count: a chunked upload (no
  ``Content-Length``) gets 413 as soon as it passes the limit, so the process never
  holds more than the limit (plus one chunk) of a body;
* a client that stalls for ``BODY_READ_TIMEOUT`` seconds between two chunks gets 408.

Those three answers carry ``Connection: close``: the rest of an oversized or stalled
body is never read. A body within the limit is replayed to the app as one message,
and later ``receive()`` calls (the disconnect watchers of streaming and waiting
responses) go straight to the server.

Both limits are module constants read per request, so tests can monkeypatch them;
``SGLANG_BODY_READ_TIMEOUT`` (seconds) sets the timeout of a server process.
"""
from __future__ import annotations

import asyncio
import logging
import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sglang.srt.entrypoints.openai.errors import error_response
from sglang.srt.limits import MAX_BODY_BYTES  # 64 MiB

logger = logging.getLogger("sglang.http_limits")


def _env_timeout(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        v = float(raw) if raw else default
    except ValueError:
        v = -1.0
    if not v > 0:
        logger.warning("%s=%r is not a positive number of seconds; using %g", name, raw, default)
        return default
    return v


# Seconds a client may stay silent between two body chunks (or before the first).
BODY_READ_TIMEOUT = _env_timeout("SGLANG_BODY_READ_TIMEOUT", 30.0)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

__all__ = ["BODY_READ_TIMEOUT", "BodyLimitMiddleware", "MAX_BODY_BYTES"]


async def _refuse(status: int, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    resp = error_response(status, message, headers={"Connection": "close"})
    await resp(scope, receive, send)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int | None = None, read_timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        # module globals looked up per request: tests monkeypatch them
        limit = self.max_bytes if self.max_bytes is not None else MAX_BODY_BYTES
        timeout = self.read_timeout if self.read_timeout is not None else BODY_READ_TIMEOUT

        declared = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await _refuse(400, "Content-Length: not a number", scope, receive, send)
                    return
        if declared is not None and declared > limit:
            await _refuse(413, f"request body too large ({declared} bytes declared by Content-Length; "
                               f"limit {limit})", scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                msg = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                logger.info("%s %s: no body data for %.0f s after %d bytes; answering 408",
                            scope.get("method"), scope.get("path"), timeout, size)
                await _refuse(408, f"request body not received: no data for {timeout:g} s "
                                   f"({size} bytes read)", scope, receive, send)
                return
            if msg["type"] == "http.disconnect":
                return  # the client left before sending its body: nothing to answer
            body = msg.get("body", b"")
            if body:
                size += len(body)
                if size > limit:
                    await _refuse(413, f"request body too large (more than {limit} bytes)", scope, receive, send)
                    return
                chunks.append(body)
            if not msg.get("more_body", False):
                break

        full = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        del chunks
        replayed = False

        async def replay() -> Message:
            nonlocal replayed, full
            if not replayed:
                replayed = True
                msg = {"type": "http.request", "body": full, "more_body": False}
                full = b""  # the app owns the body now
                return msg
            return await receive()

        await self.app(scope, replay, send)

