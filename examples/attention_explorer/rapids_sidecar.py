#!/usr/bin/env python
"""Clustering sidecar: receives 20-float attention fingerprints over ZMQ and finds clusters.

    python rapids_sidecar.py --zmq-bind tcp://*:9001 --port 9000              # batch mode
    python rapids_sidecar.py --zmq-bind tcp://*:9001 --online --online-threshold 2.0

Batch mode keeps the last ``--buffer-size`` fingerprints and re-clusters them with HDBSCAN
every ``--recluster-interval`` seconds (cuML when importable, else the ``hdbscan`` package,
else scikit-learn). Online mode keeps micro-clusters (count, linear sum, sum of squares) and
updates them on every message: a fingerprint joins the nearest micro-cluster when its distance
to the centroid is at most ``--online-threshold`` times that cluster's RMS radius (never less
than ``--online-min-radius``), otherwise it starts a new one; two micro-clusters closer than
that merge; past ``--online-max-clusters`` the two closest merge.

HTTP: ``GET /centroids``, ``GET /stats``, ``POST /predict`` ({"vector": [...]} or
{"vectors": [[...], ...]}), ``POST /recluster``, ``GET /health``. Zones, traits and sampling
hints come from ``sgl_kernel.zones`` (applied to the cluster centroid); see docs/sidecar.md.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sgl_kernel.zones import FINGERPRINT_DIM
from sglang.srt.attention_sidecar.describe import describe
from sglang.srt.attention_sidecar.errors import ApiError, fast_json_response, parse_json_object, parse_vectors
from sglang.srt.attention_sidecar.wire import RejectCounter, RejectedMessage, parse_frame

log = logging.getLogger("rapids_sidecar")
BATCH_ASSIGN_FACTOR = 2.0  # batch mode: a point belongs to a cluster within 2x its 95th-percentile radius


# ----------------------------------------------------------------------------- clusters
@dataclass(frozen=True)
class ClusterSnapshot:
    """Immutable view of the current clusters; replaced wholesale, never mutated."""

    ids: np.ndarray  # int[K]
    centroids: np.ndarray  # float64[K, 20]
    radii: np.ndarray  # float64[K]
    sizes: np.ndarray  # int[K]
    info: tuple[dict[str, Any], ...]  # describe(centroid) per cluster
    assign_factor: float
    min_radius: float
    updated_at: float

    @staticmethod
    def empty(assign_factor: float, min_radius: float) -> "ClusterSnapshot":
        return ClusterSnapshot(np.zeros(0, int), np.zeros((0, FINGERPRINT_DIM)), np.zeros(0), np.zeros(0, int), (),
                               assign_factor, min_radius, time.time())

    @staticmethod
    def build(ids: list[int], centroids: np.ndarray, radii: np.ndarray, sizes: list[int], assign_factor: float,
              min_radius: float) -> "ClusterSnapshot":
        info = tuple(describe(c) for c in centroids)
        return ClusterSnapshot(np.asarray(ids, int), np.asarray(centroids, np.float64).reshape(-1, FINGERPRINT_DIM),
                               np.asarray(radii, np.float64), np.asarray(sizes, int), info, assign_factor,
                               min_radius, time.time())

    def to_json(self) -> list[dict[str, Any]]:
        return [{"cluster_id": int(self.ids[i]), "size": int(self.sizes[i]),
                 "centroid": [round(float(v), 8) for v in self.centroids[i]],
                 "radius": round(float(self.radii[i]), 6), **self.info[i]} for i in range(len(self.ids))]

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """Nearest centroid; inside ``assign_factor x radius`` it is that cluster, else -1 (noise)."""
        if len(self.ids) == 0:
            own = describe(x)
            return {"cluster_id": -1, "nearest_cluster_id": None, "distance": None,
                    "confidence": own["zone_confidence"], "basis": "vector", **own}
        d = np.linalg.norm(self.centroids - x, axis=1)
        j = int(np.argmin(d))
        reach = self.assign_factor * max(float(self.radii[j]), self.min_radius)
        dist = float(d[j])
        if dist <= reach:
            return {"cluster_id": int(self.ids[j]), "nearest_cluster_id": int(self.ids[j]),
                    "distance": round(dist, 6), "confidence": round(max(0.0, 1.0 - dist / reach), 6),
                    "basis": "cluster_centroid", **self.info[j]}
        own = describe(x)
        return {"cluster_id": -1, "nearest_cluster_id": int(self.ids[j]), "distance": round(dist, 6),
                "confidence": own["zone_confidence"], "basis": "vector", **own}


def pick_backend(choice: str) -> str:
    """cuml when importable (or requested), else hdbscan, else scikit-learn."""
    order = {"auto": ["cuml", "hdbscan", "sklearn"], "cuml": ["cuml"], "hdbscan": ["hdbscan"],
             "sklearn": ["sklearn"]}[choice]
    for name in order:
        try:
            if name == "cuml":
                from cuml.cluster import HDBSCAN  # noqa: F401
            elif name == "hdbscan":
                import hdbscan  # noqa: F401
            else:
                from sklearn.cluster import HDBSCAN  # noqa: F401
            return name
        except Exception:  # cuML raises more than ImportError without a GPU
            continue
    raise SystemExit(f"error: clustering backend {choice!r} is not importable")


def hdbscan_labels(backend: str, X: np.ndarray, min_cluster_size: int, min_samples: int | None) -> np.ndarray:
    if backend == "cuml":
        from cuml.cluster import HDBSCAN

        labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples).fit(X).labels_
        return np.asarray(labels.get() if hasattr(labels, "get") else labels)
    if backend == "hdbscan":
        import hdbscan

        return hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples).fit(X).labels_
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples).fit(X).labels_


class BatchClusterer:
    """Bounded buffer of recent fingerprints, re-clustered with HDBSCAN on a timer."""

    mode = "batch"

    def __init__(self, buffer_size: int, min_cluster_size: int, min_samples: int | None, backend: str):
        self.buffer: collections.deque[np.ndarray] = collections.deque(maxlen=buffer_size)
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.backend = backend
        self.snapshot = ClusterSnapshot.empty(BATCH_ASSIGN_FACTOR, 1e-6)
        self.reclusters = 0
        self.last_recluster_s: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # the buffer is appended by the receiver, read by re-clustering
        self._fit_lock = threading.Lock()

    def add_many(self, vectors: list[list[float]]) -> None:
        with self._lock:
            self.buffer.extend(vectors)

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    def recluster(self) -> dict[str, Any]:
        with self._fit_lock:
            with self._lock:
                X = np.asarray(self.buffer, dtype=np.float64).reshape(-1, FINGERPRINT_DIM)
            if len(X) < max(2, self.min_cluster_size):
                return {"reclustered": False, "reason": f"only {len(X)} fingerprints buffered"}
            t0 = time.perf_counter()
            labels = hdbscan_labels(self.backend, X, self.min_cluster_size, self.min_samples)
            ids, cents, radii, sizes = [], [], [], []
            for cid in sorted(set(int(l) for l in labels) - {-1}):
                m = X[labels == cid]
                c = m.mean(axis=0)
                ids.append(cid); cents.append(c); sizes.append(len(m))
                radii.append(float(np.percentile(np.linalg.norm(m - c, axis=1), 95)))
            self.snapshot = ClusterSnapshot.build(ids, np.asarray(cents).reshape(-1, FINGERPRINT_DIM),
                                                  np.asarray(radii), sizes, BATCH_ASSIGN_FACTOR, 1e-6)
            self.reclusters += 1
            self.last_recluster_s = round(time.perf_counter() - t0, 4)
            return {"reclustered": True, "points": len(X), "clusters": len(ids),
                    "noise_fraction": round(float(np.mean(labels < 0)), 6), "seconds": self.last_recluster_s}


class OnlineClusterer:
    """Micro-clusters (CluStream-style cluster features) updated on every fingerprint."""

    mode = "online"

    def __init__(self, threshold: float, min_radius: float, max_clusters: int, min_size: int):
        self.threshold = threshold
        self.min_radius = min_radius
        self.max_clusters = max_clusters
        self.min_size = min_size
        self.n = np.zeros(0)
        self.ls = np.zeros((0, FINGERPRINT_DIM))
        self.ss = np.zeros(0)  # sum of squared norms
        self.ids = np.zeros(0, int)
        self._next_id = 0
        self.points = 0
        self.merges = 0
        self._lock = threading.Lock()
        self.snapshot = ClusterSnapshot.empty(threshold, min_radius)
        self._dirty = False

    @property
    def buffered(self) -> int:
        return 0  # nothing waits for a batch: every message is absorbed on arrival

    def _radius(self, j: int | np.ndarray) -> Any:
        c2 = np.sum((self.ls[j] / np.asarray(self.n[j])[..., None]) ** 2, axis=-1)
        return np.sqrt(np.maximum(self.ss[j] / self.n[j] - c2, 0.0))

    def add_many(self, vectors: list[list[float]]) -> None:
        with self._lock:
            for v in vectors:
                self._add(np.asarray(v, dtype=np.float64))
            self._dirty = True

    def _add(self, x: np.ndarray) -> None:
        self.points += 1
        if len(self.n):
            cents = self.ls / self.n[:, None]
            d = np.linalg.norm(cents - x, axis=1)
            j = int(np.argmin(d))
            if d[j] <= self.threshold * max(float(self._radius(j)), self.min_radius):
                self.n[j] += 1; self.ls[j] += x; self.ss[j] += float(x @ x)
                self._merge_neighbours(j)
                return
        self.n = np.append(self.n, 1.0)
        self.ls = np.vstack([self.ls, x])
        self.ss = np.append(self.ss, float(x @ x))
        self.ids = np.append(self.ids, self._next_id)
        self._next_id += 1
        if len(self.n) > self.max_clusters:
            self._merge_closest_pair()

    def _merge_neighbours(self, j: int) -> None:
        cents = self.ls / self.n[:, None]
        d = np.linalg.norm(cents - cents[j], axis=1)
        d[j] = np.inf
        reach = self.threshold * np.maximum(np.maximum(self._radius(np.arange(len(self.n))), self._radius(j)),
                                            self.min_radius)
        k = int(np.argmin(d - reach))
        if d[k] <= reach[k]:
            self._merge(j, k)

    def _merge_closest_pair(self) -> None:
        cents = self.ls / self.n[:, None]
        d = np.linalg.norm(cents[:, None, :] - cents[None, :, :], axis=-1)
        np.fill_diagonal(d, np.inf)
        a, b = np.unravel_index(int(np.argmin(d)), d.shape)
        self._merge(int(a), int(b))

    def _merge(self, a: int, b: int) -> None:
        keep, drop = (a, b) if self.n[a] >= self.n[b] else (b, a)  # the larger keeps its id
        self.n[keep] += self.n[drop]; self.ls[keep] += self.ls[drop]; self.ss[keep] += self.ss[drop]
        self.n = np.delete(self.n, drop); self.ls = np.delete(self.ls, drop, axis=0)
        self.ss = np.delete(self.ss, drop); self.ids = np.delete(self.ids, drop)
        self.merges += 1

    def refresh(self) -> None:
        """Publish micro-clusters with at least ``min_size`` points as the current clusters."""
        with self._lock:
            if not self._dirty:
                return
            keep = np.flatnonzero(self.n >= self.min_size)
            cents = self.ls[keep] / self.n[keep, None] if len(keep) else np.zeros((0, FINGERPRINT_DIM))
            radii = self._radius(keep) if len(keep) else np.zeros(0)
            ids, sizes = self.ids[keep].tolist(), self.n[keep].astype(int).tolist()
            self._dirty = False
        self.snapshot = ClusterSnapshot.build(ids, cents, radii, sizes, self.threshold, self.min_radius)

    def recluster(self) -> dict[str, Any]:
        self.refresh()
        return {"reclustered": False, "reason": "online mode updates clusters on every message",
                "clusters": len(self.snapshot.ids)}


# ----------------------------------------------------------------------------- receiving
class Receiver:
    """ZMQ PULL on its own thread; accepted vectors go to the clusterer in batches."""

    def __init__(self, bind: str, clusterer: Any):
        import zmq

        self.zmq = zmq
        self.clusterer = clusterer
        self.received = 0
        self.rejected = RejectCounter()
        self._ctx = zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.bind(bind)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zmq-receiver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close(linger=0)

    def _run(self) -> None:
        zmq = self.zmq
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            accepted: list[list[float]] = []
            now = time.time()
            for _ in range(4096):
                try:
                    frame = self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if self.sock.getsockopt(zmq.RCVMORE):
                    while self.sock.getsockopt(zmq.RCVMORE):
                        self.sock.recv()
                    self.rejected.add(RejectedMessage("multipart", "one frame per message expected"))
                    continue
                try:
                    accepted.append(parse_frame(frame, now).vector)
                except RejectedMessage as e:
                    self.rejected.add(e)
            if accepted:
                try:
                    self.clusterer.add_many(accepted)
                except Exception:  # a clustering bug must not stop the receiver
                    log.exception("clusterer update failed")
                self.received += len(accepted)


# ----------------------------------------------------------------------------- HTTP
def create_app(clusterer: Any, receiver: Receiver, args: argparse.Namespace) -> Any:
    counters = {"predict_requests": 0, "http_rejected": 0, "started_at": time.time()}
    stop = threading.Event()

    def timer() -> None:
        interval = args.recluster_interval if clusterer.mode == "batch" else 0.2
        while not stop.wait(interval):
            try:
                clusterer.recluster()
            except Exception as e:  # e.g. a degenerate buffer; keep serving the old clusters
                clusterer.last_error = str(e)
                log.exception("re-clustering failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        receiver.start()
        t = threading.Thread(target=timer, name="recluster", daemon=True)
        t.start()
        print(json.dumps({"event": "ready", "zmq_endpoint": receiver.endpoint, "mode": clusterer.mode,
                          "backend": getattr(clusterer, "backend", None)}), flush=True)
        yield
        stop.set()
        receiver.stop()

    app = FastAPI(title="rapids clustering sidecar", lifespan=lifespan)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        counters["http_rejected"] += 1
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(ApiError(f"internal error: {e}", status=500, type="server_error").body(), 500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/centroids")
    async def centroids() -> dict[str, Any]:
        if clusterer.mode == "online":
            clusterer.refresh()
        snap = clusterer.snapshot
        return {"mode": clusterer.mode, "updated_at": snap.updated_at, "clusters": snap.to_json()}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        online_points = clusterer.points if clusterer.mode == "online" else 0  # read first: the snapshot covers them
        if clusterer.mode == "online":
            clusterer.refresh()  # like /centroids and /predict: report the clusters of every point absorbed so far
        snap = clusterer.snapshot
        out = {
            "received": receiver.received,
            "rejected": receiver.rejected.total,
            "rejected_by_reason": dict(receiver.rejected.by_reason),
            "last_rejections": list(receiver.rejected.last_errors),
            "buffered": clusterer.buffered,
            "clusters": len(snap.ids),
            "mode": clusterer.mode,
            "zmq_endpoint": receiver.endpoint,
            "predict_requests": counters["predict_requests"],
            "http_rejected": counters["http_rejected"],
            "uptime_s": round(time.time() - counters["started_at"], 3),
        }
        if clusterer.mode == "batch":
            out.update(backend=clusterer.backend, reclusters=clusterer.reclusters,
                       last_recluster_s=clusterer.last_recluster_s, last_error=clusterer.last_error,
                       recluster_interval=args.recluster_interval)
        else:
            out.update(micro_clusters=len(clusterer.n), online_points=online_points, merges=clusterer.merges,
                       online_threshold=clusterer.threshold)
        return out

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        counters["predict_requests"] += 1
        body = parse_json_object(await request.body())
        vectors, batch = parse_vectors(body)
        if clusterer.mode == "online":
            clusterer.refresh()
        snap = clusterer.snapshot
        results = [snap.predict(np.asarray(v, dtype=np.float64)) for v in vectors]
        return fast_json_response({"results": results} if batch else results[0])

    @app.post("/recluster")
    async def recluster() -> dict[str, Any]:
        try:
            return await run_in_threadpool(clusterer.recluster)
        except Exception as e:
            raise ApiError(f"re-clustering failed: {e}", status=500, type="server_error") from None

    return app


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="ZMQ fingerprint clustering sidecar (batch HDBSCAN or online micro-clusters)")
    ap.add_argument("--zmq-bind", default="tcp://*:9001", help="ZMQ PULL address the engine pushes fingerprints to")
    ap.add_argument("--host", default="127.0.0.1", help="HTTP host (0.0.0.0 to serve other machines)")
    ap.add_argument("--port", type=int, default=9000, help="HTTP port")
    ap.add_argument("--recluster-interval", type=float, default=60.0, help="batch mode: seconds between re-clusterings")
    ap.add_argument("--buffer-size", type=int, default=50_000, help="batch mode: fingerprints kept for re-clustering")
    ap.add_argument("--min-cluster-size", type=int, default=15, help="batch mode: HDBSCAN min_cluster_size")
    ap.add_argument("--min-samples", type=int, default=None, help="batch mode: HDBSCAN min_samples")
    ap.add_argument("--backend", choices=["auto", "cuml", "hdbscan", "sklearn"], default="auto")
    ap.add_argument("--online", action="store_true", help="update micro-clusters on every message")
    ap.add_argument("--online-threshold", type=float, default=2.0,
                    help="online: join a micro-cluster within this many RMS radii of its centroid")
    ap.add_argument("--online-min-radius", type=float, default=0.05,
                    help="online: radius floor (fingerprint units) for new, tight micro-clusters")
    ap.add_argument("--online-max-clusters", type=int, default=256, help="online: merge the closest pair past this")
    ap.add_argument("--online-min-size", type=int, default=5, help="online: report micro-clusters of at least N points")
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = []
    if not 0 <= args.port <= 65535:
        problems.append("--port must be in 0..65535")
    if args.recluster_interval <= 0:
        problems.append("--recluster-interval must be > 0")
    if args.buffer_size < 2 or args.min_cluster_size < 2:
        problems.append("--buffer-size and --min-cluster-size must be at least 2")
    if args.online_threshold <= 0 or args.online_min_radius <= 0:
        problems.append("--online-threshold and --online-min-radius must be > 0")
    if args.online_max_clusters < 2 or args.online_min_size < 1:
        problems.append("--online-max-clusters must be >= 2 and --online-min-size >= 1")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.online:
        clusterer: Any = OnlineClusterer(args.online_threshold, args.online_min_radius, args.online_max_clusters,
                                         args.online_min_size)
    else:
        clusterer = BatchClusterer(args.buffer_size, args.min_cluster_size, args.min_samples,
                                   pick_backend(args.backend))
    import uvicorn
    import zmq

    try:
        receiver = Receiver(args.zmq_bind, clusterer)
    except zmq.ZMQError as e:
        print(f"error: cannot bind --zmq-bind {args.zmq_bind!r}: {e}", file=sys.stderr)
        return 2
    app = create_app(clusterer, receiver, args)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           access_log=False))
    try:
        server.run()
    except SystemExit:
        return 2
    return 0 if server.started else 2


if __name__ == "__main__":
    sys.exit(main())
