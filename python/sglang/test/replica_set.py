"""Server replicas behind the stock ``sglang-router``, plus a fingerprint sidecar, as real processes.

Used by ``python -m sglang.bench_router`` and the router tests. Each process runs in its
own session (process group) with its output in a log file, so a replica can be killed
with everything it started (its scheduler process included) and a full pipe never
blocks it. ``ReplicaSet`` is a context manager that always stops what it started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx
from sglang.srt.utils.network import free_port

ROUTER_VERSION = "0.3.2"  # the sglang-router release the docs and tests were written against


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen
    url: str
    log_path: str

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the whole group (a crash, as far as the router can tell)."""
        self.signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
        if self.proc.poll() is not None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


@dataclass
class Sidecar(Proc):
    zmq_url: str = ""
    db_path: str | None = None


def _spawn(name: str, cmd: list[str], log_dir: str, url: str, env: dict[str, str] | None = None) -> Proc:
    log_path = os.path.join(log_dir, f"{name}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
    return Proc(name, proc, url, log_path)


def wait_healthy(p: Proc, timeout: float, path: str = "/health") -> None:
    """Poll ``path`` until 200; raise (with the log tail) if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not p.alive():
            raise RuntimeError(f"{p.name} exited with {p.proc.returncode} while starting:\n{p.log_tail()}")
        try:
            if httpx.get(p.url + path, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{p.name} not healthy after {timeout:.0f} s:\n{p.log_tail()}")


@dataclass
class ReplicaSet:
    """Processes started through it are stopped on exit, whatever happened."""

    log_dir: str
    procs: list[Proc] = field(default_factory=list)

    def __enter__(self) -> "ReplicaSet":
        os.makedirs(self.log_dir, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in reversed(self.procs):  # router first, then replicas, then the sidecar
            p.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in reversed(self.procs):
            try:
                p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    # -- starting ------------------------------------------------------------------------------
    def start_sidecar(self, kind: Literal["store", "online"] = "store", db_path: str | None = None,
                      timeout: float = 120) -> Sidecar:
        """``store``: ``python -m sglang.srt.attention_sidecar`` writing every message to SQLite;
        ``online``: ``rapids_sidecar.py --online``, which clusters as messages arrive and
        serves /centroids for --attention-hints-url."""
        zport, hport = free_port(), free_port()
        zmq_url, url = f"tcp://127.0.0.1:{zport}", f"http://127.0.0.1:{hport}"
        if kind == "store":
            db_path = db_path or os.path.join(self.log_dir, "fingerprints.db")
            cmd = [sys.executable, "-m", "sglang.srt.attention_sidecar", "--db", db_path, "--zmq-bind", zmq_url,
                   "--host", "127.0.0.1", "--port", str(hport), "--flush-interval", "0.2", "--log-level", "warning"]
        else:
            # the repository root: this file is python/sglang/test/replica_set.py
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
            script = os.path.join(root, "examples", "attention_explorer", "rapids_sidecar.py")
            cmd = [sys.executable, script, "--zmq-bind", zmq_url, "--host", "127.0.0.1", "--port", str(hport),
                   "--online", "--online-min-size", "1", "--online-min-radius", "0.6", "--log-level", "warning"]
        p = _spawn(f"sidecar-{kind}", cmd, self.log_dir, url)
        side = Sidecar(p.name, p.proc, p.url, p.log_path, zmq_url=zmq_url, db_path=db_path)
        self.procs.append(side)
        wait_healthy(side, timeout)
        return side

    def start_replicas(self, n: int, flags: list[str], threads: int | None = 1, timeout: float = 600,
                       name: str = "replica") -> list[Proc]:
        """Start ``n`` servers at once (they load in parallel) and wait until all are healthy.

        ``threads`` pins each replica's torch/OpenMP threads, so replicas sharing a few
        cores do not oversubscribe them (None leaves torch's default)."""
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None
        started = []
        for i in range(n):
            port = free_port()
            cmd = [sys.executable, "-m", "sglang.launch_server", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "warning", *flags]
            p = _spawn(f"{name}-{len(self.procs)}", cmd, self.log_dir, f"http://127.0.0.1:{port}", env)
            self.procs.append(p)
            started.append(p)
        for p in started:
            wait_healthy(p, timeout)
        return started

    def start_router(self, workers: list[Proc], policy: str = "round_robin", extra: list[str] | None = None,
                     timeout: float = 120) -> Proc:
        """``python -m sglang_router.launch_router`` in front of ``workers``; waits until it
        has registered every worker (its /workers list) and answers /health."""
        port = free_port()
        cmd = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
               "--worker-urls", *[w.url for w in workers], "--policy", policy, "--log-level", "warn",
               # notice a dead replica within seconds rather than the default tens of seconds
               "--health-check-interval-secs", "1", "--health-failure-threshold", "2",
               "--health-check-timeout-secs", "5", "--request-timeout-secs", "120", *(extra or [])]
        p = _spawn("router", cmd, self.log_dir, f"http://127.0.0.1:{port}")
        self.procs.append(p)
        wait_healthy(p, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(router_workers(p)) >= len(workers):
                return p
            if not p.alive():
                break
            time.sleep(0.25)
        raise RuntimeError(f"router registered {router_workers(p)} of {[w.url for w in workers]}:\n{p.log_tail()}")


def router_workers(router: Proc) -> list[str]:
    """Worker URLs the router has registered (empty while it cannot be asked)."""
    try:
        body = httpx.get(router.url + "/workers", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return []
    items = body.get("workers", body) if isinstance(body, dict) else body
    urls = []
    for w in items if isinstance(items, list) else []:
        u = w.get("url") if isinstance(w, dict) else w
        if isinstance(u, str):
            urls.append(u)
    return urls


def requests_served(replica: Proc) -> float:
    """The replica's ``sglang:num_requests_total`` (generation requests its HTTP server took)."""
    return metric(replica, "sglang:num_requests_total")


def metric(replica: Proc, name: str) -> float:
    text = httpx.get(replica.url + "/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
