"""ZMQ PULL -> write buffer -> SQLite, on one background thread.

A fingerprint counts as *acknowledged* once it is accepted into the write buffer (``received``
in /stats). From then on it is never dropped: the buffer is written in one transaction per
flush (every ``flush_size`` messages or ``flush_interval`` seconds, on ``POST /storage/flush``,
and on shutdown); a failed write keeps the rows and retries. When the buffer reaches
``max_buffer`` the thread stops reading the socket, so ZMQ's high-water mark pushes back on
the senders instead of this process growing without bound.

On stop (SIGTERM) the thread stops reading new frames, takes whatever frames already sit in
the socket's queue (bounded by ``drain_timeout``), flushes everything and closes the database.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import zmq

from sglang.srt.attention_sidecar import store
from sglang.srt.attention_sidecar.wire import FingerprintMessage, RejectCounter, RejectedMessage, parse_frame

log = logging.getLogger("attention_sidecar.ingest")


@dataclass
class IngestConfig:
    zmq_bind: str
    db_path: str
    flush_size: int = 8192
    flush_interval: float = 0.5
    max_buffer: int = 200_000
    recv_batch: int = 4096
    drain_timeout: float = 5.0
    rcvhwm: int = 100_000


class Ingestor:
    def __init__(self, cfg: IngestConfig, conn: sqlite3.Connection):
        self.cfg = cfg
        self.conn = conn
        self.received = 0
        self.stored = 0
        self.flushes = 0
        self.flush_errors = 0
        self.last_flush_error: str | None = None
        self.last_flush_ms = 0.0
        self.rejected = RejectCounter()
        self.received_by_version: dict[int, int] = {}  # fingerprint_version -> accepted messages
        self._buffer: list[FingerprintMessage] = []
        self._lock = threading.Lock()  # guards _buffer and the SQLite connection
        self._stop = threading.Event()
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(cfg.zmq_bind)  # raises zmq.ZMQError on a bad or busy address
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self.stored = store.count_fingerprints(conn)  # rows from earlier runs count as stored

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop reading, drain what already arrived, flush everything. Safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    # -- stats -------------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def stats(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "received_by_fingerprint_version": {str(v): n for v, n in sorted(self.received_by_version.items())},
            "rejected": self.rejected.total,
            "rejected_by_reason": dict(self.rejected.by_reason),
            "last_rejections": list(self.rejected.last_errors),
            "buffered": self.buffered,
            "stored": self.stored,
            "flushes": self.flushes,
            "flush_errors": self.flush_errors,
            "last_flush_error": self.last_flush_error,
            "last_flush_ms": round(self.last_flush_ms, 3),
            "zmq_endpoint": self.endpoint,
        }

    # -- writing -----------------------------------------------------------------------------
    def flush(self) -> int:
        """Write the buffer in one transaction; returns rows written (0 on error, rows kept)."""
        with self._lock:
            rows = self._buffer
            if not rows:
                return 0
            t0 = time.perf_counter()
            try:
                store.insert_messages(self.conn, rows)
            except sqlite3.Error as e:  # disk full, locked past busy_timeout...: keep rows, retry later
                self.flush_errors += 1
                self.last_flush_error = str(e)
                log.error("flush of %d fingerprints failed (kept for retry): %s", len(rows), e)
                return 0
            self._buffer = []
            self.stored += len(rows)
            self.flushes += 1
            self.last_flush_ms = (time.perf_counter() - t0) * 1e3
            return len(rows)

    # -- receiving ---------------------------------------------------------------------------
    def _take_frames(self, max_frames: int) -> int:
        """Receive up to ``max_frames`` ready frames without blocking; parse; buffer."""
        sock = self._sock
        accepted: list[FingerprintMessage] = []
        n = 0
        now = time.time()
        while n < max_frames:
            try:
                frame = sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            n += 1
            if sock.getsockopt(zmq.RCVMORE):
                while sock.getsockopt(zmq.RCVMORE):  # swallow the rest of the multipart message
                    sock.recv()
                self.rejected.add(RejectedMessage("multipart", "one frame per message expected"))
                continue
            try:
                accepted.append(parse_frame(frame, now))
            except RejectedMessage as e:
                self.rejected.add(e)
        if accepted:
            with self._lock:
                self._buffer.extend(accepted)
            self.received += len(accepted)
            by_version = self.received_by_version
            for m in accepted:
                v = m.fingerprint_version
                by_version[v] = by_version.get(v, 0) + 1
        return n

    def _run(self) -> None:
        cfg = self.cfg
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        last_flush = time.monotonic()
        try:
            while not self._stop.is_set():
                if len(self._buffer) >= cfg.max_buffer:
                    # back-pressure: do not read until the buffer is written
                    if self.flush() == 0:
                        time.sleep(0.05)
                    last_flush = time.monotonic()
                    continue
                got = self._take_frames(cfg.recv_batch)
                now = time.monotonic()
                if len(self._buffer) >= cfg.flush_size or (self._buffer and now - last_flush >= cfg.flush_interval):
                    self.flush()
                    last_flush = now
                if got == 0:
                    wait_ms = 50 if not self._buffer else max(1, int((cfg.flush_interval - (now - last_flush)) * 1e3))
                    poller.poll(min(wait_ms, 50))
        except Exception:  # never die silently with acknowledged rows in memory
            log.exception("ingest loop failed; flushing what was received")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        # frames already queued in the socket were sent before we stopped: take them too
        deadline = time.monotonic() + self.cfg.drain_timeout
        while time.monotonic() < deadline and len(self._buffer) < self.cfg.max_buffer * 4:
            if self._take_frames(self.cfg.recv_batch) == 0:
                break
        self._sock.close(linger=0)
        for _ in range(50):  # a locked database gets a few more seconds before giving up
            self.flush()
            if not self._buffer:
                break
            time.sleep(0.1)
        if self._buffer:
            log.error("could not store %d acknowledged fingerprints: %s", len(self._buffer), self.last_flush_error)
