"""FingerprintStream: the engine's non-blocking stream of fingerprints to a sidecar (ZMQ PUSH).

Installed by the capture hook when the server runs with ``--attention-sidecar-url``. The
receiving end is one of the two services of docs/sidecar.md#two-services
(``python -m sglang.srt.attention_sidecar`` or ``rapids_sidecar.py``); messages follow
docs/architecture.md#wire-format. The scheduler only puts device tensors on a bounded
queue; a background thread copies them to the host, serializes and sends with NOBLOCK.
A full queue or a sidecar that does not read drops messages and counts them
(``dropped``, exported in /metrics): generation never waits for the sidecar.

Every message says its ``fingerprint_version`` (the request's: 1 = over every key, 2 =
sink-aware), and its ``manifold`` is the zone read with that version's thresholds; the sidecars
store, cluster and classify each version on its own.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import zmq

from sgl_kernel import zones

logger = logging.getLogger(__name__)
QUEUE_SIZE = 10_000
SNDHWM = 10_000


class FingerprintStream:
    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self.q: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fingerprint-stream", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[Any, ...]) -> None:
        try:
            self.q.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def step(self, rid: str, step: int, vector: Any, version: int = zones.DEFAULT_FINGERPRINT_VERSION) -> None:
        """One decode step's fingerprint, of fingerprint ``version`` (the request's)."""
        self._put(("step", rid, step, vector, version, time.time()))

    def request_summary(self, rid: str, vector: Any, steps: int,
                        version: int = zones.DEFAULT_FINGERPRINT_VERSION) -> None:
        """The request's mean fingerprint over ``steps`` steps, of fingerprint ``version``."""
        self._put(("request", rid, steps, vector, version, time.time()))

    def _run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.url)
        while not self._stop.is_set():
            try:
                kind, rid, step, vec, version, ts = self.q.get(timeout=0.5)
            except queue.Empty:
                continue
            v = [float(x) for x in vec.cpu().tolist()] if hasattr(vec, "cpu") else [float(x) for x in vec]
            # "version" is the wire format's; "fingerprint_version" the vector's definition
            msg = {"version": 1, "kind": kind, "request_id": rid, "vector": v, "fingerprint_version": version,
                   "manifold": zones.classify(v, version).zone, "model": self.model, "timestamp": ts}
            msg["step" if kind == "step" else "steps"] = step
            try:
                sock.send_string(json.dumps(msg), flags=zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                self.dropped += 1
        sock.close(0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
