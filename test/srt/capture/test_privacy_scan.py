"""No masked position appears in any capture payload, in any mode, whatever the mask:
not as a top-k key, a sketch hub or a prompt-attention query, including a mask that
covers the whole prompt (and one past it)."""
from __future__ import annotations

from typing import Any

import pytest

from capture_utils import capture_scheduler, run_capture
from sglang.srt.managers.io_struct import CaptureParams

N_NEW = 5


def _key_positions(entry: dict[str, Any]) -> list[int]:
    """Every position an entry names as a key or a prompt-attention query."""
    out = list(entry.get("token_positions", []))
    for sk in (entry.get("layer_sketches") or {}).values():
        out += [p for p, _ in sk["top_hubs"]]
    if entry.get("prompt"):
        out.append(entry["query_position"])
    return out


@pytest.fixture(scope="module")
def sched(tiny_models):
    return capture_scheduler(tiny_models["llama"], max_total_tokens=4096)


@pytest.mark.parametrize("mode", ["raw", "sketch", "fingerprint"])
def test_no_masked_position_in_any_payload(mode, sched, smollm_tokenizer):
    prompt = smollm_tokenizer.encode("a private system prompt about rivers, then the question: why?")
    L = len(prompt)
    reqs = []
    for i, mask in enumerate([1, L // 2, L - 1, L, L + 7]):
        for prompt_rows in (False, True):
            cap = CaptureParams(mode=mode, top_k=8, layers=[0, 2, 3], mask_prefix=mask,
                                include_prompt_attention=prompt_rows)
            reqs.append((i, f"m{mask}-{int(prompt_rows)}", prompt, cap))
    res = run_capture(sched, reqs, N_NEW)
    for rid, r in res.items():
        mask = min(int(rid[1:].split("-")[0]), L)
        assert r["error"] is None and len(r["output_ids"]) == N_NEW
        assert r["entries"], rid
        for e in r["entries"]:
            leaked = [p for p in _key_positions(e) if p < mask]
            assert not leaked, f"{rid}: masked positions {leaked} in {e}"
            if mode != "fingerprint":
                masses = [e.get("masked_mass")] + [sk.get("masked_mass") for sk in
                                                   (e.get("layer_sketches") or {}).values()]
                assert any(m for m in masses if m), f"{rid}: no masked mass reported"
        if mask >= L and mode == "raw":  # step 0's query sees only the (all masked) prompt
            step0 = [e for e in r["entries"] if e["decode_step"] == 0]
            assert step0 and all(e["token_positions"] == [] for e in step0)
            assert all(abs(e["masked_mass"] - 1.0) < 1e-5 for e in step0)
