"""Command line of ``python -m sglang.srt.attention_sidecar``."""
from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sglang.srt.attention_sidecar",
        description="Store attention fingerprints (ZMQ -> SQLite) and classify them against discovery artifacts.")
    ap.add_argument("--db", default=None, help="SQLite fingerprint database (created if absent)")
    ap.add_argument("--discovery-dir", default=None, help="folder written by discovery/run_discovery.py")
    ap.add_argument("--auto-reload-interval", type=float, default=0.0,
                    help="seconds between checks for new artifacts (0 = only POST /discovery/reload)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9010)
    ap.add_argument("--zmq-bind", default="tcp://127.0.0.1:9002",
                    help="ZMQ PULL address for fingerprints ('none' disables ingest); needs --db")
    ap.add_argument("--flush-size", type=int, default=8192, help="write when this many fingerprints are buffered")
    ap.add_argument("--flush-interval", type=float, default=0.5, help="write buffered fingerprints at least this often (s)")
    ap.add_argument("--max-buffer", type=int, default=200_000,
                    help="stop reading ZMQ (back-pressure) when this many fingerprints wait for SQLite")
    ap.add_argument("--cors-origins", default="*", help="comma-separated allowed origins ('' disables CORS)")
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return ap


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be in 0..65535, got {args.port}")
    if args.auto_reload_interval < 0:
        return _fail("--auto-reload-interval must be >= 0")
    if args.flush_size < 1 or args.max_buffer < args.flush_size or args.flush_interval <= 0:
        return _fail("need --flush-size >= 1, --max-buffer >= --flush-size and --flush-interval > 0")
    if args.discovery_dir and os.path.exists(args.discovery_dir) and not os.path.isdir(args.discovery_dir):
        return _fail(f"--discovery-dir {args.discovery_dir!r} is not a folder")
    zmq_bind = None if args.zmq_bind.lower() in ("", "none") else args.zmq_bind
    if zmq_bind and not args.db:
        zmq_bind = None  # nothing to store into: classify-only service
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import uvicorn
    import zmq

    from sglang.srt.attention_sidecar import store
    from sglang.srt.attention_sidecar.discovery_state import DiscoveryState
    from sglang.srt.attention_sidecar.ingest import IngestConfig, Ingestor
    from sglang.srt.attention_sidecar.service import create_app

    ingestor = None
    if args.db:
        try:
            conn = store.connect(args.db)
        except store.StoreError as e:
            return _fail(str(e))
        if zmq_bind:
            cfg = IngestConfig(zmq_bind, args.db, flush_size=args.flush_size, flush_interval=args.flush_interval,
                               max_buffer=args.max_buffer)
            try:
                ingestor = Ingestor(cfg, conn)
            except zmq.ZMQError as e:
                return _fail(f"cannot bind --zmq-bind {zmq_bind!r}: {e}")
    discovery = DiscoveryState(args.discovery_dir, args.auto_reload_interval)
    if args.discovery_dir:
        discovery.try_reload()  # a missing or broken folder is reported by /discovery/status
    origins = [o.strip() for o in args.cors_origins.split(",") if o.strip()]
    app = create_app(discovery, ingestor, origins)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                            lifespan="on")
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as e:  # uvicorn exits 1 when the port is taken
        if ingestor is not None:
            ingestor.stop()
        return int(e.code or 0) and 2
    return 0 if server.started else 2
