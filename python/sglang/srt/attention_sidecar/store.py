"""SQLite store for fingerprints, sessions, discovery runs and clusters.

One file, WAL journal (readers such as a discovery run never block the ingesting sidecar),
versioned migrations recorded both in ``PRAGMA user_version`` and in ``schema_migrations``.
Vectors are BLOBs of 20 little-endian float64 (``wire.VECTOR_STRUCT``): exact round trip of the
JSON values, 160 bytes a row, and ``numpy.frombuffer`` reads a whole table at once.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from sgl_kernel.zones import FINGERPRINT_DIM
from sglang.srt.attention_sidecar.wire import VECTOR_STRUCT, FingerprintMessage


class StoreError(Exception):
    """The database cannot be opened or used (not SQLite, unreadable, newer schema...)."""


# Each migration is (version, description, SQL). Never edit an applied migration: append one.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "fingerprints, sessions, discovery_runs, clusters",
        """
        CREATE TABLE sessions (
            session_id     TEXT PRIMARY KEY,
            created_at     REAL NOT NULL,
            updated_at     REAL NOT NULL,
            model          TEXT,
            title          TEXT,
            n_requests     INTEGER NOT NULL DEFAULT 0,
            n_fingerprints INTEGER NOT NULL DEFAULT 0,
            summary        TEXT            -- JSON: dominant zone, mean entropy, ...
        );
        CREATE TABLE fingerprints (
            id          INTEGER PRIMARY KEY,
            request_id  TEXT,
            session_id  TEXT,
            kind        TEXT NOT NULL DEFAULT 'step' CHECK (kind IN ('step', 'request')),
            step        INTEGER,
            think_phase TEXT CHECK (think_phase IS NULL OR think_phase IN ('think', 'output')),
            manifold    TEXT,
            model       TEXT,
            timestamp   REAL,           -- sender's clock (seconds since epoch)
            received_at REAL NOT NULL,  -- sidecar's clock
            vector      BLOB NOT NULL CHECK (length(vector) = 160)
        );
        CREATE INDEX idx_fingerprints_request ON fingerprints(request_id);
        CREATE INDEX idx_fingerprints_session ON fingerprints(session_id);
        CREATE INDEX idx_fingerprints_received ON fingerprints(received_at);
        CREATE TABLE discovery_runs (
            run_id         INTEGER PRIMARY KEY,
            started_at     REAL NOT NULL,
            finished_at    REAL,
            status         TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
            n_fingerprints INTEGER,
            n_clusters     INTEGER,
            noise_fraction REAL,
            output_dir     TEXT,
            parameters     TEXT,   -- JSON
            metrics        TEXT,   -- JSON
            error          TEXT
        );
        CREATE TABLE clusters (
            run_id          INTEGER NOT NULL REFERENCES discovery_runs(run_id) ON DELETE CASCADE,
            cluster_id      INTEGER NOT NULL,
            size            INTEGER NOT NULL,
            centroid        BLOB NOT NULL,  -- 20 float64, mean fingerprint of the members
            x               REAL,           -- 2-D centroid on the discovery map
            y               REAL,
            zone            TEXT NOT NULL,
            zone_confidence REAL NOT NULL,
            traits          TEXT NOT NULL,  -- JSON list
            sampling_hints  TEXT NOT NULL,  -- JSON object
            PRIMARY KEY (run_id, cluster_id)
        );
        """,
    ),
    (
        2,
        "fingerprints.fingerprint_version (rows written before it: 1)",
        """
        -- 1 = the original fingerprint over every key, 2 = sink-aware (sgl_kernel.zones):
        -- rows stored before messages carried it are version 1, the only one that existed
        ALTER TABLE fingerprints ADD COLUMN fingerprint_version INTEGER NOT NULL DEFAULT 1
            CHECK (fingerprint_version >= 1);
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

INSERT_FINGERPRINT = (
    "INSERT INTO fingerprints (request_id, session_id, kind, step, think_phase, manifold, model,"
    " timestamp, received_at, vector, fingerprint_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def connect(path: str, *, create: bool = True, timeout: float = 30.0) -> sqlite3.Connection:
    """Open (and migrate) the database at ``path``; StoreError with a clear message otherwise."""
    if os.path.isdir(path):
        raise StoreError(f"database path {path!r} is a directory, not a SQLite file")
    if not create and not os.path.exists(path):
        raise StoreError(f"database {path!r} does not exist")
    parent = os.path.dirname(os.path.abspath(path))
    if create and not os.path.isdir(parent):
        raise StoreError(f"cannot create database {path!r}: folder {parent!r} does not exist")
    try:
        conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: durable across process crashes
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as e:  # "file is not a database", permission, locked...
        raise StoreError(f"cannot use database {path!r}: {e}") from None
    if str(mode).lower() != "wal":
        conn.close()
        raise StoreError(f"database {path!r} refused WAL journal mode (got {mode!r})")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations in order; refuse a database written by a newer version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {current} is newer than this code understands ({SCHEMA_VERSION})"
        )
    for version, description, sql in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-check inside the write lock: another process may have migrated meanwhile
            if conn.execute("PRAGMA user_version").fetchone()[0] >= version:
                conn.execute("COMMIT")
                continue
            for stmt in _statements(sql):
                conn.execute(stmt)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " applied_at REAL NOT NULL, description TEXT NOT NULL)"
            )
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, time.time(), description))
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def _statements(sql: str) -> Iterator[str]:
    for stmt in sql.split(";"):
        # drop "--" comments so that a comment holding ';' cannot split a statement
        lines = [ln.split("--", 1)[0] for ln in stmt.splitlines()]
        text = "\n".join(lines).strip()
        if text:
            yield text


def encode_vector(v: Sequence[float]) -> bytes:
    return VECTOR_STRUCT.pack(*v)


def decode_vectors(blobs: Iterable[bytes]) -> np.ndarray:
    """float64[n, 20] from vector BLOBs."""
    buf = b"".join(blobs)
    return np.frombuffer(buf, dtype="<f8").reshape(-1, FINGERPRINT_DIM).astype(np.float64)


def insert_messages(conn: sqlite3.Connection, msgs: Sequence[FingerprintMessage]) -> None:
    """Insert accepted messages in one transaction, updating session counters."""
    if not msgs:
        return
    pack = VECTOR_STRUCT.pack
    rows = [(*m[:9], pack(*m.vector), m.fingerprint_version) for m in msgs]
    sessions: dict[str, tuple[str | None, float]] = {}
    for m in msgs:
        if m.session_id is not None:
            sessions[m.session_id] = (m.model, m.received_at)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(INSERT_FINGERPRINT, rows)
        for sid, (model, t) in sessions.items():
            # recount from the table (indexed): a request spread over several flushes counts once
            conn.execute(
                "INSERT INTO sessions (session_id, created_at, updated_at, model, n_requests, n_fingerprints)"
                " SELECT ?1, ?2, ?2, ?3, COUNT(DISTINCT request_id), COUNT(*) FROM fingerprints"
                " WHERE session_id = ?1 ON CONFLICT(session_id) DO UPDATE SET updated_at = excluded.updated_at,"
                " model = COALESCE(excluded.model, model), n_requests = excluded.n_requests,"
                " n_fingerprints = excluded.n_fingerprints",
                (sid, t, model),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def count_fingerprints(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM fingerprints").fetchone()[0])


def fingerprint_versions(conn: sqlite3.Connection, *, kind: str | None = None) -> dict[int, int]:
    """{fingerprint version: number of rows} (of ``kind`` when given), e.g. {1: 5213, 2: 800}."""
    where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
    rows = conn.execute(f"SELECT fingerprint_version, COUNT(*) FROM fingerprints {where}"
                        " GROUP BY fingerprint_version ORDER BY fingerprint_version", params)
    return {int(v): int(n) for v, n in rows}


@dataclass
class FingerprintTable:
    """Columns loaded for a discovery run."""

    ids: np.ndarray  # int64[n]
    request_ids: list[str | None]
    session_ids: list[str | None]
    steps: list[int | None]
    kinds: list[str]
    vectors: np.ndarray  # float64[n, 20]


def load_fingerprints(
    conn: sqlite3.Connection, *, kind: str | None = None, limit: int | None = None, progress: Any = None,
    chunk: int = 50000, fingerprint_version: int | None = None,
) -> FingerprintTable:
    """Read fingerprints (most recent ``limit`` if given) in chunks; ``progress`` is a tqdm bar or None.
    ``fingerprint_version``: only rows of that version (None: every row, whatever its version)."""
    conds: list[str] = []
    params: list[Any] = []
    if kind:
        conds.append("kind = ?"); params.append(kind)
    if fingerprint_version is not None:
        conds.append("fingerprint_version = ?"); params.append(int(fingerprint_version))
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    total = conn.execute(f"SELECT COUNT(*) FROM fingerprints {where}", params).fetchone()[0]
    if limit is not None:
        total = min(total, limit)
    # the most recent rows when limited, returned in id order for reproducibility
    sql = (
        f"SELECT id, request_id, session_id, step, kind, vector FROM fingerprints {where}"
        f" ORDER BY id DESC LIMIT ?"
    )
    cur = conn.execute(sql, [*params, total])
    ids: list[int] = []
    req: list[str | None] = []
    ses: list[str | None] = []
    steps: list[int | None] = []
    kinds: list[str] = []
    blobs: list[bytes] = []
    if progress is not None:
        progress.reset(total=total)
    while True:
        rows = cur.fetchmany(chunk)
        if not rows:
            break
        for r in rows:
            ids.append(r[0]); req.append(r[1]); ses.append(r[2]); steps.append(r[3]); kinds.append(r[4])
            blobs.append(r[5])
        if progress is not None:
            progress.update(len(rows))
    order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
    vecs = decode_vectors(blobs) if blobs else np.zeros((0, FINGERPRINT_DIM))
    pick = lambda xs: [xs[i] for i in order]  # noqa: E731
    return FingerprintTable(
        np.asarray(ids, dtype=np.int64)[order], pick(req), pick(ses), pick(steps), pick(kinds), vecs[order]
    )


def start_run(conn: sqlite3.Connection, output_dir: str, parameters: dict[str, Any]) -> int:
    cur = conn.execute(
        "INSERT INTO discovery_runs (started_at, status, output_dir, parameters) VALUES (?, 'running', ?, ?)",
        (time.time(), output_dir, json.dumps(parameters)),
    )
    return int(cur.lastrowid)


def finish_run(
    conn: sqlite3.Connection, run_id: int, *, status: str, n_fingerprints: int | None = None,
    n_clusters: int | None = None, noise_fraction: float | None = None, metrics: dict[str, Any] | None = None,
    error: str | None = None, clusters: Sequence[dict[str, Any]] = (),
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "UPDATE discovery_runs SET finished_at = ?, status = ?, n_fingerprints = ?, n_clusters = ?,"
            " noise_fraction = ?, metrics = ?, error = ? WHERE run_id = ?",
            (time.time(), status, n_fingerprints, n_clusters, noise_fraction,
             json.dumps(metrics) if metrics is not None else None, error, run_id),
        )
        conn.executemany(
            "INSERT INTO clusters (run_id, cluster_id, size, centroid, x, y, zone, zone_confidence, traits,"
            " sampling_hints) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (run_id, c["cluster_id"], c["size"], encode_vector(c["centroid"]), c["centroid_2d"][0],
                 c["centroid_2d"][1], c["zone"], c["zone_confidence"], json.dumps(c["traits"]),
                 json.dumps(c["sampling_hints"]))
                for c in clusters
            ],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
