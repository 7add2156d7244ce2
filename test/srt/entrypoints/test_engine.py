"""The offline Engine on the default SmolLM2 GGUF: greedy tokens equal transformers'
greedy generate on the same GGUF, batching and streaming give the same tokens, and the
KV pool is free afterwards."""
from __future__ import annotations

import pytest
import torch

import sglang

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n",
]
N_NEW = 24


@pytest.fixture(scope="module")
def engine():
    # capture allowed on the server; only requests that ask for it capture
    e = sglang.Engine(max_total_tokens=8192, return_attention_tokens=True)
    yield e
    e.shutdown()


@pytest.fixture(scope="module")
def hf_reference(engine):
    from transformers import AutoModelForCausalLM

    from sglang.srt.model_loader.locate import default_model_path

    import os

    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32)
    model.eval()
    refs = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = engine.tokenizer.encode(p)
            x = torch.tensor([ids])
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N_NEW, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
            refs.append((ids, y[0, len(ids):].tolist()))
    return refs


def test_greedy_matches_transformers_on_gguf(engine, hf_reference):
    outs = engine.generate([p for p in PROMPTS],
                           {"temperature": 0, "max_new_tokens": N_NEW, "ignore_eos": True})
    for (ids, ref), out in zip(hf_reference, outs):
        assert out["output_ids"] == ref
        assert out["meta_info"]["prompt_tokens"] == len(ids)
        assert out["meta_info"]["completion_tokens"] == N_NEW
        assert out["meta_info"]["finish_reason"]["type"] == "length"
    assert "Paris" in outs[0]["text"]


def test_streaming_equals_non_streaming(engine, hf_reference):
    ids, ref = hf_reference[1]
    chunks = list(engine.generate(input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": N_NEW,
                                                                  "ignore_eos": True}, stream=True))
    assert len(chunks) >= 2
    assert chunks[-1]["output_ids"] == ref
    assert "".join(c["delta"] for c in chunks) == chunks[-1]["text"] == engine.tokenizer.decode(ref, skip_special_tokens=True)


def test_seeded_sampling_is_reproducible_and_batch_independent(engine):
    sp = {"temperature": 0.9, "top_p": 0.9, "top_k": 40, "max_new_tokens": 12, "seed": 1234, "ignore_eos": True}
    alone = engine.generate(PROMPTS[0], sp)
    batched = engine.generate([PROMPTS[2], PROMPTS[0], PROMPTS[3]], [dict(sp, seed=7), sp, dict(sp, seed=9)])
    assert batched[1]["output_ids"] == alone["output_ids"]
    other = engine.generate(PROMPTS[0], dict(sp, seed=4321))
    assert other["output_ids"] != alone["output_ids"]


def test_eos_stops_and_pool_is_free(engine):
    out = engine.generate(PROMPTS[3], {"temperature": 0, "max_new_tokens": 64})
    assert out["meta_info"]["finish_reason"]["type"] == "stop"
    assert out["output_ids"][-1] == engine.tokenizer.eos_token_id
    load = engine.get_load()
    assert load["num_running"] == 0 and load["num_waiting"] == 0
    assert engine.flush_cache()
    assert engine.get_load()["kv_used_tokens"] == 0


def test_invalid_requests_raise_value_error(engine):
    with pytest.raises(ValueError, match="sampling_params.temperature"):
        engine.generate("hi", {"temperature": -1})
    with pytest.raises(ValueError, match="context length"):
        engine.generate(input_ids=[1] * 9000, sampling_params={"max_new_tokens": 1})
    with pytest.raises(ValueError, match="sampling_params.bogus"):
        engine.generate("hi", {"bogus": 1})
    # the engine still serves after bad requests
    assert engine.generate("hi", {"temperature": 0, "max_new_tokens": 2})["meta_info"]["completion_tokens"] == 2


def test_capture_travels_with_tokens(engine, hf_reference):
    from sglang.srt.managers.io_struct import CaptureParams

    ids, ref = hf_reference[0]
    sp = {"temperature": 0, "max_new_tokens": 8, "ignore_eos": True}
    out = engine.generate(input_ids=ids, sampling_params=sp, capture=CaptureParams(mode="raw", top_k=4, layers=[29]))
    entries = out["meta_info"]["attention_tokens"]
    assert out["output_ids"] == ref[:8]
    assert [e["decode_step"] for e in entries] == list(range(8))
    assert all(len(e["token_positions"]) == 4 and e["query_position"] == len(ids) + e["decode_step"] - 1
               for e in entries)
    chunks = list(engine.generate(input_ids=ids, sampling_params=sp, stream=True,
                                  capture=CaptureParams(mode="fingerprint", layers=[7, 29])))
    # each streamed chunk carries exactly the entries of its new tokens
    seen = 0
    for c in chunks:
        steps = [e["decode_step"] for e in c["meta_info"]["attention_tokens"]]
        assert steps == list(range(seen, seen + len(c["new_token_ids"])))
        seen += len(c["new_token_ids"])
    assert seen == 8
    plain = engine.generate(input_ids=ids, sampling_params=sp)
    assert "attention_tokens" not in plain["meta_info"] and plain["output_ids"] == ref[:8]


def test_stop_string_is_trimmed_and_never_streamed(engine):
    sp = {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True}
    full = engine.generate(PROMPTS[2], sp)["text"]
    stop = full[6:10]
    assert stop.strip() and full.index(stop) == 6
    out = engine.generate(PROMPTS[2], dict(sp, stop=[stop]))
    assert out["text"] == full[:6]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    chunks = list(engine.generate(PROMPTS[2], dict(sp, stop=[stop]), stream=True))
    assert "".join(c["delta"] for c in chunks) == full[:6]
    kept = engine.generate(PROMPTS[2], dict(sp, stop=[stop], no_stop_trim=True))
    assert kept["text"].startswith(full[:10])


def test_request_past_the_kv_pool_is_refused_at_once():
    """The scheduler's pool check reaches the caller as a ValueError naming
    max_new_tokens (the HTTP server turns it into a 400 naming max_tokens)."""
    with sglang.Engine(max_total_tokens=64) as e:
        with pytest.raises(ValueError, match=r"^sampling_params\.max_new_tokens: .*KV cache \(64 tokens"):
            e.generate("The capital of France is", {"max_new_tokens": 100})
        out = e.generate("The capital of France is", {"max_new_tokens": 4, "temperature": 0})
        assert out["meta_info"]["completion_tokens"] == 4


def test_bad_capture_params_are_refused_at_the_call(engine):
    """The offline API checks capture params at its door, like the HTTP server: a ValueError
    naming the field when generate() is called, and the engine keeps serving."""
    from sglang.srt.managers.io_struct import CaptureParams

    with pytest.raises(ValueError, match="attention_capture_layers"):
        engine.generate("hi", {"max_new_tokens": 2}, capture=CaptureParams(layers=[99]))
    with pytest.raises(ValueError, match="attention_fingerprint_version"):
        engine.generate("hi", {"max_new_tokens": 2}, capture=CaptureParams(mode="fingerprint", fingerprint_version=0))
    out = engine.generate("hi", {"temperature": 0, "max_new_tokens": 2},
                          capture=CaptureParams(mode="fingerprint", mask_prefix=10 ** 6))
    assert out["meta_info"]["completion_tokens"] == 2 and len(out["meta_info"]["attention_tokens"]) == 2
