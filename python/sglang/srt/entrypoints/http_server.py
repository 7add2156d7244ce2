"""The HTTP process: FastAPI app, uvicorn, and the engine it fronts.

``create_app(state)`` builds the app around a ``ServerState``; the TokenizerManager is
attached to the state once the engine has loaded (``state.attach``), so the server can
answer /health with 503 while the model loads. ``run_server(args, sock)`` loads the
engine in a thread and serves on an already bound socket (launch_server binds it
first, so a taken port is reported before minutes of model loading).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

import sglang
from sglang.srt.entrypoints.capture_api import CaptureGuard, capabilities
from sglang.srt.entrypoints.openai.errors import APIError, FastJSONResponse, error_response, from_pydantic
from sglang.srt.entrypoints.openai.serving_chat import ChatServing
from sglang.srt.entrypoints.openai.serving_common import ServingContext
from sglang.srt.entrypoints.openai.serving_completions import CompletionServing
from sglang.srt.entrypoints.openai.serving_native import GenerateServing
from sglang.srt.entrypoints.server_info import model_info_body, server_info_body
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.metrics import CONTENT_TYPE, ServerMetrics
from sglang.srt.server_args import ServerArgs

logger = logging.getLogger("sglang.http_server")

# Paths that answer without --api-key (probes and scrapers, like SGLang).
_OPEN_PATHS = ("/health", "/health_generate", "/metrics")


@dataclass
class ServerState:
    server_args: ServerArgs
    tm: Any = None  # TokenizerManager once loaded
    load_error: str | None = None
    started_at: float = field(default_factory=time.time)
    ctx: ServingContext | None = None
    chat: ChatServing | None = None
    completions: CompletionServing | None = None
    native: GenerateServing | None = None
    metrics: ServerMetrics | None = None
    guard: CaptureGuard | None = None
    last_load: dict[str, Any] | None = None  # the engine load of the last successful /metrics scrape

    def __post_init__(self) -> None:
        a = self.server_args
        self.metrics = ServerMetrics(a.served_model_name or a.model_path or "default")
        self.guard = CaptureGuard(a.attention_api_key, a.attention_max_concurrent_capture)

    @property
    def ready(self) -> bool:
        return self.ctx is not None

    def attach(self, tm: Any) -> None:
        """Called once the engine has loaded: from now on requests are served."""
        info = dict(getattr(tm, "model_info", {}) or {})
        a = self.server_args
        name = a.served_model_name or info.get("served_model_name") or info.get("model_path") or a.model_path or "default"
        if self.metrics is None or self.metrics.model_name != name:
            self.metrics = ServerMetrics(name)  # nothing was observed before the model loaded
        ctx = ServingContext(server_args=a, tm=tm, metrics=self.metrics, guard=self.guard,  # type: ignore[arg-type]
                             model_name=name, model_info=info)
        self.tm = tm
        self.chat = ChatServing(ctx)
        self.completions = CompletionServing(ctx)
        self.native = GenerateServing(ctx)
        self.ctx = ctx  # set last: /health turns 200 only when everything is in place

    def require(self) -> ServingContext:
        if self.ctx is None:
            msg = f"model failed to load: {self.load_error}" if self.load_error else "server is starting: model not loaded yet"
            raise APIError(503, msg)
        return self.ctx


class APIKeyMiddleware:
    """--api-key: every endpoint except probes needs 'Authorization: Bearer KEY'.

    Pure ASGI (not BaseHTTPMiddleware) so streaming responses and disconnect detection
    pass through untouched.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or scope.get("path", "").startswith(_OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        auth = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                auth = v
        token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
        if token and hmac.compare_digest(token, self.key):
            await self.app(scope, receive, send)
            return
        resp = error_response(401, "invalid or missing API key: send 'Authorization: Bearer <key>'", "authorization",
                              headers={"WWW-Authenticate": "Bearer"})
        await resp(scope, receive, send)


def create_app(state: ServerState) -> FastAPI:
    args = state.server_args
    app = FastAPI(title="sglang", version=sglang.__version__, docs_url="/docs", redoc_url=None,
                  default_response_class=FastJSONResponse)
    app.state.server = state

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> Response:
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        e = from_pydantic(exc)
        return error_response(e.status, e.message, e.param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    async def guarded(handler: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await handler()
        except asyncio.CancelledError:
            # the client went away: nothing is sent, the request was aborted
            return Response(status_code=499)

    # ---- health and info ---------------------------------------------------------
    @app.get("/health")
    async def health() -> Response:
        if not state.ready:
            return error_response(503, f"model failed to load: {state.load_error}" if state.load_error
                                  else "server is starting: model not loaded yet")
        return Response(status_code=200)

    @app.get("/health_generate")
    async def health_generate() -> Response:
        ctx = state.require()
        obj = GenerateReqInput(input_ids=[_probe_token(ctx)], sampling_params={"max_new_tokens": 1, "temperature": 0.0},
                               rid=f"health-{time.monotonic_ns()}")
        try:
            async def run() -> None:
                async for _ in ctx.tm.generate_request(obj):
                    pass
            await asyncio.wait_for(run(), timeout=30)
        except Exception as e:
            return error_response(503, f"generation probe failed: {type(e).__name__}: {e}")
        return Response(status_code=200)

    # sglang-router 0.3.2 probes /server_info and /model_info first (the /get_ names are
    # SGLang's older spellings, still used by clients): same bodies under both names.
    @app.get("/model_info")
    @app.get("/get_model_info")
    async def get_model_info() -> Response:
        ctx = state.require()
        return FastJSONResponse(model_info_body(args, ctx.model_info, ctx.model_name))

    @app.get("/server_info")
    @app.get("/get_server_info")
    async def get_server_info() -> Response:
        ctx = state.require()
        load = await ctx.tm.get_load()
        return FastJSONResponse(server_info_body(args, ctx.model_info, ctx.model_name, load, state.started_at,
                                                 state.guard.active if state.guard else 0))

    @app.get("/v1/models")
    async def models() -> Response:
        ctx = state.require()
        return FastJSONResponse({"object": "list", "data": [{
            "id": ctx.model_name, "object": "model", "created": int(state.started_at), "owned_by": "sglang",
            "root": ctx.model_info.get("model_path", args.model_path),
            "max_model_len": ctx.context_length or None}]})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Response:
        ctx = state.require()
        ctx.check_model(model_id)
        return FastJSONResponse({"id": ctx.model_name, "object": "model", "created": int(state.started_at),
                               "owned_by": "sglang", "max_model_len": ctx.context_length or None})

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache() -> Response:
        ctx = state.require()
        ok = await ctx.tm.flush_cache()
        if not ok:
            return error_response(400, "cache not flushed: requests are running; retry when the server is idle")
        return PlainTextResponse("Cache flushed.\n")

    @app.get("/metrics")
    async def metrics() -> Response:
        if state.ctx is not None:
            try:
                state.last_load = await asyncio.wait_for(state.ctx.tm.get_load(), timeout=10)
            except Exception as e:
                # A busy scheduler answers between steps; reuse the last snapshot rather than
                # report zeros (a counter that drops to 0 reads as a restart to Prometheus).
                logger.warning("get_load failed during /metrics: %s", e)
        assert state.metrics is not None
        return Response(state.metrics.render(state.last_load), media_type=CONTENT_TYPE)

    @app.get("/v1/attention/capabilities")
    async def attention_capabilities() -> Response:
        info = state.ctx.model_info if state.ctx is not None else {}
        body = capabilities(args, info, args.reasoning_parser)
        body["ready"] = state.ready
        return FastJSONResponse(body)

    # ---- generation ---------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        state.require()
        return await guarded(lambda: state.chat.handle(request))  # type: ignore[union-attr]

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        state.require()
        return await guarded(lambda: state.completions.handle(request))  # type: ignore[union-attr]

    @app.api_route("/generate", methods=["POST", "PUT"])
    async def generate(request: Request) -> Response:
        state.require()
        return await guarded(lambda: state.native.handle(request))  # type: ignore[union-attr]

    @app.post("/abort_request")
    async def abort_request(request: Request) -> Response:
        ctx = state.require()
        try:
            rid = (await request.json()).get("rid")
        except Exception:
            rid = None
        if not isinstance(rid, str) or not rid:
            raise APIError(400, "rid: a request id string is required", "rid")
        ctx.tm.abort_request(rid)
        return Response(status_code=200)

    # Middleware order: the last added runs first. CORS must answer preflights before
    # the API key check (browsers send OPTIONS without credentials).
    if args.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=args.api_key)
    origins = list(args.attention_cors_origins or [])
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials="*" not in origins,
                           allow_methods=["*"], allow_headers=["*"], expose_headers=["*"])
    return app


def _probe_token(ctx: ServingContext) -> int:
    tok = ctx.tm.tokenizer
    for attr in ("bos_token_id", "eos_token_id"):
        v = getattr(tok, attr, None)
        if isinstance(v, int):
            return v
    return 0


def load_engine_into(state: ServerState) -> None:
    """Start the scheduler process(es) and attach the TokenizerManager (blocking)."""
    try:
        from sglang.srt.managers.launch import launch_engine_processes

        tm = launch_engine_processes(state.server_args)
    except BaseException as e:  # reported on /health and in the log; the server keeps answering
        state.load_error = f"{type(e).__name__}: {e}"
        logger.error("model failed to load: %s", state.load_error)
        return
    state.attach(tm)
    logger.info("model loaded; the server is ready")


def run_server(args: ServerArgs, sock: socket.socket, on_load_failure: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then shut the engine down."""
    import uvicorn

    state = ServerState(args)
    app = create_app(state)

    def loader() -> None:
        load_engine_into(state)
        if state.load_error and on_load_failure is not None:
            on_load_failure(state.load_error)

    t = threading.Thread(target=loader, name="engine-loader", daemon=True)
    config = uvicorn.Config(app, log_level=args.log_level.lower(), access_log=args.log_level.lower() == "debug",
                            timeout_keep_alive=30, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    state_holder["server"] = server
    t.start()
    try:
        server.run(sockets=[sock])
    finally:
        if state.tm is not None:
            try:
                state.tm.shutdown()
            except Exception as e:  # pragma: no cover - best effort at exit
                logger.warning("engine shutdown failed: %s", e)


# The running uvicorn server (so a load failure can ask it to exit).
state_holder: dict[str, Any] = {}
