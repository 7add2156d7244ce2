"""Manifold hints end to end with the real rapids_sidecar: the engine pushes fingerprints,
the sidecar clusters them online, the scheduler refreshes the centroids in the background,
fingerprint steps carry cluster ids, and adaptive sampling switches at the documented step
to the cluster's hint; the tokens after the switch equal a run started from that step with
the hinted parameters."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from capture_utils import capture_scheduler, run_capture
from sglang.srt.managers.io_struct import CaptureParams, TokenizedGenerateReqInput
from sglang.srt.sampling.sampling_params import SamplingParams

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
K = 4  # --attention-adaptive-steps


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sidecar():
    zport, hport = _port(), _port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples/attention_explorer/rapids_sidecar.py"),
                             "--zmq-bind", f"tcp://127.0.0.1:{zport}", "--port", str(hport), "--online",
                             "--online-min-size", "1", "--online-min-radius", "0.6", "--log-level", "warning"])
    url = f"http://127.0.0.1:{hport}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        yield f"tcp://127.0.0.1:{zport}", url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _clusters(url: str) -> list:
    with urllib.request.urlopen(url + "/centroids", timeout=5) as r:
        return json.loads(r.read())["clusters"]


def test_hints_and_adaptive_sampling(sidecar, smollm_tokenizer):
    zmq_url, http_url = sidecar
    prompt = smollm_tokenizer.encode("Write a short poem about the river and the stars at night.")
    feeder = capture_scheduler(max_total_tokens=2048, attention_sidecar_url=zmq_url)
    run_capture(feeder, [(0, f"f{i}", prompt[: 6 + i], CaptureParams(mode="fingerprint")) for i in range(4)], 8)
    deadline = time.time() + 60
    while not _clusters(http_url) and time.time() < deadline:
        time.sleep(0.5)
    assert _clusters(http_url), "the sidecar formed no cluster from the engine's fingerprints"

    sched = capture_scheduler(max_total_tokens=2048, attention_hints_url=http_url, attention_adaptive_steps=K)
    hints = sched.capture_hook.hints
    deadline = time.time() + 30
    while hints.snapshot is None and time.time() < deadline:
        time.sleep(0.2)
    assert hints.snapshot is not None and not hints.snapshot.empty

    n = 24
    sp = SamplingParams(max_new_tokens=n, temperature=1.0, top_p=1.0, seed=11, ignore_eos=True)
    sched.add_request(TokenizedGenerateReqInput("ad", prompt, sp, stream=False,
                                                capture=CaptureParams(mode="fingerprint", adaptive_sampling=True)))
    out = None
    while sched.has_work():
        for o in sched.step():
            out = o
    from sglang.srt.capture.entries import build_entries

    entries = build_entries(out.capture, len(prompt))
    ids = [e["cluster_id"] for e in entries]
    assert all(isinstance(c, int) for c in ids)
    # the documented rule: the first step that completes K consecutive steps in one cluster
    expected = next(s for s in range(K - 1, n) if ids[s] >= 0 and len(set(ids[s - K + 1: s + 1])) == 1)
    sw = out.sampling_switch
    assert sw is not None and sw["step"] == expected and sw["cluster_id"] == ids[expected]
    assert sw["before"] == {"temperature": 1.0, "top_p": 1.0}
    assert sw["after"] != sw["before"]
    # a run started from that step with the hinted parameters samples the same tokens
    s = sw["step"]
    sp2 = SamplingParams(max_new_tokens=n - s, temperature=sw["after"]["temperature"], top_p=sw["after"]["top_p"],
                         seed=11, ignore_eos=True)
    sched.add_request(TokenizedGenerateReqInput("resume", prompt + out.new_token_ids[:s], sp2, stream=False))
    res = None
    while sched.has_work():
        for o in sched.step():
            res = o
    assert res.new_token_ids == out.new_token_ids[s:]


class _Centroids:
    """A tiny HTTP server answering GET /centroids with ``body``."""

    def __init__(self, body: dict) -> None:
        import http.server
        import threading

        payload = json.dumps(body).encode()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _client(body: dict):
    import torch

    from sglang.srt.capture.hints import HintsClient

    srv = _Centroids(body)
    hints = HintsClient(srv.url, 3600, torch.device("cpu"))
    deadline = time.time() + 10
    while hints._ok is None and time.time() < deadline:  # the first refresh, good or bad
        time.sleep(0.05)
    return srv, hints


def test_hints_assign_only_rows_of_the_centroids_version():
    import numpy as np
    import torch

    from sgl_kernel import zones

    t1, t2 = zones.thresholds(1)[0]["diffuse"], zones.thresholds(2)[0]["diffuse"]
    between = zones.fingerprint_from_hist(np.full(16, 1 / 16), (t1 + t2) / 2)  # its zone depends on the version
    local = zones.fingerprint_from_hist([0.8, 0.15, 0.05] + [0] * 13, 0.2)
    # no zone or hints given: the client reads them from the centroid, with the centroids' version
    body = {"fingerprint_version": 2, "clusters": [
        {"cluster_id": 7, "centroid": between.tolist(), "radius": 0.05},
        {"cluster_id": 9, "centroid": local.tolist(), "radius": 0.05}]}
    srv, hints = _client(body)
    try:
        snap = hints.snapshot
        assert snap is not None and snap.version == 2
        assert snap.zones == [zones.classify(between, 2).zone, zones.classify(local, 2).zone]
        h = zones.sampling_hints(between, 2)
        assert snap.hints[0] == {"temperature": h["temperature"], "top_p": h["top_p"]}
        fp = torch.tensor(np.stack([between, local, between, local]), dtype=torch.float32)
        idx, _ = hints.assign(fp)  # versions not given: every row is the centroids' version
        assert idx.tolist() == [0, 1, 0, 1]
        idx, _ = hints.assign(fp, torch.tensor([2, 2, 1, 1]))  # rows of version 1: no hint
        assert idx.tolist() == [0, 1, -1, -1]
        idx, _ = hints.assign(fp, torch.tensor([1, 1, 1, 1]))
        assert idx.tolist() == [-1, -1, -1, -1]
    finally:
        hints.close()
        srv.close()
    # a sidecar that does not say: version 1
    srv, hints = _client({"clusters": body["clusters"]})
    try:
        assert hints.snapshot.version == 1 and hints.snapshot.zones[0] == zones.classify(between, 1).zone
        fp = torch.tensor(np.stack([between, between]), dtype=torch.float32)
        assert hints.assign(fp, torch.tensor([1, 2]))[0].tolist() == [0, -1]
    finally:
        hints.close()
        srv.close()
    # a version the engine does not know: refused (no snapshot), rule-based zones go on
    srv, hints = _client({"fingerprint_version": 5, "clusters": body["clusters"]})
    try:
        assert hints._ok is False and hints.snapshot is None and hints.assign(torch.zeros(1, 20)) is None
    finally:
        hints.close()
        srv.close()
