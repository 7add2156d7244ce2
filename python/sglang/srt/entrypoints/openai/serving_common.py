"""What the chat, completions and native handlers share.

* ``ServingContext``: the TokenizerManager, server args, metrics and capture guard.
* ``tracked_generate``: the one place a request enters the engine; it maps engine
  errors to HTTP errors, feeds the TTFT / inter-token latency metrics and always
  releases the capture slot and closes the engine iterator (which aborts the request
  and frees its KV) however the response ends.
* ``SSEResponse`` and ``run_until_disconnect``: stop generating the moment the client
  goes away, for streaming and non-streaming responses alike.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from sglang.srt.entrypoints.capture_api import CaptureGuard, CaptureSlot
from sglang.srt.entrypoints.openai.errors import APIError, error_body
from sglang.srt.managers.io_struct import GenerateReqInput, RequestFailed
from sglang.srt.metrics import ServerMetrics
from sglang.srt.server_args import ServerArgs

T = TypeVar("T")


@dataclass
class ServingContext:
    server_args: ServerArgs
    tm: Any  # TokenizerManager (typed loosely: the HTTP side must not import engine code at import time)
    metrics: ServerMetrics
    guard: CaptureGuard
    model_name: str
    model_info: dict[str, Any] = field(default_factory=dict)

    @property
    def reasoning_parser(self) -> str | None:
        return self.server_args.reasoning_parser

    @property
    def context_length(self) -> int:
        return int(self.model_info.get("context_length") or 0)

    def check_model(self, name: str) -> None:
        """404 unless ``name`` is this server's model.

        SGLang clients also send "default"; sglang-router 0.3.2 re-serializes a request
        that had no model field with ``"unknown"``, so that name means "whatever you serve".
        """
        allowed = {self.model_name, "default", "unknown", self.model_info.get("model_path") or "",
                   self.server_args.model_path or ""}
        if name not in allowed:
            raise APIError(404, f"model: the model {name!r} does not exist; this server serves {self.model_name!r}",
                           "model")


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def sample_rid(rid: str, prompt: int | None, sample: int, n: int) -> str:
    """The engine request id of sample ``sample`` (of ``n``) of prompt ``prompt`` (None:
    the request has one prompt): the request's own id when it is the only one."""
    parts = [rid] + ([str(prompt)] if prompt is not None else []) + ([str(sample)] if n > 1 else [])
    return "-".join(parts)


def share_slot(slot: CaptureSlot | None, n: int) -> list[Any]:
    """The capture slot handle of each of n parallel samples (one request holds one slot)."""
    if slot is None:
        return [None] * n
    return [slot] if n == 1 else list(slot.shares(n))


def samples_usage(metas: list[Mapping[str, Any]], n: int | None = None) -> dict[str, Any]:
    """Usage of a response with several choices: completion tokens of every choice, prompt
    tokens once per prompt (choices come in groups of ``n`` samples of one prompt; None:
    every choice shares one prompt)."""
    n = n or len(metas) or 1
    usages = [usage_of(m) for m in metas]
    prompt = sum(u["prompt_tokens"] for i, u in enumerate(usages) if i % n == 0)
    completion = sum(u["completion_tokens"] for u in usages)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    cached = [u.get("prompt_tokens_details", {}).get("cached_tokens") for i, u in enumerate(usages) if i % n == 0]
    if any(c is not None for c in cached):
        out["prompt_tokens_details"] = {"cached_tokens": sum(c or 0 for c in cached)}
    return out


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def _overloaded_error_type() -> type[BaseException] | None:
    try:
        from sglang.srt.managers.tokenizer_manager import OverloadedError
    except ImportError:  # pragma: no cover - the engine package is always installed with the server
        return None
    return OverloadedError


async def tracked_generate(ctx: ServingContext, obj: GenerateReqInput) -> AsyncIterator[dict[str, Any]]:
    """Yield the TokenizerManager's outputs for one request, with metrics and cleanup."""
    overloaded = _overloaded_error_type()
    start = time.perf_counter()
    last = None
    n_tokens = 0
    gen = ctx.tm.generate_request(obj)
    ctx.metrics.request_started()
    finished_ok = False
    try:
        while True:
            try:
                out = await gen.__anext__()
            except StopAsyncIteration:
                break
            except ValueError as e:
                # Invalid input found by the engine (bad ids, prompt too long, ...).
                from sglang.srt.entrypoints.openai.errors import from_value_error

                raise from_value_error(e, obj.param_names) from None
            except RequestFailed as e:  # the engine failed this request (not its input)
                raise APIError(e.status, e.message) from None
            except Exception as e:
                if overloaded is not None and isinstance(e, overloaded):
                    raise APIError(503, f"server overloaded: {e}") from None
                raise
            now = time.perf_counter()
            new = len(out.get("new_token_ids") or ())
            if new:
                if last is None:
                    ctx.metrics.observe_ttft(now - start)
                    if new > 1:
                        ctx.metrics.observe_itl((now - start) / new, new - 1)
                else:
                    ctx.metrics.observe_itl((now - last) / new, new)
                last = now
                n_tokens += new
            yield out
        finished_ok = True
    finally:
        ctx.metrics.request_finished(time.perf_counter() - start, n_tokens, finished_ok)
        if obj.capture_slot is not None:
            obj.capture_slot.release()
        await gen.aclose()  # an unfinished request is aborted and its KV freed


StreamBody = Callable[[list[dict[str, Any]], list[AsyncIterator[dict[str, Any]]]], AsyncIterator[bytes]]


async def generate_all(ctx: ServingContext, request: Request, objs: list[GenerateReqInput], slot: Any,
                       stream: StreamBody | None) -> "SSEResponse | list[dict[str, Any]]":
    """Run one engine request per obj (prompts x samples). Streaming (``stream`` given):
    wait for every request's first item (errors before it are plain HTTP errors), then the
    SSE response that ``stream(firsts, iterators)`` writes. Otherwise: every request's final
    item. The capture slot is released here, unless a stream took it over (its iterators
    release it when they end)."""
    streaming = False
    try:
        gens = [tracked_generate(ctx, o) for o in objs]
        if stream is not None:
            firsts = await run_until_disconnect(request, asyncio.gather(*(g.__anext__() for g in gens)))
            streaming = True
            return SSEResponse(guarded_stream(stream(list(firsts), gens)))
        return list(await run_until_disconnect(request, asyncio.gather(*(final_output(g) for g in gens))))
    except StopAsyncIteration:
        raise APIError(500, "the engine returned no output") from None
    finally:
        if not streaming and slot is not None:
            slot.release()


async def final_output(agen: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The one item a non-streaming request yields: the TokenizerManager has merged the
    whole request into it (text, ids, logprobs, capture entries, prompt labels), so
    nothing downstream merges again."""
    last = None
    async for o in agen:
        last = o
    if last is None:
        raise APIError(500, "the engine returned no output")
    return last


async def run_until_disconnect(request: Request, coro: Awaitable[T]) -> T:
    """Await ``coro`` but cancel it if the client disconnects first (non-streaming)."""
    task = asyncio.ensure_future(coro)

    async def watch() -> None:
        while True:
            msg = await request.receive()
            if msg["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if task.cancelled() or not task.done():
        await asyncio.gather(task, return_exceptions=True)
        raise asyncio.CancelledError("client disconnected")
    return task.result()


class SSEResponse(StreamingResponse):
    """Server-sent events that stop (and abort the request) when the client leaves.

    Starlette only notices a gone client when a write fails; this watches the receive
    channel too, so generation stops even while no token is being sent.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], status_code: int = 200) -> None:
        super().__init__(content, status_code=status_code, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while True:
                if (await receive())["type"] == "http.disconnect":
                    return

        streamer = asyncio.ensure_future(self.stream_response(send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({streamer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (streamer, watcher):
                t.cancel()
            await asyncio.gather(streamer, watcher, return_exceptions=True)
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def guarded_stream(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Turn an error raised mid-stream into one SSE error event followed by [DONE]."""
    try:
        async for chunk in body:
            yield chunk
    except APIError as e:
        yield b"data: " + orjson.dumps(error_body(e.status, e.message, e.param)) + b"\n\n"
        yield SSE_DONE
    except asyncio.CancelledError:
        raise
    except Exception as e:  # never let one request take the server down
        import logging

        logging.getLogger(__name__).exception("error while streaming")
        yield b"data: " + orjson.dumps(error_body(500, f"internal error: {type(e).__name__}: {e}")) + b"\n\n"
        yield SSE_DONE
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


async def first_then_rest(agen: AsyncIterator[T]) -> tuple[T | None, AsyncIterator[T]]:
    """Pull the first item so errors raised before it become plain HTTP errors, not SSE."""
    try:
        first = await agen.__anext__()
    except StopAsyncIteration:
        return None, agen
    return first, agen


def finish_reason_of(meta: Mapping[str, Any]) -> tuple[str | None, Any]:
    fr = meta.get("finish_reason")
    if not fr:
        return None, None
    return fr.get("type"), fr.get("matched")


def usage_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    p = int(meta.get("prompt_tokens", 0))
    c = int(meta.get("completion_tokens", 0))
    u: dict[str, Any] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    if meta.get("cached_tokens") is not None:
        u["prompt_tokens_details"] = {"cached_tokens": int(meta.get("cached_tokens") or 0)}
    return u


StreamFactory = Callable[[], AsyncIterator[bytes]]


_END = object()


async def merge_streams(gens: list[AsyncIterator[dict[str, Any]]]) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Interleave several requests' outputs as they arrive: yields (index, output)."""
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(i: int, g: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for o in g:
                await queue.put((i, o))
        except BaseException as e:  # handed to the consumer, which re-raises
            await queue.put((i, e))
            return
        await queue.put((i, _END))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    remaining = len(tasks)
    try:
        while remaining:
            i, item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in gens:
            aclose = getattr(g, "aclose", None)
            if aclose is not None:
                await aclose()
