"""SQLite store: schema, WAL, migrations, vector round trip, sessions, clear errors."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from sglang.srt.attention_sidecar import store
from sglang.srt.attention_sidecar.wire import parse_frame


def _msgs(n: int, session: str | None = "s1", offset: int = 0) -> list:
    rng = np.random.default_rng(offset)
    return [parse_frame(json.dumps({"vector": rng.random(20).tolist(), "step": offset + i, "session_id": session,
                                    "request_id": f"r{(offset + i) % 4}"}).encode(), 1.0) for i in range(n)]


def test_new_database_has_schema_wal_and_version(tmp_path) -> None:
    conn = store.connect(str(tmp_path / "a.db"))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"fingerprints", "sessions", "discovery_runs", "clusters", "schema_migrations"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [v for v, _, _ in store.MIGRATIONS]


def test_vectors_round_trip_exactly_and_sessions_are_counted(tmp_path) -> None:
    path = str(tmp_path / "a.db")
    conn = store.connect(path)
    a, b = _msgs(10), _msgs(6, offset=10)
    store.insert_messages(conn, a)
    store.insert_messages(conn, b)  # same session over two flushes: requests counted once
    t = store.load_fingerprints(store.connect(path))
    assert np.array_equal(t.vectors, np.array([m.vector for m in a + b]))
    assert t.steps == list(range(16))
    row = conn.execute("SELECT n_fingerprints, n_requests FROM sessions WHERE session_id = 's1'").fetchone()
    assert row == (16, 4)
    last = store.load_fingerprints(conn, limit=3)
    assert last.steps == [13, 14, 15]


def test_reopening_does_not_migrate_twice(tmp_path) -> None:
    p = str(tmp_path / "a.db")
    store.insert_messages(store.connect(p), _msgs(3))
    conn = store.connect(p)
    assert store.count_fingerprints(conn) == 3
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(store.MIGRATIONS)


def test_newer_schema_is_refused(tmp_path) -> None:
    p = str(tmp_path / "a.db")
    c = sqlite3.connect(p)
    c.execute("PRAGMA user_version = 99")
    c.close()
    with pytest.raises(store.StoreError, match="newer"):
        store.connect(p)


@pytest.mark.parametrize("kind", ["not_sqlite", "directory", "missing_folder"])
def test_unusable_paths_raise_store_error(tmp_path, kind: str) -> None:
    if kind == "not_sqlite":
        p = tmp_path / "x.db"
        p.write_bytes(b"this is certainly not a database" * 64)
    elif kind == "directory":
        p = tmp_path
    else:
        p = tmp_path / "nope" / "x.db"
    with pytest.raises(store.StoreError):
        store.connect(str(p))


def test_schema_rejects_bad_rows(tmp_path) -> None:
    conn = store.connect(str(tmp_path / "a.db"))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO fingerprints (kind, received_at, vector) VALUES ('step', 0, x'00')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO fingerprints (kind, received_at, vector) VALUES ('bogus', 0, ?)",
                     (bytes(160),))


def _frame_msgs(versions: list[int | None]) -> list:
    out = []
    for i, v in enumerate(versions):
        obj = {"vector": [float(i)] * 20, "step": i}
        if v is not None:
            obj["fingerprint_version"] = v
        out.append(parse_frame(json.dumps(obj).encode(), 1.0))
    return out


def test_fingerprint_version_is_stored_filtered_and_counted(tmp_path) -> None:
    conn = store.connect(str(tmp_path / "a.db"))
    store.insert_messages(conn, _frame_msgs([None, 1, 2, 2, 2]))
    rows = conn.execute("SELECT step, fingerprint_version FROM fingerprints ORDER BY step").fetchall()
    assert rows == [(0, 1), (1, 1), (2, 2), (3, 2), (4, 2)]
    assert store.fingerprint_versions(conn) == {1: 2, 2: 3}
    assert store.load_fingerprints(conn, fingerprint_version=2).steps == [2, 3, 4]
    assert store.load_fingerprints(conn, fingerprint_version=1, limit=1).steps == [1]
    assert len(store.load_fingerprints(conn).steps) == 5  # no filter: every version
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO fingerprints (kind, received_at, vector, fingerprint_version) VALUES ('step', 0, ?, 0)",
                     (bytes(160),))


def test_migrating_an_old_database_keeps_its_rows_as_version_1(tmp_path, monkeypatch) -> None:
    p = str(tmp_path / "old.db")
    # a database written by the code before fingerprint versions: schema 1 only
    with monkeypatch.context() as m:
        m.setattr(store, "MIGRATIONS", store.MIGRATIONS[:1])
        m.setattr(store, "SCHEMA_VERSION", 1)
        m.setattr(store, "INSERT_FINGERPRINT", store.INSERT_FINGERPRINT.replace(", fingerprint_version)", ")")
                  .replace(", ?)", ")"))
        old = store.connect(p)
        old.executemany(store.INSERT_FINGERPRINT, [(f"r{i}", None, "step", i, None, None, "m", 0.0, 1.0, bytes(160))
                                                   for i in range(4)])
        assert "fingerprint_version" not in {r[1] for r in old.execute("PRAGMA table_info(fingerprints)")}
        old.close()
    conn = store.connect(p)  # migrates
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION >= 2
    assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")] == [1, 2]
    assert conn.execute("SELECT fingerprint_version FROM fingerprints").fetchall() == [(1,)] * 4
    assert store.fingerprint_versions(conn) == {1: 4}
    store.insert_messages(conn, _frame_msgs([2]))  # new rows keep their own version
    assert store.fingerprint_versions(conn) == {1: 4, 2: 1}
    assert store.load_fingerprints(conn, fingerprint_version=1).request_ids == ["r0", "r1", "r2", "r3"]
