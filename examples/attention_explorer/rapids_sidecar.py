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

Fingerprint versions: the clusters hold fingerprints of one version (``--fingerprint-version``;
``auto``, the default, takes the version of the first accepted message). A message of another
version is rejected (``fingerprint_version_mismatch``), a ``/predict`` of another version is a
400 naming ``fingerprint_version``; zones are read with the clusters' version's thresholds.

One bad input never hurts the others: every vector (ZMQ stream and ``/predict``) must hold 20
finite values with ``|x| <= --max-abs-value`` (default 1e6) or it is rejected and counted; the
HDBSCAN fit runs in a spawned child process that is killed when it overruns
``--recluster-timeout`` (the previous clusters stay served); ``/predict`` answers 400/413, never
500, to malformed or oversized bodies; SIGTERM stops the process within seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import math
import multiprocessing
import os
import signal
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
from starlette.requests import ClientDisconnect

from sgl_kernel.zones import FINGERPRINT_DIM, FINGERPRINT_VERSIONS
from sglang.srt.attention_sidecar.describe import describe
from sglang.srt.attention_sidecar.errors import (
    ApiError,
    fast_json_response,
    parse_fingerprint_version,
    parse_json_object,
    parse_vector,
    parse_vectors,
    version_mismatch,
)
from sglang.srt.attention_sidecar.wire import RejectCounter, RejectedMessage, parse_frame

log = logging.getLogger("rapids_sidecar")
BATCH_ASSIGN_FACTOR = 2.0  # batch mode: a point belongs to a cluster within 2x its 95th-percentile radius
# Fingerprint components are bounded quantities (masses and normalized entropy in [0, 1], histogram
# shares); 1e6 leaves six orders of magnitude for custom or unnormalized fingerprints while keeping
# every squared distance in 20-D (at most 20 * (2e6)^2 = 8e13) far from overflow, even in float32.
DEFAULT_MAX_ABS = 1e6
DEFAULT_RECLUSTER_TIMEOUT_S = 60.0
DEFAULT_MAX_BODY_BYTES = 8 << 20  # a full 10,000-vector /predict batch is about 5 MB of JSON
MAX_PREDICT_BATCH = 10_000
WORKER_START_TIMEOUT_S = 120.0  # the fit worker's imports (numpy, hdbscan/cuML), not counted in the fit timeout
SHUTDOWN_GRACE_S = 2.0  # SIGTERM: in-flight HTTP requests get this long before they are cancelled
SHUTDOWN_HARD_LIMIT_S = 8  # SIGTERM: the kernel ends the process (SIGALRM) if shutdown still runs after this


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
    fingerprint_version: int | None = None  # of the clustered fingerprints (None: nothing received yet)

    @staticmethod
    def empty(assign_factor: float, min_radius: float, version: int | None = None) -> "ClusterSnapshot":
        return ClusterSnapshot(np.zeros(0, int), np.zeros((0, FINGERPRINT_DIM)), np.zeros(0), np.zeros(0, int), (),
                               assign_factor, min_radius, time.time(), version)

    @staticmethod
    def build(ids: list[int], centroids: np.ndarray, radii: np.ndarray, sizes: list[int], assign_factor: float,
              min_radius: float, version: int | None = None) -> "ClusterSnapshot":
        info = tuple(describe(c, version or 1) for c in centroids)
        return ClusterSnapshot(np.asarray(ids, int), np.asarray(centroids, np.float64).reshape(-1, FINGERPRINT_DIM),
                               np.asarray(radii, np.float64), np.asarray(sizes, int), info, assign_factor,
                               min_radius, time.time(), version)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"cluster_id": int(self.ids[i]), "size": int(self.sizes[i]),
                 "centroid": [round(float(v), 8) for v in self.centroids[i]],
                 "radius": round(float(self.radii[i]), 6), **self.info[i]} for i in range(len(self.ids))]

    def predict(self, x: np.ndarray, version: int = 1) -> dict[str, Any]:
        """Nearest centroid; inside ``assign_factor x radius`` it is that cluster, else -1 (noise).
        ``x`` is a fingerprint of ``version``, the clusters' (the caller checks): its own zone is
        read with that version."""
        if len(self.ids) == 0:
            own = describe(x, version)
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
        own = describe(x, version)
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


class ReclusterTimeout(RuntimeError):
    """The fit ran past ``--recluster-timeout``; its worker process was killed."""


class ShuttingDown(RuntimeError):
    """The sidecar is stopping; the pending or running re-clustering was abandoned."""


def _fit_worker_main(conn: Any, parent_pid: int, backend: str, min_cluster_size: int,
                     min_samples: int | None) -> None:
    """Child process: answers each received array with ("ok", labels) or ("error", text)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    with contextlib.suppress(Exception):  # Linux: die with the parent even in the middle of a fit
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        return
    import warnings

    warnings.simplefilter("ignore")  # degenerate buffers make numpy warn on every fit
    try:
        pick_backend(backend)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"backend {backend!r} is not importable: {e}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            X = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe or died
            return
        try:
            labels = np.asarray(hdbscan_labels(backend, X, min_cluster_size, min_samples))
            conn.send(("ok", labels))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class FitWorker:
    """HDBSCAN fits in one spawned child process, so a fit that never ends can be killed.

    A hung fit (HDBSCAN on overflowing distances loops in compiled code holding the GIL) cannot
    be interrupted inside this process; in a child it is SIGKILLed and a fresh worker is started
    for the next fit. Spawn, not fork: cuML needs a fresh CUDA context, and the parent has threads.
    Only one thread (the re-clustering thread) uses a FitWorker.
    """

    def __init__(self, backend: str, min_cluster_size: int, min_samples: int | None):
        self.backend = backend
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self.starts = 0
        self.phase = "idle"  # idle | starting (worker imports) | fitting

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def _wait(self, deadline: float, stopping: Any) -> bool:
        """Poll the pipe until a message arrives (True) or ``deadline`` passes (False)."""
        while True:
            if stopping():
                self.close()
                raise ShuttingDown("the sidecar is shutting down")
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._conn.poll(min(0.1, left)):
                return True
            if not self._proc.is_alive() and not self._conn.poll(0):
                code = self._proc.exitcode
                self.close()
                raise RuntimeError(f"the fit worker exited with code {code}")

    def _start(self, stopping: Any) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_fit_worker_main, name="rapids-sidecar-fit", daemon=True,
                                 args=(child, os.getpid(), self.backend, self.min_cluster_size, self.min_samples))
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1
        if not self._wait(time.monotonic() + WORKER_START_TIMEOUT_S, stopping):
            self.close()
            raise RuntimeError(f"the fit worker did not start within {WORKER_START_TIMEOUT_S:g} s")
        status, payload = self._conn.recv()
        if status != "ready":
            self.close()
            raise RuntimeError(str(payload))

    def fit(self, X: np.ndarray, timeout: float, stopping: Any) -> np.ndarray:
        """Labels for ``X``; ReclusterTimeout after ``timeout`` s (the worker is killed)."""
        try:
            if self._proc is None or not self._proc.is_alive():
                self.close()
                self.phase = "starting"
                self._start(stopping)
            self.phase = "fitting"
            try:
                self._conn.send(X)
            except (OSError, ValueError) as e:
                self.close()
                raise RuntimeError(f"the fit worker is gone: {e}") from None
            if not self._wait(time.monotonic() + timeout, stopping):
                self.close()
                raise ReclusterTimeout(f"re-clustering {len(X)} fingerprints timed out after {timeout:g} s; the "
                                       f"fit was killed and the previous clusters are kept")
            try:
                status, payload = self._conn.recv()
            except (EOFError, OSError) as e:
                self.close()
                raise RuntimeError(f"the fit worker is gone: {e}") from None
        finally:
            self.phase = "idle"
        if status != "ok":
            raise RuntimeError(str(payload))
        labels = np.asarray(payload)
        if labels.shape != (len(X),):
            raise RuntimeError(f"the fit returned {labels.shape} labels for {len(X)} points")
        return labels

    def close(self) -> None:
        """Kill the worker (if any); the next fit starts a new one."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            with contextlib.suppress(Exception):
                if proc.is_alive():
                    proc.kill()
                proc.join(timeout=5)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class BatchClusterer:
    """Bounded buffer of recent fingerprints, re-clustered with HDBSCAN on a timer.

    All fits run on one thread (``start``): the timer's and those asked for by ``POST
    /recluster`` (``submit_recluster``). The fit itself runs in a :class:`FitWorker` child process
    bounded by ``recluster_timeout``; a fit that fails or times out keeps the previous clusters.
    """

    mode = "batch"

    def __init__(self, buffer_size: int, min_cluster_size: int, min_samples: int | None, backend: str,
                 recluster_timeout: float = DEFAULT_RECLUSTER_TIMEOUT_S, max_abs: float = DEFAULT_MAX_ABS,
                 fingerprint_version: int | None = None):
        # the version of every buffered fingerprint (None until the first one fixes it: --fingerprint-version auto)
        self.fingerprint_version = fingerprint_version
        self.buffer: collections.deque[np.ndarray] = collections.deque(maxlen=buffer_size)
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.backend = backend
        self.recluster_timeout = recluster_timeout
        self.max_abs = max_abs
        self.snapshot = ClusterSnapshot.empty(BATCH_ASSIGN_FACTOR, 1e-6, fingerprint_version)
        self.reclusters = 0
        self.recluster_timeouts = 0
        self.recluster_failures = 0
        self.last_recluster_s: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # the buffer is appended by the receiver, read by re-clustering
        self._fit_lock = threading.Lock()
        self._worker = FitWorker(backend, min_cluster_size, min_samples)
        self._requests: collections.deque[concurrent.futures.Future] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._abort = False  # set from a signal handler: a plain attribute, no lock
        self._thread: threading.Thread | None = None

    def add_many(self, vectors: list[list[float]]) -> None:
        with self._lock:
            self.buffer.extend(vectors)

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    @property
    def fit_worker_pid(self) -> int | None:
        return self._worker.pid

    @property
    def fit_worker_starts(self) -> int:
        return self._worker.starts

    @property
    def recluster_state(self) -> str:
        """idle | starting (the fit worker is importing) | fitting."""
        return self._worker.phase

    def _stopping(self) -> bool:
        return self._abort or self._stop.is_set()

    # -- the re-clustering thread
    def start(self, interval: float) -> None:
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="recluster", daemon=True)
        self._thread.start()

    def abort(self) -> None:
        """Signal-handler safe: the running fit is killed and pending requests fail within ~0.1 s."""
        self._abort = True

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._worker.close()

    def submit_recluster(self) -> concurrent.futures.Future:
        """Ask the re-clustering thread for a fit now; the future holds its result or exception."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._thread is None or self._stopping():
            fut.set_exception(ShuttingDown("the sidecar is shutting down") if self._stopping()
                              else RuntimeError("the re-clustering thread is not running"))
            return fut
        self._requests.append(fut)
        self._wake.set()
        return fut

    def _loop(self, interval: float) -> None:
        next_tick = time.monotonic() + interval
        try:
            while not self._stopping():
                self._wake.clear()
                fut = self._requests.popleft() if self._requests else None
                if fut is None and time.monotonic() < next_tick:
                    self._wake.wait(min(0.1, next_tick - time.monotonic()))
                    continue
                if fut is not None and not fut.set_running_or_notify_cancel():
                    continue  # the HTTP client went away
                try:
                    result = self._recluster_now()
                except BaseException as e:  # noqa: BLE001 - handed to the caller; the timer only logs
                    if fut is not None:
                        fut.set_exception(e)
                    elif not isinstance(e, ShuttingDown):
                        log.warning("re-clustering failed: %s", e)
                else:
                    if fut is not None:
                        fut.set_result(result)
                if fut is None:
                    next_tick = time.monotonic() + interval
        finally:
            self._worker.close()
            while self._requests:
                fut = self._requests.popleft()
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(ShuttingDown("the sidecar is shutting down"))

    # -- one fit
    def recluster(self) -> dict[str, Any]:
        """Fit now; through the re-clustering thread when it runs, else on the calling thread."""
        if self._thread is not None and self._thread.is_alive():
            return self.submit_recluster().result()
        return self._recluster_now()

    def _recluster_now(self) -> dict[str, Any]:
        with self._fit_lock:
            with self._lock:
                X = np.asarray(self.buffer, dtype=np.float64).reshape(-1, FINGERPRINT_DIM)
                version = self.fingerprint_version  # fixed before the first fingerprint was buffered
            # ingestion rejects such vectors; this keeps a fit safe from any other caller of add_many
            ok = np.all(np.abs(X) <= self.max_abs, axis=1)  # NaN compares false: dropped too
            if not ok.all():
                X = X[ok]
            if len(X) < max(2, self.min_cluster_size):
                return {"reclustered": False, "reason": f"only {len(X)} fingerprints buffered"}
            t0 = time.perf_counter()
            try:
                labels = self._worker.fit(X, self.recluster_timeout, self._stopping)
                ids, cents, radii, sizes = [], [], [], []
                for cid in sorted(set(int(l) for l in labels) - {-1}):
                    m = X[labels == cid]
                    c = m.mean(axis=0)
                    ids.append(cid); cents.append(c); sizes.append(len(m))
                    radii.append(float(np.percentile(np.linalg.norm(m - c, axis=1), 95)))
                snapshot = ClusterSnapshot.build(ids, np.asarray(cents).reshape(-1, FINGERPRINT_DIM),
                                                 np.asarray(radii), sizes, BATCH_ASSIGN_FACTOR, 1e-6, version)
            except ShuttingDown:
                raise
            except ReclusterTimeout as e:
                self.recluster_timeouts += 1
                self.last_error = str(e)
                raise
            except Exception as e:
                self.recluster_failures += 1
                self.last_error = str(e)
                raise
            self.snapshot = snapshot
            self.reclusters += 1
            self.last_recluster_s = round(time.perf_counter() - t0, 4)
            return {"reclustered": True, "points": len(X), "clusters": len(ids),
                    "noise_fraction": round(float(np.mean(labels < 0)), 6), "seconds": self.last_recluster_s}


class OnlineClusterer:
    """Micro-clusters (CluStream-style cluster features) updated on every fingerprint."""

    mode = "online"

    def __init__(self, threshold: float, min_radius: float, max_clusters: int, min_size: int,
                 fingerprint_version: int | None = None):
        # the version of every absorbed fingerprint (None until the first one fixes it: --fingerprint-version auto)
        self.fingerprint_version = fingerprint_version
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
        self.snapshot = ClusterSnapshot.empty(threshold, min_radius, fingerprint_version)
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
            version = self.fingerprint_version
            self._dirty = False
        self.snapshot = ClusterSnapshot.build(ids, cents, radii, sizes, self.threshold, self.min_radius, version)

    def recluster(self) -> dict[str, Any]:
        self.refresh()
        return {"reclustered": False, "reason": "online mode updates clusters on every message",
                "clusters": len(self.snapshot.ids)}


# ----------------------------------------------------------------------------- receiving
def out_of_range(vec: list[float], max_abs: float) -> bool:
    """True when a (finite) vector has a component beyond +-max_abs."""
    return max(vec) > max_abs or min(vec) < -max_abs


class Receiver:
    """ZMQ PULL on its own thread; accepted vectors go to the clusterer in batches.

    Frames that are not valid fingerprint messages (``wire.parse_frame``: bad JSON, wrong
    dimension, NaN/infinity, ...), vectors with a component beyond ``max_abs``
    (``out_of_range``) and fingerprints of a version other than the clusterer's
    (``fingerprint_version_mismatch``) are counted under their reason and dropped. With no
    version set (``--fingerprint-version auto``) the first accepted message fixes it.
    """

    def __init__(self, bind: str, clusterer: Any, max_abs: float = DEFAULT_MAX_ABS):
        import zmq

        self.zmq = zmq
        self.clusterer = clusterer
        self.max_abs = max_abs
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
                    msg = parse_frame(frame, now)
                    vec = msg.vector
                    if out_of_range(vec, self.max_abs):
                        raise RejectedMessage("out_of_range", f"a vector value is beyond +-{self.max_abs:g}")
                    self._check_version(msg.fingerprint_version)
                    accepted.append(vec)
                except RejectedMessage as e:
                    self.rejected.add(e)
            if accepted:
                try:
                    self.clusterer.add_many(accepted)
                except Exception:  # a clustering bug must not stop the receiver
                    log.exception("clusterer update failed")
                self.received += len(accepted)


    def _check_version(self, version: int) -> None:
        """Accept only the clusterer's version; the first accepted message fixes it when none is set."""
        current = self.clusterer.fingerprint_version
        if current is None:
            self.clusterer.fingerprint_version = version  # once, before any fingerprint is added: never changes
            log.info("clustering fingerprints of version %d (the first message's)", version)
        elif version != current:
            raise RejectedMessage("fingerprint_version_mismatch",
                                  f"fingerprint_version {version}; this sidecar clusters version {current}")


# ----------------------------------------------------------------------------- HTTP
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ApiError 413 past ``limit`` bytes: on Content-Length before reading
    anything, and while reading a body without one (chunked) so nothing larger is ever buffered."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ApiError(f"request body is {int(declared)} bytes, at most {limit} allowed", status=413,
                       code="body_too_large")
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise ApiError(f"request body is over {limit} bytes", status=413, code="body_too_large")
    except ClientDisconnect:
        raise ApiError("the client went away before sending the whole body", code="client_disconnected") from None
    return bytes(buf)


def parse_body_object(raw: bytes) -> dict[str, Any]:
    """``parse_json_object`` plus the inputs it lets through as exceptions other than ApiError."""
    try:
        return parse_json_object(raw)
    except RecursionError:  # e.g. 100,000 nested lists
        raise ApiError("request body is not valid JSON: nested too deeply", code="invalid_json") from None
    except ValueError as e:  # e.g. an integer literal over Python's 4300-digit conversion limit
        raise ApiError(f"request body is not valid JSON: {str(e)[:120]}", code="invalid_json") from None


def check_predict_vector(value: Any, param: str, max_abs: float) -> list[float]:
    """``errors.parse_vector`` plus integers beyond float range and the ``max_abs`` bound."""
    try:
        vec = parse_vector(value, param)
    except OverflowError:  # a JSON integer such as 10**400: math.isfinite cannot convert it
        raise ApiError(f"'{param}' holds a number beyond the float range", param=param,
                       code="invalid_vector") from None
    except (RecursionError, ValueError):  # describing a deeply nested or huge element
        raise ApiError(f"'{param}' must be a list of {FINGERPRINT_DIM} numbers", param=param,
                       code="invalid_vector") from None
    if out_of_range(vec, max_abs):
        raise ApiError(f"'{param}' holds a value beyond +-{max_abs:g} (--max-abs-value)", param=param,
                       code="out_of_range")
    return vec


def create_app(clusterer: Any, receiver: Receiver, args: argparse.Namespace) -> Any:
    counters = {"predict_requests": 0, "http_rejected": 0, "started_at": time.time()}
    http_rejected_by_reason: dict[str, int] = {}
    stop = threading.Event()
    max_abs = getattr(args, "max_abs_value", DEFAULT_MAX_ABS)
    max_body = getattr(args, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)

    def online_timer() -> None:
        while not stop.wait(0.2):
            try:
                clusterer.recluster()
            except Exception as e:
                log.exception("refreshing the online clusters failed: %s", e)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        receiver.start()
        if clusterer.mode == "batch":
            clusterer.start(args.recluster_interval)
        else:
            threading.Thread(target=online_timer, name="online-refresh", daemon=True).start()
        print(json.dumps({"event": "ready", "zmq_endpoint": receiver.endpoint, "mode": clusterer.mode,
                          "backend": getattr(clusterer, "backend", None)}), flush=True)
        yield
        stop.set()
        if clusterer.mode == "batch":
            clusterer.stop()
        receiver.stop()

    app = FastAPI(title="rapids clustering sidecar", lifespan=lifespan)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        if e.status < 500:
            counters["http_rejected"] += 1
            key = e.code or "invalid_request"
            http_rejected_by_reason[key] = http_rejected_by_reason.get(key, 0) + 1
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
        # the version of the clustered fingerprints (null until the first one, in auto mode): a client
        # assigns only fingerprints of that version to these clusters
        return {"mode": clusterer.mode, "updated_at": snap.updated_at,
                "fingerprint_version": clusterer.fingerprint_version, "clusters": snap.to_json()}

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
            "fingerprint_version": clusterer.fingerprint_version,
            "zmq_endpoint": receiver.endpoint,
            "predict_requests": counters["predict_requests"],
            "http_rejected": counters["http_rejected"],
            "http_rejected_by_reason": dict(http_rejected_by_reason),
            "max_abs_value": max_abs,
            "max_body_bytes": max_body,
            "uptime_s": round(time.time() - counters["started_at"], 3),
        }
        if clusterer.mode == "batch":
            out.update(backend=clusterer.backend, reclusters=clusterer.reclusters,
                       last_recluster_s=clusterer.last_recluster_s, last_error=clusterer.last_error,
                       recluster_interval=args.recluster_interval, recluster_timeout=clusterer.recluster_timeout,
                       recluster_timeouts=clusterer.recluster_timeouts,
                       recluster_failures=clusterer.recluster_failures, recluster_state=clusterer.recluster_state,
                       fit_worker_pid=clusterer.fit_worker_pid, fit_worker_starts=clusterer.fit_worker_starts)
        else:
            out.update(micro_clusters=len(clusterer.n), online_points=online_points, merges=clusterer.merges,
                       online_threshold=clusterer.threshold)
        return out

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        counters["predict_requests"] += 1
        body = parse_body_object(await read_body(request, max_body))
        vectors, batch = parse_vectors(body, MAX_PREDICT_BATCH,
                                       lambda v, param: check_predict_vector(v, param, max_abs))
        asked = parse_fingerprint_version(body.get("fingerprint_version"))
        serving = clusterer.fingerprint_version
        if asked is not None and serving is not None and asked != serving:
            raise version_mismatch(asked, serving, "this sidecar's clusters")
        # absent: the clusters' version (1, fingerprints that do not say, before any arrived)
        version = asked or serving or 1
        if clusterer.mode == "online":
            clusterer.refresh()
        snap = clusterer.snapshot
        results = [{**snap.predict(np.asarray(v, dtype=np.float64), version), "fingerprint_version": version}
                   for v in vectors]
        return fast_json_response({"results": results} if batch else results[0])

    @app.post("/recluster")
    async def recluster() -> dict[str, Any]:
        try:
            if clusterer.mode == "batch":
                return await asyncio.wrap_future(clusterer.submit_recluster())
            return await run_in_threadpool(clusterer.recluster)
        except ReclusterTimeout as e:
            raise ApiError(str(e), status=503, type="server_error", code="recluster_timeout") from None
        except ShuttingDown as e:
            raise ApiError(str(e), status=503, type="server_error", code="shutting_down") from None
        except Exception as e:
            raise ApiError(f"re-clustering failed: {e}", status=500, type="server_error") from None

    return app


def make_server(config: Any, clusterer: Any) -> Any:
    """A uvicorn.Server whose SIGTERM/SIGINT handler also abandons a running fit and arms a hard
    limit; with the bounded graceful shutdown (``SHUTDOWN_GRACE_S``) the process always stops
    within seconds, whatever a request or a fit is doing."""
    import uvicorn

    class SidecarServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # runs in the main thread between bytecodes: no locks here, only flags and alarm()
            if hasattr(clusterer, "abort"):
                clusterer.abort()
            with contextlib.suppress(Exception):
                signal.alarm(SHUTDOWN_HARD_LIMIT_S)  # SIGALRM's default action ends the process
            super().handle_exit(sig, frame)

    return SidecarServer(config)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="ZMQ fingerprint clustering sidecar (batch HDBSCAN or online micro-clusters)")
    ap.add_argument("--zmq-bind", default="tcp://*:9001", help="ZMQ PULL address the engine pushes fingerprints to")
    ap.add_argument("--host", default="127.0.0.1", help="HTTP host (0.0.0.0 to serve other machines)")
    ap.add_argument("--port", type=int, default=9000, help="HTTP port")
    ap.add_argument("--recluster-interval", type=float, default=60.0, help="batch mode: seconds between re-clusterings")
    ap.add_argument("--recluster-timeout", type=float, default=DEFAULT_RECLUSTER_TIMEOUT_S,
                    help="batch mode: a fit running longer is killed and the previous clusters are kept")
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
    ap.add_argument("--fingerprint-version", choices=["auto", *map(str, FINGERPRINT_VERSIONS)], default="auto",
                    help="cluster fingerprints of this version only; auto: the first accepted message's version. "
                         "Messages of another version are rejected, /predict of another version is a 400")
    ap.add_argument("--max-abs-value", type=float, default=DEFAULT_MAX_ABS,
                    help="vectors (ZMQ and /predict) with a component beyond +-this are rejected")
    ap.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                    help="POST bodies larger than this answer 413")
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = []
    if not 0 <= args.port <= 65535:
        problems.append("--port must be in 0..65535")
    if not args.recluster_interval > 0:
        problems.append("--recluster-interval must be > 0")
    if not (args.recluster_timeout > 0 and math.isfinite(args.recluster_timeout)):
        problems.append("--recluster-timeout must be a finite number > 0")
    if args.buffer_size < 2 or args.min_cluster_size < 2:
        problems.append("--buffer-size and --min-cluster-size must be at least 2")
    if args.online_threshold <= 0 or args.online_min_radius <= 0:
        problems.append("--online-threshold and --online-min-radius must be > 0")
    if args.online_max_clusters < 2 or args.online_min_size < 1:
        problems.append("--online-max-clusters must be >= 2 and --online-min-size >= 1")
    if not (args.max_abs_value > 0 and math.isfinite(args.max_abs_value)):
        problems.append("--max-abs-value must be a finite number > 0")
    if args.max_body_bytes < 1024:
        problems.append("--max-body-bytes must be at least 1024")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    version = None if args.fingerprint_version == "auto" else int(args.fingerprint_version)
    if args.online:
        clusterer: Any = OnlineClusterer(args.online_threshold, args.online_min_radius, args.online_max_clusters,
                                         args.online_min_size, version)
    else:
        clusterer = BatchClusterer(args.buffer_size, args.min_cluster_size, args.min_samples,
                                   pick_backend(args.backend), args.recluster_timeout, args.max_abs_value, version)
    import uvicorn
    import zmq

    try:
        receiver = Receiver(args.zmq_bind, clusterer, args.max_abs_value)
    except zmq.ZMQError as e:
        print(f"error: cannot bind --zmq-bind {args.zmq_bind!r}: {e}", file=sys.stderr)
        return 2
    app = create_app(clusterer, receiver, args)
    server = make_server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                        access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_S), clusterer)
    try:
        server.run()
    except SystemExit:
        return 2
    finally:
        with contextlib.suppress(Exception):
            signal.alarm(0)  # shut down in time: disarm the hard limit set by the signal handler
        if clusterer.mode == "batch":
            clusterer.stop(timeout=1)  # the lifespan normally did this; never leave a fit worker behind
    return 0 if server.started else 2


if __name__ == "__main__":
    sys.exit(main())
