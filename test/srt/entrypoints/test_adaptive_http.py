"""Adaptive sampling over HTTP: the request field, its 400s, and the switch on responses.

The end-to-end part runs a real server whose fingerprints go to a real
``rapids_sidecar.py --online`` (ZMQ) and whose scheduler reads that sidecar's clusters
back (``--attention-hints-url``). On a fixed seed the switch happens at the documented
step (the first step that completes K consecutive fingerprint steps in one cluster),
and /generate restarted from that step with the hinted temperature/top_p and the same
seed samples the same tokens.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx
import pytest

from sglang.srt.entrypoints.capture_api import CapturePlacer, build_capture_params, capabilities, explicit_capture
from sglang.srt.entrypoints.openai.errors import APIError
from sglang.srt.entrypoints.openai.protocol import CaptureFields
from sglang.srt.server_args import ServerArgs
from sglang.test.replica_set import Proc, ReplicaSet, Sidecar

K = 4  # --attention-adaptive-steps
N = 24  # output tokens of the adaptive runs
SEED = 11
PROMPT = "Write a short poem about the river and the stars at night."
INFO = {"num_layers": 30, "num_attention_heads": 9, "is_moe": False}
FP = {"return_attention_tokens": True, "attention_fingerprint_mode": True}


def _args(**kw: Any) -> ServerArgs:
    a = ServerArgs(return_attention_tokens=True, **kw)
    a.validate()
    return a


# ---- request field -> CaptureParams (no engine) ------------------------------------------
@pytest.mark.parametrize("fields, server, needle", [
    ({"return_attention_tokens": True, "attention_adaptive_sampling": True},
     {"attention_hints_url": "http://127.0.0.1:9"}, "needs fingerprint mode"),
    ({"return_attention_tokens": True, "attention_sketch_mode": True, "attention_adaptive_sampling": True},
     {"attention_hints_url": "http://127.0.0.1:9"}, "sketch mode"),
    ({**FP, "attention_adaptive_sampling": True}, {}, "--attention-hints-url"),
    ({"attention_adaptive_sampling": True}, {"attention_hints_url": "http://127.0.0.1:9"},
     "needs fingerprint capture"),
])
def test_explicit_adaptive_that_cannot_work_is_400(fields: dict, server: dict, needle: str) -> None:
    with pytest.raises(APIError) as e:
        build_capture_params(CaptureFields(**fields), _args(**server), INFO)
    assert e.value.status == 400 and e.value.param == "attention_adaptive_sampling"
    assert needle in e.value.message


def test_server_default_applies_to_fingerprint_requests_only() -> None:
    srv = _args(attention_adaptive_sampling=True, attention_hints_url="http://127.0.0.1:9")
    assert build_capture_params(CaptureFields(**FP), srv, INFO).adaptive_sampling is True
    raw = build_capture_params(CaptureFields(return_attention_tokens=True), srv, INFO)
    assert raw is not None and raw.mode == "raw" and raw.adaptive_sampling is False  # runs, no 400
    off = build_capture_params(CaptureFields(**FP, attention_adaptive_sampling=False), srv, INFO)
    assert off.adaptive_sampling is False
    behind_router = _args(attention_capture_default="fingerprint", attention_adaptive_sampling=True,
                          attention_hints_url="http://127.0.0.1:9")
    assert build_capture_params(CaptureFields(), behind_router, INFO).adaptive_sampling is True
    # asking for adaptive sampling is asking for capture (the attention API key applies)
    assert explicit_capture(CaptureFields(attention_adaptive_sampling=True))


def test_capabilities_report_hints_and_default() -> None:
    c = capabilities(_args(attention_capture_default="fingerprint", attention_hints_url="http://h:1",
                           attention_adaptive_steps=6), INFO, None)
    assert c["capture_default"] == "fingerprint" and c["default_mode"] == "fingerprint"
    assert c["manifold_hints"]["enabled"] is True
    assert c["adaptive_sampling"] == {"supported": True, "default": False, "steps": 6, "requires_mode": "fingerprint"}
    plain = capabilities(_args(), INFO, None)
    assert plain["capture_default"] == "off" and plain["manifold_hints"]["enabled"] is False
    assert plain["adaptive_sampling"]["supported"] is False


def test_placer_reports_switch_on_first_and_final_chunk_only() -> None:
    sw = {"step": 1, "before": {"temperature": 1.0, "top_p": 1.0}, "after": {"temperature": 0.7, "top_p": 0.9},
          "cluster_id": 3, "zone": "syntax_floor"}
    p = CapturePlacer(tagging=False)
    outs = [{"new_token_ids": [5], "meta_info": {}},
            {"new_token_ids": [6], "meta_info": {"attention_adaptive_sampling": sw}},
            {"new_token_ids": [7], "meta_info": {"attention_adaptive_sampling": sw}},
            {"new_token_ids": [8], "meta_info": {"attention_adaptive_sampling": sw}}]
    got = [p.chunk(o, None, final=i == len(outs) - 1) for i, o in enumerate(outs)]
    assert ["attention_adaptive_sampling" in g for g in got] == [False, True, False, True]
    assert got[1]["attention_adaptive_sampling"] == sw == got[3]["attention_adaptive_sampling"]


# ---- end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm_tokenizer: Any) -> Iterator[tuple[Proc, Sidecar]]:
    with ReplicaSet(str(tmp_path_factory.mktemp("adaptive"))) as rs:
        side = rs.start_sidecar("online")
        (srv,) = rs.start_replicas(1, [
            "--served-model-name", "smol", "--max-total-tokens", "4096", "--return-attention-tokens",
            "--attention-sidecar-url", side.zmq_url, "--attention-hints-url", side.url,
            "--attention-hints-refresh-interval", "0.5", "--attention-adaptive-steps", str(K)], threads=None)
        # feed the sidecar fingerprints of prompts like the test's, until it reports clusters
        ids = smollm_tokenizer.encode(PROMPT)
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for i in range(4):
                r = c.post("/generate", json={"input_ids": ids[: 6 + i], **FP,
                                              "sampling_params": {"max_new_tokens": 8, "temperature": 0}})
                assert r.status_code == 200, r.text
            deadline = time.monotonic() + 60
            while not httpx.get(side.url + "/centroids", timeout=10).json()["clusters"]:
                assert time.monotonic() < deadline, "the sidecar formed no cluster"
                time.sleep(0.3)
            # until the scheduler has refreshed the hints, fingerprint entries carry no cluster id
            while True:
                r = c.post("/generate", json={"input_ids": ids, **FP, "sampling_params": {"max_new_tokens": 2}})
                if all("cluster_id" in e for e in r.json()["meta_info"]["attention_tokens"]):
                    break
                assert time.monotonic() < deadline, "fingerprint entries never carried cluster ids"
                time.sleep(0.3)
        yield srv, side


def _expected_switch_step(entries: list[dict[str, Any]]) -> int:
    """The documented rule, applied to the cluster ids the response reports per step."""
    ids = [e["cluster_id"] for e in sorted(entries, key=lambda e: e["decode_step"])]
    return next(s for s in range(K - 1, len(ids)) if ids[s] >= 0 and len(set(ids[s - K + 1: s + 1])) == 1)


def test_400s_over_http(server: tuple[Proc, Sidecar]) -> None:
    srv, _ = server
    msgs = [{"role": "user", "content": "hi"}]
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        for body in ({"return_attention_tokens": True, "attention_adaptive_sampling": True},  # raw mode
                     {"attention_adaptive_sampling": True}):  # no capture at all
            r = c.post("/v1/chat/completions", json={"model": "smol", "messages": msgs, "max_tokens": 2, **body})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "attention_adaptive_sampling"
        r = c.post("/generate", json={"text": "hi", "attention_adaptive_sampling": "yes"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "attention_adaptive_sampling"
        caps = c.get("/v1/attention/capabilities").json()
        assert caps["manifold_hints"]["enabled"] and caps["adaptive_sampling"]["supported"]
        assert caps["adaptive_sampling"]["steps"] == K


def test_generate_switch_at_documented_step_and_restart_matches(server: tuple[Proc, Sidecar],
                                                                smollm_tokenizer: Any) -> None:
    srv, _ = server
    prompt = smollm_tokenizer.encode(PROMPT)
    sp = {"max_new_tokens": N, "temperature": 1.0, "top_p": 1.0, "seed": SEED, "ignore_eos": True}
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.post("/generate", json={"input_ids": prompt, "sampling_params": sp, **FP,
                                      "attention_adaptive_sampling": True})
        assert r.status_code == 200, r.text
        meta = r.json()["meta_info"]
        out = r.json()["output_ids"]
        assert len(out) == N
        sw = meta.get("attention_adaptive_sampling")
        assert sw is not None, f"no switch; cluster ids {[e.get('cluster_id') for e in meta['attention_tokens']]}"
        assert sw["step"] == _expected_switch_step(meta["attention_tokens"])
        assert sw["before"] == {"temperature": 1.0, "top_p": 1.0} and sw["after"] != sw["before"]
        assert isinstance(sw["cluster_id"], int) and sw["cluster_id"] >= 0 and isinstance(sw["zone"], str)
        s = sw["step"]
        sp2 = {"max_new_tokens": N - s, "temperature": sw["after"]["temperature"], "top_p": sw["after"]["top_p"],
               "seed": SEED, "ignore_eos": True}
        r2 = c.post("/generate", json={"input_ids": prompt + out[:s], "sampling_params": sp2})
        assert r2.status_code == 200, r2.text
        assert r2.json()["output_ids"] == out[s:]
        # without the field (server default off) nothing switches
        r3 = c.post("/generate", json={"input_ids": prompt, "sampling_params": sp, **FP})
        assert r3.status_code == 200 and "attention_adaptive_sampling" not in r3.json()["meta_info"]


def _sse(resp: httpx.Response) -> list[dict[str, Any]]:
    chunks = []
    for line in resp.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[6:]))
    return chunks


def test_chat_stream_and_non_stream_carry_the_switch(server: tuple[Proc, Sidecar]) -> None:
    srv, _ = server
    body = {"model": "smol", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": N, "seed": SEED,
            "temperature": 1.0, "top_p": 1.0, "ignore_eos": True, **FP, "attention_adaptive_sampling": True}
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            chunks = [ch["choices"][0] for ch in _sse(r) if ch.get("choices")]
        entries = [e for ch in chunks for e in ch.get("attention_tokens") or []]
        marked = [i for i, ch in enumerate(chunks) if "attention_adaptive_sampling" in ch]
        assert marked, "the stream never reported the switch"
        sw = chunks[marked[0]]["attention_adaptive_sampling"]
        assert sw["step"] == _expected_switch_step(entries)
        # first shown on the chunk that carries the switching step's token, then only on the last chunk
        assert sw["step"] in [t["step"] for t in chunks[marked[0]]["attention_output_tokens"]]
        last = len(chunks) - 1
        assert chunks[last]["finish_reason"] is not None
        assert marked == sorted({marked[0], last})
        assert chunks[last]["attention_adaptive_sampling"] == sw
        # non-streaming: on the choice (the sidecar's clusters move as it learns, so the
        # step is checked against this response's own cluster ids)
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        choice = r.json()["choices"][0]
        sw2 = choice["attention_adaptive_sampling"]
        assert set(sw2) == {"step", "before", "after", "cluster_id", "zone"}
        assert sw2["step"] == _expected_switch_step(choice["attention_tokens"])
