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
