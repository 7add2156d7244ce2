"""Helpers to run the sidecars as real subprocesses (tests, benchmarks, other parts' e2e tests)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterable, Sequence

import httpx
from sglang.srt.utils.network import free_port  # noqa: F401 (part of this module's helpers)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "sglang-numba-cache"))
    env.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServiceProcess:
    """A sidecar started with ``argv`` (after the python executable) serving HTTP on ``port``.

    Stdout lines are collected; the first ``{"event": "ready", ...}`` JSON line is exposed as
    ``ready``. Always use as a context manager: the process is killed on exit whatever happens.
    """

    def __init__(self, argv: Sequence[str], port: int, startup_timeout: float = 60.0):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.ready: dict[str, Any] | None = None
        self.proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=subprocess_env())
        self.stderr = ""
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        self._wait_ready(startup_timeout)

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for ln in list(self.lines):
            try:
                obj = json.loads(ln)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("event") == name:
                out.append(obj)
        return out

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}: {self.stderr[-2000:]}")
            ev = self.events("ready")
            if ev:
                try:
                    if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                        self.ready = ev[0]
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"service not ready after {timeout}s: {self.stderr[-2000:]}")

    @property
    def zmq_endpoint(self) -> str:
        assert self.ready is not None
        return self.ready["zmq_endpoint"]

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=60, **kw)

    def wait_for(self, pred: Any, timeout: float = 30.0, path: str = "/stats") -> dict[str, Any]:
        """Poll ``path`` until ``pred(json)`` is true; returns the last JSON."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.get(path).json()
            if pred(last):
                return last
            time.sleep(0.05)
        raise TimeoutError(f"condition not met within {timeout}s; last {path}: {json.dumps(last)[:500]}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        time.sleep(0.05)  # let the pump threads read the last lines

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def push_frames(endpoint: str, frames: Iterable[bytes | list[bytes]], hwm: int = 100_000) -> int:
    """Send frames (a list = one multipart message) over a fresh PUSH socket; returns the count."""
    import zmq

    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.LINGER, 30_000)  # close() waits until queued frames are handed to the peer
    s.connect(endpoint)
    n = 0
    try:
        for f in frames:
            if isinstance(f, list):
                s.send_multipart(f)
            else:
                s.send(f)
            n += 1
    finally:
        s.close()
    return n


def fingerprint_frame(vector: Sequence[float], **fields: Any) -> bytes:
    return json.dumps({"version": 1, "kind": "step", "vector": [float(v) for v in vector], **fields}).encode()


def shared_discovery(root: str, script: str, n: int = 1200, seed: int = 3) -> dict[str, Any]:
    """One synthetic database + one real discovery run per test session (UMAP's first fit is slow).

    ``root`` is a session temp folder shared by every conftest that asks; the result is cached
    there as ``result.json``. The synthetic rows carry no fingerprint version (version 1), so
    the run clusters version 1 (run_discovery.py's default is 2).
    """
    import numpy as np

    from sglang.test import synthetic

    out = os.path.join(root, "shared-discovery")
    marker = os.path.join(out, "result.json")
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    db = os.path.join(out, "fingerprints.db")
    X, y = synthetic.make_clusters(n, seed=seed)
    synthetic.write_db(db, X, y)
    art = os.path.join(out, "artifacts")
    proc = subprocess.run([sys.executable, script, "--db", db, "--output-dir", art, "--min-samples", "100",
                           "--umap-max-fit", str(n * 2 // 3), "--no-progress", "--fingerprint-version", "1"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"discovery failed ({proc.returncode}): {proc.stderr[-3000:]}")
    res = {"db": db, "artifacts": art, "stdout": json.loads(proc.stdout.strip().splitlines()[-1]),
           "stderr": proc.stderr, "labels": np.asarray(y).tolist(), "n": n, "seed": seed}
    with open(marker, "w") as f:
        json.dump(res, f)
    return res
