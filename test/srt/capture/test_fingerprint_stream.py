"""Fingerprints reach a real ZMQ PULL socket in the wire format; with nobody listening the
queue stays bounded, drops are counted and generation goes on."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import zmq

from capture_utils import capture_scheduler, run_capture
from sglang.srt.capture.fingerprint_stream import QUEUE_SIZE, FingerprintStream
from sglang.srt.managers.io_struct import CaptureParams
from sglang.srt.utils.network import free_port


def test_nobody_listening_is_bounded_and_counted():
    em = FingerprintStream(f"tcp://127.0.0.1:{free_port()}", model="m")
    v = torch.zeros(20, dtype=torch.float64)
    n = QUEUE_SIZE * 3
    for i in range(n):
        em.step("r", i, v)
    assert em.q.qsize() <= QUEUE_SIZE
    deadline = time.time() + 30
    while em.sent + em.dropped + em.q.qsize() < n and time.time() < deadline:
        time.sleep(0.05)
    assert em.dropped > 0
    assert em.sent + em.dropped + em.q.qsize() == n
    em.close()


def test_scheduler_streams_steps_and_summary(smollm_tokenizer):
    port = free_port()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    try:
        sched = capture_scheduler(max_total_tokens=2048, attention_sidecar_url=f"tcp://127.0.0.1:{port}")
        prompt = smollm_tokenizer.encode("The sidecar clusters fingerprints of every request.")
        res = run_capture(sched, [(0, "s1", prompt, CaptureParams(mode="fingerprint", layers=[3, 29]))], 6)["s1"]
        msgs = []
        deadline = time.time() + 20
        while len(msgs) < 7 and time.time() < deadline:
            if pull.poll(200):
                msgs.append(json.loads(pull.recv_string()))
        steps = [m for m in msgs if m["kind"] == "step"]
        summary = [m for m in msgs if m["kind"] == "request"]
        assert len(steps) == 6 and len(summary) == 1
        for m in msgs:
            assert m["version"] == 1 and m["request_id"] == "s1" and len(m["vector"]) == 20
            assert m["model"] == "SmolLM2-135M-Instruct" and isinstance(m["timestamp"], float)
        by_step = {m["step"]: m["vector"] for m in steps}
        for e in res["entries"]:
            np.testing.assert_allclose(by_step[e["decode_step"]], e["fingerprint"], atol=1e-5)
            assert [m for m in steps if m["step"] == e["decode_step"]][0]["manifold"] == e["manifold"]
        np.testing.assert_allclose(summary[0]["vector"], np.mean([e["fingerprint"] for e in res["entries"]], 0),
                                   atol=1e-5)
        assert sched.load().capture_sidecar_dropped == 0
    finally:
        pull.close(0)
        ctx.term()


def _version_dependent_fingerprint() -> list[float]:
    """A fingerprint whose zone depends on the version it is read as: uniform histogram, entropy
    between the two versions' diffuse thresholds."""
    from sgl_kernel import zones

    t1, t2 = zones.thresholds(1)[0]["diffuse"], zones.thresholds(2)[0]["diffuse"]
    fp = [float(x) for x in zones.fingerprint_from_hist(np.full(16, 1 / 16), (t1 + t2) / 2)]
    if zones.classify(fp, 1).zone == zones.classify(fp, 2).zone:
        pytest.skip("the version 1 and 2 thresholds read this fingerprint alike")
    return fp


def _pull(n: int, pull: zmq.Socket, timeout: float = 20) -> list[dict]:
    msgs: list[dict] = []
    deadline = time.time() + timeout
    while len(msgs) < n and time.time() < deadline:
        if pull.poll(200):
            msgs.append(json.loads(pull.recv_string()))
    return msgs


def test_messages_carry_their_fingerprint_version_and_its_zone():
    from sgl_kernel import zones

    port = free_port()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    em = FingerprintStream(f"tcp://127.0.0.1:{port}", model="m")
    try:
        fp = _version_dependent_fingerprint()
        v = torch.tensor(fp, dtype=torch.float64)
        em.step("a", 0, v, 1)
        em.step("b", 0, v, 2)
        em.step("c", 0, v)  # not said: the engine's default version
        em.request_summary("a", v, 1, 1)
        em.request_summary("b", v, 1, 2)
        msgs = _pull(5, pull)
        assert len(msgs) == 5
        for m in msgs:
            want = {"a": 1, "b": 2, "c": zones.DEFAULT_FINGERPRINT_VERSION}[m["request_id"]]
            assert m["version"] == 1 and m["fingerprint_version"] == want
            assert m["manifold"] == zones.classify(fp, want).zone
    finally:
        em.close()
        pull.close(0)
        ctx.term()


def test_scheduler_streams_each_requests_fingerprint_version(smollm_tokenizer):
    from sgl_kernel import zones

    port = free_port()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    try:
        sched = capture_scheduler(max_total_tokens=2048, attention_sidecar_url=f"tcp://127.0.0.1:{port}")
        prompt = smollm_tokenizer.encode("Fingerprints of two definitions travel side by side.")
        res = run_capture(sched, [(0, "v1", prompt, CaptureParams(mode="fingerprint", fingerprint_version=1)),
                                  (0, "v2", prompt, CaptureParams(mode="fingerprint", fingerprint_version=2))], 4)
        msgs = _pull(10, pull)
        assert len(msgs) == 10
        for m in msgs:
            version = int(m["request_id"][1])
            assert m["fingerprint_version"] == version
            assert m["manifold"] == zones.classify(m["vector"], version).zone
        for rid in ("v1", "v2"):
            steps = {m["step"]: m for m in msgs if m["request_id"] == rid and m["kind"] == "step"}
            for e in res[rid]["entries"]:  # the entries' manifold is read with the same version
                assert e["fingerprint_version"] == steps[e["decode_step"]]["fingerprint_version"]
                assert steps[e["decode_step"]]["manifold"] == e["manifold"]
    finally:
        pull.close(0)
        ctx.term()
