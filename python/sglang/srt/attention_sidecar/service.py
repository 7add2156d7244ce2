"""FastAPI app of the attention sidecar: classify, discovery status/reload, storage flush, stats."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Any, AsyncIterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sglang.srt.attention_sidecar import pca_interpretation
from sglang.srt.attention_sidecar.artifacts import FORMAT, ArtifactError, ArtifactSet
from sglang.srt.attention_sidecar.discovery_state import DiscoveryState
from sglang.srt.attention_sidecar.errors import (ApiError, fast_json_response, parse_fingerprint_version,
                                                  parse_int_param, parse_json_object, parse_vectors,
                                                  version_mismatch)
from sglang.srt.attention_sidecar.ingest import Ingestor

log = logging.getLogger("attention_sidecar")
METHODS = ("knn", "umap")
POINTS_DEFAULT_LIMIT = 100_000
POINTS_MAX_LIMIT = 1_000_000


class Counters:
    def __init__(self) -> None:
        self.started_at = time.time()
        self.classify_requests = 0
        self.classified = 0
        self.http_rejected = 0


def create_app(discovery: DiscoveryState, ingestor: Ingestor | None, cors_origins: list[str]) -> FastAPI:
    counters = Counters()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ingestor is not None:
            ingestor.start()
        discovery.start_auto_reload()
        print(json.dumps({"event": "ready", "zmq_endpoint": ingestor.endpoint if ingestor else None,
                          "discovery_loaded": discovery.current is not None}), flush=True)
        try:
            yield
        finally:
            # uvicorn turns SIGTERM/SIGINT into this shutdown: store everything acknowledged
            discovery.stop()
            if ingestor is not None:
                ingestor.stop()
                ingestor.conn.close()
            final = {"event": "shutdown", **(_storage_stats(ingestor) or {})}
            print(json.dumps(final), flush=True)
            sys.stdout.flush()

    app = FastAPI(title="sglang attention sidecar", lifespan=lifespan)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"])

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        if e.status == 400:
            counters.http_rejected += 1
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(ApiError(f"internal error: {e}", status=500, type="server_error").body(),
                            status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        cur = discovery.current
        out: dict[str, Any] = {
            "received": 0, "rejected": 0, "buffered": 0, "stored": None,
            **(_storage_stats(ingestor) or {}),
            "clusters": len(cur.centroids) if cur else 0,
            "discovery_run_id": cur.run_id if cur else None,
            "discovery_fingerprint_version": cur.fingerprint_version if cur else None,
            "classify_requests": counters.classify_requests,
            "classified": counters.classified,
            "http_rejected": counters.http_rejected,
            "uptime_s": round(time.time() - counters.started_at, 3),
        }
        return out

    @app.post("/classify")
    async def classify(request: Request) -> Any:
        counters.classify_requests += 1
        body = parse_json_object(await request.body())
        vectors, batch = parse_vectors(body)
        method = body.get("method", "knn")
        if method not in METHODS:
            raise ApiError(f"'method' must be one of {list(METHODS)}, got {json.dumps(method)[:40]}", param="method")
        explain = body.get("explain", False)
        if not isinstance(explain, bool):
            raise ApiError("'explain' must be true or false", param="explain")
        version = parse_fingerprint_version(body.get("fingerprint_version"))
        cur = _loaded(discovery)
        if version is not None and version != cur.fingerprint_version:  # absent: the run's version
            raise version_mismatch(version, cur.fingerprint_version, f"the loaded discovery run {cur.run_id}")
        X = np.asarray(vectors, dtype=np.float64)
        if method == "umap":  # slow (numba); keep the event loop free
            results = await run_in_threadpool(cur.classify, X, method)
        else:
            results = cur.classify(X, method)
        if explain:
            for r, v in zip(results, vectors):
                r["pca_explanation"] = pca_interpretation.explain(v, cur.interpretation)
        counters.classified += len(results)
        return fast_json_response({"results": results} if batch else results[0])

    @app.get("/centroids")
    async def centroids() -> dict[str, Any]:
        cur = discovery.current
        # the version of the run's fingerprints: a client assigns only fingerprints of that version
        return {"run_id": cur.run_id if cur else None, "fingerprint_version": cur.fingerprint_version if cur else None,
                "clusters": cur.centroids if cur else []}

    @app.get("/discovery/points")
    async def discovery_points(request: Request) -> Any:
        limit = parse_int_param(request.query_params, "limit", POINTS_DEFAULT_LIMIT, 0, POINTS_MAX_LIMIT)
        offset = parse_int_param(request.query_params, "offset", 0, 0, 10**12)
        cur = _loaded(discovery)
        return fast_json_response(await run_in_threadpool(_points_page, cur, offset, limit))

    @app.get("/pca/interpretation")
    async def interpretation(request: Request) -> dict[str, Any]:
        """The loaded run's interpretation when it is of the version asked for (or none is),
        else the shipped default of that version (version 1 when neither says)."""
        version = parse_fingerprint_version(request.query_params.get("fingerprint_version"), query=True)
        cur = discovery.current
        if cur is not None and version in (None, cur.fingerprint_version):
            return {"fingerprint_version": cur.fingerprint_version, **cur.interpretation}
        try:
            return pca_interpretation.load_default(1 if version is None else version)
        except pca_interpretation.DefaultMissing as e:
            raise ApiError(str(e), status=404, type="not_found_error", param="fingerprint_version",
                           code="no_interpretation") from None

    @app.get("/discovery/status")
    async def discovery_status() -> dict[str, Any]:
        return discovery.status()

    @app.post("/discovery/reload")
    async def discovery_reload() -> Any:
        try:
            await run_in_threadpool(discovery.reload)
        except ArtifactError as e:
            serving = discovery.current.run_id if discovery.current else None
            return JSONResponse(
                ApiError(f"reload failed, still serving run {serving}: {e}", status=422, type="invalid_artifacts",
                         param="discovery_dir", code="artifact_load_failed").body(),
                status_code=422)
        return {"reloaded": True, "status": discovery.status()}

    @app.post("/storage/flush")
    async def storage_flush() -> dict[str, Any]:
        if ingestor is None:
            raise ApiError("storage is disabled: start the service with --db and --zmq-bind", status=503,
                           type="service_unavailable", code="no_storage")
        n = await run_in_threadpool(ingestor.flush)
        if ingestor.buffered and ingestor.last_flush_error:
            raise ApiError(f"flush failed, {ingestor.buffered} fingerprints kept for retry: "
                           f"{ingestor.last_flush_error}", status=503, type="server_error", code="flush_failed")
        return {"flushed": n, **(_storage_stats(ingestor) or {})}

    return app


def _storage_stats(ingestor: Ingestor | None) -> dict[str, Any] | None:
    return ingestor.stats() if ingestor is not None else None


def _loaded(discovery: DiscoveryState) -> ArtifactSet:
    cur = discovery.current
    if cur is None:
        raise ApiError(f"no discovery artifacts loaded ({discovery.last_error or 'none yet'}); run discovery "
                       "and POST /discovery/reload", status=503, type="service_unavailable", code="no_artifacts")
    return cur


def _points_page(cur: ArtifactSet, offset: int, limit: int) -> dict[str, Any]:
    """Columnar page of the discovery run's training points: one list per field, same order."""
    cols = cur.point_columns()
    total = len(cols["label"])
    a, b = min(offset, total), min(offset + limit, total)
    out: dict[str, Any] = {
        "run_id": cur.run_id,
        "format": FORMAT,
        "manifest_sha256": cur.manifest.get("_sha256"),
        "total": total,
        "offset": offset,
        "limit": limit,
        "count": b - a,
    }
    for name in ("x", "y", "label", "zone", "request_id", "session_id", "step"):
        if name in cols:
            out[name] = cols[name][a:b]
    return out
