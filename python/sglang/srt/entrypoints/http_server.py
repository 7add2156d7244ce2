"""The HTTP process: FastAPI app, uvicorn, and the engine it fronts.

``create_app(state)`` builds the app around a ``ServerState``; the TokenizerManager is
attached to the state once the engine has loaded (``state.attach``), so the server can
answer /health with 503 while the model loads. ``run_server(args, sock)`` loads the
engine in a thread and serves on an already bound socket (launch_server binds it
first, so a taken port is reported before minutes of model loading).

Request bodies are capped and timed by ``http_limits.BodyLimitMiddleware``; SIGINT or
SIGTERM ends every request in flight with a 503 error (streams: an error event, then
``[DONE]``) before uvicorn closes the connections.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Awaitable, Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, StrictStr, TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

import sglang
from sglang.srt.entrypoints.capture_api import CaptureGuard, capabilities
from sglang.srt.entrypoints.http_limits import BodyLimitMiddleware
from sglang.srt.entrypoints.openai.errors import APIError, FastJSONResponse, error_response, from_pydantic
from sglang.srt.entrypoints import attention_replay as replay_api
from sglang.srt.entrypoints.attention_replay import AttentionReplayRequest
from sglang.srt.entrypoints.openai import serving_score, serving_tokenize
from sglang.srt.entrypoints.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    GenerateRequest,
    ScoringRequest,
    TokenizeRequest,
)
from sglang.srt.entrypoints.openai.serving_chat import ChatServing
from sglang.srt.entrypoints.openai.serving_common import ServingContext
from sglang.srt.entrypoints.openai.serving_completions import CompletionServing
from sglang.srt.entrypoints.openai.serving_native import GenerateServing
from sglang.srt.entrypoints.server_info import model_info_body, server_info_body
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.metrics import CONTENT_TYPE, ServerMetrics
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.server_args import ServerArgs

logger = logging.getLogger("sglang.http_server")

# Paths that answer without --api-key (probes and scrapers, like SGLang).
_OPEN_PATHS = ("/health", "/health_generate", "/metrics")

SHUTDOWN_MESSAGE = "server is shutting down"


class AbortRequest(BaseModel):
    """Body of POST /abort_request (documented in /openapi.json; the handler reads it leniently)."""

    model_config = ConfigDict(extra="ignore")
    rid: StrictStr


# Request bodies the POST endpoints declare in /openapi.json (the handlers parse the raw
# body themselves, strictly, with the same models).
_BODY_MODELS: dict[str, type[BaseModel]] = {
    "ChatCompletionRequest": ChatCompletionRequest,
    "CompletionRequest": CompletionRequest,
    "GenerateRequest": GenerateRequest,
    "AbortRequest": AbortRequest,
    "TokenizeRequest": TokenizeRequest,
    "DetokenizeRequest": DetokenizeRequest,
    "ScoringRequest": ScoringRequest,
    "AttentionReplayRequest": AttentionReplayRequest,
}


def _json_body(model: str) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a JSON body of ``model`` from the raw request."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model}"}}}}}


def _body_schemas() -> dict[str, Any]:
    """components/schemas entries of the request bodies, their nested models included."""
    ref = "#/components/schemas/{model}"
    out: dict[str, Any] = {}
    for name, model in _BODY_MODELS.items():
        s = model.model_json_schema(ref_template=ref)
        out.update(s.pop("$defs", {}))
        out[name] = s
    # /generate takes sampling_params as a free dict checked by SamplingParams.from_dict:
    # describe its fields (unknown keys are refused with 400).
    try:
        sp = TypeAdapter(SamplingParams).json_schema(ref_template=ref)
    except Exception as e:  # pragma: no cover - a SamplingParams pydantic cannot describe
        logger.warning("no OpenAPI schema for SamplingParams: %s", e)
    else:
        out.update(sp.pop("$defs", {}))
        out["SamplingParams"] = sp
        props = out["GenerateRequest"].get("properties", {})
        if "sampling_params" in props:
            props["sampling_params"] = {"anyOf": [{"$ref": ref.format(model="SamplingParams")}, {"type": "null"}],
                                        "default": None, "title": "Sampling Params"}
    return out


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
    shutting_down: bool = False  # SIGINT/SIGTERM received: new requests get 503

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
        if self.shutting_down:
            raise APIError(503, SHUTDOWN_MESSAGE)
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
        # keep the exception's headers: a 405 says which methods the path allows (Allow)
        return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}) or None)

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
        if state.shutting_down:
            return error_response(503, SHUTDOWN_MESSAGE)
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
                                 "owned_by": "sglang", "root": ctx.model_info.get("model_path", args.model_path),
                                 "max_model_len": ctx.context_length or None})

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
    @app.post("/v1/chat/completions", openapi_extra=_json_body("ChatCompletionRequest"))
    async def chat(request: Request) -> Response:
        state.require()
        return await guarded(lambda: state.chat.handle(request))  # type: ignore[union-attr]

    @app.post("/v1/completions", openapi_extra=_json_body("CompletionRequest"))
    async def completions(request: Request) -> Response:
        state.require()
        return await guarded(lambda: state.completions.handle(request))  # type: ignore[union-attr]

    @app.api_route("/generate", methods=["POST", "PUT"], openapi_extra=_json_body("GenerateRequest"))
    async def generate(request: Request) -> Response:
        state.require()
        return await guarded(lambda: state.native.handle(request))  # type: ignore[union-attr]

    @app.post("/tokenize", openapi_extra=_json_body("TokenizeRequest"))
    @app.post("/v1/tokenize", openapi_extra=_json_body("TokenizeRequest"))
    async def tokenize(request: Request) -> Response:
        return await serving_tokenize.tokenize(state.require(), request)

    @app.post("/detokenize", openapi_extra=_json_body("DetokenizeRequest"))
    @app.post("/v1/detokenize", openapi_extra=_json_body("DetokenizeRequest"))
    async def detokenize(request: Request) -> Response:
        return await serving_tokenize.detokenize(state.require(), request)

    @app.post("/v1/attention/replay", openapi_extra=_json_body("AttentionReplayRequest"))
    async def attention_replay(request: Request) -> Response:
        ctx = state.require()
        return await guarded(lambda: replay_api.replay(ctx, request))

    @app.post("/v1/score", openapi_extra=_json_body("ScoringRequest"))
    async def score(request: Request) -> Response:
        ctx = state.require()
        return await guarded(lambda: serving_score.score(ctx, request))

    @app.get("/version")
    async def version() -> Response:
        return FastJSONResponse({"version": sglang.__version__})

    @app.post("/abort_request", openapi_extra=_json_body("AbortRequest"))
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

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():  # one route, two methods: fixed just below
                warnings.filterwarnings("ignore", message="Duplicate Operation ID")
                schema = base_openapi()
            _unique_operation_ids(schema)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_body_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Middleware order: the last added runs first. CORS must answer preflights before
    # the API key check (browsers send OPTIONS without credentials); the body limits run
    # after the key check, so an unauthenticated client cannot make the server read a body.
    app.add_middleware(BodyLimitMiddleware)
    if args.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=args.api_key)
    origins = list(args.attention_cors_origins or [])
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials="*" not in origins,
                           allow_methods=["*"], allow_headers=["*"], expose_headers=["*"])
    return app


def _unique_operation_ids(schema: dict[str, Any]) -> None:
    """A route with several methods (/generate, /flush_cache) gets one operationId per
    method from FastAPI; name each after its own method so client generators can tell them apart."""
    ops = [(m, op) for path_ops in schema.get("paths", {}).values() for m, op in path_ops.items()
           if isinstance(op, dict) and "operationId" in op]
    counts: dict[str, int] = {}
    for _, op in ops:
        counts[op["operationId"]] = counts.get(op["operationId"], 0) + 1
    for method, op in ops:
        oid = op["operationId"]
        if counts[oid] > 1:  # FastAPI's id ends with the route's first method
            op["operationId"] = f"{oid.rsplit('_', 1)[0]}_{method}"


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


class GracefulServer(uvicorn.Server):
    """uvicorn, but SIGINT/SIGTERM first ends every request in flight with a 503 error.

    A stream then sends an error event and ``[DONE]`` instead of being cut, a waiting
    response answers 503, and new requests get 503; uvicorn's graceful shutdown
    (``timeout_graceful_shutdown``) lets those answers flush before it closes the
    connections. ``fail_all`` runs on the event loop (the signal handler only schedules
    it) and again every 0.25 s until the loop stops, for requests that were still being
    parsed or tokenized the first time.
    """

    RETRY_S = 0.25

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._fail_in_flight)
        super().handle_exit(sig, frame)

    def _fail_in_flight(self) -> None:
        self.state.shutting_down = True
        tm = self.state.tm
        if tm is not None:
            try:
                n = tm.fail_all(SHUTDOWN_MESSAGE, 503)
            except Exception as e:  # pragma: no cover - never block the exit
                logger.warning("failing requests at shutdown: %s", e)
            else:
                if n:
                    logger.info("shutdown: ended %d request(s) in flight with 503", n)
        if self.loop is not None:
            self.loop.call_later(self.RETRY_S, self._fail_in_flight)


def run_server(args: ServerArgs, sock: socket.socket, on_load_failure: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then shut the engine down."""
    state = ServerState(args)
    app = create_app(state)

    def loader() -> None:
        load_engine_into(state)
        if state.load_error and on_load_failure is not None:
            on_load_failure(state.load_error)

    t = threading.Thread(target=loader, name="engine-loader", daemon=True)
    config = uvicorn.Config(app, log_level=args.log_level.lower(), access_log=args.log_level.lower() == "debug",
                            timeout_keep_alive=30, timeout_graceful_shutdown=5)
    server = GracefulServer(config, state)
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
