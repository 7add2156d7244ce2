"""Fingerprints reach a real ZMQ PULL socket in the wire format; with nobody listening the
queue stays bounded, drops are counted and generation goes on."""
from __future__ import annotations

import json
import time

import numpy as np
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
