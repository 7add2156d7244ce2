"""rapids_sidecar.py: one bad input never hurts the other requests (real process, HTTP and ZMQ).

- finite but extreme vectors (|x| = 1e308 makes HDBSCAN loop forever on overflowing distances)
  are rejected at ingestion, ZMQ and /predict, and counted by reason;
- a fit that overruns --recluster-timeout is killed, the previous clusters stay served;
- SIGTERM stops the process within seconds, even in the middle of a hung fit;
- /predict answers 400 (413 for oversized bodies) to any malformed body, never 500 or a hang.

The hung fit is made real by lifting the bound (--max-abs-value at the float maximum).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from sglang.test import synthetic
from sglang.test.sidecar_service import ServiceProcess, fingerprint_frame, free_port, push_frames

pytestmark = pytest.mark.timeout(120)
SCRIPT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "attention_explorer",
                                      "rapids_sidecar.py"))
FLOAT_MAX = "1.7976931348623157e308"  # --max-abs-value that lets the extreme vectors through
EXTREME = [[1e308] * 20, [-1e308] * 20] * 10  # HDBSCAN never returns on these (hdbscan and scikit-learn)
ZEROS19 = b", 0" * 19


def _sidecar(*args: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess([SCRIPT, "--zmq-bind", "tcp://127.0.0.1:*", "--port", str(port), *args], port)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _sigterm_exit_seconds(svc: ServiceProcess, limit: float = 10.0) -> float:
    t0 = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    try:
        svc.proc.wait(timeout=limit)
    except Exception:
        pass
    return time.monotonic() - t0 if svc.proc.poll() is not None else float("inf")


def _two_tight_clusters(n_each: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.full(20, 0.05); a[0] = 0.8
    b = np.full(20, 0.05); b[2] = 0.7
    return np.vstack([a + rng.normal(0, 0.01, (n_each, 20)), b + rng.normal(0, 0.01, (n_each, 20))])


def _raw_http(port: int, head: bytes, body_parts: list[bytes] = (), timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server answers until it closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        for part in body_parts:
            s.sendall(part)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out:
                    hdr, _, rest = out.partition(b"\r\n\r\n")
                    for line in hdr.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:") and len(rest) >= int(line.split(b":")[1]):
                            return out
        except socket.timeout:
            pass
        return out


def _json_of(raw: bytes) -> dict:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


# ----------------------------------------------------------------------------- ingestion
def test_extreme_vectors_are_rejected_on_the_stream_and_sigterm_stays_prompt() -> None:
    """Default flags: the 1e308 vectors that used to hang re-clustering (and then SIGTERM) are
    counted rejects, like wrong dimensions and integers beyond float range; values at the bound pass."""
    X, _ = synthetic.make_clusters(300, seed=5)
    bad = ([fingerprint_frame(v) for v in EXTREME]
           + [fingerprint_frame([1e7] * 20), fingerprint_frame([0.1] * 19 + [-1.000001e6])]  # 22 out_of_range
           + [fingerprint_frame([0.1] * 21), fingerprint_frame([0.1] * 19)]  # 2 bad_vector
           + [b'{"vector": [1' + b"0" * 400 + ZEROS19 + b"]}"])  # 1 non_finite (10**400)
    edge = [fingerprint_frame([1e6] * 20), fingerprint_frame([-1e6] * 20)]  # exactly at the bound: accepted
    with _sidecar("--recluster-interval", "0.5", "--min-cluster-size", "15") as svc:
        push_frames(svc.zmq_endpoint, bad + edge + [fingerprint_frame(x) for x in X])
        s = svc.wait_for(lambda s: s["received"] + s["rejected"] >= len(bad) + len(edge) + len(X))
        assert s["rejected_by_reason"] == {"out_of_range": 22, "bad_vector": 2, "non_finite": 1}, s
        assert s["received"] == len(X) + 2 and s["buffered"] == len(X) + 2 and s["max_abs_value"] == 1e6
        r = httpx.post(svc.url + "/recluster", timeout=30)
        assert r.status_code == 200 and r.json()["reclustered"] and r.json()["clusters"] == 5, r.text
        s = svc.wait_for(lambda s: s["reclusters"] >= 2, timeout=20)  # the timer keeps fitting the same buffer
        assert s["last_error"] is None and s["recluster_timeouts"] == 0
        assert _sigterm_exit_seconds(svc) < 5, svc.stderr[-2000:]


# ----------------------------------------------------------------------------- /predict
PREDICT_400 = [
    # (body, expected error.param)
    (b"", None),
    (b"nope", None),
    (b"\xff\xfe{", None),  # not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, None),  # RecursionError inside json
    (b'{"vector": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    (b'{"vector": [' + b"9" * 5000 + ZEROS19 + b"]}", None),  # over the 4300-digit int conversion limit
    (b"[]", None), (b'"text"', None), (b"null", None), (b"12", None),
    (b'{"vector": [1' + b"0" * 400 + ZEROS19 + b"]}", "vector"),  # 10**400: beyond float
    (b'{"vector": [' + b"[" * 500 + b"]" * 500 + ZEROS19 + b"]}", "vector"),  # a nested element
    (b'{"vector": [1e999' + ZEROS19 + b"]}", "vector"),  # parses as infinity
    (b'{"vector": [NaN' + ZEROS19 + b"]}", "vector"),
    (b'{"vector": [-Infinity' + ZEROS19 + b"]}", "vector"),
    (json.dumps({"vector": [1e308] * 20}).encode(), "vector"),
    (json.dumps({"vector": [-1e308] * 20}).encode(), "vector"),
    (json.dumps({"vector": [0.1] * 19 + [1.5e6]}).encode(), "vector"),
    (json.dumps({"vectors": [[0.1] * 20, [-2e6] + [0.0] * 19]}).encode(), "vectors[1]"),
    (json.dumps({"vectors": [[0.1] * 20, [0.1] * 21]}).encode(), "vectors[1]"),
    (json.dumps({"vector": [0.1] * 21}).encode(), "vector"),
    (json.dumps({"vector": []}).encode(), "vector"),
    (json.dumps({"vectors": []}).encode(), "vectors"),
    (json.dumps({"vectors": [[]]}).encode(), "vectors[0]"),
    (json.dumps({"vectors": [1, 2]}).encode(), "vectors[0]"),
    (json.dumps({"vectors": {"a": 1}}).encode(), "vectors"),
    (json.dumps({"vector": None}).encode(), "vector"),
    (json.dumps({"vector": "0.1"}).encode(), "vector"),
    (json.dumps({"vector": {"0": 0.1}}).encode(), "vector"),
    (json.dumps({"vector": [True] * 20}).encode(), "vector"),
    (json.dumps({"vector": ["0.1"] * 20}).encode(), "vector"),
    (json.dumps({"vector": [0.1] * 20, "vectors": [[0.1] * 20]}).encode(), "vectors"),
    (json.dumps({"other": 1}).encode(), "vector"),
]


def test_predict_answers_400_to_every_malformed_body() -> None:
    with _sidecar("--online") as svc, httpx.Client(base_url=svc.url, timeout=30) as c:
        for body, param in PREDICT_400:
            r = c.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (body[:80], r.status_code, r.text[:300])
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"], (body[:80], err)
        assert c.post("/predict", json={"vector": [1e6] * 20}).status_code == 200  # the bound itself is fine
        assert c.post("/predict", json={"vectors": [[-1e6] * 20, [0.1] * 20]}).status_code == 200
        s = c.get("/stats").json()
        assert s["http_rejected"] == len(PREDICT_400)
        assert s["http_rejected_by_reason"]["out_of_range"] == 4
        assert s["predict_requests"] == len(PREDICT_400) + 2
        assert c.get("/health").status_code == 200


def test_predict_rejects_a_huge_content_length_before_reading() -> None:
    """Default limit: a 10 GB Content-Length answers 413 at once (it used to wait for the body)."""
    with _sidecar("--online") as svc:
        head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {10 ** 10}\r\n\r\n").encode()
        t0 = time.monotonic()
        raw = _raw_http(svc.port, head, timeout=10)
        assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
        assert time.monotonic() - t0 < 5
        err = _json_of(raw)["error"]
        assert err["code"] == "body_too_large" and err["type"] == "invalid_request_error"
        assert svc.get("/stats").json()["http_rejected_by_reason"] == {"body_too_large": 1}


def test_predict_body_size_limit_without_content_length() -> None:
    with _sidecar("--online", "--max-body-bytes", "4096") as svc:
        # chunked (no Content-Length): cut off once past the limit, the rest is never buffered
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b" " * 4000
        raw = _raw_http(svc.port, head, [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 2)
        assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
        assert _json_of(raw)["error"]["code"] == "body_too_large"
        # with Content-Length: over the limit is 413, a small chunked body still works
        big = json.dumps({"vectors": [[0.1] * 20] * 50}).encode()
        assert len(big) > 4096
        r = svc.post("/predict", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        small = json.dumps({"vector": [0.1] * 20}).encode()
        raw = _raw_http(svc.port, head, [b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)])
        assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
        s = svc.get("/stats").json()
        assert s["http_rejected_by_reason"] == {"body_too_large": 2} and s["max_body_bytes"] == 4096


# ----------------------------------------------------------------------------- watchdog and SIGTERM
def test_recluster_timeout_kills_a_hung_fit_and_keeps_the_old_clusters() -> None:
    good = _two_tight_clusters()
    with _sidecar("--max-abs-value", FLOAT_MAX, "--recluster-timeout", "3", "--recluster-interval", "3600",
                  "--buffer-size", "20", "--min-cluster-size", "5") as svc:
        push_frames(svc.zmq_endpoint, [fingerprint_frame(x) for x in good])
        svc.wait_for(lambda s: s["received"] == 20)
        r = svc.post("/recluster")
        assert r.status_code == 200 and r.json()["clusters"] == 2, r.text
        worker = svc.get("/stats").json()["fit_worker_pid"]
        assert worker and _alive(worker)  # one worker process serves every fit
        push_frames(svc.zmq_endpoint, [fingerprint_frame(v) for v in EXTREME])  # they replace the whole buffer
        svc.wait_for(lambda s: s["received"] == 40)
        t0 = time.monotonic()
        r = svc.post("/recluster")
        took = time.monotonic() - t0
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "recluster_timeout" and err["type"] == "server_error"
        assert 3 <= took < 15, took
        s = svc.get("/stats").json()
        assert s["recluster_timeouts"] == 1 and "timed out after 3 s" in s["last_error"], s
        assert s["clusters"] == 2 and s["reclusters"] == 1 and s["recluster_state"] == "idle"
        assert s["fit_worker_pid"] is None and _wait_gone(worker)
        p = svc.post("/predict", json={"vector": good[0].tolist()}).json()  # old clusters still served
        assert p["cluster_id"] != -1 and p["basis"] == "cluster_centroid"
        assert svc.get("/health").status_code == 200
        # fresh data: the next fit starts a new worker and succeeds
        push_frames(svc.zmq_endpoint, [fingerprint_frame(x) for x in _two_tight_clusters(seed=1)])
        svc.wait_for(lambda s: s["received"] == 60)
        r = svc.post("/recluster")
        assert r.status_code == 200 and r.json()["clusters"] == 2, r.text
        s = svc.get("/stats").json()
        assert s["reclusters"] == 2 and s["fit_worker_pid"] not in (None, worker)
        assert _sigterm_exit_seconds(svc) < 5
        assert _wait_gone(s["fit_worker_pid"])


def test_sigterm_stops_the_sidecar_in_the_middle_of_a_hung_fit() -> None:
    with _sidecar("--max-abs-value", FLOAT_MAX, "--recluster-timeout", "600", "--recluster-interval", "0.2",
                  "--min-cluster-size", "5") as svc:
        push_frames(svc.zmq_endpoint, [fingerprint_frame(v) for v in EXTREME])
        s = svc.wait_for(lambda s: s["recluster_state"] == "fitting", timeout=60)
        worker = s["fit_worker_pid"]
        time.sleep(1.0)
        s = svc.get("/stats").json()  # the sidecar still answers while its fit worker is stuck
        assert s["recluster_state"] == "fitting" and s["fit_worker_pid"] == worker and _alive(worker)
        answers: list = []

        def waiting_client() -> None:  # an in-flight POST /recluster must not hold the shutdown up
            try:
                answers.append(httpx.post(svc.url + "/recluster", timeout=30).status_code)
            except httpx.HTTPError as e:
                answers.append(type(e).__name__)

        t = threading.Thread(target=waiting_client, daemon=True)
        t.start()
        time.sleep(0.3)
        took = _sigterm_exit_seconds(svc)
        assert took < 5, (took, svc.stderr[-2000:])
        assert _wait_gone(worker), "the fit worker outlived the sidecar"
        t.join(timeout=10)
        assert answers and answers[0] in (503, "RemoteProtocolError", "ReadError", "ConnectError"), answers


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux (PR_SET_PDEATHSIG and /proc)")
def test_a_killed_sidecar_leaves_no_fit_worker_behind() -> None:
    with _sidecar("--max-abs-value", FLOAT_MAX, "--recluster-timeout", "600", "--recluster-interval", "0.2",
                  "--min-cluster-size", "5") as svc:
        push_frames(svc.zmq_endpoint, [fingerprint_frame(v) for v in EXTREME])
        worker = svc.wait_for(lambda s: s["recluster_state"] == "fitting", timeout=60)["fit_worker_pid"]
        assert _alive(worker)
        svc.proc.kill()  # no chance to clean up: the worker must still not spin on forever
        svc.proc.wait(timeout=10)
        assert _wait_gone(worker), "the fit worker outlived a SIGKILLed sidecar"


@pytest.mark.parametrize("args", [["--recluster-timeout", "0"], ["--recluster-timeout", "nan"],
                                  ["--max-abs-value", "-1"], ["--max-abs-value", "inf"], ["--max-body-bytes", "10"]])
def test_bad_hardening_flags_exit_2(args) -> None:
    r = subprocess.run([sys.executable, SCRIPT, "--port", str(free_port()), *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error:"), r.stderr
